//! `CPU_LIMIT`: a replica's CPU limit in cores, enforced in the process the way a
//! container's CFS quota is (Kubernetes `resources.limits.cpu`), for replicas that share
//! one machine's cores. The process earns `cores` CPU-seconds per second (at most one
//! 100 ms period's worth saved up); every request to the service's own routes first
//! waits until the CPU the process has used since is paid for. Work already running is
//! not stopped, so an overrun becomes a debt that later requests wait off. The probes
//! and `/metrics` are not throttled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use nix::time::{ClockId, clock_gettime};

/// How much unused CPU time may be saved up: one CFS period.
const PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Budget {
    at: Instant,
    cpu: f64,
    /// CPU-seconds the process may still use; negative is a debt.
    seconds: f64,
    /// CPU-seconds set aside for admitted requests still running.
    reserved: f64,
    /// Estimated CPU-seconds per request (process CPU over requests finished).
    cost: f64,
    finished: u64,
    cost_mark: (u64, f64),
}

impl Budget {
    /// Earns CPU time for the time passed, pays for the CPU used since.
    fn refresh(&mut self, cores: f64) {
        let now = Instant::now();
        let cpu = process_cpu();
        let earned = now.duration_since(self.at).as_secs_f64() * cores;
        self.seconds =
            (self.seconds + earned - (cpu - self.cpu).max(0.0)).min(cores * PERIOD.as_secs_f64());
        self.at = now;
        self.cpu = cpu;
        let (done, spent) = self.cost_mark;
        if self.finished >= done + 16 {
            let sample = (cpu - spent).max(0.0) / (self.finished - done) as f64;
            self.cost = (self.cost * 0.7 + sample * 0.3).clamp(MIN_COST, MAX_COST);
            self.cost_mark = (self.finished, cpu);
        }
    }
}

const MIN_COST: f64 = 10e-6;
const MAX_COST: f64 = 0.1;

/// The shared limiter of one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CpuLimit {
    cores: f64,
    budget: Arc<Mutex<Budget>>,
    /// Waiters queue here (first come, first served); only the first one polls the
    /// budget, so hundreds of waiting requests do not spend the CPU they wait for.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// An admitted request's reservation, given back when it finishes (or is dropped).
#[derive(Debug)]
pub struct Ticket {
    limit: CpuLimit,
    cost: f64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut b = self.limit.lock();
        b.reserved = (b.reserved - self.cost).max(0.0);
        b.finished += 1;
    }
}

/// CPU seconds this process has used, all threads.
fn process_cpu() -> f64 {
    cpu_seconds(ClockId::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu() -> f64 {
    cpu_seconds(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_seconds(clock: ClockId) -> f64 {
    clock_gettime(clock).map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

impl CpuLimit {
    /// `cores` must be positive and finite.
    pub fn new(cores: f64) -> Self {
        let cpu = process_cpu();
        Self {
            cores,
            budget: Arc::new(Mutex::new(Budget {
                at: Instant::now(),
                cpu,
                seconds: cores * PERIOD.as_secs_f64(),
                reserved: 0.0,
                cost: 1e-3,
                finished: 0,
                cost_mark: (0, cpu),
            })),
            turn: Arc::default(),
        }
    }

    pub fn cores(&self) -> f64 {
        self.cores
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits the request now, setting its expected CPU aside, or says how long to wait.
    fn try_admit(&self) -> Result<Ticket, Duration> {
        let mut b = self.lock();
        b.refresh(self.cores);
        let free = b.seconds - b.reserved;
        if free > 0.0 {
            let cost = b.cost;
            b.reserved += cost;
            drop(b);
            Ok(Ticket {
                limit: self.clone(),
                cost,
            })
        } else {
            Err(Duration::from_secs_f64(-free / self.cores).max(Duration::from_millis(1)))
        }
    }

    /// Waits until this process is within its limit; hold the ticket while the request runs.
    /// Each admission sets the expected CPU of a request aside, so waiters woken together
    /// do not all pass on the same budget.
    pub async fn admit(&self) -> Ticket {
        if let Ok(ticket) = self.try_admit() {
            return ticket;
        }
        let _turn = self.turn.lock().await;
        loop {
            match self.try_admit() {
                Ok(ticket) => return ticket,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// The middleware: `from_fn_with_state(limit, cpu_limit::throttle)`.
pub async fn throttle(State(limit): State<CpuLimit>, request: Request, next: Next) -> Response {
    let _ticket = limit.admit().await;
    next.run(request).await
}

/// `CPU_LIMIT` values: positive cores, e.g. `0.5`.
pub fn parse_cores(text: &str) -> Result<f64, String> {
    let cores: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of cores (e.g. 0.5)"))?;
    if cores.is_finite() && cores > 0.0 {
        Ok(cores)
    } else {
        Err(format!("`{text}`: the limit must be above 0 cores"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_cpu() -> f64 {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
    }

    fn burn(d: Duration) {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < d.as_secs_f64() {
            x = x.wrapping_mul(31).wrapping_add(7);
            std::hint::black_box(x);
        }
    }

    /// One test, so that no other test burns this process's CPU meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quarter_core_limit_holds_for_serial_and_simultaneous_requests() {
        let limit = CpuLimit::new(0.25);
        let (wall, cpu) = (Instant::now(), process_cpu());
        for _ in 0..40 {
            let _ticket = limit.admit().await;
            burn(Duration::from_millis(5));
        }
        let used = (process_cpu() - cpu) / wall.elapsed().as_secs_f64();
        // 200 ms of work at 0.25 cores takes about 0.8 s (less the saved-up period).
        assert!((0.2..0.32).contains(&used), "serial: used {used:.3} cores");

        // Waiters woken together do not all pass on one budget.
        let (wall, cpu) = (Instant::now(), process_cpu());
        // 40 requests arrive at once; each burns 5 ms on the blocking pool.
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move {
                    let _ticket = limit.admit().await;
                    tokio::task::spawn_blocking(|| burn(Duration::from_millis(5)))
                        .await
                        .expect("burn");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let used = (process_cpu() - cpu) / wall.elapsed().as_secs_f64();
        assert!(
            (0.15..0.35).contains(&used),
            "simultaneous: used {used:.3} cores"
        );

        // 2000 small requests at once: waiting must not eat the budget (no livelock).
        let wall = Instant::now();
        let tasks: Vec<_> = (0..2000)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move {
                    let _ticket = limit.admit().await;
                    burn(Duration::from_micros(100));
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.expect("task");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("2000 small requests starved (waiting spent the budget)");
        // 0.2 s of work at 0.25 cores: about 0.8 s.
        let took = wall.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "2000 small requests took {took:?}"
        );
    }

    #[test]
    fn limits_parse_or_say_why_not() {
        assert_eq!(parse_cores("0.5"), Ok(0.5));
        assert!(parse_cores("0").is_err());
        assert!(parse_cores("-1").is_err());
        assert!(parse_cores("half").is_err());
        assert!(parse_cores("inf").is_err());
    }
}
