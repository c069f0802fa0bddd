//! The Fibonacci service of lab 02: exact F(n) for any accepted n, per-replica
//! `/status` (cache length, request count, instance id), and CS230's CPU-load
//! simulator with a live page.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use clap::Parser;
use kit::{ApiError, AppJson, AppQuery, Kit, ServerArgs};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub mod cache;
pub mod fib;
pub mod load;
mod page;

use cache::Cache;
use load::{CpuLoad, Profile};

pub const SERVICE: &str = "fibonacci";

/// scalelab Fibonacci service (lab 02) with the CS230 CPU-load simulator.
#[derive(Debug, Clone, Parser)]
#[command(name = "fibonacci", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:30004", value_parser = kit::config::parse_listen)]
    pub listen: SocketAddr,

    /// Largest n answered; anything above is a 400.
    #[arg(long, env = "FIB_MAX_N", default_value_t = 100_000)]
    pub max_n: u64,

    /// Memory the per-replica cache of computed values may use, in bytes.
    #[arg(long, env = "FIB_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: usize,

    /// This replica's name in `/status`; default: host name and a random suffix.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance: Option<String>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_n: 100_000,
            cache_bytes: 64 * 1024 * 1024,
            instance: None,
            server: ServerArgs::default(),
        }
    }
}

/// One replica's state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    max_n: u64,
    cache: Arc<Cache>,
    requests: Arc<AtomicU64>,
    instance: Arc<str>,
    load: CpuLoad,
    stats: Arc<std::sync::Mutex<Value>>,
    server: ServerArgs,
}

impl AppState {
    pub fn new(config: &Config) -> Self {
        let instance = config.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
            format!(
                "{}-{suffix}",
                host.trim().chars().take(40).collect::<String>()
            )
        });
        Self {
            max_n: config.max_n,
            cache: Arc::new(Cache::new(config.cache_bytes)),
            requests: Arc::default(),
            instance: instance.into(),
            load: CpuLoad::default(),
            stats: Arc::new(std::sync::Mutex::new(json!({}))),
            server: config.server.clone(),
        }
    }
}

pub fn app(state: AppState) -> Router {
    let kit = Kit::new(SERVICE, "fibonacci", &state.server);
    let routes = Router::new()
        .route("/fibonacci", get(fibonacci_get).post(fibonacci_post))
        .route("/status", get(status))
        .route("/load/cpu", put(set_load).get(get_load))
        .route("/stats", get(stats))
        .route("/", get(|| async { Html(page::PAGE) }))
        .with_state(state);
    kit.into_router(routes)
}

/// Serves until `shutdown` resolves; samples this replica's stats every second.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.server.clone();
    let sampler = tokio::spawn(sample_stats(state.clone()));
    let result = kit::serve_with(listener, app(state), shutdown, &server).await;
    sampler.abort();
    result
}

#[derive(Debug, Deserialize)]
pub struct FibQuery {
    n: Option<String>,
    fibonacci_number: Option<String>,
}

async fn fibonacci_get(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<FibQuery>,
) -> Result<Response, ApiError> {
    let text =
        q.n.or(q.fibonacci_number)
            .ok_or_else(|| ApiError::bad_request("`n` is required, e.g. /fibonacci?n=20"))?;
    let n = parse_n_text(&text, state.max_n)?;
    Ok(answer(&state, n).await)
}

async fn fibonacci_post(
    State(state): State<AppState>,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::bad_request(
            "body must be a JSON object like {\"fibonacci_number\": 20}",
        ));
    };
    let value = fields
        .get("fibonacci_number")
        .ok_or_else(|| ApiError::bad_request("`fibonacci_number` is required"))?;
    let n = match value {
        Value::Number(number) => parse_n_text(&number.to_string(), state.max_n)?,
        Value::String(_) => {
            return Err(ApiError::bad_request(
                "`fibonacci_number` must be a JSON number, not a string",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "`fibonacci_number` must be a whole number",
            ));
        }
    };
    Ok(answer(&state, n).await)
}

/// Reads n from its decimal text: a whole number from 0 to `max`.
fn parse_n_text(text: &str, max: u64) -> Result<u64, ApiError> {
    let range = || ApiError::bad_request(format!("n must be a whole number from 0 to {max}"));
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "n must be a whole number from 0 to {max}, not `{}`",
            truncate(text)
        )));
    }
    if text.starts_with('-') && digits.bytes().any(|b| b != b'0') {
        return Err(range());
    }
    let n: u64 = digits.parse().map_err(|_| range())?;
    if n > max {
        return Err(range());
    }
    Ok(n)
}

fn truncate(text: &str) -> &str {
    text.char_indices()
        .nth(32)
        .map_or(text, |(i, _)| &text[..i])
}

async fn answer(state: &AppState, n: u64) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let value = match state.cache.get(n) {
        Some(value) => value,
        None => {
            // Large n take milliseconds of pure CPU: keep them off the async workers.
            let value: Arc<str> = if n < 10_000 {
                fib::fibonacci(n).into()
            } else {
                tokio::task::spawn_blocking(move || fib::fibonacci(n))
                    .await
                    .unwrap_or_default()
                    .into()
            };
            state.cache.insert(n, value.clone());
            value
        }
    };
    let mut body = String::with_capacity(value.len() + 48);
    body.push_str("{\"fibonacci_number\":");
    body.push_str(&n.to_string());
    body.push_str(",\"value\":");
    body.push_str(&value);
    body.push('}');
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let (profile, duty) = state.load.current();
    axum::Json(json!({
        "cache_length": state.cache.len(),
        "requests": state.requests.load(Ordering::Relaxed),
        "instance": &*state.instance,
        "cpu_load": {"profile": profile, "target_percent": (duty * 100.0).round()},
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    profile: Profile,
}

async fn set_load(
    State(state): State<AppState>,
    AppJson(request): AppJson<LoadRequest>,
) -> Response {
    state.load.set(request.profile);
    tracing::info!(profile = ?request.profile, "CPU load profile set");
    get_load(State(state)).await
}

async fn get_load(State(state): State<AppState>) -> Response {
    let (profile, duty) = state.load.current();
    axum::Json(json!({"profile": profile, "target_percent": (duty * 100.0).round()}))
        .into_response()
}

async fn stats(State(state): State<AppState>) -> Response {
    let snapshot = state.stats.lock().map(|s| s.clone()).unwrap_or_default();
    axum::Json(snapshot).into_response()
}

/// Once a second: CPU share of one core, resident memory, Fibonacci requests per second.
async fn sample_stats(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<(std::time::Instant, f64, u64)> = None;
    loop {
        tick.tick().await;
        let Some(sample) = kit::metrics::ProcessSample::read() else {
            continue;
        };
        let now = std::time::Instant::now();
        let requests = state.requests.load(Ordering::Relaxed);
        if let Some((then, cpu, count)) = last {
            let seconds = now.duration_since(then).as_secs_f64().max(1e-3);
            let (profile, duty) = state.load.current();
            let snapshot = json!({
                "instance": &*state.instance,
                "cpu_percent": ((sample.cpu_seconds - cpu) / seconds * 1000.0).round() / 10.0,
                "resident_bytes": sample.resident_bytes,
                "requests_per_second": ((requests - count) as f64 / seconds * 10.0).round() / 10.0,
                "requests": requests,
                "cache_length": state.cache.len(),
                "profile": profile,
                "target_percent": (duty * 100.0).round(),
                "healthy": true,
            });
            if let Ok(mut stats) = state.stats.lock() {
                *stats = snapshot;
            }
        }
        last = Some((now, sample.cpu_seconds, requests));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_must_be_a_whole_number_in_range() {
        assert_eq!(parse_n_text("20", 100).ok(), Some(20));
        assert_eq!(parse_n_text("0", 100).ok(), Some(0));
        assert_eq!(parse_n_text("-0", 100).ok(), Some(0));
        for bad in [
            "-1",
            "1.5",
            "1e2",
            "",
            "abc",
            "101",
            "99999999999999999999999",
            " 5",
        ] {
            assert!(parse_n_text(bad, 100).is_err(), "{bad:?}");
        }
    }
}
