//! The server's connection limits over real sockets: the header-read and idle
//! deadlines, the bounded header buffer, and answers that a client which writes its
//! whole request before reading (as Python's `urllib` does) still gets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use kit::{Kit, ServerArgs};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::envelope_of;

/// Short deadlines keep the tests quick; the bounds they are checked against are ten
/// times longer so a loaded machine does not fail them.
const SHORT: Duration = Duration::from_millis(500);
const BOUND: Duration = Duration::from_secs(5);

/// A server on a free loopback port with `args`; returns its address.
async fn start(args: ServerArgs) -> SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route("/echo", post(|body: String| async move { body }));
    let router = Kit::new("kit-test", "kit", &args).into_router(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        async move { kit::serve_with(listener, router, std::future::pending(), &args).await },
    );
    addr
}

/// Reads until the server closes the connection (end of stream or reset) and returns
/// how long that took; panics if it is still open after [`BOUND`].
async fn closed_within_bound(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closing = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, closing)
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after {BOUND:?}"));
    started.elapsed()
}

/// Writes all of `request` before reading anything, then reads the answer to the end.
async fn write_then_read(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other(format!("no answer within {BOUND:?}")))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Asks `GET /hello` on an open connection and reads the whole answer.
async fn get_hello(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write the request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"hi") {
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed instead of answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status_and_body(&String::from_utf8_lossy(&answer)).0, 200);
}

/// The status code and body of a raw HTTP/1.1 answer.
fn status_and_body(answer: &str) -> (u16, &str) {
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:.200}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let addr = start(ServerArgs {
        header_read_timeout: SHORT,
        ..ServerArgs::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let elapsed = closed_within_bound(&mut stream).await;
    assert!(elapsed >= SHORT / 2, "closed after only {elapsed:?}");
}

#[tokio::test]
async fn a_request_line_sent_a_byte_at_a_time_is_closed_at_the_header_read_timeout() {
    let addr = start(ServerArgs {
        header_read_timeout: SHORT,
        ..ServerArgs::default()
    })
    .await;
    let (mut reader, mut writer) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    // Slowloris: the request line never ends, a byte every 100 ms keeps it moving.
    let trickle = tokio::spawn(async move {
        if writer.write_all(b"GET /").await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    closed_within_bound(&mut reader).await;
    trickle.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header clock is long: only the idle deadline can close the connection in time.
    let addr = start(ServerArgs {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: SHORT,
        ..ServerArgs::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    get_hello(&mut stream).await;
    let elapsed = closed_within_bound(&mut stream).await;
    assert!(elapsed >= SHORT / 2, "closed after only {elapsed:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_may_idle_longer_than_the_header_read_timeout() {
    // The header clock starts with a request's first byte, not when the connection
    // goes idle: a client that reuses its connection a while later is still served.
    let addr = start(ServerArgs {
        header_read_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
        ..ServerArgs::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for _ in 0..2 {
        get_hello(&mut stream).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    get_hello(&mut stream).await;
}

#[tokio::test]
async fn headers_never_finished_beyond_the_buffer_bound_get_431_and_the_connection_closes() {
    let addr = start(ServerArgs {
        max_header_bytes: 16 * 1024,
        ..ServerArgs::default()
    })
    .await;
    // 200 KB of headers that never end: a server must not buffer all of it.
    let mut request = b"GET /hello HTTP/1.1\r\nhost: test\r\n".to_vec();
    for i in 0..200 {
        request.extend_from_slice(format!("x-pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    let answer = write_then_read(addr, &request)
        .await
        .expect("the server answers and closes");
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 431, "{answer:.300}");
    assert!(!envelope_of(body).is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_written_before_reading_still_gets_the_413_envelope() {
    let addr = start(ServerArgs {
        body_limit: 64 * 1024,
        ..ServerArgs::default()
    })
    .await;
    for size in [1024 * 1024, 10 * 1024 * 1024] {
        // As Python's http.client: the head in one send, the body in the next; the
        // server has answered from the head by the time the body arrives.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /echo HTTP/1.1\r\nhost: test\r\ncontent-type: text/plain\r\ncontent-length: {size}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(&vec![b'a'; size])
            .await
            .unwrap_or_else(|e| panic!("writing the {size}-byte body: {e}"));
        let mut answer = Vec::new();
        tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| panic!("reading the answer to {size} bytes: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        let (status, body) = status_and_body(&answer);
        assert_eq!(status, 413, "{answer:.300}");
        assert!(!envelope_of(body).is_empty());
    }
}

#[tokio::test]
async fn a_100_kb_url_gets_414_with_the_envelope() {
    let addr = start(ServerArgs::default()).await;
    let request = format!(
        "GET /{} HTTP/1.1\r\nhost: test\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = write_then_read(addr, request.as_bytes())
        .await
        .expect("answered");
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 414, "{answer:.300}");
    assert!(!envelope_of(body).is_empty());
}

#[tokio::test]
async fn five_hundred_headers_get_431_with_the_envelope() {
    let addr = start(ServerArgs::default()).await;
    let mut request = "GET /hello HTTP/1.1\r\nhost: test\r\n".to_owned();
    for i in 0..500 {
        request.push_str(&format!("x-h-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let answer = write_then_read(addr, request.as_bytes())
        .await
        .expect("answered");
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 431, "{answer:.300}");
    assert!(!envelope_of(body).is_empty());
}
