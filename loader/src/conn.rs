//! Keep-alive HTTP/1 connections owned by one simulated client (as each of wrk's
//! connections is): no pool shared between clients, no lock, and no task per
//! connection — the client's own task writes the request and reads the answer on its
//! socket, so a request costs two system calls and no task switch. Answers are parsed
//! with `httparse`; bodies (Content-Length or chunked) are read and dropped.

use bytes::{Buf as _, BytesMut};
use std::future::Future as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use tokio::net::TcpStream;

/// Makes room for `n` more open descriptors before a measurement starts: raises the
/// soft limit on open files towards the hard one when it is lower, and grows the
/// process's descriptor table now. Linux grows that table by doubling, and in a
/// process with several threads each growth waits for an RCU grace period (about
/// 10 ms here), a stall the client whose connect crossed 256, 512, 1024 ... open
/// files would otherwise be charged with. Warns when the limit is below `n`, naming
/// `what` needs them.
pub fn make_room_for_descriptors(n: usize, what: &str) {
    let limit = raise_descriptor_limit(n);
    if limit < n as u64 + 16 {
        eprintln!("warning: at most {limit} open files (`ulimit -n`), fewer than {what} need");
    }
}

/// See [`make_room_for_descriptors`]; returns how many files may be open.
fn raise_descriptor_limit(n: usize) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let wanted = n as u64 + 64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let mut limit = soft;
    if soft < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).is_ok() {
        limit = wanted.min(hard);
    }
    if let Ok(file) = std::fs::File::open("/dev/null") {
        let count = (wanted.min(limit) as usize).saturating_sub(16);
        let held: Vec<_> = (0..count).map_while(|_| file.try_clone().ok()).collect();
        drop(held);
    }
    limit
}

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A connection: a socket, or in [`read_answers`] bytes in memory.
struct Conn<S = TcpStream> {
    authority: String,
    stream: S,
    buf: BytesMut,
}

/// One user's keep-alive connections, by `host:port`.
#[derive(Default)]
pub struct Connections {
    open: Vec<Conn>,
    scratch: Vec<u8>,
}

/// Writes an HTTP/1.1 request into `out` (cleared first). Fails on a CR or LF in the
/// path or a header, which would otherwise split the request.
pub fn render<'a>(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Result<(), String> {
    let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
    out.clear();
    if !clean(method) || method.contains(' ') || !clean(path) || path.contains(' ') {
        return Err("a space, CR or LF in the method or path".into());
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if !clean(name) || name.contains(':') || !clean(value) {
            return Err(format!(
                "header `{name}`: CR, LF or ':' where they cannot be"
            ));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// The parts of an answer the generator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_len: usize,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    async fn open(authority: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Self::on(authority, stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn on(authority: &str, stream: S) -> Self {
        Self {
            authority: authority.to_owned(),
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Reads more into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// Sends `request` and reads one whole answer. `Ok(None)`: the connection was closed
    /// before any byte of an answer came (a keep-alive connection the server let go).
    async fn exchange(
        &mut self,
        request: &[u8],
        head_only: bool,
    ) -> Result<Option<(Answer, bool)>, String> {
        if self.stream.write_all(request).await.is_err() {
            return Ok(None);
        }
        let (status, framing, close, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or("bad content-length")?;
                            framing = Framing::Length(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                        {
                            framing = Framing::Chunked;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
                        framing = Framing::Length(0);
                    }
                    break (status, framing, close, head_len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err("response head too large".into());
                    }
                    match self.fill().await {
                        Ok(true) => {}
                        // Closed or reset before any byte of an answer.
                        _ if self.buf.is_empty() => return Ok(None),
                        Ok(false) => return Err("connection closed inside a response head".into()),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(format!("bad response: {e}")),
            }
        };
        self.buf.advance(head_len);
        let body_len = match framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    if !self.fill().await? {
                        return Err("connection closed inside a body".into());
                    }
                }
                self.buf.advance(n);
                n
            }
            Framing::Chunked => self.chunked().await?,
            Framing::UntilClose => {
                while self.fill().await? {}
                let n = self.buf.len();
                self.buf.clear();
                return Ok(Some((
                    Answer {
                        status,
                        body_len: n,
                    },
                    true,
                )));
            }
        };
        Ok(Some((Answer { status, body_len }, close)))
    }

    /// Reads a chunked body (and its trailers); returns its length.
    async fn chunked(&mut self) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let line = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.buf.len() > MAX_HEAD || !self.fill().await? {
                    return Err("bad chunk size line".into());
                }
            };
            let size_text = std::str::from_utf8(&self.buf[..line]).map_err(|_| "bad chunk")?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
            // The chunk and its CRLF; a size near usize::MAX is never sent.
            let framed = size.checked_add(2).ok_or("bad chunk size")?;
            self.buf.advance(line + 2);
            if size == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        self.buf.advance(i + 2);
                        if i == 0 {
                            return Ok(total);
                        }
                    } else if self.buf.len() > MAX_HEAD || !self.fill().await? {
                        return Err("bad chunk trailer".into());
                    }
                }
            }
            while self.buf.len() < framed {
                if !self.fill().await? {
                    return Err("connection closed inside a chunk".into());
                }
            }
            self.buf.advance(framed);
            total += size;
        }
    }
}

impl Connections {
    /// A client whose connection to `addr` (named `authority`) is being opened: the
    /// connect is issued now, without waiting for it, as ApacheBench opens its
    /// clients' connections in one pass; the first request waits for it to finish.
    /// Must be called inside the runtime.
    pub fn connecting(authority: &str, addr: std::net::SocketAddr) -> Result<Self, String> {
        let fail = |e: std::io::Error| format!("connect {authority}: {e}");
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        let _ = socket.set_tcp_nodelay(true);
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
            Err(e) => return Err(fail(e)),
        }
        let stream = TcpStream::from_std(socket.into()).map_err(fail)?;
        Ok(Self {
            open: vec![Conn::on(authority, stream)],
            scratch: Vec::new(),
        })
    }

    /// Renders a request with `render_into` (see [`render`]) into this user's buffer and
    /// sends it.
    pub async fn send_rendered(
        &mut self,
        authority: &str,
        head_only: bool,
        render_into: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Answer, String> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = match render_into(&mut scratch) {
            Ok(()) => self.send(authority, &scratch, head_only).await,
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        result
    }

    /// Sends a rendered request (see [`render`]) to `authority` and reads the answer.
    /// A kept-alive connection the server closed meanwhile is reopened and the request
    /// sent again, once (nothing of it was answered).
    pub async fn send(
        &mut self,
        authority: &str,
        request: &[u8],
        head_only: bool,
    ) -> Result<Answer, String> {
        for attempt in 0..2 {
            let i = match self.open.iter().position(|c| c.authority == authority) {
                Some(i) => i,
                None => {
                    self.open.push(Conn::open(authority).await?);
                    self.open.len() - 1
                }
            };
            match self.open[i].exchange(request, head_only).await {
                Ok(Some((answer, close))) => {
                    if close {
                        self.open.swap_remove(i);
                    }
                    return Ok(answer);
                }
                Ok(None) => {
                    self.open.swap_remove(i);
                    if attempt == 1 {
                        return Err("connection closed before an answer".into());
                    }
                }
                Err(e) => {
                    self.open.swap_remove(i);
                    return Err(e);
                }
            }
        }
        Err("connection closed before an answer".into())
    }
}

/// Bytes a server sent, handed to the reader `piece` bytes at a time; what is written
/// to it is dropped.
struct Canned<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl AsyncRead for Canned<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.piece.min(self.bytes.len()).min(buf.remaining());
        let (now, rest) = self.bytes.split_at(n);
        buf.put_slice(now);
        self.bytes = rest;
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Canned<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Reads the answers in `bytes` as the load generator reads them from a kept-alive
/// connection that then closes, the bytes arriving `piece` at a time (at least 1):
/// each answer, up to and including the first error. `head_only` reads answers to
/// HEAD requests. Public for the fuzz targets: the reader without a socket.
pub fn read_answers(bytes: &[u8], piece: usize, head_only: bool) -> Vec<Result<Answer, String>> {
    let stream = Canned {
        bytes,
        piece: piece.max(1),
    };
    let mut conn = Conn::on("canned", stream);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let mut answers = Vec::new();
    loop {
        let exchange = std::pin::pin!(conn.exchange(b"", head_only));
        // In-memory bytes are always ready: the reader never waits.
        let std::task::Poll::Ready(outcome) = exchange.poll(&mut context) else {
            answers.push(Err("the reader waited on bytes in memory".to_owned()));
            return answers;
        };
        match outcome {
            Ok(Some((answer, close))) => {
                answers.push(Ok(answer));
                if close {
                    return answers;
                }
            }
            Ok(None) => return answers,
            Err(e) => {
                answers.push(Err(e));
                return answers;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned bytes.
    async fn canned(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            for answer in answers {
                let _ = socket.read(&mut buf).await;
                socket.write_all(answer).await.expect("write");
            }
        });
        addr
    }

    #[tokio::test]
    async fn lengths_chunks_and_keep_alive_are_read_exactly() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let mut c = Connections::default();
        let mut req = Vec::new();
        render(&mut req, "GET", "/a", &addr, [("x-k", "v")], b"").expect("render");
        let a = c.send(&addr, &req, false).await.expect("1");
        assert_eq!(
            a,
            Answer {
                status: 200,
                body_len: 5
            }
        );
        let a = c.send(&addr, &req, false).await.expect("2");
        assert_eq!(
            a,
            Answer {
                status: 201,
                body_len: 7
            }
        );
        let a = c.send(&addr, &req, false).await.expect("3");
        assert_eq!(
            a,
            Answer {
                status: 204,
                body_len: 0
            }
        );
        let a = c.send(&addr, &req, false).await.expect("4");
        assert_eq!(
            a,
            Answer {
                status: 404,
                body_len: 2
            }
        );
        assert!(c.open.is_empty(), "closed on `connection: close`");
    }

    #[test]
    fn a_chunk_size_near_the_largest_number_is_an_error_not_an_overflow() {
        let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nab\r\n0\r\n\r\n";
        let read = read_answers(answer, answer.len(), false);
        assert_eq!(read, vec![Err("bad chunk size".to_owned())]);
    }

    #[test]
    fn answers_read_the_same_whatever_the_split_into_reads() {
        let answers = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close";
        let whole = read_answers(answers, answers.len(), false);
        assert_eq!(
            whole,
            vec![
                Ok(Answer {
                    status: 200,
                    body_len: 5
                }),
                Ok(Answer {
                    status: 201,
                    body_len: 3
                }),
                Ok(Answer {
                    status: 200,
                    body_len: 11
                }),
            ]
        );
        for piece in 1..8 {
            assert_eq!(read_answers(answers, piece, false), whole, "{piece}");
        }
    }

    #[test]
    fn requests_are_rendered_and_splitting_is_refused() {
        let mut out = Vec::new();
        render(
            &mut out,
            "POST",
            "/x?a=1",
            "h:1",
            [("authorization", "Bearer t")],
            b"{}",
        )
        .expect("render");
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf8"),
            "POST /x?a=1 HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer t\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert!(render(&mut out, "GET", "/x", "h", [("a", "b\r\nevil: 1")], b"").is_err());
        assert!(render(&mut out, "GET", "/x y", "h", [], b"").is_err());
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_reopened_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            // First connection: closed without an answer; second: answered.
            let (first, _) = listener.accept().await.expect("accept");
            drop(first);
            let (mut second, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let _ = second.read(&mut buf).await;
            second
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        });
        let addr_parsed = addr.parse().expect("address");
        let mut c = Connections::connecting(&addr, addr_parsed).expect("connect");
        let mut req = Vec::new();
        render(&mut req, "GET", "/", &addr, [], b"").expect("render");
        let a = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.send(&addr, &req, false),
        )
        .await
        .expect("in time")
        .expect("answered on a new connection");
        assert_eq!(a.status, 200);
    }

    #[tokio::test]
    async fn a_refused_connect_fails_the_request_and_the_next_one_tries_again() {
        // A port that was free a moment ago: nothing listens there.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let authority = addr.to_string();
        let mut c = Connections::connecting(&authority, addr).expect("issued");
        let mut req = Vec::new();
        render(&mut req, "GET", "/", &authority, [], b"").expect("render");
        for _ in 0..2 {
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                c.send(&authority, &req, false),
            )
            .await
            .expect("in time");
            assert!(answer.is_err(), "{answer:?}");
        }
    }
}
