//! The per-request middleware: one span per request (child of the caller's trace),
//! metrics labelled by route template, an access log line, and the JSON envelope for
//! error responses that layers (not handlers) produced.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::error::{default_message, envelope};
use crate::metrics::Metrics;

/// The route template a request matched, carried out on the response so that the
/// outer middleware (which runs before routing) can label with it.
#[derive(Clone)]
pub(crate) struct RouteTemplate(MatchedPath);

/// Innermost layer on every route: copies the matched route template to the response.
pub(crate) async fn stamp_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(RouteTemplate(matched));
    }
    response
}

/// An injected delay fault (`FAULT_DELAY`, `FAULT_DELAY_PERCENT`): what the course's
/// Istio delay did at the mesh, for a run without one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delay {
    pub(crate) delay: std::time::Duration,
    pub(crate) percent: u8,
}

/// Holds `percent` of the requests `delay` before they reach the handler.
pub(crate) async fn delay(State(fault): State<Delay>, req: Request, next: Next) -> Response {
    if rand::random_range(0..100u8) < fault.percent {
        tokio::time::sleep(fault.delay).await;
    }
    next.run(req).await
}

/// Decrements the in-flight gauge even if the request future is dropped.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Outer layer: span, metrics, access log and error envelope.
pub(crate) async fn observe(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    metrics.in_flight().inc();
    let _in_flight = InFlight(metrics.in_flight());

    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = Empty,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
        request_id = %request_id,
    );
    let exporting = crate::telemetry::exporting();
    if exporting {
        // The caller's trace, if it sent one; this span becomes its child.
        let _ = span.set_parent(crate::telemetry::extract_context(req.headers()));
    }

    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status();
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", |RouteTemplate(m)| m.as_str())
        .to_owned();
    if status.is_client_error() || status.is_server_error() {
        response = ensure_envelope(response);
    }
    let elapsed = started.elapsed();
    metrics.observe(method.as_str(), &route, status.as_u16(), elapsed);

    span.record("http.route", route.as_str());
    if exporting {
        // The OpenTelemetry span has started by now, so rename it directly.
        span.context()
            .span()
            .update_name(format!("{method} {route}"));
    }
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(parent: &span, %status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::debug!(parent: &span, %status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request done");
    }
    response
}

/// Replaces the body of an error response that is not JSON (a 404 from the router, a
/// 405, a 413 from the body limit, a 504 from the timeout) with the JSON envelope,
/// keeping its status and headers such as `Allow`.
fn ensure_envelope(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let status: StatusCode = parts.status;
    let replacement = envelope(status, default_message(status));
    let (new_parts, body) = replacement.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, new_parts.headers[CONTENT_TYPE].clone());
    Response::from_parts(parts, body)
}
