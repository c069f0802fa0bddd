//! The playlist service of the CMPT 756 app (course "s3"): named, ordered lists of
//! songs. Songs are checked against the music table; concurrent edits of one playlist
//! never lose an update (versioned writes with retry). Data lives in the gateway.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use clap::Parser;
use kit::config::AppArgs;
use kit::{Kit, ServerArgs};
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

mod routes;
pub mod songs;

pub const SERVICE: &str = "playlist";

/// scalelab playlist service (CMPT 756 "s3").
#[derive(Debug, Clone, Parser)]
#[command(name = "playlist", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:30003", value_parser = kit::config::parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub app: AppArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// user and playlist need nothing beyond the shared service state.
pub type AppState = kit::app::ServiceState;

pub fn app(state: AppState) -> Router {
    let readiness = state.readiness();
    let kit = Kit::new(SERVICE, "playlist", &state.server).with_readiness(readiness);
    let api = Router::new()
        .route("/api/v1/playlist/", get(routes::list).post(routes::create))
        .route("/api/v1/playlist", get(routes::list).post(routes::create))
        .route(
            "/api/v1/playlist/{playlist_id}",
            get(routes::read).delete(routes::delete),
        )
        .route("/api/v1/playlist/{playlist_id}/add", post(routes::add))
        .route(
            "/api/v1/playlist/{playlist_id}/delete",
            post(routes::remove),
        )
        .with_state(state)
        .merge(kit::docs::router(kit::docs::with_bearer(
            routes::ApiDoc::openapi(),
        )));
    kit.into_router(api)
}

pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.server.clone();
    kit::serve_with(listener, app(state), shutdown, &server).await
}
