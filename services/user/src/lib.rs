//! The user service of the CMPT 756 app (course "s1"): users with unique emails and
//! optional Argon2-hashed passwords, login (an HS256 JWT) and logoff (revocation seen
//! by every replica within seconds). Data lives in the database gateway.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, put};
use clap::Parser;
use kit::app::ServiceState;
use kit::config::AppArgs;
use kit::{Auth, HasAuth, Kit, ServerArgs};
use tokio::net::TcpListener;
use utoipa::OpenApi as _;

mod password;
mod routes;

pub const SERVICE: &str = "user";

/// scalelab user service (CMPT 756 "s1").
#[derive(Debug, Clone, Parser)]
#[command(name = "user", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:30000", value_parser = kit::config::parse_listen)]
    pub listen: SocketAddr,

    /// In jwt mode, let users without a password (course data loaded from CSV) log in
    /// by `uid` alone. `scaler up` and `scaler demo` turn it on; deployments leave it off.
    #[arg(long, env = "ALLOW_UID_LOGIN")]
    pub allow_uid_login: bool,

    #[command(flatten)]
    pub app: AppArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// The shared service state, the password workers and the login throttle.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: ServiceState,
    pub passwords: password::Hasher,
    pub throttle: password::Throttle,
    pub allow_uid_login: bool,
}

impl AppState {
    pub fn new(service: ServiceState, allow_uid_login: bool) -> Self {
        Self {
            service,
            passwords: password::Hasher::new(),
            throttle: password::Throttle::default(),
            allow_uid_login,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = ServiceState;

    fn deref(&self) -> &ServiceState {
        &self.service
    }
}

impl HasAuth for AppState {
    fn auth(&self) -> &Auth {
        &self.service.auth
    }
}

pub fn app(state: AppState) -> Router {
    let readiness = state.readiness();
    let kit = Kit::new(SERVICE, "user", &state.server).with_readiness(readiness);
    let api = Router::new()
        .route("/api/v1/user/", get(routes::list).post(routes::create))
        .route("/api/v1/user", get(routes::list).post(routes::create))
        .route("/api/v1/user/login", put(routes::login))
        .route("/api/v1/user/logoff", put(routes::logoff))
        .route(
            "/api/v1/user/{user_id}",
            get(routes::read).put(routes::update).delete(routes::delete),
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
