//! Router assembly with the common endpoints and layers, binding, and serving with
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;

use crate::accept::Limits;
use crate::config::ServerArgs;
use crate::error::envelope;
use crate::health::{self, Readiness};
use crate::metrics::{self, Metrics};
use crate::middleware;

/// What a service adds to the shared kernel: its name, its API prefix, its readiness
/// check and its limits.
#[derive(Debug, Clone)]
pub struct Kit {
    metrics: Metrics,
    alias: &'static str,
    readiness: Readiness,
    body_limit: usize,
    request_timeout: Duration,
    cpu_limit: Option<f64>,
    fault: Option<middleware::Delay>,
}

impl Kit {
    /// `service` labels metrics and traces (`database-gateway`); `alias` is the path
    /// segment of the `/api/v1/<alias>/health|readiness` aliases (`datastore`).
    pub fn new(service: &'static str, alias: &'static str, args: &ServerArgs) -> Self {
        Self {
            metrics: Metrics::new(service),
            alias,
            readiness: Readiness::always(),
            body_limit: args.body_limit,
            request_timeout: args.request_timeout,
            cpu_limit: args.cpu_limit,
            fault: (!args.fault_delay.is_zero() && args.fault_delay_percent > 0).then_some(
                middleware::Delay {
                    delay: args.fault_delay,
                    percent: args.fault_delay_percent,
                },
            ),
        }
    }

    #[must_use]
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// The service's metrics registry, to register its own metrics on.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `app` plus `/health`, `/readiness`, `/metrics`, their aliases, and the standard layers.
    pub fn into_router(self, app: Router) -> Router {
        let Kit {
            metrics,
            alias,
            readiness,
            body_limit,
            request_timeout,
            cpu_limit,
            fault,
        } = self;
        // Only the service's own routes wait for CPU, not the probes or `/metrics`.
        let app = match cpu_limit {
            Some(cores) => app.layer(axum::middleware::from_fn_with_state(
                crate::cpu_limit::CpuLimit::new(cores),
                crate::cpu_limit::throttle,
            )),
            None => app,
        };
        let app = match fault {
            Some(delay) => {
                tracing::warn!(
                    "fault injection on: {:?} delay on {}% of requests (FAULT_DELAY, FAULT_DELAY_PERCENT)",
                    delay.delay,
                    delay.percent
                );
                app.layer(axum::middleware::from_fn_with_state(
                    delay,
                    middleware::delay,
                ))
            }
            None => app,
        };
        let probes = Router::new()
            .route("/health", get(health::health))
            .route(&format!("/api/v1/{alias}/health"), get(health::health))
            .route("/readiness", get(health::readiness))
            .route(
                &format!("/api/v1/{alias}/readiness"),
                get(health::readiness),
            )
            .with_state(readiness);
        let scrape = Router::new()
            .route("/metrics", get(metrics::handler))
            .with_state(metrics.clone());

        app.merge(probes)
            .merge(scrape)
            .route_layer(CatchPanicLayer::custom(panic_response))
            .route_layer(TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                request_timeout,
            ))
            .route_layer(axum::middleware::from_fn(middleware::stamp_route))
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(RequestBodyLimitLayer::new(body_limit))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(axum::middleware::from_fn_with_state(
                metrics,
                middleware::observe,
            ))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(SetRequestIdLayer::x_request_id(SequentialIds::new()))
    }
}

/// Request ids `<random process prefix>-<counter>`: unique, and cheaper than a UUID per
/// request (no system call).
#[derive(Clone)]
struct SequentialIds {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SequentialIds {
    fn new() -> Self {
        let prefix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            prefix: prefix.into(),
            next: std::sync::Arc::default(),
        }
    }
}

impl MakeRequestId for SequentialIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::try_from(format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = cause
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    tracing::error!(panic = %detail, "handler panicked; answered 500");
    envelope(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Connections the kernel may hold for us before we accept them (capped by
/// `net.core.somaxconn`). Lab 02 opens up to 3000 clients at once; with the usual 128
/// the SYNs beyond it are dropped and each costs its client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` and logs the address it got (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's TcpListener::bind: a restarted replica can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// How long in-flight requests may finish after shutdown starts, unless told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` until `shutdown` resolves, then lets in-flight requests finish for
/// at most `grace` before returning. The connection limits are [`ServerArgs`]'
/// defaults; [`serve_with`] takes them from flags.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let args = ServerArgs {
        shutdown_grace: grace,
        ..ServerArgs::default()
    };
    serve_with(listener, router, shutdown, &args).await
}

/// Serves `router` over HTTP/1.1 and HTTP/2 (prior knowledge) until `shutdown`
/// resolves, then lets in-flight requests finish for at most `args.shutdown_grace`.
/// Connections keep `args`' header-read and idle timeouts, header buffer bound and
/// connection cap (see `connection.rs`).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    args: &ServerArgs,
) -> std::io::Result<()> {
    let limits = Limits::from(args);
    drain_on(shutdown, args.shutdown_grace, |stop| {
        crate::accept::accept_loop(listener, router, stop, limits)
    })
    .await
}

/// Serves every connection accepted on `listener` with `handle` (on its own task, at
/// most `args.max_connections` at once) until `shutdown` resolves, then lets the open
/// ones finish for at most `args.shutdown_grace`. For a server that speaks HTTP itself
/// rather than through a `Router`, such as the scaler's proxy: `handle` gets the
/// shutdown signal, on which a connection finishes its request and closes.
pub async fn serve_connections<H, F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    args: &ServerArgs,
    handle: H,
) -> std::io::Result<()>
where
    H: Fn(tokio::net::TcpStream, tokio::sync::watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let max_connections = args.max_connections.max(1) as usize;
    drain_on(shutdown, args.shutdown_grace, |stop| {
        crate::accept::accept_connections(listener, stop, max_connections, handle)
    })
    .await
}

/// Runs `server` (given the stop signal) until it ends, or until `shutdown` has
/// resolved and `grace` has passed since.
async fn drain_on<S>(
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    server: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> S,
) -> std::io::Result<()>
where
    S: Future<Output = ()>,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = server(stop_rx);
    let deadline = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down; draining in-flight requests"
        );
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {
            tracing::info!("stopped");
            Ok(())
        }
        () = deadline => {
            tracing::warn!("drain took longer than the grace period; closing the remaining connections");
            Ok(())
        }
    }
}

/// Closes a connection the server is done with, without resetting it on a client
/// still sending: ends our side, then reads and discards what the client sends (at
/// most 16 MiB, for at most 2 s), as Apache and nginx do. Runs on its own task.
pub fn close_lingering(stream: tokio::net::TcpStream) {
    tokio::spawn(crate::connection::linger(stream, Vec::new()));
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
