//! A real device, reached and never started: its SSH and HTTPS described from `--target
//! ssh://...` or an inventory's entry, and its admin's login checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inventory::WebUi;
use super::{keys, Device};
use crate::error::InfraError;
use crate::transport::https::HttpsTarget;
use crate::transport::ssh::SshTarget;

/// How to reach a real device.
pub struct RemoteSpec<'a> {
    pub user: &'a str,
    pub host: &'a str,
    pub ssh_port: u16,
    pub https_port: u16,
    pub key: PathBuf,
    pub pins: Option<&'a Path>,
    pub ca_sha256: Option<String>,
    /// Where this run keeps the device's host key.
    pub work: &'a Path,
    /// Its web page (`[device.ui]` of targets.toml).
    pub ui: WebUi,
}

/// A real device as [`Device`]: the admin over SSH, HTTPS with its CA pinned under `pins`.
pub fn device(spec: RemoteSpec<'_>) -> Device {
    let pubkey = std::fs::read_to_string(spec.key.with_extension("pub")).unwrap_or_default();
    Device {
        ssh: SshTarget {
            host: spec.host.to_string(),
            port: spec.ssh_port,
            key: spec.key,
            known_hosts: spec.work.join("known_hosts"),
            multiplex: None,
        },
        https: HttpsTarget {
            host: spec.host.to_string(),
            port: spec.https_port,
            pin: keys::pin_path(spec.pins, spec.host, spec.https_port),
            token: std::env::var("NEXUS_HIL_HTTPS_TOKEN").ok(),
            ca_sha256: spec.ca_sha256,
        },
        admin: spec.user.to_string(),
        pubkey,
        ui: spec.ui,
    }
}

/// Checks that the admin of `dev` logs in with its key; `who` prefixes the error (a device's
/// name in an inventory).
pub async fn check_reachable(dev: &Device, who: &str) -> Result<(), InfraError> {
    let (ssh, user) = (&dev.ssh, &dev.admin);
    match ssh.run(user, "true", None, Duration::from_secs(20)).await {
        Ok(o) if o.code == Some(0) => Ok(()),
        Ok(o) => Err(InfraError::Unreachable(format!(
            "{who}ssh {user}@{}:{} refused the key {}: {}; install it with `nexus-hil provision` or pass --key",
            ssh.host,
            ssh.port,
            ssh.key.display(),
            o.stderr.trim()
        ))),
        Err(e) => Err(InfraError::Unreachable(format!(
            "{who}ssh {user}@{}:{}: {e}",
            ssh.host, ssh.port
        ))),
    }
}
