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
    /// The automation's records at the last flush point checked, apart for the live data
    /// before an Activate's switch (the marker there) and after it (the snapshot's data, whose
    /// file is older).
    last_records: [Option<Records>; 2],
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
            last_records: [None, None],
            decrypted: HashMap::new(),
        }
    }

    /// Checks the state held by `card` (a copy this check may change): what it breaks, or
    /// why it could not be checked (the machine's trouble, not the state's).
    pub async fn check(&mut self, card: &Path, state: State) -> Result<Vec<Broken>, String> {
        let mut found = Vec::new();
        if let Some(b) = btrfs_check(card) {
            found.push(b);
        }
        let mnt = self.work.join("mnt");
        // Mounted writable, as the device mounts it at boot: the tree log is replayed.
        let read = with_mounted(card, &mnt, |root| {
            let marked = root.join("data").join(MARKER).exists();
            (automation_records(&root.join(AUTOMATION_LOG)), usize::from(marked))
        });
        let (records, slot) = match read {
            Err(e) => {
                found.push(broken("mount", format!("a writable mount fails: {e}")));
                return Ok(found);
            }
            Ok((Err(e), slot)) => {
                found.push(broken("automation", e));
                (None, slot)
            }
            Ok((Ok(t), slot)) => (t, slot),
        };
        if let (Some(before), Some(now)) = (&self.last_records[slot], &records) {
            if let Some(what) = lost_records(before, now) {
                found.push(broken("automation", what));
            }
        }
        let recovered = match self.recover(card, state).await? {
            Ok(r) => r,
            Err(b) => {
                found.push(b);
                return Ok(found);
            }
        };
        found.extend(recovered.broken.iter().cloned());
        match with_mounted(card, &mnt, |root| self.card_checks(root, &recovered)) {
            Ok(b) => found.extend(b),
            Err(e) => found.push(broken("mount", format!("the recovered card does not mount: {e}"))),
        }
        if state.flush_point && records.is_some() {
            self.last_records[slot] = records;
        }
        Ok(found)
    }

    /// Starts the daemon on the state (a container emulator on the card) and asks it what it
    /// recovered; the container is removed after.
    /// The outer error is the machine's (no container, no connection): the state is then not
    /// checked, rather than blamed.
    async fn recover(&self, card: &Path, state: State) -> Result<Result<Recovered, Broken>, String> {
        let started = Emulator::start(EmulatorSpec {
            image: self.image,
            sdcard_template: card,
            admin_pubkey: &self.key.with_extension("pub"),
            work_dir: self.work,
            in_place: true,
        })
        .await;
        let emu = match started {
            Ok(e) => e,
            // The container ran, and the system or the daemon did not come up on this card.
            Err(crate::error::InfraError::Emulator(e))
                if e.contains("did not come up") || e.contains("did not take its D-Bus names") =>
            {
                return Ok(Err(broken(
                    "recovery",
                    format!("nexus-backupd does not start on this state: {e}"),
                )))
            }
            Err(e) => return Err(format!("cannot start a container emulator on the state: {e}")),
        };
        let dev = emulator_device(&emu, self.key, self.pubkey, self.work);
        let r = self.ask(&dev, state).await;
        let _ = emu.remove().await;
        r
    }

    async fn ask(&self, dev: &crate::device::Device, state: State) -> Result<Result<Recovered, Broken>, String> {
        let mut tries = 0;
        let bus = loop {
            tries += 1;
            match DeviceBus::connect(&dev.ssh, &dev.admin, "root", Duration::from_secs(60)).await {
                Ok(b) => break b,
                Err(e) if tries >= 3 => return Err(format!("the recovered emulator's bus, 3 tries: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // A call the daemon fails is the state's; the connection was shown to work.
        Ok(self.questions(&bus, state).await.map_err(|e| broken("recovery", e)))
    }

    async fn questions(&self, bus: &DeviceBus, state: State) -> Result<Recovered, String> {
        let mut r = Recovered::default();
        let status = ops::status(bus).await?;
        let running = status.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
        if running != 0 {
            r.broken.push(broken(
                "recovery",
                format!("after the start Status reports the backup of snapshot {running} as running"),
            ));
        }
        r.listed = ops::finished_backups(bus).await?;
        let last_ok = status.get("last_result").and_then(|v| v.as_str()) == Some("ok");
        let last_id = status.get("last_id").and_then(|v| v.as_u64()).unwrap_or(0);
        let deleted = self.facts.deleted_backup == Some(last_id);
        if last_ok && last_id != 0 && !deleted && !r.listed.contains_key(&last_id) {
            r.broken.push(broken(
                "recovery",
                format!("Status says the backup of snapshot {last_id} finished ok, but GetList does not list it"),
            ));
        }
        let (ids, active) = ops::snapshots(bus).await?;
        r.active = active;
        // Ids are never reused: a new snapshot's id is above every id the card shows and every
        // id handed out before this point. (Not above what an earlier state's recovery gave:
        // a recovery may take ids itself, for the automatic snapshot before a switch.)
        r.new_id = ops::create(bus, "crash-states: the next id").await?;
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

/// The automation's state file as far as its records are whole: its first record (which
/// names the file's generation: the loop starts it over at 4 MiB) and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    pub first: String,
    pub count: usize,
}

/// Reads the automation's state file (`None` when it has no whole record yet). Each complete
/// line is `TICK AVERAGE OUTPUT`, each tick one above the last or 1 (the loop started again);
/// a torn last line (no newline) is allowed.
pub fn automation_records(path: &Path) -> Result<Option<Records>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    parse_records(&bytes).map_err(|e| format!("the automation's state file does not parse: {e}"))
}

fn parse_records(bytes: &[u8]) -> Result<Option<Records>, String> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Ok(None),
    };
    let text = std::str::from_utf8(complete).map_err(|_| "bytes that are not text".to_string())?;
    let mut last: Option<u64> = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let tick = match (f.len(), f.first().and_then(|t| t.parse::<u64>().ok())) {
            (3, Some(t)) if f[1].parse::<f64>().is_ok() && f[2].parse::<f64>().is_ok() => t,
            _ => return Err(format!("line {} is {line:?}, not `TICK AVERAGE OUTPUT`", n + 1)),
        };
        if let Some(l) = last {
            if tick != l + 1 && tick != 1 {
                return Err(format!("line {} has tick {tick} after tick {l}", n + 1));
            }
        }
        last = Some(tick);
        count += 1;
    }
    Ok(Some(Records {
        first: text.lines().next().unwrap_or_default().to_string(),
        count,
    }))
}

/// A record an earlier flush point held that this state lost, if any (the same generation of
/// the file, fewer whole records).
fn lost_records(before: &Records, now: &Records) -> Option<String> {
    (now.first == before.first && now.count < before.count).then(|| {
        format!(
            "the automation's state file holds {} whole records, but an earlier flush point held {}: fsynced records were lost",
            now.count, before.count
        )
    })
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
    fn records_are_read_to_the_last_whole_line_across_restarts_of_the_loop() {
        assert_eq!(parse_records(b"").unwrap(), None);
        assert_eq!(
            parse_records(b"7 18.5 0.1").unwrap(),
            None,
            "a torn first line holds no record"
        );
        let r = parse_records(b"7 18.5 0.1\n8 18.5 0.2\n1 18.5 0.3\n2 1")
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            Records {
                first: "7 18.5 0.1".into(),
                count: 3
            }
        );
    }

    #[test]
    fn a_gap_or_garbage_in_the_records_is_named() {
        let e = parse_records(b"7 18.5 0.1\n9 18.5 0.2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("tick 9 after tick 7"), "{e}");
        let e = parse_records(b"7 18.5 0.1\n\0\0\0\0\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn fewer_records_of_the_same_file_are_a_loss_and_a_new_file_is_not() {
        let r = |first: &str, count| Records {
            first: first.into(),
            count,
        };
        assert!(lost_records(&r("1 a b", 10), &r("1 a b", 12)).is_none());
        assert!(lost_records(&r("1 a b", 10), &r("1 a b", 9))
            .unwrap()
            .contains("held 10"));
        assert!(
            lost_records(&r("1 a b", 10), &r("5001 a b", 3)).is_none(),
            "started over at 4 MiB"
        );
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
