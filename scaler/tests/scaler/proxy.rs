//! The balancer's HTTP/1.1 on the wire, spoken byte by byte to a balancer in front of a
//! real replica (an axum server on a free port): framing both ways, pipelining,
//! HTTP/1.0, `100 Continue`, hop-by-hop headers, the refusals that keep a proxy and a
//! replica from disagreeing on where a request ends, and idle connections a replica
//! closed.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use scaler::pool::{Backend, State};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{balancer, serve};

/// A replica: `/echo` returns the body, `/headers` the headers it received (as JSON),
/// `/stream` a body of three pieces sent chunked.
fn replica() -> Router {
    Router::new()
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let seen: BTreeMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                    .collect();
                axum::Json(seen)
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let pieces = ["one,", "two,", "three"]
                    .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from_static(p.as_bytes())));
                Body::from_stream(futures_util::stream::iter(pieces))
            }),
        )
        .route("/health", get(|| async { "ok" }))
}

/// A balancer with one replica; returns the balancer's `host:port`.
async fn proxied() -> String {
    let (balancer, base) = balancer("wire").await;
    balancer
        .pool
        .add(Backend::new("wire-1", serve(replica()).await, State::Alive));
    base.trim_start_matches("http://").to_owned()
}

/// Writes `request` and reads until the balancer closes the connection.
async fn exchange(addr: &str, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    read_to_close(&mut tcp).await
}

async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer))
        .await
        .expect("the balancer closes the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_chunked_request_arrives_whole_and_a_chunked_answer_passes_through() {
    let addr = proxied().await;
    let answer = exchange(
        &addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n\
          GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (first, second) = answer
        .split_once("HTTP/1.1 200")
        .expect("two answers")
        .1
        .split_once("HTTP/1.1 200")
        .expect("two answers");
    assert!(first.contains("content-length: 12\r\n"), "{first}");
    assert!(first.contains("x-replica: wire-1\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\nhello, world"), "{first}");
    assert!(
        second.contains("transfer-encoding: chunked\r\n"),
        "{second}"
    );
    assert!(second.contains("connection: close\r\n"), "{second}");
    // The pieces as the replica framed them (axum sends each as a chunk).
    assert!(
        second.ends_with("\r\n\r\n4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"),
        "{second:?}"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let addr = proxied().await;
    let mut requests = Vec::new();
    for i in 0..20 {
        let body = format!("request {i}");
        let close = if i == 19 { "Connection: close\r\n" } else { "" };
        requests.extend_from_slice(
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\n{close}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let answer = exchange(&addr, &requests).await;
    let bodies: Vec<&str> = answer
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|a| a.split_once("\r\n\r\n").expect("a head").1)
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("request {i}")).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn an_http_1_0_client_gets_a_decoded_body_and_a_closed_connection() {
    let addr = proxied().await;
    let answer = exchange(&addr, b"GET /stream HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("transfer-encoding"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\none,two,three"), "{answer:?}");
    // Keep-alive when asked: the connection stays open for a second request.
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let mut first = vec![0u8; 4096];
    let n = tcp.read(&mut first).await.expect("read");
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(
        first.contains("connection: keep-alive\r\n") && first.ends_with("ok"),
        "{first}"
    );
    tcp.write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    assert!(read_to_close(&mut tcp).await.ends_with("\r\n\r\nok"));
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_it_before_sending_the_body() {
    let addr = proxied().await;
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\
          Connection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut interim = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut interim))
        .await
        .expect("an interim answer, not a wait")
        .expect("read");
    assert_eq!(&interim[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"hello").await.expect("write");
    let answer = read_to_close(&mut tcp).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("hello"),
        "{answer}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_stay_at_the_balancer_and_the_rest_go_through() {
    let addr = proxied().await;
    let answer = exchange(
        &addr,
        b"GET /headers HTTP/1.1\r\nHost: public.example\r\nConnection: close, X-Hop\r\n\
          X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\nTE: trailers\r\n\
          Upgrade: websocket\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
          Authorization: Bearer t\r\n\r\n",
    )
    .await;
    let body = answer.split_once("\r\n\r\n").expect("a head").1;
    let seen: BTreeMap<String, String> = serde_json::from_str(body).expect("JSON");
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "connection",
    ] {
        assert!(!seen.contains_key(hop), "{hop} went through: {seen:?}");
    }
    assert!(seen["host"].starts_with("127.0.0.1:"), "{seen:?}");
    assert_eq!(seen["authorization"], "Bearer t");
    assert!(seen["traceparent"].starts_with("00-0af7"), "{seen:?}");
}

#[tokio::test]
async fn requests_a_proxy_could_misframe_are_refused_with_the_json_envelope() {
    let addr = proxied().await;
    for (request, status) in [
        (
            &b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            "400",
        ),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "400"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET / HTTP/2.0\r\n\r\n", "505"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", "400"),
    ] {
        let answer = exchange(&addr, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
        assert!(answer.contains("content-type: application/json\r\n"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        let body = answer.split_once("\r\n\r\n").expect("a head").1;
        let error: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(error["error"].is_string(), "{body}");
    }
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    assert!(
        exchange(&addr, huge.as_bytes())
            .await
            .starts_with("HTTP/1.1 431 ")
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000));
    assert!(
        exchange(&addr, long.as_bytes())
            .await
            .starts_with("HTTP/1.1 414 ")
    );
}

#[tokio::test]
async fn a_client_still_sending_a_too_large_body_reads_the_413() {
    let addr = proxied().await;
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let size = 4 * 1024 * 1024;
    tcp.write_all(format!("POST /echo HTTP/1.1\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // The whole body goes out, as a client that does not wait for an answer sends it;
    // the balancer answers at once and drains what follows instead of resetting.
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return false;
            }
        }
        true
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .expect("read without a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("1048576 bytes"), "{answer}");
    assert!(
        writer.await.expect("writer"),
        "the body could be written whole"
    );
}

/// A replica that answers one request per connection and then closes it, without
/// saying so (no `Connection: close`): every idle connection the balancer keeps is
/// closed by the time it is used.
async fn closing_replica() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed without a word, as a replica shutting down closes idle ones.
            });
        }
    });
    base
}

#[tokio::test]
async fn connections_a_replica_closed_while_idle_are_never_used_even_for_posts() {
    let (balancer, base) = balancer("closing").await;
    balancer.pool.add(Backend::new(
        "closing-1",
        closing_replica().await,
        State::Alive,
    ));
    let http = crate::support::client();
    for i in 0..30 {
        let response = http
            .post(format!("{base}/anything"))
            .body(format!("{i}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(response.text().await.expect("body"), "ok");
        // Let the replica's close arrive before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replica = &balancer.pool.all()[0];
    assert_eq!(replica.state(), State::Alive, "never counted as a failure");
}

#[tokio::test]
async fn a_replica_is_sent_at_most_max_in_flight_requests_and_the_rest_wait_their_turn() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The replica holds every request until the test opens the gate, counting how many
    // it holds at once.
    #[derive(Clone)]
    struct Held {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        gate: Arc<tokio::sync::Semaphore>,
    }
    let held = Held {
        now: Arc::default(),
        most: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let replica = Router::new()
        .route(
            "/hold",
            get(
                |axum::extract::State(h): axum::extract::State<Held>| async move {
                    let n = h.now.fetch_add(1, Ordering::SeqCst) + 1;
                    h.most.fetch_max(n, Ordering::SeqCst);
                    let _ = h.gate.acquire().await.map(|p| p.forget());
                    h.now.fetch_sub(1, Ordering::SeqCst);
                    "ok"
                },
            ),
        )
        .with_state(held.clone());
    let (balancer, base) = balancer("held").await;
    balancer
        .pool
        .add(Backend::new("held-1", serve(replica).await, State::Alive));
    let limit = scaler::pool::max_in_flight();
    let sent = limit + 8;
    let http = crate::support::client();
    let requests: Vec<_> = (0..sent)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/hold");
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    // Wait (a generous bound) until the replica holds the limit and the balancer counts
    // every request: the rest are queued in the balancer, not at the replica.
    let backend = balancer.pool.all()[0].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (held.now.load(Ordering::SeqCst) < limit || backend.in_flight() < sent)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        held.now.load(Ordering::SeqCst),
        limit,
        "held at the replica"
    );
    assert_eq!(backend.in_flight(), sent, "in flight, waiting ones counted");
    // Queued requests stay queued while the replica holds its limit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held.most.load(Ordering::SeqCst), limit);
    held.gate.add_permits(sent);
    for request in requests {
        let status = request.await.expect("task").expect("answered");
        assert_eq!(status, 200);
    }
    assert_eq!(
        held.most.load(Ordering::SeqCst),
        limit,
        "never more than the limit"
    );
}
