//! One device for one command (`conform`, the tests): a fresh device of any kind, started
//! through its [`Kind`](super::Kind), or a real one reached and checked.

use std::path::{Path, PathBuf};

use super::remote::{check_reachable, RemoteSpec};
use super::{keys, Device, Error, Lifecycle, Prepare, Started, Target};
use crate::error::InfraError;

/// A device opened for one command: a fresh one (removed by [`Opened::close`]), or a real one.
pub struct Opened {
    pub dev: Device,
    started: Option<Box<dyn Started>>,
}

impl Opened {
    /// The faults of a device the harness started; `None` for a real device.
    pub fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        let started: &dyn Started = self.started.as_deref()?;
        Some(started)
    }

    /// Removes the device, if one was started.
    pub async fn close(self) {
        if let Some(s) = self.started {
            let _ = s.close().await;
        }
    }
}

/// What `open_device` is given: the target and how to reach or make it.
pub struct OpenSpec<'a> {
    pub target: &'a Target,
    pub https_port: u16,
    pub key: Option<PathBuf>,
    pub backupd: Option<PathBuf>,
    pub pins: Option<&'a Path>,
    pub work: &'a Path,
}

/// Opens a target: starts a fresh device of its kind (its image made when needed, a
/// device-sized card) or reaches a real device.
pub async fn open_device(spec: OpenSpec<'_>) -> Result<Opened, Error> {
    let work = spec.work;
    std::fs::create_dir_all(work).map_err(|e| InfraError::io(work.display(), e))?;
    match spec.target {
        Target::Fresh(kind) => {
            let say = |m: &str| eprintln!("nexus-hil: {m}");
            let parts = kind
                .prepare(Prepare {
                    backupd: spec.backupd,
                    content: kind.device_content(),
                    force: false,
                    key: None,
                    work,
                    say: &say,
                })
                .await?;
            let (dev, started) = parts.start(work, &say).await?;
            Ok(Opened {
                dev,
                started: Some(started),
            })
        }
        Target::Fleet(_) => Err(InfraError::Unreachable(
            "name one device with --target emulator, --target standin or --target ssh://USER@HOST[:PORT]".into(),
        )
        .into()),
        Target::Remote { user, host, port } => {
            let key = keys::remote_key(spec.key, &format!("ssh://{user}@{host}:{port}"))?;
            let dev = super::remote::device(RemoteSpec {
                user,
                host,
                ssh_port: *port,
                https_port: spec.https_port,
                key,
                pins: spec.pins,
                ca_sha256: None,
                work,
                ui: Default::default(),
            });
            check_reachable(&dev, "").await?;
            Ok(Opened { dev, started: None })
        }
    }
}
