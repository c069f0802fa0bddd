//! `fibonacci`: reads config, sets up telemetry, binds, and serves.

use anyhow::Context as _;
use clap::Parser as _;
use fibonacci::{AppState, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.server.healthcheck_and_exit(config.listen);
    let _telemetry = kit::telemetry::init(SERVICE, &config.server.log_format)?;
    let state = AppState::new(&config);
    let listener = kit::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    fibonacci::run(listener, state, kit::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
