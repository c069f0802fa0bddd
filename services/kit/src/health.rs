//! Liveness and readiness.
//!
//! `/health` is 200 while the process runs. `/readiness` runs the check the service
//! plugged in (for the gateway: "the store answers") and is 503 with the reason until
//! it passes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use futures_util::future::BoxFuture;

use crate::error::envelope;

/// A readiness check: `Ok(())` when the service's dependencies answer.
pub trait ReadinessCheck: Send + Sync + 'static {
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl<F> ReadinessCheck for F
where
    F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
{
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self()
    }
}

/// The readiness check of a service, with a bound on how long it may take.
#[derive(Clone)]
pub struct Readiness {
    check: Option<Arc<dyn ReadinessCheck>>,
    timeout: Duration,
}

impl Readiness {
    /// Always ready: for services without dependencies.
    pub fn always() -> Self {
        Self {
            check: None,
            timeout: Duration::from_secs(2),
        }
    }

    pub fn new(check: impl ReadinessCheck) -> Self {
        Self {
            check: Some(Arc::new(check)),
            timeout: Duration::from_secs(2),
        }
    }

    /// Runs the check; a check that takes longer than the timeout counts as failed.
    pub async fn run(&self) -> Result<(), String> {
        let Some(check) = &self.check else {
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, check.check()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "readiness check took longer than {:?}",
                self.timeout
            )),
        }
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("has_check", &self.check.is_some())
            .finish()
    }
}

pub(crate) async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

pub(crate) async fn readiness(State(readiness): State<Readiness>) -> Response {
    match readiness.run().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {reason}"),
        ),
    }
}

/// `GET path` of the instance listening on `listen` (an unspecified address is probed
/// on loopback), over plain blocking sockets with a 3 s budget: 0 when it answers 200,
/// 1 otherwise, with the reason on stderr. What `--healthcheck` runs.
pub fn probe(listen: std::net::SocketAddr, path: &str) -> i32 {
    match probe_status(listen, path) {
        Ok(200) => 0,
        Ok(status) => {
            eprintln!("healthcheck: {path} answered {status}");
            1
        }
        Err(e) => {
            eprintln!("healthcheck: {listen}{path}: {e}");
            1
        }
    }
}

fn probe_status(mut addr: std::net::SocketAddr, path: &str) -> std::io::Result<u16> {
    use std::io::{Read as _, Write as _};
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let budget = Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, budget)?;
    stream.set_read_timeout(Some(budget))?;
    stream.set_write_timeout(Some(budget))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    let line = std::str::from_utf8(&head[..read]).unwrap_or_default();
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}
