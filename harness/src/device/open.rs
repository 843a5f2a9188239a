//! Bringing a device up for a command, or reaching one: the emulator's image and SD-card
//! template made when needed, a fresh container started, or a real device's SSH and HTTPS
//! described and checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::container::{Emulator, EmulatorSpec};
use super::inventory::WebUi;
use super::{keys, Device, Target};
use crate::error::InfraError;
use crate::image::sdcard;
use crate::transport::https::HttpsTarget;
use crate::transport::ssh::SshTarget;

/// Makes sure the emulator image and the SD-card template exist; returns the image reference.
pub async fn prepare_emulator(
    backupd: Option<PathBuf>,
    force: bool,
    content: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(String, PathBuf), InfraError> {
    let backupd = backupd.unwrap_or_else(crate::image::default_backupd);
    let inputs = crate::image::ImageInputs::collect(&backupd)?;
    let lock = tokio::task::spawn_blocking(crate::image::BuildLock::take)
        .await
        .map_err(|e| InfraError::Image(e.to_string()))??;
    let built = crate::image::ensure(&inputs, force, say).await?;
    match built.build_time {
        Some(t) => say(&format!("built {} in {:.1} s", built.reference, t.as_secs_f64())),
        None => say(&format!("{} is up to date", built.reference)),
    }
    let template = tokio::task::spawn_blocking(move || sdcard::template(content, |m| eprintln!("nexus-hil: {m}")))
        .await
        .map_err(|e| InfraError::SdCard(e.to_string()))??;
    drop(lock);
    Ok((built.reference, template))
}

/// A device opened for one command (`conform`, `provision`): a fresh emulator, or a real one.
pub struct Opened {
    pub dev: Device,
    pub emu: Option<Emulator>,
}

impl Opened {
    /// Removes the emulator, if one was started.
    pub async fn close(self) {
        if let Some(e) = self.emu {
            let _ = e.remove().await;
        }
    }
}

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
pub fn remote_device(spec: RemoteSpec<'_>) -> Device {
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

/// The device an emulator container is, reached through its published ports.
pub fn emulator_device(emu: &Emulator, key: &Path, pubkey: &str, work: &Path) -> Device {
    Device {
        ssh: SshTarget {
            host: "127.0.0.1".into(),
            port: emu.ssh_port,
            key: key.to_owned(),
            known_hosts: work.join("known_hosts"),
            multiplex: None,
        },
        https: HttpsTarget {
            host: "127.0.0.1".into(),
            port: emu.https_port,
            pin: work.join("pinned-ca.pem"),
            token: None,
            ca_sha256: None,
        },
        admin: "nexus".into(),
        pubkey: pubkey.to_string(),
        ui: WebUi::emulator(),
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

/// What `open_device` is given: the target and how to reach or make it.
pub struct OpenSpec<'a> {
    pub target: &'a Target,
    pub https_port: u16,
    pub key: Option<PathBuf>,
    pub backupd: Option<PathBuf>,
    pub pins: Option<&'a Path>,
    pub work: &'a Path,
}

/// Opens a target: starts an emulator (image built when needed) or reaches a real device.
pub async fn open_device(spec: OpenSpec<'_>) -> Result<Opened, InfraError> {
    let work = spec.work;
    std::fs::create_dir_all(work).map_err(|e| InfraError::io(work.display(), e))?;
    match spec.target {
        Target::Emulator => {
            let say = |m: &str| eprintln!("nexus-hil: {m}");
            let (image, template) = prepare_emulator(spec.backupd, false, sdcard::FULL_CONTENT, &say).await?;
            let key = crate::transport::ssh::make_key(work).await?;
            let emu = Emulator::start(EmulatorSpec {
                image: &image,
                sdcard_template: &template,
                admin_pubkey: &key.with_extension("pub"),
                work_dir: work,
                in_place: false,
            })
            .await?;
            let pubkey = std::fs::read_to_string(key.with_extension("pub"))
                .map_err(|e| InfraError::io(key.with_extension("pub").display(), e))?;
            let dev = emulator_device(&emu, &key, &pubkey, work);
            Ok(Opened { dev, emu: Some(emu) })
        }
        Target::Fleet(_) | Target::Standin => Err(InfraError::Unreachable(
            "name one device with --target emulator or --target ssh://USER@HOST[:PORT] (the stand-in: `emulator up --arch arm64`)".into(),
        )),
        Target::Remote { user, host, port } => {
            let key = keys::remote_key(spec.key, &format!("ssh://{user}@{host}:{port}"))?;
            let dev = remote_device(RemoteSpec {
                user,
                host,
                ssh_port: *port,
                https_port: spec.https_port,
                key,
                pins: spec.pins,
                ca_sha256: None,
                work,
                ui: WebUi::default(),
            });
            check_reachable(&dev, "").await?;
            Ok(Opened { dev, emu: None })
        }
    }
}
