//! `database-gateway`: reads config, sets up telemetry, binds, and serves.

use anyhow::Context as _;
use clap::Parser as _;
use database_gateway::{AppState, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.server.healthcheck_and_exit(config.listen);
    let _telemetry = kit::telemetry::init(SERVICE, &config.server.log_format)?;
    tracing::info!(database = ?config.database_url, "starting");
    let state = AppState::from_config(&config)
        .await
        .context("opening the store")?;
    if state.datastore_token.is_none() {
        tracing::warn!(
            "no DATASTORE_TOKEN: any caller that reaches this port can read and change every \
             item, password hashes, email claims and revoked tokens included"
        );
    }
    let listener = kit::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    database_gateway::run(listener, state, kit::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
