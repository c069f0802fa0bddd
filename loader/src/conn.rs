//! Keep-alive HTTP/1 connections owned by one simulated client (as each of wrk's
//! connections is): no pool shared between clients, no lock per request.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;

/// One user's keep-alive connections, by host and port.
#[derive(Default)]
pub struct Connections {
    open: BTreeMap<String, hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Connections {
    /// Opens the connection to `uri`'s host ahead of the first request.
    pub async fn warm(&mut self, uri: &http::Uri) -> Result<(), String> {
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or("no host in the URL")?;
        self.connect(&authority).await
    }

    async fn connect(&mut self, authority: &str) -> Result<(), String> {
        if self.open.get(authority).is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            self.open.insert(authority.to_owned(), sender);
        }
        Ok(())
    }

    /// Sends a request whose URI is only the path, to `authority` (`host:port`).
    pub async fn send_path(
        &mut self,
        authority: &str,
        host: &http::HeaderValue,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        self.connect(authority).await?;
        let sender = self.open.get_mut(authority).ok_or("no connection")?;
        sender.ready().await.map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert(http::header::HOST, host.clone());
        let result = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string());
        if result.is_err() {
            self.open.remove(authority);
        }
        result
    }

    pub async fn send(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or("no host in the URL")?;
        self.connect(&authority).await?;
        let sender = self.open.get_mut(&authority).ok_or("no connection")?;
        sender.ready().await.map_err(|e| e.to_string())?;
        // HTTP/1 over an already connected socket wants only the path in the request line.
        let (mut parts, body) = request.into_parts();
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| "bad path")?;
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::try_from(authority.as_str()).map_err(|_| "bad host")?,
        );
        let result = sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| e.to_string());
        if result.is_err() {
            self.open.remove(&authority);
        }
        result
    }
}
