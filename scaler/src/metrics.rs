//! The balancers' own metrics: `scaler_balancer_requests_total{service,code}` and
//! `scaler_balancer_request_duration_seconds{service}`, what the clients of a service
//! saw through its balancer (retries included), beside what each replica reports.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// HTTP status codes are 100..=599.
const CODES: std::ops::RangeInclusive<u16> = 100..=599;

/// The metric families, shared by every balancer of a platform and registered once on
/// the admin API's `/metrics`.
#[derive(Debug, Clone)]
pub struct BalancerMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl Default for BalancerMetrics {
    fn default() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "scaler_balancer_requests_total",
                "Requests answered through a service's balancer, by HTTP status (502: no replica could answer).",
            ),
            &["service", "code"],
        )
        .expect("valid metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "scaler_balancer_request_duration_seconds",
                "Time from a request reaching the balancer to its response headers, retries included.",
            )
            .buckets(kit::metrics::LATENCY_BUCKETS.to_vec()),
            &["service"],
        )
        .expect("valid metric definition");
        Self { requests, duration }
    }
}

impl BalancerMetrics {
    /// The handles of one service, resolved once so that a request costs no label
    /// lookup and no allocation.
    pub fn for_service(&self, service: &str) -> ServiceMetrics {
        ServiceMetrics {
            service: service.to_owned(),
            requests: self.requests.clone(),
            by_code: CODES.map(|_| OnceLock::new()).collect(),
            duration: self.duration.with_label_values(&[service]),
        }
    }
}

/// One service's counters, a handle per status code resolved on its first use.
#[derive(Debug)]
pub struct ServiceMetrics {
    service: String,
    requests: IntCounterVec,
    by_code: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
}

impl ServiceMetrics {
    /// Counts one answered request.
    pub fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let code = status.as_u16();
        if let Some(slot) = self
            .by_code
            .get(usize::from(code.saturating_sub(*CODES.start())))
        {
            slot.get_or_init(|| {
                self.requests
                    .with_label_values(&[self.service.as_str(), status.as_str()])
            })
            .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_is_counted_under_its_own_code() {
        let metrics = BalancerMetrics::default();
        let music = metrics.for_service("music");
        music.observe(http::StatusCode::OK, Duration::from_millis(3));
        music.observe(http::StatusCode::OK, Duration::from_millis(3));
        music.observe(http::StatusCode::BAD_GATEWAY, Duration::from_millis(700));
        assert_eq!(
            metrics.requests.with_label_values(&["music", "200"]).get(),
            2
        );
        assert_eq!(
            metrics.requests.with_label_values(&["music", "502"]).get(),
            1
        );
        let duration = metrics.duration.with_label_values(&["music"]);
        assert_eq!(duration.get_sample_count(), 3);
        assert!((duration.get_sample_sum() - 0.706).abs() < 1e-9);
    }
}
