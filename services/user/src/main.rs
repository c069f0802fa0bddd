//! `user`: parses its flags and hands over to the shared service `main`.

use clap::Parser as _;
use user::{Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    kit::app::main(
        SERVICE,
        config.listen,
        &config.app,
        &config.server,
        |service| user::app(user::AppState::new(service, config.allow_uid_login)),
    )
    .await
}
