//! The proxy's side towards one replica: its address, and its idle keep-alive
//! connections, reused most-recent first and dropped before the replica would close
//! them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle connections kept per replica and worker (as many as the balancer's old pool kept).
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed rather than reused: well inside the
/// replicas' own 60 s idle timeout, so a reused connection is not one they are closing.
pub const IDLE_FOR: Duration = Duration::from_secs(20);
/// How long a connection to a replica may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a replica listens, from its `http://host:port[/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// `host:port`, for the `Host` header.
    pub authority: String,
    /// A static backend's URL path, put before every request's target (empty for
    /// replicas).
    pub prefix: String,
}

impl Address {
    /// `None` unless `url` is `http://` with a host (the proxy speaks plain HTTP to
    /// replicas).
    pub fn parse(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return None;
        }
        let authority = uri.authority()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(80);
        Some(Self {
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// An open connection to a replica, with the bytes read past the last response.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It carried an earlier request: the replica may have closed it meanwhile.
    pub reused: bool,
    idle_since: Instant,
}

impl Conn {
    pub async fn open(address: &Address) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            )
        })??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reused: false,
            idle_since: Instant::now(),
        })
    }
}

/// A replica's idle connections, one list per proxy worker (see [`super::workers`]):
/// a connection is driven by the thread that opened it, so a worker reuses only its own.
#[derive(Debug)]
pub struct Idle(Box<[Mutex<Vec<Conn>>]>);

impl Default for Idle {
    fn default() -> Self {
        Self(
            (0..=super::workers::count())
                .map(|_| Mutex::default())
                .collect(),
        )
    }
}

impl Idle {
    /// This thread's list.
    fn mine(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.0[super::workers::current() % self.0.len()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection that is young enough, if any.
    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.mine();
        let now = Instant::now();
        while let Some(mut conn) = idle.pop() {
            if now.duration_since(conn.idle_since) < IDLE_FOR {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response was read whole, for the next request.
    pub fn put(&self, mut conn: Conn) {
        if !conn.buf.is_empty() {
            // Bytes after a whole response: the replica is not speaking HTTP/1.1 as
            // agreed, so the connection is not trusted again.
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.mine();
        // The oldest are at the front: close those past their time.
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.idle_since) >= IDLE_FOR)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Closes every idle connection (the replica left the pool).
    pub fn clear(&self) {
        for list in &self.0 {
            list.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn replica_urls_give_host_port_and_prefix() {
        let a = Address::parse("http://127.0.0.1:41234").expect("an address");
        assert_eq!(
            (
                a.host.as_str(),
                a.port,
                a.authority.as_str(),
                a.prefix.as_str()
            ),
            ("127.0.0.1", 41234, "127.0.0.1:41234", "")
        );
        let a = Address::parse("http://music-3:8080/base/").expect("an address");
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("music-3", 8080, "/base")
        );
        let a = Address::parse("http://[::1]:9").expect("an address");
        assert_eq!((a.host.as_str(), a.authority.as_str()), ("::1", "[::1]:9"));
        assert_eq!(Address::parse("http://h").map(|a| a.port), Some(80));
        for bad in ["https://h:1", "h:1", "http://h:1/?q", "/path"] {
            assert!(Address::parse(bad).is_none(), "{bad}");
        }
    }
}
