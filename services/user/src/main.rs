//! `user`: reads config, sets up telemetry, binds, and serves.

use anyhow::Context as _;
use clap::Parser as _;
use user::{AppState, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(message) = config.app.validate() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    let _telemetry = kit::telemetry::init(SERVICE, &config.server.log_format)?;
    tracing::info!(datastore = %config.app.datastore_url, auth = ?config.app.auth_mode, "starting");
    let state = AppState::from_config(&config)?;
    let listener = kit::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    user::run(listener, state, kit::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
