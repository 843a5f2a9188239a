//! Where a run's scenarios run, made before the first: fresh devices of one kind (prepared
//! once through its [`Kind`], one started per scenario, `-j` at a time), or the real devices of
//! `--target ssh://...` or `--targets`, described and checked. An unreachable device, or one
//! whose CA is not the inventory's, is an infrastructure error before anything runs, not a
//! failing scenario.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device::inventory::{ConsoleEntry, PowerEntry};
use crate::device::remote::{self, check_reachable, RemoteSpec};
use crate::device::{keys, Device, Error, Kind, Parts, Prepare, Target};
use crate::error::InfraError;

/// A real device of the run: its name in an inventory (none for `--target`) and how to reach it.
#[derive(Clone)]
pub struct FleetMember {
    pub name: Option<String>,
    pub dev: Device,
    /// Its power switch (`[device.power]`): power cuts and reboots run instead of being skipped.
    pub power: Option<PowerEntry>,
    /// Its serial console (`[device.console]`), read for the whole run.
    pub console: Option<ConsoleEntry>,
    /// Its SD mux (`[device.sdmux]`): the card read after a power cut (`inspect`).
    pub sdmux: Option<crate::device::inventory::SdMuxEntry>,
    /// The inventory marks it `throwaway` (a bench's own device).
    pub throwaway: bool,
}

/// Where scenarios run.
pub enum Slots {
    /// `jobs` fresh devices of `kind` at a time, each started from `parts`.
    Fresh {
        kind: &'static dyn Kind,
        parts: Box<dyn Parts>,
        jobs: usize,
    },
    /// Each of these real devices takes one scenario at a time.
    Devices(Vec<FleetMember>),
}

impl Slots {
    /// How many scenarios run at once.
    pub fn width(&self) -> usize {
        match self {
            Slots::Fresh { jobs, .. } => (*jobs).max(1),
            Slots::Devices(members) => members.len(),
        }
    }
}

/// How a run's slots are made: its arguments that concern its devices.
pub struct SlotOptions<'a> {
    /// `--target` as given (names a real device in errors).
    pub target: &'a str,
    pub key: Option<PathBuf>,
    pub https_port: u16,
    pub pins: Option<&'a Path>,
    pub backupd: Option<PathBuf>,
    /// Bytes of content on a fresh device's SD card.
    pub card: u64,
    /// `-j`.
    pub jobs: Option<usize>,
    /// The run's folder (its key, the devices' host keys).
    pub report_dir: &'a Path,
}

/// Makes the run's slots: a kind's image and card (`o.card` bytes of content) and key, or the
/// real devices described and each checked (login, and the inventory's CA when it names one).
pub async fn prepare(target: &Target, o: SlotOptions<'_>, say: &(dyn Fn(&str) + Sync)) -> Result<Slots, Error> {
    let members = match target {
        Target::Fresh(kind) => {
            let parts = kind
                .prepare(Prepare {
                    backupd: o.backupd,
                    content: o.card,
                    force: false,
                    key: o.key,
                    work: o.report_dir,
                    say,
                })
                .await?;
            return Ok(Slots::Fresh {
                kind: *kind,
                parts,
                jobs: o.jobs.unwrap_or(1),
            });
        }
        Target::Remote { user, host, port } => vec![FleetMember {
            name: None,
            dev: remote::device(RemoteSpec {
                user,
                host,
                ssh_port: *port,
                https_port: o.https_port,
                key: keys::remote_key(o.key, o.target)?,
                pins: o.pins,
                ca_sha256: None,
                work: o.report_dir,
                ui: Default::default(),
            }),
            power: None,
            console: None,
            sdmux: None,
            throwaway: false,
        }],
        Target::Fleet(devices) => {
            let mut v = Vec::new();
            for d in devices {
                let key = keys::remote_key(d.key.clone(), &d.target())
                    .map_err(|e| InfraError::Unreachable(format!("{}: {e}", d.name)))?;
                v.push(FleetMember {
                    name: Some(d.name.clone()),
                    dev: remote::device(RemoteSpec {
                        user: &d.admin,
                        host: &d.host,
                        ssh_port: d.ssh_port,
                        https_port: d.https_port,
                        key,
                        pins: o.pins,
                        ca_sha256: d.ca_sha256.clone(),
                        work: o.report_dir,
                        ui: d.ui.clone(),
                    }),
                    power: d.power.clone(),
                    console: d.console.clone(),
                    sdmux: d.sdmux.clone(),
                    throwaway: d.throwaway,
                });
            }
            v
        }
    };
    for m in &members {
        let who = m.name.as_ref().map(|n| format!("{n}: ")).unwrap_or_default();
        check_reachable(&m.dev, &who).await?;
        if m.dev.https.ca_sha256.is_some() {
            m.dev
                .https
                .pin_ca(Duration::from_secs(20))
                .await
                .map_err(|e| InfraError::Unreachable(format!("{who}{e}")))?;
        }
    }
    let jobs = o.jobs.unwrap_or(members.len()).clamp(1, members.len().max(1));
    Ok(Slots::Devices(members.into_iter().take(jobs).collect()))
}
