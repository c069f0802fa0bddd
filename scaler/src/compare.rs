//! `scaler demo --compare littles,hpa,kpa`: the same demo trace once per policy, back to
//! back (and `--runs` times over), and one report of the simulator's metrics measured
//! live: SLO-violation seconds, replica-seconds, scale reversals and time to capacity
//! per policy, with each run's latency and replica charts side by side.
//!
//! Live, the metrics are read off what the demo records:
//! - **SLO-violation seconds**: seconds of the load whose p99 (the loader's, over that
//!   second's answers) is above the SLO;
//! - **replica-seconds**: the replicas asked for (ready and starting) of user, music
//!   and playlist, integrated over the load, as the simulator counts them;
//! - **reversals**: per service, a scaling change in the other direction than the one
//!   before it, summed over the three services;
//! - **time to capacity**: for each rise of the users (steps 1 to 5), the seconds from
//!   the rise until the p99 is back under the SLO for [`SETTLED_S`] seconds in a row
//!   (0 if it never left); a rise that never settles within its step counts as the
//!   whole step and is marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::demo::{self, DemoArgs, DemoReport, Line, SCALED, STEPS, chart, escape, scaled_up};

/// Seconds in a row under the SLO that count as "at capacity again".
pub const SETTLED_S: usize = 3;

/// One policy's run, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveOutcome {
    pub policy: String,
    /// 1-based run of the comparison.
    pub run: usize,
    pub slo_violation_s: f64,
    pub replica_s: f64,
    pub reversals: usize,
    /// Per rise of the users: seconds to capacity, and whether it settled within its step.
    pub time_to_capacity_s: Vec<(f64, bool)>,
    pub requests: usize,
    pub failed: usize,
    /// The p99 of the whole run's per-second p99s (a summary, not the loader's p99).
    pub p99_of_seconds_ms: f64,
}

impl LiveOutcome {
    pub fn mean_time_to_capacity(&self) -> f64 {
        let n = self.time_to_capacity_s.len().max(1) as f64;
        self.time_to_capacity_s.iter().map(|(s, _)| s).sum::<f64>() / n
    }

    pub fn unsettled(&self) -> usize {
        self.time_to_capacity_s.iter().filter(|(_, ok)| !ok).count()
    }
}

/// The live metrics of one demo report.
pub fn outcome(r: &DemoReport, run: usize) -> LiveOutcome {
    let slo = r.slo_p99_ms;
    let span = r.span();
    let over = |p99: f64| p99 > slo;
    let slo_violation_s = r
        .load
        .iter()
        .filter(|s| s.requests > 0 && over(s.p99_ms))
        .count() as f64;

    // Replicas asked for, held from one sample to the next, over 0..span.
    let asked = |s: &demo::Sample| -> f64 {
        SCALED
            .iter()
            .map(|name| s.replicas.get(*name).map_or(0, |(_, desired)| *desired) as f64)
            .sum()
    };
    let samples: Vec<&demo::Sample> = r.samples.iter().filter(|s| s.t < span).collect();
    let mut replica_s = 0.0;
    for (i, sample) in samples.iter().enumerate() {
        let from = sample.t.max(0.0);
        let to = samples.get(i + 1).map_or(span, |next| next.t.min(span));
        if to > from {
            replica_s += asked(sample) * (to - from);
        }
    }

    let mut reversals = 0;
    for service in SCALED {
        let mut last: Option<bool> = None;
        for e in r
            .events
            .iter()
            .filter(|e| e.kind == "scaled" && e.service == service)
        {
            if let Some(up) = scaled_up(&e.detail) {
                if last.is_some_and(|previous| previous != up) {
                    reversals += 1;
                }
                last = Some(up);
            }
        }
    }

    let p99_at: BTreeMap<u64, f64> = r
        .load
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| (s.second, s.p99_ms))
        .collect();
    let step = r.step_s;
    let time_to_capacity_s = (1..STEPS.len())
        .map(|i| {
            let (from, to) = ((i as f64 * step) as u64, ((i + 1) as f64 * step) as u64);
            let mut run_under = 0;
            for second in from..to {
                // A second without answers says nothing either way.
                let Some(p99) = p99_at.get(&second) else {
                    continue;
                };
                if over(*p99) {
                    run_under = 0;
                    continue;
                }
                run_under += 1;
                if run_under == SETTLED_S {
                    let first = second + 1 - SETTLED_S as u64;
                    return ((first - from) as f64, true);
                }
            }
            ((to - from) as f64, false)
        })
        .collect();

    let mut p99s: Vec<f64> = p99_at.values().copied().collect();
    p99s.sort_by(f64::total_cmp);
    let p99_of_seconds_ms = p99s
        .get(((p99s.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    LiveOutcome {
        policy: r.policy.clone(),
        run,
        slo_violation_s,
        replica_s: replica_s.round(),
        reversals,
        time_to_capacity_s,
        requests: r.requests,
        failed: r.failed,
        p99_of_seconds_ms,
    }
}

/// `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub slo_p99_ms: f64,
    pub step_s: f64,
    pub cpu_limit: f64,
    pub policies: Vec<String>,
    pub outcomes: Vec<LiveOutcome>,
}

/// Whether littles met the bar against hpa and kpa in one run: at most 0.5x
/// HPA's and 0.8x KPA's SLO-violation seconds, at no more than 1.05x the replica-seconds
/// of the cheaper of the two. `None` when the run lacks one of the three.
pub fn verdict(outcomes: &[&LiveOutcome]) -> Option<Verdict> {
    let find = |p: &str| outcomes.iter().find(|o| o.policy == p);
    let (ours, hpa, kpa) = (find("littles")?, find("hpa")?, find("kpa")?);
    let cheaper = hpa.replica_s.min(kpa.replica_s);
    Some(Verdict {
        vs_hpa: ratio(ours.slo_violation_s, hpa.slo_violation_s),
        vs_kpa: ratio(ours.slo_violation_s, kpa.slo_violation_s),
        cost: ratio(ours.replica_s, cheaper),
    })
}

/// littles against hpa and kpa in one run (ratios; infinite when the other's is 0 and
/// ours is not).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub vs_hpa: f64,
    pub vs_kpa: f64,
    pub cost: f64,
}

impl Verdict {
    pub fn met(&self) -> bool {
        self.vs_hpa <= 0.5 && self.vs_kpa <= 0.8 && self.cost <= 1.05
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        0.0
    } else if b == 0.0 {
        f64::INFINITY
    } else {
        a / b
    }
}

/// The comparison's table, as text.
pub fn table(outcomes: &[LiveOutcome]) -> String {
    let mut out = format!(
        "{:<4} {:<10} {:>14} {:>16} {:>10} {:>20} {:>10} {:>7}\n",
        "run",
        "policy",
        "SLO-viol. s",
        "replica-s",
        "reversals",
        "to capacity s (max)",
        "requests",
        "failed"
    );
    for o in outcomes {
        let max = o
            .time_to_capacity_s
            .iter()
            .map(|(s, _)| *s)
            .fold(0.0, f64::max);
        let unsettled = match o.unsettled() {
            0 => String::new(),
            n => format!(" {n}!"),
        };
        let _ = writeln!(
            out,
            "{:<4} {:<10} {:>14.0} {:>16.0} {:>10} {:>20} {:>10} {:>7}",
            o.run,
            o.policy,
            o.slo_violation_s,
            o.replica_s,
            o.reversals,
            format!("{:.1} ({max:.0}){unsettled}", o.mean_time_to_capacity()),
            o.requests,
            o.failed
        );
    }
    out
}

fn verdict_text(v: Option<Verdict>) -> String {
    match v {
        None => "littles, hpa and kpa were not all in this run".to_owned(),
        Some(v) => format!(
            "littles/hpa SLO-violation {:.2} (bar 0.5), littles/kpa {:.2} (bar 0.8), \
             replica-seconds vs the cheaper of hpa and kpa {:.2} (bar 1.05): {}",
            v.vs_hpa,
            v.vs_kpa,
            v.cost,
            if v.met() { "met" } else { "not met" }
        ),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    let mut policies: Vec<String> = Vec::new();
    for p in &args.compare {
        if !policies.contains(p) {
            policies.push(p.clone());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    let total = policies.len() * args.runs;
    println!(
        "scalelab demo comparison: {} x {} run(s) = {total} demos of about {:.0} s of load each, into {}",
        policies.join(", "),
        args.runs,
        args.step.as_secs_f64() * STEPS.len() as f64,
        out.display()
    );
    // Ctrl-C ends the demo running (its load stops, its report is written) and then
    // the comparison, rather than going on to the next demo.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let stop = || interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let mut reports: Vec<(usize, DemoReport)> = Vec::new();
    let mut outcomes = Vec::new();
    'runs: for run in 1..=args.runs {
        for (i, policy) in policies.iter().enumerate() {
            let done = (run - 1) * policies.len() + i;
            println!("\n== demo {}/{total}: run {run}, policy {policy}", done + 1);
            let dir = out.join(format!("run-{run}")).join(policy);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let report = demo::run_one(&args, policy, &dir).await?;
            print!("{}", demo::summary(&report));
            outcomes.push(outcome(&report, run));
            reports.push((run, report));
            // Written after every demo: an interrupted comparison keeps what it measured.
            let comparison = Comparison {
                slo_p99_ms: args.slo_p99_ms,
                step_s: args.step.as_secs_f64(),
                cpu_limit: args.cpu_limit,
                policies: policies.clone(),
                outcomes: outcomes.clone(),
            };
            write_report(&out, &comparison, &reports)?;
            if stop() {
                println!("\ninterrupted after {} of {total} demos", done + 1);
                break 'runs;
            }
        }
        let this_run: Vec<&LiveOutcome> = outcomes.iter().filter(|o| o.run == run).collect();
        println!("\nrun {run}: {}", verdict_text(verdict(&this_run)));
    }
    println!("\n{}", table(&outcomes));
    println!("report: {}", out.join("index.html").display());
    Ok(())
}

/// `compare.json` and `index.html` (self-contained; each demo's own report beside it).
pub fn write_report(
    out: &Path,
    comparison: &Comparison,
    reports: &[(usize, DemoReport)],
) -> anyhow::Result<()> {
    std::fs::write(
        out.join("compare.json"),
        serde_json::to_string_pretty(comparison)?,
    )?;
    let mut rows = String::new();
    for o in &comparison.outcomes {
        let ttc: Vec<String> = o
            .time_to_capacity_s
            .iter()
            .map(|(s, settled)| {
                if *settled {
                    format!("{s:.0}")
                } else {
                    format!("&gt;{s:.0}")
                }
            })
            .collect();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
            o.run,
            escape(&o.policy),
            o.slo_violation_s,
            o.replica_s,
            o.reversals,
            o.mean_time_to_capacity(),
            ttc.join(" / "),
            o.requests,
            o.failed,
            o.p99_of_seconds_ms,
        );
    }
    let runs: Vec<usize> = {
        let mut r: Vec<usize> = comparison.outcomes.iter().map(|o| o.run).collect();
        r.dedup();
        r
    };
    let mut verdicts = String::new();
    for run in &runs {
        let this: Vec<&LiveOutcome> = comparison
            .outcomes
            .iter()
            .filter(|o| o.run == *run)
            .collect();
        let _ = write!(
            verdicts,
            "<li>run {run}: {}</li>",
            verdict_text(verdict(&this))
        );
    }
    let mut panels = String::new();
    for run in &runs {
        let _ = write!(panels, "<h3>Run {run}</h3><div class=\"grid\">");
        for (_, r) in reports.iter().filter(|(n, _)| n == run) {
            let span = r.span();
            let p99: Vec<(f64, f64)> = r.load.iter().map(|s| (s.second as f64, s.p99_ms)).collect();
            let slo = vec![(0.0, r.slo_p99_ms), (span, r.slo_p99_ms)];
            let latency: Vec<Line<'_>> = vec![
                ("p99 ms".into(), "#dc2626", p99),
                ("SLO".into(), "#6b7280", slo),
            ];
            let replicas = demo::replica_lines(r, &SCALED);
            let _ = write!(
                panels,
                "<section><h4><a href=\"run-{run}/{p}/index.html\">{p}</a></h4>{}{}</section>",
                chart("p99 per second (ms)", span, &latency, &r.events, false),
                chart("Ready replicas", span, &replicas, &r.events, true),
                p = escape(&r.policy),
            );
        }
        panels.push_str("</div>");
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>scalelab policy comparison</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse;margin:1rem 0}}\
         td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}}\
         .grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(26rem,1fr));gap:1rem}}\
         svg.chart{{max-width:100%;height:auto}}</style></head><body>\
         <h1>Autoscaling policies, live</h1><p>The same demo trace (CMPT 756 scenarios 0&ndash;5 as {step:.0} s steps, \
         a music replica SIGKILLed halfway through the 900-user step) once per policy, back to back; user, music and \
         playlist replicas limited to {cpu} cores each; p99 SLO {slo} ms.</p>\
         <table><tr><th>run</th><th>policy</th><th>SLO-violation s</th><th>replica-s</th><th>reversals</th>\
         <th>mean time to capacity s</th><th>per rise (&gt;: not within the step)</th><th>requests</th><th>failed</th>\
         <th>p99 of per-second p99s, ms</th></tr>{rows}</table><ul>{verdicts}</ul>\
         <p>SLO-violation seconds: seconds whose p99 is over the SLO. Replica-seconds: replicas asked for (ready and \
         starting) of user, music and playlist over the load. Reversals: scaling changes against the previous \
         direction, per service. Time to capacity: from a rise of the users until the p99 is under the SLO for \
         {settled} s in a row.</p>{panels}\
         <p>Data: compare.json; each demo's report and demo.json under run-N/&lt;policy&gt;/.</p></body></html>",
        step = comparison.step_s,
        cpu = comparison.cpu_limit,
        slo = comparison.slo_p99_ms,
        settled = SETTLED_S,
    );
    std::fs::write(out.join("index.html"), html)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{LoadSecond, Sample, TimedEvent};

    /// Six 10 s steps; p99 over the SLO for the first 4 s of the 300-user step and
    /// never back under it in the 1500-user one; music scaled up, down, up.
    fn report(policy: &str) -> DemoReport {
        let load = (0..60)
            .map(|s| LoadSecond {
                second: s,
                users: i64::from(STEPS[(s / 10) as usize]),
                requests: 100,
                p99_ms: if (10..14).contains(&s) || s >= 50 {
                    900.0
                } else {
                    40.0
                },
                ..LoadSecond::default()
            })
            .collect();
        let samples = (0..60)
            .map(|t| Sample {
                t: f64::from(t),
                replicas: SCALED
                    .iter()
                    .map(|n| {
                        (
                            (*n).to_owned(),
                            (1, if *n == "music" && t >= 30 { 3 } else { 1 }),
                        )
                    })
                    .collect(),
            })
            .collect();
        let scaled = |t: f64, detail: &str| TimedEvent {
            t,
            service: "music".into(),
            replica: "-".into(),
            kind: "scaled".into(),
            detail: detail.into(),
        };
        DemoReport {
            policy: policy.into(),
            slo_p99_ms: 250.0,
            step_s: 10.0,
            cpu_limit: 0.1,
            steps: Vec::new(),
            samples,
            events: vec![
                scaled(11.0, "1 -> 2 replicas"),
                scaled(20.0, "2 -> 1 replicas"),
                scaled(30.0, "1 -> 3 replicas"),
                scaled(40.0, "3 -> 4 replicas <b>"),
            ],
            load,
            requests: 6000,
            failed: 2,
            killed: None,
        }
    }

    #[test]
    fn live_metrics_are_read_off_the_demo_as_the_simulator_defines_them() {
        let o = outcome(&report("littles"), 1);
        assert_eq!(
            o.slo_violation_s, 14.0,
            "4 s of step 1 and all 10 of step 5"
        );
        // 3 services x 60 s at 1, and music at 3 from 30 s: 180 + 2 x 30.
        assert_eq!(o.replica_s, 240.0);
        assert_eq!(o.reversals, 2, "up, down, up, up");
        assert_eq!(
            o.time_to_capacity_s,
            vec![
                (4.0, true),
                (0.0, true),
                (0.0, true),
                (0.0, true),
                (10.0, false)
            ]
        );
        assert_eq!(o.unsettled(), 1);
        assert_eq!(o.p99_of_seconds_ms, 900.0);
    }

    #[test]
    fn the_verdict_compares_littles_with_hpa_and_kpa() {
        let mut ours = outcome(&report("littles"), 1);
        let mut hpa = ours.clone();
        hpa.policy = "hpa".into();
        let mut kpa = ours.clone();
        kpa.policy = "kpa".into();
        ours.slo_violation_s = 4.0;
        hpa.slo_violation_s = 10.0;
        kpa.slo_violation_s = 6.0;
        hpa.replica_s = 230.0;
        let v = verdict(&[&ours, &hpa, &kpa]).expect("all three");
        assert!((v.vs_hpa - 0.4).abs() < 1e-9 && (v.vs_kpa - 4.0 / 6.0).abs() < 1e-9);
        assert!((v.cost - 240.0 / 230.0).abs() < 1e-9);
        assert!(v.met());
        kpa.slo_violation_s = 0.0;
        assert!(!verdict(&[&ours, &hpa, &kpa]).expect("all three").met());
        assert_eq!(verdict(&[&ours, &hpa]), None);
    }

    #[test]
    fn the_report_puts_every_policy_side_by_side_and_escapes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reports: Vec<(usize, DemoReport)> =
            ["littles", "hpa"].iter().map(|p| (1, report(p))).collect();
        let comparison = Comparison {
            slo_p99_ms: 250.0,
            step_s: 10.0,
            cpu_limit: 0.1,
            policies: vec!["littles".into(), "hpa".into()],
            outcomes: reports.iter().map(|(n, r)| outcome(r, *n)).collect(),
        };
        write_report(dir.path(), &comparison, &reports).expect("write");
        let html = std::fs::read_to_string(dir.path().join("index.html")).expect("html");
        assert_eq!(
            html.matches("<svg class=\"chart\"").count(),
            4,
            "two per policy"
        );
        assert!(html.contains("run-1/hpa/index.html"));
        assert!(html.contains("&gt;10") && !html.contains("<b>"));
        assert!(html.contains("were not all in this run"));
        let back: Comparison = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("compare.json")).expect("json"),
        )
        .expect("parses back");
        assert_eq!(back.outcomes.len(), 2);
        assert!(table(&back.outcomes).contains("littles"));
    }
}
