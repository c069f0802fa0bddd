//! CS230's CPU-load simulator: a replica that really burns CPU on request, so scaling on
//! CPU can be watched. One thread alternates busy spinning and sleeping in 50 ms periods;
//! the busy share (the duty) follows the chosen profile in small steps every 500 ms.
//!
//! - `high`: from at least 40% climbs by 8 points a step to 72% of one core, and holds;
//! - `medium`: moves 5 points a step to 25%, and holds;
//! - `low`: starts at 50% and falls 5 points a step to 5%, and holds;
//! - `off`: stops at once (the thread sleeps until the next profile).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kit::cpu_limit::thread_cpu;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    High,
    Medium,
    Low,
    Off,
}

/// How often the duty moves one step.
pub const STEP: Duration = Duration::from_millis(500);
/// One busy-then-idle period of the burner.
const PERIOD: Duration = Duration::from_millis(50);

impl Profile {
    /// The duty right after switching to this profile from `current`.
    pub fn start(self, current: f64) -> f64 {
        match self {
            Self::High => current.max(0.40),
            Self::Medium => current,
            Self::Low => 0.50,
            Self::Off => 0.0,
        }
    }

    /// The duty one step later.
    pub fn step(self, duty: f64) -> f64 {
        let toward = |target: f64, by: f64| {
            if duty < target {
                (duty + by).min(target)
            } else {
                (duty - by).max(target)
            }
        };
        match self {
            Self::High => toward(0.72, 0.08),
            Self::Medium => toward(0.25, 0.05),
            Self::Low => toward(0.05, 0.05),
            Self::Off => 0.0,
        }
    }
}

#[derive(Debug)]
struct State {
    profile: Profile,
    duty: f64,
}

/// The simulator of one replica. The burner thread starts with the first profile.
#[derive(Debug, Clone)]
pub struct CpuLoad {
    shared: Arc<(Mutex<State>, Condvar)>,
    started: Arc<std::sync::Once>,
}

impl Default for CpuLoad {
    fn default() -> Self {
        Self {
            shared: Arc::new((
                Mutex::new(State {
                    profile: Profile::Off,
                    duty: 0.0,
                }),
                Condvar::new(),
            )),
            started: Arc::new(std::sync::Once::new()),
        }
    }
}

impl CpuLoad {
    /// Switches profile; the duty starts moving from where it is.
    pub fn set(&self, profile: Profile) {
        let (lock, wake) = &*self.shared;
        {
            let mut state = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.duty = profile.start(state.duty);
            state.profile = profile;
        }
        wake.notify_all();
        if profile != Profile::Off {
            let shared = self.shared.clone();
            self.started.call_once(move || {
                let spawned = std::thread::Builder::new()
                    .name("cpu-load".into())
                    .spawn(move || burn(&shared));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "could not start the CPU load thread");
                }
            });
        }
    }

    /// The current profile and the share of one core it is burning (0..=1).
    pub fn current(&self) -> (Profile, f64) {
        let state = self
            .shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (state.profile, state.duty)
    }
}

fn burn(shared: &(Mutex<State>, Condvar)) {
    let (lock, wake) = shared;
    let mut last_step = Instant::now();
    loop {
        let duty = {
            let mut state = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while state.profile == Profile::Off {
                state = wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                last_step = Instant::now();
            }
            if last_step.elapsed() >= STEP {
                state.duty = state.profile.step(state.duty);
                last_step = Instant::now();
            }
            state.duty
        };
        // The busy part is CPU time, not wall time: on a shared machine the thread still
        // burns its share of a core, as far as the period allows.
        let period_start = Instant::now();
        let (cpu_start, busy) = (thread_cpu(), PERIOD.as_secs_f64() * duty);
        let mut x = 0u64;
        while thread_cpu() - cpu_start < busy && period_start.elapsed() < PERIOD {
            for i in 0..1000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        }
        std::hint::black_box(x);
        if let Some(idle) = PERIOD.checked_sub(period_start.elapsed()) {
            std::thread::sleep(idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(profile: Profile, from: f64, steps: usize) -> Vec<f64> {
        let mut duty = profile.start(from);
        let mut seen = vec![duty];
        for _ in 0..steps {
            duty = profile.step(duty);
            seen.push((duty * 100.0).round() / 100.0);
        }
        seen
    }

    #[test]
    fn high_climbs_in_small_steps_and_holds_between_70_and_75_percent() {
        let path = walk(Profile::High, 0.0, 10);
        assert_eq!(path[0], 0.40);
        assert!(
            path.windows(2)
                .all(|w| w[1] - w[0] <= 0.081 && w[1] >= w[0]),
            "{path:?}"
        );
        assert!(
            (0.70..=0.75).contains(path.last().expect("steps")),
            "{path:?}"
        );
    }

    #[test]
    fn medium_settles_at_a_quarter_from_above_or_below() {
        assert_eq!(*walk(Profile::Medium, 0.0, 10).last().expect("steps"), 0.25);
        assert_eq!(
            *walk(Profile::Medium, 0.72, 12).last().expect("steps"),
            0.25
        );
    }

    #[test]
    fn low_starts_near_half_and_falls_to_a_few_percent() {
        let path = walk(Profile::Low, 0.0, 12);
        assert_eq!(path[0], 0.50);
        assert!(path.windows(2).all(|w| w[1] <= w[0]), "{path:?}");
        assert!(
            (0.01..=0.10).contains(path.last().expect("steps")),
            "{path:?}"
        );
    }

    #[test]
    fn off_stops_at_once() {
        assert_eq!(Profile::Off.start(0.72), 0.0);
    }
}
