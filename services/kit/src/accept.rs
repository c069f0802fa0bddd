//! The accept loop and one connection's service: hyper-util's server (HTTP/1.1 and
//! HTTP/2 with prior knowledge) over sockets that keep the deadlines of
//! [`crate::connection`], a cap on open connections, and graceful shutdown.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::ServerArgs;
use crate::connection::{Activity, Deadlines, Watched};

/// What each connection is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    deadlines: Deadlines,
    max_header_bytes: usize,
    max_connections: usize,
}

impl From<&ServerArgs> for Limits {
    fn from(args: &ServerArgs) -> Self {
        Self {
            deadlines: Deadlines {
                header_read: args.header_read_timeout,
                idle: args.idle_timeout,
            },
            max_header_bytes: args.max_header_bytes.max(crate::config::MIN_HEADER_BYTES),
            max_connections: args.max_connections.max(1) as usize,
        }
    }
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: it would start when a keep-alive connection goes idle, and so also be
        // the idle timeout. `connection::Watched` keeps both deadlines instead.
        .header_read_timeout(None)
        // The read buffer of a request not yet parsed: above it, 431.
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Accepts connections (at most `max_connections` at once) until `stop`, then waits
/// for the open ones to finish their requests and close. Each connection is served by
/// hyper with `router`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
) {
    let builder = http_builder(&limits);
    let deadlines = limits.deadlines;
    accept_connections(listener, stop, limits.max_connections, move |tcp, stop| {
        serve_connection(tcp, router.clone(), builder.clone(), deadlines, stop)
    })
    .await;
}

/// Accepts connections (at most `max_connections` at once) until `stop`, serving each
/// with `handle` on its own task, then waits for the open ones to close. `handle` gets
/// the shutdown signal: on it, a connection finishes its request in flight and closes.
pub(crate) async fn accept_connections<H, F>(
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    max_connections: usize,
    handle: H,
) where
    H: Fn(tokio::net::TcpStream, tokio::sync::watch::Receiver<bool>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    // Each connection holds a receiver; all dropped means all closed.
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(());
    loop {
        let slot = tokio::select! {
            slot = std::sync::Arc::clone(&slots).acquire_owned() => slot,
            () = stopped(&mut stop) => break,
        };
        let Ok(slot) = slot else { break };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Small request/response exchanges: do not wait to coalesce packets.
        let _ = tcp.set_nodelay(true);
        let connection = handle(tcp, stop.clone());
        let held = (slot, closed_rx.clone());
        tokio::spawn(async move {
            connection.await;
            drop(held);
        });
    }
    drop(closed_rx);
    drop(listener);
    closed_tx.closed().await;
}

/// Resolves once shutdown has started (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection until it closes; on `stop`, finishes its in-flight requests
/// and closes it.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    deadlines: Deadlines,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let activity = std::sync::Arc::new(Activity::default());
    let io = TokioIo::new(Watched::new(
        tcp,
        std::sync::Arc::clone(&activity),
        deadlines,
    ));
    let service = tower::service_fn(move |request: axum::http::Request<Incoming>| {
        let in_flight = activity.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // The request counts as in flight until its body is sent or dropped.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
