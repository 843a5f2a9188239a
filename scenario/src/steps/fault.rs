//! Fault steps, for devices the harness controls: killing, restarting or rebooting the daemon's
//! device, filling its disk, cutting its network, slowing its SD card, cutting its power (at a
//! backup's percent or a seeded delay, during another step), replacing its card and making the
//! card fail requests (I/O errors).

use std::time::Duration;

use marked_yaml::Spanned;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{opt, Step, StepSpec};
use crate::duration::{self, parse_duration};

/// A fault: kill or restart `nexus-backupd`, or reboot the device. With `at_percent` the fault
/// waits until the running backup of snapshot `id` has reached that progress. Emulator only; on
/// a real device the scenario is skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    pub at_percent: Option<u8>,
    pub id: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for FaultStep {
    fn texts(&self) -> Vec<&str> {
        opt(&self.id).into_iter().collect()
    }

    fn check(&self) -> Result<(), String> {
        at_percent_with_id(self.at_percent, &self.id)
    }
}

/// A fault's `at_percent` names the progress of the backup of `id`: one needs the other.
fn at_percent_with_id(at_percent: Option<u8>, id: &Option<String>) -> Result<(), String> {
    if at_percent.is_some() != id.is_some() {
        return Err("`at_percent` and `id` (the snapshot being backed up) go together".into());
    }
    Ok(())
}

/// Cuts the device's power: every write it had not flushed is lost, as on an SD card. Then it
/// is powered on again (unless `stay_off`) and the step waits for SSH and the daemon. The cut
/// comes at once, or when the running backup of `id` reaches `at_percent`, or `after` a delay;
/// with `during`, the delay runs from the start of that step, which the cut must meet.
/// Needs a target whose power the harness owns (`--target standin`); elsewhere the scenario is
/// skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCut {
    pub at_percent: Option<u8>,
    /// Instead of `at_percent`: a percent drawn from this range with the run's seed
    /// (`nexus-hil run --seed`; the report names it), so cuts land at many points over runs
    /// and any one can be repeated.
    pub at_percent_between: Option<(u8, u8)>,
    pub id: Option<String>,
    /// The cut comes this long after the step starts (after `during` starts, when given).
    #[serde(default, deserialize_with = "duration::optional")]
    pub after: Option<Duration>,
    /// Instead of `after`: a delay drawn from `[low, high]` with the run's seed.
    #[serde(default, deserialize_with = "duration_pair")]
    pub after_between: Option<(Duration, Duration)>,
    /// A step started when the delay starts; the power goes while it runs (the step fails if
    /// it ended first). What it does is cut off, so its own failure is expected, not checked.
    pub during: Option<Box<Spanned<Step>>>,
    #[serde(default)]
    pub stay_off: bool,
    /// Read the card as the cut left it, before the power comes back: on a bench whose card an
    /// SD mux switches to this machine, its btrfs partition imaged into the work folder and
    /// checked as `crash-states` checks a state (the backups decrypted with the scenario's
    /// password variables); then the card goes back and the power on. Elsewhere the scenario
    /// is skipped with the reason.
    #[serde(default)]
    pub inspect: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

/// The steps a power cut can come `during`: those that talk to the device and end by
/// themselves, and capture nothing (a step cut off has nothing to capture).
pub const CUT_DURING: &[&str] = &["dbus.call", "ssh.run", "http.get", "scp.get", "rsync.pull"];

impl StepSpec for PowerCut {
    fn texts(&self) -> Vec<&str> {
        let mut t: Vec<&str> = opt(&self.id).into_iter().collect();
        if let Some(d) = &self.during {
            t.extend(d.texts());
        }
        t
    }

    fn check(&self) -> Result<(), String> {
        let percent = self.at_percent.is_some() || self.at_percent_between.is_some();
        let delay = self.after.is_some() || self.after_between.is_some();
        if percent && delay {
            return Err("give a backup's percent (`at_percent`, `at_percent_between`) or a delay (`after`, `after_between`), not both".into());
        }
        if self.inspect && self.stay_off {
            return Err("`inspect` powers the device on again after the card is read; remove `stay_off`".into());
        }
        if self.after.is_some() && self.after_between.is_some() {
            return Err("give `after` or `after_between`, not both".into());
        }
        if let Some((lo, hi)) = self.after_between {
            if lo > hi {
                return Err(format!(
                    "`after_between: [{lo:?}, {hi:?}]`: give [low, high] with low <= high"
                ));
            }
        }
        if let Some(d) = &self.during {
            if !delay {
                return Err(
                    "`during` needs `after` or `after_between`: how long after it starts the power goes".into(),
                );
            }
            let kind = d.kind();
            if !CUT_DURING.contains(&kind) {
                return Err(format!(
                    "`during`: a power cut can come during {}, not {kind}",
                    CUT_DURING.join(", ")
                ));
            }
            if d.captures().is_some() {
                return Err(format!(
                    "`during`: {kind}: a step the power cuts off captures nothing; remove its `capture`"
                ));
            }
            d.check().map_err(|e| format!("`during`: {kind}: {e}"))?;
        }
        match self.at_percent_between {
            Some(_) if self.at_percent.is_some() => Err("give `at_percent` or `at_percent_between`, not both".into()),
            Some((lo, hi)) if lo > hi || hi > 100 => Err(format!(
                "`at_percent_between: [{lo}, {hi}]`: give [low, high] with low <= high <= 100"
            )),
            Some(_) if self.id.is_none() => {
                Err("`at_percent_between` needs `id` (the snapshot being backed up)".into())
            }
            Some(_) => Ok(()),
            None if delay && self.id.is_some() => {
                Err("`id` goes with `at_percent`; a cut `after` a delay needs none".into())
            }
            None if delay => Ok(()),
            None => at_percent_with_id(self.at_percent, &self.id),
        }
    }
}

/// `#[serde(default, deserialize_with)]` for `[low, high]`, two durations.
fn duration_pair<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(Duration, Duration)>, D::Error> {
    let Some((lo, hi)) = Option::<(String, String)>::deserialize(d)? else {
        return Ok(None);
    };
    let lo = parse_duration(&lo).map_err(D::Error::custom)?;
    let hi = parse_duration(&hi).map_err(D::Error::custom)?;
    Ok(Some((lo, hi)))
}

/// The device's SD card dies and a new one is set up: the device is powered off, its card
/// replaced by a fresh copy of the card image it was first given (the system, users and keys
/// stay: on the targets that can have this, they are not on the card), and powered on again.
/// Needs a target whose card the harness holds (`--target standin`, the emulator) or a bench
/// device its inventory marks `throwaway` with an SD mux and a `new_card` image, which is
/// written onto the card; on another real device the card swap is the operator's and the
/// scenario is skipped with that reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceCard {
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ReplaceCard {}

/// Fills /broot until only `leave_bytes` are free, with the ballast file
/// `/broot/.nexus-hil-ballast` (outside every subvolume; remove it to free the space). Emulator only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillDisk {
    pub leave_bytes: u64,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for FillDisk {}

/// After `after`, the device stops answering on its published ports for `for` (the emulator is
/// frozen, so open connections stall rather than close); runs in the background, so the next
/// steps meet the cut mid-transfer. Emulator only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutNetwork {
    #[serde(deserialize_with = "duration::required")]
    pub after: Duration,
    #[serde(rename = "for", deserialize_with = "duration::required")]
    pub duration: Duration,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for CutNetwork {}

/// Throttles the SD card: reads (and synchronous writes) of the device that holds /broot are
/// limited to these many bytes per second, through the blkio controller (cgroup v1) or `io.max`
/// (cgroup v2) of the emulator's container; 0 lifts the limit. Emulator only; where the host
/// has neither controller the scenario is skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowIo {
    pub read_bytes_per_sec: u64,
    #[serde(default)]
    pub write_bytes_per_sec: u64,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SlowIo {}

/// The kinds of request `fault.io_error` can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoKind {
    Write,
    Flush,
}

/// Where on the card `fault.io_error`'s writes fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoWhere {
    /// Every write, wherever it goes: btrfs's own metadata is among the first.
    #[default]
    Anywhere,
    /// Only writes to where the running backup's data goes next: the card's sectors after the
    /// last extent of its partial file in that data chunk, and the card's unallocated space
    /// (where a new data chunk comes); never btrfs's metadata, so the file system stays
    /// writable and the backup's own syncs are what meet the error.
    BackupData,
}

/// Most requests one `fault.io_error` may fail.
pub const MAX_IO_ERRORS: u32 = 10_000;

/// The device's SD card fails requests with EIO, as a worn card or a loose contact does: the
/// next `count` requests of each kind in `what` fail, then the card works again (or when the
/// window ends before). The errors come at once, when the running backup of `id` reaches
/// `at_percent`, or `after` a delay; with `during`, the delay runs from the start of that step,
/// the card fails while it runs and heals when it ends; without, the card fails for at most
/// `for` (default 30 s). With `where: backup_data` only the writes to where the running
/// backup's data goes fail. Needs a target whose card the harness serves (`--target standin`);
/// elsewhere the scenario is skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoError {
    pub what: Vec<IoKind>,
    #[serde(default = "one")]
    pub count: u32,
    /// Which writes fail (`where: backup_data` needs `at_percent` and `id`, and only writes).
    #[serde(rename = "where", default)]
    pub place: IoWhere,
    pub at_percent: Option<u8>,
    pub id: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub after: Option<Duration>,
    /// A step started when the delay starts, during which the card fails; it must pass by its
    /// own expectations (an `expect_error`, a `backup.wait`'s `expect_result`).
    pub during: Option<Box<Spanned<Step>>>,
    #[serde(rename = "for", default, deserialize_with = "duration::optional")]
    pub window: Option<Duration>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

fn one() -> u32 {
    1
}

/// The steps the card can fail `during`: those that make the device write and end by
/// themselves, and capture nothing.
pub const IO_ERROR_DURING: &[&str] = &["dbus.call", "backup.wait", "ssh.run"];

impl StepSpec for IoError {
    fn texts(&self) -> Vec<&str> {
        let mut t: Vec<&str> = opt(&self.id).into_iter().collect();
        if let Some(d) = &self.during {
            t.extend(d.texts());
        }
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.what.is_empty() {
            return Err("`what`: name the requests to fail: [write], [flush] or [write, flush]".into());
        }
        if self.what.len() == 2 && self.what[0] == self.what[1] {
            return Err("`what`: each kind once: [write], [flush] or [write, flush]".into());
        }
        if self.count == 0 || self.count > MAX_IO_ERRORS {
            return Err(format!(
                "`count: {}`: give how many requests fail, 1 to {MAX_IO_ERRORS}",
                self.count
            ));
        }
        if self.at_percent.is_some() && self.after.is_some() {
            return Err("give a backup's percent (`at_percent`) or a delay (`after`), not both".into());
        }
        if let Some(d) = &self.during {
            if self.at_percent.is_some() {
                return Err("`during` goes with `after` (from its start), not `at_percent`".into());
            }
            if self.window.is_some() {
                return Err("`for`: with `during` the card heals when that step ends; remove `for`".into());
            }
            let kind = d.kind();
            if !IO_ERROR_DURING.contains(&kind) {
                return Err(format!(
                    "`during`: the card can fail during {}, not {kind}",
                    IO_ERROR_DURING.join(", ")
                ));
            }
            if d.captures().is_some() {
                return Err(format!(
                    "`during`: {kind}: remove its `capture`; capture in a step of its own"
                ));
            }
            d.check().map_err(|e| format!("`during`: {kind}: {e}"))?;
        }
        if self.place == IoWhere::BackupData {
            if self.what != [IoKind::Write] {
                return Err("`where: backup_data` fails writes only: `what: [write]`".into());
            }
            if self.at_percent.is_none() {
                return Err(
                    "`where: backup_data` needs the running backup: give `at_percent` and `id` (its data must be on \
                     the card to be found)"
                        .into(),
                );
            }
        }
        at_percent_with_id(self.at_percent, &self.id)
    }
}
