//! The balancer in front of one service: its replicas, the choice of one per request
//! (least-request by two random choices, or round-robin), a retry budget, its live
//! window and metrics, and the health checks of every replica. The bytes of each
//! request go through [`crate::proxy`], which retries what is safe to retry within the
//! budget, never loses a body on retry (bodies are buffered), and names the replica
//! that answered in `X-Replica`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::events::{Events, Kind};
use crate::pool::{Backend, Pool, State as ReplicaState};

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
    /// How long a replica may take to start answering a request.
    pub(crate) timeout: Duration,
    /// Retry tokens, in thousandths: each request adds 0.2, each retry takes 1.
    budget: AtomicI64,
    /// Requests, errors and latency over the last seconds.
    pub window: crate::window::Window,
    /// `scaler_balancer_*{service}`, its handles resolved once.
    pub(crate) metrics: crate::metrics::ServiceMetrics,
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

    /// Every request adds to the retry budget.
    pub(crate) fn deposit(&self) {
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + RETRY_RATIO_MILLI).min(RETRY_RESERVE_MILLI + 100_000))
            });
    }

    /// A retry takes from the budget; false when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
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
