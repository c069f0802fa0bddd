//! The scaler with real processes and real sockets: self-healing under load, and the
//! balancer's promises (bodies survive retries, readiness gating, least-request, static
//! pools, no replica -> 503), and what Prometheus discovers and scrapes of it.

mod autoscaling;
mod balancer;
mod healing;
mod kubernetes;
mod prometheus;
mod proxy;
mod support;
