//! The emulator's lifecycle: a privileged container of the emulator image with systemd as PID 1,
//! its own copy of the SD-card image, the run's SSH key for the admin user, and sshd and HTTPS
//! published on 127.0.0.1 ephemeral ports only. Ready means `systemctl is-system-running --wait`
//! says running and both D-Bus names are owned. Removed when dropped or on `remove`. As a kind
//! of device behind the one seam: [`kind`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testcontainers::core::{ExecCommand, IntoContainerPort, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::ready::{wait_for_names, LIST_NAMES};
use crate::error::InfraError;

mod faults;
mod kind;

pub use kind::{device, prepare, ssh_to_up, ContainerKind};

/// Label on every emulator container, so `nexus-hil emulator down` finds strays; its value is
/// the harness's process id.
pub const LABEL: &str = "tech.noreya.nexus-hil.emulator";
/// Label naming one emulator, so a container whose start failed can be removed alone.
pub const INSTANCE_LABEL: &str = "tech.noreya.nexus-hil.instance";

/// A running emulator.
pub struct Emulator {
    container: Option<ContainerAsync<GenericImage>>,
    pub id: String,
    pub ssh_port: u16,
    pub https_port: u16,
    /// Time from container start to ready.
    pub ready_after: Duration,
    pub sdcard: PathBuf,
    /// The SD card is this emulator's own copy (removed with it), not a card it was lent.
    owns_card: bool,
}

/// What an emulator is started from.
pub struct EmulatorSpec<'a> {
    pub image: &'a str,
    pub sdcard_template: &'a Path,
    /// Public key allowed to log in as the admin user `nexus`.
    pub admin_pubkey: &'a Path,
    /// Where this emulator's SD-card copy is kept.
    pub work_dir: &'a Path,
    /// Boot from `sdcard_template` itself, not a copy, and leave it when removed (a card whose
    /// writes are logged, or a state of a card being checked).
    pub in_place: bool,
}

impl Emulator {
    pub async fn start(spec: EmulatorSpec<'_>) -> Result<Self, InfraError> {
        crate::engine::select()?;
        let (name, tag) = spec.image.rsplit_once(':').unwrap_or((spec.image, "latest"));
        std::fs::create_dir_all(spec.work_dir).map_err(|e| InfraError::io(spec.work_dir.display(), e))?;
        let sdcard = if spec.in_place {
            spec.sdcard_template.to_owned()
        } else {
            let copy = spec.work_dir.join("sdcard.img");
            crate::image::sdcard::copy_for(spec.sdcard_template, &copy)?;
            copy
        };
        let start = Instant::now();
        let instance = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let request = GenericImage::new(name, tag)
            .with_exposed_port(22.tcp())
            .with_exposed_port(443.tcp())
            .with_cmd(["/sbin/init"])
            .with_privileged(true)
            .with_label(LABEL, std::process::id().to_string())
            .with_label(INSTANCE_LABEL, instance.clone())
            .with_mount(Mount::bind_mount(sdcard.to_string_lossy(), "/var/lib/nexus/sdcard.img"))
            .with_mount(Mount::bind_mount(
                spec.admin_pubkey.to_string_lossy(),
                "/etc/nexus-hil/admin_authorized_keys",
            ))
            .with_host_config_modifier(|hc| {
                // Published on loopback only: nothing but this machine reaches the emulator.
                use testcontainers::bollard::models::PortBinding;
                let binding = || {
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }])
                };
                hc.port_bindings = Some(
                    [("22/tcp".to_string(), binding()), ("443/tcp".to_string(), binding())]
                        .into_iter()
                        .collect(),
                );
                hc.publish_all_ports = Some(false);
            })
            .with_startup_timeout(Duration::from_secs(60));
        let container = match request.start().await {
            Ok(c) => c,
            Err(e) => {
                // A container the engine created but could not start is not left behind.
                let _ = remove_labelled(format!("{INSTANCE_LABEL}={instance}")).await;
                return Err(InfraError::Emulator(format!(
                    "cannot start a container of {}: {e}",
                    spec.image
                )));
            }
        };
        let id = container.id().to_string();
        let mut emulator = Self {
            container: Some(container),
            id,
            ssh_port: 0,
            https_port: 0,
            ready_after: Duration::ZERO,
            sdcard,
            owns_card: !spec.in_place,
        };
        emulator.wait_ready().await?;
        emulator.ready_after = start.elapsed();
        let ssh_port = port(emulator.container(), 22).await?;
        let https_port = port(emulator.container(), 443).await?;
        emulator.ssh_port = ssh_port;
        emulator.https_port = https_port;
        Ok(emulator)
    }

    pub(super) fn container(&self) -> &ContainerAsync<GenericImage> {
        self.container.as_ref().expect("container present until removed")
    }

    /// Runs a command in the container (lifecycle and fault steps only); returns exit code and output.
    pub async fn exec(&self, cmd: &[&str]) -> Result<(i64, String), InfraError> {
        let mut r = self
            .container()
            .exec(ExecCommand::new(cmd.iter().copied()))
            .await
            .map_err(|e| InfraError::Emulator(format!("exec {cmd:?}: {e}")))?;
        let mut out = r.stdout_to_vec().await.unwrap_or_default();
        out.extend(r.stderr_to_vec().await.unwrap_or_default());
        let code = r.exit_code().await.ok().flatten().unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }

    pub(super) async fn wait_ready(&self) -> Result<(), InfraError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (code, out) = loop {
            let (code, out) = self
                .exec(&["timeout", "50", "systemctl", "is-system-running", "--wait"])
                .await?;
            // Until systemd has set up its manager, systemctl cannot reach it and says so, or
            // says "offline"; both mean "not yet".
            let not_yet = out.contains("Failed to connect to bus") || out.trim() == "offline";
            if !not_yet || Instant::now() > deadline {
                break (code, out);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if code != 0 || out.trim() != "running" {
            let (_, failed) = self
                .exec(&["systemctl", "--failed", "--no-legend", "--no-pager"])
                .await?;
            let (_, journal) = self
                .exec(&["journalctl", "-b", "--no-pager", "-n", "40", "-p", "warning"])
                .await?;
            return Err(InfraError::Emulator(format!(
                "the emulator did not come up: systemctl says {:?}; failed units:\n{failed}\njournal:\n{journal}",
                out.trim()
            )));
        }
        let listed = wait_for_names(deadline, Duration::from_millis(50), || async {
            self.exec(&["sh", "-c", LIST_NAMES])
                .await
                .map(|(_, names)| names)
                .unwrap_or_default()
        })
        .await;
        if listed {
            return Ok(());
        }
        let (_, log) = self
            .exec(&["journalctl", "-u", "nexus-backupd", "--no-pager", "-n", "40"])
            .await?;
        Err(InfraError::Emulator(format!(
            "nexus-backupd did not take its D-Bus names; its journal:\n{log}"
        )))
    }

    /// Why the emulator is gone, when its container no longer runs (stopped or removed from
    /// outside: killed, engine restarted, out of memory); `None` while it runs or is paused.
    pub async fn gone(&self) -> Option<String> {
        use testcontainers::bollard::query_parameters::ListContainersOptionsBuilder;
        self.container.as_ref()?;
        let docker = match crate::engine::client().await {
            Ok(d) => d,
            Err(e) => return Some(e.to_string()),
        };
        // Asked as a filter: Podman names states (such as "stopped") that the Docker API's
        // models do not know, so an inspection of a stopped container cannot be read.
        let filters = std::collections::HashMap::from([
            ("id".to_string(), vec![self.id.clone()]),
            ("status".to_string(), vec!["running".to_string(), "paused".to_string()]),
        ]);
        match docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
            ))
            .await
        {
            Ok(list) if !list.is_empty() => None,
            Ok(_) => Some(format!(
                "the emulator's container {} stopped during the scenario (killed, or the engine stopped it)",
                self.id
            )),
            Err(e) => Some(format!("the emulator's container {} cannot be found: {e}", self.id)),
        }
    }

    /// The journal of `unit` (all of the boot when `unit` is empty).
    pub async fn journal(&self, unit: &str, lines: u32) -> String {
        let n = lines.to_string();
        let mut cmd = vec!["journalctl", "--no-pager", "-n", &n];
        if !unit.is_empty() {
            cmd.extend(["-u", unit]);
        }
        self.exec(&cmd)
            .await
            .map(|(_, out)| out)
            .unwrap_or_else(|e| e.to_string())
    }

    /// Stops and removes the container and its SD-card copy.
    pub async fn remove(mut self) -> Result<(), InfraError> {
        if let Some(c) = self.container.take() {
            c.rm()
                .await
                .map_err(|e| InfraError::Emulator(format!("cannot remove container {}: {e}", self.id)))?;
        }
        if self.owns_card {
            let _ = std::fs::remove_file(&self.sdcard);
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.owns_card {
            let _ = std::fs::remove_file(&self.sdcard);
        }
    }
}

pub(super) async fn port(c: &ContainerAsync<GenericImage>, p: u16) -> Result<u16, InfraError> {
    c.get_host_port_ipv4(p.tcp())
        .await
        .map_err(|e| InfraError::Emulator(format!("port {p} is not published: {e}")))
}

/// Removes every emulator container (running or not) left by earlier runs.
pub async fn remove_all() -> Result<usize, InfraError> {
    remove_labelled(LABEL.to_string()).await
}

/// Removes the emulator containers started by process `pid`.
pub async fn remove_owned(pid: u32) -> Result<usize, InfraError> {
    remove_labelled(format!("{LABEL}={pid}")).await
}

async fn remove_labelled(label: String) -> Result<usize, InfraError> {
    use testcontainers::bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
    let docker = crate::engine::client().await?;
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await
        .map_err(|e| InfraError::Engine(e.to_string()))?;
    let mut n = 0;
    for c in list {
        if let Some(id) = c.id {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()),
                )
                .await
                .map_err(|e| InfraError::Engine(format!("cannot remove {id}: {e}")))?;
            n += 1;
        }
    }
    Ok(n)
}
