//! The operations `crash-states` records, each run against a device through what a real device
//! offers (D-Bus over SSH as root, a shell for `sync` and the restart that applies an
//! Activate). What each handed out is noted with the write log's length when the reply was in:
//! a state at or after that point must remember it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nexus_contract::names::{BACKUP1, SNAPSHOT1};

use super::broken::BrokenDaemon;
use super::Error;
use crate::device::Device;
use crate::transport::dbus::DeviceBus;
use crate::transport::ssh::sh_quote;

/// An operation whose every flush point is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Op {
    /// `Backup1.Create` of a snapshot, to its end.
    Backup,
    /// `Backup1.Cancel` of a running backup.
    Cancel,
    /// `Backup1.Delete` of a finished backup.
    BackupDelete,
    /// `Snapshot1.Create`.
    Create,
    /// `Snapshot1.Delete`.
    SnapshotDelete,
    /// `Snapshot1.Activate` and the daemon's restart that applies it.
    Activate,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Backup,
        Op::Cancel,
        Op::BackupDelete,
        Op::Create,
        Op::SnapshotDelete,
        Op::Activate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Backup => "backup",
            Op::Cancel => "cancel",
            Op::BackupDelete => "backup-delete",
            Op::Create => "create",
            Op::SnapshotDelete => "snapshot-delete",
            Op::Activate => "activate",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Op::Backup => "Backup1.Create of a second snapshot, run to its end, with a finished backup of the first on the card",
            Op::Cancel => "Backup1.Create of a second snapshot, then Backup1.Cancel while it runs",
            Op::BackupDelete => "Backup1.Delete of the second of two finished backups",
            Op::Create => "Snapshot1.Create of the system and data, with a finished backup on the card",
            Op::SnapshotDelete => "Snapshot1.Delete of a snapshot that has no backup, with a finished backup of another",
            Op::Activate => "Snapshot1.Activate of the first snapshot (data changed since), then the daemon's restart that switches to it",
        }
    }
}

/// The marker written into the live data and system after the snapshot an Activate goes back
/// to: gone after the switch, there before it.
pub const MARKER: &str = "crash-states-marker";

/// What the recording of an operation left to check against.
#[derive(Debug, Default)]
pub struct Facts {
    /// Log entries when the operation started (after a `sync`) and when it had ended.
    pub start: usize,
    pub end: usize,
    /// Snapshot ids the daemon handed out, each with the log's length when the reply was in.
    pub handed: Vec<(u64, usize)>,
    /// The finished backups before the operation: id and the file's SHA-256 as listed.
    pub backups_before: BTreeMap<u64, String>,
    /// The snapshot an Activate switches to.
    pub activate: Option<u64>,
    /// The backup a Delete removed (the last run's result may still name it), and the log's
    /// length when the Delete's reply was in: from there on it must stay gone.
    pub deleted_backup: Option<(u64, usize)>,
}

/// Runs the device's side of one recording; `mark` reads the write log's length.
pub struct Recorder<'a> {
    pub dev: &'a Device,
    pub password: &'a str,
    pub mark: &'a (dyn Fn() -> Result<usize, Error> + Sync),
    pub broken: Option<BrokenDaemon>,
}

const CALL: Duration = Duration::from_secs(60);

impl Recorder<'_> {
    async fn root(&self, cmd: &str) -> Result<String, Error> {
        let out = self
            .dev
            .ssh
            .run(
                &self.dev.admin,
                &format!("sudo -n sh -c {}", sh_quote(cmd)),
                None,
                Duration::from_secs(120),
            )
            .await?;
        if out.code != Some(0) {
            return Err(Error::Device(format!(
                "`{cmd}` failed on the device: {}",
                out.stderr.trim()
            )));
        }
        Ok(out.stdout)
    }

    async fn bus(&self) -> Result<DeviceBus, Error> {
        Ok(DeviceBus::connect(&self.dev.ssh, &self.dev.admin, "root", CALL).await?)
    }

    /// Records `op`: sets the device up for it, syncs, runs it, syncs again.
    pub async fn record(&self, op: Op) -> Result<Facts, Error> {
        let mut facts = Facts::default();
        if let Some(b) = self.broken {
            self.root(&b.install_command()).await?;
        }
        let bus = self.bus().await?;
        wait_answering(&bus).await?;
        // The automation's file holds a record before the first snapshot (an Activate goes
        // back to its data).
        self.root("for i in $(seq 100); do [ -s /broot/data/automation/state.log ] && break; sleep 0.1; done")
            .await?;
        // Every operation has a finished backup of a first snapshot on the card to keep whole.
        let first = create(&bus, "crash-states: first").await?;
        self.backup(&bus, first).await?;
        let second = match op {
            Op::Backup | Op::Cancel | Op::BackupDelete | Op::SnapshotDelete => {
                Some(create(&bus, "crash-states: second").await?)
            }
            Op::Create | Op::Activate => None,
        };
        if let (Op::BackupDelete, Some(s)) = (op, second) {
            self.backup(&bus, s).await?;
        }
        if op == Op::Activate {
            self.root(&format!(
                "echo changed after snapshot {first} > /broot/data/{MARKER} \
                 && echo changed after snapshot {first} > /broot/system/{MARKER}"
            ))
            .await?;
        }
        facts.backups_before = finished_backups(&bus).await?;
        self.root("sync").await?;
        facts.start = (self.mark)()?;
        // Ids handed out before the operation: no state from its start on may hand them out again.
        facts.handed.push((first, facts.start));
        facts.handed.extend(second.map(|s| (s, facts.start)));
        match (op, second) {
            (Op::Backup, Some(s)) => self.backup(&bus, s).await?,
            (Op::Cancel, Some(s)) => self.cancel(&bus, s).await?,
            (Op::BackupDelete, Some(s)) => {
                call(&bus, BACKUP1, "Delete", &[s.to_string()]).await?;
                facts.deleted_backup = Some((s, (self.mark)()?));
            }
            (Op::SnapshotDelete, Some(s)) => {
                call(&bus, SNAPSHOT1, "Delete", &[s.to_string()]).await?;
            }
            (Op::Create, _) => {
                let id = create(&bus, "crash-states: the operation").await?;
                facts.handed.push((id, (self.mark)()?));
            }
            (Op::Activate, _) => {
                call(&bus, SNAPSHOT1, "Activate", &[first.to_string()]).await?;
                self.root("systemctl restart nexus-backupd").await?;
                wait_answering(&bus).await?;
                facts.activate = Some(first);
                let (ids, active) = snapshots(&bus).await?;
                // The automatic snapshot of the state left behind is handed out too.
                let at = (self.mark)()?;
                facts
                    .handed
                    .extend(ids.into_iter().filter(|&i| i != first).map(|i| (i, at)));
                if active != Some(first) {
                    return Err(Error::Daemon(format!(
                        "after Activate({first}) and the restart the active snapshot is {active:?}: the switch did not happen"
                    )));
                }
            }
            _ => unreachable!("the second snapshot is made for these operations"),
        }
        self.root("sync").await?;
        facts.end = (self.mark)()?;
        Ok(facts)
    }

    async fn backup(&self, bus: &DeviceBus, id: u64) -> Result<(), Error> {
        call(bus, BACKUP1, "Create", &[id.to_string(), self.password.to_string()]).await?;
        let result = wait_idle(bus, id, |_| false).await?;
        if result != "ok" {
            return Err(Error::Daemon(format!("the backup of snapshot {id} ended {result:?}")));
        }
        Ok(())
    }

    async fn cancel(&self, bus: &DeviceBus, id: u64) -> Result<(), Error> {
        call(bus, BACKUP1, "Create", &[id.to_string(), self.password.to_string()]).await?;
        // Cancelled once it has written something.
        let mut cancelled = false;
        let result = wait_idle(bus, id, |progress| {
            if !cancelled && progress >= 5 {
                cancelled = true;
                return true;
            }
            false
        })
        .await?;
        if result != "cancelled" {
            return Err(Error::Daemon(format!(
                "the backup of snapshot {id} ended {result:?} before it could be cancelled; use a larger --content-bytes"
            )));
        }
        Ok(())
    }
}

/// Calls `service.method` with `args`; the reply's values.
pub async fn call(
    bus: &DeviceBus,
    service: &str,
    method: &str,
    args: &[String],
) -> Result<Vec<serde_json::Value>, Error> {
    bus.call(service, method, args)
        .await
        .map_err(|e| Error::Daemon(format!("{service}.{method}: {e}")))
}

/// `Snapshot1.Create(true, true, description)`: the new id.
pub async fn create(bus: &DeviceBus, description: &str) -> Result<u64, Error> {
    let reply = call(
        bus,
        SNAPSHOT1,
        "Create",
        &["true".into(), "true".into(), description.into()],
    )
    .await?;
    reply
        .first()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::Daemon(format!("Snapshot1.Create replied {reply:?}, not an id")))
}

/// `Backup1.Status` as a map.
pub async fn status(bus: &DeviceBus) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let reply = call(bus, BACKUP1, "Status", &[]).await?;
    reply
        .first()
        .and_then(|v| v.as_object())
        .cloned()
        .ok_or_else(|| Error::Daemon(format!("Backup1.Status replied {reply:?}, not a dictionary")))
}

/// The finished backups `Backup1.GetList` lists: id and SHA-256.
pub async fn finished_backups(bus: &DeviceBus) -> Result<BTreeMap<u64, String>, Error> {
    bus.finished_backups()
        .await
        .map_err(|e| Error::Daemon(format!("{BACKUP1}.GetList: {e}")))
}

/// The snapshots `Snapshot1.GetList` lists, and the active one.
pub async fn snapshots(bus: &DeviceBus) -> Result<(Vec<u64>, Option<u64>), Error> {
    let reply = call(bus, SNAPSHOT1, "GetList", &[]).await?;
    let list = list_of(&reply);
    let ids = list.iter().filter_map(|e| e.get("id")?.as_u64()).collect();
    let active = list
        .iter()
        .find(|e| e.get("active").and_then(|v| v.as_bool()) == Some(true))
        .and_then(|e| e.get("id")?.as_u64());
    Ok((ids, active))
}

fn list_of(reply: &[serde_json::Value]) -> Vec<serde_json::Value> {
    reply.first().and_then(|l| l.as_array()).cloned().unwrap_or_default()
}

fn field_u64(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Polls `Status` until the backup of `id` no longer runs; `at` hears its progress and says
/// when to call `Cancel`. The last result.
async fn wait_idle(bus: &DeviceBus, id: u64, mut at: impl FnMut(u64) -> bool) -> Result<String, Error> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = status(bus).await?;
        if field_u64(&s, "id") != id {
            return Ok(s
                .get("last_result")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string());
        }
        if at(field_u64(&s, "progress")) {
            call(bus, BACKUP1, "Cancel", &[]).await?;
        }
        if Instant::now() > deadline {
            return Err(Error::Daemon(format!(
                "the backup of snapshot {id} still ran after 10 min"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the daemon answers on the bus again (after a restart), up to a minute.
pub async fn wait_answering(bus: &DeviceBus) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match status(bus).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(Error::Daemon(format!("nexus-backupd did not answer within 60 s: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
