//! Backups: one job at a time turns a snapshot into `nexus_backup_N.tar.gpg` (tar -> OpenPGP),
//! on low-priority threads under a read-bandwidth cap, written to a hidden partial file that is
//! only renamed to its final name once complete and synced. Plain Rust; `backup_iface` puts it on
//! the bus.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_contract::names::BACKUP1;
use nexus_contract::paths;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::config::{BackupConfig, TestFault};
use crate::error::{NexusError, NexusResult};
use crate::layout::Layout;
use crate::pipeline::{self, Progress};
use crate::snapshot::{unix_now, SnapshotStore};
use crate::state::write_atomic;
use crate::throttle::lower_thread_priority;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD: usize = 1024;

/// What the job reports to the D-Bus side.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupEvent {
    Progress { id: u32, percent: u32 },
    Finished { id: u32, result: String },
}

/// `Backup1.Status()`, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Snapshot id of the running backup, 0 when none runs.
    pub id: u32,
    pub progress: u32,
    pub state: &'static str,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub last_id: u32,
    pub last_result: String,
}

/// One entry of `Backup1.GetList()`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub id: u32,
    pub path: String,
    pub url: String,
    pub size: u64,
    pub created: i64,
    pub sha256: String,
}

/// What the daemon remembers of a published backup file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackupMeta {
    size: u64,
    created: i64,
    sha256: String,
}

/// The running job, shared with its threads.
#[derive(Debug)]
struct Job {
    id: u32,
    progress: Progress,
}

impl Job {
    fn percent(&self) -> u32 {
        self.progress.percent()
    }
}

type EventSink = Arc<dyn Fn(BackupEvent) + Send + Sync>;

/// Starts, tracks, cancels and lists backups.
pub struct BackupManager {
    store: Arc<SnapshotStore>,
    config: BackupConfig,
    job: Mutex<Option<Arc<Job>>>,
    events: EventSink,
    stopping: AtomicBool,
}

impl std::fmt::Debug for BackupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupManager").field("job", &self.job).finish()
    }
}

impl BackupManager {
    pub fn new(store: Arc<SnapshotStore>, config: BackupConfig, events: EventSink) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            job: Mutex::new(None),
            events,
            stopping: AtomicBool::new(false),
        })
    }

    fn layout(&self) -> &Layout {
        self.store.layout()
    }

    fn running(&self) -> Option<Arc<Job>> {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks a password given to `Create`, without ever echoing it.
    pub fn check_password(password: &str) -> NexusResult<()> {
        if password.is_empty() {
            return Err(NexusError::InvalidPassword(
                "the password is empty; give a non-empty password".into(),
            ));
        }
        if password.len() > MAX_PASSWORD {
            return Err(NexusError::InvalidPassword(format!(
                "the password is {} bytes long; use at most {MAX_PASSWORD} bytes",
                password.len()
            )));
        }
        if password.contains('\0') {
            return Err(NexusError::InvalidPassword(
                "the password contains a NUL character; remove it".into(),
            ));
        }
        Ok(())
    }

    /// Start-up work: remove partial files and report a run that a stop interrupted.
    pub fn recover(&self) -> io::Result<()> {
        if let Ok(entries) = fs::read_dir(self.layout().backups_dir()) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_name().to_str().is_some_and(Layout::is_partial_name) {
                    tracing::warn!("removing partial backup {}", e.path().display());
                    fs::remove_file(e.path())?;
                }
            }
        }
        if self.store.test_faults().has(TestFault::DeleteEarlierBackup) {
            if let Some(first) = self.list().map_err(io::Error::other)?.first() {
                tracing::warn!(
                    id = first.id,
                    "TEST FAULT delete-earlier-backup: deleting the first backup"
                );
                fs::remove_file(self.layout().backup_file(first.id))?;
                let _ = fs::remove_file(self.layout().backup_meta(first.id));
                fs::File::open(self.layout().backups_dir())?.sync_all()?;
            }
        }
        self.store.state().update(|s| {
            if let Some(id) = s.running_backup.take() {
                s.last_id = id;
                s.last_result = format!(
                    "failed: interrupted: nexus-backupd stopped during the backup of snapshot {id}; start the backup again"
                );
                tracing::warn!(id, "the last backup was interrupted");
            }
        })
    }

    /// Registers a backup of snapshot `id` and starts it; returns once `Status` shows it.
    pub fn start(self: &Arc<Self>, id: u32, password: Zeroizing<String>) -> NexusResult<()> {
        Self::check_password(&password)?;
        let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(job) = slot.as_ref() {
            return Err(NexusError::Busy(format!(
                "a backup of snapshot {} is running ({}%); wait until Status reports id 0, or call Cancel",
                job.id,
                job.percent()
            )));
        }
        {
            let _snapshots = self.store.lock();
            self.store.get(id)?;
            if self.layout().backup_file(id).exists() {
                return Err(NexusError::Exists(format!(
                    "{} already exists; download it, or call {BACKUP1}.Delete({id}) to make it again",
                    Layout::backup_name(id)
                )));
            }
            self.store
                .state()
                .update(|s| s.running_backup = Some(id))
                .map_err(|e| NexusError::io("cannot record the backup", &e))?;
        }
        let job = Arc::new(Job {
            id,
            progress: Progress::default(),
        });
        *slot = Some(job.clone());
        drop(slot);
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("backup-{id}"))
            .spawn(move || this.run(job, password));
        if let Err(e) = spawned {
            self.finish(id, format!("failed: cannot start the backup thread: {e}"));
            return Err(NexusError::Failed(format!("cannot start the backup: {e}; try again")));
        }
        tracing::info!(id, "backup started");
        Ok(())
    }

    /// Asks the running backup to stop and waits until its partial file is gone.
    pub fn cancel(&self) -> NexusResult<u32> {
        let job = self
            .running()
            .ok_or_else(|| NexusError::NotRunning("no backup is running; nothing to cancel".into()))?;
        job.progress.cancel();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.running().is_some_and(|j| Arc::ptr_eq(&j, &job)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(id = job.id, "backup cancelled");
        Ok(job.id)
    }

    /// The daemon is stopping: end a running backup as interrupted and remove its partial file.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.cancel();
    }

    pub fn status(&self) -> Status {
        let state = self.store.state().get();
        match self.running() {
            Some(job) => Status {
                id: job.id,
                progress: job.percent(),
                state: if job.progress.cancelled() {
                    "cancelling"
                } else {
                    "running"
                },
                bytes_done: job.progress.done(),
                bytes_total: job.progress.total(),
                last_id: state.last_id,
                last_result: state.last_result,
            },
            None => Status {
                id: 0,
                progress: 0,
                state: "idle",
                bytes_done: 0,
                bytes_total: 0,
                last_id: state.last_id,
                last_result: state.last_result,
            },
        }
    }

    /// Deletes the backup of snapshot `id`.
    pub fn delete(&self, id: u32) -> NexusResult<()> {
        if self.running().is_some_and(|j| j.id == id) {
            return Err(NexusError::InUse(format!(
                "the backup of snapshot {id} is being written; wait for it or call Cancel first"
            )));
        }
        let path = self.layout().backup_file(id);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(NexusError::NoSuchBackup(format!(
                    "there is no backup of snapshot {id}; call {BACKUP1}.GetList for the existing ones"
                )))
            }
        }
        fs::remove_file(&path).map_err(|e| NexusError::io(&format!("cannot delete {}", path.display()), &e))?;
        if !self.store.test_faults().has(TestFault::ListPhantom) {
            let _ = fs::remove_file(self.layout().backup_meta(id));
        }
        if let Ok(d) = fs::File::open(self.layout().backups_dir()) {
            let _ = d.sync_all();
        }
        tracing::info!(id, "backup deleted");
        Ok(())
    }

    /// The published backups, by id, with their SHA-256. A card that cannot be read is an error
    /// that says so, never an empty or short list.
    pub fn list(&self) -> NexusResult<Vec<BackupInfo>> {
        let dir = self.layout().backups_dir();
        let unreadable = |e: io::Error| NexusError::io(&format!("cannot list the backups in {}", dir.display()), &e);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(unreadable(e)),
        };
        for e in entries {
            let e = e.map_err(unreadable)?;
            let Some(id) = e.file_name().to_str().and_then(Layout::parse_backup_name) else {
                continue;
            };
            let meta = match fs::symlink_metadata(e.path()) {
                Ok(meta) => meta,
                // Deleted since the folder was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unreadable(e)),
            };
            if !meta.is_file() {
                continue;
            }
            let Some(known) = self.meta_for(id, meta.len(), &meta) else {
                continue;
            };
            out.push(BackupInfo {
                id,
                path: e.path().to_string_lossy().into_owned(),
                url: paths::backup_url(id.into()),
                size: meta.len(),
                created: known.created,
                sha256: known.sha256,
            });
        }
        if self.store.test_faults().has(TestFault::ListPhantom) {
            self.list_records(&mut out);
        }
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    /// TEST FAULT list-phantom: every backup the daemon has a record of is listed, file or not.
    fn list_records(&self, out: &mut Vec<BackupInfo>) {
        let dir = self.layout().state_dir().join("backups");
        for e in fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let meta = fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<BackupMeta>(&b).ok());
            if let (Some(m), false) = (meta, out.iter().any(|b| b.id == id)) {
                out.push(BackupInfo {
                    id,
                    path: self.layout().backup_file(id).to_string_lossy().into_owned(),
                    url: paths::backup_url(id.into()),
                    size: m.size,
                    created: m.created,
                    sha256: m.sha256,
                });
            }
        }
    }

    /// The recorded metadata of a backup file, hashed afresh when missing or stale.
    fn meta_for(&self, id: u32, size: u64, meta: &fs::Metadata) -> Option<BackupMeta> {
        use std::os::unix::fs::MetadataExt;
        let path = self.layout().backup_meta(id);
        if let Some(m) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<BackupMeta>(&b).ok())
        {
            if m.size == size {
                return Some(m);
            }
        }
        let mut hasher = sha2::Sha256::new();
        let mut f = fs::File::open(self.layout().backup_file(id)).ok()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = io::Read::read(&mut f, &mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let m = BackupMeta {
            size,
            created: meta.mtime(),
            sha256: hex(&hasher.finalize()),
        };
        self.store_meta(id, &m);
        Some(m)
    }

    fn store_meta(&self, id: u32, m: &BackupMeta) {
        let path = self.layout().backup_meta(id);
        let r = fs::create_dir_all(path.parent().unwrap_or(self.layout().state_dir()))
            .and_then(|_| write_atomic(&path, &serde_json::to_vec_pretty(m).unwrap_or_default(), 0o644));
        if let Err(e) = r {
            tracing::warn!("cannot record {}: {e}", path.display());
        }
    }

    /// The job thread: runs the backup, then records and announces the result.
    fn run(self: Arc<Self>, job: Arc<Job>, password: Zeroizing<String>) {
        lower_thread_priority(&self.config);
        let id = job.id;
        let partial = self.layout().partial_file(id);
        let result = match self.write_backup(&job, &password) {
            Ok(meta) => {
                self.store_meta(id, &meta);
                tracing::info!(id, size = meta.size, "backup finished");
                "ok".to_string()
            }
            Err(e) => {
                if let Err(rm) = fs::remove_file(&partial) {
                    if rm.kind() != io::ErrorKind::NotFound {
                        tracing::error!("cannot remove {}: {rm}", partial.display());
                    }
                }
                if self.stopping.load(Ordering::Relaxed) {
                    format!("failed: interrupted: nexus-backupd stopped during the backup of snapshot {id}; start the backup again")
                } else if job.progress.cancelled() {
                    "cancelled".to_string()
                } else {
                    let reason = e.reason(id);
                    tracing::error!(id, "backup failed: {reason}");
                    format!("failed: {reason}")
                }
            }
        };
        drop(password);
        self.finish(id, result);
    }

    fn finish(&self, id: u32, result: String) {
        let record = |s: &mut crate::state::State| {
            s.running_backup = None;
            s.last_id = id;
            s.last_result = result.clone();
        };
        if let Err(e) = self.store.state().update(record) {
            // Status must not go on saying the previous backup's result (a card that failed
            // the backup may fail this write too).
            tracing::error!("cannot record the backup result: {e}; Status reports it until a restart");
            self.store.state().update_unstored(record);
        }
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        (self.events)(BackupEvent::Finished { id, result });
    }

    /// tar -> OpenPGP -> partial file -> fsync -> rename -> fsync dir. A failed fsync is never
    /// tried again (the kernel may have marked the pages clean: a second fsync proves nothing).
    fn write_backup(&self, job: &Job, password: &str) -> Result<BackupMeta, WriteFailed> {
        let id = job.id;
        // The test-only in-place writer names the file finally before its data is there.
        let in_place = self.config.writer == crate::config::Writer::InPlace;
        let partial = if in_place {
            self.layout().backup_file(id)
        } else {
            self.layout().partial_file(id)
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(WriteFailed::at(Stage::Open))?;
        let interval = Duration::from_millis(self.config.progress_interval_ms);
        let mut last = (Instant::now(), u32::MAX);
        let written = pipeline::encrypt_tree(
            &self.layout().snapshot_dir(id),
            &["info.json", "system", "data"],
            file,
            password,
            &self.config,
            &Layout::archive_name(id),
            &job.progress,
            |percent| {
                if percent != last.1 && last.0.elapsed() >= interval {
                    last = (Instant::now(), percent);
                    (self.events)(BackupEvent::Progress { id, percent });
                }
            },
        )
        .map_err(WriteFailed::at(Stage::Write))?;
        written.file.sync_all().map_err(WriteFailed::at(Stage::Sync))?;
        written
            .file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(WriteFailed::at(Stage::Write))?;
        drop(written.file);
        if job.progress.cancelled() {
            return Err(WriteFailed::at(Stage::Write)(io::Error::other("cancelled")));
        }
        let published = self.layout().backup_file(id);
        publish(&partial, &published, in_place, |dir| fs::File::open(dir)?.sync_all())?;
        Ok(BackupMeta {
            size: written.size,
            created: unix_now(),
            sha256: hex(&written.sha256),
        })
    }
}

/// Where writing a backup failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Open,
    Write,
    Sync,
    Publish,
}

/// A backup that could not be written: where, and the error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", match .stage {
    Stage::Open => "cannot create the partial file",
    Stage::Write => "cannot write the backup",
    Stage::Sync => "cannot sync the backup to the SD card",
    Stage::Publish => "cannot publish the backup under its final name",
})]
struct WriteFailed {
    stage: Stage,
    source: io::Error,
}

impl WriteFailed {
    fn at(stage: Stage) -> impl Fn(io::Error) -> Self {
        move |source| Self { stage, source }
    }

    /// The backup's `last_result` after `failed: `: what went wrong and what to do.
    fn reason(&self, id: u32) -> String {
        let name = Layout::backup_name(id);
        match self.source.raw_os_error() {
            Some(libc::ENOSPC) => format!(
                "no space left on /broot while writing {name}; delete old backups or snapshots and start the backup again"
            ),
            Some(libc::EIO) => format!(
                "the SD card reported an I/O error: {self} (writing {name}); nothing was published; the card may be \
                 failing: check the kernel log (dmesg), copy the backups off the device and start the backup again"
            ),
            Some(libc::EROFS) => format!(
                "the SD card's file system went read-only (btrfs does so after an I/O error of the card): {self} \
                 (writing {name}); nothing was published; restart the device, check the card (dmesg) and start the \
                 backup again"
            ),
            _ => format!("{self} (writing {name}); see the nexus-backupd journal"),
        }
    }
}

/// Renames the synced `partial` to `published` and syncs the folder (`sync_dir`). When that
/// sync fails, the name may not be on the card: the file is taken back (removed, the folder
/// synced again, whatever that says), so that a failed backup is never listed.
fn publish(
    partial: &std::path::Path,
    published: &std::path::Path,
    in_place: bool,
    sync_dir: impl Fn(&std::path::Path) -> io::Result<()>,
) -> Result<(), WriteFailed> {
    let dir = published.parent().unwrap_or(std::path::Path::new("."));
    if !in_place {
        fs::rename(partial, published).map_err(WriteFailed::at(Stage::Publish))?;
    }
    if let Err(e) = sync_dir(dir) {
        if let Err(rm) = fs::remove_file(published) {
            tracing::error!("cannot take back {} after a failed sync: {rm}", published.display());
        }
        let _ = sync_dir(dir);
        return Err(WriteFailed::at(Stage::Publish)(e));
    }
    Ok(())
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_of_the_folder_takes_the_published_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, published) = (dir.path().join(".b.partial"), dir.path().join("b"));
        fs::write(&partial, b"synced data").unwrap();
        let syncs = std::cell::Cell::new(0);
        let r = publish(&partial, &published, false, |_| {
            syncs.set(syncs.get() + 1);
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        let e = r.expect_err("a failed folder sync is a failed backup");
        assert_eq!(e.stage, Stage::Publish);
        assert!(
            !published.exists(),
            "a backup whose name may not be on the card is not listed"
        );
        assert!(!partial.exists());
        assert_eq!(
            syncs.get(),
            2,
            "the folder is synced again after the file is taken back"
        );
        let reason = e.reason(7);
        assert!(
            reason.contains("I/O error") && reason.contains("nothing was published"),
            "{reason}"
        );

        fs::write(&partial, b"synced data").unwrap();
        publish(&partial, &published, false, |_| Ok(())).unwrap();
        assert_eq!(fs::read(&published).unwrap(), b"synced data");
    }

    #[test]
    fn a_backups_folder_that_cannot_be_read_is_an_error_never_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let (broot, state_dir) = (dir.path().join("broot"), dir.path().join("state"));
        let state = Arc::new(crate::state::SharedState::open(&state_dir).unwrap());
        let layout = Layout::new(&broot, &state_dir);
        let store = Arc::new(SnapshotStore::new(
            layout.clone(),
            crate::subvolume::Subvolumes::PlainCopy,
            state,
        ));
        let backups = BackupManager::new(store, BackupConfig::default(), Arc::new(|_| {}));
        assert!(backups.list().unwrap().is_empty(), "no folder yet: no backups");
        fs::create_dir_all(&broot).unwrap();
        fs::write(layout.backups_dir(), b"").unwrap();
        let e = backups
            .list()
            .expect_err("an unreadable folder is not an empty one")
            .to_string();
        assert!(
            e.contains("cannot list the backups in") && e.contains(&layout.backups_dir().display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_result_the_card_cannot_store_is_still_what_status_says() {
        let dir = tempfile::tempdir().unwrap();
        let (broot, state_dir) = (dir.path().join("broot"), dir.path().join("state"));
        let state = Arc::new(crate::state::SharedState::open(&state_dir).unwrap());
        state.update(|s| s.last_result = "ok".into()).unwrap();
        let layout = Layout::new(&broot, &state_dir);
        let store = Arc::new(SnapshotStore::new(
            layout,
            crate::subvolume::Subvolumes::PlainCopy,
            state,
        ));
        let backups = BackupManager::new(store, BackupConfig::default(), Arc::new(|_| {}));
        // The state's folder gone: the result cannot be written.
        fs::remove_dir_all(&state_dir).unwrap();
        backups.finish(4, "failed: the SD card reported an I/O error".into());
        let st = backups.status();
        assert_eq!((st.id, st.last_id), (0, 4));
        assert_eq!(st.last_result, "failed: the SD card reported an I/O error");
    }

    #[test]
    fn each_failure_names_where_and_what_to_do() {
        let eio = WriteFailed::at(Stage::Sync)(io::Error::from_raw_os_error(libc::EIO)).reason(3);
        assert!(
            eio.starts_with("the SD card reported an I/O error: cannot sync the backup to the SD card"),
            "{eio}"
        );
        assert!(eio.contains("nexus_backup_3.tar.gpg"), "{eio}");
        let full = WriteFailed::at(Stage::Write)(io::Error::from_raw_os_error(libc::ENOSPC)).reason(3);
        assert!(full.starts_with("no space left on /broot"), "{full}");
        let ro = WriteFailed::at(Stage::Write)(io::Error::from_raw_os_error(libc::EROFS)).reason(3);
        assert!(
            ro.contains("after an I/O error of the card") && ro.contains("restart the device"),
            "{ro}"
        );
        let other = WriteFailed::at(Stage::Open)(io::Error::from_raw_os_error(libc::EACCES)).reason(3);
        assert!(other.starts_with("cannot create the partial file"), "{other}");
    }
}
