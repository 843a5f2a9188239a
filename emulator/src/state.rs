//! The daemon's persistent state on the SD card: the next snapshot id, the active and pending
//! system state, the backup in progress and the last backup's result. Written atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the daemon must remember across restarts and reboots.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct State {
    /// The id the next snapshot gets; ids are never reused.
    pub next_id: u32,
    /// The snapshot the system runs on (0: the original state).
    pub active: u32,
    /// A switch requested by `Activate`, applied at the next daemon start.
    pub pending: Option<u32>,
    /// The snapshot whose backup was running; still set at start means the run was interrupted.
    pub running_backup: Option<u32>,
    /// Snapshot id of the last finished backup (0: none yet).
    pub last_id: u32,
    /// `ok`, `cancelled` or `failed: <reason>` of the last backup ("" when none ran yet).
    pub last_result: String,
}

/// The file that holds [`State`], written by replace-and-rename.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is a fresh device.
    pub fn load(&self) -> std::io::Result<State> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged ({e}); restore it or remove it to start afresh",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                next_id: 1,
                ..State::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes the state durably: temp file, fsync, rename, fsync of the directory.
    pub fn store(&self, state: &State) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &bytes, 0o600)
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_state_starts_ids_at_one_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        let mut s = file.load().unwrap();
        assert_eq!(s.next_id, 1);
        s.next_id = 7;
        s.pending = Some(3);
        file.store(&s).unwrap();
        assert_eq!(file.load().unwrap(), s);
    }

    #[test]
    fn damaged_state_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        fs::write(file.path(), b"{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("damaged"), "{err}");
    }
}

/// The state in memory, guarded, and written through to its file on every change.
#[derive(Debug)]
pub struct SharedState {
    file: StateFile,
    state: std::sync::Mutex<State>,
}

impl SharedState {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = StateFile::new(dir);
        let state = file.load()?;
        Ok(Self {
            file,
            state: std::sync::Mutex::new(state),
        })
    }

    /// A copy of the current state.
    pub fn get(&self) -> State {
        self.lock().clone()
    }

    /// Changes the state and stores it; on a failed write the change is undone in memory too.
    pub fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> std::io::Result<R> {
        let mut guard = self.lock();
        let mut next = guard.clone();
        let r = change(&mut next);
        if next != *guard {
            self.file.store(&next)?;
            *guard = next;
        }
        Ok(r)
    }

    /// Changes the state in memory only: for when it cannot be stored (the card fails), so
    /// that what `Status` says stays true while the daemon runs; the file keeps the last state
    /// stored, which a restart then reads.
    pub fn update_unstored(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written State: updates replace it whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
