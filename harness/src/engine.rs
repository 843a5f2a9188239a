//! Finding the container engine: Docker or Podman through `DOCKER_HOST` or the usual sockets.

use std::path::Path;

use crate::error::InfraError;

/// Sockets tried, in order, when `DOCKER_HOST` is not set.
const SOCKETS: [&str; 3] = ["/var/run/docker.sock", "/run/podman/podman.sock", "/run/docker.sock"];

/// Points testcontainers (and bollard) at an engine; fails with what to do when none is found.
pub fn select() -> Result<String, InfraError> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if let Some(path) = host.strip_prefix("unix://") {
            if !Path::new(path).exists() {
                return Err(InfraError::Engine(format!(
                    "DOCKER_HOST={host}, but {path} does not exist; start the engine (ci/setup-host starts `podman system service`)"
                )));
            }
        }
        return Ok(host);
    }
    for s in SOCKETS {
        if Path::new(s).exists() {
            let host = format!("unix://{s}");
            // SAFETY of set_var: called once at start, before any thread reads the environment.
            unsafe { std::env::set_var("DOCKER_HOST", &host) };
            return Ok(host);
        }
    }
    Err(InfraError::Engine(
        "no container engine found (no DOCKER_HOST, no /var/run/docker.sock, no /run/podman/podman.sock); \
         run ci/setup-host, or start `podman system service --time=0 unix:///run/podman/podman.sock`"
            .into(),
    ))
}

/// The engine's API client.
pub async fn client() -> Result<testcontainers::bollard::Docker, InfraError> {
    select()?;
    testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|e| InfraError::Engine(format!("cannot talk to the container engine: {e}")))
}
