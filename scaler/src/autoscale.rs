//! Live autoscaling: every `interval` of its policy, an observation of one service
//! (request rate and latency from its balancer's window, requests in flight, ready and
//! asked-for replicas, CPU per replica from their `/metrics`) goes to the policy, and
//! its decision becomes the supervisor's replica count, recorded as a `scaled` event
//! with the policy's reason. Ticks fall just after whole seconds of the wall clock,
//! the boundaries of the balancer's window, so the CPU sampled at each tick covers the
//! same seconds as the request counts it is compared with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::actuator::ServiceSpec;
use crate::balancer::Balancer;
use crate::policy::hpa::{Hpa, HpaConfig};
use crate::policy::kpa::{Kpa, KpaConfig};
use crate::policy::littles::{Littles, LittlesConfig};
use crate::policy::threshold::Threshold;
use crate::policy::{Bounds, Observation, Policy, Target};
use crate::pool::State;
use crate::supervisor::Supervisor;

/// `[autoscale.<service>]` in `scaler.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleConfig {
    /// `littles` (ours), `hpa`, `kpa` or `threshold`.
    pub policy: String,
    pub min: usize,
    pub max: usize,
    /// For `hpa` and `kpa`: `cpu:0.7`, `latency:200` (ms), `concurrency:10`, `rps:70`.
    #[serde(default)]
    pub target: Option<String>,
    /// For `littles`: the p99 to keep, in milliseconds.
    #[serde(default = "default_slo")]
    pub slo_p99_ms: f64,
}

fn default_slo() -> f64 {
    250.0
}

fn parse_target(text: &str) -> anyhow::Result<Target> {
    let (kind, value) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("target `{text}`: expected kind:value"))?;
    let value: f64 = value
        .parse()
        .map_err(|_| anyhow::anyhow!("target `{text}`: `{value}` is not a number"))?;
    Ok(match kind {
        "cpu" => Target::Cpu(value),
        "latency" => Target::LatencyMs(value),
        "concurrency" => Target::Concurrency(value),
        "rps" => Target::Rps(value),
        other => anyhow::bail!("target kind `{other}`: use cpu, latency, concurrency or rps"),
    })
}

impl AutoscaleConfig {
    pub fn build(&self) -> anyhow::Result<Box<dyn Policy>> {
        anyhow::ensure!(
            self.min >= 1 && self.min <= self.max,
            "autoscale bounds: need 1 <= min <= max"
        );
        let bounds = Bounds {
            min: self.min,
            max: self.max,
        };
        let target = || -> anyhow::Result<Target> {
            parse_target(self.target.as_deref().unwrap_or("cpu:0.7"))
        };
        Ok(match self.policy.as_str() {
            "littles" => Box::new(Littles::new(LittlesConfig {
                slo_p99_ms: self.slo_p99_ms,
                ..LittlesConfig::new(bounds)
            })),
            "hpa" => Box::new(Hpa::new(HpaConfig::kubernetes_defaults(target()?, bounds))),
            "kpa" => {
                let target = parse_target(self.target.as_deref().unwrap_or("concurrency:10"))?;
                anyhow::ensure!(
                    matches!(target, Target::Concurrency(_) | Target::Rps(_)),
                    "kpa scales on concurrency or rps"
                );
                Box::new(Kpa::new(KpaConfig::knative_defaults(target, bounds)))
            }
            "threshold" => Box::new(Threshold::cs230(bounds)),
            other => anyhow::bail!("unknown policy `{other}` (littles, hpa, kpa, threshold)"),
        })
    }
}

/// What the autoscaler scales: a replica count it reads and sets, with a reason. The
/// supervisor is one; a Kubernetes Deployment's scale subresource is another
/// ([`crate::kubernetes::DeploymentScale`]).
#[async_trait::async_trait]
pub trait ScaleTarget: Send + Sync {
    /// The replica count asked for now.
    async fn desired(&self) -> usize;
    /// Asks for `n` replicas; `reason` goes into the `scaled` event.
    async fn scale(&self, n: usize, reason: &str);
}

#[async_trait::async_trait]
impl ScaleTarget for Supervisor {
    async fn desired(&self) -> usize {
        self.desired.load(Ordering::SeqCst)
    }

    async fn scale(&self, n: usize, reason: &str) {
        Supervisor::scale(self, n, Some(reason));
    }
}

/// Where observations of a service come from: here its balancer's window and its
/// replicas' `/metrics`; on Kubernetes, Prometheus queries.
#[async_trait::async_trait]
pub trait Observe: Send {
    /// The service over the last `seconds` (`time` and `total` are the loop's to fill).
    async fn observe(&mut self, seconds: u64) -> Observation;
}

/// Observations from a balancer (arrivals, answers, latency, requests in flight, ready
/// replicas) and the replicas' CPU: `process_cpu_seconds_total` of each alive replica,
/// as a utilization, cores in use over its CPU limit (`CPU_LIMIT` of the service, the
/// in-process or the container's; one core without one).
#[derive(Debug)]
pub struct BalancerObserver {
    balancer: Arc<Balancer>,
    cores: f64,
    last: HashMap<String, (Instant, f64)>,
}

impl BalancerObserver {
    pub fn new(balancer: Arc<Balancer>, spec: &ServiceSpec) -> Self {
        Self {
            balancer,
            cores: spec
                .env
                .get("CPU_LIMIT")
                .and_then(|v| kit::cpu_limit::parse_cores(v).ok())
                .unwrap_or(1.0),
            last: HashMap::new(),
        }
    }

    async fn cpu(&mut self) -> f64 {
        let backends: Vec<_> = self
            .balancer
            .pool
            .all()
            .into_iter()
            .filter(|b| b.state() == State::Alive)
            .collect();
        let mut shares = Vec::new();
        for backend in &backends {
            let Some(seconds) = scrape_cpu(&backend.url).await else {
                continue;
            };
            let now = Instant::now();
            if let Some((then, before)) = self.last.insert(backend.id.clone(), (now, seconds)) {
                let elapsed = now.duration_since(then).as_secs_f64();
                if elapsed > 0.05 {
                    shares.push(((seconds - before) / elapsed / self.cores).max(0.0));
                }
            }
        }
        self.last
            .retain(|id, _| backends.iter().any(|b| &b.id == id));
        if shares.is_empty() {
            0.0
        } else {
            shares.iter().sum::<f64>() / shares.len() as f64
        }
    }
}

#[async_trait::async_trait]
impl Observe for BalancerObserver {
    async fn observe(&mut self, seconds: u64) -> Observation {
        let all = self.balancer.pool.all();
        let window = self.balancer.window.summary(seconds.clamp(1, 10));
        Observation {
            ready: all.iter().filter(|b| b.state() == State::Alive).count(),
            // The offered load: a saturated service answers less than arrives.
            rps: window.arrivals_per_second,
            served_rps: window.requests_per_second,
            concurrency: all.iter().map(|b| b.in_flight() as f64).sum(),
            p50_ms: window.p50_ms,
            p99_ms: window.p99_ms,
            mean_ms: window.mean_ms,
            cpu: self.cpu().await,
            error_rate: window.error_rate,
            ..Observation::default()
        }
    }
}

async fn scrape_cpu(url: &str) -> Option<f64> {
    let client = crate::balancer::http_client();
    let request = http::Request::get(format!("{url}/metrics"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .ok()?;
    let response = tokio::time::timeout(Duration::from_millis(500), client.request(request))
        .await
        .ok()?
        .ok()?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?
        .to_bytes();
    let text = std::str::from_utf8(&body).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// How long to sleep from `now` to `seconds` whole seconds of the wall clock after the
/// current one, plus a few milliseconds: the balancer's window counts whole seconds,
/// so a tick there finds the seconds it summarizes complete, and the CPU read at each
/// tick spans the same seconds. (Sampled mid-second instead, a load step could fall in
/// the CPU's span but only half in the window's, and read as a replica doing a third
/// of the work it can.)
fn until_next_tick(now: SystemTime, seconds: u64) -> Duration {
    let into_second = now.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
        Duration::from_nanos(u64::from(d.subsec_nanos()))
    });
    Duration::from_secs(seconds.max(1)) - into_second + Duration::from_millis(5)
}

/// Runs `policy` against `supervisor`'s service (its balancer's observations) until
/// `stop` changes.
pub async fn run(
    supervisor: Arc<Supervisor>,
    policy: Box<dyn Policy>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut observer = BalancerObserver::new(supervisor.balancer.clone(), &supervisor.spec);
    run_with(supervisor, &mut observer, policy, stop).await;
}

/// Runs `policy` on the observations of `source` and sets `target`'s replica count
/// until `stop` changes.
pub async fn run_with(
    target: Arc<dyn ScaleTarget>,
    source: &mut dyn Observe,
    mut policy: Box<dyn Policy>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let started = Instant::now();
    loop {
        let seconds = policy.interval().round().max(1.0) as u64;
        tokio::select! {
            () = tokio::time::sleep(until_next_tick(SystemTime::now(), seconds)) => {}
            _ = stop.changed() => return,
        }
        let observed = source.observe(seconds).await;
        let observation = Observation {
            time: started.elapsed().as_secs_f64(),
            total: target.desired().await,
            ..observed
        };
        let decision = policy.decide(&observation);
        if decision.desired != observation.total {
            target
                .scale(
                    decision.desired,
                    &format!("{}: {}", policy.name(), decision.reason),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_just_after_whole_seconds() {
        let at = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
        let next = |now: f64, seconds| now + until_next_tick(at(now), seconds).as_secs_f64();
        assert!((next(1000.0, 1) - 1001.005).abs() < 1e-6);
        assert!((next(1000.3, 1) - 1001.005).abs() < 1e-6);
        assert!((next(1000.999, 1) - 1001.005).abs() < 1e-6);
        // A tick that ran late by 40 ms still lands on the next boundary.
        assert!((next(1001.045, 2) - 1003.005).abs() < 1e-6);
    }

    #[test]
    fn configs_build_their_policy_or_say_what_is_wrong() {
        let parse = |text: &str| toml::from_str::<AutoscaleConfig>(text).expect("toml");
        assert_eq!(
            parse("policy = \"littles\"\nmin = 1\nmax = 4")
                .build()
                .expect("littles")
                .name(),
            "littles"
        );
        assert_eq!(
            parse("policy = \"hpa\"\nmin = 1\nmax = 4\ntarget = \"latency:200\"")
                .build()
                .expect("hpa")
                .name(),
            "hpa"
        );
        assert_eq!(
            parse("policy = \"kpa\"\nmin = 1\nmax = 4\ntarget = \"rps:70\"")
                .build()
                .expect("kpa")
                .name(),
            "kpa"
        );
        assert!(
            parse("policy = \"kpa\"\nmin = 1\nmax = 4\ntarget = \"cpu:0.7\"")
                .build()
                .is_err()
        );
        assert!(
            parse("policy = \"magic\"\nmin = 1\nmax = 4")
                .build()
                .is_err()
        );
        assert!(parse("policy = \"hpa\"\nmin = 3\nmax = 2").build().is_err());
        assert!(
            parse("policy = \"hpa\"\nmin = 1\nmax = 2\ntarget = \"cpu\"")
                .build()
                .is_err()
        );
    }
}
