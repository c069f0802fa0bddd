//! Prometheus metrics: the HTTP RED metrics every service exports, and the process
//! metrics (CPU seconds, resident memory, open file descriptors) the scaler reads.
//!
//! Names are a contract (DESIGN.md §5): `http_requests_total`,
//! `http_request_duration_seconds` (labels `service`, `method`, `route`, `status`),
//! `http_requests_in_flight`, `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets, in seconds: fine at the low end where healthy services live. The
/// scaler's balancer histograms use the same, so the two compare bucket for bucket.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The registry of one service and its HTTP metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    service: &'static str,
}

impl Metrics {
    /// A fresh registry for `service`, with the HTTP and process metrics registered.
    pub fn new(service: &'static str) -> Self {
        let registry = Registry::new();
        let labels = ["service", "method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route template and status.",
            ),
            &labels,
        )
        .expect("valid metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request received to response headers sent.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &labels,
        )
        .expect("valid metric definition");
        let in_flight = IntGauge::with_opts(
            Opts::new(
                "http_requests_in_flight",
                "HTTP requests being handled right now.",
            )
            .const_label("service", service),
        )
        .expect("valid metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(ProcessCollector::new()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            duration,
            in_flight,
            service,
        }
    }

    /// The registry, for a service's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub(crate) fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status_label(status);
        let labels = [self.service, method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec only fails on invalid metric families, which `register` rejects.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.service)
            .finish()
    }
}

fn status_label(status: u16) -> String {
    status.to_string()
}

pub(crate) async fn handler(
    axum::extract::State(metrics): axum::extract::State<Metrics>,
) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics.render(),
    )
        .into_response()
}

/// Process metrics read from `/proc/self` at scrape time (Linux; absent elsewhere).
struct ProcessCollector {
    cpu: Desc,
    rss: Desc,
    fds: Desc,
    start: Desc,
}

impl ProcessCollector {
    fn new() -> Self {
        let desc = |name: &str, help: &str| {
            Desc::new(name.to_owned(), help.to_owned(), vec![], Default::default())
                .expect("valid metric definition")
        };
        Self {
            cpu: desc(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent, in seconds.",
            ),
            rss: desc(
                "process_resident_memory_bytes",
                "Resident memory size, in bytes.",
            ),
            fds: desc("process_open_fds", "Number of open file descriptors."),
            start: desc(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
            ),
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.cpu, &self.rss, &self.fds, &self.start]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(sample) = ProcessSample::read() else {
            return Vec::new();
        };
        let counter = |desc: &Desc, value: f64| {
            let c =
                prometheus::Counter::with_opts(Opts::new(desc.fq_name.clone(), desc.help.clone()))
                    .expect("valid metric definition");
            c.inc_by(value);
            c.collect()
        };
        let gauge = |desc: &Desc, value: f64| {
            let g =
                prometheus::Gauge::with_opts(Opts::new(desc.fq_name.clone(), desc.help.clone()))
                    .expect("valid metric definition");
            g.set(value);
            g.collect()
        };
        let mut out = counter(&self.cpu, sample.cpu_seconds);
        out.extend(gauge(&self.rss, sample.resident_bytes as f64));
        out.extend(gauge(&self.fds, sample.open_fds as f64));
        if let Some(start) = sample.start_time_seconds {
            out.extend(gauge(&self.start, start));
        }
        out
    }
}

/// One reading of this process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: Option<f64>,
}

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture the kernel exposes to user space through `/proc`.
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessSample {
    /// Reads `/proc/self`; `None` where there is no procfs.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces; everything after its closing ')' is numeric.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // After the ')', field 3 (state) is index 0, so field N is index N - 3.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
        let resident_bytes = read_vm_rss().unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let start_time_seconds =
            field(22).and_then(|ticks| Some(boot_time()? + ticks / TICKS_PER_SECOND));
        Some(Self {
            cpu_seconds,
            resident_bytes,
            open_fds,
            start_time_seconds,
        })
    }
}

fn read_vm_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_contract_metric() {
        let metrics = Metrics::new("test");
        metrics.observe("GET", "/things/{id}", 200, Duration::from_millis(3));
        let text = metrics.render();
        for name in [
            "http_requests_total",
            "http_request_duration_seconds_bucket",
            "http_requests_in_flight",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.contains(r#"route="/things/{id}""#), "{text}");
    }

    #[test]
    fn process_sample_reads_real_values() {
        let sample = ProcessSample::read().expect("procfs is mounted on Linux");
        assert!(sample.resident_bytes > 1024 * 1024, "{sample:?}");
        assert!(sample.open_fds >= 3, "{sample:?}");
        assert!(sample.cpu_seconds >= 0.0);
    }
}
