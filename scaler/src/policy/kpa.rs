//! Knative's Pod Autoscaler: concurrency (or RPS) averaged over a 60 s stable window
//! and a 6 s panic window; panic mode starts when the panic window asks for at least
//! twice the ready replicas, never scales down while it lasts, and ends once a stable
//! window has passed without that. Scale-up is bounded by 1000x the ready replicas per
//! evaluation, scale-down by half.

use std::collections::VecDeque;

use super::{Bounds, Decision, Observation, Policy, Target};

#[derive(Debug, Clone, PartialEq)]
pub struct KpaConfig {
    /// `Concurrency` or `Rps` per replica.
    pub target: Target,
    pub bounds: Bounds,
    pub stable_window_s: f64,
    pub panic_window_s: f64,
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub tick_s: f64,
}

impl KpaConfig {
    pub fn knative_defaults(target: Target, bounds: Bounds) -> Self {
        Self {
            target,
            bounds,
            stable_window_s: 60.0,
            panic_window_s: 6.0,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            tick_s: 2.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Kpa {
    pub config: KpaConfig,
    samples: VecDeque<(f64, f64)>,
    panic_since: Option<f64>,
    panic_peak: usize,
}

impl Kpa {
    pub fn new(config: KpaConfig) -> Self {
        Self {
            config,
            samples: VecDeque::new(),
            panic_since: None,
            panic_peak: 0,
        }
    }

    pub fn in_panic(&self) -> bool {
        self.panic_since.is_some()
    }

    fn average(&self, now: f64, window: f64) -> f64 {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| now - t < window)
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    }
}

impl Policy for Kpa {
    fn name(&self) -> &str {
        "kpa"
    }

    fn interval(&self) -> f64 {
        self.config.tick_s
    }

    fn decide(&mut self, o: &Observation) -> Decision {
        let (total_metric, target) = match self.config.target {
            Target::Rps(t) => (o.rps, t),
            Target::Concurrency(t) => (o.concurrency, t),
            other => (
                other.ratio_parts(o).map_or(0.0, |(v, _)| v) * o.ready.max(1) as f64,
                other.ratio_parts(o).map_or(1.0, |(_, t)| t),
            ),
        };
        let now = o.time;
        self.samples.push_back((now, total_metric));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now - t >= self.config.stable_window_s)
        {
            self.samples.pop_front();
        }
        let ready = o.ready.max(1) as f64;
        let stable = (self.average(now, self.config.stable_window_s) / target).ceil();
        let panic = (self.average(now, self.config.panic_window_s) / target).ceil();
        let max_up = (ready * self.config.max_scale_up_rate).ceil();
        let max_down = (ready / self.config.max_scale_down_rate).floor();
        let clamp = |n: f64| n.clamp(max_down, max_up) as usize;

        if panic / ready >= self.config.panic_threshold {
            if self.panic_since.is_none() {
                self.panic_peak = o.total;
            }
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| now - since >= self.config.stable_window_s)
        {
            self.panic_since = None;
            self.panic_peak = 0;
        }
        let (desired, reason) = if self.panic_since.is_some() {
            // In panic: follow the short window up, never down.
            self.panic_peak = self.panic_peak.max(clamp(panic));
            (self.panic_peak, format!("panic: 6 s window wants {panic}"))
        } else {
            (clamp(stable), format!("stable: 60 s window wants {stable}"))
        };
        Decision {
            desired: self.config.bounds.clamp(desired),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpa() -> Kpa {
        Kpa::new(KpaConfig::knative_defaults(
            Target::Concurrency(10.0),
            Bounds { min: 1, max: 100 },
        ))
    }

    fn at(time: f64, ready: usize, concurrency: f64) -> Observation {
        Observation {
            time,
            ready,
            total: ready,
            concurrency,
            ..Observation::default()
        }
    }

    #[test]
    fn a_burst_enters_panic_and_scales_on_the_short_window() {
        let mut k = kpa();
        for t in 0..30 {
            k.decide(&at(t as f64 * 2.0, 2, 20.0));
        }
        assert!(!k.in_panic());
        // 4x the concurrency: the 6 s window wants 8 >= 2 x 2 ready.
        let d = k.decide(&at(60.0, 2, 80.0));
        assert!(k.in_panic(), "{d:?}");
        assert!(d.desired >= 4, "{d:?}");
    }

    #[test]
    fn panic_never_scales_down_and_ends_after_a_stable_window() {
        let mut k = kpa();
        k.decide(&at(0.0, 1, 100.0));
        assert!(k.in_panic());
        let peak = k.decide(&at(2.0, 1, 100.0)).desired;
        // Load gone: still in panic, holding the peak.
        let during = k.decide(&at(10.0, peak, 1.0));
        assert_eq!(during.desired, peak);
        assert!(k.in_panic());
        // 60 s after the last panic condition the stable window takes over (and halves at most).
        let after = k.decide(&at(63.0, peak, 1.0));
        assert!(!k.in_panic());
        assert!(
            after.desired < peak && after.desired >= peak / 2,
            "{after:?} from {peak}"
        );
    }
}
