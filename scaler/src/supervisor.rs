//! Keeps the desired number of replicas of a service running and healthy: starts them,
//! admits each to its balancer only once `/readiness` passes, replaces those that exit
//! or that the balancer's health checks declare dead (hung), with exponential back-off
//! (100 ms doubling to 10 s, reset after 30 s healthy), and drains those scaled away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::actuator::{Actuator, Replica, ServiceSpec};
use crate::balancer::Balancer;
use crate::events::Kind;
use crate::pool::{Backend, State};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const BACKOFF_RESET: Duration = Duration::from_secs(30);
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Managed {
    replica: Box<dyn Replica>,
    backend: Arc<Backend>,
    started: Instant,
    /// When the failure this replica replaces happened (for the recovery time).
    replacing: Option<Instant>,
    ready_at: Option<Instant>,
}

/// The supervisor of one service. `desired` may change while it runs.
#[derive(Debug)]
pub struct Supervisor {
    pub spec: ServiceSpec,
    pub balancer: Arc<Balancer>,
    pub actuator: Arc<dyn Actuator>,
    pub desired: AtomicUsize,
    pub grace: Duration,
    recoveries: std::sync::Mutex<Vec<Duration>>,
    /// Process ids of the running replicas (process actuator), by replica id.
    pids: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
}

impl Supervisor {
    pub fn new(
        spec: ServiceSpec,
        balancer: Arc<Balancer>,
        actuator: Arc<dyn Actuator>,
        desired: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            spec,
            balancer,
            actuator,
            desired: AtomicUsize::new(desired),
            grace: Duration::from_secs(10),
            recoveries: std::sync::Mutex::default(),
            pids: std::sync::Mutex::default(),
        })
    }

    /// Recovery times so far: failure to replacement ready.
    pub fn recoveries(&self) -> Vec<Duration> {
        self.recoveries
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Replica id -> process id, for the replicas running now.
    pub fn pids(&self) -> std::collections::BTreeMap<String, u32> {
        self.pids.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn track(&self, managed: &[Managed]) {
        if let Ok(mut pids) = self.pids.lock() {
            *pids = managed
                .iter()
                .filter_map(|m| Some((m.replica.id().to_owned(), m.replica.pid()?)))
                .collect();
        }
    }

    pub fn set_desired(&self, n: usize) {
        self.scale(n, None);
    }

    /// Sets the replica count, recording a `scaled` event with `reason` when it changes.
    pub fn scale(&self, n: usize, reason: Option<&str>) {
        let before = self.desired.swap(n, Ordering::SeqCst);
        if before != n {
            let mut detail = format!("{before} -> {n} replicas");
            if let Some(reason) = reason {
                detail.push_str(": ");
                detail.push_str(reason);
            }
            self.balancer
                .events
                .record(&self.spec.name, "-", Kind::Scaled, detail);
        }
    }

    /// Runs until `stop` resolves, then drains and stops every replica.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let name = self.spec.name.clone();
        let events = self.balancer.events.clone();
        let mut managed: Vec<Managed> = Vec::new();
        let mut next_index = 1usize;
        let mut backoff = BACKOFF_MIN;
        let mut not_before = Instant::now();
        let mut pending_failures: Vec<Instant> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            // Readiness: admit replicas whose /readiness passes.
            for m in managed
                .iter_mut()
                .filter(|m| m.backend.state() == State::Starting)
            {
                if self
                    .balancer
                    .probe(m.replica.url(), "/readiness", Duration::from_millis(500))
                    .await
                {
                    m.backend.check_passed();
                    m.ready_at = Some(Instant::now());
                    let mut detail = format!("ready after {} ms", m.started.elapsed().as_millis());
                    if let Some(failed) = m.replacing {
                        let recovery = failed.elapsed();
                        detail.push_str(&format!(
                            "; recovered {} ms after the failure",
                            recovery.as_millis()
                        ));
                        if let Ok(mut r) = self.recoveries.lock() {
                            r.push(recovery);
                        }
                        events
                            .recovery
                            .with_label_values(&[name.as_str()])
                            .observe(recovery.as_secs_f64());
                        events.record(
                            &name,
                            m.replica.id(),
                            Kind::Replaced,
                            format!("{} ms", recovery.as_millis()),
                        );
                    }
                    events.record(&name, m.replica.id(), Kind::Ready, detail);
                } else if m.started.elapsed() > READY_WITHIN {
                    events.record(&name, m.replica.id(), Kind::Killed, "not ready within 30 s");
                    m.replica.kill().await;
                }
            }
            // Failures: exited, or declared dead (hung) by the health checks.
            let mut i = 0;
            while i < managed.len() {
                let m = &mut managed[i];
                let failure = if let Some(status) = m.replica.exited() {
                    events.record(&name, m.replica.id(), Kind::Exited, status);
                    true
                } else if m.backend.state() == State::Dead {
                    m.replica.kill().await;
                    events.record(
                        &name,
                        m.replica.id(),
                        Kind::Killed,
                        "hung: stopped answering health checks",
                    );
                    true
                } else {
                    false
                };
                if failure {
                    let m = managed.remove(i);
                    self.balancer.pool.remove(&m.backend.id);
                    if m.ready_at.is_some_and(|t| t.elapsed() > BACKOFF_RESET) {
                        backoff = BACKOFF_MIN;
                    }
                    not_before = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    pending_failures.push(Instant::now());
                } else {
                    i += 1;
                }
            }
            // Scale: start what is missing, drain what is extra.
            let desired = self.desired.load(Ordering::SeqCst);
            while managed.len() < desired && Instant::now() >= not_before {
                match self.actuator.spawn(&self.spec, next_index).await {
                    Ok(replica) => {
                        next_index += 1;
                        let backend = Backend::new(replica.id(), replica.url(), State::Starting);
                        self.balancer.pool.add(backend.clone());
                        events.record(&name, replica.id(), Kind::Started, replica.url().to_owned());
                        let replacing = if pending_failures.is_empty() {
                            None
                        } else {
                            Some(pending_failures.remove(0))
                        };
                        managed.push(Managed {
                            replica,
                            backend,
                            started: Instant::now(),
                            replacing,
                            ready_at: None,
                        });
                    }
                    Err(e) => {
                        tracing::error!(service = %name, error = %format!("{e:#}"), "could not start a replica");
                        not_before = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        break;
                    }
                }
            }
            if managed.len() > desired {
                let mut extra = managed.split_off(desired);
                for m in &mut extra {
                    self.balancer.pool.remove(&m.backend.id);
                    events.record(&name, m.replica.id(), Kind::Stopped, "scaled down");
                }
                let grace = self.grace;
                tokio::spawn(async move {
                    for mut m in extra {
                        drain_then_stop(&mut m, grace).await;
                    }
                });
            }
            self.track(&managed);
            if pending_failures.len() > desired {
                pending_failures.truncate(desired);
            }
            if managed
                .iter()
                .all(|m| m.ready_at.is_some_and(|t| t.elapsed() > BACKOFF_RESET))
            {
                backoff = BACKOFF_MIN;
            }
        }
        for m in &mut managed {
            self.balancer.pool.remove(&m.backend.id);
        }
        let stops = managed.iter_mut().map(|m| drain_then_stop(m, self.grace));
        futures_util::future::join_all(stops).await;
        for m in &managed {
            events.record(&name, m.replica.id(), Kind::Stopped, "shut down");
        }
    }
}

/// Waits (bounded) for requests in flight, then stops the replica.
async fn drain_then_stop(m: &mut Managed, grace: Duration) {
    let deadline = Instant::now() + grace;
    while m.backend.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.replica.stop(grace).await;
}
