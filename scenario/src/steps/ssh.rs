//! Steps over ssh as a user: running a command, writing a file, copying files down with scp or
//! rsync and up with scp, and the vendor's setup of a backup user.

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Run a shell command on the device over ssh as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    #[serde(rename = "as")]
    pub user: String,
    pub command: String,
    pub stdin: Option<String>,
    /// Expected exit status (default 0).
    pub expect_exit: Option<i32>,
    /// Texts standard output must contain.
    #[serde(default)]
    pub expect_stdout: Vec<String>,
    /// Store standard output (trimmed), or its `capture_word`-th word (1-based), in this variable.
    pub capture: Option<String>,
    pub capture_word: Option<usize>,
    /// What the command makes through the daemon, whose id is the captured value: `snapshot`,
    /// `backup` or both (the vendor's backup.py makes a snapshot and its backup). The run owns
    /// it: it is recorded on a real device and deleted when the scenario ends. A command may
    /// also print lines `made snapshot ID` / `made backup ID`; nothing else it makes is deleted.
    #[serde(default)]
    pub made: Vec<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshRun {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.user.as_str(), &self.command];
        t.extend(opt(&self.stdin));
        t.extend(self.expect_stdout.iter().map(String::as_str));
        t
    }

    fn captures(&self) -> Option<&str> {
        self.capture.as_deref()
    }

    fn check(&self) -> Result<(), String> {
        if self.capture_word.is_some() && self.capture.is_none() {
            return Err("`capture_word` needs `capture` (the variable to store the word in)".into());
        }
        if !self.made.is_empty() && self.capture.is_none() {
            return Err("`made` needs `capture`: the captured value is the id of what the command made".into());
        }
        if let Some(m) = self.made.iter().find(|m| !matches!(m.as_str(), "snapshot" | "backup")) {
            return Err(format!(
                "`made` lists {m:?}: a command can make a `snapshot` or a `backup`"
            ));
        }
        if let Some(path) = unrecorded_write(&self.command) {
            return Err(format!(
                "the command changes {path} behind the record that puts a device back as found: \
                 write files with ssh.put, change them with ssh.edit (ssh.restore puts one back early), \
                 add users with setup.user; each is recorded on the device first and undone when the scenario ends"
            ));
        }
        Ok(())
    }
}

/// The device's own files: a scenario changes them only through steps that record the change.
const RECORDED_ROOTS: &[&str] = &["/etc", "/usr", "/home", "/root", "/var/lib", "/opt", "/boot", "/srv"];

/// The first path of the device's own files that a shell command writes to with a redirection,
/// `tee`, `sed -i`, or as the target of `cp`, `mv`, `install`, `ln`, `rm`, `chmod`, `chown`,
/// `truncate` or `touch` (read-only uses of those files are fine).
pub fn unrecorded_write(command: &str) -> Option<String> {
    written_under(command, RECORDED_ROOTS)
}

/// The card's file system: the daemon owns what is below it (the live `system` and `data`,
/// snapshots, backups); a scenario changes it only through the daemon's API.
const CARD_ROOTS: &[&str] = &["/broot"];

/// Block devices a raw write would go to (the card, its partitions, any disk).
const BLOCK_DEVICES: &[&str] = &[
    "/dev/mmcblk",
    "/dev/sd",
    "/dev/vd",
    "/dev/nvme",
    "/dev/loop",
    "/dev/disk/",
    "/dev/mapper/",
];

/// What a shell command changes on a device that no record can put back, if anything: a write
/// below /broot outside the daemon's API, a raw write to a block device (`dd of=`, a
/// redirection, mkfs and its kin), or a unit stopped, disabled, masked or killed. A scenario
/// may do these only on a device the harness throws away (`needs: [throwaway]`).
pub fn throwaway_change(command: &str) -> Option<String> {
    if let Some(p) = written_under(command, CARD_ROOTS) {
        return Some(format!(
            "writes {p} below the card's file system, outside the daemon's API"
        ));
    }
    if let Some(p) = written_under(command, BLOCK_DEVICES) {
        return Some(format!("writes the block device {p}"));
    }
    for simple in command.split(|c| ";&|\n(){}".contains(c)) {
        let words: Vec<&str> = simple.split_whitespace().collect();
        let Some(at) = words
            .iter()
            .position(|w| !w.contains('=') && !["sudo", "then", "do", "else", "exec"].contains(w))
        else {
            continue;
        };
        let args = &words[at + 1..];
        match words[at] {
            "dd" => {
                // `of=` to a device, or to a variable (a partition found at run time).
                if let Some(of) = args.iter().find_map(|w| w.strip_prefix("of=")) {
                    let of = of.trim_matches(|c| c == '"' || c == '\'');
                    if of.starts_with('$') || BLOCK_DEVICES.iter().any(|d| of.starts_with(d)) {
                        return Some(format!("writes {of} with dd, a raw device write"));
                    }
                }
            }
            "systemctl" => {
                if let Some(verb) = args.iter().find(|w| ["stop", "disable", "mask", "kill"].contains(w)) {
                    return Some(format!("runs `systemctl {verb}`: a unit it stops stays stopped"));
                }
            }
            _ if simple.contains("Snapshot1.Activate") => {
                return Some("activates a snapshot: the device switches state at its next boot".into());
            }
            w if w.starts_with("mkfs")
                || ["wipefs", "blkdiscard", "sfdisk", "fdisk", "parted", "sgdisk"].contains(&w) =>
            {
                return Some(format!("runs {w}, a raw device write"));
            }
            _ => {}
        }
    }
    None
}

/// The first path below one of `roots` that a shell command writes to (see
/// [`unrecorded_write`] for what counts as a write), or `dd`'s `of=`.
fn written_under(command: &str, roots: &[&str]) -> Option<String> {
    let owned = |w: &str| {
        let w = w.trim_matches(|c| c == '"' || c == '\'');
        // A folder holds what is below it; a device prefix (`/dev/sd`) names every such device.
        roots
            .iter()
            .any(|r| match r.starts_with("/dev/") {
                true => w.starts_with(r),
                false => w == *r || w.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')),
            })
            .then(|| w.to_string())
    };
    // Redirections, wherever they are.
    let mut rest = command;
    while let Some(i) = rest.find('>') {
        let after = rest[i + 1..].trim_start_matches(['>', '|']).trim_start();
        let word = after
            .split(|c: char| c.is_whitespace() || ";&|)".contains(c))
            .next()
            .unwrap_or("");
        if let Some(p) = owned(word) {
            return Some(p);
        }
        rest = &rest[i + 1..];
    }
    // Simple commands, split at ; & | and newlines.
    for simple in command.split(|c| ";&|\n".contains(c)) {
        let words: Vec<&str> = simple.split_whitespace().collect();
        let Some(at) = words
            .iter()
            .position(|w| !w.contains('=') && *w != "sudo" && *w != "then" && *w != "do")
        else {
            continue;
        };
        let args: Vec<&str> = words[at + 1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with('-'))
            .collect();
        let targets: Vec<&str> = match words[at] {
            "cp" | "mv" | "install" | "ln" => args.last().copied().into_iter().collect(),
            "dd" => args.iter().filter_map(|w| w.strip_prefix("of=")).collect(),
            "rm" | "rmdir" | "chmod" | "chown" | "truncate" | "touch" | "tee" | "mkdir" => args,
            "sed" if words[at + 1..].iter().any(|w| w.starts_with("-i")) => args,
            _ => Vec::new(),
        };
        if let Some(p) = targets.into_iter().find_map(owned) {
            return Some(p);
        }
    }
    None
}

/// Change a file of the device with a `sed` expression, recorded first (the file as it was is
/// kept on the device and put back when the scenario ends, or earlier by `ssh.restore`); as root.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshEdit {
    pub path: String,
    /// The `sed` expression, e.g. `s/^read_bytes_per_sec = .*/read_bytes_per_sec = 0/`.
    pub sed: String,
    /// A systemd unit restarted after the edit and again after the file is put back.
    pub restart: Option<String>,
    /// A device without the file keeps going (nothing edited, said in the step's log).
    #[serde(default)]
    pub if_exists: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshEdit {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.path.as_str(), &self.sed];
        t.extend(opt(&self.restart));
        t
    }

    fn check(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} must be absolute", self.path));
        }
        Ok(())
    }
}

/// Put a file that `ssh.put` or `ssh.edit` changed back as it was found, before the scenario
/// ends (and restart the unit its `ssh.edit` named).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRestore {
    pub path: String,
    /// Nothing recorded for the path is fine (an `ssh.edit` with `if_exists` on a device
    /// without the file).
    #[serde(default)]
    pub if_exists: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshRestore {
    fn texts(&self) -> Vec<&str> {
        vec![&self.path]
    }
}

/// Write a file on the device as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshPut {
    #[serde(rename = "as")]
    pub user: String,
    pub path: String,
    /// The file's text, or `source`: a file next to the scenario whose text is sent.
    pub content: Option<String>,
    pub source: Option<String>,
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshPut {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.user.as_str(), &self.path];
        t.extend(opt(&self.content));
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.content.is_some() == self.source.is_some() {
            return Err("give exactly one of `content` (the text) or `source` (a file next to the scenario)".into());
        }
        if let Some(m) = &self.mode {
            if u32::from_str_radix(m, 8).is_err() {
                return Err(format!("mode {m:?} is not an octal mode like 0755"));
            }
        }
        Ok(())
    }

    fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

/// `scp USER@host:remote local`, as the vendor's download line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpGet {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ScpGet {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.remote, &self.local]
    }
}

/// `scp local USER@host:remote`: a file of the scenario's work folder copied onto the device,
/// as an owner copies backup files back after setting up a new card.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpPut {
    #[serde(rename = "as")]
    pub user: String,
    pub local: String,
    pub remote: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ScpPut {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.local, &self.remote]
    }
}

/// `rsync -a` of a device directory over ssh (`sudo: true` reads it as root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsyncPull {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    #[serde(default)]
    pub sudo: bool,
    /// When rsync fails (a dropped connection), run it again with --partial until the timeout.
    #[serde(default)]
    pub resume: bool,
    /// The transfer must have met a network cut (a `fault.cut_network` froze the device while
    /// it was in flight): proof that the fault happened where it was meant to.
    #[serde(default)]
    pub expect_interrupted: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for RsyncPull {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.remote, &self.local]
    }

    fn check(&self) -> Result<(), String> {
        if self.expect_interrupted && !self.resume {
            return Err("`expect_interrupted` needs `resume` (an interrupted rsync is run again)".into());
        }
        Ok(())
    }
}

/// The vendor's setup of a backup user: `adduser`, the pkla grant, and the harness's key
/// (as `ssh-copy-id` would), run over ssh by the admin user with sudo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupUser {
    pub name: String,
    /// Actions to grant (`all` for the nine of the vendor's file; empty: none).
    #[serde(default)]
    pub grant: Vec<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SetupUser {
    fn texts(&self) -> Vec<&str> {
        vec![&self.name]
    }
}
