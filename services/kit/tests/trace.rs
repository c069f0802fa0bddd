//! Trace propagation through the kit's server and client, in a test binary of its own:
//! it installs a thread-local tracing subscriber, and tests running beside it on other
//! threads (with none) could race tracing's per-callsite interest cache and leave A's
//! server span disabled (seen once with a core kept busy).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kit::{Kit, ServerArgs};

/// Service A receives a request with a `traceparent`, calls service B with the kit
/// client; B sees the same trace id, with A's server span as the parent.
#[tokio::test]
async fn the_kit_client_carries_the_incoming_trace_to_the_next_service() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("kit-test")));
    // Thread-local: this test's current-thread runtime runs both services on this thread.
    let _default = tracing::subscriber::set_default(subscriber);
    kit::telemetry::set_exporting(true);

    let b = Router::new().route(
        "/seen",
        get(|headers: axum::http::HeaderMap| async move {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    );
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let b_url = format!("http://{}/seen", b_listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(b_listener, b).await });

    let client = kit::HttpClient::new(kit::client::ClientOptions::default()).expect("client");
    let a = Router::new().route(
        "/call",
        get(move || {
            let client = client.clone();
            let b_url = b_url.clone();
            async move {
                client
                    .send(client.get(&b_url))
                    .await
                    .expect("call B")
                    .text()
                    .await
                    .expect("body")
            }
        }),
    );
    let router = Kit::new("a", "a", &ServerArgs::default()).into_router(a);
    let a_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a_url = format!("http://{}/call", a_listener.local_addr().expect("addr"));
    tokio::spawn(kit::serve(
        a_listener,
        router,
        std::future::pending(),
        Duration::from_secs(1),
    ));

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let seen = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(&a_url)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .expect("call A")
        .text()
        .await
        .expect("body");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "B saw a traceparent: {seen}");
    assert_eq!(parts[1], trace_id, "same trace");
    assert_ne!(
        parts[2], caller_span,
        "B's parent is A's server span, not A's caller"
    );
}
