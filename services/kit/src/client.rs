//! The outgoing HTTP client services use to call each other: a keep-alive pool,
//! connect and request timeouts, and a client span per call whose W3C trace context
//! travels in the request, so the callee's server span is its child.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A pooled HTTP client that propagates the current trace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
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
        Ok(Self { inner })
    }

    /// A request to fill in; [`HttpClient::send`] adds the trace context.
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

    /// Sends `request` inside a client span (`<METHOD> <path>`) whose context goes out
    /// as `traceparent`.
    pub async fn send(&self, request: RequestBuilder) -> reqwest::Result<Response> {
        let mut request = request.build()?;
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
        let result = self.inner.execute(request).instrument(span.clone()).await;
        if let Ok(response) = &result {
            span.record("http.response.status_code", response.status().as_u16());
        }
        result
    }
}
