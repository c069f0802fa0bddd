//! Autoscaling policies: pure functions from a window of observations (and their own
//! state) to a desired replica count. Time comes in with the observation, so the same
//! policy drives the live scaler and the simulator, deterministically.

pub mod hpa;
pub mod kpa;
pub mod littles;
pub mod threshold;

/// What a policy sees at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    /// Seconds since the start.
    pub time: f64,
    /// Replicas serving traffic.
    pub ready: usize,
    /// Replicas asked for (ready + starting).
    pub total: usize,
    /// Requests per second that arrived over the last evaluation period (offered load).
    pub rps: f64,
    /// Requests per second answered over the period: below `rps` when saturated.
    pub served_rps: f64,
    /// Requests in flight, summed over replicas (averaged over the period).
    pub concurrency: f64,
    /// Response-time percentiles over the period, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Mean CPU utilization of the ready replicas (0..=1 of their request).
    pub cpu: f64,
    pub error_rate: f64,
}

/// A policy's answer, with the reason recorded as the scaling event's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: usize,
    pub reason: String,
}

/// Min and max replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: usize,
    pub max: usize,
}

impl Bounds {
    pub fn clamp(self, n: usize) -> usize {
        n.clamp(self.min, self.max.max(self.min))
    }
}

pub trait Policy: Send {
    fn name(&self) -> &str;
    /// How often it wants to be evaluated, in seconds.
    fn interval(&self) -> f64;
    fn decide(&mut self, observation: &Observation) -> Decision;
}

/// The metric a target is set on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Mean response time per request, ms (ECE 422).
    LatencyMs(f64),
    /// CPU utilization per replica, 0..=1 (thesis, CS230).
    Cpu(f64),
    /// Requests in flight per replica.
    Concurrency(f64),
    /// Requests per second per replica.
    Rps(f64),
}

impl Target {
    /// (current per-replica value, target value) for an observation.
    pub fn ratio_parts(self, o: &Observation) -> Option<(f64, f64)> {
        let per_replica = |total: f64| {
            if o.ready == 0 {
                None
            } else {
                Some(total / o.ready as f64)
            }
        };
        match self {
            Self::LatencyMs(t) => Some((o.mean_ms, t)),
            Self::Cpu(t) => Some((o.cpu, t)),
            Self::Concurrency(t) => per_replica(o.concurrency).map(|v| (v, t)),
            Self::Rps(t) => per_replica(o.rps).map(|v| (v, t)),
        }
    }
}
