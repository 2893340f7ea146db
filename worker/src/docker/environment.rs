//! A `docker` pool's environments on this worker's engine: one container per lease, named
//! `<prefix>-lease-<id>` and labelled with the lease and the installation, its ports
//! published on free ports of the worker's host, so the reaper finds it by label after a
//! restart and a tester on another machine reaches it.

use std::collections::HashMap;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use kiln_shared::lease::LeaseId;
use kiln_shared::wire::EnvironmentRequested;

use super::DockerRunner;

/// The label that names a container's lease: the reaper's only way to tell an environment.
pub const LEASE_LABEL: &str = "kiln.lease";

/// The label that names a container's installation (its prefix): two installations on one
/// engine never reap each other's environments.
pub const INSTALLATION_LABEL: &str = "kiln.installation";

/// One of an environment's ports: where on the worker's host it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub port: u16,
    pub host_port: u16,
}

impl DockerRunner {
    /// The container of lease `id`.
    pub fn environment_name(&self, id: LeaseId) -> String {
        format!("{}-lease-{id}", self.prefix)
    }

    /// Starts the environment `asked` for, its ports published on `bind_ip` (`0.0.0.0` for
    /// every interface), and says where each port went. A container of the lease left from
    /// an earlier try is replaced.
    pub async fn start_environment(
        &self,
        asked: &EnvironmentRequested,
        bind_ip: &str,
    ) -> Result<Vec<Published>, DockerError> {
        let name = self.environment_name(asked.lease);
        self.remove_environment(&name).await?;
        self.pull_if_missing(&asked.image).await?;
        let exposed: Vec<String> = asked.ports.iter().map(|p| format!("{p}/tcp")).collect();
        let bindings = exposed
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some(bind_ip.to_owned()),
                    host_port: Some(String::new()),
                };
                (port.clone(), Some(vec![binding]))
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(asked.image.clone()),
            cmd: (!asked.command.is_empty()).then(|| asked.command.clone()),
            exposed_ports: Some(exposed),
            labels: Some(HashMap::from([
                (LEASE_LABEL.to_owned(), asked.lease.to_string()),
                (INSTALLATION_LABEL.to_owned(), self.prefix.clone()),
            ])),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.docker.create_container(Some(options), body).await?;
        let started = async {
            self.docker.start_container(&name, None).await?;
            self.docker.inspect_container(&name, None).await
        };
        let inspected = match started.await {
            Ok(inspected) => inspected,
            Err(error) => {
                let _ = self.remove_environment(&name).await;
                return Err(error);
            }
        };
        let published = inspected
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        Ok(asked
            .ports
            .iter()
            .filter_map(|&port| {
                let host_port = published
                    .get(&format!("{port}/tcp"))
                    .and_then(|b| b.as_ref())
                    .and_then(|b| b.iter().find_map(|b| b.host_port.as_deref()?.parse().ok()))?;
                Some(Published { port, host_port })
            })
            .collect())
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

    /// The environments of this installation on this engine, by lease: every container
    /// labelled with a lease and this installation, running or not.
    pub async fn environments(&self) -> Result<Vec<(LeaseId, String)>, DockerError> {
        let installation = format!("{INSTALLATION_LABEL}={}", self.prefix);
        let filters = HashMap::from([("label", vec![LEASE_LABEL, installation.as_str()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let id = c.labels?.get(LEASE_LABEL)?.parse().ok()?;
                let name = c.names?.into_iter().next()?;
                Some((LeaseId(id), name.trim_start_matches('/').to_owned()))
            })
            .collect())
    }

    /// Removes an environment's container, running or not; a missing one is fine.
    pub async fn remove_environment(&self, name: &str) -> Result<(), DockerError> {
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
