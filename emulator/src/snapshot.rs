//! Snapshots of the system state: create, list, delete, activate, and the switch to an activated
//! snapshot at start. Plain Rust, no D-Bus; `snapshot_iface` puts it on the bus.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use nexus_contract::names::{BACKUP1, SNAPSHOT1};
use serde::{Deserialize, Serialize};

use crate::config::{TestFault, TestFaults};
use crate::error::{NexusError, NexusResult};
use crate::layout::{Layout, Part};
use crate::state::{write_atomic, SharedState};
use crate::subvolume::Subvolumes;

/// Longest accepted snapshot description, in bytes.
pub const MAX_DESCRIPTION: usize = 256;

/// `info.json` of a snapshot, and one entry of `Snapshot1.GetList`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotInfo {
    pub id: u32,
    pub description: String,
    /// Unix seconds.
    pub created: i64,
    pub system: bool,
    pub data: bool,
}

impl SnapshotInfo {
    pub fn parts(&self) -> impl Iterator<Item = Part> + '_ {
        Part::ALL.into_iter().filter(|p| match p {
            Part::System => self.system,
            Part::Data => self.data,
        })
    }
}

/// The snapshots on the device.
#[derive(Debug)]
pub struct SnapshotStore {
    layout: Layout,
    subvols: Subvolumes,
    state: Arc<SharedState>,
    /// Serialises operations that change snapshots or depend on one staying put.
    ops: Mutex<()>,
    /// FOR TESTS ONLY: the broken daemon's faults (empty on a device).
    faults: TestFaults,
}

impl SnapshotStore {
    pub fn new(layout: Layout, subvols: Subvolumes, state: Arc<SharedState>) -> Self {
        Self {
            layout,
            subvols,
            state,
            ops: Mutex::new(()),
            faults: TestFaults::default(),
        }
    }

    /// FOR TESTS ONLY: a broken store (see [`TestFaults`]).
    pub fn with_test_faults(mut self, faults: TestFaults) -> Self {
        self.faults = faults;
        self
    }

    pub fn test_faults(&self) -> &TestFaults {
        &self.faults
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Holds off snapshot changes while the caller checks and claims a snapshot.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the description given to `Create`.
    pub fn check_description(description: &str) -> NexusResult<()> {
        if description.len() > MAX_DESCRIPTION {
            return Err(NexusError::InvalidArgs(format!(
                "description is {} bytes long; use at most {MAX_DESCRIPTION}",
                description.len()
            )));
        }
        if description.chars().any(char::is_control) {
            return Err(NexusError::InvalidArgs(
                "description contains control characters (newline, tab, escape, ...); use printable text".into(),
            ));
        }
        Ok(())
    }

    /// Takes read-only snapshots of the chosen live subvolumes; returns the new snapshot.
    pub fn create(&self, system: bool, data: bool, description: &str) -> NexusResult<SnapshotInfo> {
        if !system && !data {
            return Err(NexusError::InvalidArgs(
                "nothing to snapshot: set system, data or both to true".into(),
            ));
        }
        Self::check_description(description)?;
        let _guard = self.lock();
        self.create_locked(system, data, description)
    }

    fn create_locked(&self, system: bool, data: bool, description: &str) -> NexusResult<SnapshotInfo> {
        // The id is taken (and stored) before anything is made, so it is never handed out twice;
        // and above every backup on the card, which may have been copied back onto a new card
        // whose state starts afresh: its id is taken.
        let above_backups = if self.faults.has(TestFault::ReuseId) {
            1
        } else {
            self.highest_backup_id().saturating_add(1)
        };
        let id = self
            .state
            .update(|s| {
                let id = s.next_id.max(above_backups).max(1);
                s.next_id = id + 1;
                id
            })
            .map_err(|e| NexusError::io("cannot record the new snapshot id", &e))?;
        let info = SnapshotInfo {
            id,
            description: description.to_owned(),
            created: unix_now(),
            system,
            data,
        };
        let dir = self.layout.snapshot_dir(id);
        let result = (|| {
            fs::create_dir(&dir)?;
            for part in info.parts() {
                self.subvols
                    .snapshot(&self.layout.live(part), &dir.join(part.name()), false)?;
            }
            let json = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
            write_atomic(&dir.join("info.json"), &json, 0o644)
        })();
        if let Err(e) = result {
            self.remove_dir(id);
            return Err(NexusError::io(&format!("cannot create snapshot {id}"), &e));
        }
        tracing::info!(id, system, data, "snapshot created");
        Ok(info)
    }

    /// The highest id of a backup file in the backups folder (0: none).
    fn highest_backup_id(&self) -> u32 {
        fs::read_dir(self.layout.backups_dir())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(Layout::parse_backup_name))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// All complete snapshots, by id. A card that cannot be read is an error that says so, never
    /// an empty or short list (which would read as "the snapshots are gone").
    pub fn list(&self) -> NexusResult<Vec<SnapshotInfo>> {
        let dir = self.layout.snapshots_dir();
        let unreadable =
            |e: std::io::Error| NexusError::io(&format!("cannot list the snapshots in {}", dir.display()), &e);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unreadable(e)),
        };
        let mut list = Vec::new();
        for e in entries {
            let Some(id) = e.map_err(unreadable)?.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            list.extend(self.read_info(id).map_err(unreadable)?);
        }
        list.sort_by_key(|i: &SnapshotInfo| i.id);
        Ok(list)
    }

    /// The snapshot with this id, if it exists and is complete; an error if its record cannot
    /// be read (a torn or missing one is an incomplete snapshot: none).
    fn read_info(&self, id: u32) -> std::io::Result<Option<SnapshotInfo>> {
        match fs::read(self.layout.snapshot_dir(id).join("info.json")) {
            Ok(bytes) => Ok(serde_json::from_slice::<SnapshotInfo>(&bytes)
                .ok()
                .filter(|i| i.id == id)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The snapshot with this id, if it exists, is complete and can be read.
    pub fn info(&self, id: u32) -> Option<SnapshotInfo> {
        self.read_info(id).ok().flatten()
    }

    /// The snapshot with this id, or `NoSuchSnapshot` (or the card's error if it cannot be read).
    pub fn get(&self, id: u32) -> NexusResult<SnapshotInfo> {
        self.read_info(id)
            .map_err(|e| NexusError::io(&format!("cannot read snapshot {id}"), &e))?
            .ok_or_else(|| {
                NexusError::NoSuchSnapshot(format!(
                    "there is no snapshot {id}; call {SNAPSHOT1}.GetList for the existing ids"
                ))
            })
    }

    /// Deletes a snapshot; refused while a backup reads it or the system runs on it.
    pub fn delete(&self, id: u32) -> NexusResult<()> {
        let _guard = self.lock();
        self.get(id)?;
        let state = self.state.get();
        if state.running_backup == Some(id) {
            return Err(NexusError::InUse(format!(
                "snapshot {id} is being backed up; wait for the backup or call {BACKUP1}.Cancel first"
            )));
        }
        if state.active == id {
            return Err(NexusError::InUse(format!(
                "the system runs on snapshot {id}; activate another snapshot and restart before deleting it"
            )));
        }
        if state.pending == Some(id) {
            return Err(NexusError::InUse(format!(
                "snapshot {id} is activated for the next start; activate another snapshot first"
            )));
        }
        // info.json goes first: a snapshot half deleted is no longer listed, and is swept at start.
        let dir = self.layout.snapshot_dir(id);
        fs::remove_file(dir.join("info.json"))
            .map_err(|e| NexusError::io(&format!("cannot delete snapshot {id}"), &e))?;
        self.remove_dir(id);
        // Only a synced folder says the card took it: a card that fails says so here.
        let snapshots = self.layout.snapshots_dir();
        fs::File::open(&snapshots).and_then(|d| d.sync_all()).map_err(|e| {
            NexusError::io(
                &format!("cannot sync the deletion of snapshot {id} (it is no longer listed)"),
                &e,
            )
        })?;
        tracing::info!(id, "snapshot deleted");
        Ok(())
    }

    /// Records that the system switches to snapshot `id` at the next start.
    pub fn activate(&self, id: u32) -> NexusResult<()> {
        let _guard = self.lock();
        self.get(id)?;
        self.state
            .update(|s| s.pending = Some(id))
            .map_err(|e| NexusError::io("cannot record the activation", &e))?;
        tracing::info!(id, "snapshot activated for the next start");
        Ok(())
    }

    /// Start-up work: sweep half-made snapshots, make ids safe, apply a pending switch.
    /// Returns the id of the automatic snapshot taken before a switch, if one happened.
    pub fn recover(&self) -> NexusResult<Option<u32>> {
        let _guard = self.lock();
        let mut max_id = 0;
        if let Ok(entries) = fs::read_dir(self.layout.snapshots_dir()) {
            for e in entries.filter_map(|e| e.ok()) {
                let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                max_id = max_id.max(id);
                if self.info(id).is_none() {
                    tracing::warn!(id, "removing incomplete snapshot left by an interrupted operation");
                    self.remove_dir(id);
                }
            }
        }
        let reuse = self.faults.has(TestFault::ReuseId);
        let complete = if reuse {
            self.list()?.last().map_or(0, |i| i.id)
        } else {
            0
        };
        self.state
            .update(|s| {
                s.next_id = if reuse {
                    tracing::warn!("TEST FAULT reuse-id: the next id follows the complete snapshots alone");
                    complete + 1
                } else {
                    s.next_id.max(max_id + 1).max(1)
                }
            })
            .map_err(|e| NexusError::io("cannot record snapshot ids", &e))?;
        for part in Part::ALL {
            self.repair_switch(part);
        }
        let Some(target) = self.state.get().pending else {
            return Ok(None);
        };
        let Some(info) = self.info(target) else {
            tracing::warn!(
                target,
                "activated snapshot no longer exists; staying on the current state"
            );
            self.state
                .update(|s| s.pending = None)
                .map_err(|e| NexusError::io("cannot clear the activation", &e))?;
            return Ok(None);
        };
        let left = self.create_locked(
            true,
            true,
            &format!("Automatic snapshot before switching to snapshot {target}"),
        )?;
        let half = self.faults.has(TestFault::HalfActivate);
        for part in info.parts().filter(|&p| !(half && p == Part::System)) {
            self.switch_part(&info, part)
                .map_err(|e| NexusError::io(&format!("cannot switch {} to snapshot {target}", part.name()), &e))?;
        }
        self.state
            .update(|s| {
                s.active = target;
                s.pending = None;
            })
            .map_err(|e| NexusError::io("cannot record the switch", &e))?;
        tracing::info!(target, left = left.id, "switched to the activated snapshot");
        Ok(Some(left.id))
    }

    /// Replaces a live subvolume with a writable snapshot of the snapshot's copy.
    fn switch_part(&self, info: &SnapshotInfo, part: Part) -> std::io::Result<()> {
        let live = self.layout.live(part);
        let new = with_suffix(&live, ".new");
        let old = with_suffix(&live, ".old");
        self.subvols
            .snapshot(&self.layout.snapshot_dir(info.id).join(part.name()), &new, true)?;
        fs::rename(&live, &old)?;
        fs::rename(&new, &live)?;
        fs::File::open(self.layout.broot())?.sync_all()?;
        self.subvols.delete(&old)
    }

    /// Finishes or undoes a switch that a crash interrupted.
    fn repair_switch(&self, part: Part) {
        let live = self.layout.live(part);
        let new = with_suffix(&live, ".new");
        let old = with_suffix(&live, ".old");
        if new.exists() {
            let _ = self.subvols.delete(&new);
        }
        if old.exists() {
            let r = if live.exists() {
                self.subvols.delete(&old)
            } else {
                fs::rename(&old, &live)
            };
            if let Err(e) = r {
                tracing::error!("cannot repair {}: {e}", live.display());
            }
        }
    }

    /// Removes a snapshot directory and the subvolumes in it, best effort.
    fn remove_dir(&self, id: u32) {
        let dir = self.layout.snapshot_dir(id);
        for part in Part::ALL {
            let p = dir.join(part.name());
            if p.exists() {
                if let Err(e) = self.subvols.delete(&p) {
                    tracing::error!("cannot remove {}: {e}", p.display());
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!("cannot remove {}: {e}", dir.display());
            }
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a plain-directory card, broken by `faults`, started afresh (its recovery run).
    fn store(broot: &Path, faults: &[TestFault]) -> SnapshotStore {
        let layout = Layout::new(broot, &broot.join(".nexus-backupd"));
        for dir in [
            layout.live(Part::System),
            layout.live(Part::Data),
            layout.snapshots_dir(),
        ] {
            fs::create_dir_all(dir).unwrap();
        }
        let state = Arc::new(SharedState::open(layout.state_dir()).unwrap());
        let s = SnapshotStore::new(layout, Subvolumes::PlainCopy, state).with_test_faults(TestFaults {
            faults: faults.to_vec(),
        });
        s.recover().unwrap();
        s
    }

    #[test]
    fn a_card_that_cannot_be_read_is_an_error_never_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), &[]);
        assert!(s.list().unwrap().is_empty(), "a fresh card has no snapshots");
        let id = s.create(true, true, "one").unwrap().id;
        assert_eq!(s.list().unwrap().len(), 1);

        // A snapshot whose record the card cannot read (here a folder where the file was).
        let info = s.layout().snapshot_dir(id).join("info.json");
        fs::remove_file(&info).unwrap();
        fs::create_dir(&info).unwrap();
        let e = s
            .list()
            .expect_err("an unreadable record is not a missing snapshot")
            .to_string();
        assert!(e.contains("cannot list the snapshots in"), "{e}");
        let e = s.get(id).expect_err("nor is it there").to_string();
        assert!(e.contains(&format!("cannot read snapshot {id}")), "{e}");
        fs::remove_dir(&info).unwrap();

        // The snapshots' folder the card cannot read.
        let snapshots = s.layout().snapshots_dir();
        fs::rename(&snapshots, dir.path().join("elsewhere")).unwrap();
        fs::write(&snapshots, b"").unwrap();
        let e = s
            .list()
            .expect_err("an unreadable folder is not an empty one")
            .to_string();
        assert!(e.contains(&snapshots.display().to_string()), "{e}");
    }

    #[test]
    fn the_reuse_id_fault_hands_out_a_deleted_snapshots_id_again_and_the_real_store_does_not() {
        for (faults, next) in [(&[][..], 3), (&[TestFault::ReuseId][..], 2)] {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), faults);
            assert_eq!(s.create(true, true, "one").unwrap().id, 1);
            assert_eq!(s.create(true, true, "two").unwrap().id, 2);
            s.delete(2).unwrap();
            let s = store(dir.path(), faults);
            assert_eq!(s.create(true, true, "next").unwrap().id, next, "{faults:?}");
        }
    }

    #[test]
    fn the_half_activate_fault_switches_data_alone() {
        for (faults, system) in [(&[][..], "then"), (&[TestFault::HalfActivate][..], "now")] {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), faults);
            let live = |p: Part| s.layout().live(p).join("f");
            fs::write(live(Part::System), "then").unwrap();
            fs::write(live(Part::Data), "then").unwrap();
            let id = s.create(true, true, "one").unwrap().id;
            fs::write(live(Part::System), "now").unwrap();
            fs::write(live(Part::Data), "now").unwrap();
            s.activate(id).unwrap();
            let s = store(dir.path(), faults);
            let read = |p: Part| fs::read_to_string(s.layout().live(p).join("f")).unwrap();
            assert_eq!(
                (read(Part::System).as_str(), read(Part::Data).as_str()),
                (system, "then")
            );
        }
    }
}
