//! CS230's rule: above 70% CPU add a replica, below 10% remove one, within bounds.

use super::{Bounds, Decision, Observation, Policy};

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub high: f64,
    pub low: f64,
    pub bounds: Bounds,
    pub interval_s: f64,
}

impl Threshold {
    pub fn cs230(bounds: Bounds) -> Self {
        Self {
            high: 0.7,
            low: 0.1,
            bounds,
            interval_s: 5.0,
        }
    }
}

impl Policy for Threshold {
    fn name(&self) -> &str {
        "threshold"
    }

    fn interval(&self) -> f64 {
        self.interval_s
    }

    fn decide(&mut self, o: &Observation) -> Decision {
        let (desired, reason) = if o.cpu > self.high {
            (
                o.total + 1,
                format!("CPU {:.0}% > {:.0}%", o.cpu * 100.0, self.high * 100.0),
            )
        } else if o.cpu < self.low {
            (
                o.total.saturating_sub(1),
                format!("CPU {:.0}% < {:.0}%", o.cpu * 100.0, self.low * 100.0),
            )
        } else {
            (o.total, "CPU within thresholds".to_owned())
        };
        Decision {
            desired: self.bounds.clamp(desired),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_per_breach_within_bounds() {
        let mut t = Threshold::cs230(Bounds { min: 1, max: 3 });
        let o = |total, cpu| Observation {
            total,
            ready: total,
            cpu,
            ..Observation::default()
        };
        assert_eq!(t.decide(&o(2, 0.9)).desired, 3);
        assert_eq!(t.decide(&o(3, 0.9)).desired, 3, "max");
        assert_eq!(t.decide(&o(2, 0.05)).desired, 1);
        assert_eq!(t.decide(&o(1, 0.05)).desired, 1, "min");
        assert_eq!(t.decide(&o(2, 0.5)).desired, 2);
    }
}
