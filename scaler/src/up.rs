//! `scaler up`: the whole platform on this machine, no containers. The gateway on
//! SQLite, the course data loaded, user, music, playlist and fibonacci replicas, each
//! service behind a balancer on its public port, the ingress and the admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::actuator::{Actuator, ProcessActuator, ServiceSpec};
use crate::balancer::Balancer;
use crate::events::Events;
use crate::pool::{Pool, Strategy};
use crate::supervisor::Supervisor;
use crate::{Platform, Service};

/// The services `up` runs: name, binary, public port.
pub const SERVICES: &[(&str, &str, u16)] = &[
    ("database-gateway", "database-gateway", 30002),
    ("user", "user", 30000),
    ("music", "music", 30001),
    ("playlist", "playlist", 30003),
    ("fibonacci", "fibonacci", 30004),
];

/// Replica counts when the config file says nothing.
fn default_replicas(service: &str) -> usize {
    match service {
        "music" | "fibonacci" => 2,
        _ => 1,
    }
}

/// `scaler.toml`: `[replicas]` per service, and the balancing strategy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub replicas: BTreeMap<String, usize>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// `[autoscale.<service>]`: a policy that sets the replica count while it runs.
    #[serde(default)]
    pub autoscale: BTreeMap<String, crate::autoscale::AutoscaleConfig>,
    /// `[cpu_limit]`: cores per replica of a service (its `CPU_LIMIT`), like a pod's
    /// `resources.limits.cpu`; autoscaling reads CPU utilization against it.
    #[serde(default)]
    pub cpu_limit: BTreeMap<String, f64>,
    /// `[docker]`: how the Docker actuator runs replicas (with `--actuator docker`).
    #[serde(default)]
    pub docker: Option<crate::docker::DockerConfig>,
    /// `[env.<service>]`: extra environment for every replica of a service (e.g.
    /// `MUSIC_VERSION = "v2"`), over the scaler's own defaults.
    #[serde(default)]
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    /// `[healing]`: `<service> = false` turns self-healing off for a service: a replica
    /// that exits or hangs stays listed as dead and is neither killed nor replaced (to
    /// watch a failure, e.g. Prometheus's TargetDown). On by default.
    #[serde(default)]
    pub healing: BTreeMap<String, bool>,
}

/// How replicas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActuatorKind {
    /// Local child processes of the binaries next to `scaler`.
    Process,
    /// Containers of the services' images, on the network `[docker]` names.
    Docker,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Folder with the service binaries; default: the folder of this `scaler` binary.
    #[arg(long, env = "SCALER_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Folder for the SQLite database and the replica logs.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,

    /// Replica counts and strategy (TOML: `[replicas]` music = 3 ...); optional.
    #[arg(long, default_value = "scaler.toml")]
    pub config: PathBuf,

    /// Folder with the course CSVs loaded at start (users.csv, music.csv, playlist.csv).
    #[arg(long, default_value = "gatling/resources")]
    pub data: PathBuf,

    /// Address the public ports bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// `jwt` or `presence`, for user, music and playlist.
    #[arg(long, env = "AUTH_MODE", default_value = "jwt")]
    pub auth_mode: String,

    /// Admin API port.
    #[arg(long, default_value_t = 30010)]
    pub admin_port: u16,

    /// Ingress port.
    #[arg(long, default_value_t = 30080)]
    pub ingress_port: u16,

    /// How replicas run: `process` (here) or `docker` (containers; `[docker]` in the
    /// config says where).
    #[arg(long, env = "SCALER_ACTUATOR", value_enum, default_value = "process")]
    pub actuator: ActuatorKind,

    /// The host name or IP Prometheus reaches the admin API at, for the scaler's own
    /// target in `/prometheus/targets` (e.g. `scaler` on a Compose network). Default:
    /// `--host`, or when that is 0.0.0.0, this machine's address toward its replicas.
    #[arg(long, env = "SCALER_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// A database gateway run elsewhere (e.g. `http://gateway:30002`): the scaler then
    /// neither runs one nor loads the course data (the deployment's loader job does).
    #[arg(long, env = "SCALER_GATEWAY")]
    pub gateway: Option<String>,
}

/// The secrets a deployment generates once (`scaler secrets`) and mounts as files.
pub const SECRETS: [&str; 4] = [
    "jwt-secret",
    "datastore-token",
    "loader-token",
    "scaler-token",
];

/// Writes `value` (default: a random secret) to `dir/name` unless the file exists.
/// Returns whether it was created. The files are read-only and readable by every user
/// of the containers that mount them (a database image reads its password as its own
/// user): the volume is what keeps them private.
pub fn ensure_secret(dir: &Path, name: &str, value: Option<&str>) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
    {
        Ok(mut file) => {
            let value = value.map_or_else(random_hex, str::to_owned);
            file.write_all(value.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut existing = None;
            kit::config::read_secret(&mut existing, Some(&path)).map_err(anyhow::Error::msg)?;
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The admin API's token: `SCALER_TOKEN`, or the file `SCALER_TOKEN_FILE` names.
pub fn scaler_token() -> anyhow::Result<Option<String>> {
    let mut token = std::env::var("SCALER_TOKEN").ok().filter(|t| !t.is_empty());
    if token.is_none()
        && let Some(file) = std::env::var_os("SCALER_TOKEN_FILE")
    {
        kit::config::read_secret(&mut token, Some(Path::new(&file))).map_err(anyhow::Error::msg)?;
    }
    Ok(token)
}

/// The admin API's token: `SCALER_TOKEN` / `SCALER_TOKEN_FILE`, or else one generated
/// once into `<data dir>/scaler-token` (readable by its owner only), which
/// `scaler replicas` reads. The admin API is never open.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(token) = scaler_token()? {
        return Ok(token);
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if ensure_secret(data_dir, ADMIN_TOKEN_FILE, None)? {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut token = None;
    kit::config::read_secret(&mut token, Some(&path)).map_err(anyhow::Error::msg)?;
    Ok(token.unwrap_or_default())
}

/// Where `scaler up` keeps the admin token it generated, in its data dir.
pub const ADMIN_TOKEN_FILE: &str = "scaler-token";

fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn bin_dir(args: &UpArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("this binary has no folder")
}

/// The platform `start` left running: stop it with [`Running::stop`].
pub struct Running {
    pub platform: Platform,
    /// Course rows loaded at start.
    pub loaded: usize,
    /// Where the SQLite file and the replica logs are.
    pub data_dir: PathBuf,
    pub started: Instant,
    stop_tx: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Drains and stops every replica, then the listeners.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// `scaler.toml` as given (none: the defaults).
pub fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(_) => Ok(FileConfig::default()),
    }
}

/// Runs the platform until SIGINT / SIGTERM, then drains and stops every replica.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let file = read_config(&args.config)?;
    let running = start(&args, file).await?;
    let host = args.host;
    println!(
        "scalelab is up in {:.1} s ({} course rows loaded; logs in {})",
        running.started.elapsed().as_secs_f64(),
        running.loaded,
        running.data_dir.join("logs").display()
    );
    for (name, _, port) in SERVICES {
        let Some(service) = running.platform.services.get(*name) else {
            continue;
        };
        let replicas = service.balancer.pool.alive().len();
        println!(
            "  {name:<17} http://{host}:{port}  ({replicas} replica{})",
            if replicas == 1 { "" } else { "s" }
        );
    }
    println!(
        "  ingress           http://{host}:{}  (/api/v1/user, /api/v1/music, /api/v1/playlist, /fibonacci, /status)",
        args.ingress_port
    );
    println!(
        "  admin, dashboard  http://{host}:{}/  (changes need the token in {}, which `scaler replicas` reads)",
        args.admin_port,
        if std::env::var_os("SCALER_TOKEN").is_some() {
            "SCALER_TOKEN".to_owned()
        } else if let Some(file) = std::env::var_os("SCALER_TOKEN_FILE") {
            Path::new(&file).display().to_string()
        } else {
            running
                .data_dir
                .join(ADMIN_TOKEN_FILE)
                .display()
                .to_string()
        }
    );
    if let Some(gateway) = &args.gateway {
        println!("  database gateway  {gateway}  (run by the deployment)");
    }
    println!(
        "  auth: {} ({}); Ctrl-C stops everything",
        args.auth_mode,
        match args.actuator {
            ActuatorKind::Process => "JWT_SECRET generated for this run",
            ActuatorKind::Docker => "secrets from the deployment's files",
        }
    );
    println!("ready");

    kit::shutdown_signal().await;
    println!("stopping: draining every replica");
    running.stop().await;
    println!("stopped");
    Ok(())
}

/// Starts every service's replicas, balancers, the ingress and the admin API, waits
/// until each service has a ready replica, and loads the course data.
pub async fn start(args: &UpArgs, file: FileConfig) -> anyhow::Result<Running> {
    // With a gateway run elsewhere, the scaler fronts the other services only.
    let supervised: Vec<(&str, &str, u16)> = SERVICES
        .iter()
        .copied()
        .filter(|(name, _, _)| args.gateway.is_none() || *name != "database-gateway")
        .collect();
    let bins = bin_dir(args)?;
    let docker = match args.actuator {
        ActuatorKind::Process => {
            for (_, binary, _) in &supervised {
                let path = bins.join(binary);
                anyhow::ensure!(
                    path.exists(),
                    "{} is missing: build the services first (`cargo build --release --workspace --bins`) or pass --bin-dir",
                    path.display()
                );
            }
            None
        }
        ActuatorKind::Docker => Some(file.docker.clone().with_context(|| {
            format!(
                "--actuator docker needs a [docker] table in {} (network = ...)",
                args.config.display()
            )
        })?),
    };
    for (name, autoscale) in &file.autoscale {
        anyhow::ensure!(
            SERVICES.iter().any(|(s, _, _)| s == name),
            "{}: unknown service `{name}`",
            args.config.display()
        );
        autoscale
            .build()
            .map_err(|e| anyhow::anyhow!("{}: [autoscale.{name}]: {e}", args.config.display()))?;
    }
    for (name, cores) in &file.cpu_limit {
        anyhow::ensure!(
            SERVICES.iter().any(|(s, _, _)| s == name),
            "{}: [cpu_limit]: unknown service `{name}`",
            args.config.display()
        );
        kit::cpu_limit::parse_cores(&cores.to_string())
            .map_err(|e| anyhow::anyhow!("{}: [cpu_limit] {name}: {e}", args.config.display()))?;
    }
    for (table, name) in file
        .replicas
        .keys()
        .map(|n| ("replicas", n))
        .chain(file.env.keys().map(|n| ("env", n)))
        .chain(file.healing.keys().map(|n| ("healing", n)))
    {
        anyhow::ensure!(
            SERVICES.iter().any(|(s, _, _)| s == name),
            "{}: [{table}]: unknown service `{name}`",
            args.config.display()
        );
    }
    for name in file.replicas.keys() {
        anyhow::ensure!(
            SERVICES.iter().any(|(s, _, _)| s == name),
            "{}: unknown service `{name}`",
            args.config.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let jwt_secret = random_hex();
    let loader_token = random_hex();
    // The gateway never runs open: callers present this token.
    let datastore_token = random_hex();
    let events = Arc::new(Events::default());
    let actuator: Arc<dyn Actuator> = match &docker {
        None => Arc::new(ProcessActuator),
        Some(config) => Arc::new(crate::docker::DockerActuator::connect(config.clone()).await?),
    };
    let datastore_url = args
        .gateway
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", port_of("database-gateway")));
    let otlp_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut services = BTreeMap::new();
    let mut tasks = Vec::new();
    let started = Instant::now();

    for (name, binary, port) in &supervised {
        let mut env = BTreeMap::from([
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("DATASTORE_URL".to_owned(), datastore_url.clone()),
            ("AUTH_MODE".to_owned(), args.auth_mode.clone()),
        ]);
        // Containers get their secrets as mounted files (`[docker] env`).
        if docker.is_none() {
            env.insert("JWT_SECRET".to_owned(), jwt_secret.clone());
            env.insert("DATASTORE_TOKEN".to_owned(), datastore_token.clone());
        }
        // Child processes inherit the scaler's trace export; containers get it here.
        if let Some(endpoint) = &otlp_endpoint {
            env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone());
        }
        // A local run loads the course users, who have no passwords: they log in by uid
        // here (and in `scaler demo`), never in a deployment (Compose, Kubernetes).
        if docker.is_none() && *name == "user" {
            env.insert("ALLOW_UID_LOGIN".to_owned(), "true".to_owned());
        }
        if *name == "database-gateway" {
            env.insert(
                "DATABASE_URL".into(),
                format!("sqlite://{}", data_dir.join("datastore.db").display()),
            );
            env.insert("SVC_LOADER_TOKEN".into(), loader_token.clone());
        }
        if let Some(cores) = file.cpu_limit.get(*name) {
            env.insert("CPU_LIMIT".into(), cores.to_string());
        }
        if let Some(extra) = file.env.get(*name) {
            env.extend(extra.clone());
        }
        let spec = ServiceSpec {
            name: (*name).to_owned(),
            program: match &docker {
                None => bins.join(binary),
                Some(config) => PathBuf::from(config.image(binary)),
            },
            env,
            log_dir: data_dir.join("logs"),
        };
        let pool = Arc::new(Pool::new(file.strategy.unwrap_or_default()));
        events.register(name);
        let balancer = Balancer::new(name, pool, events.clone(), Duration::from_secs(30));
        let mut replicas = file
            .replicas
            .get(*name)
            .copied()
            .unwrap_or_else(|| default_replicas(name));
        let autoscale = file.autoscale.get(*name);
        if let Some(a) = autoscale {
            replicas = replicas.clamp(a.min, a.max);
        }
        let supervisor = Supervisor::new(spec, balancer.clone(), actuator.clone(), replicas);
        if file.healing.get(*name) == Some(&false) {
            tracing::warn!(
                service = name,
                "self-healing is off: failed replicas stay dead"
            );
            supervisor.set_healing(false);
        }
        tasks.push(tokio::spawn(supervisor.clone().run(stop_rx.clone())));
        if let Some(a) = autoscale {
            let policy = a.build()?;
            tracing::info!(
                service = name,
                policy = policy.name(),
                min = a.min,
                max = a.max,
                "autoscaling"
            );
            tokio::spawn(crate::autoscale::run(
                supervisor.clone(),
                policy,
                stop_rx.clone(),
            ));
        }
        tokio::spawn(
            balancer
                .clone()
                .health_loop(Duration::from_secs(1), Duration::from_millis(500)),
        );
        let listener = kit::bind(SocketAddr::new(args.host, *port))
            .await
            .with_context(|| format!("binding {name}'s port {port}"))?;
        tokio::spawn(serve_proxy(
            listener,
            crate::proxy::Routes::Service(balancer.clone()),
            stop_rx.clone(),
        ));
        services.insert(
            (*name).to_owned(),
            Service {
                balancer,
                supervisor: Some(supervisor),
            },
        );
    }
    let admin = kit::bind(SocketAddr::new(args.host, args.admin_port))
        .await
        .context("binding the admin port")?;
    let platform = Platform {
        services: Arc::new(services),
        events,
        token: Some(admin_token(&data_dir)?),
        monitor: Default::default(),
        admin: Some(crate::discovery::AdminAddress {
            listen: admin.local_addr().context("the admin port's address")?,
            advertise: args.advertise_host.clone(),
        }),
    };
    tokio::spawn(serve(
        admin,
        crate::admin::app(platform.clone()),
        stop_rx.clone(),
    ));
    let ingress = kit::bind(SocketAddr::new(args.host, args.ingress_port))
        .await
        .context("binding the ingress port")?;
    tokio::spawn(serve_proxy(
        ingress,
        crate::proxy::Routes::Ingress(platform.clone()),
        stop_rx.clone(),
    ));

    let running = Running {
        platform,
        loaded: 0,
        data_dir,
        started,
        stop_tx,
        tasks,
    };
    let ready = async {
        let logs = match args.actuator {
            ActuatorKind::Process => running.data_dir.join("logs").display().to_string(),
            ActuatorKind::Docker => "the scaler's log and `docker logs` of the replicas".to_owned(),
        };
        wait_ready(&running.platform, Duration::from_secs(60), &logs).await?;
        if args.gateway.is_some() {
            return Ok(0);
        }
        load_course_data(&args.data, &loader_token).await
    };
    match ready.await {
        Ok(loaded) => Ok(Running { loaded, ..running }),
        Err(e) => {
            running.stop().await;
            Err(e)
        }
    }
}

fn port_of(service: &str) -> u16 {
    SERVICES
        .iter()
        .find(|(s, _, _)| *s == service)
        .map_or(0, |(_, _, p)| *p)
}

async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    let _ = kit::serve(listener, router, shutdown, Duration::from_secs(10)).await;
}

/// Serves a balancer's port or the ingress until `stop`.
async fn serve_proxy(
    listener: tokio::net::TcpListener,
    routes: crate::proxy::Routes,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    let _ = crate::proxy::serve(listener, routes, shutdown, &kit::ServerArgs::default()).await;
}

async fn wait_ready(platform: &Platform, within: Duration, logs: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let waiting: Vec<&str> = platform
            .services
            .iter()
            .filter(|(_, s)| s.balancer.pool.alive().is_empty())
            .map(|(name, _)| name.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not ready within {within:?}: {} (see {logs})",
            waiting.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loads the course CSVs through the gateway's `/load`; returns the rows loaded.
async fn load_course_data(dir: &Path, token: &str) -> anyhow::Result<usize> {
    if !dir.exists() {
        println!("no course data at {} (skipped)", dir.display());
        return Ok(0);
    }
    let http = reqwest_like_client();
    let url = format!(
        "http://127.0.0.1:{}/api/v1/datastore/load",
        port_of("database-gateway")
    );
    let mut loaded = 0;
    for (file, objtype) in [
        ("users.csv", "user"),
        ("music.csv", "music"),
        ("playlist.csv", "playlist"),
    ] {
        let path = dir.join(file);
        let mut reader =
            csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
        let headers = reader.headers()?.clone();
        for (line, row) in reader.records().enumerate() {
            let row = row.with_context(|| format!("{}:{}", path.display(), line + 2))?;
            let mut body = serde_json::Map::new();
            body.insert("objtype".into(), json!(objtype));
            for (name, value) in headers.iter().zip(row.iter()) {
                let (key, value) = match name {
                    "UUID" => ("uuid".to_owned(), json!(value)),
                    "Playlist" => (
                        "Playlist".to_owned(),
                        json!(value.split(',').map(str::trim).collect::<Vec<_>>()),
                    ),
                    other => (other.to_owned(), json!(value)),
                };
                body.insert(key, value);
            }
            let status = http.load(&url, token, &Value::Object(body)).await?;
            anyhow::ensure!(
                status.is_success(),
                "{}:{}: /load answered {status}",
                path.display(),
                line + 2
            );
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// A tiny HTTP client over the balancer's hyper client, for the loading step.
struct Loader(crate::balancer::HttpClient);

fn reqwest_like_client() -> Loader {
    Loader(crate::balancer::http_client())
}

impl Loader {
    async fn load(&self, url: &str, token: &str, body: &Value) -> anyhow::Result<http::StatusCode> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc-loader:{token}"));
        let request = http::Request::post(url)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))?;
        Ok(self.0.request(request).await?.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_once_kept_after_and_never_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(ensure_secret(dir.path(), "jwt-secret", None).expect("create"));
        let first = std::fs::read_to_string(dir.path().join("jwt-secret")).expect("read");
        assert_eq!(first.len(), 64, "256 bits in hex");
        assert!(!ensure_secret(dir.path(), "jwt-secret", None).expect("keep"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("jwt-secret")).expect("read"),
            first,
            "an existing secret is kept"
        );
        assert!(ensure_secret(dir.path(), "url", Some("postgres://x")).expect("value"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("url")).expect("read"),
            "postgres://x"
        );
        std::fs::write(dir.path().join("empty"), "").expect("write");
        assert!(
            ensure_secret(dir.path(), "empty", None).is_err(),
            "an empty secret file is an error, not a secret"
        );
    }
}
