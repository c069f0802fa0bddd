//! Keeps the desired number of replicas of a service running and healthy: starts them,
//! admits each to its balancer only once `/readiness` passes, replaces those that exit
//! or that the balancer's health checks declare dead (hung), with exponential back-off
//! (100 ms doubling to 10 s, reset after 30 s healthy), and drains those scaled away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// Tokio's clock: the same as the system's, and pausable in tests.
use tokio::time::Instant;

use crate::actuator::{Actuator, Fault, Replica, ServiceSpec};
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
    /// It failed while healing was off: listed as dead, kept, not replaced.
    failed: bool,
}

/// The supervisor of one service. `desired` may change while it runs.
#[derive(Debug)]
pub struct Supervisor {
    pub spec: ServiceSpec,
    pub balancer: Arc<Balancer>,
    pub actuator: Arc<dyn Actuator>,
    pub desired: AtomicUsize,
    pub grace: Duration,
    /// Whether failed replicas are killed and replaced (the default).
    heal: std::sync::atomic::AtomicBool,
    recoveries: std::sync::Mutex<Vec<Duration>>,
    /// Ids of the replicas it runs now.
    running: std::sync::Mutex<Vec<String>>,
    /// Faults to inject, by replica id, at the next tick.
    faults: std::sync::Mutex<Vec<(String, Fault)>>,
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
            heal: std::sync::atomic::AtomicBool::new(true),
            recoveries: std::sync::Mutex::default(),
            running: std::sync::Mutex::default(),
            faults: std::sync::Mutex::default(),
        })
    }

    /// Recovery times so far: failure to replacement ready.
    pub fn recoveries(&self) -> Vec<Duration> {
        self.recoveries
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Ids of the replicas running now, oldest first.
    pub fn replicas(&self) -> Vec<String> {
        self.running.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Injects `fault` into replica `id` through its actuator at the next tick (a chaos
    /// experiment: the supervisor then finds out as it would about a real failure).
    pub fn inject(&self, id: &str, fault: Fault) {
        if let Ok(mut faults) = self.faults.lock() {
            faults.push((id.to_owned(), fault));
        }
    }

    fn track(&self, managed: &[Managed]) {
        if let Ok(mut running) = self.running.lock() {
            *running = managed.iter().map(|m| m.replica.id().to_owned()).collect();
        }
    }

    /// Turns self-healing on or off. Off, a replica that exits or that the health
    /// checks declare dead stays in its pool as dead (still a target, still counted
    /// against the desired count) until healing is on again or it is scaled away.
    pub fn set_healing(&self, on: bool) {
        self.heal.store(on, Ordering::SeqCst);
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
            let faults = self
                .faults
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            for (id, fault) in faults {
                if let Some(m) = managed.iter_mut().find(|m| m.replica.id() == id)
                    && let Err(e) = m.replica.inject(fault).await
                {
                    tracing::warn!(service = %name, replica = %id, error = %format!("{e:#}"), "could not inject {fault:?}");
                }
            }
            // Readiness: admit replicas that are ready.
            for m in managed
                .iter_mut()
                .filter(|m| m.backend.state() == State::Starting)
            {
                if m.replica.ready().await {
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
            let heal = self.heal.load(Ordering::SeqCst);
            let mut i = 0;
            while i < managed.len() {
                let m = &mut managed[i];
                if !heal {
                    if !m.failed {
                        if let Some(status) = m.replica.exited() {
                            events.record(&name, m.replica.id(), Kind::Exited, status);
                            m.backend.set_state(State::Dead);
                            m.failed = true;
                        } else if m.backend.state() == State::Dead {
                            m.failed = true;
                        }
                    }
                    i += 1;
                    continue;
                }
                let failure = if m.failed {
                    // It failed while healing was off: replaced now.
                    m.replica.kill().await;
                    true
                } else if let Some(status) = m.replica.exited() {
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
                            failed: false,
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
            // Healthy for a while: back-off starts small again. (With no replica at all,
            // nothing has been healthy: a crash loop of one replica keeps doubling.)
            if !managed.is_empty()
                && managed
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
        self.track(&[]);
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

#[cfg(test)]
mod tests {
    //! The supervisor's logic against a fake actuator, on tokio's paused clock: what the
    //! replicas do is set by the test, and time passes only when every task waits.

    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;

    use super::*;
    use crate::events::Events;
    use crate::pool::{Pool, Strategy};

    /// What the test controls and sees of one fake replica.
    #[derive(Debug, Default)]
    struct Fake {
        ready: AtomicBool,
        exited: Mutex<Option<String>>,
        stopped: AtomicBool,
        killed: AtomicBool,
    }

    impl Fake {
        fn exit(&self, why: &str) {
            *self.exited.lock().expect("lock") = Some(why.to_owned());
        }
    }

    #[derive(Debug, Default)]
    struct FakeActuator {
        /// Every replica spawned, with when.
        spawned: Mutex<Vec<(String, Instant, Arc<Fake>)>>,
        /// New replicas are ready at once.
        ready_at_once: bool,
    }

    impl FakeActuator {
        fn spawned(&self) -> Vec<(String, Instant, Arc<Fake>)> {
            self.spawned.lock().expect("lock").clone()
        }

        fn fake(&self, id: &str) -> Arc<Fake> {
            self.spawned()
                .into_iter()
                .find(|(i, _, _)| i == id)
                .map(|(_, _, f)| f)
                .expect("spawned")
        }
    }

    #[derive(Debug)]
    struct FakeReplica {
        id: String,
        url: String,
        fake: Arc<Fake>,
    }

    #[async_trait]
    impl Actuator for FakeActuator {
        async fn spawn(&self, spec: &ServiceSpec, n: usize) -> anyhow::Result<Box<dyn Replica>> {
            let id = format!("{}-{n}", spec.name);
            let fake = Arc::new(Fake::default());
            fake.ready.store(self.ready_at_once, Ordering::SeqCst);
            self.spawned
                .lock()
                .expect("lock")
                .push((id.clone(), Instant::now(), fake.clone()));
            Ok(Box::new(FakeReplica {
                url: format!("http://fake/{id}"),
                id,
                fake,
            }))
        }
    }

    #[async_trait]
    impl Replica for FakeReplica {
        fn id(&self) -> &str {
            &self.id
        }
        fn url(&self) -> &str {
            &self.url
        }
        fn exited(&mut self) -> Option<String> {
            self.fake.exited.lock().expect("lock").clone()
        }
        async fn ready(&self) -> bool {
            self.fake.ready.load(Ordering::SeqCst)
        }
        async fn stop(&mut self, _grace: Duration) {
            self.fake.stopped.store(true, Ordering::SeqCst);
            self.fake.exit("stopped");
        }
        async fn kill(&mut self) {
            self.fake.killed.store(true, Ordering::SeqCst);
            self.fake.exit("killed");
        }
        async fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
            match fault {
                Fault::Crash => self.fake.exit("crashed"),
                Fault::Hang => self.fake.ready.store(false, Ordering::SeqCst),
            }
            Ok(())
        }
    }

    struct Running {
        supervisor: Arc<Supervisor>,
        actuator: Arc<FakeActuator>,
        stop: tokio::sync::watch::Sender<bool>,
        run: tokio::task::JoinHandle<()>,
    }

    fn start(desired: usize, ready_at_once: bool) -> Running {
        let actuator = Arc::new(FakeActuator {
            ready_at_once,
            ..FakeActuator::default()
        });
        let balancer = Balancer::new(
            "svc",
            Arc::new(Pool::new(Strategy::P2c)),
            Arc::new(Events::default()),
            Duration::from_secs(10),
        );
        let spec = ServiceSpec {
            name: "svc".into(),
            program: "svc".into(),
            env: Default::default(),
            log_dir: std::env::temp_dir(),
        };
        let supervisor = Supervisor::new(spec, balancer, actuator.clone(), desired);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(supervisor.clone().run(stop_rx));
        Running {
            supervisor,
            actuator,
            stop,
            run,
        }
    }

    fn states(s: &Supervisor) -> Vec<(String, State)> {
        let mut all: Vec<_> = s
            .balancer
            .pool
            .all()
            .iter()
            .map(|b| (b.id.clone(), b.state()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    async fn pass(time: Duration) {
        tokio::time::sleep(time).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_gets_traffic_only_once_it_is_ready() {
        let r = start(2, false);
        pass(Duration::from_millis(200)).await;
        assert_eq!(
            states(&r.supervisor),
            [
                ("svc-1".into(), State::Starting),
                ("svc-2".into(), State::Starting)
            ]
        );
        r.actuator.fake("svc-2").ready.store(true, Ordering::SeqCst);
        pass(Duration::from_millis(100)).await;
        assert_eq!(
            states(&r.supervisor),
            [
                ("svc-1".into(), State::Starting),
                ("svc-2".into(), State::Alive)
            ]
        );
        let _ = r.stop.send(true);
        r.run.await.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_are_replaced_after_a_back_off_that_doubles() {
        let r = start(1, true);
        pass(Duration::from_millis(100)).await;
        let mut crash_times = Vec::new();
        for round in 1..=3 {
            let id = r.supervisor.replicas()[0].clone();
            r.supervisor.inject(&id, Fault::Crash);
            crash_times.push(Instant::now());
            let deadline = Instant::now() + Duration::from_secs(5);
            while r.actuator.spawned().len() <= round {
                assert!(Instant::now() < deadline, "no replacement {round}");
                pass(Duration::from_millis(10)).await;
            }
        }
        let spawned = r.actuator.spawned();
        let waits: Vec<u128> = crash_times
            .iter()
            .zip(&spawned[1..])
            .map(|(crash, (_, at, _))| at.duration_since(*crash).as_millis())
            .collect();
        // 100 ms, 200 ms, 400 ms of back-off, plus at most two 50 ms ticks each.
        for (wait, backoff) in waits.iter().zip([100, 200, 400]) {
            assert!(
                (backoff..=backoff + 100).contains(wait),
                "waits {waits:?} do not follow 100, 200, 400 ms"
            );
        }
        pass(Duration::from_millis(100)).await;
        assert_eq!(
            r.supervisor.recoveries().len(),
            3,
            "each recovery is recorded once its replacement is ready"
        );
        let _ = r.stop.send(true);
        r.run.await.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_declared_dead_is_killed_and_replaced() {
        let r = start(1, true);
        pass(Duration::from_millis(100)).await;
        let backend = r.supervisor.balancer.pool.all()[0].clone();
        backend.set_state(State::Dead);
        pass(Duration::from_millis(400)).await;
        assert!(r.actuator.fake("svc-1").killed.load(Ordering::SeqCst));
        assert_eq!(states(&r.supervisor), [("svc-2".into(), State::Alive)]);
        let _ = r.stop.send(true);
        r.run.await.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn with_healing_off_failed_replicas_stay_listed_dead_until_it_is_on_again() {
        let r = start(2, true);
        r.supervisor.set_healing(false);
        pass(Duration::from_millis(100)).await;
        r.supervisor.inject("svc-1", Fault::Crash);
        r.supervisor.balancer.pool.all()[1].set_state(State::Dead);
        pass(Duration::from_secs(5)).await;
        assert_eq!(
            states(&r.supervisor),
            [("svc-1".into(), State::Dead), ("svc-2".into(), State::Dead)]
        );
        assert_eq!(r.actuator.spawned().len(), 2, "nothing replaced");
        assert!(
            !r.actuator.fake("svc-2").killed.load(Ordering::SeqCst),
            "a hung replica is left as it is"
        );
        r.supervisor.set_healing(true);
        pass(Duration::from_secs(1)).await;
        assert_eq!(
            states(&r.supervisor),
            [
                ("svc-3".into(), State::Alive),
                ("svc-4".into(), State::Alive)
            ]
        );
        let _ = r.stop.send(true);
        r.run.await.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_never_ready_is_killed_after_30_s() {
        let r = start(1, false);
        pass(Duration::from_secs(29)).await;
        assert!(!r.actuator.fake("svc-1").killed.load(Ordering::SeqCst));
        pass(Duration::from_secs(2)).await;
        assert!(r.actuator.fake("svc-1").killed.load(Ordering::SeqCst));
        pass(Duration::from_millis(300)).await;
        assert_eq!(r.actuator.spawned().len(), 2, "replaced");
        let _ = r.stop.send(true);
        r.run.await.expect("run");
    }

    #[tokio::test(start_paused = true)]
    async fn scaling_down_drains_and_stops_the_newest_and_stop_stops_all() {
        let r = start(3, true);
        pass(Duration::from_millis(200)).await;
        assert_eq!(r.supervisor.balancer.pool.alive().len(), 3);
        r.supervisor.set_desired(1);
        pass(Duration::from_millis(200)).await;
        assert_eq!(r.supervisor.replicas(), ["svc-1"]);
        for id in ["svc-2", "svc-3"] {
            assert!(r.actuator.fake(id).stopped.load(Ordering::SeqCst), "{id}");
        }
        let _ = r.stop.send(true);
        r.run.await.expect("run");
        assert!(r.actuator.fake("svc-1").stopped.load(Ordering::SeqCst));
        assert!(r.supervisor.replicas().is_empty());
        assert!(r.supervisor.balancer.pool.all().is_empty());
    }
}
