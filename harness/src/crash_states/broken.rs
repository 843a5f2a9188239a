//! The broken daemons: `nexus-backupd` with one test-only fault each (its `[test_faults]`), one
//! per check, each with the operation that shows it and the check meant to catch it. A check
//! is trusted only once it has been seen to catch its broken daemon.

use super::ops::Op;

/// A daemon broken on purpose, by the fault of the same name in `nexus-backupd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokenDaemon {
    /// Publishes a backup before its data is synced (the in-place writer).
    PublishBeforeSync,
    /// Deletes the first backup at every start.
    DeleteEarlierBackup,
    /// Applies an Activate to `data` only, leaving `system` as it was.
    HalfActivate,
    /// Truncates the automation's state file at every start.
    TruncateAutomation,
    /// Takes ids from the complete snapshots alone, so a deleted snapshot's id comes again.
    ReuseId,
    /// Lists every backup it has a record of, and keeps the record when it deletes the file.
    ListPhantom,
}

impl BrokenDaemon {
    pub const ALL: [BrokenDaemon; 6] = [
        BrokenDaemon::PublishBeforeSync,
        BrokenDaemon::DeleteEarlierBackup,
        BrokenDaemon::HalfActivate,
        BrokenDaemon::TruncateAutomation,
        BrokenDaemon::ReuseId,
        BrokenDaemon::ListPhantom,
    ];

    /// The fault's name in the daemon's `[test_faults]`, and the broken daemon's name.
    pub fn name(self) -> &'static str {
        match self {
            BrokenDaemon::PublishBeforeSync => "publish-before-sync",
            BrokenDaemon::DeleteEarlierBackup => "delete-earlier-backup",
            BrokenDaemon::HalfActivate => "half-activate",
            BrokenDaemon::TruncateAutomation => "truncate-automation",
            BrokenDaemon::ReuseId => "reuse-id",
            BrokenDaemon::ListPhantom => "list-phantom",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            BrokenDaemon::PublishBeforeSync => "a backup gets its final name before its data is synced",
            BrokenDaemon::DeleteEarlierBackup => "the first backup is deleted at every start",
            BrokenDaemon::HalfActivate => "an Activate switches data only, and leaves system",
            BrokenDaemon::TruncateAutomation => "the automation's state file is truncated at every start",
            BrokenDaemon::ReuseId => "ids follow the complete snapshots alone: a deleted snapshot's id comes again",
            BrokenDaemon::ListPhantom => "a deleted backup's record stays, and GetList lists it without its file",
        }
    }

    /// The operation whose states show the fault.
    pub fn op(self) -> Op {
        match self {
            BrokenDaemon::PublishBeforeSync | BrokenDaemon::TruncateAutomation => Op::Backup,
            BrokenDaemon::DeleteEarlierBackup | BrokenDaemon::ListPhantom => Op::BackupDelete,
            BrokenDaemon::HalfActivate => Op::Activate,
            BrokenDaemon::ReuseId => Op::SnapshotDelete,
        }
    }

    /// The check meant to catch it (a [`super::check::Broken`]'s `check`).
    pub fn check(self) -> &'static str {
        match self {
            BrokenDaemon::PublishBeforeSync | BrokenDaemon::ListPhantom => "backups",
            BrokenDaemon::DeleteEarlierBackup => "earlier backups",
            BrokenDaemon::HalfActivate => "activate",
            BrokenDaemon::TruncateAutomation => "automation",
            BrokenDaemon::ReuseId => "ids",
        }
    }

    /// The root shell command that breaks the daemon on a device: the fault in the state folder
    /// on the card (so the daemon started on every crash state of it is broken too), then a
    /// restart. The daemon refuses it on a device without the throwaway marker.
    pub fn install_command(self) -> String {
        format!(
            "mkdir -p /broot/.nexus-backupd \
             && printf '[test_faults]\\nfaults = [\"%s\"]\\n' {} > /broot/.nexus-backupd/test-faults.toml \
             && sync && systemctl restart nexus-backupd",
            self.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broken_daemon_has_its_own_name_and_an_operation_that_shows_it() {
        let mut names: Vec<&str> = BrokenDaemon::ALL.iter().map(|b| b.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), BrokenDaemon::ALL.len());
        for b in BrokenDaemon::ALL {
            use clap::ValueEnum;
            assert_eq!(b.to_possible_value().unwrap().get_name(), b.name());
            assert!(b.install_command().contains(&format!("[\"%s\"]\\n' {}", b.name())));
        }
    }
}
