//! The container emulator as a kind of device (`--target emulator`, `emulator up`): its image
//! and SD-card template made when their inputs changed, a fresh container per device reached
//! through its published ports, and one kept up for people (`emulator shell|logs` reach it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Emulator, EmulatorSpec};
use crate::device::inventory::WebUi;
use crate::device::{Device, Error, Fresh, Kind, Parts, Pending, Prepare, Started};
use crate::error::InfraError;
use crate::image::sdcard;
use crate::transport::https::HttpsTarget;
use crate::transport::ssh::SshTarget;

/// The container emulator, registered in [`crate::device::KINDS`].
pub struct ContainerKind;

/// What fresh emulators start from: the image, the SD-card template, the admin's key.
pub struct ContainerParts {
    pub image: String,
    pub template: PathBuf,
    pub key: PathBuf,
    pub pubkey: String,
}

impl Kind for ContainerKind {
    fn name(&self) -> &'static str {
        "emulator"
    }

    fn label(&self) -> &'static str {
        "emulator"
    }

    fn arch(&self) -> (&'static str, &'static str) {
        ("native", "The container emulator, on this machine's architecture.")
    }

    fn run_content(&self) -> u64 {
        sdcard::FUNCTIONAL_CONTENT
    }

    fn device_content(&self) -> u64 {
        sdcard::FULL_CONTENT
    }

    fn starting(&self) -> &'static str {
        "starting"
    }

    fn prepare<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<Box<dyn Parts>, Error>> {
        Box::pin(async move {
            let key = match how.key {
                Some(k) => k,
                None => crate::transport::ssh::make_key(how.work).await?,
            };
            let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();
            let (image, template) = prepare(how.backupd, how.force, how.content, how.say).await?;
            let parts: Box<dyn Parts> = Box::new(ContainerParts {
                image,
                template,
                key,
                pubkey,
            });
            Ok(parts)
        })
    }

    fn up<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<(), Error>> {
        Box::pin(async move { Ok(up(how).await?) })
    }
}

impl Parts for ContainerParts {
    fn start<'a>(&'a self, work: &'a Path, _say: &'a (dyn Fn(&str) + Sync)) -> Pending<'a, Result<Fresh, Error>> {
        Box::pin(async move {
            let emu = Emulator::start(EmulatorSpec {
                image: &self.image,
                sdcard_template: &self.template,
                admin_pubkey: &self.key.with_extension("pub"),
                work_dir: work,
                in_place: false,
            })
            .await?;
            let dev = device(&emu, &self.key, &self.pubkey, work);
            let started: Box<dyn Started> = Box::new(emu);
            Ok((dev, started))
        })
    }
}

impl Started for Emulator {
    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    fn gone(&self) -> Pending<'_, Option<String>> {
        Box::pin(Emulator::gone(self))
    }

    fn close(self: Box<Self>) -> Pending<'static, Result<(), Error>> {
        Box::pin(async move { Ok(self.remove().await?) })
    }
}

/// Makes sure the emulator image and the SD-card template exist; returns the image reference.
pub async fn prepare(
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

/// The device an emulator container is, reached through its published ports.
pub fn device(emu: &Emulator, key: &Path, pubkey: &str, work: &Path) -> Device {
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

/// What `emulator up` leaves for `shell` and `logs`.
fn up_state() -> PathBuf {
    crate::cache::dir().join("emulator-up.json")
}

/// `emulator up` of the container emulator, its files in `how.work`: up until Ctrl-C, then
/// removed.
async fn up(how: Prepare<'_>) -> Result<(), InfraError> {
    let (reference, template) = prepare(how.backupd, false, how.content, how.say).await?;
    let dir = how.work;
    std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
    let key = crate::transport::ssh::make_key(dir).await?;
    let emu = Emulator::start(EmulatorSpec {
        image: &reference,
        sdcard_template: &template,
        admin_pubkey: &key.with_extension("pub"),
        work_dir: dir,
        in_place: false,
    })
    .await?;
    println!(
        "emulator {} ready in {:.2} s\n  ssh -i {} -p {} nexus@127.0.0.1\n  https://127.0.0.1:{}{}\n  \
         Control UI: https://127.0.0.1:{}{} (user admin; its password: `sudo cat {}` in `nexus-hil emulator shell`)\n\
         Ctrl-C stops and removes it.",
        &emu.id[..12.min(emu.id.len())],
        emu.ready_after.as_secs_f64(),
        key.display(),
        emu.ssh_port,
        emu.https_port,
        nexus_contract::paths::CA_PATH,
        emu.https_port,
        nexus_contract::paths::CONTROL_UI_PREFIX,
        nexus_contract::paths::CONTROL_UI_ADMIN_PASSWORD_FILE,
    );
    let state = serde_json::json!({
        "id": emu.id, "ssh_port": emu.ssh_port, "https_port": emu.https_port,
        "key": key, "known_hosts": dir.join("known_hosts"),
    });
    let _ = std::fs::write(up_state(), state.to_string());
    let _ = tokio::signal::ctrl_c().await;
    let _ = std::fs::remove_file(up_state());
    emu.remove().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The ssh command line for the emulator that `emulator up` keeps running.
pub fn ssh_to_up() -> Result<Vec<String>, InfraError> {
    let text = std::fs::read_to_string(up_state())
        .map_err(|_| InfraError::Emulator("no emulator is up; start one with `nexus-hil emulator up`".into()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| InfraError::io(up_state().display(), e))?;
    let port = v["ssh_port"].as_u64().unwrap_or(22).to_string();
    // Interactive use: the run's key and known hosts, but prompts allowed and a terminal if there is one.
    Ok(vec![
        "ssh".to_string(),
        "-p".into(),
        port,
        "-i".into(),
        v["key"].as_str().unwrap_or_default().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", v["known_hosts"].as_str().unwrap_or_default()),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "nexus@127.0.0.1".into(),
    ])
}
