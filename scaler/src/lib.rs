//! The scaler: the sidecar that fronts every service with a health-checked balancer,
//! keeps each service's replicas running (self-healing), and starts the whole platform
//! on a laptop (`scaler up`).

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod actuator;
pub mod admin;
pub mod autoscale;
pub mod balancer;
pub mod compare;
pub mod demo;
pub mod discovery;
pub mod docker;
pub mod events;
pub mod ingress;
pub mod kubernetes;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod simulate;
pub mod supervisor;
pub mod up;
pub mod window;

use balancer::Balancer;
use events::Events;
use supervisor::Supervisor;

/// One service under the scaler: its balancer, and its supervisor unless its
/// backends are static (`PUT /servers`).
#[derive(Debug, Clone)]
pub struct Service {
    pub balancer: Arc<Balancer>,
    pub supervisor: Option<Arc<Supervisor>>,
}

/// Everything the admin API and the ingress look at.
#[derive(Debug, Clone)]
pub struct Platform {
    pub services: Arc<BTreeMap<String, Service>>,
    pub events: Arc<Events>,
    /// Bearer token of the admin API's mutating routes (`SCALER_TOKEN`).
    pub token: Option<String>,
    /// The primary monitor's address (CS230's `/monitor`), if one registered.
    pub monitor: Arc<std::sync::RwLock<Option<String>>>,
    /// Where Prometheus scrapes the scaler itself (`/prometheus/targets` lists it);
    /// `None` when the admin API was not bound (some tests).
    pub admin: Option<discovery::AdminAddress>,
}
