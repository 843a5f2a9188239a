//! What a run found, and how it is told. This module is the result model (and its JSON, for
//! tools); [`latency`] pools a probe's windows, [`junit`] writes JUnit XML for CI, [`terminal`]
//! the lines people read, [`html`] the self-contained page with its charts.
//! Infrastructure errors are reported as such, apart from failures. [`Error`]: a report that
//! cannot be read, shards that do not merge, windows that do not pool.

pub mod card;
pub mod crash;
pub(crate) mod flaky;
pub mod html;
pub(crate) mod junit;
pub(crate) mod latency;
pub(crate) mod merge;
pub mod terminal;

use serde::{Deserialize, Serialize};

pub use flaky::wilson;

/// Why a report could not be read, merged or pooled; each message names the file, the shard
/// or the window, and what to give or rebuild instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A report file is missing, unreadable, or not a nexus-hil report.
    #[error("{0}")]
    Read(String),
    /// The shards given are not the parts of one partitioned run.
    #[error("{0}")]
    Merge(String),
    /// A probe's windows cannot be pooled (an older probe without its full histogram).
    #[error("{0}")]
    Pool(String),
}

/// How a scenario (or step) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    /// The harness or the device's surroundings failed; nothing was learnt about the device.
    InfraError,
}

/// One progress sample of `backup.wait`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgressSample {
    pub at_s: f64,
    pub percent: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// One step's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    pub kind: String,
    /// Line of the step in the scenario file.
    pub line: usize,
    pub outcome: Outcome,
    pub duration_s: f64,
    /// Why it failed, when it did.
    pub message: Option<String>,
    /// What was run and what came back.
    pub transcript: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub progress: Vec<ProgressSample>,
    /// What a `probe.latency` step measured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency: Option<Latency>,
    /// With `alternate_with`: the condition measured without the load, in the windows that
    /// took turns with `latency`'s.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub baseline: Option<Latency>,
    /// What a browser step saw: its browser's start, its screenshots, and on failure the page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub browser: Option<BrowserEvidence>,
    /// What the card received while a `backup.wait` step's backup ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wear: Option<Wear>,
    /// A `fault.power_cut` with `inspect`: the card read after the cut and its checks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub card: Option<card::CardRead>,
}

/// The bytes a backup cost the device's card: what the block device under `/broot` was sent
/// (its `/sys/class/block/DEV/stat` sectors written, from the wait's start to the backup's end
/// and a `sync` of `/broot`, btrfs's metadata included) against the backup file's size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Wear {
    /// The block device, as the kernel names it (`mmcblk0p2`, `vda`, `loop3`).
    pub device: String,
    pub bytes_written: u64,
    /// Of those, what the card's other writers would have sent meanwhile (its rate without a
    /// backup, sampled right after it, times the backup's time), when sampled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub background_bytes: Option<u64>,
    pub backup_bytes: u64,
    /// Where the harness serves the card (the stand-in's write log): the bytes the card itself
    /// saw over the same span, which must agree with `bytes_written` (the guest's count).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logged_bytes: Option<u64>,
}

impl Wear {
    /// Bytes the card received for the backup (the background taken off when sampled) per byte
    /// of the backup file.
    pub fn ratio(&self) -> f64 {
        let own = self.bytes_written.saturating_sub(self.background_bytes.unwrap_or(0));
        own as f64 / self.backup_bytes.max(1) as f64
    }

    /// How far the card's own count (its write log) is from the guest's, relative to the
    /// guest's: 0.01 is 1 %.
    pub fn log_disagreement(&self) -> Option<f64> {
        let logged = self.logged_bytes? as f64;
        Some((logged - self.bytes_written as f64).abs() / (self.bytes_written.max(1) as f64))
    }
}

/// The largest failure screenshot kept inline in the report (base64 of the PNG); a larger one
/// is only named, as a file of the work folder.
pub const INLINE_SCREENSHOT_BYTES: usize = 512 * 1024;

/// A browser step's record besides its transcript.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrowserEvidence {
    /// Seconds from chromedriver's start to the browser's session being ready, on the step
    /// that started the scenario's browser.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_s: Option<f64>,
    /// PNG files the step saved in the scenario's work folder (`browser.screenshot`, or the
    /// page when it failed).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub screenshots: Vec<String>,
    /// The page when the step failed: a PNG, base64, when under [`INLINE_SCREENSHOT_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure_png: Option<String>,
    /// The page's console (Chromium's log of it) when the step failed, as `LEVEL message`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub console: Vec<String>,
}

pub use nexus_contract::probe::{Percentiles, ProbeResult as Measured};

/// One condition's latency: what was measured, under which load, and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// The condition, e.g. `idle` or `backup, default cap`.
    pub name: String,
    /// The load that ran meanwhile (`during`), if any.
    pub during: Option<String>,
    /// Each window's own p99 lateness in µs, when the ticks were pooled from windows that
    /// took turns with another condition (how much the host's noise moved it).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub window_p99_us: Vec<u64>,
    #[serde(flatten)]
    pub measured: Measured,
    pub verdict: Option<Verdict>,
}

/// This condition's p99 lateness against another's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub compare_to: String,
    /// p99 here / p99 there.
    pub ratio: f64,
    pub max_ratio: Option<f64>,
    /// Whether `ratio` is at most `max_ratio` (true when there is no threshold).
    pub met: bool,
}

/// What a device says it is: its model (the device tree's, as a Raspberry Pi gives it) and
/// its software (the OS release's name and version), each when the device tells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub software: Option<String>,
    /// `uname -r`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernel: Option<String>,
    /// The backup daemon's version line (`nexus-backupd --version`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub daemon: Option<String>,
    /// The installed packages as `dpkg-query` lists them (`name version` a line), on
    /// Debian-like systems: for the history; a report keeps one list per device (its first
    /// scenario's), so that `report merge` has it too.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub packages: Option<String>,
}

/// What differs on one device from the last run recorded as passing on it in the history:
/// the harness's commit, the daemon, the kernel and the installed packages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WhatChanged {
    pub device: String,
    /// The run compared against; `None`: the history has no passing run on this device.
    pub since: Option<PassedRun>,
    /// Each of harness, daemon, kernel that differs: (what, before, now).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub changed: Vec<(String, String, String)>,
    /// Packages installed since: (name, version).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub added: Vec<(String, String)>,
    /// Packages gone since: (name, version then).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removed: Vec<(String, String)>,
    /// Packages of another version: (name, before, now).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub upgraded: Vec<(String, String, String)>,
    /// This run's package list's hash (sha256 of `dpkg-query`'s lines), when the device has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub packages_sha256: Option<String>,
    /// Why a part could not be compared (no package list then or now).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
}

/// The passing run a device's changes are counted from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PassedRun {
    pub run_id: String,
    pub commit: String,
    /// Seconds since the epoch.
    pub started_at: i64,
}

impl WhatChanged {
    /// Nothing differs (or there was nothing to compare against).
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty() && self.upgraded.is_empty()
    }
}

/// How many of the console's last lines a scenario that did not pass shows.
pub const CONSOLE_LINES: usize = 40;

/// One scenario's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub name: String,
    pub file: String,
    pub outcome: Outcome,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    pub duration_s: f64,
    /// Emulator start-to-ready time, when an emulator was started for it.
    pub ready_s: Option<f64>,
    pub steps: Vec<StepReport>,
    /// The device's `nexus-backupd` and `nexus-controlui` journal, attached when the scenario
    /// did not pass.
    pub journal: Option<String>,
    /// The end of the device's serial console during the scenario (its last [`CONSOLE_LINES`]
    /// lines), attached when the scenario did not pass; all of it is `console.log` in its work
    /// folder.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub console: Option<String>,
    /// The device's file system usage and its lists of snapshots and backups, attached when
    /// the scenario did not pass.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_state: Option<String>,
    /// On a real device: what the harness removed afterwards (the scenario's snapshots, users).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub cleanup: Vec<String>,
    /// On a real device: the undo stopped with changes left recorded (its reason is the last
    /// `cleanup` line). The scenario fails, and JUnit says so with an `error`.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub undo_failed: bool,
    /// The inventory's name of the device it ran on (`--targets`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<String>,
    /// What the device said it is (model, software), when it said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_info: Option<DeviceInfo>,
    /// The scenario says it must run (`must_run`): a skip fails the run.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub required: bool,
    /// Which try and repetition this was (`run --retries`, `--repeat`), with its seed.
    #[serde(flatten, default)]
    pub attempt: Attempt,
}

/// One run of a scenario among several: its seed (`${seed}` in its steps), its repetition
/// (`run --repeat N`), its work folder, and the earlier tries that failed (`run --retries N`),
/// each kept whole with its own evidence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    /// The seed of this try: the run's `--seed` for a scenario's first, then one derived from
    /// it and the try's number.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<u64>,
    /// The repetition (1-based) under `run --repeat N`, N > 1.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repetition: Option<usize>,
    /// The work folder, relative to the report's, when it is not the scenario's slug.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub work: Option<String>,
    /// The earlier tries, oldest first, each of which failed; this report is the last try.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tries: Vec<ScenarioReport>,
}

impl ScenarioReport {
    /// Passed only on a retry: an earlier try failed. Never a plain pass in any report.
    pub fn flaky(&self) -> bool {
        self.outcome == Outcome::Passed && !self.attempt.tries.is_empty()
    }

    /// How many tries it took (1 without retries).
    pub fn try_count(&self) -> usize {
        self.attempt.tries.len() + 1
    }

    /// Its work folder, relative to the report's: `DEVICE/SLUG` on an inventory's device, else
    /// the slug, or the try's own folder.
    pub fn work_dir(&self) -> String {
        if let Some(w) = &self.attempt.work {
            return w.clone();
        }
        match &self.device {
            Some(d) => format!("{d}/{}", slug(&self.name)),
            None => slug(&self.name),
        }
    }

    /// How reports name it: its name, and its repetition when repeated.
    pub fn label(&self) -> String {
        match self.attempt.repetition {
            Some(r) => format!("{} (repetition {r})", self.name),
            None => self.name.clone(),
        }
    }

    /// The latency verdicts of this scenario that were missed, one line each (an earlier try's
    /// too: a retry never hides one).
    pub fn missed_verdicts(&self) -> Vec<String> {
        let earlier = self.attempt.tries.iter().enumerate().flat_map(|(i, t)| {
            t.missed_verdicts()
                .into_iter()
                .map(move |v| format!("try {}: {v}", i + 1))
        });
        let earlier: Vec<String> = earlier.collect();
        self.steps
            .iter()
            .flat_map(|st| st.baseline.iter().chain(st.latency.iter()))
            .filter_map(|l| {
                let v = l.verdict.as_ref().filter(|v| !v.met)?;
                Some(format!(
                    "{}: p99 {:.2}x that of {:?} (at most {})",
                    l.name,
                    v.ratio,
                    v.compare_to,
                    v.max_ratio.map(|m| m.to_string()).unwrap_or_default()
                ))
            })
            .chain(earlier)
            .collect()
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub duration_s: f64,
    pub scenarios: Vec<ScenarioReport>,
    /// An infrastructure error that stopped the run before or between scenarios.
    pub infra_error: Option<String>,
    /// The seed of the run's random draws (`nexus-hil run --seed` repeats them).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<u64>,
    /// The part of the suite this run was (`--partition K/N`), for `report merge`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partition: Option<(usize, usize)>,
    /// Each real device's health before the run, by its name (host for a single target).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub health: std::collections::BTreeMap<String, crate::bench::health::Health>,
    /// Per device, what differs from its last passing run in the history.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub changes: Vec<WhatChanged>,
}

/// Counts by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
    /// Of `passed`, those that passed only on a retry.
    pub flaky: usize,
}

impl RunReport {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.scenarios {
            match s.outcome {
                Outcome::Passed => {
                    t.passed += 1;
                    t.flaky += usize::from(s.flaky());
                }
                Outcome::Failed => t.failed += 1,
                Outcome::Skipped => t.skipped += 1,
                Outcome::InfraError => t.errors += 1,
            }
        }
        if self.infra_error.is_some() {
            t.errors += 1;
        }
        t
    }

    /// True when every scenario that ran passed, nothing broke around them, and at least one
    /// ran: a run in which everything was skipped proves nothing.
    pub fn all_passed(&self) -> bool {
        let t = self.totals();
        t.failed == 0 && t.errors == 0 && t.passed > 0
    }

    /// The skipped scenarios that had to run: all of them with `require_all`, else those that
    /// say `must_run`.
    pub fn required_skips(&self, require_all: bool) -> Vec<&ScenarioReport> {
        self.scenarios
            .iter()
            .filter(|s| s.outcome == Outcome::Skipped && (require_all || s.required))
            .collect()
    }

    /// The scenarios that passed only on a retry.
    pub fn flaky(&self) -> Vec<&ScenarioReport> {
        self.scenarios.iter().filter(|s| s.flaky()).collect()
    }

    /// Every missed latency verdict, with its scenario's name.
    pub fn missed_verdicts(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .flat_map(|s| s.missed_verdicts().into_iter().map(move |v| format!("{}: {v}", s.name)))
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}

/// A scenario name as a folder or anchor name: lower-case alphanumerics joined by `-`.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::Wear;

    #[test]
    fn the_cards_own_count_is_compared_with_the_guests_only_where_it_is_logged() {
        let mut w = Wear {
            device: "vda".into(),
            bytes_written: 200 << 20,
            background_bytes: Some(8 << 20),
            backup_bytes: 64 << 20,
            logged_bytes: None,
        };
        assert_eq!(w.log_disagreement(), None, "no write log: nothing to compare");
        w.logged_bytes = Some(w.bytes_written);
        assert_eq!(w.log_disagreement(), Some(0.0));
        // 2 MiB more on the card than the guest counted: 1 % of 200 MiB.
        w.logged_bytes = Some((200 << 20) + (2 << 20));
        assert!((w.log_disagreement().unwrap() - 0.01).abs() < 1e-9);
        w.logged_bytes = Some((200 << 20) - (4 << 20));
        assert!((w.log_disagreement().unwrap() - 0.02).abs() < 1e-9);
        // The ratio is the guest's count, background taken off, per byte of the backup.
        assert!((w.ratio() - 3.0).abs() < 1e-9);
    }
}
