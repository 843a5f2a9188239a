//! The checks of one state of the card, on this machine, without booting a guest for it:
//! `btrfs check --readonly`; a writable mount (the tree log replays) and the automation's
//! state file; `nexus-backupd`'s recovery in a container emulator started on the state; then,
//! on the recovered card, what the daemon lists against what the card holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nexus_contract::paths;

use super::ops::{self, Facts, Op, MARKER};
use super::pick::State;
use crate::device::container::{Emulator, EmulatorSpec};
use crate::device::open::emulator_device;
use crate::image::sdcard::{Loop, Mounted};
use crate::steps::tree::{self, Tree};
use crate::transport::dbus::DeviceBus;

/// A check that failed: which, and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Broken {
    pub check: &'static str,
    pub what: String,
}

fn broken(check: &'static str, what: impl Into<String>) -> Broken {
    Broken {
        check,
        what: what.into(),
    }
}

/// A folder below `/broot`, as it is on the card's file system.
fn on_card(device_path: &str) -> &str {
    device_path
        .strip_prefix(paths::BROOT)
        .unwrap_or(device_path)
        .trim_start_matches('/')
}

/// The automation's state file, below the card's top.
const AUTOMATION_LOG: &str = "data/automation/state.log";

/// What checks every state of one operation, carrying what earlier states showed.
pub struct Checker<'a> {
    pub op: Op,
    pub facts: &'a Facts,
    pub image: &'a str,
    pub key: &'a Path,
    pub pubkey: &'a str,
    pub work: &'a Path,
    pub password: &'a str,
    /// The last tick the automation's file held at the last flush point checked, apart for
    /// the live data before an Activate's switch (the marker there) and after it (the
    /// snapshot's data, whose file is older).
    last_tick: [Option<u64>; 2],
    /// Decrypted backups by the file's SHA-256: their trees.
    decrypted: HashMap<String, Tree>,
}

impl<'a> Checker<'a> {
    pub fn new(
        op: Op,
        facts: &'a Facts,
        image: &'a str,
        key: &'a Path,
        pubkey: &'a str,
        work: &'a Path,
        password: &'a str,
    ) -> Self {
        Self {
            op,
            facts,
            image,
            key,
            pubkey,
            work,
            password,
            last_tick: [None; 2],
            decrypted: HashMap::new(),
        }
    }

    /// Checks the state held by `card` (a copy this check may change).
    pub async fn check(&mut self, card: &Path, state: State) -> Vec<Broken> {
        let mut found = Vec::new();
        if let Some(b) = btrfs_check(card) {
            found.push(b);
        }
        let mnt = self.work.join("mnt");
        // Mounted writable, as the device mounts it at boot: the tree log is replayed.
        let read = with_mounted(card, &mnt, |root| {
            let marked = root.join("data").join(MARKER).exists();
            (automation_tick(&root.join(AUTOMATION_LOG)), usize::from(marked))
        });
        let (tick, slot) = match read {
            Err(e) => {
                found.push(broken("mount", format!("a writable mount fails: {e}")));
                return found;
            }
            Ok((Err(e), slot)) => {
                found.push(broken("automation", e));
                (None, slot)
            }
            Ok((Ok(t), slot)) => (t, slot),
        };
        if let (Some(before), Some(now)) = (self.last_tick[slot], tick) {
            if now < before {
                found.push(broken(
                    "automation",
                    format!(
                        "the automation's state file ends at tick {now}, but an earlier flush point held it up to tick {before}: fsynced records were lost"
                    ),
                ));
            }
        }
        let recovered = match self.recover(card, state).await {
            Ok(r) => r,
            Err(b) => {
                found.push(b);
                return found;
            }
        };
        found.extend(recovered.broken.iter().cloned());
        match with_mounted(card, &mnt, |root| self.card_checks(root, &recovered)) {
            Ok(b) => found.extend(b),
            Err(e) => found.push(broken("mount", format!("the recovered card does not mount: {e}"))),
        }
        if state.flush_point && tick.is_some() {
            self.last_tick[slot] = tick;
        }
        found
    }

    /// Starts the daemon on the state (a container emulator on the card) and asks it what it
    /// recovered; the container is removed after.
    async fn recover(&self, card: &Path, state: State) -> Result<Recovered, Broken> {
        let emu = Emulator::start(EmulatorSpec {
            image: self.image,
            sdcard_template: card,
            admin_pubkey: &self.key.with_extension("pub"),
            work_dir: self.work,
            in_place: true,
        })
        .await
        .map_err(|e| broken("recovery", format!("nexus-backupd does not start on this state: {e}")))?;
        let dev = emulator_device(&emu, self.key, self.pubkey, self.work);
        let r = self.ask(&dev, state).await;
        let _ = emu.remove().await;
        r.map_err(|e| broken("recovery", e))
    }

    async fn ask(&self, dev: &crate::device::Device, state: State) -> Result<Recovered, String> {
        let bus = DeviceBus::connect(&dev.ssh, &dev.admin, "root", Duration::from_secs(60)).await?;
        let mut r = Recovered::default();
        let status = ops::status(&bus).await?;
        let running = status.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
        if running != 0 {
            r.broken.push(broken(
                "recovery",
                format!("after the start Status reports the backup of snapshot {running} as running"),
            ));
        }
        r.listed = ops::finished_backups(&bus).await?;
        let last_ok = status.get("last_result").and_then(|v| v.as_str()) == Some("ok");
        let last_id = status.get("last_id").and_then(|v| v.as_u64()).unwrap_or(0);
        let deleted = self.facts.deleted_backup == Some(last_id);
        if last_ok && last_id != 0 && !deleted && !r.listed.contains_key(&last_id) {
            r.broken.push(broken(
                "recovery",
                format!("Status says the backup of snapshot {last_id} finished ok, but GetList does not list it"),
            ));
        }
        let (ids, active) = ops::snapshots(&bus).await?;
        r.active = active;
        // Ids are never reused: a new snapshot's id is above every id the card shows and every
        // id handed out before this point. (Not above what an earlier state's recovery gave:
        // a recovery may take ids itself, for the automatic snapshot before a switch.)
        r.new_id = ops::create(&bus, "crash-states: the next id").await?;
        let on_card = ids.iter().chain(r.listed.keys()).copied().max().unwrap_or(0);
        if r.new_id <= on_card {
            r.broken.push(broken(
                "ids",
                format!(
                    "the next snapshot gets id {}, but the card holds id {on_card}",
                    r.new_id
                ),
            ));
        }
        for (id, at) in &self.facts.handed {
            if state.entries >= *at && r.new_id <= *id {
                r.broken.push(broken(
                    "ids",
                    format!(
                        "snapshot id {id} was handed out before this point (log entry {at}), and the next snapshot gets id {}",
                        r.new_id
                    ),
                ));
            }
        }
        Ok(r)
    }

    /// On the recovered card: nothing half-made is left, every listed backup decrypts and
    /// holds its snapshot, an Activate happened wholly or not at all.
    fn card_checks(&mut self, root: &Path, r: &Recovered) -> Vec<Broken> {
        let mut found = Vec::new();
        let backups = root.join(on_card(paths::BACKUPS_DIR));
        let names: Vec<String> = std::fs::read_dir(&backups)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for n in &names {
            match paths::parse_backup_file_name(n) {
                None => found.push(broken(
                    "backups",
                    format!("{n} is left in {} after the daemon's start", paths::BACKUPS_DIR),
                )),
                Some(id) if !r.listed.contains_key(&id) => found.push(broken(
                    "backups",
                    format!("{n} is under its final name but GetList does not list it"),
                )),
                Some(_) => {}
            }
        }
        for id in r.listed.keys() {
            if let Err(e) = self.backup_whole(root, *id) {
                found.push(broken(
                    "backups",
                    format!("GetList lists the backup of snapshot {id}, but {e}"),
                ));
            }
        }
        if let (Op::Activate, Some(target)) = (self.op, self.facts.activate) {
            found.extend(activate_checks(root, target, r.active));
        }
        found
    }

    /// The backup of `id` decrypts, and holds its snapshot (or, its snapshot deleted, is the
    /// file listed before the operation).
    fn backup_whole(&mut self, root: &Path, id: u64) -> Result<(), String> {
        let file = root.join(on_card(paths::BACKUPS_DIR)).join(paths::backup_file_name(id));
        if !file.exists() {
            return Err(format!("{} is not on the card", file.display()));
        }
        let sha = tree::sha256_file(&file)?;
        if !self.decrypted.contains_key(&sha) {
            let tar = self.work.join("backup.tar");
            let r = decrypt(&file, self.password, &tar).and_then(|()| tree::from_tar(&tar));
            let _ = std::fs::remove_file(&tar);
            self.decrypted
                .insert(sha.clone(), r.map_err(|e| format!("it does not decrypt: {e}"))?);
        }
        let snapshot = root.join(on_card(&paths::snapshot_dir(id)));
        if snapshot.is_dir() {
            let diffs = tree::compare(&tree::from_dir(&snapshot)?, &self.decrypted[&sha]);
            if !diffs.is_empty() {
                let shown: Vec<&str> = diffs.iter().take(5).map(String::as_str).collect();
                return Err(format!(
                    "it does not hold its snapshot: {} difference(s): {}",
                    diffs.len(),
                    shown.join("; ")
                ));
            }
        } else if let Some(before) = self.facts.backups_before.get(&id) {
            if *before != sha {
                return Err(format!(
                    "its snapshot is gone and the file is not the one listed before ({before})"
                ));
            }
        }
        Ok(())
    }
}

/// What the daemon said after its start on a state.
#[derive(Debug, Default)]
struct Recovered {
    listed: std::collections::BTreeMap<u64, String>,
    active: Option<u64>,
    new_id: u64,
    broken: Vec<Broken>,
}

/// An Activate happened wholly or not at all: the live data is the snapshot's (no marker)
/// exactly when the daemon says that snapshot is active, and no half-switched subvolume is left.
fn activate_checks(root: &Path, target: u64, active: Option<u64>) -> Vec<Broken> {
    let mut found = Vec::new();
    let data = root.join(on_card(&format!("{}/data", paths::BROOT)));
    let switched = !data.join(MARKER).exists();
    if switched != (active == Some(target)) {
        found.push(broken(
            "activate",
            format!(
                "the daemon says snapshot {:?} is active, but the live data {} the marker written after snapshot {target}: half a switch",
                active,
                if switched { "lacks" } else { "still holds" }
            ),
        ));
    }
    for part in ["system", "data"] {
        for suffix in [".new", ".old"] {
            let p = root.join(format!("{part}{suffix}"));
            if p.exists() {
                found.push(broken(
                    "activate",
                    format!("{part}{suffix} is left on the card after the daemon's start"),
                ));
            }
        }
    }
    found
}

/// `btrfs check --readonly` of the card's file system; `None` when it finds nothing.
fn btrfs_check(card: &Path) -> Option<Broken> {
    let dev = match Loop::root_of(card, true) {
        Ok(d) => d,
        Err(e) => return Some(broken("btrfs check", e.to_string())),
    };
    let out = Command::new("btrfs").args(["check", "--readonly"]).arg(&dev.0).output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            Some(broken(
                "btrfs check",
                format!(
                    "btrfs check --readonly fails: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            ))
        }
        Err(e) => Some(broken(
            "btrfs check",
            format!("cannot run btrfs: {e}; install btrfs-progs"),
        )),
    }
}

/// Runs `f` on the card's file system mounted writable at `mnt`; unmounted and detached after.
fn with_mounted<T>(card: &Path, mnt: &Path, f: impl FnOnce(&Path) -> T) -> Result<T, String> {
    let dev = Loop::root_of(card, false).map_err(|e| e.to_string())?;
    let mounted = Mounted::btrfs(&dev, mnt).map_err(|e| e.to_string())?;
    let r = f(mnt);
    drop(mounted);
    drop(dev);
    Ok(r)
}

/// The last tick of the automation's state file (`None` when it has none yet). Each complete
/// line is `TICK AVERAGE OUTPUT`, ticks one apart; a torn last line (no newline) is allowed.
pub fn automation_tick(path: &Path) -> Result<Option<u64>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    parse_ticks(&bytes).map_err(|e| format!("the automation's state file does not parse: {e}"))
}

fn parse_ticks(bytes: &[u8]) -> Result<Option<u64>, String> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Ok(None),
    };
    let text = std::str::from_utf8(complete).map_err(|_| "bytes that are not text".to_string())?;
    let mut last: Option<u64> = None;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let tick = match (f.len(), f.first().and_then(|t| t.parse::<u64>().ok())) {
            (3, Some(t)) if f[1].parse::<f64>().is_ok() && f[2].parse::<f64>().is_ok() => t,
            _ => return Err(format!("line {} is {line:?}, not `TICK AVERAGE OUTPUT`", n + 1)),
        };
        if let Some(l) = last {
            if tick != l + 1 {
                return Err(format!("line {} has tick {tick} after tick {l}", n + 1));
            }
        }
        last = Some(tick);
    }
    Ok(last)
}

/// GnuPG with the password on its stdin (never in argv or a file), in a keyring of its own.
fn decrypt(file: &Path, password: &str, out: &Path) -> Result<(), String> {
    use std::io::Write;
    let home = out.with_extension("gnupg");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700));
    }
    let child = Command::new("gpg")
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--output",
        ])
        .arg(out)
        .arg("--decrypt")
        .arg(file)
        .env("GNUPGHOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let r = child.map_err(|e| format!("cannot run gpg: {e}")).and_then(|mut c| {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(password.as_bytes());
        }
        let o = c.wait_with_output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            Err(err.lines().last().unwrap_or("gpg failed").trim().to_string())
        }
    });
    let _ = std::fs::remove_dir_all(&home);
    r
}

/// Where a failing state is kept, and the command that mounts it.
pub fn mount_command(image: &Path) -> String {
    format!(
        "sudo mount -o loop,offset={} {} /mnt",
        crate::image::sdcard::ROOT_START,
        image.display()
    )
}

/// A scratch path for one state's card.
pub fn state_card(work: &Path) -> PathBuf {
    work.join("state.img")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_to_the_last_whole_line() {
        assert_eq!(parse_ticks(b"").unwrap(), None);
        assert_eq!(
            parse_ticks(b"7 18.5 0.1").unwrap(),
            None,
            "a torn first line holds no tick"
        );
        assert_eq!(parse_ticks(b"7 18.5 0.1\n8 18.5 0.2\n9 1").unwrap(), Some(8));
    }

    #[test]
    fn a_gap_or_garbage_in_the_ticks_is_named() {
        let e = parse_ticks(b"7 18.5 0.1\n9 18.5 0.2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("tick 9 after tick 7"), "{e}");
        let e = parse_ticks(b"7 18.5 0.1\n\0\0\0\0\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn an_activate_is_whole_or_not_at_all() {
        let d = std::env::temp_dir().join(format!("nexus-hil-activate-{}", std::process::id()));
        std::fs::create_dir_all(d.join("data")).unwrap();
        // Not switched: the marker is there and the old state is active.
        std::fs::write(d.join("data").join(MARKER), "x").unwrap();
        assert!(activate_checks(&d, 1, None).is_empty());
        // The daemon says switched, but the data was not: caught.
        let b = activate_checks(&d, 1, Some(1));
        assert_eq!(b.len(), 1);
        assert!(b[0].what.contains("still holds"), "{b:?}");
        // Switched, with a half-made subvolume left: caught.
        std::fs::remove_file(d.join("data").join(MARKER)).unwrap();
        std::fs::create_dir_all(d.join("data.old")).unwrap();
        let b = activate_checks(&d, 1, Some(1));
        assert_eq!(b.len(), 1);
        assert!(b[0].what.contains("data.old"), "{b:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
