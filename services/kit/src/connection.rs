//! One accepted connection, as hyper sees its socket: the deadlines hyper does not keep
//! the way we want, the JSON envelope on hyper's own error answers, and a lingering
//! close so that a client still sending its request reads the answer.
//!
//! - **Deadlines.** A client has `header_read_timeout` to send a request's headers,
//!   counted from the connection opening or from the first byte after an idle wait;
//!   a keep-alive connection may wait `idle_timeout` for its next request. (hyper's
//!   own header timer starts as soon as a connection goes idle, so it would also be
//!   the idle timeout; it is turned off and these are kept here instead.) While a
//!   request is with the router, neither runs: the request timeout layer bounds it.
//! - **Envelope.** hyper answers a request it cannot parse itself, before any layer
//!   sees it, with an empty body: 400, 414 (a URI over 65534 bytes) and 431 (over 100
//!   headers, or the request line and headers do not fit `max_header_bytes`). Those
//!   answers are replaced here by the same status with the JSON envelope; a 431 whose
//!   request line never ended becomes 414. HTTP/2 errors (stream resets, GOAWAY) stay
//!   as hyper sends them.
//! - **Lingering close.** A server that closes with unread request bytes makes the
//!   kernel reset the connection, and a client still writing (a 10 MiB body answered
//!   413 from its Content-Length) gets `Broken pipe` instead of the answer. So a
//!   connection the server closes first reads and discards up to [`LINGER_BYTES`] for
//!   up to [`LINGER_TIME`] after its answer, as Apache and nginx do.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Most bytes a closing connection reads and discards from a client still sending.
pub(crate) const LINGER_BYTES: usize = 16 << 20;

/// Longest a closing connection waits for a client still sending to finish.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// The two deadlines of a connection (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
}

/// Requests a connection has handed to the router, and those finished (response body
/// sent or dropped). Shared by the connection's socket and its requests, which may
/// run on other threads.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// Marks a request as handed to the router. Keep the guard until the response body
    /// is done: dropping it marks the request finished.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// A request of the connection that is not finished yet.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where the connection is between requests, as far as its socket can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's headers: the header-read deadline runs.
    Head,
    /// A request is with the router or its answer is being sent: no deadline here.
    Busy,
    /// Between requests on a keep-alive connection: the idle deadline runs.
    Idle,
}

/// The socket of one connection, as hyper reads and writes it.
pub(crate) struct Watched {
    /// `None` only once dropped (the lingering close takes it).
    stream: Option<TcpStream>,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    phase: Phase,
    /// `activity.started` when last looked at: a change means a request was dispatched.
    seen_started: u64,
    deadline: Pin<Box<Sleep>>,
    /// Whether the request being read has ended its request line.
    line_ended: bool,
    /// Our answer in place of hyper's own, and how much of it is written. Once set,
    /// the connection is closing and hyper's writes are discarded.
    replacement: Option<(Vec<u8>, usize)>,
    /// The client closed its side: nothing is left to drain.
    read_eof: bool,
}

impl Watched {
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>, deadlines: Deadlines) -> Self {
        Self {
            stream: Some(stream),
            activity,
            deadlines,
            phase: Phase::Head,
            seen_started: 0,
            deadline: Box::pin(tokio::time::sleep(deadlines.header_read)),
            line_ended: false,
            replacement: None,
            read_eof: false,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }

    /// Follows the requests: Busy once one is dispatched, Idle once all are finished.
    fn refresh(&mut self) {
        // `finished` first: it never runs ahead of `started`.
        let finished = self.activity.finished.load(Ordering::Acquire);
        let started = self.activity.started.load(Ordering::Acquire);
        if started != self.seen_started {
            self.seen_started = started;
            self.phase = Phase::Busy;
        }
        if self.phase == Phase::Busy && finished == started {
            self.enter(Phase::Idle);
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let after = match phase {
            Phase::Head => self.deadlines.header_read,
            Phase::Idle => self.deadlines.idle,
            Phase::Busy => return,
        };
        self.deadline.as_mut().reset(Instant::now() + after);
        self.line_ended = false;
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.read_eof = true;
            return;
        }
        if self.phase == Phase::Idle {
            self.enter(Phase::Head);
        }
        if self.phase == Phase::Head && !self.line_ended {
            self.line_ended = bytes.contains(&b'\n');
        }
    }

    fn expired(&self) -> io::Error {
        let what = match self.phase {
            Phase::Idle => "idle keep-alive connection closed",
            _ => "request headers not received within the header-read timeout",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Writes what is left of our replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self {
            stream,
            replacement,
            ..
        } = self;
        let Some((answer, sent)) = replacement else {
            return Poll::Ready(Ok(()));
        };
        let Some(stream) = stream.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while *sent < answer.len() {
            let n = ready!(Pin::new(&mut *stream).poll_write(cx, &answer[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.refresh();
        let timed = this.phase != Phase::Busy;
        // A client trickling bytes is always readable: check the clock before reading.
        if timed && Instant::now() >= this.deadline.deadline() {
            return Poll::Ready(Err(this.expired()));
        }
        let before = buf.filled().len();
        match Pin::new(this.stream()?).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if timed && this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(this.expired()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.refresh();
        if this.replacement.is_some() {
            return Poll::Ready(Ok(buf.len()));
        }
        // In Head no request has reached the router since the last answer, so what
        // hyper writes now is its own answer to a request it could not parse.
        if this.phase == Phase::Head
            && let Some(answer) = enveloped(buf, this.line_ended)
        {
            this.replacement = Some((answer, 0));
            // Sent on flush; hyper flushes before it closes.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(this.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.refresh();
        if this.phase == Phase::Head || this.replacement.is_some() {
            // Possibly hyper's own answer: look at it whole, one buffer at a time.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        Pin::new(this.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(this.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(this.stream()?).poll_shutdown(cx)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.read_eof {
            return;
        }
        let unsent = self
            .replacement
            .take()
            .map(|(answer, sent)| answer[sent..].to_vec())
            .unwrap_or_default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, unsent));
        }
    }
}

/// Closes a connection the server is done with without resetting it: sends what is
/// left of the answer, ends our side, then reads and discards what the client still
/// sends (bounded in bytes and time) before closing the socket.
pub(crate) async fn linger(mut stream: TcpStream, unsent: Vec<u8>) {
    let drain = async {
        stream.write_all(&unsent).await?;
        let _ = stream.shutdown().await;
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// The envelope answer in place of `written`, if `written` is hyper's own answer to an
/// unparseable request: a whole `HTTP/1.1 4xx` head with `content-length: 0`.
fn enveloped(written: &[u8], line_ended: bool) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written).ok()?;
    let code: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !head.ends_with("\r\n\r\n")
        || !head
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let (status, message) = match code {
        400 => (StatusCode::BAD_REQUEST, "malformed request"),
        414 => (StatusCode::URI_TOO_LONG, "request URI is too long"),
        431 if !line_ended => (StatusCode::URI_TOO_LONG, "request URI is too long"),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are too large or too many",
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
    );
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";

    fn body_of(answer: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(answer).expect("ascii");
        let (_, body) = text.split_once("\r\n\r\n").expect("a head");
        serde_json::from_str(body).expect("json")
    }

    #[test]
    fn hyper_s_empty_431_becomes_the_envelope() {
        let answer = enveloped(HYPER_431, true).expect("replaced");
        assert!(answer.starts_with(b"HTTP/1.1 431 "));
        assert_eq!(
            body_of(&answer)["error"],
            "request headers are too large or too many"
        );
    }

    #[test]
    fn a_431_before_the_request_line_ended_is_a_414() {
        let answer = enveloped(HYPER_431, false).expect("replaced");
        assert!(answer.starts_with(b"HTTP/1.1 414 "));
    }

    #[test]
    fn answers_with_a_body_or_of_other_statuses_are_left_alone() {
        let with_body =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(enveloped(with_body, true), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(enveloped(ok, true), None);
        let h2_frame = [0u8, 0, 6, 4, 0, 0, 0, 0, 0];
        assert_eq!(enveloped(&h2_frame, true), None);
    }
}
