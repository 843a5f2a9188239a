//! After a scenario: the evidence of a failure (the daemon's journal and the device's state),
//! and on a real device the removal of what the scenario made (its snapshots and their
//! backups, the users and polkit files `setup.user` added).

use std::time::Duration;

use nexus_contract::names::{object_path, BACKUP1, SNAPSHOT1};
use nexus_contract::paths::{BACKUPS_DIR, BROOT, PKLA_DIR};

use crate::session::{listed_ids, Session};
use crate::steps::setup::{REMOVE_USER, SAVED_ACCOUNTS};
use crate::transport::dbus::DeviceBus;
use crate::transport::ssh::sh_quote;

/// What is pulled from a device whose scenario failed, besides the journal: the file system's
/// usage and the snapshots and backups as its own services list them.
fn device_state_command() -> String {
    let list = |service: &str| {
        format!(
            "echo '== {}.GetList'; busctl --system --json=short call {service} {} {service} GetList 2>&1",
            service.rsplit('.').next().unwrap_or(service),
            object_path(service)
        )
    };
    format!(
        "echo '== btrfs filesystem usage {BROOT}'; btrfs filesystem usage {BROOT} 2>&1; \
         {}; {}; echo '== ls -la {BACKUPS_DIR}'; ls -la {BACKUPS_DIR} 2>&1",
        list(SNAPSHOT1),
        list(BACKUP1)
    )
}

/// The daemon's journal and the device's state, each or why it could not be fetched.
pub async fn evidence(s: &Session<'_>) -> (String, String) {
    let fetch = |cmd: String, what: &'static str| async move {
        match s.ssh("root", &cmd, None, Duration::from_secs(20)).await {
            Ok(o) => o.stdout + &o.stderr,
            Err(e) => format!("({what} could not be fetched: {e})"),
        }
    };
    let journal = fetch("journalctl -u nexus-backupd --no-pager -n 200".into(), "the journal").await;
    let state = fetch(device_state_command(), "the device's state").await;
    (journal, state)
}

/// Removes what the scenario added to a real device: its snapshots and their backups (a
/// backup still running is cancelled first), and the users and polkit files `setup.user`
/// made. Returns what it did, for the report.
pub async fn tidy(s: &mut Session<'_>) -> Vec<String> {
    let mut done = Vec::new();
    let timeout = Duration::from_secs(30);
    if let Some(before) = s.made.snapshots_before.clone() {
        // A fresh connection: the scenario's own may have been cut by a fault.
        s.buses.clear();
        match s.bus("root", timeout).await {
            Ok(bus) => done.extend(remove_snapshots(bus, &before).await),
            Err(e) => done.push(format!(
                "cannot reach the device to remove the scenario's snapshots: {e}"
            )),
        }
    }
    // The scenario's own D-Bus bridges run as its users: close them first.
    s.buses.clear();
    for u in s.made.users.clone() {
        let script = format!("{REMOVE_USER}remove_user {}", sh_quote(&u));
        done.push(match s.ssh("root", &script, None, timeout).await {
            Ok(o) if o.code == Some(0) => format!("removed user {u}"),
            Ok(o) => format!(
                "user {u} made by the scenario could not be removed: {}",
                o.stderr.trim()
            ),
            Err(e) => format!("user {u} made by the scenario could not be removed: {e}"),
        });
    }
    if !s.made.users.is_empty() {
        // The account files' backups as they were before the scenario's adduser.
        let script = format!(
            "for b in $(ls {SAVED_ACCOUNTS} 2>/dev/null); do cp -p {SAVED_ACCOUNTS}/$b /etc/$b; done; rm -rf {}",
            SAVED_ACCOUNTS.trim_end_matches("/accounts")
        );
        done.push(match s.ssh("root", &script, None, timeout).await {
            Ok(o) if o.code == Some(0) => "put the account files' backups back".to_string(),
            Ok(o) => format!("the account files' backups could not be put back: {}", o.stderr.trim()),
            Err(e) => format!("the account files' backups could not be put back: {e}"),
        });
    }
    for (path, existed) in s.made.files.clone() {
        let q = sh_quote(&path);
        let cmd = if existed {
            format!("mv {} {q}", sh_quote(&format!("{path}.nexus-hil-saved")))
        } else {
            format!("rm -f {q}")
        };
        done.push(match s.ssh("root", &cmd, None, timeout).await {
            Ok(o) if o.code == Some(0) && existed => format!("put {path} back as it was"),
            Ok(o) if o.code == Some(0) => format!("removed {path}"),
            Ok(o) => format!("{path} could not be put back: {}", o.stderr.trim()),
            Err(e) => format!("{path} could not be put back: {e}"),
        });
    }
    done.extend(remove_keys(s, timeout).await);
    for f in s.made.replaced_pkla.clone() {
        let path = format!("{PKLA_DIR}/{f}");
        let cmd = format!("mv {path}.nexus-hil-saved {path}");
        done.push(match s.ssh("root", &cmd, None, timeout).await {
            Ok(o) if o.code == Some(0) => format!("put {path} back as it was"),
            Ok(o) => format!("{path} could not be put back: {}", o.stderr.trim()),
            Err(e) => format!("{path} could not be put back: {e}"),
        });
    }
    for f in s.made.pkla.clone() {
        let path = format!("{PKLA_DIR}/{f}");
        done.push(match s.ssh("root", &format!("rm -f {path}"), None, timeout).await {
            Ok(o) if o.code == Some(0) => format!("removed {path}"),
            Ok(o) => format!("{path} could not be removed: {}", o.stderr.trim()),
            Err(e) => format!("{path} could not be removed: {e}"),
        });
    }
    done
}

/// Takes the harness's key out of the `authorized_keys` of users that were there before, line
/// for line (and the newline, file or folder made for it).
async fn remove_keys(s: &Session<'_>, timeout: Duration) -> Vec<String> {
    let mut done = Vec::new();
    for k in &s.made.keys {
        let script = format!(
            "home=$(getent passwd {u} | cut -d: -f6); f=\"$home/.ssh/authorized_keys\"; key=$(cat)\n\
             grep -vxF \"$key\" \"$f\" > \"$f.nexus-hil\" || true\n{}\
             cat \"$f.nexus-hil\" > \"$f\" && rm -f \"$f.nexus-hil\"\n{}{}",
            if k.newline {
                // The file lacked its last newline before: take back the one added.
                "[ -s \"$f.nexus-hil\" ] && truncate -s -1 \"$f.nexus-hil\"\n"
            } else {
                ""
            },
            if k.file { "[ -s \"$f\" ] || rm -f \"$f\"\n" } else { "" },
            if k.dir {
                "rmdir \"$home/.ssh\" 2>/dev/null || true\n"
            } else {
                ""
            },
            u = sh_quote(&k.user)
        );
        done.push(
            match s.ssh("root", &script, Some(s.dev.pubkey.as_bytes()), timeout).await {
                Ok(o) if o.code == Some(0) => format!("removed the harness's key from {}'s authorized_keys", k.user),
                Ok(o) => format!(
                    "the harness's key for {} could not be removed: {}",
                    k.user,
                    o.stderr.trim()
                ),
                Err(e) => format!("the harness's key for {} could not be removed: {e}", k.user),
            },
        );
    }
    done
}

/// Deletes the snapshots (and backups) that are not among `before`.
async fn remove_snapshots(bus: &DeviceBus, before: &[u64]) -> Vec<String> {
    let mut done = Vec::new();
    let now = bus
        .call(SNAPSHOT1, "GetList", &[])
        .await
        .map(|r| listed_ids(&r))
        .unwrap_or_default();
    let running_id = |status: Vec<serde_json::Value>| status.first().and_then(|s| s.get("id")).and_then(|v| v.as_u64());
    let running = running_id(bus.call(BACKUP1, "Status", &[]).await.unwrap_or_default());
    for id in now.iter().filter(|id| !before.contains(id)) {
        let arg = [id.to_string()];
        if running == Some(*id) {
            let _ = bus.call(BACKUP1, "Cancel", &[]).await;
            for _ in 0..100 {
                if running_id(bus.call(BACKUP1, "Status", &[]).await.unwrap_or_default()) != Some(*id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let backup = bus.call(BACKUP1, "Delete", &arg).await;
        let snapshot = bus.call(SNAPSHOT1, "Delete", &arg).await;
        done.push(match (backup, snapshot) {
            (_, Err(e)) => format!("snapshot {id} made by the scenario could not be deleted: {e}"),
            (Ok(_), Ok(_)) => format!("deleted snapshot {id} and its backup"),
            (Err(_), Ok(_)) => format!("deleted snapshot {id}"),
        });
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_state_lists_usage_both_lists_and_the_backups_folder() {
        assert_eq!(
            device_state_command(),
            "echo '== btrfs filesystem usage /broot'; btrfs filesystem usage /broot 2>&1; \
             echo '== Snapshot1.GetList'; busctl --system --json=short call tech.noreya.Snapshot1 /tech/noreya/Snapshot1 tech.noreya.Snapshot1 GetList 2>&1; \
             echo '== Backup1.GetList'; busctl --system --json=short call tech.noreya.Backup1 /tech/noreya/Backup1 tech.noreya.Backup1 GetList 2>&1; \
             echo '== ls -la /broot/backups'; ls -la /broot/backups 2>&1"
        );
    }
}
