//! After a scenario: the evidence of a failure (the daemon's journal and the device's state),
//! and on a real device the undoing of what the scenario changed, from the record kept on the
//! device (`crate::bench::record`).

use std::time::Duration;

use nexus_contract::names::{object_path, BACKUP1, SNAPSHOT1};
use nexus_contract::paths::{BACKUPS_DIR, BROOT};

use super::Error;
use crate::bench::record;
use crate::report::DeviceInfo;
use crate::session::Session;
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

/// The daemon's journal and the device's state, each or why it could not be fetched. A device
/// that does not answer SSH for the journal is not asked again for its state (that would wait
/// as long again, on a run that has already failed).
pub async fn evidence(s: &Session<'_>) -> (String, String) {
    let fetch = |cmd: String| async move { s.ssh("root", &cmd, None, Duration::from_secs(20)).await };
    // The daemon's and its web page's (a browser step's failure is often the page's answer).
    let journal = fetch("journalctl -u nexus-backupd -u nexus-controlui --no-pager -n 200".into()).await;
    // 255 is ssh's own failure: the device did not answer (journalctl never exits with it).
    let unanswered = match &journal {
        Ok(o) if o.code == Some(255) => Some(o.stderr.trim().to_string()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = unanswered {
        return (
            format!("(the journal could not be fetched: the device did not answer over SSH: {why})"),
            "(the device's state was not asked for: the device had just not answered over SSH)".into(),
        );
    }
    let journal = journal.map(|o| o.stdout + &o.stderr).unwrap_or_default();
    let state = match fetch(device_state_command()).await {
        Ok(o) => o.stdout + &o.stderr,
        Err(e) => format!("(the device's state could not be fetched: {e})"),
    };
    (journal, state)
}

/// What a device says it is: the device tree's model (a Raspberry Pi's board, a guest's
/// machine; absent in a container), the OS release's name and build, the daemon's version
/// when it is ours, the kernel, and the installed packages where `dpkg-query` lists them (for
/// what changed since the last passing run). One short command; nothing when the device does
/// not answer.
const IDENTIFY: &str = "printf 'model=%s\\n' \"$(tr -d '\\000' </proc/device-tree/model 2>/dev/null)\"; \
    if [ -r /etc/os-release ]; then . /etc/os-release; fi; \
    d=$(nexus-backupd --version 2>/dev/null | head -n 1); \
    printf 'software=%s\\n' \"${PRETTY_NAME:-}${BUILD_ID:+ build $BUILD_ID}${d:+; $d}\"; \
    printf 'daemon=%s\\nkernel=%s\\n' \"$d\" \"$(uname -r)\"; \
    if command -v dpkg-query >/dev/null 2>&1; then echo 'packages:'; dpkg-query -W -f '${Package} ${Version}\\n' 2>/dev/null; fi";

/// The device's model and software, as far as it tells them.
pub async fn identify(s: &Session<'_>) -> Option<DeviceInfo> {
    let out = s.ssh("root", IDENTIFY, None, Duration::from_secs(15)).await.ok()?;
    parse_identity(&out.stdout)
}

fn parse_identity(stdout: &str) -> Option<DeviceInfo> {
    let (fields, packages) = match stdout.split_once("\npackages:\n") {
        Some((f, p)) => (f, Some(p)),
        None => (stdout, None),
    };
    let field = |key: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_start_matches("; ").to_string())
            .filter(|v| !v.is_empty())
    };
    let info = DeviceInfo {
        model: field("model="),
        software: field("software="),
        kernel: field("kernel="),
        daemon: field("daemon="),
        packages: packages.map(str::to_string),
    };
    (info != DeviceInfo::default()).then_some(info)
}

/// Checks, before the scenario changes anything, that its changes can be recorded on the
/// device (the record's folder can be made and written as root): a scenario that could not
/// record what it makes does not touch the device. Nothing is listed or kept of what the
/// device holds: the run owns only what it records making.
pub async fn can_record(s: &Session<'_>) -> Result<(), Error> {
    let dir = sh_quote(record::DIR);
    let cmd = format!("mkdir -p -m 700 {dir} && t=$(mktemp -p {dir} .probe.XXXXXX) && rm -f \"$t\"");
    let out = s
        .ssh("root", &cmd, None, Duration::from_secs(30))
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    if out.code != Some(0) {
        return Err(Error::CannotRecord {
            dir: record::DIR,
            why: out.stderr.trim().to_string(),
        });
    }
    Ok(())
}

/// What an undo did, and whether anything of the record stays.
#[derive(Debug, Default)]
pub struct Undone {
    /// A line per change taken back, then the entries kept (named).
    pub lines: Vec<String>,
    /// Why the record is not empty now: an entry could not be undone, or the device could not
    /// be reached. Either fails the run.
    pub error: Option<String>,
    /// The device could not be reached (an infrastructure error) rather than refusing an entry.
    pub unreachable: bool,
}

/// Undoes what the scenario changed on a real device, newest change first, from the record on
/// the device: the snapshots and backups it made (a backup it started and that still runs is
/// cancelled first), users, keys, files.
pub async fn undo(s: &mut Session<'_>) -> Undone {
    // The scenario's own D-Bus bridges run as its users: close them first.
    s.buses.clear();
    undo_on(&s.dev).await
}

/// Undoes every change recorded on `dev` (as its admin, with sudo), stopping at the first
/// entry that cannot be undone. Where this process holds the device's lease, the record is
/// undone only while the lock file still holds this run's token: a run that lost its lease
/// never undoes a record that may be the next holder's.
pub async fn undo_on(dev: &crate::device::Device) -> Undone {
    let guard = match crate::bench::lock::token_for(dev) {
        Some(token) => format!(
            "t=$(sed -n 's/^token=//p' {lock} 2>/dev/null); if [ \"$t\" != {token} ]; then \
             echo \"this run no longer holds the device's lease (the lock names ${{t:-nobody}}): it undoes nothing\" >&2; exit 4; fi\n",
            lock = crate::bench::lock::LOCK_FILE,
            token = sh_quote(&token)
        ),
        None => String::new(),
    };
    let script = format!("{guard}{}", record::undo_script(None));
    let cmd = format!("sudo -n sh -c {}", sh_quote(&script));
    match dev.ssh.run(&dev.admin, &cmd, None, Duration::from_secs(120)).await {
        Ok(o) => {
            let lines: Vec<String> = o.stdout.lines().map(str::to_string).collect();
            let error = (o.code != Some(0)).then(|| {
                format!(
                    "the undo stopped (exit {:?}{}): what it could not undo and every older change stay recorded in {} \
                     on the device (`ssh {}@{} sudo ls {}` lists them); `nexus-hil provision --undo` tries again",
                    o.code,
                    if o.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", o.stderr.trim())
                    },
                    record::DIR,
                    dev.admin,
                    dev.ssh.host,
                    record::DIR
                )
            });
            Undone {
                lines,
                error,
                unreachable: false,
            }
        }
        Err(e) => Undone {
            lines: Vec::new(),
            error: Some(format!(
                "cannot reach the device to undo the scenario's changes ({e}); they stay recorded in {} on the \
                 device and are undone at the next run's start or by `nexus-hil provision --undo`",
                record::DIR
            )),
            unreachable: true,
        },
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
        // The kernel, the daemon and the package list, for what changed since a passing run.
        let d = parse_identity(
            "model=\nsoftware=Debian; nexus-backupd 0.1.0\ndaemon=nexus-backupd 0.1.0\nkernel=6.1.0-28-arm64\n\
             packages:\nbash 5.2.15-2\nsoftware=not a field\n",
        )
        .unwrap();
        assert_eq!(d.kernel.as_deref(), Some("6.1.0-28-arm64"));
        assert_eq!(d.daemon.as_deref(), Some("nexus-backupd 0.1.0"));
        assert_eq!(d.packages.as_deref(), Some("bash 5.2.15-2\nsoftware=not a field\n"));
        assert_eq!(d.software.as_deref(), Some("Debian; nexus-backupd 0.1.0"));
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
