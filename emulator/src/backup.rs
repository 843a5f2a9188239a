//! Backups: one job at a time turns a snapshot into `nexus_backup_N.tar.gpg` (tar -> OpenPGP),
//! on low-priority threads under a read-bandwidth cap, written to a hidden partial file that is
//! only renamed to its final name once complete and synced. Plain Rust; `backup_iface` puts it on
//! the bus.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::archive;
use crate::config::BackupConfig;
use crate::error::{NexusError, NexusResult};
use crate::layout::Layout;
use crate::openpgp::{self, CipherWriter, Plaintext};
use crate::snapshot::{unix_now, SnapshotStore};
use crate::state::write_atomic;
use crate::throttle::{lower_thread_priority, Cancelled, TokenBucket};

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
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

impl Job {
    fn percent(&self) -> u32 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0;
        }
        ((self.done.load(Ordering::Relaxed).min(total) * 100) / total).min(99) as u32
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
                    "{} already exists; download it, or call tech.noreya.Backup1.Delete({id}) to make it again",
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
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
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
        job.cancel.store(true, Ordering::Relaxed);
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
                state: if job.cancel.load(Ordering::Relaxed) {
                    "cancelling"
                } else {
                    "running"
                },
                bytes_done: job.done.load(Ordering::Relaxed),
                bytes_total: job.total.load(Ordering::Relaxed),
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
                    "there is no backup of snapshot {id}; call tech.noreya.Backup1.GetList for the existing ones"
                )))
            }
        }
        fs::remove_file(&path).map_err(|e| NexusError::io(&format!("cannot delete {}", path.display()), &e))?;
        let _ = fs::remove_file(self.layout().backup_meta(id));
        if let Ok(d) = fs::File::open(self.layout().backups_dir()) {
            let _ = d.sync_all();
        }
        tracing::info!(id, "backup deleted");
        Ok(())
    }

    /// The published backups, by id, with their SHA-256.
    pub fn list(&self) -> Vec<BackupInfo> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.layout().backups_dir()) else {
            return out;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Some(id) = e.file_name().to_str().and_then(Layout::parse_backup_name) else {
                continue;
            };
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
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
                url: format!("/nexus-backups/{}", Layout::backup_name(id)),
                size: meta.len(),
                created: known.created,
                sha256: known.sha256,
            });
        }
        out.sort_by_key(|b| b.id);
        out
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
        lower_thread_priority(self.config.nice, self.config.io_class);
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
                } else if job.cancel.load(Ordering::Relaxed) {
                    "cancelled".to_string()
                } else {
                    let reason = if e.raw_os_error() == Some(libc::ENOSPC) {
                        format!("no space left on /broot while writing {}; delete old backups or snapshots and start the backup again", Layout::backup_name(id))
                    } else {
                        format!("{e}; see the nexus-backupd journal")
                    };
                    tracing::error!(id, "backup failed: {reason}");
                    format!("failed: {reason}")
                }
            }
        };
        drop(password);
        self.finish(id, result);
    }

    fn finish(&self, id: u32, result: String) {
        if let Err(e) = self.store.state().update(|s| {
            s.running_backup = None;
            s.last_id = id;
            s.last_result = result.clone();
        }) {
            tracing::error!("cannot record the backup result: {e}");
        }
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        (self.events)(BackupEvent::Finished { id, result });
    }

    /// tar -> OpenPGP -> partial file -> fsync -> rename -> fsync dir.
    fn write_backup(&self, job: &Job, password: &str) -> io::Result<BackupMeta> {
        let id = job.id;
        let dir = self.layout().snapshot_dir(id);
        let scan = archive::scan(&dir, &["info.json", "system", "data"])?;
        for s in &scan.skipped {
            tracing::warn!("{} is a socket; tar cannot hold it, left out", s.display());
        }
        job.total.store(scan.content_bytes, Ordering::Relaxed);

        let partial = self.layout().partial_file(id);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        let (skesk, key) = openpgp::skesk_packet(password.as_bytes(), self.config.s2k_count)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let nice = self.config.nice;
        let io_class = self.config.io_class;
        let writer = std::thread::Builder::new()
            .name(format!("backup-{id}-write"))
            .spawn(move || {
                lower_thread_priority(nice, io_class);
                write_cipher(file, &skesk, &key, rx)
            })?;

        let read_result = self.read_plain(job, &scan, &dir, tx);
        let write_result = writer
            .join()
            .map_err(|_| io::Error::other("backup writer thread panicked"))?;
        // The writer's error (e.g. ENOSPC) is the cause when both failed.
        let (file, sha256, size) = match (read_result, write_result) {
            (_, Err(e)) => return Err(e),
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(Some(done))) => done,
            (Ok(()), Ok(None)) => return Err(io::Error::other("backup stream ended early")),
        };
        file.sync_all()?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        drop(file);
        if job.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        fs::rename(&partial, self.layout().backup_file(id))?;
        fs::File::open(self.layout().backups_dir())?.sync_all()?;
        Ok(BackupMeta {
            size,
            created: unix_now(),
            sha256: hex(&sha256),
        })
    }

    /// Scans, archives and frames the snapshot, sending plaintext chunks to the writer.
    fn read_plain(
        &self,
        job: &Job,
        scan: &archive::Scan,
        dir: &std::path::Path,
        tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    ) -> io::Result<()> {
        let chunk = self.config.chunk_bytes;
        let mut bucket = TokenBucket::new(self.config.read_bytes_per_sec);
        let name = format!("{}.tar", Layout::backup_name(job.id).trim_end_matches(".tar.gpg"));
        let (mut plain, first) = Plaintext::start(&name, unix_now() as u32)?;
        let mut tar_bytes: Vec<u8> = Vec::with_capacity(chunk + 1024);
        let mut out = first;
        let mut written_tar: u64 = 0;
        let interval = Duration::from_millis(self.config.progress_interval_ms);
        let mut last_progress = (Instant::now(), u32::MAX);
        let cancelled = |_: Cancelled| io::Error::other("cancelled");

        let flush = |tar_bytes: &mut Vec<u8>, out: &mut Vec<u8>, plain: &mut Plaintext| -> io::Result<()> {
            plain.push(tar_bytes, out);
            tar_bytes.clear();
            if !out.is_empty() {
                let buf = std::mem::replace(out, Vec::with_capacity(chunk + 64));
                tx.send(buf).map_err(|_| io::Error::other("backup writer stopped"))?;
            }
            Ok(())
        };

        for entry in &scan.entries {
            if job.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("cancelled"));
            }
            let before = tar_bytes.len();
            archive::header(entry, &mut tar_bytes)?;
            written_tar += (tar_bytes.len() - before) as u64;
            if entry.meta.file_type().is_file() && entry.link_to.is_none() {
                let mut file_left = entry.meta.len();
                archive::content(entry, chunk, |data| {
                    bucket.take(data.len() as u64, &job.cancel).map_err(cancelled)?;
                    tar_bytes.extend_from_slice(data);
                    written_tar += data.len() as u64;
                    let content = (data.len() as u64).min(file_left);
                    file_left -= content;
                    job.done.fetch_add(content, Ordering::Relaxed);
                    if tar_bytes.len() >= chunk {
                        flush(&mut tar_bytes, &mut out, &mut plain)?;
                        std::thread::yield_now();
                    }
                    let percent = job.percent();
                    if percent != last_progress.1 && last_progress.0.elapsed() >= interval {
                        last_progress = (Instant::now(), percent);
                        (self.events)(BackupEvent::Progress { id: job.id, percent });
                    }
                    Ok(())
                })
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        io::Error::new(e.kind(), format!("snapshot {} changed while backed up: {e}", job.id))
                    } else {
                        e
                    }
                })?;
            }
            if tar_bytes.len() >= chunk {
                flush(&mut tar_bytes, &mut out, &mut plain)?;
            }
        }
        let _ = dir;
        archive::trailer(written_tar, &mut tar_bytes);
        flush(&mut tar_bytes, &mut out, &mut plain)?;
        plain.finish(&mut out);
        tx.send(out).map_err(|_| io::Error::other("backup writer stopped"))?;
        // An empty chunk marks the end, so the writer can tell a finished stream from an abort.
        tx.send(Vec::new())
            .map_err(|_| io::Error::other("backup writer stopped"))?;
        Ok(())
    }
}

/// The writer thread: encrypts chunks and writes them; `None` when the stream was aborted.
fn write_cipher(
    file: fs::File,
    skesk: &[u8],
    key: &openpgp::Key,
    rx: Receiver<Vec<u8>>,
) -> io::Result<Option<(fs::File, [u8; 32], u64)>> {
    let mut cipher = CipherWriter::new(io::BufWriter::with_capacity(1 << 20, file), skesk, key)?;
    while let Ok(mut chunk) = rx.recv() {
        if chunk.is_empty() {
            let (w, sha, len) = cipher.finish()?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            return Ok(Some((file, sha, len)));
        }
        cipher.write_plain(&mut chunk)?;
    }
    let _ = cipher.finish().map(|(mut w, _, _)| w.flush());
    Ok(None)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
