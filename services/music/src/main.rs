//! `music`: parses its flags and hands over to the shared service `main`.

use clap::Parser as _;
use music::{AppState, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (version, error_percent) = (config.music_version, config.error_percent);
    kit::app::main(
        SERVICE,
        config.listen,
        &config.app,
        &config.server,
        move |service| {
            music::app(AppState {
                service,
                version,
                error_percent,
            })
        },
    )
    .await
}
