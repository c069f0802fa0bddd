//! A service's replicas as the balancer sees them, and the choice of one for a request.
//!
//! States follow CS230's pools: a replica is `Starting` until its readiness passes,
//! `Alive` while it answers, `Disconnected` (no traffic) after a failed health check
//! or a refused connection, back to `Alive` on the next good check, and `Dead` after
//! [`DEAD_AFTER`] failed rechecks — the supervisor then kills and replaces it.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rand::Rng;
use serde::Serialize;

/// Failed health checks in a row, while disconnected, that make a replica dead.
pub const DEAD_AFTER: u32 = 3;
/// The latency a replica is assumed to have before it has answered anything: none, so
/// that a new replica is tried at once and its average then climbs to the truth.
const INITIAL_LATENCY_US: u64 = 0;
/// How fast a latency estimate fades without new answers (e-folding time, in
/// microseconds). With two choices among three or more replicas, the slowest never wins
/// a comparison: without decay, one slow answer (a cold connection to a replica just
/// started) would keep it out of rotation for good. Decayed, it is tried again within
/// seconds and its estimate measured anew, as linkerd's peak-EWMA does.
const DECAY_US: f64 = 1_000_000.0;

/// Microseconds since the first call, on a monotonic clock.
fn now_us() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros()
        .min(u128::from(u64::MAX)) as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Alive,
    Disconnected,
    Dead,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Alive,
            2 => Self::Disconnected,
            _ => Self::Dead,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Alive => "alive",
            Self::Disconnected => "disconnected",
            Self::Dead => "dead",
        }
    }
}

/// Requests one replica is sent at once, as HAProxy's per-server `maxconn`: more wait
/// in the balancer, in arrival order. A replica given every request of a burst serves
/// them all a little at a time (an async server shares its CPU), so they all finish
/// late and together; their users then think and come back together, and the burst
/// repeats each round (1500 course users arriving at once, issue 18). Served in turn,
/// the first answers come back at once, the burst spreads out, and the replica keeps
/// as many connections open as it can serve. 32 is several times what keeps a replica's
/// cores busy.
pub const MAX_IN_FLIGHT: usize = 32;

/// [`MAX_IN_FLIGHT`], or `SCALER_MAX_IN_FLIGHT` (1 to 100000).
pub fn max_in_flight() -> usize {
    static VALUE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| count_from_env("SCALER_MAX_IN_FLIGHT", 100_000).unwrap_or(MAX_IN_FLIGHT))
}

/// A tuning count from the environment: `name`'s value if it is a number in 1..=`max`.
pub(crate) fn count_from_env(name: &str, max: usize) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=max).contains(n))
}

/// One replica behind a balancer.
#[derive(Debug)]
pub struct Backend {
    /// `music-3`, or the URL for a static backend.
    pub id: String,
    /// `http://127.0.0.1:41234`
    pub url: String,
    /// Where the proxy connects to it (`None`: not a plain `http://` URL, so every
    /// request to it fails as a refused connection would).
    pub(crate) address: Option<crate::proxy::upstream::Address>,
    /// Its idle keep-alive connections.
    pub(crate) idle: crate::proxy::upstream::Idle,
    /// Requests it may be sent at once ([`MAX_IN_FLIGHT`]); the rest wait their turn in
    /// the balancer, first come first served.
    pub(crate) slots: tokio::sync::Semaphore,
    state: AtomicU8,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Moving average of response times, in microseconds (a new replica starts at 0).
    latency_us: AtomicU64,
    /// When it was last updated ([`now_us`]): it decays from there.
    observed_us: AtomicU64,
}

impl Backend {
    pub fn new(id: impl Into<String>, url: impl Into<String>, state: State) -> Arc<Self> {
        let url: String = url.into();
        Arc::new(Self {
            id: id.into(),
            address: crate::proxy::upstream::Address::parse(&url),
            idle: crate::proxy::upstream::Idle::default(),
            slots: tokio::sync::Semaphore::new(max_in_flight()),
            url,
            state: AtomicU8::new(state as u8),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            latency_us: AtomicU64::new(INITIAL_LATENCY_US),
            observed_us: AtomicU64::new(now_us()),
        })
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Folds one response time into the moving average (weight 1/8 against the decayed
    /// estimate).
    pub fn observe(&self, elapsed: std::time::Duration) {
        self.observe_at(elapsed, now_us());
    }

    fn observe_at(&self, elapsed: std::time::Duration, now: u64) {
        let sample = elapsed.as_micros().min(u128::from(u32::MAX)) as u64;
        let prior = self.latency_at(now);
        self.latency_us
            .store((prior * 7 + sample) / 8, Ordering::Relaxed);
        self.observed_us.store(now, Ordering::Relaxed);
    }

    /// The latency estimate at `now`, decayed since its last update.
    fn latency_at(&self, now: u64) -> u64 {
        let age = now.saturating_sub(self.observed_us.load(Ordering::Relaxed)) as f64;
        (self.latency_us.load(Ordering::Relaxed) as f64 * (-age / DECAY_US).exp()) as u64
    }

    /// Expected cost of one more request: (requests in flight + 1) x average latency,
    /// as linkerd's peak-EWMA balancer weighs replicas.
    pub fn cost(&self) -> u64 {
        self.cost_at(now_us())
    }

    fn cost_at(&self, now: u64) -> u64 {
        (self.in_flight() as u64 + 1) * self.latency_at(now).max(1)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A health check passed; returns the state change, if any.
    pub fn check_passed(&self) -> Option<(State, State)> {
        self.failures.store(0, Ordering::Relaxed);
        let before = self.state();
        match before {
            State::Starting | State::Disconnected => {
                self.set_state(State::Alive);
                Some((before, State::Alive))
            }
            _ => None,
        }
    }

    /// A health check (or a connection) failed; returns the state change, if any.
    pub fn check_failed(&self) -> Option<(State, State)> {
        let before = self.state();
        match before {
            State::Alive => {
                self.failures.store(0, Ordering::Relaxed);
                self.set_state(State::Disconnected);
                Some((before, State::Disconnected))
            }
            State::Disconnected => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= DEAD_AFTER {
                    self.set_state(State::Dead);
                    Some((before, State::Dead))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// Decrements a backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Least-request by power of two choices.
    #[default]
    P2c,
    RoundRobin,
}

/// The replicas of one service.
#[derive(Debug, Default)]
pub struct Pool {
    backends: RwLock<Vec<Arc<Backend>>>,
    strategy: Strategy,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            backends: RwLock::default(),
            strategy,
            next: AtomicUsize::new(0),
        }
    }

    pub fn add(&self, backend: Arc<Backend>) {
        self.write().push(backend);
    }

    /// Removes a backend by id; returns it.
    pub fn remove(&self, id: &str) -> Option<Arc<Backend>> {
        let mut backends = self.write();
        let index = backends.iter().position(|b| b.id == id)?;
        Some(backends.remove(index))
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn alive(&self) -> Vec<Arc<Backend>> {
        self.all()
            .into_iter()
            .filter(|b| b.state() == State::Alive)
            .collect()
    }

    /// A replica for the next request, avoiding `exclude` (tried already) when it can.
    pub fn choose(&self, exclude: &[Arc<Backend>], rng: &mut impl Rng) -> Option<Arc<Backend>> {
        let backends = self
            .backends
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Candidates are counted and then indexed, not collected: no allocation per
        // request (pools are a handful of replicas).
        let candidates = || {
            backends
                .iter()
                .filter(|b| b.state() == State::Alive && !exclude.iter().any(|e| Arc::ptr_eq(e, b)))
        };
        let n = candidates().count();
        let pick = match self.strategy {
            Strategy::P2c => {
                let now = now_us();
                choose_p2c(
                    n,
                    |i| candidates().nth(i).map_or(u64::MAX, |b| b.cost_at(now)),
                    rng,
                )
            }
            Strategy::RoundRobin => (n > 0).then(|| self.next.fetch_add(1, Ordering::Relaxed) % n),
        };
        pick.and_then(|i| candidates().nth(i)).cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Backend>>> {
        self.backends
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Power of two choices among `n` candidates: two distinct ones at random, the one
/// with the lower `load` (the first on a tie). Returns the index of the pick.
pub fn choose_p2c<L: PartialOrd>(
    n: usize,
    load: impl Fn(usize) -> L,
    rng: &mut impl Rng,
) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn p2c_prefers_the_less_loaded_of_two() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let loads = [10usize, 0, 10, 10];
        let mut picks = [0usize; 4];
        for _ in 0..10_000 {
            picks[choose_p2c(loads.len(), |i| loads[i], &mut rng).expect("a pick")] += 1;
        }
        // Index 1 wins whenever it is drawn: about half of all draws.
        assert!(picks[1] > 4500, "{picks:?}");
        assert_eq!(choose_p2c(0, |_| 0, &mut rng), None);
        assert_eq!(choose_p2c(1, |_| 5, &mut rng), Some(0));
    }

    #[test]
    fn a_slow_answer_fades_so_the_replica_is_tried_again_within_seconds() {
        let (fast, slow) = (
            Backend::new("fast", "http://f", State::Alive),
            Backend::new("slow", "http://s", State::Alive),
        );
        let t0 = now_us();
        // One cold answer of 80 ms against steady 1 ms answers.
        slow.observe_at(std::time::Duration::from_millis(80), t0);
        for i in 0..50 {
            fast.observe_at(std::time::Duration::from_millis(1), t0 + i * 1000);
        }
        let fast_now = |t: u64| {
            fast.observe_at(std::time::Duration::from_millis(1), t);
            fast.cost_at(t)
        };
        assert!(slow.cost_at(t0 + 50_000) > 5 * fast_now(t0 + 50_000));
        // Fresh answers keep the fast one's estimate; the slow one's fades.
        let caught_up = (1..=10)
            .map(|s| t0 + s * 1_000_000)
            .find(|t| slow.cost_at(*t) <= fast_now(*t))
            .map(|t| (t - t0) / 1_000_000);
        assert!(
            caught_up.is_some_and(|s| s <= 5),
            "the slow replica competes again after {caught_up:?} s"
        );
    }

    #[test]
    fn health_moves_alive_disconnected_dead_as_cs230_described() {
        let b = Backend::new("m-1", "http://x", State::Starting);
        assert_eq!(b.check_passed(), Some((State::Starting, State::Alive)));
        assert_eq!(b.check_failed(), Some((State::Alive, State::Disconnected)));
        assert_eq!(b.check_passed(), Some((State::Disconnected, State::Alive)));
        b.check_failed();
        assert_eq!(b.check_failed(), None);
        assert_eq!(b.check_failed(), None);
        assert_eq!(b.check_failed(), Some((State::Disconnected, State::Dead)));
    }

    #[test]
    fn only_alive_backends_are_chosen() {
        let pool = Pool::new(Strategy::P2c);
        let starting = Backend::new("a", "http://a", State::Starting);
        let alive = Backend::new("b", "http://b", State::Alive);
        pool.add(starting);
        pool.add(alive.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(
                pool.choose(&[], &mut rng).map(|b| b.id.clone()),
                Some("b".to_owned())
            );
        }
        assert!(pool.choose(&[alive], &mut rng).is_none());
    }
}
