//! HTTP/1.1 on the wire, as far as a reverse proxy needs it: a request head parsed
//! into what the proxy decides on (method, target, framing, keep-alive) plus the
//! header lines it forwards verbatim; a response head likewise; a chunked-coding
//! scanner; and the heads the proxy writes. No I/O here: the proxy feeds bytes in.
//!
//! The rules follow RFC 9112 where a proxy must be strict, so that the proxy and a
//! replica never disagree on where a message ends (request smuggling): a request with
//! both `Content-Length` and `Transfer-Encoding`, with differing lengths, or with a
//! coding other than `chunked` is refused; hop-by-hop headers, and the ones that
//! `Connection` names, are not forwarded.

use http::{Method, StatusCode};

/// Most header fields in a head; more is 431, as hyper's limit was.
pub const MAX_HEADERS: usize = 100;

/// A request or response the proxy cannot carry, and the status that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub status: StatusCode,
    pub message: &'static str,
}

impl WireError {
    const fn new(status: StatusCode, message: &'static str) -> Self {
        Self { status, message }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (0 for no body).
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Origin-form path and query (`/fibonacci?n=20`), also for an absolute-form target.
    pub target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub framing: Framing,
    /// The end-to-end header lines, each `name: value\r\n`, as the client sent them.
    pub forwarded: Vec<u8>,
}

impl RequestHead {
    /// Methods a client may repeat with the same effect, so a request the replica may
    /// have seen can be retried.
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        )
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub framing: Framing,
    /// The `Content-Length` to tell the client: the body's, or for HEAD and 304 the
    /// length the replica declared; none for 1xx and 204.
    pub length_header: Option<u64>,
    /// The replica may keep the connection for another request.
    pub keep_alive: bool,
    pub forwarded: Vec<u8>,
}

/// Headers of one hop, never forwarded. `host`, `content-length` and `expect` are
/// written anew by the proxy (the replica's authority, the buffered body's length).
fn hop_by_hop(name: &str) -> bool {
    const NAMES: [&str; 12] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// What `Connection`, `Content-Length` and `Transfer-Encoding` said.
#[derive(Default)]
struct Framed<'a> {
    close: bool,
    keep_alive: bool,
    /// Further header names the `Connection` header lists (hop-by-hop too).
    named: Vec<&'a str>,
    length: Option<u64>,
    /// `Transfer-Encoding` was present; `chunked` if its last coding is chunked and
    /// the only one.
    encoded: bool,
    chunked_only: bool,
    chunked_last: bool,
}

fn read_framing<'a>(headers: &[httparse::Header<'a>]) -> Result<Framed<'a>, WireError> {
    let bad = |m| WireError::new(StatusCode::BAD_REQUEST, m);
    let mut f = Framed::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(h.value).map_err(|_| bad("Connection is not text"))?;
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    f.keep_alive = true;
                } else {
                    f.named.push(token);
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).map_err(|_| bad("bad Content-Length"))?;
            // A list of identical values is one length (RFC 9112 6.3); anything else
            // is refused, never guessed.
            for part in value.split(',').map(str::trim) {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 18 {
                    return Err(bad("Content-Length is not a number"));
                }
                let n: u64 = part.parse().map_err(|_| bad("bad Content-Length"))?;
                if f.length.is_some_and(|m| m != n) {
                    return Err(bad("Content-Length headers disagree"));
                }
                f.length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(h.value).map_err(|_| bad("bad Transfer-Encoding"))?;
            for coding in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let chunked = coding.eq_ignore_ascii_case("chunked");
                f.chunked_only = if f.encoded { false } else { chunked };
                f.chunked_last = chunked;
                f.encoded = true;
            }
        }
    }
    Ok(f)
}

/// Appends each end-to-end header line of `headers` to `out`.
fn forward_lines(headers: &[httparse::Header<'_>], named: &[&str], out: &mut Vec<u8>) {
    for h in headers {
        if hop_by_hop(h.name) || named.iter().any(|n| n.eq_ignore_ascii_case(h.name)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` while incomplete,
/// otherwise the head and its length in bytes.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "more than 100 header fields",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(WireError::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "this port speaks HTTP/1.1 and HTTP/1.0",
            ));
        }
        Err(_) => {
            return Err(WireError::new(
                StatusCode::BAD_REQUEST,
                "the request is not valid HTTP/1.1",
            ));
        }
    };
    let bad = |m| WireError::new(StatusCode::BAD_REQUEST, m);
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Ok(None);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("bad method"))?;
    let target = origin_form(path).ok_or_else(|| bad("the request target is not a path"))?;
    let f = read_framing(req.headers)?;
    if f.encoded && f.length.is_some() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if f.encoded && !f.chunked_only {
        return Err(WireError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the only transfer coding accepted is chunked",
        ));
    }
    if f.length.is_some_and(|n| n > usize::MAX as u64) {
        return Err(bad("Content-Length is too large"));
    }
    let expect_continue = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
    });
    let mut forwarded = Vec::with_capacity(len);
    forward_lines(req.headers, &f.named, &mut forwarded);
    Ok(Some((
        RequestHead {
            method,
            target,
            minor,
            keep_alive: if minor == 0 { f.keep_alive } else { !f.close },
            expect_continue: expect_continue && minor == 1,
            framing: if f.encoded {
                Framing::Chunked
            } else {
                Framing::Length(f.length.unwrap_or(0))
            },
            forwarded,
        },
        len,
    )))
}

/// The origin form of a request target: itself if it is a path (or `*`), the path
/// and query of an absolute URI; `None` for anything else.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') || target == "*" {
        return Some(target.to_owned());
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(rest[i..].to_owned()),
        Some(i) => Some(format!("/{}", &rest[i..])),
        None => Some("/".to_owned()),
    }
}

/// Parses a response head at the start of `buf` (`Ok(None)` while incomplete). `head`:
/// the request was HEAD, so the response has no body whatever it says.
pub fn parse_response(buf: &[u8], head: bool) -> Result<Option<(ResponseHead, usize)>, WireError> {
    let bad = |m| WireError::new(StatusCode::BAD_GATEWAY, m);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(bad("the replica's answer is not valid HTTP/1.1")),
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Ok(None);
    };
    let f = read_framing(res.headers).map_err(|_| bad("the replica's answer has a bad length"))?;
    let framing = if head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else if f.encoded {
        if f.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        f.length.map_or(Framing::UntilClose, Framing::Length)
    };
    let length_header = if (100..200).contains(&status) || status == 204 {
        None
    } else if head || status == 304 {
        f.length
    } else {
        match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    };
    let mut forwarded = Vec::with_capacity(len);
    forward_lines(res.headers, &f.named, &mut forwarded);
    Ok(Some((
        ResponseHead {
            status,
            reason: res.reason.unwrap_or_default().to_owned(),
            framing,
            length_header,
            keep_alive: framing != Framing::UntilClose
                && if minor == 0 { f.keep_alive } else { !f.close },
            forwarded,
        },
        len,
    )))
}

/// Writes the request head for a replica at `authority`, `prefix` put before the
/// target (a static backend's URL path), with `length` bytes of body to follow.
pub fn write_request(
    out: &mut Vec<u8>,
    req: &RequestHead,
    authority: &str,
    prefix: &str,
    length: usize,
) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.forwarded);
    let says_length = length > 0
        || matches!(req.framing, Framing::Chunked)
        || matches!(req.framing, Framing::Length(n) if n > 0)
        || matches!(req.method, Method::POST | Method::PUT | Method::PATCH);
    if says_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the response head to a client: the replica's status and end-to-end headers,
/// `x-replica`, then the framing the proxy chose and the connection's fate.
pub fn write_response(
    out: &mut Vec<u8>,
    res: &ResponseHead,
    replica: Option<&str>,
    framing: Framing,
    keep_alive: bool,
    client_minor: u8,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(res.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&res.forwarded);
    if let Some(replica) = replica {
        out.extend_from_slice(b"x-replica: ");
        out.extend_from_slice(replica.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match (framing, res.length_header) {
        (Framing::Length(_), Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    connection_line(out, keep_alive, client_minor);
    out.extend_from_slice(b"\r\n");
}

fn connection_line(out: &mut Vec<u8>, keep_alive: bool, client_minor: u8) {
    match (keep_alive, client_minor) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, 0) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
}

/// A whole answer with the JSON error envelope `{"error": message}`.
pub fn write_error(
    out: &mut Vec<u8>,
    status: StatusCode,
    message: &str,
    retry_after: Option<u64>,
    keep_alive: bool,
    client_minor: u8,
) {
    let body = serde_json::json!({ "error": message }).to_string();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(seconds) = retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    connection_line(out, keep_alive, client_minor);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Where a chunked body is, fed a byte range at a time: finds each chunk's data and
/// the end of the message (after the trailer section), without buffering.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions or trailers seen, bounded.
    overhead: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace or an extension after the size, up to CR.
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Most bytes of chunk extensions and trailer fields in one message.
const MAX_CHUNK_OVERHEAD: usize = 16 * 1024;

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads `input` up to the end of the message at most, handing each piece of
    /// chunk data to `data`; returns the bytes consumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]) -> Result<(), WireError>,
    ) -> Result<usize, WireError> {
        let bad = WireError::new(StatusCode::BAD_REQUEST, "bad chunked encoding");
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            // The states that end a line take exactly one byte.
            let line_end = match self.state {
                ChunkState::DataCr => Some(b'\r'),
                ChunkState::SizeLf
                | ChunkState::DataLf
                | ChunkState::TrailerLf
                | ChunkState::EndLf => Some(b'\n'),
                _ => None,
            };
            if line_end.is_some_and(|want| want != b) {
                return Err(bad);
            }
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 15 {
                            return Err(bad);
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size * 16 + v;
                        self.digits += 1;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = ChunkState::Extension,
                    b'\r' if self.digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err(bad),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => return Err(bad),
                    _ => self.count_overhead()?,
                },
                ChunkState::SizeLf => {
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data(self.size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = (left.min((input.len() - i) as u64)) as usize;
                    data(&input[i..i + take])?;
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::DataCr => self.state = ChunkState::DataLf,
                ChunkState::DataLf => {
                    self.size = 0;
                    self.digits = 0;
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = if b == b'\r' {
                        ChunkState::EndLf
                    } else {
                        self.count_overhead()?;
                        ChunkState::TrailerLine
                    };
                }
                ChunkState::TrailerLine => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\n' => return Err(bad),
                    _ => self.count_overhead()?,
                },
                ChunkState::TrailerLf => self.state = ChunkState::TrailerStart,
                ChunkState::EndLf => {
                    self.state = ChunkState::Done;
                    return Ok(i + 1);
                }
                ChunkState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_overhead(&mut self) -> Result<(), WireError> {
        self.overhead += 1;
        if self.overhead > MAX_CHUNK_OVERHEAD {
            return Err(WireError::new(
                StatusCode::BAD_REQUEST,
                "chunk extensions or trailers are too long",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<(RequestHead, usize)>, WireError> {
        parse_request(text.as_bytes())
    }

    #[test]
    fn a_request_head_keeps_end_to_end_headers_and_drops_hop_by_hop_ones() {
        let text = "POST /api/v1/music?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nContent-Length: 3\r\nTE: trailers\r\nTraceparent: 00-ab\r\n\
             Expect: 100-continue\r\n\r\nabc";
        let (head, len) = request(text).expect("valid").expect("complete");
        assert_eq!(len, text.len() - 3, "the head ends before the body");
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.target, "/api/v1/music?x=1");
        assert!(head.keep_alive && head.expect_continue);
        assert_eq!(head.framing, Framing::Length(3));
        assert_eq!(head.forwarded, b"Traceparent: 00-ab\r\n");
        let mut out = Vec::new();
        write_request(&mut out, &head, "127.0.0.1:9", "", 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api/v1/music?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nTraceparent: 00-ab\r\n\
             content-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn heads_arrive_in_pieces_and_http_1_0_closes_unless_asked_not_to() {
        assert!(request("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let (head, _) = request("GET http://x:1/a?b HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.target.as_str(), head.keep_alive), ("/a?b", false));
        let (head, _) = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
        let (head, _) = request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn ambiguous_framing_is_refused_never_guessed() {
        let status = |t: &str| {
            request(t)
                .map(|_| StatusCode::OK)
                .unwrap_or_else(|e| e.status)
        };
        for smuggle in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(status(smuggle), StatusCode::BAD_REQUEST, "{smuggle:?}");
        }
        for coding in ["gzip", "chunked, gzip", "gzip, chunked", "chunked, chunked"] {
            let t = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_eq!(status(&t), StatusCode::NOT_IMPLEMENTED, "{coding}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
            StatusCode::OK
        );
        assert_eq!(
            status("GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(status("GET /\0 HTTP/1.1\r\n\r\n"), StatusCode::BAD_REQUEST);
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn response_framing_follows_status_method_and_headers() {
        let framing = |t: &str, head| parse_response(t.as_bytes(), head).unwrap().unwrap().0;
        let r = framing(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\n",
            false,
        );
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(5), true));
        assert_eq!(r.forwarded, b"X: y\r\n");
        let r = framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!((r.framing, r.length_header), (Framing::Length(0), Some(5)));
        let r = framing("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Length(0));
        let r = framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = framing("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = framing(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!r.keep_alive);
    }

    #[test]
    fn chunked_bodies_are_found_whole_across_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let mut data = Vec::new();
            let mut used = 0;
            for part in [&body[..split], &body[split..]] {
                let start = used;
                used += c
                    .feed(part, |d| {
                        data.extend_from_slice(d);
                        Ok(())
                    })
                    .unwrap();
                if c.done() {
                    break;
                }
                assert_eq!(used - start, part.len());
            }
            assert!(c.done(), "split at {split}");
            assert_eq!(used, body.len() - 4, "split at {split}");
            assert_eq!(data, b"hello world");
        }
        for broken in [
            &b"x\r\n"[..],
            b"5\r\nhelloX",
            b"5\nhello",
            b"\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(
                Chunked::default().feed(broken, |_| Ok(())).is_err(),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn an_error_is_the_json_envelope() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            StatusCode::BAD_GATEWAY,
            "no \"replica\"",
            Some(1),
            false,
            1,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: 26\r\n\
             retry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"no \\\"replica\\\"\"}"
        );
    }
}
