//! `scaler k8s` against a fake Kubernetes API server. No real API server can be
//! installed on the machines this runs on, so this test serves the few endpoints the
//! scaler calls (a Lease, a Deployment's scale subresource, EndpointSlices) with the API
//! server's optimistic concurrency (a write with a stale `resourceVersion` is 409), and
//! records every call. Everything else is real: two `scaler k8s` processes compete for
//! the Lease, the "pod" behind the EndpointSlice is a real fibonacci process whose
//! `/metrics` the leader reads, and the leader is paused (SIGSTOP) and stopped (SIGTERM)
//! as a node failure and a rolling update would.

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{binaries, serve};

const NS: &str = "scalelab";

/// One write of the scale subresource: who (field manager), what, and who held the
/// Lease at that moment.
#[derive(Debug, Clone)]
struct ScaleWrite {
    manager: String,
    replicas: i64,
    holder: Option<String>,
}

#[derive(Default)]
struct Cluster {
    version: u64,
    lease: Option<Value>,
    replicas: i64,
    scale_version: u64,
    /// Conflicts still to answer to scale writes (as if someone wrote in between).
    conflicts_to_inject: usize,
    conflicts_served: usize,
    writes: Vec<ScaleWrite>,
    /// Every call as (verb, API group, resource[/subresource]).
    calls: BTreeSet<(String, String, String)>,
    pod: String,
}

impl Cluster {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn holder(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str())
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    fn scale(&self) -> Value {
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "fibonacci", "namespace": NS,
                         "resourceVersion": self.scale_version.to_string()},
            "spec": {"replicas": self.replicas},
            "status": {"replicas": self.replicas, "selector": "app.kubernetes.io/name=fibonacci"},
        })
    }
}

type Shared = Arc<Mutex<Cluster>>;

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn record(cluster: &Shared, verb: &str, group: &str, resource: &str) {
    cluster
        .lock()
        .expect("cluster")
        .calls
        .insert((verb.into(), group.into(), resource.into()));
}

async fn get_lease(State(c): State<Shared>, Path((_, _)): Path<(String, String)>) -> Response {
    record(&c, "get", "coordination.k8s.io", "leases");
    let c = c.lock().expect("cluster");
    match &c.lease {
        Some(lease) => axum::Json(lease.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "leases \"scaler-leader\" not found",
        ),
    }
}

async fn create_lease(
    State(c): State<Shared>,
    Path(_): Path<String>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    record(&c, "create", "coordination.k8s.io", "leases");
    let mut c = c.lock().expect("cluster");
    if c.lease.is_some() {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            "leases \"scaler-leader\" already exists",
        );
    }
    let version = c.next_version();
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    lease["metadata"]["namespace"] = json!(NS);
    c.lease = Some(lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

async fn replace_lease(
    State(c): State<Shared>,
    Path((_, _)): Path<(String, String)>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    record(&c, "update", "coordination.k8s.io", "leases");
    let mut c = c.lock().expect("cluster");
    let current = c
        .lease
        .as_ref()
        .and_then(|l| l["metadata"]["resourceVersion"].as_str())
        .map(str::to_owned);
    if current.is_none() || lease["metadata"]["resourceVersion"].as_str() != current.as_deref() {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    let version = c.next_version();
    lease["metadata"]["resourceVersion"] = json!(version.to_string());
    c.lease = Some(lease.clone());
    axum::Json(lease).into_response()
}

async fn get_scale(State(c): State<Shared>, Path((_, name)): Path<(String, String)>) -> Response {
    record(&c, "get", "apps", "deployments/scale");
    if name != "fibonacci" {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such deployment");
    }
    axum::Json(c.lock().expect("cluster").scale()).into_response()
}

async fn replace_scale(
    State(c): State<Shared>,
    Path((_, _)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    axum::Json(scale): axum::Json<Value>,
) -> Response {
    record(&c, "update", "apps", "deployments/scale");
    let mut c = c.lock().expect("cluster");
    if c.conflicts_to_inject > 0 {
        // Someone else changed the Deployment between the scaler's read and its write.
        c.conflicts_to_inject -= 1;
        c.conflicts_served += 1;
        c.scale_version = c.next_version();
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    if scale["metadata"]["resourceVersion"].as_str() != Some(c.scale_version.to_string().as_str()) {
        c.conflicts_served += 1;
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    c.replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    c.scale_version = c.next_version();
    let write = ScaleWrite {
        manager: query.get("fieldManager").cloned().unwrap_or_default(),
        replicas: c.replicas,
        holder: c.holder(),
    };
    c.writes.push(write);
    axum::Json(c.scale()).into_response()
}

async fn list_slices(
    State(c): State<Shared>,
    Path(_): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    record(&c, "list", "discovery.k8s.io", "endpointslices");
    let c = c.lock().expect("cluster");
    let items = if query.get("labelSelector").map(String::as_str)
        == Some("kubernetes.io/service-name=fibonacci")
    {
        let (host, port) = c.pod.rsplit_once(':').expect("host:port");
        vec![json!({
            "metadata": {"name": "fibonacci-abcde", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "fibonacci"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port.parse::<u16>().expect("port"), "protocol": "TCP"}],
        })]
    } else {
        Vec::new()
    };
    axum::Json(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "1"}, "items": items,
    }))
    .into_response()
}

async fn unknown(State(c): State<Shared>, method: Method, uri: Uri) -> Response {
    record(&c, method.as_str(), "?", uri.path());
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "not served by the fake API server",
    )
}

fn fake_api(cluster: Shared) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            post(create_lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(get_lease).put(replace_lease),
        )
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            get(get_scale).put(replace_scale),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            get(list_slices),
        )
        .fallback(unknown)
        .with_state(cluster)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.0.id()).expect("pid"))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `scaler k8s` process and its status port.
fn scaler(
    api: &str,
    config: &std::path::Path,
    identity: &str,
    lease: &str,
    retry: &str,
) -> (Proc, u16) {
    let port = free_port();
    let process = Proc(
        Command::new(env!("CARGO_BIN_EXE_scaler"))
            .args(["k8s", "--namespace", NS, "--identity", identity])
            .args(["--lease-duration", lease, "--retry-period", retry])
            .arg("--config")
            .arg(config)
            .args(["--api-server", api])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scaler k8s"),
    );
    (process, port)
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The Role's rules as (verb, group, resource) triples.
fn role_grants() -> BTreeSet<(String, String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/components/scaler/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).expect("rbac.yaml");
    let mut grants = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if doc["kind"] != "Role" {
            continue;
        }
        for rule in doc["rules"].as_array().expect("rules") {
            for group in rule["apiGroups"].as_array().expect("apiGroups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    for verb in rule["verbs"].as_array().expect("verbs") {
                        grants.insert((
                            verb.as_str().expect("a string").to_owned(),
                            group.as_str().expect("a string").to_owned(),
                            resource.as_str().expect("a string").to_owned(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scalers_elect_one_leader_which_scales_and_a_standby_takes_over() {
    // A real fibonacci process is the Deployment's one ready pod.
    let pod = format!("127.0.0.1:{}", free_port());
    let _fibonacci = Proc(
        Command::new(binaries().join("fibonacci"))
            .env("LISTEN", &pod)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fibonacci"),
    );
    let cluster: Shared = Arc::new(Mutex::new(Cluster {
        replicas: 1,
        scale_version: 1,
        version: 1,
        conflicts_to_inject: 1,
        pod,
        ..Cluster::default()
    }));
    let api = serve(fake_api(cluster.clone())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("scaler.toml");
    // min = 2: the leader's first decision raises the Deployment from 1 to 2.
    std::fs::write(
        &config,
        "[autoscale.fibonacci]\npolicy = \"littles\"\nmin = 2\nmax = 4\n",
    )
    .expect("config");
    let (lease, retry) = (Duration::from_secs(6), "1s");
    let lease_arg = format!("{}s", lease.as_secs());
    let c = || cluster.lock().expect("cluster");

    // Both start at once: one creates the Lease, the other gets 409 and stands by.
    let mut scalers = HashMap::new();
    scalers.insert(
        "scaler-a",
        scaler(&api, &config, "scaler-a", &lease_arg, retry),
    );
    scalers.insert(
        "scaler-b",
        scaler(&api, &config, "scaler-b", &lease_arg, retry),
    );
    until(
        Duration::from_secs(60),
        "a leader scales fibonacci to 2",
        || c().replicas == 2,
    )
    .await;
    let first = c().holder().expect("a holder");
    let standby = if first == "scaler-a" {
        "scaler-b"
    } else {
        "scaler-a"
    };
    {
        let c = c();
        // The injected conflict was read again and retried.
        assert_eq!(c.conflicts_served, 1, "one conflict answered");
        assert_eq!(c.writes.len(), 1, "{:?}", c.writes);
        assert_eq!(c.writes[0].manager, format!("scaler/{first}"));
    }

    // The leader reads the pod's /metrics: requests sent to it show in its observation.
    let status_url = format!("http://127.0.0.1:{}/status", scalers[first.as_str()].1);
    let pod_url = format!("http://{}/fibonacci?n=15", c().pod);
    let client = crate::support::client();
    let load = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                let _ = client.get(&pod_url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut seen = Value::Null;
    let started = Instant::now();
    while !(seen["scraped"] == 1 && seen["ready"] == 1 && seen["rps"].as_f64().unwrap_or(0.0) > 0.0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the leader's observation: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status: Value = client
            .get(&status_url)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        assert_eq!(status["leading"], true, "{status}");
        seen = status["observations"]["fibonacci"].clone();
    }
    load.abort();
    println!("scaler k8s: the leader's observation of fibonacci under load: {seen}");

    // The leader freezes (SIGSTOP: it stops renewing), and someone scales by hand.
    kill(scalers[first.as_str()].0.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    let paused = Instant::now();
    c().replicas = 1;
    until(lease * 4, "the standby takes the lease", || {
        c().holder().as_deref() == Some(standby)
    })
    .await;
    let takeover = paused.elapsed();
    until(
        Duration::from_secs(30),
        "the new leader restores 2 replicas",
        || c().replicas == 2,
    )
    .await;
    assert!(
        takeover >= lease - Duration::from_secs(1),
        "took over after {takeover:?}, before the lease ({lease:?}) could expire"
    );

    // The old leader wakes up: it must find it lost the Lease and not act.
    kill(scalers[first.as_str()].0.pid(), Signal::SIGCONT).expect("SIGCONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    c().replicas = 1;
    until(Duration::from_secs(30), "2 replicas again", || {
        c().replicas == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A graceful stop (SIGTERM) gives the Lease up: the other takes it at its next retry.
    kill(scalers[standby].0.pid(), Signal::SIGTERM).expect("SIGTERM");
    let stopped = Instant::now();
    until(lease * 4, "the first scaler takes the lease back", || {
        c().holder().as_deref() == Some(first.as_str())
    })
    .await;
    let handover = stopped.elapsed();
    c().replicas = 1;
    until(Duration::from_secs(30), "2 replicas once more", || {
        c().replicas == 2
    })
    .await;

    let c = c();
    // Never two actors: every write came from the Lease's holder at that moment, and the
    // actor changed exactly at the two handovers.
    for write in &c.writes {
        assert_eq!(
            Some(write.manager.trim_start_matches("scaler/")),
            write.holder.as_deref(),
            "a write by a replica that did not hold the lease: {:?}",
            c.writes
        );
        assert_eq!(write.replicas, 2);
    }
    let actors: Vec<&str> = c.writes.iter().map(|w| w.manager.as_str()).collect();
    let mut switches = actors.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 2, "actors in order: {actors:?}");
    switches = actors.len();
    // The calls made are exactly what the scaler's Role grants, nothing more.
    let grants = role_grants();
    let outside: Vec<_> = c
        .calls
        .iter()
        .filter(|call| !grants.contains(call))
        .collect();
    assert!(
        outside.is_empty(),
        "calls the Role does not grant: {outside:?}"
    );
    println!(
        "scaler k8s: lease {lease:?}; takeover after SIGSTOP {:.2} s; handover after SIGTERM {:.2} s; \
         {switches} scale writes by {actors:?}; {} conflicts retried; calls {:?}",
        takeover.as_secs_f64(),
        handover.as_secs_f64(),
        c.conflicts_served,
        c.calls
    );
}
