//! The checks of one state of the card, on this machine, without booting a guest for it:
//! `btrfs check --readonly`; a writable mount (the tree log replays) and the automation's
//! state file; `nexus-backupd`'s recovery in a container emulator started on the state; then,
//! on the recovered card, what the daemon lists against what the card holds, every backup
//! finished before the operation, the live subvolumes after an Activate, and the automation's
//! records again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nexus_contract::paths;

use super::ops::{self, Facts, Op, MARKER};
use super::pick::State;
use super::Error;
use crate::device::container::device as emulator_device;
use crate::device::container::{Emulator, EmulatorSpec};
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

/// The automation's state file, below the card's top, and below the live data.
const AUTOMATION_LOG: &str = "data/automation/state.log";
const AUTOMATION_IN_DATA: &str = "automation/state.log";

/// The automation's loop starts its state file over when it would pass 4 MiB
/// (`nexus-automation`); a file that starts over before it came within this much of that lost
/// its records.
const AUTOMATION_LIMIT: u64 = 4 << 20;
const AUTOMATION_RESTART_MARGIN: u64 = 1 << 20;

/// The live trees an Activate may not change unless it switches: `system`, and `data` without
/// the automation's state file (which the automation keeps writing).
#[derive(Debug, Default)]
pub struct LiveTrees {
    pub system: Tree,
    pub data: Tree,
}

impl LiveTrees {
    /// The live subvolumes under `root` (the card's top, or a snapshot's folder).
    pub fn read(root: &Path) -> Result<Self, String> {
        Ok(Self {
            system: tree::from_dir(&root.join("system"))?,
            data: live_data(&root.join("data"))?,
        })
    }
}

/// The live trees of a card (a copy: the mount replays its tree log).
pub fn live_trees(card: &Path, mnt: &Path) -> Result<LiveTrees, String> {
    with_mounted(card, mnt, LiveTrees::read)?
}

/// The data tree as compared: the automation's state file left out.
fn live_data(dir: &Path) -> Result<Tree, String> {
    let mut t = tree::from_dir(dir)?;
    t.entries.remove(AUTOMATION_IN_DATA.as_bytes());
    Ok(t)
}

/// What checks every state of one operation, carrying what earlier states showed.
pub struct Checker<'a> {
    pub op: Op,
    pub facts: &'a Facts,
    pub image: &'a str,
    pub key: &'a Path,
    pub pubkey: &'a str,
    pub work: &'a Path,
    pub password: &'a str,
    /// More passwords a backup may have been made with, tried after `password` (a real card
    /// holds backups of a scenario's several passwords).
    pub other_passwords: Vec<String>,
    /// The automation's records at the last flush point checked, apart for the live data
    /// before an Activate's switch (the marker there) and after it (the snapshot's data, whose
    /// file is older).
    last_records: [Option<Records>; 2],
    /// Decrypted backups by the file's SHA-256: their trees.
    decrypted: HashMap<String, Tree>,
    /// An Activate's live trees at the operation's start (read from the card there).
    pub before_activate: Option<LiveTrees>,
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
            other_passwords: Vec::new(),
            last_records: [None, None],
            decrypted: HashMap::new(),
            before_activate: None,
        }
    }

    /// Checks the state held by `card` (a copy this check may change): what it breaks, or
    /// why it could not be checked (the machine's trouble, not the state's).
    pub async fn check(&mut self, card: &Path, state: &State) -> Result<Vec<Broken>, Error> {
        let mut found = Vec::new();
        if let Some(b) = btrfs_check(card) {
            found.push(b);
        }
        let mnt = self.work.join("mnt");
        // Mounted writable, as the device mounts it at boot: the tree log is replayed. A live
        // data half switched (renamed away) is the recovery's to repair, its file not read yet.
        let read = with_mounted(card, &mnt, |root| {
            let slot = usize::from(root.join("data").join(MARKER).exists());
            let file = root
                .join("data")
                .is_dir()
                .then(|| read_automation(&root.join(AUTOMATION_LOG)));
            (file, slot)
        });
        let (before, slot) = match read {
            Err(e) => {
                found.push(broken("mount", format!("a writable mount fails: {e}")));
                return Ok(found);
            }
            Ok((None, slot)) => (None, slot),
            Ok((Some(Err(e)), slot)) => {
                found.push(broken("automation", e));
                (None, slot)
            }
            Ok((Some(Ok(file)), slot)) => {
                found.extend(automation_loss(
                    file.as_ref().map(|f| &f.records),
                    self.last_records[slot].as_ref(),
                ));
                (file, slot)
            }
        };
        let recovered = match self.recover(card, state).await? {
            Ok(r) => r,
            Err(b) => {
                found.push(b);
                return Ok(found);
            }
        };
        found.extend(recovered.broken.iter().cloned());
        match with_mounted(card, &mnt, |root| {
            let mut b = self.card_checks(root, &recovered, state);
            let after_slot = usize::from(root.join("data").join(MARKER).exists());
            let kept = before.as_ref().filter(|_| after_slot == slot);
            b.extend(automation_kept(kept, read_bytes(&root.join(AUTOMATION_LOG))));
            b
        }) {
            Ok(b) => found.extend(b),
            Err(e) => found.push(broken("mount", format!("the recovered card does not mount: {e}"))),
        }
        if let (true, Some(file)) = (state.flush_point(), before) {
            self.last_records[slot] = Some(file.records);
        }
        Ok(found)
    }

    /// Starts the daemon on the state (a container emulator on the card) and asks it what it
    /// recovered; the container is removed after.
    /// The outer error is the machine's (no container, no connection): the state is then not
    /// checked, rather than blamed.
    async fn recover(&self, card: &Path, state: &State) -> Result<Result<Recovered, Broken>, Error> {
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
            Err(e) => {
                return Err(Error::Machine(format!(
                    "cannot start a container emulator on the state: {e}"
                )))
            }
        };
        let dev = emulator_device(&emu, self.key, self.pubkey, self.work);
        let r = self.ask(&dev, state).await;
        let _ = emu.remove().await;
        r
    }

    async fn ask(&self, dev: &crate::device::Device, state: &State) -> Result<Result<Recovered, Broken>, Error> {
        let mut tries = 0;
        let bus = loop {
            tries += 1;
            match DeviceBus::connect(&dev.ssh, &dev.admin, "root", Duration::from_secs(60)).await {
                Ok(b) => break b,
                Err(e) if tries >= 3 => {
                    return Err(Error::Machine(format!("the recovered emulator's bus, 3 tries: {e}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // A call the daemon fails is the state's; the connection was shown to work.
        Ok(self
            .questions(&bus, state)
            .await
            .map_err(|e| broken("recovery", e.to_string())))
    }

    async fn questions(&self, bus: &DeviceBus, state: &State) -> Result<Recovered, Error> {
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
        let deleted = self.facts.deleted_backup.map(|d| d.0) == Some(last_id);
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
    fn card_checks(&mut self, root: &Path, r: &Recovered, state: &State) -> Vec<Broken> {
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
        let mut shas = BTreeMap::new();
        for id in r.listed.keys() {
            match self.backup_whole(root, *id) {
                Ok(sha) => {
                    shas.insert(*id, sha);
                }
                Err(e) => found.push(broken(
                    "backups",
                    format!("GetList lists the backup of snapshot {id}, but {e}"),
                )),
            }
        }
        let on_card = |id: u64| {
            root.join(on_card(paths::BACKUPS_DIR))
                .join(paths::backup_file_name(id))
                .exists()
        };
        found.extend(earlier_backups(self.facts, state, &r.listed, &shas, on_card));
        if let (Op::Activate, Some(target)) = (self.op, self.facts.activate) {
            found.extend(activate_checks(root, target, r.active, self.before_activate.as_ref()));
        }
        found
    }

    /// The backup of `id` decrypts, and holds its snapshot (or, its snapshot deleted, is the
    /// file listed before the operation); the file's SHA-256.
    fn backup_whole(&mut self, root: &Path, id: u64) -> Result<String, String> {
        let file = root.join(on_card(paths::BACKUPS_DIR)).join(paths::backup_file_name(id));
        if !file.exists() {
            return Err(format!("{} is not on the card", file.display()));
        }
        let sha = tree::sha256_file(&file)?;
        if !self.decrypted.contains_key(&sha) {
            let tar = self.work.join("backup.tar");
            let passwords = std::iter::once(self.password).chain(self.other_passwords.iter().map(String::as_str));
            let r = decrypt_with_any(&file, passwords, &tar).and_then(|()| tree::from_tar(&tar));
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
        Ok(sha)
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

/// Every backup that had finished before the operation began is still there: listed, on the
/// card, with the SHA-256 it was listed with before (its decryption and content are the
/// `backups` check's, as for every listed one). The backup an operation's Delete removes may
/// be gone from the Delete's call on (a call cut off may or may not have taken effect), and
/// must be gone once its reply was in.
fn earlier_backups(
    facts: &Facts,
    state: &State,
    listed: &BTreeMap<u64, String>,
    file_sha: &BTreeMap<u64, String>,
    on_card: impl Fn(u64) -> bool,
) -> Vec<Broken> {
    let mut found = Vec::new();
    let b = |what: String| broken("earlier backups", what);
    for (&id, before) in &facts.backups_before {
        match facts.deleted_backup {
            Some((d, acked)) if d == id && state.entries >= acked => {
                if listed.contains_key(&id) {
                    found.push(b(format!(
                        "the Delete of the backup of snapshot {id} had replied (log entry {acked}), but GetList lists it again"
                    )));
                }
                continue;
            }
            Some((d, _)) if d == id && !listed.contains_key(&id) && !on_card(id) => continue,
            _ => {}
        }
        let Some(now) = listed.get(&id) else {
            found.push(b(format!(
                "the backup of snapshot {id} had finished before the operation, but GetList does not list it ({})",
                if on_card(id) {
                    "its file is still on the card"
                } else {
                    "its file is gone"
                }
            )));
            continue;
        };
        if now != before {
            found.push(b(format!(
                "GetList lists the backup of snapshot {id} with SHA-256 {now}, but before the operation with {before}"
            )));
        }
        if let Some(sha) = file_sha.get(&id).filter(|sha| *sha != before) {
            found.push(b(format!(
                "the backup of snapshot {id} on the card has SHA-256 {sha}, but before the operation {before}"
            )));
        }
    }
    found
}

/// An Activate happened wholly or not at all: each live subvolume is there, not empty, and
/// equal to the snapshot's when the daemon says that snapshot is active, or to what it was at
/// the operation's start when not; no half-switched subvolume is left.
fn activate_checks(root: &Path, target: u64, active: Option<u64>, before: Option<&LiveTrees>) -> Vec<Broken> {
    let mut found = Vec::new();
    let switched = active == Some(target);
    let snapshot = root.join(on_card(&paths::snapshot_dir(target)));
    for part in ["system", "data"] {
        let live = root.join(part);
        let tree = if !live.is_dir() {
            Err("it is missing".to_string())
        } else if part == "data" {
            live_data(&live)
        } else {
            tree::from_dir(&live)
        };
        let tree = match tree {
            Ok(t) if t.is_empty() => Err("it is empty".to_string()),
            t => t,
        };
        let tree = match tree {
            Ok(t) => t,
            Err(e) => {
                found.push(broken(
                    "activate",
                    format!("the live {part} subvolume after the daemon's start: {e}"),
                ));
                continue;
            }
        };
        let expected = if switched {
            let dir = snapshot.join(part);
            let t = if part == "data" {
                live_data(&dir)
            } else {
                tree::from_dir(&dir)
            };
            match t {
                Ok(t) => t,
                Err(e) => {
                    found.push(broken(
                        "activate",
                        format!("snapshot {target} is active, but its {part} cannot be read: {e}"),
                    ));
                    continue;
                }
            }
        } else {
            match before {
                Some(b) if part == "data" => clone_tree(&b.data),
                Some(b) => clone_tree(&b.system),
                None => continue,
            }
        };
        let diffs = tree::compare(&expected, &tree);
        if !diffs.is_empty() {
            let shown: Vec<&str> = diffs.iter().take(5).map(String::as_str).collect();
            found.push(broken(
                "activate",
                format!(
                    "the daemon says snapshot {active:?} is active, but the live {part} is not {}: {} difference(s): {}; half a switch",
                    if switched {
                        format!("snapshot {target}'s")
                    } else {
                        "what it was before the Activate".to_string()
                    },
                    diffs.len(),
                    shown.join("; ")
                ),
            ));
        }
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

fn clone_tree(t: &Tree) -> Tree {
    Tree {
        entries: t.entries.clone(),
        hard_links: t.hard_links.clone(),
    }
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
/// names the file's generation: the loop starts it over at 4 MiB), how many there are, and the
/// file's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    pub first: String,
    pub count: usize,
    pub bytes: u64,
}

/// The automation's state file as read: its records, and the bytes of its whole records.
#[derive(Debug, Clone)]
pub struct AutomationFile {
    pub records: Records,
    pub whole: Vec<u8>,
}

/// Reads the automation's state file (`None` when it is missing). Each complete line is
/// `TICK AVERAGE OUTPUT`, each tick one above the last or 1 (the loop started again); a torn
/// last line (no newline) is allowed.
pub fn read_automation(path: &Path) -> Result<Option<AutomationFile>, String> {
    let Some(bytes) = read_bytes(path)? else {
        return Ok(None);
    };
    let records = parse_records(&bytes).map_err(|e| format!("the automation's state file does not parse: {e}"))?;
    let whole = bytes[..bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)].to_vec();
    Ok(Some(AutomationFile { records, whole }))
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn parse_records(bytes: &[u8]) -> Result<Records, String> {
    let mut r = Records {
        first: String::new(),
        count: 0,
        bytes: bytes.len() as u64,
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => return Ok(r),
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
            if tick != l + 1 && tick != 1 {
                return Err(format!("line {} has tick {tick} after tick {l}", n + 1));
            }
        }
        last = Some(tick);
        r.count += 1;
    }
    r.first = text.lines().next().unwrap_or_default().to_string();
    Ok(r)
}

/// The file the loop may have started over: it had come within the margin of 4 MiB.
fn near_restart(r: &Records) -> bool {
    r.bytes + AUTOMATION_RESTART_MARGIN >= AUTOMATION_LIMIT
}

/// What this state's file lost against the last flush point's reading (of the same live
/// data): the file itself, or whole records of it.
fn automation_loss(now: Option<&Records>, before: Option<&Records>) -> Option<Broken> {
    let Some(now) = now else {
        return Some(broken(
            "automation",
            format!("the automation's state file {AUTOMATION_LOG} is missing"),
        ));
    };
    before
        .and_then(|b| lost_records(b, now))
        .map(|w| broken("automation", w))
}

/// Records an earlier flush point held that this state lost, if any: fewer whole records of
/// the same generation of the file, or a new generation the loop would not have started yet.
fn lost_records(before: &Records, now: &Records) -> Option<String> {
    if before.count == 0 || (now.first == before.first && now.count >= before.count) {
        return None;
    }
    if now.first == before.first {
        return Some(format!(
            "the automation's state file holds {} whole records, but an earlier flush point held {}: fsynced records were lost",
            now.count, before.count
        ));
    }
    (!near_restart(before)).then(|| {
        format!(
            "the automation's state file starts over ({} whole records, the first {:?}), but an earlier flush point held {} from {:?} in {} bytes, far from the 4 MiB where the loop starts it over: its records were lost",
            now.count, now.first, before.count, before.first, before.bytes
        )
    })
}

/// The daemon's start kept the automation's records: the file is there, and the records whole
/// before the start (`before`, `None` when the start switched the live data or it was not
/// read) still begin it, byte for byte.
fn automation_kept(before: Option<&AutomationFile>, after: Result<Option<Vec<u8>>, String>) -> Option<Broken> {
    let after = match after {
        Err(e) => return Some(broken("automation", e)),
        Ok(None) => {
            return Some(broken(
                "automation",
                format!("the automation's state file {AUTOMATION_LOG} is missing after the daemon's start"),
            ))
        }
        Ok(Some(a)) => a,
    };
    let before = before.filter(|b| !near_restart(&b.records))?;
    (!after.starts_with(&before.whole)).then(|| {
        let kept = after.iter().zip(&before.whole).take_while(|(a, b)| a == b).count();
        broken(
            "automation",
            format!(
                "the daemon's start lost the automation's records: {} whole records ({} bytes) before it, of which the file now keeps the first {kept} bytes",
                before.records.count,
                before.whole.len()
            ),
        )
    })
}

/// [`decrypt`] with each password in turn until one works; the first one's error otherwise.
fn decrypt_with_any<'p>(file: &Path, passwords: impl Iterator<Item = &'p str>, out: &Path) -> Result<(), String> {
    let mut first = None;
    for p in passwords {
        match decrypt(file, p, out) {
            Ok(()) => return Ok(()),
            Err(e) => first = first.or(Some(e)),
        }
    }
    Err(first.unwrap_or_else(|| "no password".into()))
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

    fn records(bytes: &[u8]) -> Records {
        parse_records(bytes).unwrap()
    }

    #[test]
    fn records_are_read_to_the_last_whole_line_across_restarts_of_the_loop() {
        assert_eq!(parse_records(b"").unwrap().count, 0);
        assert_eq!(
            parse_records(b"7 18.5 0.1").unwrap().count,
            0,
            "a torn first line holds no record"
        );
        let r = records(b"7 18.5 0.1\n8 18.5 0.2\n1 18.5 0.3\n2 1");
        assert_eq!(
            r,
            Records {
                first: "7 18.5 0.1".into(),
                count: 3,
                bytes: 36,
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
    fn fewer_records_a_file_started_over_early_or_no_file_are_a_loss() {
        let r = |first: &str, count, bytes| Records {
            first: first.into(),
            count,
            bytes,
        };
        assert!(lost_records(&r("1 a b", 10, 200), &r("1 a b", 12, 240)).is_none());
        assert!(lost_records(&r("1 a b", 10, 200), &r("1 a b", 9, 180))
            .unwrap()
            .contains("held 10"));
        // Truncated: no whole record, or records of a new generation far from 4 MiB.
        assert!(lost_records(&r("1 a b", 10, 200), &r("", 0, 0))
            .unwrap()
            .contains("starts over"));
        assert!(lost_records(&r("1 a b", 10, 200), &r("5001 a b", 3, 60)).is_some());
        assert!(
            lost_records(&r("1 a b", 200_000, 4 << 20), &r("5001 a b", 3, 60)).is_none(),
            "started over at 4 MiB"
        );
        assert!(
            lost_records(&r("", 0, 0), &r("5001 a b", 3, 60)).is_none(),
            "nothing to lose"
        );
        // The file missing is a loss even with no earlier reading.
        let b = automation_loss(None, None).unwrap();
        assert_eq!(b.check, "automation");
        assert!(b.what.contains("missing"), "{b:?}");
        assert!(automation_loss(Some(&r("1 a b", 1, 20)), None).is_none());
    }

    #[test]
    fn the_daemons_start_keeps_the_records_whole_before_it() {
        let before = AutomationFile {
            records: records(b"1 18.5 0.1\n2 18.5 0.2\n3 1"),
            whole: b"1 18.5 0.1\n2 18.5 0.2\n".to_vec(),
        };
        let after = |b: &[u8]| Ok(Some(b.to_vec()));
        assert!(automation_kept(Some(&before), after(b"1 18.5 0.1\n2 18.5 0.2\n3 11 18.5 0.1\n")).is_none());
        let b = automation_kept(Some(&before), after(b"1 18.5 0.1\n")).unwrap();
        assert!(b.what.contains("lost the automation's records"), "{b:?}");
        assert!(automation_kept(Some(&before), after(b"")).is_some(), "truncated");
        assert!(automation_kept(Some(&before), Ok(None))
            .unwrap()
            .what
            .contains("missing"));
        assert!(
            automation_kept(None, after(b"9 1 2\n")).is_none(),
            "switched: not compared"
        );
    }

    fn facts(before: &[(u64, &str)], deleted: Option<(u64, usize)>) -> Facts {
        Facts {
            start: 10,
            end: 100,
            backups_before: before.iter().map(|(i, s)| (*i, s.to_string())).collect(),
            deleted_backup: deleted,
            ..Default::default()
        }
    }

    fn at(entries: usize) -> State {
        State {
            epoch: entries,
            entries,
            kind: super::super::pick::Kind::FlushPoint,
            variant: Default::default(),
        }
    }

    fn map(m: &[(u64, &str)]) -> BTreeMap<u64, String> {
        m.iter().map(|(i, s)| (*i, s.to_string())).collect()
    }

    #[test]
    fn a_backup_finished_before_the_operation_must_stay_listed_and_unchanged() {
        let f = facts(&[(1, "aa"), (2, "bb")], None);
        let all = map(&[(1, "aa"), (2, "bb")]);
        assert!(earlier_backups(&f, &at(50), &all, &all, |_| true).is_empty());
        // Deleted and no longer listed (the daemon's recovery, or a writer): caught.
        let b = earlier_backups(&f, &at(50), &map(&[(2, "bb")]), &map(&[(2, "bb")]), |id| id != 1);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].check, "earlier backups");
        assert!(b[0].what.contains("snapshot 1") && b[0].what.contains("gone"), "{b:?}");
        // Listed, but another file (or another SHA-256 listed).
        let b = earlier_backups(&f, &at(50), &all, &map(&[(1, "aa"), (2, "cc")]), |_| true);
        assert!(b.len() == 1 && b[0].what.contains("cc"), "{b:?}");
        let b = earlier_backups(&f, &at(50), &map(&[(1, "zz"), (2, "bb")]), &all, |_| true);
        assert!(b.len() == 1 && b[0].what.contains("zz"), "{b:?}");
    }

    #[test]
    fn a_deleted_backup_may_go_while_its_delete_runs_and_must_stay_gone_after_its_reply() {
        let f = facts(&[(1, "aa"), (2, "bb")], Some((2, 60)));
        let one = map(&[(1, "aa")]);
        let all = map(&[(1, "aa"), (2, "bb")]);
        assert!(earlier_backups(&f, &at(40), &all, &all, |_| true).is_empty(), "not yet");
        assert!(
            earlier_backups(&f, &at(40), &one, &one, |id| id == 1).is_empty(),
            "in flight"
        );
        assert!(
            earlier_backups(&f, &at(60), &one, &one, |id| id == 1).is_empty(),
            "acknowledged"
        );
        let b = earlier_backups(&f, &at(60), &all, &all, |_| true);
        assert!(b.len() == 1 && b[0].what.contains("lists it again"), "{b:?}");
        // The other backup is kept throughout.
        let b = earlier_backups(&f, &at(80), &map(&[]), &map(&[]), |_| false);
        assert!(b.len() == 1 && b[0].what.contains("snapshot 1"), "{b:?}");
    }

    fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
    }

    /// Every entry's mtime set to one time, as a snapshot and its copy share them.
    fn pin(dir: &Path) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pin(&p);
            }
            std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
        }
    }

    #[test]
    fn an_activate_is_whole_or_not_at_all_and_leaves_no_live_subvolume_missing_or_empty() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let snap = root.join(on_card(&paths::snapshot_dir(1)));
        let log = "automation/state.log";
        write_tree(
            &snap,
            &[
                ("system/a", "old"),
                ("data/d", "old"),
                (&format!("data/{log}"), "1 2 3\n"),
            ],
        );
        write_tree(
            root,
            &[
                ("system/a", "new"),
                ("data/d", "old"),
                (&format!("data/{log}"), "1 2 3\n"),
            ],
        );
        std::fs::write(root.join("data").join(MARKER), "x").unwrap();
        pin(root);
        let before = LiveTrees::read(root).unwrap();
        // Not switched, and the live trees as they were (the automation's file aside).
        std::fs::write(root.join("data").join(log), "1 2 3\n2 2 3\n").unwrap();
        assert!(activate_checks(root, 1, None, Some(&before)).is_empty());
        // The daemon says switched, and neither part was: both caught.
        let b = activate_checks(root, 1, Some(1), Some(&before));
        assert_eq!(b.len(), 2, "{b:?}");
        // Data switched alone (system left): caught on system, which the marker never showed.
        std::fs::remove_file(root.join("data").join(MARKER)).unwrap();
        let b = activate_checks(root, 1, Some(1), Some(&before));
        assert!(b.len() == 1 && b[0].what.contains("live system"), "{b:?}");
        std::fs::write(root.join("system/a"), "old").unwrap();
        pin(&root.join("system"));
        assert!(activate_checks(root, 1, Some(1), Some(&before)).is_empty());
        // A half-made subvolume left: caught.
        std::fs::create_dir_all(root.join("data.old")).unwrap();
        let b = activate_checks(root, 1, Some(1), Some(&before));
        assert!(b.len() == 1 && b[0].what.contains("data.old"), "{b:?}");
        std::fs::remove_dir_all(root.join("data.old")).unwrap();
        // A live subvolume missing, or empty: caught, switched or not.
        std::fs::remove_dir_all(root.join("system")).unwrap();
        let b = activate_checks(root, 1, Some(1), Some(&before));
        assert!(
            b.len() == 1 && b[0].what.contains("system") && b[0].what.contains("missing"),
            "{b:?}"
        );
        let b = activate_checks(root, 1, None, Some(&before));
        assert!(b.iter().any(|b| b.what.contains("missing")), "{b:?}");
        std::fs::create_dir_all(root.join("system")).unwrap();
        let b = activate_checks(root, 1, Some(1), Some(&before));
        assert!(b.len() == 1 && b[0].what.contains("empty"), "{b:?}");
    }
}
