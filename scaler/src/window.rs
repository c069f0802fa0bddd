//! Live figures of one balancer: requests, errors and a latency histogram for each of
//! the last few seconds, for `/status` and the dashboard (and, later, the policies).
//! Lock-free: one slot per second, reused every [`SLOTS`] seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

const SLOTS: usize = 12;
/// Latency buckets: bucket `i` holds latencies below 2^(i/4) microseconds.
const BUCKETS: usize = 112;

#[derive(Debug)]
struct Slot {
    second: AtomicU64,
    count: AtomicU64,
    /// Requests that arrived in this second (answered or not yet).
    arrivals: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[derive(Debug, Default)]
pub struct Window {
    slots: [Slot; SLOTS],
}

/// Figures over a few whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Requests answered per second.
    pub requests_per_second: f64,
    /// Requests that arrived per second: the offered load, which a saturated service's
    /// answers understate.
    pub arrivals_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub error_rate: f64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_micros().max(1) as f64;
    ((us.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
}

fn upper_ms(bucket: usize) -> f64 {
    2f64.powf(bucket as f64 / 4.0) / 1000.0
}

impl Window {
    pub fn record(&self, latency: Duration, error: bool) {
        self.record_at(now_secs(), latency, error);
    }

    /// Counts a request as it arrives.
    pub fn arrive(&self) {
        self.slot(now_secs())
            .arrivals
            .fetch_add(1, Ordering::Relaxed);
    }

    fn record_at(&self, second: u64, latency: Duration, error: bool) {
        let slot = self.slot(second);
        slot.count.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.buckets[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The slot of `second`, cleared if it last held an older second.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.count.store(0, Ordering::Relaxed);
            slot.arrivals.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for b in &slot.buckets {
                b.store(0, Ordering::Relaxed);
            }
        }
        slot
    }

    /// The `seconds` whole seconds before the current one.
    pub fn summary(&self, seconds: u64) -> Summary {
        self.summary_at(now_secs(), seconds)
    }

    fn summary_at(&self, now: u64, seconds: u64) -> Summary {
        let seconds = seconds.clamp(1, SLOTS as u64 - 1);
        let wanted = (now - seconds)..now;
        let mut counts = [0u64; BUCKETS];
        let (mut total, mut arrivals, mut errors) = (0u64, 0u64, 0u64);
        for slot in &self.slots {
            if wanted.contains(&slot.second.load(Ordering::Acquire)) {
                total += slot.count.load(Ordering::Relaxed);
                arrivals += slot.arrivals.load(Ordering::Relaxed);
                errors += slot.errors.load(Ordering::Relaxed);
                for (c, b) in counts.iter_mut().zip(&slot.buckets) {
                    *c += b.load(Ordering::Relaxed);
                }
            }
        }
        let in_buckets: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if in_buckets == 0 {
                return 0.0;
            }
            let target = (q * in_buckets as f64).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return upper_ms(i);
                }
            }
            upper_ms(BUCKETS - 1)
        };
        let mean = if in_buckets == 0 {
            0.0
        } else {
            counts
                .iter()
                .enumerate()
                .map(|(i, c)| upper_ms(i) * *c as f64)
                .sum::<f64>()
                / in_buckets as f64
        };
        Summary {
            requests_per_second: total as f64 / seconds as f64,
            arrivals_per_second: arrivals as f64 / seconds as f64,
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
            mean_ms: mean,
            error_rate: if total == 0 {
                0.0
            } else {
                errors as f64 / total as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_cover_whole_past_seconds() {
        let w = Window::default();
        for s in 100..105 {
            for i in 0..100 {
                let slow = i >= 98;
                w.record_at(s, Duration::from_millis(if slow { 200 } else { 2 }), slow);
            }
        }
        w.record_at(105, Duration::from_secs(5), true); // the current second is not counted
        for _ in 0..150 {
            w.slot(104).arrivals.fetch_add(1, Ordering::Relaxed);
        }
        let s = w.summary_at(105, 5);
        assert_eq!(s.requests_per_second, 100.0);
        assert_eq!(
            s.arrivals_per_second, 30.0,
            "arrivals are counted on their own"
        );
        assert!((1.9..2.5).contains(&s.p50_ms), "{s:?}");
        assert!((190.0..240.0).contains(&s.p99_ms), "{s:?}");
        assert!((s.error_rate - 0.02).abs() < 1e-9, "{s:?}");
        // Twelve seconds later the slots are reused and the old data is gone.
        w.record_at(117, Duration::from_millis(1), false);
        assert_eq!(w.summary_at(118, 5).requests_per_second, 0.2);
    }
}
