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
