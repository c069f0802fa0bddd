//! The Docker actuator: a service's replicas as containers of its image (bollard, the
//! engine's local socket), as CS230's monitor ran them. Each replica joins the
//! deployment's network and is reached on its address there; its CPU limit is the
//! container's own (`CPU_LIMIT` in the service's environment becomes the container's
//! NanoCpus, enforced by the kernel), with a memory limit, no capabilities, a read-only
//! root filesystem and no new privileges. A container that stops, for any reason, is
//! reported with its exit code (and OOM kill) and removed; containers left by an
//! earlier run of the same project are removed at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::actuator::{Actuator, Fault, Replica, ServiceSpec};

/// The label every replica container carries: which scaler project made it.
const PROJECT_LABEL: &str = "scalelab.project";
const SERVICE_LABEL: &str = "scalelab.service";

/// `[docker]` in the scaler's config: where and how replica containers run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The network replicas join (the deployment's; the scaler must be on it too).
    pub network: String,
    /// Names containers `<project>-<service>-<n>` and labels them, so a later run
    /// finds and removes what an earlier one left.
    #[serde(default = "default_project")]
    pub project: String,
    /// Image of a service: `<image_prefix><binary>:<image_tag>`.
    #[serde(default = "default_prefix")]
    pub image_prefix: String,
    #[serde(default = "default_tag")]
    pub image_tag: String,
    /// Port every replica listens on inside its container.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Memory limit of each replica, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Volumes to mount, as `docker run -v` takes them (`name:/path:ro`).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Environment given to every replica (beside the service's own).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_project() -> String {
    "scalelab".to_owned()
}
fn default_prefix() -> String {
    "scalelab/".to_owned()
}
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
fn default_port() -> u16 {
    8080
}
fn default_memory() -> u64 {
    128
}

impl DockerConfig {
    /// The image of `binary`.
    pub fn image(&self, binary: &str) -> String {
        format!("{}{binary}:{}", self.image_prefix, self.image_tag)
    }
}

#[derive(Debug)]
pub struct DockerActuator {
    docker: Docker,
    config: DockerConfig,
}

impl DockerActuator {
    /// Connects to the local engine (`DOCKER_HOST` or /var/run/docker.sock), agrees on
    /// an API version with it, checks the network exists, and removes the containers an
    /// earlier run of this project left.
    pub async fn connect(config: DockerConfig) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("connecting to the Docker engine (is its socket mounted?)")?
            .negotiate_version()
            .await
            .context("asking the Docker engine for its API version")?;
        docker
            .inspect_network(&config.network, None)
            .await
            .with_context(|| format!("the Docker network `{}`", config.network))?;
        let actuator = Self { docker, config };
        let removed = actuator.remove_leftovers().await?;
        if removed > 0 {
            tracing::info!(removed, "removed replica containers of an earlier run");
        }
        Ok(actuator)
    }

    /// Removes every container labelled with this project; returns how many.
    pub async fn remove_leftovers(&self) -> anyhow::Result<usize> {
        let label = format!("{PROJECT_LABEL}={}", self.config.project);
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let leftovers = self.docker.list_containers(Some(options)).await?;
        for container in &leftovers {
            if let Some(id) = &container.id {
                remove(&self.docker, id).await;
            }
        }
        Ok(leftovers.len())
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(id, Some(options)).await
        && !matches!(
            e,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }
        )
    {
        tracing::warn!(container = id, error = %e, "could not remove a replica container");
    }
}

#[async_trait]
impl Actuator for DockerActuator {
    async fn spawn(&self, spec: &ServiceSpec, n: usize) -> anyhow::Result<Box<dyn Replica>> {
        let config = &self.config;
        let id = format!("{}-{n}", spec.name);
        let name = format!("{}-{id}", config.project);
        let image = spec.program.to_string_lossy().into_owned();
        let mut env: BTreeMap<String, String> = config.env.clone();
        env.extend(spec.env.clone());
        // The kernel enforces the limit: the in-process one would count it twice.
        let cpus = env
            .remove("CPU_LIMIT")
            .map(|v| kit::cpu_limit::parse_cores(&v).map_err(anyhow::Error::msg))
            .transpose()?;
        env.insert("LISTEN".into(), format!("0.0.0.0:{}", config.port));
        env.insert("INSTANCE_ID".into(), id.clone());
        let memory = i64::try_from(config.memory_mib * 1024 * 1024).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([
                (PROJECT_LABEL.to_owned(), config.project.clone()),
                (SERVICE_LABEL.to_owned(), spec.name.clone()),
                // `docker compose down --remove-orphans` finds them too.
                (
                    "com.docker.compose.project".to_owned(),
                    config.project.clone(),
                ),
            ])),
            host_config: Some(HostConfig {
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: cpus.map(|c| (c * 1e9) as i64),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                network_mode: Some(config.network.clone()),
                binds: (!config.mounts.is_empty()).then(|| config.mounts.clone()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    config.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            // A container of that name is left from an earlier replica: replace it.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                remove(&self.docker, &name).await;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        }
        .with_context(|| format!("creating a container of {image}"))?;
        let container = created.id;
        if let Err(e) = self.docker.start_container(&container, None).await {
            remove(&self.docker, &container).await;
            return Err(e).with_context(|| format!("starting {name}"));
        }
        let address = self
            .docker
            .inspect_container(&container, None)
            .await
            .ok()
            .and_then(|info| info.network_settings?.networks?.remove(&config.network))
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty());
        let Some(address) = address else {
            remove(&self.docker, &container).await;
            anyhow::bail!("{name} has no address on the network {}", config.network);
        };
        let status = Arc::new(Mutex::new(None));
        tokio::spawn(watch(
            self.docker.clone(),
            container.clone(),
            status.clone(),
        ));
        Ok(Box::new(ContainerReplica {
            id,
            url: format!("http://{address}:{}", config.port),
            docker: self.docker.clone(),
            container,
            status,
        }))
    }
}

/// Waits for the container to stop, records why, and removes it.
async fn watch(docker: Docker, container: String, status: Arc<Mutex<Option<String>>>) {
    let mut wait = docker.wait_container(&container, None::<WaitContainerOptions>);
    let waited = wait.next().await;
    let state = docker
        .inspect_container(&container, None)
        .await
        .ok()
        .and_then(|info| info.state);
    let reason = match (state, waited) {
        (Some(state), _) => {
            let code = state.exit_code.unwrap_or(-1);
            if state.oom_killed == Some(true) {
                format!("container exited with code {code} (OOM-killed)")
            } else {
                format!("container exited with code {code}")
            }
        }
        (None, Some(Err(e))) => format!("container gone: {e}"),
        (None, _) => "container removed".to_owned(),
    };
    if let Ok(mut status) = status.lock() {
        *status = Some(reason);
    }
    remove(&docker, &container).await;
}

#[derive(Debug)]
struct ContainerReplica {
    id: String,
    url: String,
    docker: Docker,
    container: String,
    status: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl Replica for ContainerReplica {
    fn id(&self) -> &str {
        &self.id
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn exited(&mut self) -> Option<String> {
        self.status.lock().ok().and_then(|s| s.clone())
    }

    async fn stop(&mut self, grace: Duration) {
        let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        let docker = self
            .docker
            .clone()
            .with_timeout(grace + Duration::from_secs(30));
        let _ = docker.stop_container(&self.container, Some(options)).await;
        remove(&self.docker, &self.container).await;
    }

    async fn kill(&mut self) {
        // A paused (hung) container is unpaused first; force removal then kills it.
        let _ = self.docker.unpause_container(&self.container).await;
        remove(&self.docker, &self.container).await;
    }

    async fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Crash => {
                self.docker
                    .kill_container(
                        &self.container,
                        None::<bollard::query_parameters::KillContainerOptions>,
                    )
                    .await?;
            }
            Fault::Hang => self.docker.pause_container(&self.container).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_table_has_safe_defaults_and_names_images_by_version() {
        let config: DockerConfig = toml::from_str("network = \"scalelab\"").expect("toml");
        assert_eq!(config.project, "scalelab");
        assert_eq!(config.port, 8080);
        assert_eq!(config.memory_mib, 128);
        assert!(config.mounts.is_empty() && config.env.is_empty());
        assert_eq!(
            config.image("music"),
            format!("scalelab/music:{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            toml::from_str::<DockerConfig>("network = \"n\"\nprivileged = true").is_err(),
            "unknown keys are refused"
        );
        assert!(
            toml::from_str::<DockerConfig>("project = \"p\"").is_err(),
            "the network is required"
        );
    }
}
