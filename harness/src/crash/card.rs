//! A card whose writes are logged, for a device the host's kernel mounts (the container
//! emulator): `qemu-storage-daemon` serves the card through QEMU's `blklogwrites` driver as a
//! file (a FUSE export), so every write and FLUSH that reaches the card is logged in the same
//! dm-log-writes format as a guest's. What the host's page cache holds and never wrote out is
//! not in the log, as it is not on a card that loses power.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::log::{sparse_copy, WriteLog};
use crate::error::InfraError;

/// A card served through `blklogwrites`; the export is removed when dropped.
pub struct LoggedCard {
    /// The file to attach in place of the card (a FUSE export).
    pub exported: PathBuf,
    /// The write log.
    pub log: PathBuf,
    /// The card as it was when the log began: the log's starting point.
    pub base: PathBuf,
    child: Option<Child>,
}

impl LoggedCard {
    /// Serves `card` (which it then owns) through the logging driver; its writes go into
    /// `dir/sdcard.log`, and `dir/sdcard.base` keeps the card as it is now.
    pub fn start(card: &Path, dir: &Path) -> Result<Self, InfraError> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| InfraError::io(p, e)
        };
        let (log, base, exported) = (
            dir.join("sdcard.log"),
            dir.join("sdcard.base"),
            dir.join("sdcard.exported"),
        );
        sparse_copy(card, &base).map_err(io(&base))?;
        std::fs::File::create(&log).map_err(io(&log))?;
        std::fs::File::create(&exported).map_err(io(&exported))?;
        let size = std::fs::metadata(card).map_err(io(card))?.len();
        let logged = serde_json::json!({
            "driver": "blklogwrites",
            "node-name": "sdcard",
            "file": "card",
            "log": "log",
            // Every entry updates the count in the log's superblock, so a log read while the
            // card is in use (or after the daemon is killed) is whole.
            "log-super-update-interval": 1,
        });
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!("driver=file,node-name=card,filename={}", card.display()))
            .arg("--blockdev")
            .arg(format!("driver=file,node-name=log,filename={}", log.display()))
            .arg("--blockdev")
            .arg(logged.to_string())
            .arg("--export")
            .arg(format!(
                "type=fuse,id=sdcard,node-name=sdcard,mountpoint={},writable=on",
                exported.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                InfraError::Emulator(format!(
                    "cannot start qemu-storage-daemon: {e}; install qemu-system-common (ci/setup-host does)"
                ))
            })?;
        let mut card = Self {
            exported,
            log,
            base,
            child: Some(child),
        };
        // Ready when the export shows the card's size in place of the empty file.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::fs::metadata(&card.exported).map(|m| m.len()).unwrap_or(0) == size {
                return Ok(card);
            }
            if let Some(child) = card.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    card.child = None;
                    return Err(InfraError::Emulator(format!(
                        "qemu-storage-daemon exited ({status}) before serving the card: {}; the FUSE export needs /dev/fuse",
                        err.trim()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(InfraError::Emulator(
                    "qemu-storage-daemon did not serve the card within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The number of entries logged so far.
    pub fn entries(&self) -> Result<usize, InfraError> {
        WriteLog::open(&self.log)
            .map(|l| l.entries.len())
            .map_err(|e| InfraError::Emulator(e.to_string()))
    }

    /// Stops serving the card (SIGTERM: the daemon removes its export and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a plain signal to our own child, by its pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.exported);
    }
}

impl Drop for LoggedCard {
    fn drop(&mut self) {
        self.stop();
    }
}
