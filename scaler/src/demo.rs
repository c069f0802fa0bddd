//! `scaler demo`: the one-command showcase. It starts the platform with user, music and
//! playlist replicas limited to a slice of a core each and autoscaled by `littles`,
//! loads the course data, drives the CMPT 756 scenarios 0 -> 5 (3, 300, 600, 900, 1200,
//! 1500 users) with the loader as held steps, SIGKILLs a music replica in the middle,
//! and writes `index.html` (users, requests per second, latency percentiles and ready
//! replicas per service on one timeline with the scaling and healing events) and
//! `demo.json`, prints a summary, and stops everything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::autoscale::AutoscaleConfig;
use crate::events::{Event, Kind};
use crate::up::{self, FileConfig, UpArgs};

/// The users of the six steps: scenario 0 (one per service) and 1 to 5.
pub const STEPS: [u32; 6] = [3, 300, 600, 900, 1200, 1500];
/// The services the demo scales.
pub const SCALED: [&str; 3] = ["user", "music", "playlist"];
/// A course user the demo logs in as.
const DEMO_UID: &str = "b66f61e7-4fad-402f-aaad-101e3e2522d3";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder for index.html, demo.json, the loader's results and the replica logs.
    #[arg(long, default_value = "demo-report")]
    pub out: PathBuf,

    /// How long each of the six user steps is held.
    #[arg(long, default_value = "30s", value_parser = kit::config::parse_duration)]
    pub step: Duration,

    /// Cores per replica of user, music and playlist (their CPU_LIMIT), so that one
    /// replica saturates well before 1500 users, as a pod with a CPU limit would.
    #[arg(long, default_value_t = 0.1, value_parser = parse_cores)]
    pub cpu_limit: f64,

    /// Most replicas of each of user, music and playlist.
    #[arg(long, default_value_t = 6)]
    pub max_replicas: usize,

    /// The p99 the autoscaler keeps, in milliseconds.
    #[arg(long, default_value_t = 250.0)]
    pub slo_p99_ms: f64,

    /// Folder with the service binaries and `loader`; default: this binary's folder.
    #[arg(long, env = "SCALER_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Course CSVs to load (and the music feeder of the load).
    #[arg(long, default_value = "gatling/resources")]
    pub data: PathBuf,

    /// The scenario whose requests the demo sends (its steps are replaced by the demo's).
    #[arg(long, default_value = "gatling/scenarios/cmpt756-steps.toml")]
    pub scenario: PathBuf,

    /// The autoscaling policy of user, music and playlist.
    #[arg(long, default_value = "littles", value_parser = POLICIES)]
    pub policy: String,

    /// `hpa`'s target: `cpu:0.7` (Kubernetes' usual), `latency:200`, `concurrency:10`, `rps:70`.
    #[arg(long, default_value = "cpu:0.7")]
    pub hpa_target: String,

    /// `kpa`'s target: `concurrency:10` (requests in flight per replica) or `rps:70`.
    #[arg(long, default_value = "concurrency:10")]
    pub kpa_target: String,

    /// Run the demo once per policy of this list, back to back on the same trace, and
    /// write one comparison report to --out (e.g. `--compare littles,hpa,kpa`).
    #[arg(long, value_delimiter = ',', value_parser = POLICIES)]
    pub compare: Vec<String>,

    /// With --compare: how many times the whole comparison is run.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

/// The policies the demo can run.
pub const POLICIES: [&str; 4] = ["littles", "hpa", "kpa", "threshold"];

fn parse_cores(text: &str) -> Result<f64, String> {
    kit::cpu_limit::parse_cores(text)
}

/// Ready and asked-for replicas of every service, once a second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the load started (negative: before it).
    pub t: f64,
    pub replicas: BTreeMap<String, (usize, usize)>,
}

/// One second of the loader's timeline (`results.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadSecond {
    pub second: u64,
    pub users: i64,
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoadRow {
    name: String,
    count: usize,
    ok: usize,
    ko: usize,
    p50_ms: f64,
    p99_ms: f64,
    requests_per_second: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct LoadResults {
    #[serde(default)]
    requests: Vec<LoadRow>,
    #[serde(default)]
    timeline: Vec<LoadSecond>,
}

/// An event placed on the demo's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimedEvent {
    /// Seconds since the load started.
    pub t: f64,
    pub service: String,
    pub replica: String,
    pub kind: String,
    pub detail: String,
}

/// What one step looked like.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub users: u32,
    pub requests_per_second: f64,
    /// The median of the step's per-second p99s, in ms.
    pub p99_ms: f64,
    pub errors: usize,
    /// Ready replicas per service at the end of the step.
    pub replicas: BTreeMap<String, usize>,
}

/// `demo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// The policy that scaled user, music and playlist.
    #[serde(default = "littles")]
    pub policy: String,
    #[serde(default = "default_slo")]
    pub slo_p99_ms: f64,
    pub step_s: f64,
    pub cpu_limit: f64,
    pub steps: Vec<StepSummary>,
    pub samples: Vec<Sample>,
    pub events: Vec<TimedEvent>,
    pub load: Vec<LoadSecond>,
    pub requests: usize,
    pub failed: usize,
    /// The replica the demo killed and how long its replacement took, in seconds.
    pub killed: Option<(String, f64)>,
}

fn littles() -> String {
    "littles".to_owned()
}

fn default_slo() -> f64 {
    250.0
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn bin_dir(args: &DemoArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("this binary has no folder")
}

/// The scenario the loader runs: the shipped one with the demo's steps, its feeder
/// path made absolute.
fn scenario(args: &DemoArgs) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut value: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.scenario.display()))?;
    let hold = format!("{}ms", args.step.as_millis());
    let steps: Vec<toml::Value> = STEPS
        .iter()
        .map(|u| toml::Value::Array(vec![i64::from(*u).into(), hold.clone().into()]))
        .collect();
    let mut injection = toml::Table::new();
    injection.insert("kind".into(), "steps".into());
    injection.insert("steps".into(), toml::Value::Array(steps));
    value.insert("injection".into(), toml::Value::Table(injection));
    value.insert("name".into(), "cmpt756-demo".into());
    value.insert(
        "description".into(),
        format!(
            "scenarios 0-5 as steps of {} s (scaler demo)",
            args.step.as_secs_f64()
        )
        .into(),
    );
    if let Some(toml::Value::Table(feeder)) = value.get_mut("feeder")
        && let Some(toml::Value::String(file)) = feeder.get("file")
    {
        let base = args.scenario.parent().unwrap_or(Path::new("."));
        let path = std::fs::canonicalize(base.join(file))
            .with_context(|| format!("the feeder {file} of {}", args.scenario.display()))?;
        feeder.insert("file".into(), path.display().to_string().into());
    }
    Ok(toml::to_string(&value)?)
}

async fn login(port: u16) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = http
        .put(format!("http://127.0.0.1:{port}/api/v1/user/login"))
        .json(&serde_json::json!({ "uid": DEMO_UID }))
        .send()
        .await
        .context("logging in")?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "login answered {status}: {body}");
    Ok(body)
}

fn print_event(e: &TimedEvent) {
    println!(
        "[{:>6.1} s] {} {} {}: {}",
        e.t, e.service, e.replica, e.kind, e.detail
    );
}

fn timed(e: &Event, zero_ms: f64) -> TimedEvent {
    TimedEvent {
        t: (e.at_ms as f64 - zero_ms) / 1000.0,
        service: e.service.clone(),
        replica: e.replica.clone(),
        kind: e.kind.as_str().to_owned(),
        detail: e.detail.clone(),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.compare.is_empty() {
        return crate::compare::run(args).await;
    }
    anyhow::ensure!(
        args.runs == 1,
        "--runs repeats a comparison: give the policies with --compare (e.g. --compare littles,hpa,kpa)"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    let report = run_one(&args, &args.policy, &out).await?;
    print!("{}", summary(&report));
    println!("report: {}", out.join("index.html").display());
    Ok(())
}

/// The policy `name` as the demo configures it for a service.
pub fn autoscale_config(args: &DemoArgs, name: &str) -> AutoscaleConfig {
    AutoscaleConfig {
        policy: name.to_owned(),
        min: 1,
        max: args.max_replicas,
        target: match name {
            "hpa" => Some(args.hpa_target.clone()),
            "kpa" => Some(args.kpa_target.clone()),
            _ => None,
        },
        slo_p99_ms: args.slo_p99_ms,
    }
}

/// One demo with `policy` into `out` (an existing folder): starts the platform, drives
/// the steps, stops it, and writes `index.html` and `demo.json` there.
pub async fn run_one(args: &DemoArgs, policy: &str, out: &Path) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(args.max_replicas >= 1, "--max-replicas must be at least 1");
    anyhow::ensure!(
        args.step >= Duration::from_secs(2),
        "--step must be at least 2s"
    );
    let bins = bin_dir(args)?;
    let loader = bins.join("loader");
    anyhow::ensure!(
        loader.exists(),
        "{} is missing: build everything first (`cargo build --profile demo --workspace --bins`)",
        loader.display()
    );
    let scenario_text = scenario(args)?;
    let config = autoscale_config(args, policy);
    config
        .build()
        .with_context(|| format!("the {policy} policy's settings"))?;
    let data_dir = out.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    let scenario_path = out.join("cmpt756-demo.toml");
    std::fs::write(&scenario_path, scenario_text)?;

    let mut file = FileConfig::default();
    for (name, _, _) in up::SERVICES {
        file.replicas.insert((*name).to_owned(), 1);
    }
    for name in SCALED {
        file.cpu_limit.insert(name.to_owned(), args.cpu_limit);
        file.autoscale.insert(name.to_owned(), config.clone());
    }
    let up_args = UpArgs {
        bin_dir: Some(bins.clone()),
        data_dir: data_dir.clone(),
        config: PathBuf::from("-"),
        data: args.data.clone(),
        host: [127, 0, 0, 1].into(),
        auth_mode: "jwt".into(),
        admin_port: 30010,
        ingress_port: 30080,
        actuator: up::ActuatorKind::Process,
        advertise_host: None,
        gateway: None,
    };
    let total = args.step * STEPS.len() as u32;
    println!(
        "scalelab demo: CMPT 756 scenarios 0-5 ({} users) as {} s steps, {:.0} s of load; \
         user, music and playlist replicas limited to {} cores each, autoscaled by {policy}{} \
         (1 to {}, p99 SLO {} ms); a music replica is killed at {:.0} s",
        STEPS.map(|u| u.to_string()).join(" -> "),
        args.step.as_secs_f64(),
        total.as_secs_f64(),
        args.cpu_limit,
        config
            .target
            .as_ref()
            .map_or(String::new(), |t| format!(" (target {t})")),
        args.max_replicas,
        args.slo_p99_ms,
        kill_at(args.step).as_secs_f64(),
    );
    let running = up::start(&up_args, file)
        .await
        .context("starting the platform (is `scaler up` already running on these ports?)")?;
    println!(
        "platform ready in {:.1} s, {} course rows loaded; admin and dashboard on http://127.0.0.1:30010/",
        running.started.elapsed().as_secs_f64(),
        running.loaded
    );
    let result = drive(args, policy, &running, &loader, &scenario_path, out).await;
    println!("stopping the platform");
    running.stop().await;
    let report = result?;
    write_report(out, &report)?;
    Ok(report)
}

/// When the demo kills a music replica: halfway through the 900-user step.
fn kill_at(step: Duration) -> Duration {
    step * 3 + step / 2
}

async fn drive(
    args: &DemoArgs,
    policy: &str,
    running: &up::Running,
    loader: &Path,
    scenario: &Path,
    out: &Path,
) -> anyhow::Result<DemoReport> {
    let platform = &running.platform;
    let token = login(30000).await?;
    let zero_ms = now_ms();
    let zero = Instant::now();

    // Replicas once a second.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        let services = platform.services.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let replicas = services
                    .iter()
                    .map(|(name, s)| {
                        let desired = s
                            .supervisor
                            .as_ref()
                            .map_or(0, |s| s.desired.load(std::sync::atomic::Ordering::SeqCst));
                        (name.clone(), (s.balancer.pool.alive().len(), desired))
                    })
                    .collect();
                if let Ok(mut s) = samples.lock() {
                    s.push(Sample {
                        t: zero.elapsed().as_secs_f64(),
                        replicas,
                    });
                }
            }
        })
    };
    // Scaling and healing events as they happen.
    let printer = {
        let mut live = platform.events.subscribe();
        tokio::spawn(async move {
            while let Ok(e) = live.recv().await {
                if matches!(
                    e.kind,
                    Kind::Scaled | Kind::Killed | Kind::Exited | Kind::Replaced | Kind::Unhealthy
                ) {
                    print_event(&timed(&e, zero_ms));
                }
            }
        })
    };
    // The victim: a music replica, halfway through the 900-user step.
    let killer = {
        let music = platform.services["music"].supervisor.clone();
        let events = platform.events.clone();
        let at = kill_at(args.step);
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let supervisor = music?;
            let id = supervisor.replicas().pop()?;
            events.record("music", &id, Kind::Killed, "crashed by the demo (SIGKILL)");
            let before = supervisor.recoveries().len();
            supervisor.inject(&id, crate::actuator::Fault::Crash);
            Some((id, before, supervisor))
        })
    };

    let load_dir = out.join("load");
    let status = tokio::process::Command::new(loader)
        .arg("run")
        .arg(scenario)
        .args(["--base-url", "http://127.0.0.1:30080", "--out"])
        .arg(&load_dir)
        .env("TOKEN", &token)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("running {}", loader.display()))?;
    let load_seconds = zero.elapsed().as_secs_f64();
    if !status.success() {
        println!("loader: {status} (some requests failed; see the report)");
    }

    let killed = match killer.await {
        Ok(Some((id, before, supervisor))) => {
            // The replacement's recovery time is recorded when it is ready.
            let deadline = Instant::now() + Duration::from_secs(10);
            while supervisor.recoveries().len() <= before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            supervisor
                .recoveries()
                .get(before)
                .map(|d| (id, d.as_secs_f64()))
        }
        _ => None,
    };
    sampler.abort();
    printer.abort();

    let results: LoadResults = std::fs::read_to_string(load_dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let events: Vec<TimedEvent> = platform
        .events
        .recent()
        .iter()
        .map(|e| timed(e, zero_ms))
        .filter(|e| e.t >= 0.0 && e.t <= load_seconds + 1.0)
        .collect();
    let all = results
        .requests
        .iter()
        .find(|r| r.name == "all requests")
        .cloned()
        .unwrap_or_default();
    let step_s = args.step.as_secs_f64();
    let steps = STEPS
        .iter()
        .enumerate()
        .map(|(i, users)| {
            let (from, to) = (i as f64 * step_s, (i + 1) as f64 * step_s);
            let seconds: Vec<&LoadSecond> = results
                .timeline
                .iter()
                .filter(|s| (from..to).contains(&(s.second as f64)))
                .collect();
            let mut p99s: Vec<f64> = seconds.iter().map(|s| s.p99_ms).collect();
            p99s.sort_by(f64::total_cmp);
            let end = samples
                .iter()
                .rev()
                .find(|s| s.t <= to)
                .map(|s| {
                    s.replicas
                        .iter()
                        .map(|(k, (ready, _))| (k.clone(), *ready))
                        .collect()
                })
                .unwrap_or_default();
            StepSummary {
                users: *users,
                requests_per_second: seconds.iter().map(|s| s.requests).sum::<usize>() as f64
                    / seconds.len().max(1) as f64,
                p99_ms: p99s.get(p99s.len() / 2).copied().unwrap_or(0.0),
                errors: seconds.iter().map(|s| s.errors).sum(),
                replicas: end,
            }
        })
        .collect();
    Ok(DemoReport {
        policy: policy.to_owned(),
        slo_p99_ms: args.slo_p99_ms,
        step_s,
        cpu_limit: args.cpu_limit,
        steps,
        samples,
        events,
        load: results.timeline,
        requests: all.count,
        failed: all.ko,
        killed,
    })
}

/// The console summary.
pub fn summary(r: &DemoReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<6} {:>6} {:>8} {:>9} {:>7}   ready replicas at the end of the step",
        "step", "users", "req/s", "p99 ms", "errors"
    );
    for (i, s) in r.steps.iter().enumerate() {
        let replicas: Vec<String> = SCALED
            .iter()
            .map(|name| format!("{name} {}", s.replicas.get(*name).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>8.0} {:>9.1} {:>7}   {}",
            i,
            s.users,
            s.requests_per_second,
            s.p99_ms,
            s.errors,
            replicas.join(", ")
        );
    }
    let ups = r
        .events
        .iter()
        .filter(|e| e.kind == "scaled" && scaled_up(&e.detail) == Some(true))
        .count();
    let downs = r
        .events
        .iter()
        .filter(|e| e.kind == "scaled" && scaled_up(&e.detail) == Some(false))
        .count();
    let _ = writeln!(
        out,
        "{} requests, {} failed; {ups} scale-ups and {downs} scale-downs (p99 is the median of the step's per-second p99s)",
        r.requests, r.failed
    );
    match &r.killed {
        Some((id, s)) => {
            let _ = writeln!(
                out,
                "healing: {id} SIGKILLed, replacement ready {s:.2} s later"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "healing: no replacement was recorded for the killed replica"
            );
        }
    }
    out
}

/// `Some(true)` for "1 -> 3 replicas...", `Some(false)` for a decrease.
pub(crate) fn scaled_up(detail: &str) -> Option<bool> {
    let (from, rest) = detail.split_once(" -> ")?;
    let to = rest.split_whitespace().next()?;
    let (from, to): (usize, usize) = (from.trim().parse().ok()?, to.parse().ok()?);
    Some(to > from)
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 900.0;
const H: f64 = 190.0;
const PAD: f64 = 44.0;

/// One line of a chart: label, colour, (seconds, value) points.
pub(crate) type Line<'a> = (String, &'a str, Vec<(f64, f64)>);

/// One chart on the shared time axis `0..=span` seconds: lines of (label, colour,
/// points), and the events as vertical markers.
pub(crate) fn chart(
    title: &str,
    span: f64,
    lines: &[Line<'_>],
    events: &[TimedEvent],
    step: bool,
) -> String {
    let max_y = lines
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1e-9, f64::max)
        * 1.05;
    let x = |t: f64| PAD + t.clamp(0.0, span) / span.max(1.0) * (W - PAD - 10.0);
    let y = |v: f64| H - PAD - v / max_y * (H - PAD - 10.0);
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <line x1=\"{PAD}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"14\" font-size=\"11\">{max_y:.0}</text><text x=\"4\" y=\"{0}\" font-size=\"11\">0</text>",
        H - PAD,
        W - 10.0
    );
    let mut t = 0.0;
    while t <= span {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{t:.0} s</text>",
            x(t),
            H - PAD + 14.0
        );
        t += (span / 10.0).max(1.0).ceil();
    }
    for e in events {
        let color = match e.kind.as_str() {
            "scaled" => "#93c5fd",
            "killed" => "#dc2626",
            "replaced" => "#16a34a",
            _ => continue,
        };
        let _ = write!(
            svg,
            "<line class=\"event {}\" x1=\"{x:.1}\" y1=\"10\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"3,2\"><title>{:.1} s {} {} {}: {}</title></line>",
            e.kind,
            H - PAD,
            e.t,
            escape(&e.service),
            escape(&e.replica),
            e.kind,
            escape(&e.detail),
            x = x(e.t),
        );
    }
    for (label, color, points) in lines {
        let mut path = Vec::new();
        let mut last: Option<f64> = None;
        for (t, v) in points {
            if step && let Some(previous) = last {
                path.push(format!("{:.1},{:.1}", x(*t), y(previous)));
            }
            path.push(format!("{:.1},{:.1}", x(*t), y(*v)));
            last = Some(*v);
        }
        let _ = write!(
            svg,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"><title>{}</title></polyline>",
            path.join(" "),
            escape(label)
        );
    }
    let legend: Vec<String> = lines
        .iter()
        .map(|(l, c, _)| format!("<span style=\"color:{c}\">&#9632; {}</span>", escape(l)))
        .collect();
    let _ = write!(
        svg,
        "</svg><div>{}</div></figure>",
        legend.join(" &middot; ")
    );
    svg
}

impl DemoReport {
    /// Seconds of load: the loader's last second, or the steps' length without one.
    pub fn span(&self) -> f64 {
        self.load
            .last()
            .map_or(self.step_s * STEPS.len() as f64, |s| s.second as f64 + 1.0)
    }
}

/// Ready replicas over the load of each of `services`, one line each.
pub(crate) fn replica_lines<'a>(r: &DemoReport, services: &[&str]) -> Vec<Line<'a>> {
    const COLORS: [&str; 5] = ["#1d4ed8", "#b45309", "#15803d", "#7c3aed", "#be123c"];
    services
        .iter()
        .zip(COLORS)
        .map(|(name, color)| {
            let points = r
                .samples
                .iter()
                .filter(|s| s.t >= 0.0)
                .map(|s| {
                    (
                        s.t,
                        s.replicas.get(*name).map_or(0, |(ready, _)| *ready) as f64,
                    )
                })
                .collect();
            (format!("{name} ready"), color, points)
        })
        .collect()
}

/// `index.html` (self-contained) and `demo.json`.
pub fn write_report(out: &Path, r: &DemoReport) -> anyhow::Result<()> {
    std::fs::write(out.join("demo.json"), serde_json::to_string_pretty(r)?)?;
    let span = r.span();
    let load = |f: fn(&LoadSecond) -> f64| -> Vec<(f64, f64)> {
        r.load.iter().map(|s| (s.second as f64, f(s))).collect()
    };
    let replicas = replica_lines(r, &[SCALED[0], SCALED[1], SCALED[2], "database-gateway"]);
    let charts = [
        chart(
            "Active users",
            span,
            &[("users".into(), "#1d4ed8", load(|s| s.users as f64))],
            &r.events,
            false,
        ),
        chart(
            "Requests per second (answered) and errors per second",
            span,
            &[
                ("requests/s".into(), "#15803d", load(|s| s.requests as f64)),
                ("errors/s".into(), "#dc2626", load(|s| s.errors as f64)),
            ],
            &r.events,
            false,
        ),
        chart(
            "Response time percentiles per second (ms)",
            span,
            &[
                ("p50".into(), "#1d4ed8", load(|s| s.p50_ms)),
                ("p95".into(), "#b45309", load(|s| s.p95_ms)),
                ("p99".into(), "#dc2626", load(|s| s.p99_ms)),
            ],
            &r.events,
            false,
        ),
        chart("Ready replicas", span, &replicas, &r.events, true),
    ]
    .join("\n");
    let mut steps = String::new();
    for (i, s) in r.steps.iter().enumerate() {
        let replicas: Vec<String> = SCALED
            .iter()
            .map(|n| s.replicas.get(*n).copied().unwrap_or(0).to_string())
            .collect();
        let _ = write!(
            steps,
            "<tr><td>{i}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            s.users,
            s.requests_per_second,
            s.p99_ms,
            s.errors,
            replicas.join(" / ")
        );
    }
    let mut events = String::new();
    for e in r.events.iter().filter(|e| e.kind != "started") {
        let _ = write!(
            events,
            "<tr class=\"{}\"><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.kind,
            e.t,
            escape(&e.service),
            escape(&e.replica),
            e.kind,
            escape(&e.detail)
        );
    }
    let healing = match &r.killed {
        Some((id, s)) => format!(
            "{} was SIGKILLed by the demo; its replacement was ready {s:.2} s later.",
            escape(id)
        ),
        None => "No replacement was recorded for the killed replica.".to_owned(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>scalelab demo</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2rem auto;max-width:62rem}}table{{border-collapse:collapse;margin:1rem 0}}\
         td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}}td:last-child,th:last-child{{text-align:left}}\
         figure{{margin:1rem 0}}tr.killed{{color:#dc2626}}tr.replaced{{color:#16a34a}}</style></head><body>\
         <h1>scalelab demo</h1><p>CMPT 756 scenarios 0&ndash;5 as {step:.0} s steps through the ingress; user, music and playlist \
         replicas limited to {cpu} cores each and scaled by <code>{policy}</code>. {requests} requests, {failed} failed. {healing}</p>\
         <p>Markers: <span style=\"color:#93c5fd\">scaling</span>, <span style=\"color:#dc2626\">killed</span>, \
         <span style=\"color:#16a34a\">replaced</span> (hover for details).</p>{charts}\
         <h2>Steps</h2><table><tr><th>step</th><th>users</th><th>req/s</th><th>p99 ms</th><th>errors</th><th>ready user / music / playlist at the end</th></tr>{steps}</table>\
         <h2>Events</h2><table><tr><th>s</th><th>service</th><th>replica</th><th>kind</th><th>detail</th></tr>{events}</table>\
         <p>Data: demo.json; the loader's own report: <a href=\"load/index.html\">load/index.html</a>.</p></body></html>",
        step = r.step_s,
        cpu = r.cpu_limit,
        policy = escape(&r.policy),
        requests = r.requests,
        failed = r.failed,
    );
    std::fs::write(out.join("index.html"), html)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DemoReport {
        let samples = (0..12)
            .map(|t| Sample {
                t: f64::from(t),
                replicas: [("music".to_owned(), (1 + t as usize / 4, 1 + t as usize / 4))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let load = (0..12)
            .map(|s| LoadSecond {
                second: s,
                users: if s < 6 { 3 } else { 300 },
                requests: 100,
                p99_ms: 5.0,
                ..LoadSecond::default()
            })
            .collect();
        DemoReport {
            policy: "littles".into(),
            slo_p99_ms: 250.0,
            step_s: 2.0,
            cpu_limit: 0.1,
            steps: Vec::new(),
            samples,
            events: vec![
                TimedEvent {
                    t: 4.0,
                    service: "music".into(),
                    replica: "-".into(),
                    kind: "scaled".into(),
                    detail: "1 -> 2 replicas: littles: <why>".into(),
                },
                TimedEvent {
                    t: 7.0,
                    service: "music".into(),
                    replica: "music-2".into(),
                    kind: "killed".into(),
                    detail: "SIGKILL".into(),
                },
            ],
            load,
            requests: 1200,
            failed: 0,
            killed: Some(("music-2".into(), 0.2)),
        }
    }

    #[test]
    fn the_report_has_four_charts_with_event_markers_and_escapes_details() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_report(dir.path(), &report()).expect("write");
        let html = std::fs::read_to_string(dir.path().join("index.html")).expect("html");
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 4);
        assert_eq!(
            html.matches("class=\"event killed\"").count(),
            4,
            "on every chart"
        );
        assert!(html.contains("&lt;why&gt;") && !html.contains("<why>"));
        assert!(html.contains("music-2 was SIGKILLed"));
        let json: DemoReport = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("demo.json")).expect("json"),
        )
        .expect("parses back");
        assert_eq!(json.samples.len(), 12);
    }

    #[test]
    fn scaling_directions_are_read_from_the_event() {
        assert_eq!(scaled_up("1 -> 3 replicas: littles: x"), Some(true));
        assert_eq!(scaled_up("4 -> 2 replicas"), Some(false));
        assert_eq!(scaled_up("learning"), None);
    }

    #[test]
    fn the_demo_scenario_is_the_shipped_one_with_held_steps() {
        let args = DemoArgs {
            out: "x".into(),
            step: Duration::from_secs(20),
            cpu_limit: 0.1,
            max_replicas: 6,
            slo_p99_ms: 250.0,
            bin_dir: None,
            data: "../gatling/resources".into(),
            scenario: "../gatling/scenarios/cmpt756-steps.toml".into(),
            policy: "littles".into(),
            hpa_target: "cpu:0.7".into(),
            kpa_target: "concurrency:10".into(),
            compare: Vec::new(),
            runs: 1,
        };
        let text = scenario(&args).expect("scenario");
        let value: toml::Table = toml::from_str(&text).expect("toml");
        assert_eq!(value["think"].as_str(), Some("1s"), "think time kept");
        let steps = value["injection"]["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[5][0].as_integer(), Some(1500));
        assert_eq!(steps[5][1].as_str(), Some("20000ms"));
        let feeder = value["feeder"]["file"].as_str().expect("feeder");
        assert!(
            Path::new(feeder).is_absolute() && feeder.ends_with("music.csv"),
            "{feeder}"
        );
        assert_eq!(value["requests"].as_array().map(Vec::len), Some(3));
    }
}
