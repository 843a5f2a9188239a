//! The harness's own key for real devices (made once, installed by `nexus-hil provision`) and
//! the devices' HTTPS CAs pinned on first use.

use std::path::{Path, PathBuf};

use crate::error::InfraError;

/// The key the harness logs in with on real devices.
pub fn harness_key() -> PathBuf {
    crate::cache::dir().join("harness-key").join("id_ed25519")
}

/// The key for a real device: `key` if given, or the harness key that `provision` installed.
pub fn remote_key(key: Option<PathBuf>, target: &str) -> Result<PathBuf, InfraError> {
    if let Some(k) = key {
        return Ok(k);
    }
    let k = harness_key();
    if k.exists() {
        Ok(k)
    } else {
        Err(InfraError::Unreachable(format!(
            "no key for {target}: run `nexus-hil provision --target {target}` once (it installs the harness's key), or pass --key"
        )))
    }
}

/// Where the CA of the device at `host:port` is pinned.
pub fn pin_path(pins: Option<&Path>, host: &str, port: u16) -> PathBuf {
    pins.map(Path::to_path_buf)
        .unwrap_or_else(|| crate::cache::dir().join("pins"))
        .join(format!("{host}_{port}.pem"))
}
