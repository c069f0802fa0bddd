//! `scaler simulate`: policies against a load trace, on a model of replicas as queues,
//! deterministically (seeded) and in well under a second per policy and trace.
//!
//! The model: each user sends `rate_per_user` requests per second; each ready replica
//! serves up to `capacity_rps` (exponential service, balanced evenly: an M/M/1 queue
//! per replica, p99 = ln(100) / (mu - lambda_i)); load beyond capacity queues up and
//! waits; a new replica serves after `startup_s`. The demand at any time is the fewest
//! replicas whose p99 meets the SLO, which the SPEC RG elasticity metrics compare the
//! ready replicas against.
//!
//! With `think_s` set the load is a closed loop, as the loader's users are: a user
//! waiting for an answer sends nothing, and one answered sends again after thinking,
//! so arrivals are (users - requests in the system) / think time. Once the replicas
//! saturate, the arrivals a policy sees fall to what they serve (the effect the live
//! demo showed) while the demand, what the users would send if answered at once, does
//! not.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::policy::hpa::{Hpa, HpaConfig};
use crate::policy::kpa::{Kpa, KpaConfig};
use crate::policy::littles::{Littles, LittlesConfig};
use crate::policy::threshold::Threshold;
use crate::policy::{Bounds, Observation, Policy, Target};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Model {
    pub capacity_rps: f64,
    pub startup_s: f64,
    pub slo_p99_ms: f64,
    pub rate_per_user: f64,
    pub dt: f64,
    pub seed: u64,
    pub bounds_max: usize,
    /// Seconds a user thinks between an answer and its next request: 0 for an open
    /// loop (arrivals at `rate_per_user` whatever the latency).
    pub think_s: f64,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            capacity_rps: 100.0,
            startup_s: 5.0,
            slo_p99_ms: 250.0,
            rate_per_user: 1.0,
            dt: 0.25,
            seed: 756,
            bounds_max: 100,
            think_s: 0.0,
        }
    }
}

/// Users over time: a step function of `(from second, users)`, and its length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub duration_s: f64,
}

impl Trace {
    pub fn users_at(&self, t: f64) -> f64 {
        self.points
            .iter()
            .take_while(|(from, _)| *from <= t)
            .last()
            .map_or(0.0, |(_, u)| *u)
    }

    /// `cmpt756-steps`, `flash-crowd`, `burst`, `diurnal`.
    pub fn builtin(name: &str, seed: u64) -> Option<Self> {
        let steps = |points: Vec<(f64, f64)>, duration_s: f64| {
            Some(Trace {
                name: name.to_owned(),
                points,
                duration_s,
            })
        };
        match name {
            "cmpt756-steps" => steps(
                vec![
                    (0.0, 300.0),
                    (300.0, 600.0),
                    (600.0, 900.0),
                    (900.0, 1200.0),
                    (1200.0, 1500.0),
                    (1500.0, 300.0),
                ],
                1980.0,
            ),
            "flash-crowd" => steps(vec![(0.0, 600.0), (300.0, 3000.0), (360.0, 600.0)], 900.0),
            "burst" => steps(vec![(0.0, 600.0), (300.0, 1800.0), (310.0, 600.0)], 600.0),
            "diurnal" => {
                let mut rng = StdRng::seed_from_u64(seed);
                let points = (0..360)
                    .map(|i| {
                        let t = i as f64 * 10.0;
                        let wave = 900.0 - 600.0 * (std::f64::consts::TAU * t / 3600.0).cos();
                        (t, (wave * (1.0 + rng.random_range(-0.05..0.05))).round())
                    })
                    .collect();
                steps(points, 3600.0)
            }
            _ => None,
        }
    }

    /// A CSV of `second,users` lines (a header line is allowed).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some((t, u)) = line.split_once(',') else {
                continue;
            };
            match (t.trim().parse::<f64>(), u.trim().parse::<f64>()) {
                (Ok(t), Ok(u)) if t >= 0.0 && u >= 0.0 => points.push((t, u)),
                _ if i == 0 => {}
                _ => anyhow::bail!("{}:{}: expected `seconds,users`", path.display(), i + 1),
            }
        }
        anyhow::ensure!(
            !points.is_empty(),
            "{}: no `seconds,users` lines",
            path.display()
        );
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let duration_s = points.last().map_or(0.0, |p| p.0) + 300.0;
        Ok(Self {
            name: path.display().to_string(),
            points,
            duration_s,
        })
    }
}

pub const POLICIES: &[&str] = &["hpa", "kpa", "threshold", "littles"];

/// The policies as compared: HPA on 70% CPU (the thesis, CS230), KPA on 70 req/s per
/// replica (the same utilization), CS230's thresholds, and ours.
pub fn policy(name: &str, model: &Model) -> Option<Box<dyn Policy>> {
    let bounds = Bounds {
        min: 1,
        max: model.bounds_max,
    };
    Some(match name {
        "hpa" => Box::new(Hpa::new(HpaConfig::kubernetes_defaults(
            Target::Cpu(0.7),
            bounds,
        ))),
        "kpa" => Box::new(Kpa::new(KpaConfig::knative_defaults(
            Target::Rps(0.7 * model.capacity_rps),
            bounds,
        ))),
        "threshold" => Box::new(Threshold::cs230(bounds)),
        "littles" => Box::new(Littles::new(LittlesConfig::new(bounds))),
        _ => return None,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub trace: String,
    pub policy: String,
    pub slo_violation_s: f64,
    pub replica_s: f64,
    pub theta_u: f64,
    pub theta_o: f64,
    pub tau_u: f64,
    pub tau_o: f64,
    pub reversals: usize,
    /// Seconds from each rise of the load to enough ready replicas.
    pub time_to_capacity_s: Vec<f64>,
    #[serde(skip)]
    pub series: Vec<(f64, usize, f64)>,
}

/// A closed loop's arrivals as a share of the replicas' capacity once saturated.
const SATURATED: f64 = 0.98;

/// The fewest replicas whose p99 meets the SLO at `rps`.
pub fn demand(model: &Model, rps: f64) -> usize {
    let headroom = model.capacity_rps - (100f64).ln() / (model.slo_p99_ms / 1000.0);
    ((rps / headroom).ceil() as usize).max(1)
}

pub fn run(model: &Model, trace: &Trace, mut policy: Box<dyn Policy>) -> Outcome {
    let mut rng = StdRng::seed_from_u64(model.seed);
    let mu = model.capacity_rps;
    let slo = model.slo_p99_ms / 1000.0;
    let initial = demand(model, trace.users_at(0.0) * model.rate_per_user);
    let mut ready = initial;
    let mut starting: Vec<f64> = Vec::new();
    let (mut backlog, mut t, mut next_eval) = (0.0f64, 0.0f64, 0.0f64);
    let (mut replica_s, mut theta_u, mut theta_o, mut tau_u, mut tau_o) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut window_start, mut violation_s) = (0.0, 0.0);
    // (requests, wait, exponential rate) of each step of the current 10 s window.
    let mut window: Vec<(f64, f64, f64)> = Vec::new();
    let (mut last_direction, mut reversals) = (0i32, 0usize);
    let mut pending_rise: Option<f64> = None;
    let mut time_to_capacity = Vec::new();
    let mut acc = (0.0, 0.0, 0.0, 0.0, 0.0f64, 0usize); // rps, cpu, concurrency, mean, p99 max, samples
    let mut served = 0.0;
    let mut series = Vec::new();
    let mut last_users = trace.users_at(0.0);
    let closed = model.think_s > 0.0;
    while t < trace.duration_s {
        let users = trace.users_at(t);
        if users > last_users {
            pending_rise = Some(t);
        }
        last_users = users;
        starting.retain(|ready_at| {
            if *ready_at <= t {
                ready += 1;
                false
            } else {
                true
            }
        });
        let offered = users * model.rate_per_user;
        let noise = 1.0 + rng.random_range(-0.03..0.03);
        let capacity = ready as f64 * mu;
        let lambda = if closed && offered * noise > SATURATED * capacity {
            // Saturated: the replicas answer at their capacity, and the users who are
            // not thinking wait in the queue (N = X (Z + R)), so arrivals are capped
            // at what is answered and the queue is bounded by the users.
            let lambda = SATURATED * capacity;
            backlog = (users - lambda * model.think_s).max(0.0);
            lambda
        } else {
            let lambda = offered * noise;
            backlog = if closed {
                0.0
            } else {
                (backlog + (lambda - capacity) * model.dt).max(0.0)
            };
            lambda
        };
        let (p99, mean, cpu, wait, rate) = if ready == 0 {
            (10.0, 5.0, 1.0, 5.0, 1.0)
        } else {
            let rho = (lambda / capacity).min(0.999);
            let wait = backlog / capacity;
            let rate = mu * (1.0 - rho);
            (
                wait + (100f64).ln() / rate,
                wait + 1.0 / rate,
                if backlog > 0.0 { 1.0 } else { rho },
                wait,
                rate,
            )
        };
        window.push((lambda * model.dt, wait, rate));
        // In flight: the queue beyond capacity plus what is in service (Little's law).
        let in_flight = backlog + lambda.min(capacity) / rate;
        served += if backlog > 0.0 {
            capacity
        } else {
            lambda.min(capacity)
        };
        acc = (
            acc.0 + lambda,
            acc.1 + cpu,
            acc.2 + in_flight,
            acc.3 + mean,
            acc.4.max(p99),
            acc.5 + 1,
        );

        let total = ready + starting.len();
        replica_s += total as f64 * model.dt;
        // What the users want served: in a closed loop, what they would send if
        // answered at once, not the arrivals a saturated system lets through.
        let d = demand(model, if closed { offered } else { lambda }) as f64;
        let s = ready as f64;
        theta_u += (d - s).max(0.0) / d * model.dt;
        theta_o += (s - d).max(0.0) / d * model.dt;
        if s < d {
            tau_u += model.dt;
        } else if s > d {
            tau_o += model.dt;
        }
        if let Some(rise) = pending_rise
            && s >= d
        {
            time_to_capacity.push(t - rise);
            pending_rise = None;
        }
        if t + model.dt - window_start >= 10.0 - 1e-9 {
            if window_p99(&window) > slo {
                violation_s += 10.0;
            }
            window_start = t + model.dt;
            window.clear();
        }
        series.push((t, total, p99 * 1000.0));

        if t + 1e-9 >= next_eval {
            let n = acc.5.max(1) as f64;
            let observation = Observation {
                time: t,
                ready,
                total,
                rps: acc.0 / n,
                served_rps: served / n,
                concurrency: acc.2 / n,
                p50_ms: acc.3 / n * 1000.0 * 0.7,
                p99_ms: acc.4 * 1000.0,
                mean_ms: acc.3 / n * 1000.0,
                cpu: acc.1 / n,
                error_rate: 0.0,
            };
            acc = (0.0, 0.0, 0.0, 0.0, 0.0, 0);
            served = 0.0;
            let desired = policy.decide(&observation).desired;
            if desired != total {
                let direction = if desired > total { 1 } else { -1 };
                if last_direction != 0 && direction != last_direction {
                    reversals += 1;
                }
                last_direction = direction;
            }
            if desired > total {
                starting.extend(std::iter::repeat_n(t + model.startup_s, desired - total));
            } else {
                let mut remove = total - desired;
                while remove > 0 && starting.pop().is_some() {
                    remove -= 1;
                }
                ready -= remove.min(ready);
            }
            next_eval = t + policy.interval();
        }
        t += model.dt;
    }
    let span = trace.duration_s;
    Outcome {
        trace: trace.name.clone(),
        policy: policy.name().to_owned(),
        slo_violation_s: violation_s,
        replica_s: replica_s.round(),
        theta_u: 100.0 * theta_u / span,
        theta_o: 100.0 * theta_o / span,
        tau_u: 100.0 * tau_u / span,
        tau_o: 100.0 * tau_o / span,
        reversals,
        time_to_capacity_s: time_to_capacity,
        series,
    }
}

/// The p99 of all requests of a window: each step's requests wait `wait` and then take
/// an exponential time of rate `rate`; the p99 is where 1% of them are slower.
fn window_p99(steps: &[(f64, f64, f64)]) -> f64 {
    let total: f64 = steps.iter().map(|s| s.0).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let slower = |x: f64| -> f64 {
        steps
            .iter()
            .map(|(n, wait, rate)| {
                if x <= *wait {
                    *n
                } else {
                    n * (-rate * (x - wait)).exp()
                }
            })
            .sum::<f64>()
            / total
    };
    let (mut lo, mut hi) = (0.0, 120.0);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if slower(mid) > 0.01 {
            lo = mid
        } else {
            hi = mid
        }
    }
    hi
}

pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<14} {:<10} {:>9} {:>10} {:>7} {:>7} {:>7} {:>7} {:>9} {:>14}\n",
        "trace",
        "policy",
        "SLO viol s",
        "replica-s",
        "θU %",
        "θO %",
        "τU %",
        "τO %",
        "reversals",
        "to capacity s"
    );
    for o in outcomes {
        let ttc = if o.time_to_capacity_s.is_empty() {
            "-".to_owned()
        } else {
            let mean = o.time_to_capacity_s.iter().sum::<f64>() / o.time_to_capacity_s.len() as f64;
            let max = o.time_to_capacity_s.iter().copied().fold(0.0, f64::max);
            format!("{mean:.1} / {max:.1}")
        };
        out.push_str(&format!(
            "{:<14} {:<10} {:>9.0} {:>10.0} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>9} {:>14}\n",
            o.trace,
            o.policy,
            o.slo_violation_s,
            o.replica_s,
            o.theta_u,
            o.theta_o,
            o.tau_u,
            o.tau_o,
            o.reversals,
            ttc
        ));
    }
    out
}

/// Replicas (top) and p99 (bottom) over time, a line per policy (plain SVG).
pub fn chart(outcomes: &[Outcome], slo_ms: f64) -> String {
    let (w, h, pad) = (900.0, 520.0, 50.0);
    let span = outcomes
        .iter()
        .flat_map(|o| o.series.last())
        .map(|s| s.0)
        .fold(1.0, f64::max);
    let max_r = outcomes
        .iter()
        .flat_map(|o| &o.series)
        .map(|s| s.1)
        .max()
        .unwrap_or(1) as f64;
    let cap = slo_ms * 4.0;
    let colors = ["#1d4ed8", "#b91c1c", "#a16207", "#15803d", "#7e22ce"];
    let x = |t: f64| pad + t / span * (w - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    svg.push_str(&format!("<text x=\"{pad}\" y=\"20\">replicas (max {max_r})</text><text x=\"{pad}\" y=\"285\">p99 ms (SLO {slo_ms}, clipped at {cap})</text>"));
    for (i, o) in outcomes.iter().enumerate() {
        let color = colors[i % colors.len()];
        let step = (o.series.len() / 900).max(1);
        let reps: Vec<String> = o
            .series
            .iter()
            .step_by(step)
            .map(|s| format!("{:.1},{:.1}", x(s.0), 250.0 - s.1 as f64 / max_r * 220.0))
            .collect();
        let lat: Vec<String> = o
            .series
            .iter()
            .step_by(step)
            .map(|s| format!("{:.1},{:.1}", x(s.0), 500.0 - s.2.min(cap) / cap * 200.0))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            reps.join(" ")
        ));
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1\" points=\"{}\"/>",
            lat.join(" ")
        ));
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            w - 120.0,
            20.0 + 15.0 * i as f64,
            o.policy
        ));
    }
    let slo_y = 500.0 - slo_ms / cap * 200.0;
    svg.push_str(&format!("<line x1=\"{pad}\" x2=\"{}\" y1=\"{slo_y}\" y2=\"{slo_y}\" stroke=\"#999\" stroke-dasharray=\"4\"/></svg>", w - pad));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_deterministic() {
        let model = Model::default();
        let trace = Trace::builtin("burst", 1).expect("trace");
        let a = run(&model, &trace, policy("kpa", &model).expect("kpa"));
        let b = run(&model, &trace, policy("kpa", &model).expect("kpa"));
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            serde_json::to_string(&b).expect("json")
        );
    }

    /// One replica whatever happens, remembering what it was shown.
    struct Fixed(std::sync::Arc<std::sync::Mutex<Vec<Observation>>>);

    impl Policy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn interval(&self) -> f64 {
            1.0
        }
        fn decide(&mut self, o: &Observation) -> crate::policy::Decision {
            self.0.lock().expect("lock").push(*o);
            crate::policy::Decision {
                desired: 1,
                reason: String::new(),
            }
        }
    }

    #[test]
    fn a_closed_loop_lets_through_only_what_saturated_replicas_serve() {
        let closed = Model {
            think_s: 1.0,
            ..Model::default()
        };
        // 600 users on one replica (100 req/s), never scaled: open, 600 req/s arrive
        // and the queue grows without end; closed, arrivals fall to about what it
        // serves, and the queue holds the users instead.
        let trace = Trace {
            name: "600".into(),
            points: vec![(0.0, 3.0), (10.0, 600.0)],
            duration_s: 60.0,
        };
        let seen = |model: &Model| {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let _ = run(model, &trace, Box::new(Fixed(seen.clone())));
            seen.lock().expect("lock").clone()
        };
        let open = seen(&Model::default());
        let shut = seen(&closed);
        let late = |v: &[Observation]| v.iter().rev().take(10).map(|o| o.rps).sum::<f64>() / 10.0;
        assert!(late(&open) > 550.0, "open loop: {}", late(&open));
        assert!(
            (80.0..=130.0).contains(&late(&shut)),
            "closed loop: {}",
            late(&shut)
        );
        assert!(
            shut.last().expect("seen").concurrency > 400.0,
            "the users wait in the queue"
        );
    }

    #[test]
    fn demand_follows_the_slo() {
        let model = Model::default();
        // mu 100 req/s, p99 250 ms -> 81.6 req/s per replica at the SLO.
        assert_eq!(demand(&model, 300.0), 4);
        assert_eq!(demand(&model, 1500.0), 19);
    }
}

#[cfg(test)]
mod comparison {
    use super::*;

    /// The acceptance of our policy, on the deterministic model: at most half HPA's and
    /// 0.8x KPA's SLO-violation seconds, at most 1.05x the cheaper one's replica-seconds,
    /// and no more direction reversals than KPA, on the steps, flash-crowd and diurnal.
    #[test]
    fn littles_beats_hpa_and_kpa_on_the_reference_traces() {
        let model = Model::default();
        for name in ["cmpt756-steps", "flash-crowd", "diurnal"] {
            let trace = Trace::builtin(name, model.seed).expect("trace");
            let [hpa, kpa, ours] = ["hpa", "kpa", "littles"]
                .map(|p| run(&model, &trace, policy(p, &model).expect("policy")));
            let cheaper = hpa.replica_s.min(kpa.replica_s);
            assert!(
                ours.slo_violation_s <= 0.5 * hpa.slo_violation_s,
                "{name}: {} vs HPA {}",
                ours.slo_violation_s,
                hpa.slo_violation_s
            );
            assert!(
                ours.slo_violation_s <= 0.8 * kpa.slo_violation_s,
                "{name}: {} vs KPA {}",
                ours.slo_violation_s,
                kpa.slo_violation_s
            );
            assert!(
                ours.replica_s <= 1.05 * cheaper,
                "{name}: {} replica-s vs {cheaper}",
                ours.replica_s
            );
            assert!(
                ours.reversals <= kpa.reversals,
                "{name}: {} reversals vs KPA {}",
                ours.reversals,
                kpa.reversals
            );
        }
    }
}
