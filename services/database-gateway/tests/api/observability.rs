use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;

use crate::helpers::{GatewayProcess, TestApp, TestDatabase, client};

#[tokio::test]
async fn metrics_label_requests_by_route_template() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"objtype": "user", "fname": "m"})).await;
    app.item("user", &id).await;
    app.read("user", "missing").await;
    app.get("/no/such/path/12345").await;

    let text = app.get("/metrics").await.text().await.expect("body");
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let read_ok = r#"http_requests_total{method="GET",route="/api/v1/datastore/read",service="database-gateway",status="200"} 1"#;
    let read_404 = r#"http_requests_total{method="GET",route="/api/v1/datastore/read",service="database-gateway",status="404"} 1"#;
    let write_ok = r#"http_requests_total{method="POST",route="/api/v1/datastore/write",service="database-gateway",status="200"} 1"#;
    for line in [read_ok, read_404, write_ok] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(!text.contains(&id), "a raw id leaked into a label");
    assert!(!text.contains("12345"), "a raw path leaked into a label");
    assert!(text.contains(r#"route="unmatched""#));
}

#[tokio::test]
async fn readiness_and_its_alias_are_200_when_the_store_answers() {
    let app = TestApp::spawn().await;
    for path in [
        "/readiness",
        "/api/v1/datastore/readiness",
        "/health",
        "/api/v1/datastore/health",
    ] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn responses_carry_a_request_id_and_echo_a_given_one() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").await;
    assert!(!response.headers()["x-request-id"].is_empty());
    let echoed = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
}

/// An in-process OTLP/HTTP receiver; the real binary exports to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_joins_the_callers_trace() {
    let (tx, mut rx) = mpsc::unbounded_channel::<ExportTraceServiceRequest>();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    let _ = tx.send(request);
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let db = TestDatabase::new().await;
    let logs = tempfile::tempdir().expect("temp dir");
    let gateway = GatewayProcess::start(
        &db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        logs.path().join("gateway.log"),
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let response = client()
        .get(format!(
            "{}/api/v1/datastore/list?objtype=user",
            gateway.base
        ))
        .header("traceparent", format!("00-{trace_id}-{parent_span}-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);

    let want_trace = hex(trace_id);
    let want_parent = hex(parent_span);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(export)) = tokio::time::timeout(remaining, rx.recv()).await else {
            panic!("no server span with trace id {trace_id} was exported within 15 s");
        };
        let spans = export
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        if let Some(span) = spans.into_iter().find(|s| s.trace_id == want_trace) {
            assert_eq!(
                span.parent_span_id, want_parent,
                "the caller's span is the parent"
            );
            assert_eq!(span.kind, SpanKind::Server as i32);
            assert_eq!(span.name, "GET /api/v1/datastore/list");
            let service = export.resource_spans[0]
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            assert!(
                service.is_some_and(|s| s.contains("database-gateway")),
                "service.name is set"
            );
            return;
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
