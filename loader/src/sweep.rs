//! `loader sweep`: lab 02's experiment. For each concurrency in a list, N requests
//! are sent by that many concurrent clients (as ApacheBench does) and the mean, the
//! longest and the 98th percentile are recorded; an SLA names the highest concurrency
//! that meets it; several targets (1..k nodes behind a balancer) are compared, and
//! `--users` answers how many nodes that many users need.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// The endpoint(s), http:// only. Several are compared as 1, 2, ... nodes.
    #[arg(required = true)]
    pub urls: Vec<String>,

    /// Concurrent clients, one run each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,50,100,200,500,700,1000,1200,1500,2000,2500,3000"
    )]
    pub concurrency: Vec<usize>,

    /// Requests per run.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,

    /// Send a POST with this JSON body (default: GET).
    #[arg(long)]
    pub body: Option<String>,

    /// Service-level agreement, e.g. `max=1.5s,mean=200ms,p98=300ms`.
    #[arg(long, value_parser = parse_sla)]
    pub sla: Option<Sla>,

    /// With several targets and an SLA: how many nodes this many users need.
    #[arg(long)]
    pub users: Option<usize>,

    /// Close the connection after each request, as `ab` does without `-k`.
    #[arg(long)]
    pub no_keep_alive: bool,

    /// Folder for results.json, sweep.svg and index.html.
    #[arg(long, default_value = "sweep-results")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Sla {
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p98_ms: Option<f64>,
}

fn parse_sla(text: &str) -> Result<Sla, String> {
    let mut sla = Sla::default();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected name=duration"))?;
        let ms = kit::config::parse_duration(value)?.as_secs_f64() * 1000.0;
        match key.trim() {
            "max" => sla.max_ms = Some(ms),
            "mean" => sla.mean_ms = Some(ms),
            "p98" => sla.p98_ms = Some(ms),
            other => return Err(format!("unknown SLA term `{other}` (max, mean, p98)")),
        }
    }
    Ok(sla)
}

/// One run: `requests` requests by `concurrency` clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Run {
    pub concurrency: usize,
    pub requests: usize,
    pub failures: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p98_ms: f64,
    pub max_ms: f64,
    pub requests_per_second: f64,
    /// ApacheBench's "Time per request (mean)": concurrency x wall time / requests.
    /// It equals the mean only while every client is busy; the ramp at the start and
    /// the last clients finishing alone make it larger in short runs.
    pub time_per_request_ms: f64,
}

impl Run {
    pub fn meets(&self, sla: &Sla) -> bool {
        self.failures == 0
            && sla.max_ms.is_none_or(|m| self.max_ms <= m)
            && sla.mean_ms.is_none_or(|m| self.mean_ms <= m)
            && sla.p98_ms.is_none_or(|m| self.p98_ms <= m)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub label: String,
    pub url: String,
    pub runs: Vec<Run>,
    /// The highest concurrency meeting the SLA, if one was given and any did.
    pub sla_concurrency: Option<usize>,
}

/// Statistics of one run's latencies (sorted in place).
pub fn summarize(
    concurrency: usize,
    latencies: &mut [Duration],
    failures: usize,
    wall: Duration,
) -> Run {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = latencies.len();
    let pick = |q: f64| {
        if n == 0 {
            0.0
        } else {
            ms(latencies[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        }
    };
    Run {
        concurrency,
        requests: n + failures,
        failures,
        mean_ms: if n == 0 {
            0.0
        } else {
            latencies.iter().map(|d| ms(*d)).sum::<f64>() / n as f64
        },
        p50_ms: pick(0.5),
        p98_ms: pick(0.98),
        max_ms: latencies.last().map_or(0.0, |d| ms(*d)),
        requests_per_second: (n + failures) as f64 / wall.as_secs_f64().max(1e-9),
        time_per_request_ms: concurrency as f64 * ms(wall) / (n + failures).max(1) as f64,
    }
}

/// One run on a single-threaded runtime of its own, as ApacheBench's one event loop:
/// the generator takes at most one core and leaves the rest to what it measures.
async fn run_once(url: &str, args: &SweepArgs, concurrency: usize) -> anyhow::Result<Run> {
    crate::conn::make_room_for_descriptors(
        concurrency,
        &format!("the connections of {concurrency} clients"),
    );
    let (url, args) = (url.to_owned(), args.clone());
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run_on_this_thread(&url, &args, concurrency))
    })
    .await?
}

async fn run_on_this_thread(
    url: &str,
    args: &SweepArgs,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "`{url}`: only http:// endpoints can be swept"
    );
    let body = args.body.clone().map(Bytes::from);
    let next = Arc::new(AtomicUsize::new(0));
    let authority = uri.authority().map_or("", |a| a.as_str()).to_owned();
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    // As ApacheBench: the clients exist before the clock starts (ab allocates them
    // before its clock); then every client's connect is issued in one pass, and a
    // client's first request counts from its connect (so does every request with
    // --no-keep-alive, which connects each time).
    let share = args.requests / concurrency.max(1) + 1;
    type Connected = (Instant, Result<crate::conn::Connections, String>);
    let mut connects: Vec<tokio::sync::oneshot::Sender<Connected>> =
        Vec::with_capacity(concurrency);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (uri, body, next) = (uri.clone(), body.clone(), next.clone());
            let (total, close) = (args.requests, args.no_keep_alive);
            let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
            connects.push(connected_tx);
            tokio::spawn(async move {
                let authority = uri.authority().map_or("", |a| a.as_str());
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                // One request, rendered once, sent N times.
                let mut request = Vec::new();
                let headers = [
                    body.as_ref().map(|_| ("content-type", "application/json")),
                    close.then_some(("connection", "close")),
                ];
                let method = if body.is_some() { "POST" } else { "GET" };
                let rendered = crate::conn::render(
                    &mut request,
                    method,
                    path,
                    authority,
                    headers.into_iter().flatten(),
                    body.as_deref().unwrap_or_default(),
                );
                let mut latencies = Vec::with_capacity(share);
                let mut failures = 0usize;
                let Ok((connecting_since, connected)) = connected_rx.await else {
                    return (latencies, failures);
                };
                // A client that could not connect tries again with its first request.
                let mut connections = connected.unwrap_or_default();
                let mut since = Some(connecting_since);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    if rendered.is_err() {
                        failures += 1;
                        continue;
                    }
                    let sent = since.take().unwrap_or_else(Instant::now);
                    match connections.send(authority, &request, false).await {
                        Ok(answer) if (200..300).contains(&answer.status) => {
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    // Every client task runs up to its wait before the clock starts.
    tokio::task::yield_now().await;
    let started = Instant::now();
    for connected_tx in connects {
        let at = Instant::now();
        let _ = connected_tx.send((at, crate::conn::Connections::connecting(&authority, addr)));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await?;
        latencies.extend(l);
        failures += f;
    }
    Ok(summarize(
        concurrency,
        &mut latencies,
        failures,
        started.elapsed(),
    ))
}

fn print_table(target: &Target) {
    println!(
        "\n{} ({})",
        crate::text::visible(&target.label),
        crate::text::visible(&target.url)
    );
    println!(
        "{:>11} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "concurrency", "requests", "failed", "mean ms", "p50 ms", "p98 ms", "longest ms", "req/s"
    );
    for r in &target.runs {
        println!(
            "{:>11} {:>9} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.0}",
            r.concurrency,
            r.requests,
            r.failures,
            r.mean_ms,
            r.p50_ms,
            r.p98_ms,
            r.max_ms,
            r.requests_per_second
        );
    }
}

pub async fn sweep(args: &SweepArgs) -> anyhow::Result<Vec<Target>> {
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    anyhow::ensure!(
        args.concurrency.iter().all(|c| *c > 0),
        "concurrencies must be at least 1"
    );
    let mut targets = Vec::new();
    for (i, url) in args.urls.iter().enumerate() {
        let label = if args.urls.len() == 1 {
            "target".to_owned()
        } else {
            format!("{} node{}", i + 1, if i == 0 { "" } else { "s" })
        };
        let mut runs = Vec::new();
        for &c in &args.concurrency {
            eprint!(
                "{label}: {c} concurrent clients, {} requests... ",
                args.requests
            );
            let run = run_once(url, args, c.min(args.requests)).await?;
            eprintln!(
                "mean {:.2} ms, p98 {:.2} ms, {} failed",
                run.mean_ms, run.p98_ms, run.failures
            );
            runs.push(run);
        }
        let sla_concurrency = args.sla.as_ref().and_then(|sla| {
            runs.iter()
                .filter(|r| r.meets(sla))
                .map(|r| r.concurrency)
                .max()
        });
        targets.push(Target {
            label,
            url: url.clone(),
            runs,
            sla_concurrency,
        });
    }
    for t in &targets {
        print_table(t);
    }
    if let Some(sla) = &args.sla {
        println!();
        for t in &targets {
            match t.sla_concurrency {
                Some(c) => println!(
                    "SLA {}: {} meets it up to {c} concurrent clients",
                    describe(sla),
                    t.label
                ),
                None => println!(
                    "SLA {}: {} meets it at none of the concurrencies tried",
                    describe(sla),
                    t.label
                ),
            }
        }
        if let Some(users) = args.users {
            match targets
                .iter()
                .position(|t| t.sla_concurrency.is_some_and(|c| c >= users))
            {
                Some(i) => println!(
                    "{users} users need {} node{} under this SLA",
                    i + 1,
                    if i == 0 { "" } else { "s" }
                ),
                None => println!(
                    "{users} users need more nodes than were measured ({})",
                    targets.len()
                ),
            }
        }
    }
    write_outputs(args, &targets)?;
    Ok(targets)
}

fn describe(sla: &Sla) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sla.max_ms {
        parts.push(format!("longest <= {m} ms"));
    }
    if let Some(m) = sla.mean_ms {
        parts.push(format!("mean <= {m} ms"));
    }
    if let Some(m) = sla.p98_ms {
        parts.push(format!("p98 <= {m} ms"));
    }
    format!("({})", parts.join(", "))
}

fn write_outputs(args: &SweepArgs, targets: &[Target]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({"requests": args.requests, "sla": args.sla, "users": args.users, "targets": targets});
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let svg = chart(targets);
    std::fs::write(args.out.join("sweep.svg"), &svg)?;
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loader sweep</title></head><body style=\"font-family:system-ui\"><h1>Mean response time vs concurrency</h1>{svg}<p>Data: results.json</p></body></html>"
    );
    std::fs::write(args.out.join("index.html"), html)?;
    println!(
        "\nwrote {}/results.json, sweep.svg, index.html",
        args.out.display()
    );
    Ok(())
}

/// Mean response time against concurrency, one line per target (plain SVG).
pub fn chart(targets: &[Target]) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let max_c = targets
        .iter()
        .flat_map(|t| &t.runs)
        .map(|r| r.concurrency)
        .max()
        .unwrap_or(1) as f64;
    let max_m = targets
        .iter()
        .flat_map(|t| &t.runs)
        .map(|r| r.mean_ms)
        .fold(0.0, f64::max)
        .max(1e-3);
    let x = |c: usize| pad + (c as f64 / max_c) * (w - 2.0 * pad);
    let y = |m: f64| h - pad - (m / max_m) * (h - 2.0 * pad);
    let colors = ["#1d4ed8", "#b91c1c", "#15803d", "#a16207", "#7e22ce"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    svg.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
        h - pad,
        w - pad,
        h - pad
    ));
    svg.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/>",
        h - pad
    ));
    svg.push_str(&format!("<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">concurrent clients (max {max_c})</text>", w / 2.0, h - 12.0));
    svg.push_str(&format!(
        "<text x=\"12\" y=\"{}\" font-size=\"12\">mean ms (max {max_m:.1})</text>",
        pad - 15.0
    ));
    for (i, t) in targets.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = t
            .runs
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.concurrency), y(r.mean_ms)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        ));
        for r in &t.runs {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(r.concurrency),
                y(r.mean_ms)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            w - pad - 80.0,
            pad + 16.0 * i as f64,
            crate::text::html(&t.label)
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_ab_style() {
        let mut l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let run = summarize(10, &mut l, 0, Duration::from_secs(1));
        assert_eq!(
            (run.mean_ms, run.p50_ms, run.p98_ms, run.max_ms),
            (50.5, 50.0, 98.0, 100.0)
        );
        assert_eq!(run.requests_per_second, 100.0);
        let sla = parse_sla("max=1.5s,mean=200ms,p98=300ms").expect("sla");
        assert_eq!(
            sla,
            Sla {
                max_ms: Some(1500.0),
                mean_ms: Some(200.0),
                p98_ms: Some(300.0)
            }
        );
        assert!(run.meets(&sla));
        assert!(!run.meets(&parse_sla("p98=90ms").expect("sla")));
        assert!(parse_sla("p95=1s").is_err());
    }
}
