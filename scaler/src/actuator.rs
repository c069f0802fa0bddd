//! How replicas come and go. The supervisor speaks only to [`Actuator`] and [`Replica`],
//! which say nothing of how a replica runs: here local child processes; the Docker
//! actuator (`docker.rs`) runs containers through the same two traits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What to run for a service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// The binary (process actuator) or image (container actuators).
    pub program: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Where replica logs go.
    pub log_dir: PathBuf,
}

/// A failure to inject into a replica, as a chaos experiment would. The supervisor is not
/// told: it finds out the way it finds out about a real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Ends it at once (SIGKILL; `docker kill`).
    Crash,
    /// Freezes it: it keeps its connections and answers nothing (SIGSTOP; `docker pause`).
    Hang,
}

/// One running replica, as its actuator controls it.
#[async_trait]
pub trait Replica: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    fn url(&self) -> &str;
    /// `Some(reason)` once the replica has gone (exited, crashed, removed).
    fn exited(&mut self) -> Option<String>;
    /// Whether it may take traffic: its `/readiness` answers 2xx within 500 ms.
    async fn ready(&self) -> bool {
        probe(self.url(), "/readiness", Duration::from_millis(500)).await
    }
    /// Asks it to stop (SIGTERM: it drains), and forces it after `grace`.
    async fn stop(&mut self, grace: Duration);
    /// Stops it at once (a hung replica).
    async fn kill(&mut self);
    /// Injects `fault`.
    async fn inject(&mut self, fault: Fault) -> anyhow::Result<()>;
}

/// `GET url+path` answered 2xx within `timeout`, on one client shared by every replica.
pub async fn probe(url: &str, path: &str, timeout: Duration) -> bool {
    static CLIENT: std::sync::OnceLock<crate::balancer::HttpClient> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(crate::balancer::http_client);
    crate::balancer::probe(client, url, path, timeout).await
}

#[async_trait]
pub trait Actuator: Send + Sync + std::fmt::Debug {
    /// Starts replica number `n` of `spec`. It is not ready yet: the supervisor waits
    /// for its `/readiness`.
    async fn spawn(&self, spec: &ServiceSpec, n: usize) -> anyhow::Result<Box<dyn Replica>>;
}

/// Local child processes on free loopback ports, logs in `<log_dir>/<id>.log`.
#[derive(Debug, Default)]
pub struct ProcessActuator;

#[derive(Debug)]
struct ProcessReplica {
    id: String,
    url: String,
    child: tokio::process::Child,
    status: Option<String>,
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

#[async_trait]
impl Actuator for ProcessActuator {
    async fn spawn(&self, spec: &ServiceSpec, n: usize) -> anyhow::Result<Box<dyn Replica>> {
        let id = format!("{}-{n}", spec.name);
        let port = free_port()?;
        std::fs::create_dir_all(&spec.log_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log_dir.join(format!("{id}.log")))?;
        let child = tokio::process::Command::new(&spec.program)
            .envs(&spec.env)
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("INSTANCE_ID", &id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        Ok(Box::new(ProcessReplica {
            id,
            url: format!("http://127.0.0.1:{port}"),
            child,
            status: None,
        }))
    }
}

impl ProcessReplica {
    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("the process has exited")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }
}

#[async_trait]
impl Replica for ProcessReplica {
    fn id(&self) -> &str {
        &self.id
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn exited(&mut self) -> Option<String> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status.to_string());
        }
        self.status.clone()
    }

    async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        self.exited();
    }

    async fn kill(&mut self) {
        // A stopped (SIGSTOPped) process dies on SIGKILL too.
        let _ = self.child.kill().await;
        self.exited();
    }

    async fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
        self.signal(match fault {
            Fault::Crash => Signal::SIGKILL,
            Fault::Hang => Signal::SIGSTOP,
        })
    }
}
