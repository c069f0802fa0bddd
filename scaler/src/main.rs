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
    /// Set the replica count of a service of a running `scaler up`.
    Replicas {
        service: String,
        count: usize,
        /// The admin API of the running scaler.
        #[arg(long, default_value = "http://127.0.0.1:30010")]
        admin: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let _telemetry = kit::telemetry::init("scaler", "text")?;
            scaler::up::run(args).await
        }
        Command::Replicas {
            service,
            count,
            admin,
        } => {
            let client = kit::HttpClient::new(kit::client::ClientOptions::default())?;
            let mut request = client
                .put(format!("{}/replicas", admin.trim_end_matches('/')))
                .json(&serde_json::json!({"service": service, "replicas": count}));
            if let Ok(token) = std::env::var("SCALER_TOKEN") {
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
