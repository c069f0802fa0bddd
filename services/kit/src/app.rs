//! What the app's services (user, music, playlist) share beyond the kernel: their state
//! (the gateway client, the authenticator, the server flags), a readiness check on the
//! gateway, and their `main`.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;

use crate::auth::{Auth, HasAuth};
use crate::config::{AppArgs, ServerArgs};
use crate::datastore::Datastore;
use crate::health::{BoxFuture, Readiness};

/// The state of a service that keeps its data in the gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub datastore: Datastore,
    pub auth: Auth,
    pub server: ServerArgs,
}

impl ServiceState {
    pub fn new(app: &AppArgs, server: &ServerArgs) -> anyhow::Result<Self> {
        let (datastore, auth) = app.connect()?;
        Ok(Self {
            datastore,
            auth,
            server: server.clone(),
        })
    }

    /// Ready when the gateway says it is.
    pub fn readiness(&self) -> Readiness {
        let datastore = self.datastore.clone();
        Readiness::new(move || -> BoxFuture<'static, Result<(), String>> {
            let datastore = datastore.clone();
            Box::pin(async move { datastore.ready().await })
        })
    }
}

impl HasAuth for ServiceState {
    fn auth(&self) -> &Auth {
        &self.auth
    }
}

/// The `main` of such a service: checks the flags clap cannot (exit 2 with one line),
/// sets up telemetry, builds the router from the state, binds and serves until
/// SIGTERM / SIGINT.
pub async fn main(
    service: &'static str,
    listen: SocketAddr,
    app: &AppArgs,
    server: &ServerArgs,
    router: impl FnOnce(ServiceState) -> Router,
) -> anyhow::Result<()> {
    server.healthcheck_and_exit(listen);
    let mut app = app.clone();
    if let Err(message) = app.validate() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    let _telemetry = crate::telemetry::init(service, &server.log_format)?;
    tracing::info!(datastore = %app.datastore_url, auth = ?app.auth_mode, "starting");
    let state = ServiceState::new(&app, server)?;
    let listener = crate::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    crate::serve_with(listener, router(state), crate::shutdown_signal(), server)
        .await
        .context("serving")?;
    Ok(())
}
