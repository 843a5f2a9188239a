//! Where things are on the SD card's btrfs file system (spec: "Storage layout").

use std::path::{Path, PathBuf};

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
        self.broot.join("snapshot/snapshots")
    }

    pub fn snapshot_dir(&self, id: u32) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.broot.join("backups")
    }

    /// The published name of a backup: `nexus_backup_N.tar.gpg`.
    pub fn backup_name(id: u32) -> String {
        format!("nexus_backup_{id}.tar.gpg")
    }

    /// The snapshot id of a published backup name, if the name is exactly one.
    pub fn parse_backup_name(name: &str) -> Option<u32> {
        let digits = name.strip_prefix("nexus_backup_")?.strip_suffix(".tar.gpg")?;
        if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().filter(|&id| id > 0)
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
        name.starts_with(".nexus_backup_") && name.ends_with(".partial")
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
}
