//! `scaler`: `up` starts the whole platform; `replicas` changes a count while it runs.

use clap::{Parser, Subcommand};

/// scalelab scaler: balancers, self-healing replicas, and the platform on one machine.
#[derive(Debug, Parser)]
#[command(name = "scaler", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole platform (gateway on SQLite, course data, every service behind a
    /// balancer, ingress, admin API) and run until Ctrl-C.
    Up(scaler::up::UpArgs),
    /// On Kubernetes: autoscale the Deployments of `[autoscale.<deployment>]` through
    /// their scale subresource, from their pods' `/metrics`; of several replicas only
    /// the holder of a Lease acts.
    K8s(scaler::kubernetes::K8sArgs),
    /// Run policies against a load trace on a queueing model of replicas, and compare.
    Simulate {
        /// `cmpt756-steps`, `flash-crowd`, `burst`, `diurnal`, `all`, or a CSV of `seconds,users`.
        #[arg(long, default_value = "all")]
        trace: String,
        /// Comma-separated: hpa, kpa, threshold, littles, or `all`.
        #[arg(long, default_value = "all")]
        policy: String,
        /// One JSON object per policy and trace instead of the table.
        #[arg(long)]
        json: bool,
        /// Folder for the charts (one SVG per trace).
        #[arg(long, default_value = "simulate-results")]
        out: std::path::PathBuf,
        /// Seed of the load noise.
        #[arg(long, default_value_t = 756)]
        seed: u64,
        /// A closed loop: users think this long between an answer and their next
        /// request, as the loader's do (`1s` for the course's scenarios); `0s`, the
        /// default, is an open loop at 1 request per second per user.
        #[arg(long, default_value = "0s", value_parser = kit::config::parse_duration)]
        think: std::time::Duration,
    },
    /// The showcase: the platform, the course data, CMPT 756 scenarios 0-5 with the
    /// loader, autoscaling, a killed replica, and a report (demo-report/index.html).
    Demo(scaler::demo::DemoArgs),
    /// Create the platform's secrets as files in DIR where they are missing (random,
    /// 256 bits each: jwt-secret, datastore-token, loader-token, scaler-token); what a
    /// deployment mounts and passes as `*_FILE`. Existing ones are kept.
    Secrets {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Also postgres-password, and postgres-url for the gateway
        /// (postgres://scalelab:<password>@postgres:5432/scalelab).
        #[arg(long)]
        postgres: bool,
        /// Also grafana-admin-password (Grafana's `admin`, the observability profile).
        #[arg(long)]
        grafana: bool,
    },
    /// Probe a running scaler's admin API (`GET /health_check`) and exit 0 when it
    /// answers 200: the container health check (the image has no shell or curl).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:30010")]
        admin: std::net::SocketAddr,
    },
    /// Set the replica count of a service of a running `scaler up`.
    Replicas {
        service: String,
        count: usize,
        /// The admin API of the running scaler.
        #[arg(long, default_value = "http://127.0.0.1:30010")]
        admin: String,
        /// Its token, when neither SCALER_TOKEN nor SCALER_TOKEN_FILE is set: the file
        /// `scaler up` generated in its data dir.
        #[arg(long, default_value = "data/scaler-token")]
        token_file: std::path::PathBuf,
    },
}

fn simulate(
    trace: &str,
    policies: &str,
    json: bool,
    out: &std::path::Path,
    seed: u64,
    think: std::time::Duration,
) -> anyhow::Result<()> {
    use scaler::simulate::{self, Model, Trace};
    let think_s = think.as_secs_f64();
    let model = Model {
        seed,
        think_s,
        rate_per_user: if think_s > 0.0 { 1.0 / think_s } else { 1.0 },
        ..Model::default()
    };
    let traces: Vec<Trace> = match trace {
        "all" => ["cmpt756-steps", "flash-crowd", "burst", "diurnal"]
            .iter()
            .filter_map(|t| Trace::builtin(t, seed))
            .collect(),
        name => vec![match Trace::builtin(name, seed) {
            Some(t) => t,
            None => Trace::from_file(std::path::Path::new(name)).map_err(|e| {
                anyhow::anyhow!(
                    "{e:#} (built-in traces: cmpt756-steps, flash-crowd, burst, diurnal)"
                )
            })?,
        }],
    };
    let names: Vec<&str> = if policies == "all" {
        simulate::POLICIES.to_vec()
    } else {
        policies.split(',').map(str::trim).collect()
    };
    for name in &names {
        anyhow::ensure!(
            simulate::policy(name, &model).is_some(),
            "unknown policy `{name}` (hpa, kpa, threshold, littles)"
        );
    }
    std::fs::create_dir_all(out)?;
    let mut all = Vec::new();
    for trace in &traces {
        let outcomes: Vec<_> = names
            .iter()
            .filter_map(|name| simulate::policy(name, &model))
            .map(|p| simulate::run(&model, trace, p))
            .collect();
        std::fs::write(
            out.join(format!("{}.svg", trace.name.replace(['/', '.'], "_"))),
            simulate::chart(&outcomes, model.slo_p99_ms),
        )?;
        all.extend(outcomes);
    }
    if json {
        for o in &all {
            println!("{}", serde_json::to_string(o)?);
        }
    } else {
        println!(
            "model: {} req/s per replica, {} s start-up, p99 SLO {} ms, {}",
            model.capacity_rps,
            model.startup_s,
            model.slo_p99_ms,
            if think_s > 0.0 {
                format!("closed loop: users think {think_s} s between requests")
            } else {
                format!("open loop: {} req/s per user", model.rate_per_user)
            }
        );
        print!("{}", simulate::table(&all));
        println!("charts: {}", out.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let _telemetry = kit::telemetry::init("scaler", "text")?;
            scaler::up::run(args).await
        }
        Command::K8s(args) => {
            let format = std::env::var("LOG_FORMAT").unwrap_or_else(|_| "text".to_owned());
            let _telemetry = kit::telemetry::init("scaler", &format)?;
            scaler::kubernetes::run(args).await
        }
        Command::Demo(args) => {
            // The demo prints its own account of events; logs only for problems.
            let _telemetry = kit::telemetry::init_with("scaler", "text", "warn")?;
            scaler::demo::run(args).await
        }
        Command::Simulate {
            trace,
            policy,
            json,
            out,
            seed,
            think,
        } => simulate(&trace, &policy, json, &out, seed, think),
        Command::Secrets {
            dir,
            postgres,
            grafana,
        } => {
            let extra = [
                (postgres, "postgres-password"),
                (grafana, "grafana-admin-password"),
            ];
            let extra = extra.iter().filter(|(on, _)| *on).map(|(_, name)| name);
            for name in scaler::up::SECRETS.iter().chain(extra) {
                let created = scaler::up::ensure_secret(&dir, name, None)?;
                println!(
                    "{}: {}",
                    dir.join(name).display(),
                    if created { "created" } else { "kept" }
                );
            }
            if postgres {
                let mut password = None;
                kit::config::read_secret(&mut password, Some(&dir.join("postgres-password")))
                    .map_err(anyhow::Error::msg)?;
                let url = format!(
                    "postgres://scalelab:{}@postgres:5432/scalelab",
                    password.unwrap_or_default()
                );
                let created = scaler::up::ensure_secret(&dir, "postgres-url", Some(&url))?;
                println!(
                    "{}: {}",
                    dir.join("postgres-url").display(),
                    if created { "created" } else { "kept" }
                );
            }
            Ok(())
        }
        Command::Healthcheck { admin } => {
            std::process::exit(kit::health::probe(admin, "/health_check"))
        }
        Command::Replicas {
            service,
            count,
            admin,
            token_file,
        } => {
            let client = kit::HttpClient::new(kit::client::ClientOptions::default())?;
            let mut request = client
                .put(format!("{}/replicas", admin.trim_end_matches('/')))
                .json(&serde_json::json!({"service": service, "replicas": count}));
            let mut token = scaler::up::scaler_token()?;
            if token.is_none() && token_file.exists() {
                kit::config::read_secret(&mut token, Some(&token_file))
                    .map_err(anyhow::Error::msg)?;
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = client.send(request).await?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "{status}: {body}");
            println!("{service}: {count} replicas requested");
            Ok(())
        }
    }
}
