//! Where things are on the SD card's btrfs file system (spec: "Storage layout"): the contract's
//! paths, rebased onto the configured `/broot` so tests can run the daemon on a plain directory.

use std::path::{Path, PathBuf};

use nexus_contract::paths;

/// A directory of the contract relative to `/broot`.
fn below_broot(dir: &'static str) -> &'static Path {
    Path::new(dir)
        .strip_prefix(paths::BROOT)
        .expect("the contract's directories are below /broot")
}

/// The live subvolumes a snapshot can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    System,
    Data,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::System, Part::Data];

    pub fn name(self) -> &'static str {
        match self {
            Part::System => "system",
            Part::Data => "data",
        }
    }
}

/// Paths of the storage layout below `/broot`.
#[derive(Debug, Clone)]
pub struct Layout {
    broot: PathBuf,
    state_dir: PathBuf,
}

impl Layout {
    pub fn new(broot: &Path, state_dir: &Path) -> Self {
        Self {
            broot: broot.to_owned(),
            state_dir: state_dir.to_owned(),
        }
    }

    pub fn broot(&self) -> &Path {
        &self.broot
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The live subvolume of a part, e.g. `/broot/system`.
    pub fn live(&self, part: Part) -> PathBuf {
        self.broot.join(part.name())
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.broot.join(below_broot(paths::SNAPSHOTS_DIR))
    }

    pub fn snapshot_dir(&self, id: u32) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.broot.join(below_broot(paths::BACKUPS_DIR))
    }

    /// The published name of a backup: `nexus_backup_N.tar.gpg`.
    pub fn backup_name(id: u32) -> String {
        paths::backup_file_name(id.into())
    }

    /// The name of the TAR a backup encrypts (`nexus_backup_N.tar`): the backup's name without
    /// its `.gpg`, as `gpg --decrypt --use-embedded-filename` restores it.
    pub fn archive_name(id: u32) -> String {
        let name = Self::backup_name(id);
        name.rsplit_once('.').map(|(tar, _gpg)| tar.to_owned()).unwrap_or(name)
    }

    /// The snapshot id of a published backup name, if the name is exactly one. Snapshot ids are
    /// `u` on D-Bus, so a name beyond them names no snapshot.
    pub fn parse_backup_name(name: &str) -> Option<u32> {
        paths::parse_backup_file_name(name).and_then(|id| u32::try_from(id).ok())
    }

    pub fn backup_file(&self, id: u32) -> PathBuf {
        self.backups_dir().join(Self::backup_name(id))
    }

    /// The hidden file a backup is written to before it is complete.
    pub fn partial_file(&self, id: u32) -> PathBuf {
        self.backups_dir().join(format!(".{}.partial", Self::backup_name(id)))
    }

    /// Is `name` (in the backups directory) a partial file left by an unfinished backup?
    pub fn is_partial_name(name: &str) -> bool {
        name.strip_prefix('.')
            .is_some_and(|n| n.starts_with(paths::BACKUP_FILE_PREFIX))
            && name.ends_with(".partial")
    }

    /// Metadata the daemon keeps about a published backup (its sha256, when it was made).
    pub fn backup_meta(&self, id: u32) -> PathBuf {
        self.state_dir.join("backups").join(format!("{id}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_parse_only_when_exact() {
        assert_eq!(Layout::parse_backup_name("nexus_backup_12.tar.gpg"), Some(12));
        for bad in [
            "nexus_backup_.tar.gpg",
            "nexus_backup_012.tar.gpg",
            "nexus_backup_0.tar.gpg",
            "nexus_backup_1.tar.gpg.partial",
            "nexus_backup_1x.tar.gpg",
            "nexus_backup_99999999999.tar.gpg",
            "../nexus_backup_1.tar.gpg",
        ] {
            assert_eq!(Layout::parse_backup_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_device_layout_is_the_contracts() {
        let l = Layout::new(Path::new(paths::BROOT), Path::new("/state"));
        assert_eq!(l.snapshot_dir(3), Path::new(&paths::snapshot_dir(3)));
        assert_eq!(
            l.backup_file(3),
            Path::new(paths::BACKUPS_DIR).join("nexus_backup_3.tar.gpg")
        );
        assert_eq!(Layout::archive_name(3), "nexus_backup_3.tar");
        assert_eq!(
            l.partial_file(3),
            Path::new(paths::BACKUPS_DIR).join(".nexus_backup_3.tar.gpg.partial")
        );
        assert!(Layout::is_partial_name(".nexus_backup_3.tar.gpg.partial"));
        assert!(!Layout::is_partial_name("nexus_backup_3.tar.gpg"));
    }
}
