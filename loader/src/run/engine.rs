//! Runs a scenario: users (closed model) or arrivals (open model) send the request
//! chain; every answer is timed and counted per request name and per second.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;

use super::scenario::{FeederMode, Injection, Scenario, fill, scaled};
use crate::conn::Connections;

/// Where requests go and how long a run may take.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base_url: String,
    pub services: BTreeMap<String, String>,
    pub duration: Option<Duration>,
    pub time_scale: f64,
}

/// One answered (or failed) request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: f64,
    pub latency_us: u64,
    pub ok: bool,
}

/// Every sample, by step of the chain (no allocation per request), and the active
/// users each second.
#[derive(Debug, Default)]
pub struct Recorder {
    pub names: Vec<String>,
    pub samples: Vec<Mutex<Vec<Sample>>>,
    pub users: Mutex<Vec<(f64, i64)>>,
}

impl Recorder {
    fn new(names: Vec<String>) -> Self {
        let samples = names
            .iter()
            .map(|_| Mutex::new(Vec::with_capacity(1 << 16)))
            .collect();
        Self {
            names,
            samples,
            users: Mutex::default(),
        }
    }

    /// Moves a user's buffered samples in (one lock per step and flush, not per request).
    fn flush(&self, buffer: &mut Vec<(usize, Sample)>) {
        for (step, samples) in self.samples.iter().enumerate() {
            if buffer.iter().any(|(s, _)| *s == step)
                && let Ok(mut v) = samples.lock()
            {
                v.extend(
                    buffer
                        .iter()
                        .filter(|(s, _)| *s == step)
                        .map(|(_, sample)| *sample),
                );
            }
        }
        buffer.clear();
    }

    /// Samples by request name (steps with one name are merged).
    pub fn by_name(&self) -> BTreeMap<String, Vec<Sample>> {
        let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for (name, samples) in self.names.iter().zip(&self.samples) {
            if let Ok(v) = samples.lock() {
                out.entry(name.clone())
                    .or_default()
                    .extend(v.iter().copied());
            }
        }
        out
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Shared {
    scenario: Scenario,
    plan: Plan,
    rows: Vec<BTreeMap<String, String>>,
    next_row: std::sync::atomic::AtomicUsize,
    client: HttpClient,
    recorder: Arc<Recorder>,
    started: Instant,
    stop: AtomicBool,
    active: AtomicI64,
    target: AtomicI64,
    /// Per step: `host:port`, its Host header, and the base URL's path prefix.
    targets: Vec<(String, http::HeaderValue, String)>,
}

fn read_feeder(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("feeder {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let rows: Vec<_> = reader
        .records()
        .filter_map(Result::ok)
        .map(|r| {
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.trim().to_owned(), v.trim().to_owned()))
                .collect()
        })
        .collect();
    anyhow::ensure!(!rows.is_empty(), "feeder {} has no rows", path.display());
    Ok(rows)
}

impl Shared {
    fn row(&self) -> Option<&BTreeMap<String, String>> {
        if self.rows.is_empty() {
            return None;
        }
        let mode = self
            .scenario
            .feeder
            .as_ref()
            .map(|f| f.mode)
            .unwrap_or_default();
        let i = match mode {
            FeederMode::Circular => self.next_row.fetch_add(1, Ordering::Relaxed),
            FeederMode::Random => rand::rng().random_range(0..self.rows.len()),
        };
        Some(&self.rows[i % self.rows.len()])
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Sends the chain once; `intended` is when it should have started (open model).
    /// With `connections`, a user's requests go over connections of its own (as wrk's
    /// do: no pool between users); without, through the shared pool.
    async fn chain(
        &self,
        intended: Instant,
        mut connections: Option<&mut Connections>,
        sink: &mut Vec<(usize, Sample)>,
    ) {
        let empty = BTreeMap::new();
        let row = self.row().unwrap_or(&empty);
        let mut first = true;
        for (index, step) in self.scenario.requests.iter().enumerate() {
            let (authority, host, prefix) = &self.targets[index];
            let path = format!("{prefix}{}", fill(&step.path, row));
            if let Some(c) = connections.as_deref_mut() {
                // Our own HTTP/1 on the user's own connection (see conn.rs).
                let filled: Vec<(&str, String)> = step
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), fill(v, row)))
                    .collect();
                let body = step.body.as_ref().map(|b| fill(b, row)).unwrap_or_default();
                let json = step
                    .body
                    .is_some()
                    .then_some(("content-type", "application/json"));
                let host = host.to_str().unwrap_or(authority);
                let method = step.method.as_str();
                let sent = if first { intended } else { Instant::now() };
                first = false;
                let answer = c
                    .send_rendered(authority, method == "HEAD", |out| {
                        crate::conn::render(
                            out,
                            method,
                            &path,
                            host,
                            filled.iter().map(|(k, v)| (*k, v.as_str())).chain(json),
                            body.as_bytes(),
                        )
                    })
                    .await;
                sink.push((
                    index,
                    Sample {
                        at: self.elapsed(),
                        latency_us: sent.elapsed().as_micros() as u64,
                        ok: answer.is_ok_and(|a| a.status == step.expect),
                    },
                ));
                continue;
            }
            let url = format!("http://{authority}{path}");
            let mut request = http::Request::builder()
                .method(step.method.as_str())
                .uri(&url);
            for (k, v) in &step.headers {
                request = request.header(k, fill(v, row));
            }
            let body = step
                .body
                .as_ref()
                .map(|b| Bytes::from(fill(b, row)))
                .unwrap_or_default();
            if step.body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let sent = if first { intended } else { Instant::now() };
            first = false;
            let ok = match request.body(Full::new(body)) {
                Ok(request) => {
                    let response = self
                        .client
                        .request(request)
                        .await
                        .map_err(|e| e.to_string());
                    match response {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            response.into_body().collect().await.is_ok() && status == step.expect
                        }
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            let latency_us = sent.elapsed().as_micros() as u64;
            sink.push((
                index,
                Sample {
                    at: self.elapsed(),
                    latency_us,
                    ok,
                },
            ));
        }
    }

    async fn think(&self, min: Duration, max: Duration) {
        let pause = if max > min {
            rand::rng().random_range(min..=max)
        } else {
            min
        };
        let pause = super::scenario::compress(pause, self.plan.time_scale).unwrap_or(Duration::MAX);
        tokio::time::sleep(pause).await;
    }
}

/// One user: the chain (once, or until told to stop when the scenario runs forever).
async fn user(shared: Arc<Shared>) {
    let (min, max) = shared.scenario.think.bounds().unwrap_or_default();
    let mut connections = Connections::default();
    let mut buffer = Vec::with_capacity(1024);
    let mut flushed = Instant::now();
    loop {
        shared
            .chain(Instant::now(), Some(&mut connections), &mut buffer)
            .await;
        if buffer.len() >= 512 || flushed.elapsed() >= Duration::from_millis(250) {
            shared.recorder.flush(&mut buffer);
            flushed = Instant::now();
        }
        let too_many = shared.active.load(Ordering::SeqCst) > shared.target.load(Ordering::SeqCst);
        if !shared.scenario.forever || shared.stop.load(Ordering::SeqCst) || too_many {
            break;
        }
        if !max.is_zero() {
            shared.think(min, max).await;
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    shared.recorder.flush(&mut buffer);
    shared.active.fetch_sub(1, Ordering::SeqCst);
}

/// Runs the scenario; returns what was recorded and how long it ran.
pub async fn run(
    scenario: Scenario,
    scenario_dir: &Path,
    plan: Plan,
) -> anyhow::Result<(Arc<Recorder>, f64)> {
    let rows = match &scenario.feeder {
        Some(f) => read_feeder(&scenario_dir.join(&f.file))?,
        None => Vec::new(),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let recorder = Arc::new(Recorder::new(
        scenario.requests.iter().map(|s| s.name.clone()).collect(),
    ));
    let targets = scenario
        .requests
        .iter()
        .map(|step| {
            let base = step
                .service
                .as_ref()
                .and_then(|s| plan.services.get(s))
                .unwrap_or(&plan.base_url);
            let uri: http::Uri = base
                .parse()
                .with_context(|| format!("`{base}` is not a URL"))?;
            anyhow::ensure!(
                uri.scheme_str() == Some("http"),
                "`{base}`: only http:// URLs"
            );
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .context("no host in the base URL")?;
            let host = http::HeaderValue::try_from(authority.as_str())?;
            Ok((authority, host, uri.path().trim_end_matches('/').to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        scenario: scenario.clone(),
        plan: plan.clone(),
        rows,
        next_row: Default::default(),
        client,
        recorder: recorder.clone(),
        started: Instant::now(),
        stop: AtomicBool::new(false),
        active: AtomicI64::new(0),
        target: AtomicI64::new(0),
        targets,
    });
    let scale = plan.time_scale;
    let progress = tokio::spawn(progress(shared.clone()));
    let deadline = plan.duration.map(|d| shared.started + d);
    let mut tasks = Vec::new();
    let spawn_user = |tasks: &mut Vec<tokio::task::JoinHandle<()>>| {
        shared.active.fetch_add(1, Ordering::SeqCst);
        tasks.push(tokio::spawn(user(shared.clone())));
    };
    if let Injection::ConstantRate { per_second, during } = &scenario.injection {
        let during = scaled(during, scale)?;
        let rate = *per_second * scale;
        anyhow::ensure!(rate > 0.0, "per_second must be positive");
        let start = Instant::now();
        let mut k: u64 = 0;
        loop {
            let intended = start + Duration::from_secs_f64(k as f64 / rate);
            if intended.duration_since(start) >= during || deadline.is_some_and(|d| intended >= d) {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut buffer = Vec::new();
                shared.chain(intended, None, &mut buffer).await;
                shared.recorder.flush(&mut buffer);
            }));
            k += 1;
        }
        for t in tasks.drain(..) {
            let _ = t.await;
        }
        shared.stop.store(true, Ordering::SeqCst);
        progress.abort();
        return Ok((recorder, shared.elapsed()));
    }
    // The number of active users the profile wants at `t` seconds (scaled time), and when it ends.
    let profile = scenario.injection.profile(scale)?;
    let ramp_once = matches!(
        scenario.injection,
        Injection::Ramp { .. } | Injection::AtOnce { .. }
    );
    let mut started_users: i64 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let t = shared.elapsed();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(target) = profile(t) else { break };
        shared.target.store(target, Ordering::SeqCst);
        if ramp_once {
            // Each of these users starts once.
            while started_users < target {
                spawn_user(&mut tasks);
                started_users += 1;
            }
            if !scenario.forever
                && shared.active.load(Ordering::SeqCst) == 0
                && started_users >= target
            {
                break;
            }
        } else {
            while shared.active.load(Ordering::SeqCst) < target {
                spawn_user(&mut tasks);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut ctrl_c => break,
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.target.store(0, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    progress.abort();
    Ok((recorder, shared.elapsed()))
}

/// Once a second: users, requests/s, p99 and errors of the last second (only the new
/// samples are looked at).
async fn progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut seen = vec![0usize; shared.recorder.samples.len()];
    loop {
        tick.tick().await;
        let now = shared.elapsed();
        let users = shared.active.load(Ordering::SeqCst);
        if let Ok(mut u) = shared.recorder.users.lock() {
            u.push((now, users));
        }
        let (mut count, mut errors, mut latencies) = (0usize, 0usize, Vec::new());
        for (samples, seen) in shared.recorder.samples.iter().zip(seen.iter_mut()) {
            let Ok(v) = samples.lock() else { continue };
            let fresh = &v[(*seen).min(v.len())..];
            count += fresh.len();
            errors += fresh.iter().filter(|s| !s.ok).count();
            latencies.extend(fresh.iter().map(|s| s.latency_us));
            *seen = v.len();
        }
        latencies.sort_unstable();
        let p99 = latencies
            .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        eprintln!(
            "{now:>6.0} s  users {users:>5}  {count:>6} req/s  p99 {:>8.1} ms  errors {errors}",
            p99 as f64 / 1000.0
        );
    }
}
