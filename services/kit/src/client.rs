//! The outgoing HTTP client services use to call each other: a keep-alive pool,
//! connect and request timeouts, and W3C trace context on every request.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};

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

    /// A request with the current span's `traceparent` already set.
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_context(&mut headers);
        self.inner.request(method, url).headers(headers)
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
}
