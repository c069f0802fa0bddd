//! The database gateway: the only component that touches storage. It serves
//! `/api/v1/datastore` (API.md) over one [`store::Store`] trait with SQLite (default),
//! PostgreSQL and DynamoDB engines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post, put};
use kit::{Kit, Readiness, ServerArgs};
use tokio::net::TcpListener;

pub mod auth;
pub mod config;
pub mod domain;
pub mod routes;
pub mod store;

pub use config::{Config, DatabaseUrl};

/// Metrics and trace name of this service.
pub const SERVICE: &str = "database-gateway";

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn store::Store>,
    pub datastore_token: Option<String>,
    pub loader_token: Option<String>,
    pub server: ServerArgs,
}

impl AppState {
    /// Opens the store `config` names and gathers the credentials.
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (mut datastore_token, mut loader_token) =
            (config.datastore_token.clone(), config.loader_token.clone());
        kit::config::read_secret(&mut datastore_token, config.datastore_token_file.as_deref())
            .map_err(anyhow::Error::msg)?;
        kit::config::read_secret(&mut loader_token, config.loader_token_file.as_deref())
            .map_err(anyhow::Error::msg)?;
        // Set but empty is a mistake, not "no check".
        for (name, token) in [
            ("DATASTORE_TOKEN", &datastore_token),
            ("SVC_LOADER_TOKEN", &loader_token),
        ] {
            anyhow::ensure!(
                token.as_deref() != Some(""),
                "{name} is set but empty: give it a value, or unset it"
            );
        }
        let database_url = match &config.database_url_file {
            None => config.database_url.clone(),
            Some(file) => {
                let mut text = None;
                kit::config::read_secret(&mut text, Some(file)).map_err(anyhow::Error::msg)?;
                DatabaseUrl::parse(text.as_deref().unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("the database URL in {}: {e}", file.display()))?
            }
        };
        Ok(Self {
            store: store::open(&database_url, config.dynamodb_url.as_deref()).await?,
            datastore_token,
            loader_token,
            server: config.server.clone(),
        })
    }
}

/// The gateway's router, with the kit's endpoints and layers.
pub fn app(state: AppState) -> Router {
    let store = state.store.clone();
    let readiness = Readiness::new(
        move || -> kit::health::BoxFuture<'static, Result<(), String>> {
            let store = store.clone();
            Box::pin(async move {
                store
                    .ping()
                    .await
                    .map_err(|e| format!("{} store: {e}", store.engine()))
            })
        },
    );
    let kit = Kit::new(SERVICE, "datastore", &state.server).with_readiness(readiness);

    let guarded = Router::new()
        .route("/api/v1/datastore/read", get(routes::read))
        .route("/api/v1/datastore/write", post(routes::write))
        .route("/api/v1/datastore/update", put(routes::update))
        .route("/api/v1/datastore/delete", delete(routes::delete))
        .route("/api/v1/datastore/list", get(routes::list))
        .route("/api/v1/datastore/find", get(routes::find))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_service_token,
        ));
    let load = Router::new().route("/api/v1/datastore/load", post(routes::load));
    kit.into_router(guarded.merge(load).with_state(state))
}

/// Serves the gateway on `listener` until `shutdown` resolves, and expires old
/// idempotency keys in the background.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.server.clone();
    let sweeper = tokio::spawn(expire_idempotency_keys(state.store.clone()));
    let result = kit::serve_with(listener, app(state), shutdown, &server).await;
    sweeper.abort();
    result
}

async fn expire_idempotency_keys(store: Arc<dyn store::Store>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match store.expire_idempotency_keys(IDEMPOTENCY_TTL_SECS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "forgot old idempotency keys"),
            Err(e) => tracing::debug!(error = %e, "idempotency key expiry skipped"),
        }
    }
}
