//! What happened to replicas, with timestamps: kept (the last 1000) for `/events` and
//! `/status`, broadcast to live listeners, and counted as metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Started,
    Ready,
    Unhealthy,
    Healthy,
    Ejected,
    Exited,
    Killed,
    Replaced,
    Stopped,
    Scaled,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Self::Started,
        Self::Ready,
        Self::Unhealthy,
        Self::Healthy,
        Self::Ejected,
        Self::Exited,
        Self::Killed,
        Self::Replaced,
        Self::Stopped,
        Self::Scaled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Ready => "ready",
            Self::Unhealthy => "unhealthy",
            Self::Healthy => "healthy",
            Self::Ejected => "ejected",
            Self::Exited => "exited",
            Self::Killed => "killed",
            Self::Replaced => "replaced",
            Self::Stopped => "stopped",
            Self::Scaled => "scaled",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u128,
    pub service: String,
    pub replica: String,
    pub kind: Kind,
    pub detail: String,
}

const KEEP: usize = 1000;

#[derive(Debug)]
pub struct Events {
    log: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
    /// `scaler_events_total{service,kind}`.
    pub counter: prometheus::IntCounterVec,
    /// `scaler_recovery_seconds{service}`: failure to replacement ready.
    pub recovery: prometheus::HistogramVec,
    /// The balancers' request counts and latencies: shared, like these, by every
    /// service of the platform.
    pub balancer: crate::metrics::BalancerMetrics,
}

impl Default for Events {
    fn default() -> Self {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "scaler_events_total",
                "Replica events, by service and kind.",
            ),
            &["service", "kind"],
        )
        .expect("valid metric definition");
        let recovery = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "scaler_recovery_seconds",
                "Time from a replica's failure to its replacement being ready.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            &["service"],
        )
        .expect("valid metric definition");
        Self {
            log: Mutex::default(),
            live: broadcast::channel(1024).0,
            counter,
            recovery,
            balancer: crate::metrics::BalancerMetrics::default(),
        }
    }
}

impl Events {
    /// Creates `service`'s series at 0 (every event kind, the recovery histogram), so
    /// Prometheus's `increase()` counts a service's first event of a kind too.
    pub fn register(&self, service: &str) {
        for kind in Kind::ALL {
            let _ = self.counter.with_label_values(&[service, kind.as_str()]);
        }
        let _ = self.recovery.with_label_values(&[service]);
    }

    pub fn record(&self, service: &str, replica: &str, kind: Kind, detail: impl Into<String>) {
        let event = Event {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            service: service.to_owned(),
            replica: replica.to_owned(),
            kind,
            detail: detail.into(),
        };
        tracing::info!(service, replica, kind = ?kind, detail = %event.detail, "replica event");
        self.counter
            .with_label_values(&[service, kind.as_str()])
            .inc();
        let _ = self.live.send(event.clone());
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back(event);
    }

    pub fn recent(&self) -> Vec<Event> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}
