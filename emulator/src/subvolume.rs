//! Making and removing subvolume snapshots: btrfs (through btrfs-progs) on the device, plain
//! directory copies for fast unit tests on any file system.

use std::io;
use std::path::Path;
use std::process::Command;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

/// How snapshots of subvolumes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subvolumes {
    /// Real btrfs snapshots (O(1), copy-on-write), as on the device.
    Btrfs,
    /// Recursive copies; only for tests on file systems without btrfs.
    PlainCopy,
}

impl Subvolumes {
    /// True when `path` lies on a btrfs file system.
    pub fn is_btrfs(path: &Path) -> io::Result<bool> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string and st a properly sized out-parameter.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_type as i64 == BTRFS_SUPER_MAGIC)
    }

    /// A snapshot of `src` at `dst`; read-only unless `writable`.
    pub fn snapshot(self, src: &Path, dst: &Path, writable: bool) -> io::Result<()> {
        match self {
            Subvolumes::Btrfs => {
                let mut cmd = Command::new("btrfs");
                cmd.args(["subvolume", "snapshot"]);
                if !writable {
                    cmd.arg("-r");
                }
                run(cmd.arg(src).arg(dst))
            }
            Subvolumes::PlainCopy => run(Command::new("cp").arg("-a").arg("--reflink=auto").arg(src).arg(dst)),
        }
    }

    /// Removes a subvolume (or the copy standing for one).
    pub fn delete(self, path: &Path) -> io::Result<()> {
        match self {
            Subvolumes::Btrfs => run(Command::new("btrfs")
                .args(["subvolume", "delete", "--commit-after"])
                .arg(path)),
            Subvolumes::PlainCopy => std::fs::remove_dir_all(path),
        }
    }

    /// Makes an empty subvolume (used when a layout is created).
    pub fn create(self, path: &Path) -> io::Result<()> {
        match self {
            Subvolumes::Btrfs => run(Command::new("btrfs").args(["subvolume", "create"]).arg(path)),
            Subvolumes::PlainCopy => std::fs::create_dir(path),
        }
    }
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(std::process::Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {:?}: {e}; is btrfs-progs installed?", cmd.get_program()),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("No space left") {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    // The card's errors keep their number, so the daemon's answer names them; the journal
    // keeps the command's own words.
    for (text, errno) in [
        ("Input/output error", libc::EIO),
        ("Read-only file system", libc::EROFS),
    ] {
        if stderr.contains(text) {
            tracing::error!("{:?} failed ({}): {stderr}", cmd.get_program(), out.status);
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    Err(io::Error::other(format!(
        "{} {} failed ({}): {stderr}",
        cmd.get_program().to_string_lossy(),
        args.join(" "),
        out.status
    )))
}
