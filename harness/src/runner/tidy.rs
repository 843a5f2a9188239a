//! After a scenario: the evidence of a failure (the daemon's journal and the device's state),
//! and on a real device the undoing of what the scenario changed, from the record kept on the
//! device (`crate::device::record`).

use std::time::Duration;

use nexus_contract::names::{object_path, BACKUP1, SNAPSHOT1};
use nexus_contract::paths::{BACKUPS_DIR, BROOT};

use crate::device::record;
use crate::report::DeviceInfo;
use crate::session::{listed_ids, Session};
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

/// What a device says it is: the device tree's model (a Raspberry Pi's board, a guest's
/// machine; absent in a container), the OS release's name and build, and the daemon's version
/// when it is ours. One short command; nothing when the device does not answer.
const IDENTIFY: &str = "printf 'model=%s\\n' \"$(tr -d '\\000' </proc/device-tree/model 2>/dev/null)\"; \
    if [ -r /etc/os-release ]; then . /etc/os-release; fi; \
    d=$(nexus-backupd --version 2>/dev/null | head -n 1); \
    printf 'software=%s\\n' \"${PRETTY_NAME:-}${BUILD_ID:+ build $BUILD_ID}${d:+; $d}\"";

/// The device's model and software, as far as it tells them.
pub async fn identify(s: &Session<'_>) -> Option<DeviceInfo> {
    let out = s.ssh("root", IDENTIFY, None, Duration::from_secs(15)).await.ok()?;
    parse_identity(&out.stdout)
}

fn parse_identity(stdout: &str) -> Option<DeviceInfo> {
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_start_matches("; ").to_string())
            .filter(|v| !v.is_empty())
    };
    let info = DeviceInfo {
        model: field("model="),
        software: field("software="),
    };
    (info != DeviceInfo::default()).then_some(info)
}

/// Records the device's snapshots on it, before the scenario changes anything, so that the
/// ones it makes are deleted when the record is undone (at its end, or at the next run's start
/// after a crash).
pub async fn record_snapshots(s: &mut Session<'_>) -> Result<(), String> {
    let timeout = Duration::from_secs(30);
    let bus = s
        .bus("root", timeout)
        .await
        .map_err(|e| format!("cannot list the device's snapshots before the scenario: {e}"))?;
    let reply = bus
        .call(SNAPSHOT1, "GetList", &[])
        .await
        .map_err(|e| format!("cannot list the device's snapshots before the scenario: {e}"))?;
    let out = s
        .ssh("root", &record::snapshots_command(&listed_ids(&reply)), None, timeout)
        .await?;
    if out.code != Some(0) {
        return Err(format!(
            "cannot record the device's snapshots in {} before the scenario, so it did not run: {}",
            record::DIR,
            out.stderr.trim()
        ));
    }
    Ok(())
}

/// Undoes what the scenario changed on a real device, newest change first, from the record on
/// the device: its snapshots and their backups (a backup still running is cancelled first),
/// users, keys, files. Returns what it did, for the report.
pub async fn undo(s: &mut Session<'_>) -> Vec<String> {
    // The scenario's own D-Bus bridges run as its users: close them first.
    s.buses.clear();
    undo_on(&s.dev).await
}

/// Undoes every change recorded on `dev` (as its admin, with sudo): the lines it said, and one
/// naming what could not be undone or why it could not run.
pub async fn undo_on(dev: &crate::device::Device) -> Vec<String> {
    let cmd = format!("sudo -n sh -c {}", sh_quote(&record::undo_script(None)));
    match dev.ssh.run(&dev.admin, &cmd, None, Duration::from_secs(120)).await {
        Ok(o) => {
            let mut done: Vec<String> = o.stdout.lines().map(str::to_string).collect();
            if o.code != Some(0) {
                done.push(format!(
                    "some changes could not be undone (exit {:?}{}); they stay recorded in {} on the device \
                     and are tried again at the next run's start or by `nexus-hil provision --undo`",
                    o.code,
                    if o.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", o.stderr.trim())
                    },
                    record::DIR
                ));
            }
            done
        }
        Err(e) => vec![format!(
            "cannot reach the device to undo the scenario's changes ({e}); they stay recorded in {} on the \
             device and are undone at the next run's start or by `nexus-hil provision --undo`",
            record::DIR
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_known_by_what_it_tells() {
        let pi = parse_identity(
            "model=Raspberry Pi 4 Model B Rev 1.4\nsoftware=NOREYA NEXUS OS 3.2 build 2041; nexus-backupd 0.1.0\n",
        )
        .unwrap();
        assert_eq!(pi.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(
            pi.software.as_deref(),
            Some("NOREYA NEXUS OS 3.2 build 2041; nexus-backupd 0.1.0")
        );
        // A container has no device tree; an OS without a name leaves only the daemon.
        let c = parse_identity("model=\nsoftware=; nexus-backupd 0.1.0\n").unwrap();
        assert_eq!((c.model, c.software.as_deref()), (None, Some("nexus-backupd 0.1.0")));
        assert_eq!(parse_identity("model=\nsoftware=\n"), None);
        assert_eq!(parse_identity(""), None);
    }

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
