//! The admin API (API.md "scaler admin"): liveness, static pools, status, replica
//! counts, the event stream, a live dashboard, and Prometheus's service discovery.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use futures_util::Stream;
use kit::{ApiError, AppJson, AppQuery};
use serde::Deserialize;
use serde_json::json;

use crate::Platform;
use crate::events::Kind;
use crate::pool::{Backend, State as ReplicaState};

pub fn router(platform: Platform) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
        .route("/health_check", get(|| async { "alive" }))
        .route("/servers", get(servers).put(change_servers))
        .route("/status", get(status))
        .route("/prometheus/targets", get(crate::discovery::handler))
        .route("/replicas", put(set_replicas))
        .route("/events", get(events))
        .route("/monitor", get(get_monitor).put(set_monitor))
        .route("/report", put(report))
        .with_state(platform)
}

fn authorize(platform: &Platform, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &platform.token else {
        return Ok(());
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(token.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("missing or invalid scaler token"))
    }
}

#[derive(Debug, Deserialize)]
pub struct ServiceQuery {
    service: Option<String>,
}

fn service<'a>(
    platform: &'a Platform,
    q: &ServiceQuery,
) -> Result<(&'a str, &'a crate::Service), ApiError> {
    let name = q
        .service
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("`service` is required"))?;
    platform
        .services
        .get_key_value(name)
        .map(|(k, v)| (k.as_str(), v))
        .ok_or_else(|| ApiError::not_found(format!("no service `{name}` under this scaler")))
}

async fn servers(
    State(platform): State<Platform>,
    AppQuery(q): AppQuery<ServiceQuery>,
) -> Result<Response, ApiError> {
    let (_, svc) = service(&platform, &q)?;
    let urls: Vec<String> = svc
        .balancer
        .pool
        .alive()
        .iter()
        .map(|b| b.url.clone())
        .collect();
    Ok(Json(urls).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerChanges {
    #[serde(default)]
    adds: Vec<String>,
    #[serde(default)]
    deletes: Vec<String>,
}

async fn change_servers(
    State(platform): State<Platform>,
    headers: HeaderMap,
    AppQuery(q): AppQuery<ServiceQuery>,
    AppJson(changes): AppJson<ServerChanges>,
) -> Result<Response, ApiError> {
    authorize(&platform, &headers)?;
    let (name, svc) = service(&platform, &q)?;
    // Static backends (added here) go by their URL; a supervised replica is the
    // supervisor's to stop, or it would never be replaced.
    if svc.supervisor.is_some()
        && let Some(replica) = svc.balancer.pool.all().into_iter().find(|b| {
            b.id != b.url
                && changes
                    .deletes
                    .iter()
                    .any(|u| u.trim_end_matches('/') == b.url)
        })
    {
        return Err(ApiError::conflict(format!(
            "{} is a supervised replica of {name}: set the count with PUT /replicas instead",
            replica.id
        )));
    }
    for url in &changes.adds {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") && url.len() > 7) {
            return Err(ApiError::bad_request(format!(
                "`{url}` is not an http:// URL"
            )));
        }
        if svc.balancer.pool.all().iter().any(|b| b.url == url) {
            continue;
        }
        // Admitted at once if it answers, else on its first good health check.
        let healthy = svc
            .balancer
            .probe(&url, "/health", Duration::from_millis(500))
            .await;
        let state = if healthy {
            ReplicaState::Alive
        } else {
            ReplicaState::Disconnected
        };
        svc.balancer
            .pool
            .add(Backend::new(url.clone(), url.clone(), state));
        platform.events.record(
            name,
            &url,
            if healthy { Kind::Ready } else { Kind::Ejected },
            "added by PUT /servers",
        );
    }
    for url in &changes.deletes {
        let url = url.trim_end_matches('/');
        if let Some(backend) = svc.balancer.pool.all().into_iter().find(|b| b.url == url) {
            svc.balancer.pool.remove(&backend.id);
            platform
                .events
                .record(name, url, Kind::Stopped, "deleted by PUT /servers");
        }
    }
    let urls: Vec<String> = svc
        .balancer
        .pool
        .alive()
        .iter()
        .map(|b| b.url.clone())
        .collect();
    Ok(Json(urls).into_response())
}

async fn status(State(platform): State<Platform>) -> Response {
    let services: serde_json::Map<String, serde_json::Value> = platform
        .services
        .iter()
        .map(|(name, svc)| {
            let replicas: Vec<_> = svc
                .balancer
                .pool
                .all()
                .iter()
                .map(|b| json!({"id": b.id, "url": b.url, "state": b.state(), "in_flight": b.in_flight()}))
                .collect();
            let ready = svc.balancer.pool.alive().len();
            let desired = svc.supervisor.as_ref().map(|s| s.desired.load(std::sync::atomic::Ordering::SeqCst));
            let recoveries: Vec<u128> =
                svc.supervisor.as_ref().map(|s| s.recoveries().iter().map(Duration::as_millis).collect()).unwrap_or_default();
(
                name.clone(),
                json!({
                    "desired": desired,
                    "ready": ready,
                    "replicas": replicas,
                    "recoveries_ms": recoveries,
                    "live": svc.balancer.window.summary(5),
                }),
            )
        })
        .collect();
    Json(json!({"services": services})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaCount {
    service: String,
    replicas: usize,
}

async fn set_replicas(
    State(platform): State<Platform>,
    headers: HeaderMap,
    AppJson(body): AppJson<ReplicaCount>,
) -> Result<Response, ApiError> {
    authorize(&platform, &headers)?;
    if body.replicas > 64 {
        return Err(ApiError::bad_request("at most 64 replicas per service"));
    }
    let svc = platform
        .services
        .get(&body.service)
        .ok_or_else(|| ApiError::not_found(format!("no service `{}`", body.service)))?;
    let supervisor = svc
        .supervisor
        .as_ref()
        .ok_or_else(|| ApiError::conflict(format!("{} has static backends", body.service)))?;
    supervisor.set_desired(body.replicas);
    Ok(Json(json!({"service": body.service, "replicas": body.replicas})).into_response())
}

async fn events(
    State(platform): State<Platform>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let recent = futures_util::stream::iter(platform.events.recent().into_iter().map(to_sse));
    // The recent events, then each live one as it comes.
    let live = futures_util::stream::unfold(platform.events.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((to_sse(event), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(recent, live)).keep_alive(KeepAlive::default())
}

fn to_sse(event: crate::events::Event) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .event(format!("{:?}", event.kind).to_lowercase())
        .json_data(&event)
        .unwrap_or_default())
}

async fn get_monitor(State(platform): State<Platform>) -> Response {
    let monitor = platform
        .monitor
        .read()
        .map(|m| m.clone())
        .unwrap_or_default();
    Json(json!({ "monitor": monitor })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    monitor: String,
}

/// CS230: the primary monitor registers its address here.
async fn set_monitor(
    State(platform): State<Platform>,
    headers: HeaderMap,
    AppJson(body): AppJson<Monitor>,
) -> Result<Response, ApiError> {
    authorize(&platform, &headers)?;
    if !body.monitor.starts_with("http://") && !body.monitor.starts_with("https://") {
        return Err(ApiError::bad_request(
            "`monitor` must be an http(s):// address",
        ));
    }
    if let Ok(mut m) = platform.monitor.write() {
        *m = Some(body.monitor.clone());
    }
    Ok(Json(json!({ "monitor": body.monitor })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    dead: Vec<String>,
}

/// CS230: a balancer reports replicas it found dead; they leave rotation at once.
async fn report(
    State(platform): State<Platform>,
    headers: HeaderMap,
    AppJson(body): AppJson<Report>,
) -> Result<Response, ApiError> {
    authorize(&platform, &headers)?;
    let mut ejected = Vec::new();
    for url in &body.dead {
        let url = url.trim_end_matches('/');
        for svc in platform.services.values() {
            if let Some(backend) = svc.balancer.pool.all().into_iter().find(|b| b.url == url) {
                svc.balancer.eject(&backend, "reported dead");
                ejected.push(url.to_owned());
            }
        }
    }
    Ok(Json(json!({ "ejected": ejected })).into_response())
}

/// `scaler_replicas{service,state}`, counted from the pools at scrape time.
#[derive(Debug)]
pub struct ReplicaGauge {
    platform: Platform,
    desc: prometheus::core::Desc,
}

impl ReplicaGauge {
    pub fn new(platform: Platform) -> Self {
        let desc = prometheus::core::Desc::new(
            "scaler_replicas".into(),
            "Replicas per service and state.".into(),
            vec!["service".into(), "state".into()],
            Default::default(),
        )
        .expect("valid metric definition");
        Self { platform, desc }
    }
}

impl prometheus::core::Collector for ReplicaGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("scaler_replicas", "Replicas per service and state."),
            &["service", "state"],
        )
        .expect("valid metric definition");
        for (name, svc) in self.platform.services.iter() {
            for state in [
                ReplicaState::Starting,
                ReplicaState::Alive,
                ReplicaState::Disconnected,
                ReplicaState::Dead,
            ] {
                let n = svc
                    .balancer
                    .pool
                    .all()
                    .iter()
                    .filter(|b| b.state() == state)
                    .count();
                gauge
                    .with_label_values(&[name.as_str(), state.as_str()])
                    .set(n as i64);
            }
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// The admin router with the kit's layers and `/metrics` (the scaler's own metrics
/// among the process and HTTP ones).
pub fn app(platform: Platform) -> Router {
    let kit = kit::Kit::new("scaler", "scaler", &kit::ServerArgs::default());
    let registry = kit.metrics().registry();
    let _ = registry.register(Box::new(platform.events.counter.clone()));
    let _ = registry.register(Box::new(platform.events.recovery.clone()));
    let _ = registry.register(Box::new(platform.events.balancer.requests.clone()));
    let _ = registry.register(Box::new(platform.events.balancer.duration.clone()));
    let _ = registry.register(Box::new(ReplicaGauge::new(platform.clone())));
    kit.into_router(router(platform))
}
