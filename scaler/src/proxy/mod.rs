//! The balancers' data path: a lean HTTP/1.1 reverse proxy on each service's port and
//! on the ingress.
//!
//! Per request it reads the head (parsed in place by `httparse`), buffers the body (at
//! most [`MAX_BODY`], so a retry can resend it), lets the [`Balancer`] pick a replica,
//! writes one request to an idle keep-alive connection of that replica, and relays the
//! answer: its head rewritten (hop-by-hop headers out, `x-replica` in), its body
//! streamed through as the replica framed it. Header lines are forwarded as bytes, not
//! rebuilt into maps: the proxy's own work per request is a parse each way and two
//! copies, as nginx's is. (A general HTTP stack, hyper behind axum with hyper-util's
//! pooled client, cost four times nginx's CPU per request; see ci/bench-balancer.sh.)
//! Connections are served by single-threaded runtimes, one per two cores
//! ([`workers`]), each serving its connections whole as nginx's workers do.
//!
//! What a connection is held to mirrors the services' own server (kit): a client has
//! `header_read_timeout` to send a head, a keep-alive connection waits `idle_timeout`
//! for its next request, a head is at most `max_header_bytes` (then 431, or 414 for a
//! request line alone), at most `max_connections` are served at once, and a connection
//! closed with a request unread lingers so that the client reads the answer. Errors
//! are the JSON envelope. HTTP/2 is not spoken here (505): the course's clients, the
//! loader and the services all use HTTP/1.1 through the balancers.

pub mod upstream;
pub mod wire;
pub mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::StatusCode;
use kit::ServerArgs;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::balancer::Balancer;
use crate::pool::Backend;
use upstream::Conn;
use wire::{Chunked, Framing, RequestHead, ResponseHead, WireError};

/// Largest request body the balancer buffers (and so can retry).
pub const MAX_BODY: usize = 1024 * 1024;
/// Attempts per request, the first included.
const MAX_ATTEMPTS: usize = 3;
/// Largest response head a replica may send.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Which balancer a request goes to.
#[derive(Debug, Clone)]
pub enum Routes {
    /// A service's own port: all of it.
    Service(Arc<Balancer>),
    /// The ingress: by path prefix (see [`crate::ingress`]).
    Ingress(crate::Platform),
}

impl Routes {
    fn balancer(&self, path: &str) -> Result<Arc<Balancer>, kit::ApiError> {
        match self {
            Self::Service(balancer) => Ok(balancer.clone()),
            Self::Ingress(platform) => crate::ingress::balancer_for(platform, path),
        }
    }
}

/// What each connection is held to (from the same flags as the services' servers).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    max_header_bytes: usize,
}

/// Serves `routes` on `listener` until `shutdown`, then lets open requests finish for
/// at most `args.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    args: &ServerArgs,
) -> std::io::Result<()> {
    let limits = Limits {
        header_read: args.header_read_timeout,
        idle: args.idle_timeout,
        max_header_bytes: args.max_header_bytes.max(kit::config::MIN_HEADER_BYTES),
    };
    let routes = Arc::new(routes);
    kit::serve_connections(listener, shutdown, args, move |tcp, stop| {
        // Handed to a worker whole: there it is registered with that worker's reactor.
        let tcp = tcp.into_std();
        let routes = routes.clone();
        async move {
            let Ok(tcp) = tcp else { return };
            let mut task = workers::get().spawn(async move {
                let Ok(tcp) = TcpStream::from_std(tcp) else {
                    return;
                };
                let client = Client {
                    tcp,
                    buf: BytesMut::with_capacity(8 * 1024),
                    out: Vec::with_capacity(8 * 1024),
                    limits,
                    routes,
                };
                client.run(stop).await;
            });
            task.finished().await;
        }
    })
    .await
}

/// One client connection.
struct Client {
    tcp: TcpStream,
    /// Bytes read from the client and not yet used (a pipelined next request too).
    buf: BytesMut,
    /// What is written next, reused across requests.
    out: Vec<u8>,
    limits: Limits,
    routes: Arc<Routes>,
}

/// Why a connection stops reading requests.
enum Stop {
    /// Closed, timed out or shutting down: nothing to answer.
    Quietly,
    /// Answer this error, then close (lingering: the request may be unread).
    Answer(StatusCode, String),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Self {
        Self::Answer(e.status, e.message.to_owned())
    }
}

impl Client {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut fresh = true;
        loop {
            let head = match self.read_head(fresh, &mut stop).await {
                Ok(head) => head,
                Err(Stop::Quietly) => return,
                Err(Stop::Answer(status, message)) => {
                    return self.refuse(status, &message, 1).await;
                }
            };
            fresh = false;
            let body = match self.read_body(&head).await {
                Ok(body) => body,
                Err(Stop::Quietly) => return,
                Err(Stop::Answer(status, message)) => {
                    return self.refuse(status, &message, head.minor).await;
                }
            };
            let keep_alive = head.keep_alive && !*stop.borrow();
            let kept = match self.routes.balancer(path_of(&head.target)) {
                Ok(balancer) => self.forward(&balancer, &head, body, keep_alive).await,
                Err(e) => {
                    self.out.clear();
                    wire::write_error(
                        &mut self.out,
                        e.status(),
                        e.message(),
                        None,
                        keep_alive,
                        head.minor,
                    );
                    self.tcp.write_all(&self.out).await.is_ok() && keep_alive
                }
            };
            if !kept || *stop.borrow() {
                return;
            }
        }
    }

    /// Answers an error and closes without resetting a client still sending.
    async fn refuse(mut self, status: StatusCode, message: &str, minor: u8) {
        self.out.clear();
        wire::write_error(&mut self.out, status, message, None, false, minor);
        if tokio::time::timeout(self.limits.header_read, self.tcp.write_all(&self.out))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            kit::close_lingering(self.tcp);
        }
    }

    /// Reads more from the client into `buf`, by `deadline`: `Ok(false)` at its end.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> Result<bool, Stop> {
        self.buf.reserve(8 * 1024);
        match tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// The next request's head: waits up to the idle timeout for its first byte (or
    /// the header-read timeout on a new connection), then the header-read timeout for
    /// the rest.
    async fn read_head(
        &mut self,
        fresh: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<RequestHead, Stop> {
        if self.buf.is_empty() {
            let wait = if fresh {
                self.limits.header_read
            } else {
                self.limits.idle
            };
            let deadline = tokio::time::Instant::now() + wait;
            let more = tokio::select! {
                more = self.fill(deadline) => more?,
                _ = stop.wait_for(|stopping| *stopping) => false,
            };
            if !more {
                return Err(Stop::Quietly);
            }
        }
        let deadline = tokio::time::Instant::now() + self.limits.header_read;
        loop {
            if let Some((head, len)) = wire::parse_request(&self.buf)? {
                self.buf.advance(len);
                return Ok(head);
            }
            if self.buf.len() >= self.limits.max_header_bytes {
                let line_ended = self.buf.windows(2).any(|w| w == b"\r\n");
                return Err(if line_ended {
                    Stop::Answer(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        format!(
                            "the request's headers are larger than {} bytes",
                            self.limits.max_header_bytes
                        ),
                    )
                } else {
                    Stop::Answer(
                        StatusCode::URI_TOO_LONG,
                        "the request line is too long".into(),
                    )
                });
            }
            if !self.fill(deadline).await? {
                return Err(Stop::Quietly);
            }
        }
    }

    /// The request's whole body, buffered (at most [`MAX_BODY`]).
    async fn read_body(&mut self, head: &RequestHead) -> Result<Bytes, Stop> {
        let too_large = || {
            Stop::Answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {MAX_BODY} bytes"),
            )
        };
        match head.framing {
            Framing::Length(0) => Ok(Bytes::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| too_large())?;
                if n > MAX_BODY {
                    return Err(too_large());
                }
                self.continue_if_asked(head, self.buf.len() < n).await?;
                while self.buf.len() < n {
                    let deadline = tokio::time::Instant::now() + self.limits.header_read;
                    if !self.fill(deadline).await? {
                        return Err(Stop::Quietly);
                    }
                }
                Ok(self.buf.split_to(n).freeze())
            }
            Framing::Chunked => {
                self.continue_if_asked(head, true).await?;
                let mut chunked = Chunked::default();
                let mut body = Vec::new();
                loop {
                    let used = chunked.feed(&self.buf, |data| {
                        if body.len() + data.len() > MAX_BODY {
                            return Err(WireError {
                                status: StatusCode::PAYLOAD_TOO_LARGE,
                                message: "request body is larger than the limit of 1048576 bytes",
                            });
                        }
                        body.extend_from_slice(data);
                        Ok(())
                    })?;
                    self.buf.advance(used);
                    if chunked.done() {
                        return Ok(body.into());
                    }
                    let deadline = tokio::time::Instant::now() + self.limits.header_read;
                    if !self.fill(deadline).await? {
                        return Err(Stop::Quietly);
                    }
                }
            }
            Framing::UntilClose => Err(Stop::Answer(
                StatusCode::BAD_REQUEST,
                "a request body needs a length".into(),
            )),
        }
    }

    /// `100 Continue`, to a client that waits for it before sending its body.
    async fn continue_if_asked(&mut self, head: &RequestHead, missing: bool) -> Result<(), Stop> {
        if head.expect_continue && missing {
            self.tcp
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Stop::Quietly)?;
        }
        Ok(())
    }

    /// Forwards one request through `balancer` and relays the answer; counts it in
    /// the balancer's window and metrics. Returns whether the connection stays open.
    async fn forward(
        &mut self,
        balancer: &Balancer,
        head: &RequestHead,
        body: Bytes,
        keep_alive: bool,
    ) -> bool {
        let started = Instant::now();
        balancer.window.arrive();
        let (status, kept) = self.attempts(balancer, head, &body, keep_alive).await;
        let elapsed = started.elapsed();
        balancer.window.record(elapsed, status.is_server_error());
        balancer.metrics.observe(status, elapsed);
        kept
    }

    /// Tries up to [`MAX_ATTEMPTS`] replicas (retries within the balancer's budget);
    /// returns the status the client got and whether the connection stays open.
    async fn attempts(
        &mut self,
        balancer: &Balancer,
        head: &RequestHead,
        body: &Bytes,
        keep_alive: bool,
    ) -> (StatusCode, bool) {
        balancer.deposit();
        let idempotent = head.idempotent();
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 && !balancer.withdraw() {
                break;
            }
            let backend = {
                let mut rng = rand::rng();
                balancer.pool.choose(&tried, &mut rng)
            };
            let Some(backend) = backend else { break };
            tried.push(backend.clone());
            // Counted from here, waiting included: the pick and the policies see the
            // queue.
            let _in_flight = backend.start_request();
            let Ok(Ok(_slot)) =
                tokio::time::timeout(balancer.timeout, backend.slots.acquire()).await
            else {
                let message = format!(
                    "{} is busy: no replica free within {:?}",
                    balancer.service, balancer.timeout
                );
                return self.unavailable(&message, keep_alive, head.minor).await;
            };
            let sent = Instant::now();
            let exchanged =
                tokio::time::timeout(balancer.timeout, exchange(&backend, head, body, idempotent))
                    .await;
            match exchanged {
                Ok(Ok((mut conn, response))) => {
                    backend.observe(sent.elapsed());
                    let status =
                        StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let kept = self
                        .relay(
                            &backend,
                            &mut conn,
                            &response,
                            head.minor,
                            keep_alive,
                            balancer.timeout,
                        )
                        .await;
                    if kept.upstream_reusable {
                        backend.idle.put(conn);
                    }
                    return (status, kept.client_open);
                }
                Ok(Err(failure)) => {
                    last_error = format!("{}: {}", backend.id, failure.message);
                    balancer.eject(&backend, &format!("connection failed: {}", failure.message));
                    // A connection never made never carried the request: any method
                    // is safe to send again.
                    if !(failure.not_sent || idempotent) {
                        break;
                    }
                }
                Err(_) => {
                    last_error = format!(
                        "{} gave no answer within {:?}",
                        backend.id, balancer.timeout
                    );
                    if !idempotent {
                        let message = format!("{} did not answer in time", balancer.service);
                        return self
                            .answer_error(
                                StatusCode::GATEWAY_TIMEOUT,
                                &message,
                                keep_alive,
                                head.minor,
                            )
                            .await;
                    }
                }
            }
        }
        if tried.is_empty() {
            let message = format!("no ready replica of {}", balancer.service);
            return self.unavailable(&message, keep_alive, head.minor).await;
        }
        tracing::warn!(service = %balancer.service, error = %last_error, "request failed on every replica tried");
        let message = format!("no replica of {} could answer", balancer.service);
        self.answer_error(StatusCode::BAD_GATEWAY, &message, keep_alive, head.minor)
            .await
    }

    /// 503: no replica to send the request to (none ready, or none free in time).
    async fn unavailable(
        &mut self,
        message: &str,
        keep_alive: bool,
        minor: u8,
    ) -> (StatusCode, bool) {
        self.answer_error(StatusCode::SERVICE_UNAVAILABLE, message, keep_alive, minor)
            .await
    }

    async fn answer_error(
        &mut self,
        status: StatusCode,
        message: &str,
        keep_alive: bool,
        minor: u8,
    ) -> (StatusCode, bool) {
        self.out.clear();
        wire::write_error(&mut self.out, status, message, None, keep_alive, minor);
        let written = self.tcp.write_all(&self.out).await.is_ok();
        (status, written && keep_alive)
    }

    /// Sends the replica's answer to the client: the head, then the body as the replica
    /// framed it (a chunked body to an HTTP/1.0 client is decoded, and the connection
    /// then closes).
    async fn relay(
        &mut self,
        backend: &Backend,
        conn: &mut Conn,
        response: &ResponseHead,
        minor: u8,
        keep_alive: bool,
        timeout: Duration,
    ) -> Relayed {
        let to_client = match response.framing {
            Framing::Chunked if minor == 0 => Framing::UntilClose,
            framing => framing,
        };
        let keep_alive = keep_alive && to_client != Framing::UntilClose;
        self.out.clear();
        wire::write_response(
            &mut self.out,
            response,
            replica_header(&backend.id),
            to_client,
            keep_alive,
            minor,
        );
        let done = |client_open: bool, upstream_reusable: bool| Relayed {
            client_open: client_open && keep_alive,
            upstream_reusable: upstream_reusable && response.keep_alive,
        };
        match response.framing {
            Framing::Length(n) => {
                // The head and the body read so far go out in one write.
                let mut left = n;
                let have = (conn.buf.len() as u64).min(left) as usize;
                self.out.extend_from_slice(&conn.buf[..have]);
                conn.buf.advance(have);
                left -= have as u64;
                if self.tcp.write_all(&self.out).await.is_err() {
                    return done(false, false);
                }
                while left > 0 {
                    if !read_more(conn, timeout).await {
                        return done(false, false);
                    }
                    let take = (conn.buf.len() as u64).min(left) as usize;
                    if self.tcp.write_all(&conn.buf[..take]).await.is_err() {
                        return done(false, false);
                    }
                    conn.buf.advance(take);
                    left -= take as u64;
                }
                done(true, true)
            }
            Framing::Chunked => {
                let decode = minor == 0;
                let mut chunked = Chunked::default();
                loop {
                    let out = &mut self.out;
                    let used = chunked.feed(&conn.buf, |data| {
                        if decode {
                            out.extend_from_slice(data);
                        }
                        Ok(())
                    });
                    let Ok(used) = used else {
                        return done(false, false);
                    };
                    if !decode {
                        self.out.extend_from_slice(&conn.buf[..used]);
                    }
                    conn.buf.advance(used);
                    if self.tcp.write_all(&self.out).await.is_err() {
                        return done(false, false);
                    }
                    self.out.clear();
                    if chunked.done() {
                        return done(true, true);
                    }
                    if !read_more(conn, timeout).await {
                        return done(false, false);
                    }
                }
            }
            Framing::UntilClose => loop {
                self.out.extend_from_slice(&conn.buf);
                conn.buf.clear();
                if self.tcp.write_all(&self.out).await.is_err() {
                    return done(false, false);
                }
                self.out.clear();
                if !read_more(conn, timeout).await {
                    return done(false, false);
                }
            },
        }
    }
}

/// What a relayed answer left open.
struct Relayed {
    client_open: bool,
    upstream_reusable: bool,
}

/// Reads more of a replica's answer, within `timeout`: false at its end or on an error.
async fn read_more(conn: &mut Conn, timeout: Duration) -> bool {
    conn.buf.reserve(16 * 1024);
    matches!(
        tokio::time::timeout(timeout, conn.stream.read_buf(&mut conn.buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Why an attempt at a replica failed.
struct Failure {
    message: String,
    /// The request cannot have reached the replica (no connection was made).
    not_sent: bool,
}

impl Failure {
    fn new(message: impl std::fmt::Display, not_sent: bool) -> Self {
        Self {
            message: message.to_string(),
            not_sent,
        }
    }
}

/// Sends one request to `backend` and reads the answer's head (skipping `100
/// Continue` and other interim answers). Uses an idle connection if it has one; if
/// that turns out closed before answering, an idempotent request is sent once more on
/// a new connection.
async fn exchange(
    backend: &Backend,
    head: &RequestHead,
    body: &Bytes,
    idempotent: bool,
) -> Result<(Conn, ResponseHead), Failure> {
    let Some(address) = backend.address.as_ref() else {
        return Err(Failure::new(
            format!("{} is not a plain http:// URL", backend.url),
            true,
        ));
    };
    let mut request = Vec::with_capacity(256 + head.forwarded.len() + body.len());
    wire::write_request(
        &mut request,
        head,
        &address.authority,
        &address.prefix,
        body.len(),
    );
    request.extend_from_slice(body);
    let mut conn = loop {
        match backend.idle.take() {
            Some(conn) if still_open(&conn) => break conn,
            Some(_) => continue,
            None => {
                break Conn::open(address)
                    .await
                    .map_err(|e| Failure::new(e, true))?;
            }
        }
    };
    loop {
        match send_and_read_head(&mut conn, &request, head).await {
            Ok(response) => return Ok((conn, response)),
            Err((failure, answered)) => {
                if conn.reused && !answered && idempotent {
                    conn = Conn::open(address)
                        .await
                        .map_err(|e| Failure::new(e, true))?;
                    continue;
                }
                return Err(failure);
            }
        }
    }
}

/// Writes `request` on `conn` and reads the answer's head. On failure, also says
/// whether any of the answer had arrived.
async fn send_and_read_head(
    conn: &mut Conn,
    request: &[u8],
    head: &RequestHead,
) -> Result<ResponseHead, (Failure, bool)> {
    conn.stream
        .write_all(request)
        .await
        .map_err(|e| (Failure::new(e, false), false))?;
    let head_request = head.method == http::Method::HEAD;
    loop {
        match wire::parse_response(&conn.buf, head_request) {
            Ok(Some((response, len))) => {
                conn.buf.advance(len);
                if (100..200).contains(&response.status) {
                    if response.status == 101 {
                        return Err((Failure::new("the replica switched protocols", false), true));
                    }
                    continue;
                }
                return Ok(response);
            }
            Ok(None) if conn.buf.len() >= MAX_RESPONSE_HEAD => {
                return Err((
                    Failure::new("the replica's answer head is too large", false),
                    true,
                ));
            }
            Ok(None) => {}
            Err(e) => return Err((Failure::new(e, false), true)),
        }
        conn.buf.reserve(16 * 1024);
        let answered = !conn.buf.is_empty();
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err((
                    Failure::new("the replica closed the connection", false),
                    answered,
                ));
            }
            Ok(_) => {}
            Err(e) => return Err((Failure::new(e, false), answered)),
        }
    }
}

/// An idle connection the replica has not closed (nor sent anything on) meanwhile.
/// Costs a system call only when the socket was marked readable.
fn still_open(conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A replica id that may go in a header as it is.
fn replica_header(id: &str) -> Option<&str> {
    id.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then_some(id)
}

/// The path of an origin-form target, without its query.
fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}
