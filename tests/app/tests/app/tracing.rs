//! One request is one trace: music's server span, its client span to the gateway, and
//! the gateway's server span (child of that client span), exported over OTLP/HTTP to an
//! in-process receiver.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::platform::{Options, Platform};

/// Spans received, with the `service.name` of their resource.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, Span)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                            .and_then(|a| a.value.as_ref())
                            .and_then(|v| match &v.value {
                                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            let _ = tx.send((service.clone(), span));
                        }
                    }
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
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_music_read_is_one_trace_across_music_and_the_gateway() {
    let (endpoint, mut spans) = receiver().await;
    let mut p = Platform::start(Options {
        auth_mode: Some("presence"),
        common_env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Options::default()
    })
    .await;
    p.auth = Some("Bearer A".into());
    let id = p.song("Talking Heads", "Once in a Lifetime").await;

    let trace_hex = "5b8aa5a2d2c872e8321cf37308d69df2";
    let trace: Vec<u8> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_hex[i..i + 2], 16).expect("hex"))
        .collect();
    let response = p
        .http
        .get(format!("{}/api/v1/music/{id}", p.music.base))
        .header("Authorization", "Bearer A")
        .header("traceparent", format!("00-{trace_hex}-051581bf3cb55c13-01"))
        .send()
        .await
        .expect("read");
    assert_eq!(response.status(), StatusCode::OK);

    let mut seen: Vec<(String, Span)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let music_server = seen.iter().find(|(s, sp)| {
            s == "music"
                && sp.kind == SpanKind::Server as i32
                && sp.name == "GET /api/v1/music/{music_id}"
        });
        let music_client = seen.iter().find(|(s, sp)| {
            s == "music"
                && sp.kind == SpanKind::Client as i32
                && sp.name == "GET /api/v1/datastore/read"
        });
        let gateway_server = seen.iter().find(|(s, sp)| {
            s == "database-gateway"
                && sp.kind == SpanKind::Server as i32
                && sp.name == "GET /api/v1/datastore/read"
        });
        if let (Some((_, server)), Some((_, client)), Some((_, gateway))) =
            (music_server, music_client, gateway_server)
        {
            assert_eq!(
                client.parent_span_id, server.span_id,
                "music's client span is a child of its server span"
            );
            assert_eq!(
                gateway.parent_span_id, client.span_id,
                "the gateway's span is a child of music's client span"
            );
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, spans.recv()).await {
            Ok(Some((service, span))) if span.trace_id == trace => seen.push((service, span)),
            Ok(Some(_)) => {}
            _ => panic!(
                "the trace is incomplete after 15 s; got {:?}",
                seen.iter()
                    .map(|(s, sp)| format!("{s}: {} ({})", sp.name, sp.kind))
                    .collect::<Vec<_>>()
            ),
        }
    }
}
