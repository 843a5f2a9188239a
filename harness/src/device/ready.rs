//! When a device the harness started is ready: both of the backup daemon's D-Bus names are
//! owned. Each kind of device asks in its own way (an exec in the container, SSH to a guest).

use std::future::Future;
use std::time::{Duration, Instant};

use nexus_contract::names::{BACKUP1, SNAPSHOT1};

/// The command that lists the names owned on the system bus.
pub const LIST_NAMES: &str = "busctl --system list --no-legend --acquired";

/// True when a [`LIST_NAMES`] listing shows both of the daemon's names.
pub fn both_names_owned(listing: &str) -> bool {
    listing.contains(SNAPSHOT1) && listing.contains(BACKUP1)
}

/// Runs `list` (which returns a [`LIST_NAMES`] listing) every `poll` until both names are owned
/// (true) or `deadline` passes (false).
pub async fn wait_for_names<F: Future<Output = String>>(
    deadline: Instant,
    poll: Duration,
    mut list: impl FnMut() -> F,
) -> bool {
    loop {
        if both_names_owned(&list().await) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_names_are_needed() {
        let one = "tech.noreya.Snapshot1 1234 nexus-backupd root :1.5 nexus-backupd.service - -";
        assert!(!both_names_owned(one));
        let both = format!("{one}\ntech.noreya.Backup1 1234 nexus-backupd root :1.5 nexus-backupd.service - -");
        assert!(both_names_owned(&both));
    }
}
