//! Shared pieces: building the service binaries, fake backends, serving a balancer.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use scaler::balancer::Balancer;
use scaler::events::Events;
use scaler::pool::{Pool, Strategy};

/// Tests that run real replicas under load and measure CPU or recovery times hold this:
/// one at a time, so none takes the cores another one measures.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Builds the service binaries once and returns their folder.
pub fn binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "database-gateway",
                "-p",
                "music",
                "-p",
                "fibonacci",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the service binaries failed");
        let exe = std::env::current_exe().expect("test executable");
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf()
    })
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// Serves `router` on a free loopback port; returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A balancer for `service` with an empty pool, served on a free port.
pub async fn balancer(service: &str) -> (Arc<Balancer>, String) {
    let pool = Arc::new(Pool::new(Strategy::P2c));
    let balancer = Balancer::new(
        service,
        pool,
        Arc::new(Events::default()),
        Duration::from_secs(10),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let routes = scaler::proxy::Routes::Service(balancer.clone());
    tokio::spawn(async move {
        scaler::proxy::serve(
            listener,
            routes,
            std::future::pending(),
            &kit::ServerArgs::default(),
        )
        .await
    });
    (balancer, base)
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}
