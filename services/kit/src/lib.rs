//! The shared kernel of every scalelab service.
//!
//! A service builds its own `Router` of business routes and hands it to
//! [`Kit::into_router`], which adds the common endpoints (`/health`, `/readiness`,
//! `/metrics` and the `/api/v1/<svc>/...` aliases) and the standard layers (request id,
//! tracing with W3C trace context, Prometheus metrics, JSON error envelope, panic
//! catching, request timeout, body limit). [`serve`] then runs it with graceful shutdown.

/// Every process that links kit (the services, the scaler, the loader) allocates a
/// little per request: headers, bodies, futures. Under the course's 1500 users glibc's
/// allocator took about an eighth of the machine's CPU (perf, issue 18), mimalloc a
/// fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod accept;
pub mod api;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
mod connection;
pub mod cpu_limit;
pub mod datastore;
pub mod docs;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
mod middleware;
pub mod server;
pub mod telemetry;

pub use auth::{Auth, AuthMode, Caller, HasAuth};
pub use client::HttpClient;
pub use config::ServerArgs;
pub use datastore::Datastore;
pub use error::ApiError;
pub use extract::{AppJson, AppQuery};
pub use health::{Readiness, ReadinessCheck};
pub use metrics::Metrics;
pub use server::{
    Kit, bind, close_lingering, serve, serve_connections, serve_with, shutdown_signal,
};
