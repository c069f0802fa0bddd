//! The Kubernetes Horizontal Pod Autoscaler's algorithm (autoscaling/v2):
//! `desired = ceil(current * metric / target)`, no change within the tolerance,
//! not-ready replicas counted as idle when scaling up, a stabilization window per
//! direction (the highest recommendation of the last 300 s when scaling down), and rate
//! policies (Pods / Percent per period, selectPolicy Max / Min / Disabled).

use std::collections::VecDeque;

use super::{Bounds, Decision, Observation, Policy, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Pods { value: usize, period_s: f64 },
    Percent { value: f64, period_s: f64 },
}

impl Rule {
    fn period(self) -> f64 {
        match self {
            Self::Pods { period_s, .. } | Self::Percent { period_s, .. } => period_s,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub stabilization_s: f64,
    pub rules: Vec<Rule>,
    pub select: Select,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HpaConfig {
    pub target: Target,
    pub bounds: Bounds,
    pub tolerance_up: f64,
    pub tolerance_down: f64,
    pub sync_s: f64,
    pub up: Behavior,
    pub down: Behavior,
}

impl HpaConfig {
    /// Kubernetes' defaults: 15 s sync, 10% tolerance, scale up at most 100% or 4 pods
    /// per 15 s (whichever is more) at once, scale down 100% per 15 s after a 300 s
    /// stabilization window.
    pub fn kubernetes_defaults(target: Target, bounds: Bounds) -> Self {
        Self {
            target,
            bounds,
            tolerance_up: 0.1,
            tolerance_down: 0.1,
            sync_s: 15.0,
            up: Behavior {
                stabilization_s: 0.0,
                rules: vec![
                    Rule::Percent {
                        value: 100.0,
                        period_s: 15.0,
                    },
                    Rule::Pods {
                        value: 4,
                        period_s: 15.0,
                    },
                ],
                select: Select::Max,
            },
            down: Behavior {
                stabilization_s: 300.0,
                rules: vec![Rule::Percent {
                    value: 100.0,
                    period_s: 15.0,
                }],
                select: Select::Max,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hpa {
    pub config: HpaConfig,
    /// (time, recommendation) for the stabilization windows.
    recommendations: VecDeque<(f64, usize)>,
    /// (time, replicas change) for the rate policies.
    changes: VecDeque<(f64, i64)>,
}

impl Hpa {
    pub fn new(config: HpaConfig) -> Self {
        Self {
            config,
            recommendations: VecDeque::new(),
            changes: VecDeque::new(),
        }
    }

    /// The raw recommendation: ratio, tolerance and not-ready handling.
    pub fn recommend(&self, o: &Observation, current: usize) -> (usize, String) {
        let Some((value, target)) = self.config.target.ratio_parts(o) else {
            return (current, "no metric: keep".to_owned());
        };
        let ratio = value / target;
        let tolerance = if ratio >= 1.0 {
            self.config.tolerance_up
        } else {
            self.config.tolerance_down
        };
        if (ratio - 1.0).abs() <= tolerance {
            return (current, format!("ratio {ratio:.2} within tolerance"));
        }
        let mut ratio = ratio;
        if ratio > 1.0 && o.total > o.ready {
            // Not-ready replicas count as using nothing when scaling up.
            ratio = value * o.ready as f64 / (target * o.total as f64);
            if ratio <= 1.0 + tolerance {
                return (
                    current,
                    "scale-up cancelled: not-ready replicas would absorb it".to_owned(),
                );
            }
        }
        let desired = (current as f64 * ratio - 1e-9).ceil().max(0.0) as usize;
        (
            desired,
            format!("{value:.3} vs target {target:.3}: ratio {ratio:.2}"),
        )
    }

    /// Limits the change by the stabilization window and the rate policies.
    pub fn stabilize_and_limit(&mut self, now: f64, current: usize, recommended: usize) -> usize {
        self.recommendations.push_back((now, recommended));
        let longest = self
            .config
            .up
            .stabilization_s
            .max(self.config.down.stabilization_s);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| now - t > longest)
        {
            self.recommendations.pop_front();
        }
        let within = |w: f64| {
            self.recommendations
                .iter()
                .filter(move |(t, _)| now - t <= w)
                .map(|(_, r)| *r)
        };
        // Scale up to the lowest recommendation of the up window; down to the highest of the down window.
        let up_cap = within(self.config.up.stabilization_s)
            .min()
            .unwrap_or(recommended);
        let down_floor = within(self.config.down.stabilization_s)
            .max()
            .unwrap_or(recommended);
        let stabilized = if recommended > current {
            up_cap.max(current)
        } else if recommended < current {
            down_floor.min(current)
        } else {
            current
        };
        let limited = if stabilized > current {
            stabilized.min(self.limit(now, current, true))
        } else if stabilized < current {
            stabilized.max(self.limit(now, current, false))
        } else {
            current
        };
        if limited != current {
            self.changes
                .push_back((now, limited as i64 - current as i64));
        }
        limited
    }

    /// The most (up) or least (down) replicas the rate policies allow now.
    fn limit(&mut self, now: f64, current: usize, up: bool) -> usize {
        let behavior = if up {
            &self.config.up
        } else {
            &self.config.down
        };
        let longest = behavior
            .rules
            .iter()
            .map(|r| r.period())
            .fold(0.0, f64::max);
        while self
            .changes
            .front()
            .is_some_and(|(t, _)| now - t >= longest.max(1.0) * 2.0)
        {
            self.changes.pop_front();
        }
        if behavior.select == Select::Disabled {
            return current;
        }
        let limits = behavior.rules.iter().map(|rule| {
            let changed: i64 = self
                .changes
                .iter()
                .filter(|(t, c)| now - t < rule.period() && (*c > 0) == up)
                .map(|(_, c)| *c)
                .sum();
            let start = (current as i64 - changed).max(0) as f64;
            let step = match *rule {
                Rule::Pods { value, .. } => value as f64,
                Rule::Percent { value, .. } => (start * value / 100.0).ceil(),
            };
            if up {
                (start + step) as usize
            } else {
                (start - step).max(0.0) as usize
            }
        });
        let limits: Vec<usize> = limits.collect();
        let pick_max = (behavior.select == Select::Max) == up;
        if pick_max {
            limits.iter().copied().max().unwrap_or(current)
        } else {
            limits.iter().copied().min().unwrap_or(current)
        }
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        "hpa"
    }

    fn interval(&self) -> f64 {
        self.config.sync_s
    }

    fn decide(&mut self, o: &Observation) -> Decision {
        let current = o.total;
        let (recommended, why) = self.recommend(o, current);
        let recommended = self.config.bounds.clamp(recommended);
        let desired =
            self.config
                .bounds
                .clamp(self.stabilize_and_limit(o.time, current, recommended));
        let reason = if desired == recommended {
            why
        } else {
            format!("{why}; recommended {recommended}, limited to {desired}")
        };
        Decision { desired, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds { min: 1, max: 100 }
    }

    fn obs(time: f64, replicas: usize, cpu: f64) -> Observation {
        Observation {
            time,
            ready: replicas,
            total: replicas,
            cpu,
            ..Observation::default()
        }
    }

    #[test]
    fn the_ratio_doubles_or_halves_as_the_documentation_says() {
        // "if the current metric value is 200m, and the desired value is 100m, the number
        // of replicas will be doubled"; "if the current value is instead 50m, you'll halve".
        let hpa = Hpa::new(HpaConfig::kubernetes_defaults(Target::Cpu(0.1), bounds()));
        assert_eq!(hpa.recommend(&obs(0.0, 4, 0.2), 4).0, 8);
        assert_eq!(hpa.recommend(&obs(0.0, 4, 0.05), 4).0, 2);
    }

    #[test]
    fn nothing_changes_within_the_tolerance() {
        let hpa = Hpa::new(HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds()));
        assert_eq!(hpa.recommend(&obs(0.0, 10, 0.54), 10).0, 10, "ratio 1.08");
        assert_eq!(hpa.recommend(&obs(0.0, 10, 0.46), 10).0, 10, "ratio 0.92");
        assert_eq!(hpa.recommend(&obs(0.0, 10, 0.56), 10).0, 12, "ratio 1.12");
    }

    #[test]
    fn not_ready_replicas_count_as_idle_when_scaling_up() {
        let hpa = Hpa::new(HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds()));
        // 2 ready at 60%, 2 starting: (0.6 * 2) / (0.5 * 4) = 0.6 -> no scale-up.
        let o = Observation {
            ready: 2,
            total: 4,
            cpu: 0.6,
            ..Observation::default()
        };
        assert_eq!(hpa.recommend(&o, 4).0, 4);
    }

    #[test]
    fn scale_down_uses_the_highest_recommendation_of_the_last_five_minutes() {
        let mut hpa = Hpa::new(HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds()));
        assert_eq!(hpa.stabilize_and_limit(0.0, 10, 10), 10);
        assert_eq!(
            hpa.stabilize_and_limit(15.0, 10, 4),
            10,
            "10 was recommended 15 s ago"
        );
        assert_eq!(hpa.stabilize_and_limit(299.0, 10, 4), 10);
        assert_eq!(
            hpa.stabilize_and_limit(301.0, 10, 4),
            4,
            "the window has passed"
        );
    }

    #[test]
    fn the_documentation_scale_down_policy_example() {
        // behavior.scaleDown: Pods 4 per 60 s and Percent 10 per 60 s, selectPolicy Max:
        // from 80 replicas 8 go first (10% > 4); at 72, 10% is 7.2, rounded up to 8;
        // below 40 replicas the Pods policy (4) allows more.
        let mut config = HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds());
        config.down = Behavior {
            stabilization_s: 0.0,
            rules: vec![
                Rule::Pods {
                    value: 4,
                    period_s: 60.0,
                },
                Rule::Percent {
                    value: 10.0,
                    period_s: 60.0,
                },
            ],
            select: Select::Max,
        };
        let mut hpa = Hpa::new(config);
        assert_eq!(hpa.stabilize_and_limit(0.0, 80, 10), 72);
        assert_eq!(
            hpa.stabilize_and_limit(30.0, 72, 10),
            72,
            "still within the period of the last step"
        );
        assert_eq!(hpa.stabilize_and_limit(60.0, 72, 10), 64);
        let mut hpa = Hpa::new(hpa.config.clone());
        assert_eq!(
            hpa.stabilize_and_limit(0.0, 30, 10),
            26,
            "Pods 4 beats 10% of 30"
        );
    }

    #[test]
    fn select_min_and_disabled() {
        let mut config = HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds());
        config.up.select = Select::Min;
        let mut hpa = Hpa::new(config.clone());
        // Percent 100 (to 20) vs Pods 4 (to 14): Min picks 14.
        assert_eq!(hpa.stabilize_and_limit(0.0, 10, 40), 14);
        config.up.select = Select::Disabled;
        let mut hpa = Hpa::new(config);
        assert_eq!(hpa.stabilize_and_limit(0.0, 10, 40), 10);
    }

    #[test]
    fn scale_up_defaults_allow_double_or_four_more() {
        let mut hpa = Hpa::new(HpaConfig::kubernetes_defaults(Target::Cpu(0.5), bounds()));
        assert_eq!(
            hpa.stabilize_and_limit(0.0, 2, 30),
            6,
            "max(2 + 100%, 2 + 4)"
        );
        assert_eq!(
            hpa.stabilize_and_limit(15.0, 6, 30),
            12,
            "the next period: 6 + 100%"
        );
    }
}
