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
}

/// The shared limiter of one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CpuLimit {
    cores: f64,
    budget: Arc<Mutex<Budget>>,
}

/// CPU seconds this process has used, all threads.
fn process_cpu() -> f64 {
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

impl CpuLimit {
    /// `cores` must be positive and finite.
    pub fn new(cores: f64) -> Self {
        Self {
            cores,
            budget: Arc::new(Mutex::new(Budget {
                at: Instant::now(),
                cpu: process_cpu(),
                seconds: cores * PERIOD.as_secs_f64(),
            })),
        }
    }

    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// How long a new request has to wait now (zero when the budget is positive).
    fn owed(&self) -> Duration {
        let mut b = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let cpu = process_cpu();
        let earned = now.duration_since(b.at).as_secs_f64() * self.cores;
        b.seconds =
            (b.seconds + earned - (cpu - b.cpu).max(0.0)).min(self.cores * PERIOD.as_secs_f64());
        b.at = now;
        b.cpu = cpu;
        if b.seconds > 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.seconds / self.cores).max(Duration::from_millis(1))
        }
    }

    /// Waits until this process is within its limit.
    pub async fn admit(&self) {
        loop {
            let wait = self.owed();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The middleware: `from_fn_with_state(limit, cpu_limit::throttle)`.
pub async fn throttle(State(limit): State<CpuLimit>, request: Request, next: Next) -> Response {
    limit.admit().await;
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

    fn burn(d: Duration) {
        let start = process_cpu();
        let mut x = 0u64;
        while process_cpu() - start < d.as_secs_f64() {
            x = x.wrapping_mul(31).wrapping_add(7);
            std::hint::black_box(x);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_quarter_core_limit_keeps_busy_work_near_a_quarter_core() {
        let limit = CpuLimit::new(0.25);
        let (wall, cpu) = (Instant::now(), process_cpu());
        for _ in 0..40 {
            limit.admit().await;
            burn(Duration::from_millis(5));
        }
        let used = (process_cpu() - cpu) / wall.elapsed().as_secs_f64();
        // 200 ms of work at 0.25 cores takes about 0.8 s (less the saved-up period).
        assert!((0.2..0.32).contains(&used), "used {used:.3} cores");
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
