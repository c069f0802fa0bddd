//! `loader run <scenario>`: the course's Gatling simulations and the CMPT 756 scaling
//! scenarios, natively.
//!
//! The engine is our own small tokio one rather than goose: goose drives a fixed
//! number of users (with throttling), and these scenarios also need Gatling's
//! `rampConcurrentUsers`, held user steps and an open model whose latency is measured
//! from each request's intended start (coordinated omission corrected), which is
//! simpler to get exactly right with a scheduler of our own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod engine;
mod report;
pub mod scenario;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A scenario name in gatling/scenarios/ (e.g. ReadMusicSim), or a file.
    pub scenario: String,

    /// One front door for every service (the platform's ingress).
    #[arg(long, default_value = "http://127.0.0.1:30080")]
    pub base_url: String,

    /// Send one service's requests elsewhere: `music=http://127.0.0.1:30001` (repeatable).
    #[arg(long = "service", value_parser = parse_service)]
    pub services: Vec<(String, String)>,

    /// Stop after this long (scenarios that loop forever need it, or Ctrl-C).
    #[arg(long, value_parser = kit::config::parse_duration)]
    pub duration: Option<Duration>,

    /// Compress the scenario's times (holds, ramps, think time) by this factor.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,

    /// Also report the requests answered after this long (wall-clock, from the start):
    /// the steady state without the users' arrival, as a row of its own.
    #[arg(long, value_parser = kit::config::parse_duration)]
    pub warmup: Option<Duration>,

    /// Folder for results.json and index.html.
    #[arg(long, default_value = "loader-results")]
    pub out: PathBuf,

    /// Where scenario names are looked up.
    #[arg(long, default_value = "gatling/scenarios")]
    pub scenarios: PathBuf,
}

fn parse_service(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=URL"))?;
    if !url.starts_with("http://") {
        return Err(format!("`{url}`: only http:// URLs"));
    }
    Ok((name.to_owned(), url.to_owned()))
}

pub async fn run(args: &RunArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.time_scale > 0.0, "--time-scale must be positive");
    let (scenario, path) =
        scenario::Scenario::load(&args.scenario, std::slice::from_ref(&args.scenarios))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    eprintln!(
        "{}: {} ({})",
        crate::text::visible(&scenario.name),
        crate::text::visible(&scenario.description),
        crate::text::visible(&path.display().to_string())
    );
    let plan = engine::Plan {
        base_url: args.base_url.clone(),
        services: args.services.iter().cloned().collect::<BTreeMap<_, _>>(),
        duration: args.duration,
        time_scale: args.time_scale,
    };
    let name = scenario.name.clone();
    // A connection per user and service (the stepped course scenarios reach 1500).
    let services = 1 + scenario
        .requests
        .iter()
        .filter_map(|r| r.service.as_ref())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let wanted = scenario.injection.peak_users() as usize * services;
    crate::conn::make_room_for_descriptors(
        wanted,
        &format!("the {wanted} connections this scenario may open"),
    );
    let (recorder, seconds) = engine::run(scenario, &dir, plan).await?;
    let warmup = args.warmup.map(|w| w.as_secs_f64());
    let report = report::build(&recorder, seconds, warmup);
    println!("\n{}: {seconds:.1} s", crate::text::visible(&name));
    print!("{}", report::table(&report.rows));
    report::write(&args.out, &name, &report, seconds)?;
    println!("wrote {}/results.json and index.html", args.out.display());
    Ok(report
        .rows
        .iter()
        .find(|r| r.name == report::ALL)
        .is_some_and(|all| all.ko == 0 && all.count > 0))
}
