//! The balancer in front of one service: a reverse proxy that picks a replica per
//! request (least-request by two random choices, or round-robin), retries what is safe
//! to retry within a budget, never loses a body on retry (bodies are buffered), names
//! the replica that answered in `X-Replica`, and health-checks every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kit::ApiError;

use crate::events::{Events, Kind};
use crate::pool::{Backend, Pool, State as ReplicaState};

/// Largest request body the balancer buffers (and so can retry).
pub const MAX_BODY: usize = 1024 * 1024;
/// Attempts per request, the first included.
const MAX_ATTEMPTS: usize = 3;
/// Retries may be at most this share of requests (in thousandths), plus a small reserve.
const RETRY_RATIO_MILLI: i64 = 200;
const RETRY_RESERVE_MILLI: i64 = 10_000;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build(connector)
}

/// One service's balancer. Shared by its public port and the ingress.
#[derive(Debug)]
pub struct Balancer {
    pub service: String,
    pub pool: Arc<Pool>,
    pub events: Arc<Events>,
    client: HttpClient,
    timeout: Duration,
    /// Retry tokens, in thousandths: each request adds 0.2, each retry takes 1.
    budget: AtomicI64,
    /// Requests, errors and latency over the last seconds.
    pub window: crate::window::Window,
    /// `scaler_balancer_*{service}`, its handles resolved once.
    metrics: crate::metrics::ServiceMetrics,
}

impl Balancer {
    pub fn new(
        service: &str,
        pool: Arc<Pool>,
        events: Arc<Events>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_owned(),
            pool,
            metrics: events.balancer.for_service(service),
            events,
            client: http_client(),
            timeout,
            budget: AtomicI64::new(RETRY_RESERVE_MILLI),
            window: crate::window::Window::default(),
        })
    }

    fn deposit(&self) {
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + RETRY_RATIO_MILLI).min(RETRY_RESERVE_MILLI + 100_000))
            });
    }

    fn withdraw(&self) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }

    /// A replica stopped answering mid-traffic: out of rotation until a check passes.
    pub fn eject(&self, backend: &Backend, why: &str) {
        if let Some((_, to)) = backend.check_failed() {
            let kind = if to == ReplicaState::Dead {
                Kind::Unhealthy
            } else {
                Kind::Ejected
            };
            self.events.record(&self.service, &backend.id, kind, why);
        }
    }

    /// Forwards one request, and counts it in the live window and the metrics.
    pub async fn forward(&self, req: Request) -> Response {
        let started = std::time::Instant::now();
        self.window.arrive();
        let response = self.forward_once(req).await;
        let elapsed = started.elapsed();
        self.window
            .record(elapsed, response.status().is_server_error());
        self.metrics.observe(response.status(), elapsed);
        response
    }

    async fn forward_once(&self, req: Request) -> Response {
        self.deposit();
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return ApiError::payload_too_large(MAX_BODY).into_response(),
        };
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // Hop-by-hop headers stay here; the rest go to the replica (cloned per attempt,
        // which shares the values' bytes).
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 && !self.withdraw() {
                break;
            }
            let backend = {
                let mut rng = rand::rng();
                self.pool.choose(&tried, &mut rng)
            };
            let Some(backend) = backend else { break };
            tried.push(backend.clone());
            let Some(uri) = backend.uri_for(&path) else {
                return ApiError::bad_request("request target is not a valid URI").into_response();
            };
            let mut out = http::Request::new(Full::new(body.clone()));
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.headers_mut() = headers.clone();
            let _in_flight = backend.start_request();
            let sent = std::time::Instant::now();
            match tokio::time::timeout(self.timeout, self.client.request(out)).await {
                Ok(Ok(response)) => {
                    backend.observe(sent.elapsed());
                    let (mut head, incoming) = response.into_parts();
                    if let Ok(value) = HeaderValue::try_from(backend.id.as_str()) {
                        head.headers
                            .insert(HeaderName::from_static("x-replica"), value);
                    }
                    return Response::from_parts(head, Body::new(incoming));
                }
                Ok(Err(e)) => {
                    let refused = e.is_connect();
                    last_error = format!("{}: {e}", backend.id);
                    self.eject(&backend, &format!("connection failed: {e}"));
                    // A refused connection never carried the body: any method is safe.
                    if !(refused || idempotent) {
                        break;
                    }
                }
                Err(_) => {
                    last_error = format!("{} gave no answer within {:?}", backend.id, self.timeout);
                    if !idempotent {
                        return ApiError::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("{} did not answer in time", self.service),
                        )
                        .into_response();
                    }
                }
            }
        }
        if tried.is_empty() {
            return ApiError::unavailable(format!("no ready replica of {}", self.service))
                .into_response();
        }
        tracing::warn!(service = %self.service, error = %last_error, "request failed on every replica tried");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("no replica of {} could answer", self.service),
        )
        .into_response()
    }

    /// Health-checks every replica that is in rotation or out of it, once a second.
    pub async fn health_loop(self: Arc<Self>, every: Duration, timeout: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let checks = self
                .pool
                .all()
                .into_iter()
                .filter(|b| matches!(b.state(), ReplicaState::Alive | ReplicaState::Disconnected))
                .map(|backend| {
                    let me = self.clone();
                    async move {
                        let ok = me.probe(&backend.url, "/health", timeout).await;
                        let change = if ok {
                            backend.check_passed()
                        } else {
                            backend.check_failed()
                        };
                        match change {
                            Some((_, ReplicaState::Alive)) => me.events.record(
                                &me.service,
                                &backend.id,
                                Kind::Healthy,
                                "health check passed",
                            ),
                            Some((_, ReplicaState::Disconnected)) => me.events.record(
                                &me.service,
                                &backend.id,
                                Kind::Ejected,
                                "health check failed",
                            ),
                            Some((_, ReplicaState::Dead)) => me.events.record(
                                &me.service,
                                &backend.id,
                                Kind::Unhealthy,
                                format!("{} health checks failed", crate::pool::DEAD_AFTER + 1),
                            ),
                            _ => {}
                        }
                    }
                });
            futures_util::future::join_all(checks).await;
        }
    }

    /// Whether `GET <url><path>` answers 2xx within `timeout`.
    pub async fn probe(&self, url: &str, path: &str, timeout: Duration) -> bool {
        probe(&self.client, url, path, timeout).await
    }
}

/// `GET url+path` through `client` answered 2xx within `timeout`.
pub async fn probe(client: &HttpClient, url: &str, path: &str, timeout: Duration) -> bool {
    let Ok(request) = http::Request::get(format!("{url}{path}")).body(Full::new(Bytes::new()))
    else {
        return false;
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => response.status().is_success(),
        _ => false,
    }
}

/// Headers of one hop, not forwarded (and `host` and `content-length`, which the
/// client sets for the replica and the buffered body).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// The axum handler of a balancer's port: every request is forwarded.
pub async fn handler(State(balancer): State<Arc<Balancer>>, req: Request) -> Response {
    balancer.forward(req).await
}
