//! The scaler on Kubernetes (`scaler k8s`): for each `[autoscale.<deployment>]` of its
//! configuration, it reads the Deployment's ready pods' `/metrics` (found through the
//! EndpointSlices of the Service of the same name), decides with the same policies as
//! `scaler up`, and sets the Deployment's scale subresource. Several replicas run; only
//! the holder of a `coordination.k8s.io` Lease acts (the CS230 monitor's election, done
//! with a lease, as client-go's leader election does it).
//!
//! The API calls are exactly those the `scaler` Role of `k8s/components/scaler` grants:
//! leases get/create/update, deployments/scale get/update, endpointslices list.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::watch;

use crate::autoscale::{Observe, ScaleTarget};
use crate::events::{Events, Kind};
use crate::policy::Observation;

#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    /// `[autoscale.<deployment>]` tables (policy, bounds, target) and `[cpu_limit]`
    /// (cores per pod, for CPU utilization), as in `scaler.toml`.
    #[arg(
        long,
        env = "SCALER_CONFIG",
        default_value = "/etc/scalelab/scaler.toml"
    )]
    pub config: PathBuf,

    /// The namespace of the Deployments and of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "scalelab")]
    pub namespace: String,

    /// This replica's name in the Lease (its pod's name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The Lease the replicas compete for.
    #[arg(long, default_value = "scaler-leader")]
    pub lease_name: String,

    /// How long a Lease holds without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = kit::config::parse_duration)]
    pub lease_duration: Duration,

    /// How often the holder renews and a standby retries.
    #[arg(long, default_value = "2s", value_parser = kit::config::parse_duration)]
    pub retry_period: Duration,

    /// Health, readiness, leadership and metrics (`/health`, `/readiness`, `/status`,
    /// `/metrics`).
    #[arg(long, env = "SCALER_LISTEN", default_value = "0.0.0.0:30010")]
    pub listen: SocketAddr,

    /// The API server's URL, plain and without credentials (`kubectl proxy`'s
    /// `http://127.0.0.1:8001`, or a test's fake server). Unset: the in-cluster
    /// configuration, or the kubeconfig.
    #[arg(long, env = "KUBERNETES_API_URL")]
    pub api_server: Option<String>,
}

/// Runs until SIGTERM or Ctrl-C; then steps down (an empty holder) so a standby takes
/// over at once.
pub async fn run(args: K8sArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let config: crate::up::FileConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    anyhow::ensure!(
        !config.autoscale.is_empty(),
        "{}: no [autoscale.<deployment>] table: nothing to scale",
        args.config.display()
    );
    let mut policies = Vec::new();
    for (name, autoscale) in &config.autoscale {
        policies.push((
            name.clone(),
            autoscale.clone(),
            config.cpu_limit.get(name).copied().unwrap_or(1.0),
        ));
        autoscale
            .build()
            .map_err(|e| anyhow::anyhow!("[autoscale.{name}]: {e}"))?;
    }
    let client = client(args.api_server.as_deref()).await?;
    let identity = match args.identity.clone() {
        Some(id) if !id.is_empty() => id,
        _ => format!("scaler-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let events = Arc::new(Events::default());
    let election = Election::new(
        Api::namespaced(client.clone(), &args.namespace),
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    let leading = election.subscribe();
    let observations = Observations::default();
    let status = Status {
        observations: observations.clone(),
        identity: identity.clone(),
        election: election.clone(),
        events: events.clone(),
        services: policies.iter().map(|(n, _, _)| n.clone()).collect(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", args.listen))?;
    tracing::info!(
        identity,
        namespace = args.namespace,
        lease = args.lease_name,
        "scaler k8s on {}",
        listener.local_addr()?
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(status)).await {
            tracing::error!("status server: {e}");
        }
    });

    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    for (name, autoscale, cores) in policies {
        events.register(&name);
        let target = Arc::new(DeploymentScale {
            api: Api::namespaced(client.clone(), &args.namespace),
            name: name.clone(),
            manager: field_manager(&identity),
            election: election.clone(),
            events: events.clone(),
        });
        let observer = PodsObserver::new(
            Api::namespaced(client.clone(), &args.namespace),
            &name,
            cores,
            observations.clone(),
        );
        tasks.push(tokio::spawn(act_while_leading(
            target,
            observer,
            autoscale,
            leading.clone(),
            stop.clone(),
        )));
    }
    let elector = tokio::spawn(election.clone().run(args.retry_period, stop.clone()));
    shutdown_signal().await;
    tracing::info!("stopping: stepping down");
    let _ = stop_tx.send(true);
    let _ = elector.await;
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A client for `url` (plain HTTP, no credentials), or the inferred configuration.
pub async fn client(url: Option<&str>) -> anyhow::Result<kube::Client> {
    let config = match url {
        Some(url) => kube::Config::new(
            url.parse()
                .map_err(|e| anyhow::anyhow!("--api-server {url}: {e}"))?,
        ),
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes configuration (in-cluster or kubeconfig): {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}

/// The field manager of this replica's scale writes: the API server's record of who
/// acted (`scaler/<identity>`, at most 128 bytes).
fn field_manager(identity: &str) -> String {
    let mut manager = format!("scaler/{identity}");
    manager.truncate(128);
    manager
}

/// Runs the policy of `name` whenever this replica leads, from a fresh policy state each
/// time it becomes the leader, until `stop`.
async fn act_while_leading(
    target: Arc<DeploymentScale>,
    mut observer: PodsObserver,
    autoscale: crate::autoscale::AutoscaleConfig,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let Ok(policy) = autoscale.build() else {
            return;
        };
        let (quit_tx, quit) = watch::channel(false);
        observer.forget();
        let run = crate::autoscale::run_with(target.clone(), &mut observer, policy, quit);
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            _ = leading.wait_for(|l| !*l) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        let _ = quit_tx.send(true);
        run.await;
        if *stop.borrow() {
            return;
        }
    }
}

// --- leader election -------------------------------------------------------------------

/// Leader election on a Lease. The holder renews every retry period; a standby takes
/// the Lease when it has seen it unchanged for a whole lease duration (its own clock, as
/// client-go does, so clocks need not agree). Writes carry the Lease's
/// `resourceVersion`: of two replicas taking it at once, one gets 409 and stands by.
/// The holder counts as leading only while its last renewal is younger than two thirds
/// of the lease duration, so a leader that was paused stops acting before a standby
/// can take over.
#[derive(Clone)]
pub struct Election {
    inner: Arc<ElectionInner>,
}

struct ElectionInner {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    state: std::sync::Mutex<ElectionState>,
    leading: watch::Sender<bool>,
}

#[derive(Default)]
struct ElectionState {
    /// The Lease's last seen resourceVersion, and when this replica first saw it.
    observed: Option<(String, Instant)>,
    /// The holder at the last look.
    holder: Option<String>,
    /// When this replica last took or renewed the Lease.
    renewed: Option<Instant>,
    transitions: u64,
}

impl Election {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            inner: Arc::new(ElectionInner {
                api,
                name: name.to_owned(),
                identity: identity.to_owned(),
                duration,
                state: std::sync::Mutex::default(),
                leading: watch::channel(false).0,
            }),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.leading.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ElectionState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this replica holds the Lease and renewed it recently enough to act.
    pub fn is_leader(&self) -> bool {
        self.state()
            .renewed
            .is_some_and(|t| t.elapsed() < self.inner.duration * 2 / 3)
    }

    /// The holder this replica last saw (itself included).
    pub fn holder(&self) -> Option<String> {
        self.state().holder.clone()
    }

    /// Tries to take or renew the Lease until `stop`, every `retry`; steps down on stop.
    pub async fn run(self, retry: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let leading = match self.try_acquire_or_renew().await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(lease = %self.inner.name, "lease: {e}");
                    self.is_leader()
                }
            };
            let was = *self.inner.leading.borrow();
            if leading != was {
                if leading {
                    tracing::info!(identity = %self.inner.identity, "leading: took the lease");
                } else {
                    tracing::info!(identity = %self.inner.identity, "standing by: lost the lease");
                }
                let _ = self.inner.leading.send(leading);
            }
            // Check leadership again when it would lapse, if that comes sooner.
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let _ = self.inner.leading.send(false);
        self.step_down().await;
    }

    /// One round: take the Lease when it is free or expired, renew it when held.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.inner.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let lease = match self.inner.api.get_opt(&self.inner.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.inner.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.inner.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                let tried = Instant::now();
                return match self.inner.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.took(&created, tried);
                        Ok(true)
                    }
                    Err(e) if is_status(&e, 409) => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let first_seen = {
            let mut state = self.state();
            state.holder.clone_from(&holder);
            match &state.observed {
                Some((v, at)) if *v == version => *at,
                _ => {
                    let at = Instant::now();
                    state.observed = Some((version.clone(), at));
                    at
                }
            }
        };
        let mine = holder.as_deref() == Some(self.inner.identity.as_str());
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
        );
        if !mine && holder.is_some() && first_seen.elapsed() < held_for {
            // Held by another, and renewed within its duration as far as this replica saw.
            self.state().renewed = None;
            return Ok(false);
        }
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            spec.holder_identity = Some(self.inner.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        let tried = Instant::now();
        match self
            .inner
            .api
            .replace(&self.inner.name, &PostParams::default(), &next)
            .await
        {
            Ok(replaced) => {
                if !mine {
                    self.state().transitions += 1;
                }
                self.took(&replaced, tried);
                Ok(true)
            }
            // Someone else wrote it first (renewed, or took it): stand by.
            Err(e) if is_status(&e, 409) => {
                self.state().renewed = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Records a successful write: the renewal time is when it was sent, not answered.
    fn took(&self, lease: &Lease, sent: Instant) {
        let mut state = self.state();
        state.renewed = Some(sent);
        state.holder = Some(self.inner.identity.clone());
        state.observed = lease
            .metadata
            .resource_version
            .clone()
            .map(|v| (v, Instant::now()));
    }

    /// Gives the Lease up (empty holder, 1 s duration) if this replica holds it.
    async fn step_down(&self) {
        self.state().renewed = None;
        let Ok(Some(mut lease)) = self.inner.api.get_opt(&self.inner.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.inner.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .inner
            .api
            .replace(&self.inner.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("stepped down: the lease is free"),
            Err(e) => tracing::warn!("stepping down: {e}"),
        }
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

// --- the scale subresource ---------------------------------------------------------------

/// A Deployment's replica count, through its scale subresource: read, then written back
/// with the `resourceVersion` read (a conflict is read again and retried).
pub struct DeploymentScale {
    pub api: Api<Deployment>,
    pub name: String,
    pub manager: String,
    pub election: Election,
    pub events: Arc<Events>,
}

/// Conflicts retried before a scale change is given up until the next tick.
const CONFLICT_RETRIES: usize = 5;

impl DeploymentScale {
    /// Sets the replica count to `n` unless this replica stopped leading; returns the
    /// count before, or why not.
    pub async fn set(&self, n: usize) -> anyhow::Result<Option<usize>> {
        let replicas = i32::try_from(n)?;
        for _ in 0..CONFLICT_RETRIES {
            // Checked before every write: a paused leader must not act once a standby
            // may have taken over.
            anyhow::ensure!(self.election.is_leader(), "not the leader");
            let mut scale = self.api.get_scale(&self.name).await?;
            let spec = scale.spec.get_or_insert_with(Default::default);
            let before = spec.replicas.unwrap_or(0);
            if before == replicas {
                return Ok(None);
            }
            spec.replicas = Some(replicas);
            let params = PostParams {
                field_manager: Some(self.manager.clone()),
                ..PostParams::default()
            };
            match self.api.replace_scale(&self.name, &params, &scale).await {
                Ok(_) => return Ok(Some(usize::try_from(before).unwrap_or(0))),
                Err(e) if is_status(&e, 409) => {
                    tracing::info!(deployment = %self.name, "scale conflict: reading again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("{CONFLICT_RETRIES} conflicts in a row")
    }
}

#[async_trait::async_trait]
impl ScaleTarget for DeploymentScale {
    async fn desired(&self) -> usize {
        match self.api.get_scale(&self.name).await {
            Ok(scale) => scale
                .spec
                .and_then(|s| s.replicas)
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or(0),
            Err(e) => {
                tracing::warn!(deployment = %self.name, "reading the scale: {e}");
                0
            }
        }
    }

    async fn scale(&self, n: usize, reason: &str) {
        match self.set(n).await {
            Ok(Some(before)) => self.events.record(
                &self.name,
                "-",
                Kind::Scaled,
                format!("{before} -> {n} replicas: {reason}"),
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(deployment = %self.name, "scaling to {n}: {e}"),
        }
    }
}

// --- observations from the pods' /metrics -----------------------------------------------

/// What one pod's `/metrics` said at one moment (probes and `/metrics` left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub requests: f64,
    pub errors: f64,
    pub duration_sum: f64,
    /// Cumulative counts per upper bound (seconds), in order.
    pub buckets: Vec<(f64, f64)>,
    pub in_flight: f64,
    pub cpu_seconds: f64,
}

fn is_probe(route: &str) -> bool {
    route == "/metrics" || route.ends_with("/health") || route.ends_with("/readiness")
}

/// The label `name`'s value in a series' `{...}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Reads the kit's HTTP and process metrics out of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> Sample {
    let mut sample = Sample::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let probe = label(labels, "route").is_some_and(is_probe);
        match name {
            "http_requests_total" if !probe => {
                sample.requests += value;
                if label(labels, "status").is_some_and(|s| s.starts_with('5')) {
                    sample.errors += value;
                }
            }
            "http_request_duration_seconds_sum" if !probe => sample.duration_sum += value,
            "http_request_duration_seconds_bucket" if !probe => {
                if let Some(le) = label(labels, "le") {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    };
                    buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
                }
            }
            "http_requests_in_flight" => sample.in_flight += value,
            "process_cpu_seconds_total" => sample.cpu_seconds = value,
            _ => {}
        }
    }
    let mut buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    sample.buckets = buckets;
    sample
}

/// The `q` quantile (0..1) of cumulative `buckets`, interpolated within a bucket as
/// Prometheus's `histogram_quantile` does; in seconds.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = count - lower.1;
            return if within <= 0.0 {
                le
            } else {
                lower.0 + (le - lower.0) * (rank - lower.1) / within
            };
        }
        lower = (le, count);
    }
    lower.0
}

/// Observations of one Deployment from its ready pods' `/metrics`: each tick lists the
/// Service's EndpointSlices, scrapes every ready endpoint, and turns the counters'
/// growth since the pod's last scrape into rates, percentiles and CPU utilization.
pub struct PodsObserver {
    slices: Api<EndpointSlice>,
    service: String,
    cores: f64,
    last: HashMap<String, (Instant, Sample)>,
    http: reqwest::Client,
    /// The last observation of each Deployment, for `/status`.
    shown: Observations,
}

/// The last observation per Deployment, as `/status` shows it.
pub type Observations = Arc<std::sync::Mutex<BTreeMap<String, serde_json::Value>>>;

impl PodsObserver {
    pub fn new(slices: Api<EndpointSlice>, service: &str, cores: f64, shown: Observations) -> Self {
        Self {
            slices,
            service: service.to_owned(),
            cores: if cores > 0.0 { cores } else { 1.0 },
            last: HashMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()
                .expect("HTTP client"),
            shown,
        }
    }

    /// Drops the per-pod history (a new leadership term starts from fresh counters).
    pub fn forget(&mut self) {
        self.last.clear();
    }

    /// `http://addr:port` of every ready endpoint of the Service.
    pub async fn ready_pods(&self) -> Result<Vec<String>, kube::Error> {
        let params =
            ListParams::default().labels(&format!("kubernetes.io/service-name={}", self.service));
        let mut urls = Vec::new();
        for slice in self.slices.list(&params).await?.items {
            let port = slice
                .ports
                .as_ref()
                .and_then(|ports| ports.iter().find_map(|p| p.port))
                .unwrap_or(80);
            for endpoint in slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                if let Some(address) = endpoint.addresses.first() {
                    let host = if address.contains(':') {
                        format!("[{address}]")
                    } else {
                        address.clone()
                    };
                    urls.push(format!("http://{host}:{port}"));
                }
            }
        }
        urls.sort();
        urls.dedup();
        Ok(urls)
    }

    async fn scrape(&self, url: &str) -> Option<Sample> {
        let response = self.http.get(format!("{url}/metrics")).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(parse_metrics(&response.text().await.ok()?))
    }
}

#[async_trait::async_trait]
impl Observe for PodsObserver {
    async fn observe(&mut self, _seconds: u64) -> Observation {
        let pods = match self.ready_pods().await {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(service = %self.service, "listing endpoint slices: {e}");
                return Observation::default();
            }
        };
        let this = &*self;
        let scrapes = futures_util::future::join_all(
            pods.iter()
                .map(|url| async move { (url.clone(), this.scrape(url).await, Instant::now()) }),
        )
        .await;
        let mut rps = 0.0;
        let mut errors_per_s = 0.0;
        let mut duration_sum = 0.0;
        let mut count = 0.0;
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let mut in_flight = 0.0;
        let mut cpu = Vec::new();
        let mut seen = Vec::new();
        for (url, sample, at) in scrapes {
            let Some(sample) = sample else { continue };
            // The gauge counts the scrape itself.
            in_flight += (sample.in_flight - 1.0).max(0.0);
            if let Some((then, before)) = self.last.get(&url) {
                let elapsed = at.duration_since(*then).as_secs_f64();
                // A restarted pod's counters went back: no rate from it this time.
                if elapsed > 0.05 && sample.requests >= before.requests {
                    let requests = sample.requests - before.requests;
                    rps += requests / elapsed;
                    errors_per_s += (sample.errors - before.errors).max(0.0) / elapsed;
                    duration_sum += (sample.duration_sum - before.duration_sum).max(0.0);
                    count += requests;
                    for (i, &(le, c)) in sample.buckets.iter().enumerate() {
                        let was = before
                            .buckets
                            .iter()
                            .find(|(b, _)| *b == le)
                            .map_or(0.0, |b| b.1);
                        if buckets.len() <= i {
                            buckets.push((le, 0.0));
                        }
                        if buckets[i].0 == le {
                            buckets[i].1 += (c - was).max(0.0);
                        }
                    }
                    cpu.push(
                        ((sample.cpu_seconds - before.cpu_seconds) / elapsed / self.cores).max(0.0),
                    );
                }
            }
            seen.push(url.clone());
            self.last.insert(url, (at, sample));
        }
        self.last.retain(|url, _| seen.contains(url));
        let observation = Observation {
            ready: pods.len(),
            rps,
            served_rps: rps,
            concurrency: in_flight,
            p50_ms: quantile(&buckets, 0.5) * 1000.0,
            p99_ms: quantile(&buckets, 0.99) * 1000.0,
            mean_ms: if count > 0.0 {
                duration_sum / count * 1000.0
            } else {
                0.0
            },
            cpu: if cpu.is_empty() {
                0.0
            } else {
                cpu.iter().sum::<f64>() / cpu.len() as f64
            },
            error_rate: if rps > 0.0 { errors_per_s / rps } else { 0.0 },
            ..Observation::default()
        };
        self.shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                self.service.clone(),
                serde_json::json!({
                    "ready": observation.ready,
                    "scraped": seen.len(),
                    "rps": observation.rps,
                    "p50_ms": observation.p50_ms,
                    "p99_ms": observation.p99_ms,
                    "mean_ms": observation.mean_ms,
                    "concurrency": observation.concurrency,
                    "cpu": observation.cpu,
                    "error_rate": observation.error_rate,
                }),
            );
        observation
    }
}

// --- health, readiness, status, metrics ------------------------------------------------

#[derive(Clone)]
struct Status {
    identity: String,
    election: Election,
    events: Arc<Events>,
    services: Vec<String>,
    observations: Observations,
}

fn router(status: Status) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readiness", get(readiness))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .with_state(status)
}

/// Ready once the Lease has been read: the API server answers and the Role allows it.
async fn readiness(State(status): State<Status>) -> axum::response::Response {
    if status.election.state().observed.is_some() || status.election.is_leader() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "the lease has not been read yet"})),
        )
            .into_response()
    }
}

async fn status_json(State(status): State<Status>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "identity": status.identity,
        "leading": status.election.is_leader(),
        "holder": status.election.holder(),
        "transitions": status.election.state().transitions,
        "deployments": status.services,
        "observations": *status.observations.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        "events": status.events.recent(),
    }))
}

async fn metrics(State(status): State<Status>) -> impl IntoResponse {
    let registry = prometheus::Registry::new();
    let _ = registry.register(Box::new(status.events.counter.clone()));
    let leader = prometheus::IntGauge::new(
        "scaler_leader",
        "1 while this scaler replica holds the lease and acts.",
    )
    .expect("valid metric definition");
    leader.set(i64::from(status.election.is_leader()));
    let _ = registry.register(Box::new(leader));
    let mut out = Vec::new();
    let _ = prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut out,
    );
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kits_metrics_are_read_without_the_probes() {
        let text = "\
# HELP http_requests_total x
http_requests_total{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"200\"} 90
http_requests_total{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"500\"} 10
http_requests_total{method=\"GET\",route=\"/api/v1/music/health\",service=\"music\",status=\"200\"} 1000
http_requests_total{method=\"GET\",route=\"/metrics\",service=\"music\",status=\"200\"} 1000
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"200\",le=\"0.01\"} 50
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"200\",le=\"0.1\"} 90
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"200\",le=\"+Inf\"} 90
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"500\",le=\"0.01\"} 10
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"500\",le=\"0.1\"} 10
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"500\",le=\"+Inf\"} 10
http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/music/health\",service=\"music\",status=\"200\",le=\"0.01\"} 1000
http_request_duration_seconds_sum{method=\"GET\",route=\"/api/v1/music/{music_id}\",service=\"music\",status=\"200\"} 2.5
http_requests_in_flight{service=\"music\"} 3
process_cpu_seconds_total 12.5
";
        let sample = parse_metrics(text);
        assert_eq!(sample.requests, 100.0);
        assert_eq!(sample.errors, 10.0);
        assert_eq!(sample.duration_sum, 2.5);
        assert_eq!(
            sample.buckets,
            vec![(0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(sample.in_flight, 3.0);
        assert_eq!(sample.cpu_seconds, 12.5);
        // 60 of 100 under 10 ms: the median is inside the first bucket, the p99 in the
        // second, interpolated as histogram_quantile does.
        assert!((quantile(&sample.buckets, 0.5) - 0.01 * 50.0 / 60.0).abs() < 1e-12);
        assert!((quantile(&sample.buckets, 0.99) - (0.01 + 0.09 * 39.0 / 40.0)).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.99), 0.0);
    }

    #[test]
    fn the_scaler_components_configuration_builds_every_policy() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../k8s/components/scaler/scaler.toml"
        );
        let text = std::fs::read_to_string(path).expect("k8s/components/scaler/scaler.toml");
        let config: crate::up::FileConfig = toml::from_str(&text).expect("parses");
        assert_eq!(
            config.autoscale.keys().collect::<Vec<_>>(),
            ["fibonacci", "music", "playlist", "user"]
        );
        for (name, autoscale) in &config.autoscale {
            autoscale.build().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                config.cpu_limit.contains_key(name),
                "no [cpu_limit] for {name}"
            );
        }
    }

    #[test]
    fn field_managers_name_the_replica_within_the_api_limit() {
        assert_eq!(field_manager("scaler-7d9f-abc"), "scaler/scaler-7d9f-abc");
        assert_eq!(field_manager(&"x".repeat(300)).len(), 128);
    }
}
