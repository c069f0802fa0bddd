//! The music service of the CMPT 756 app (course "s2"): songs with artist, title and
//! original artist, in versions v1 and v2 (v2 fails a share of reads, for canary
//! demos). Data lives in the database gateway; every route but the probes needs auth.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use clap::Parser;
use kit::app::ServiceState;
use kit::config::AppArgs;
use kit::{Auth, HasAuth, Kit, ServerArgs};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;

mod routes;

pub const SERVICE: &str = "music";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// scalelab music service (CMPT 756 "s2").
#[derive(Debug, Clone, Parser)]
#[command(name = "music", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:30001", value_parser = kit::config::parse_listen)]
    pub listen: SocketAddr,

    /// Behaviour: `v1`, or `v2`, which answers a share of song reads with a 500.
    #[arg(long, env = "MUSIC_VERSION", value_enum, default_value = "v1")]
    pub music_version: Version,

    /// Percentage of song reads v2 fails (0 to 100).
    #[arg(long, env = "MUSIC_ERROR_PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub error_percent: u8,

    #[command(flatten)]
    pub app: AppArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: ServiceState,
    pub version: Version,
    pub error_percent: u8,
}

impl HasAuth for AppState {
    fn auth(&self) -> &Auth {
        &self.service.auth
    }
}

pub fn app(state: AppState) -> Router {
    let readiness = state.service.readiness();
    let kit = Kit::new(SERVICE, "music", &state.service.server).with_readiness(readiness);
    let version = HeaderValue::from_static(state.version.as_str());
    let api = Router::new()
        .route("/api/v1/music/", get(routes::list).post(routes::create))
        .route("/api/v1/music", get(routes::list).post(routes::create))
        .route(
            "/api/v1/music/{music_id}",
            get(routes::read).put(routes::update).delete(routes::delete),
        )
        .route(
            "/api/v1/music/read_orig_artist/{music_id}",
            get(routes::read_orig_artist),
        )
        .route(
            "/api/v1/music/write_orig_artist/{music_id}",
            axum::routing::put(routes::write_orig_artist),
        )
        .with_state(state)
        .merge(kit::docs::router(kit::docs::with_bearer(
            routes::ApiDoc::openapi(),
        )));
    kit.into_router(api)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-service-version"),
            version,
        ))
}

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.service.server.clone();
    kit::serve_with(listener, app(state), shutdown, &server).await
}
