//! The outgoing HTTP client services use to call each other: a keep-alive pool,
//! connect and request timeouts, and a client span per call whose W3C trace context
//! travels in the request, so the callee's server span is its child.
//!
//! Requests are built with reqwest's builder. Plain `http://` calls (service to
//! service inside the platform) go out through hyper's pooled HTTP/1 client directly,
//! which costs markedly less CPU per call than reqwest's full stack; `https://` calls
//! go through reqwest (rustls).

use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reqwest::{Method, RequestBuilder, Response};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A pooled HTTP client that propagates the current trace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    plain: HyperClient<HttpConnector, reqwest::Body>,
    timeout: Duration,
}

/// Timeouts and pool sizing of an [`HttpClient`].
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
            max_idle_per_host: 256,
        }
    }
}

/// Why a call failed before an HTTP answer came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl HttpClient {
    pub fn new(options: ClientOptions) -> anyhow::Result<Self> {
        let inner = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.max_idle_per_host)
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let plain = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.max_idle_per_host)
            .build(connector);
        Ok(Self {
            inner,
            plain,
            timeout: options.request_timeout,
        })
    }

    /// A request to fill in; [`HttpClient::send`] sends it.
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.inner.request(method, url)
    }

    pub fn get(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    pub fn delete(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// Sends `request`. When traces are exported, the call is a client span
    /// (`<METHOD> <path>`) whose context goes out as `traceparent`.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, SendError> {
        let mut request = request.build()?;
        if !crate::telemetry::exporting() {
            return self.execute(request).await;
        }
        let name = format!("{} {}", request.method(), request.url().path());
        let span = tracing::info_span!(
            "client request",
            otel.name = %name,
            otel.kind = "client",
            http.request.method = %request.method(),
            server.address = request.url().host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
        );
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(
                &cx,
                &mut crate::telemetry::HeaderInjector(request.headers_mut()),
            );
        });
        let result = self.execute(request).instrument(span.clone()).await;
        if let Ok(response) = &result {
            span.record("http.response.status_code", response.status().as_u16());
        }
        result
    }

    async fn execute(&self, request: reqwest::Request) -> Result<Response, SendError> {
        if request.url().scheme() != "http" {
            return Ok(self.inner.execute(request).await?);
        }
        let request: http::Request<reqwest::Body> = request.try_into()?;
        let response = tokio::time::timeout(self.timeout, self.plain.request(request))
            .await
            .map_err(|_| SendError::Timeout(self.timeout))?
            .map_err(|e| SendError::Transport(error_chain(&e)))?;
        Ok(Response::from(response.map(reqwest::Body::wrap)))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
