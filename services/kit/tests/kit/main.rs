//! The kit's layers and endpoints, in-process (`Router::oneshot`) and over a real
//! socket for shutdown.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use kit::{ApiError, AppJson, Kit, Readiness, ServerArgs};
use serde_json::Value;
use tower::ServiceExt as _;

mod connections;

fn args() -> ServerArgs {
    ServerArgs {
        body_limit: 1024,
        request_timeout: Duration::from_millis(300),
        ..ServerArgs::default()
    }
}

async fn echo(AppJson(body): AppJson<Value>) -> axum::Json<Value> {
    axum::Json(body)
}

async fn boom() -> &'static str {
    panic!("handler bug")
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

async fn teapot() -> Result<(), ApiError> {
    Err(ApiError::conflict("already there"))
}

fn test_router(readiness: Readiness) -> Router {
    let app = Router::new()
        .route("/echo", post(echo))
        .route("/boom", get(boom))
        .route("/slow", get(slow))
        .route("/conflict", get(teapot))
        .route("/things/{id}", get(|| async { "thing" }));
    Kit::new("kit-test", "kit", &args())
        .with_readiness(readiness)
        .into_router(app)
}

async fn call(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn envelope_of(body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_envelope_and_the_router_keeps_serving() {
    let router = test_router(Readiness::always());
    let (status, _, body) = call(&router, get_req("/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(envelope_of(&body), "internal error");
    assert!(
        !body.contains("handler bug"),
        "the panic message stays in the log"
    );
    let (status, _, _) = call(&router, get_req("/health")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_request_is_cut_at_the_timeout_with_504() {
    let router = test_router(Readiness::always());
    let started = Instant::now();
    let (status, _, body) = call(&router, get_req("/slow")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(envelope_of(&body), "request timed out");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_or_without_content_length() {
    let router = test_router(Readiness::always());
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(4096));
    let sized = Request::post("/echo")
        .header("content-length", big.len())
        .body(Body::from(big.clone()))
        .expect("request");
    let (status, _, body) = call(&router, sized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    envelope_of(&body);

    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = Request::post("/echo")
        .body(Body::from_stream(stream))
        .expect("request");
    let (status, _, body) = call(&router, chunked).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    envelope_of(&body);
}

#[tokio::test]
async fn json_rejections_use_the_envelope() {
    let router = test_router(Readiness::always());
    for bad in ["{oops", "", "   "] {
        let (status, _, body) = call(
            &router,
            Request::post("/echo")
                .body(Body::from(bad))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(!envelope_of(&body).is_empty());
    }
    // No Content-Type needed: curl -d and the course clients are served.
    let (status, _, body) = call(
        &router,
        Request::post("/echo")
            .body(Body::from("{\"a\":1}"))
            .expect("request"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"a\":1}"));
    let (status, _, body) = call(&router, get_req("/conflict")).await;
    assert_eq!(
        (status, envelope_of(&body).as_str()),
        (StatusCode::CONFLICT, "already there")
    );
}

#[tokio::test]
async fn router_errors_use_the_envelope_and_keep_their_headers() {
    let router = test_router(Readiness::always());
    let (status, _, body) = call(&router, get_req("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    envelope_of(&body);
    let (status, headers, body) = call(
        &router,
        Request::delete("/echo")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    envelope_of(&body);
}

#[tokio::test]
async fn readiness_reports_the_failing_check_and_recovers() {
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ready.clone();
    let router = test_router(Readiness::new(
        move || -> kit::health::BoxFuture<'static, Result<(), String>> {
            let ok = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("database down".to_owned())
                }
            })
        },
    ));
    for path in ["/readiness", "/api/v1/kit/readiness"] {
        let (status, _, body) = call(&router, get_req(path)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(envelope_of(&body).contains("database down"));
    }
    let (status, _, _) = call(&router, get_req("/api/v1/kit/health")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on readiness"
    );
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _, _) = call(&router, get_req("/readiness")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_use_the_route_template_and_count_panics_and_timeouts() {
    let router = test_router(Readiness::always());
    call(&router, get_req("/things/42")).await;
    call(&router, get_req("/things/43")).await;
    call(&router, get_req("/boom")).await;
    call(&router, get_req("/slow")).await;
    let (_, headers, text) = call(&router, get_req("/metrics")).await;
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    assert!(text.contains(r#"http_requests_total{method="GET",route="/things/{id}",service="kit-test",status="200"} 2"#), "{text}");
    assert!(
        text.contains(r#"route="/boom",service="kit-test",status="500"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/slow",service="kit-test",status="504"} 1"#),
        "{text}"
    );
    assert!(!text.contains("/things/42"));
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_within_the_grace_period() {
    // The handler says when it has the request, so shutdown starts with it in flight.
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
    let app = Router::new().route(
        "/work",
        get(move || {
            let entered = entered_tx.clone();
            async move {
                let _ = entered.send(()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        }),
    );
    let args = ServerArgs {
        request_timeout: Duration::from_secs(10),
        ..ServerArgs::default()
    };
    let router = Kit::new("kit-test", "kit", &args).into_router(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kit::serve(
        listener,
        router,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let in_flight = tokio::spawn(client.get(format!("{base}/work")).send());
    entered_rx
        .recv()
        .await
        .expect("the handler got the request");
    let _ = tx.send(());
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(response.text().await.expect("body"), "done");
    server.await.expect("task").expect("serve returns cleanly");
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn a_request_longer_than_the_grace_period_does_not_hold_shutdown() {
    let app = Router::new().route(
        "/forever",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "never"
        }),
    );
    let args = ServerArgs {
        request_timeout: Duration::from_secs(120),
        ..ServerArgs::default()
    };
    let router = Kit::new("kit-test", "kit", &args).into_router(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kit::serve(
        listener,
        router,
        async {
            let _ = rx.await;
        },
        Duration::from_millis(300),
    ));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let _stuck = tokio::spawn(client.get(format!("{base}/forever")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _ = tx.send(());
    server.await.expect("task").expect("serve returns");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_the_instance_on_its_listen_address() {
    let router = Kit::new("kit-test", "kit", &args()).into_router(Router::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(kit::serve(
        listener,
        router,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    // The probe is blocking (it runs in its own process in a container).
    let up = tokio::task::spawn_blocking(move || kit::health::probe(addr, "/health"))
        .await
        .expect("probe");
    assert_eq!(up, 0, "a serving instance is healthy");
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
    let via_unspecified =
        tokio::task::spawn_blocking(move || kit::health::probe(unspecified, "/health"))
            .await
            .expect("probe");
    assert_eq!(via_unspecified, 0, "0.0.0.0 is probed on loopback");
    let missing = tokio::task::spawn_blocking(move || kit::health::probe(addr, "/no-such-path"))
        .await
        .expect("probe");
    assert_eq!(missing, 1, "a 404 is unhealthy");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let down = tokio::task::spawn_blocking(move || kit::health::probe(closed, "/health"))
        .await
        .expect("probe");
    assert_eq!(down, 1, "nothing listening is unhealthy");
}

#[tokio::test(start_paused = true)]
async fn an_injected_delay_holds_the_services_routes_but_never_the_probes() {
    let router = |percent| {
        let args = ServerArgs {
            fault_delay: Duration::from_secs(7),
            fault_delay_percent: percent,
            ..ServerArgs::default()
        };
        Kit::new("kit-test", "kit", &args)
            .into_router(Router::new().route("/things/{id}", get(|| async { "thing" })))
    };
    let delayed = router(100);
    for probe in ["/health", "/readiness", "/api/v1/kit/health", "/metrics"] {
        let started = tokio::time::Instant::now();
        let (status, _, _) = call(&delayed, get_req(probe)).await;
        assert_eq!(status, StatusCode::OK, "{probe}");
        assert_eq!(started.elapsed(), Duration::ZERO, "{probe} was delayed");
    }
    let started = tokio::time::Instant::now();
    let (status, _, body) = call(&delayed, get_req("/things/1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "thing"));
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    let started = tokio::time::Instant::now();
    let (status, _, _) = call(&router(0), get_req("/things/1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::ZERO, "0% still delayed");
}
