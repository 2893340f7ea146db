//! A `docker` pool's environments: one container per lease, from the bot's Docker engine, its
//! ports published on free ports of 127.0.0.1, named and labelled after the lease so the
//! reaper finds it after a restart.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use kiln_shared::lease::LeaseId;

/// The Docker engine environments run on.
#[derive(Debug, Clone)]
pub struct Containers {
    docker: Docker,
    /// Names start with the installation's prefix: `<prefix>-lease-<id>`.
    prefix: String,
}

impl Containers {
    /// The engine `DOCKER_HOST` names, or the local one; nothing is sent until a lease needs
    /// it.
    pub fn connect(prefix: &str) -> Result<Self, DockerError> {
        Ok(Self {
            docker: Docker::connect_with_local_defaults()?,
            prefix: prefix.to_owned(),
        })
    }

    /// The container of lease `id`.
    pub fn name(&self, id: LeaseId) -> String {
        format!("{}-lease-{id}", self.prefix)
    }

    /// Starts lease `id`'s container from `image` and says where each of its `ports` is
    /// published (`127.0.0.1:49153 → 8080`).
    pub async fn start(
        &self,
        id: LeaseId,
        image: &str,
        command: &[String],
        ports: &[u16],
    ) -> Result<String, DockerError> {
        let name = self.name(id);
        self.remove(&name).await?;
        self.pull_if_missing(image).await?;
        let exposed: Vec<String> = ports.iter().map(|p| format!("{p}/tcp")).collect();
        let bindings = exposed
            .iter()
            .map(|port| {
                let loopback = PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                };
                (port.clone(), Some(vec![loopback]))
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: (!command.is_empty()).then(|| command.to_vec()),
            exposed_ports: Some(exposed),
            labels: Some(HashMap::from([("kiln.lease".to_owned(), id.to_string())])),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.docker.create_container(Some(options), body).await?;
        if let Err(error) = self.docker.start_container(&name, None).await {
            let _ = self.remove(&name).await;
            return Err(error);
        }
        let inspected = self.docker.inspect_container(&name, None).await?;
        let published = inspected
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        let mut details = Vec::new();
        for port in ports {
            let host = published
                .get(&format!("{port}/tcp"))
                .and_then(|b| b.as_ref())
                .and_then(|b| b.iter().find_map(|b| b.host_port.clone()));
            if let Some(host) = host {
                details.push(format!("127.0.0.1:{host} → {port}"));
            }
        }
        if details.is_empty() {
            details.push(format!("container {name}"));
        }
        Ok(details.join(", "))
    }

    /// Pulls `image` unless the engine has it (a branch's image from a registry).
    async fn pull_if_missing(&self, image: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => return Err(error),
        }
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        self.docker
            .create_image(Some(options), None, None)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// The containers of this installation's leases, by lease.
    pub async fn leased(&self) -> Result<Vec<(LeaseId, String)>, DockerError> {
        let stem = format!("{}-lease-", self.prefix);
        let filters = HashMap::from([("label", vec!["kiln.lease"]), ("name", vec![stem.as_str()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| c.names?.into_iter().next())
            .filter_map(|name| {
                let name = name.trim_start_matches('/').to_owned();
                let id = name.strip_prefix(&stem)?.parse().ok()?;
                Some((LeaseId(id), name))
            })
            .collect())
    }

    /// Removes a container, running or not; a missing one is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
