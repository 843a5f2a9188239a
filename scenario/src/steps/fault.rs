//! Fault steps, for the emulator only: killing, restarting or rebooting the daemon's device,
//! filling its disk, cutting its network and slowing its SD card.

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

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
/// is powered on again (unless `stay_off`) and the step waits for SSH and the daemon. With
/// `at_percent` and `id` the cut comes when the running backup of `id` has reached that progress.
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
    #[serde(default)]
    pub stay_off: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for PowerCut {
    fn texts(&self) -> Vec<&str> {
        opt(&self.id).into_iter().collect()
    }

    fn check(&self) -> Result<(), String> {
        match self.at_percent_between {
            Some(_) if self.at_percent.is_some() => Err("give `at_percent` or `at_percent_between`, not both".into()),
            Some((lo, hi)) if lo > hi || hi > 100 => Err(format!(
                "`at_percent_between: [{lo}, {hi}]`: give [low, high] with low <= high <= 100"
            )),
            Some(_) if self.id.is_none() => {
                Err("`at_percent_between` needs `id` (the snapshot being backed up)".into())
            }
            Some(_) => Ok(()),
            None => at_percent_with_id(self.at_percent, &self.id),
        }
    }
}

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
