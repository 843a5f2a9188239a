//! `probe.latency`: the measuring step, timing the home-automation loop on the device, alone or
//! under a load, and in windows alternating with its unloaded condition.

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Measures the home-automation loop's timing on the device for a while (`nexus-automation
/// probe`): lateness against its absolute schedule and each tick's I/O, as percentiles, missed
/// periods and a histogram, under the name of the condition it was taken in. With `during`, a
/// shell command (as root) runs in the background for the probe's time, after `settle`: the load
/// whose effect is measured. With `compare_to` (an earlier probe's name) and `max_p99_ratio`, the
/// report gives the verdict of this p99 against that one's; a verdict is reported, it does not
/// fail the scenario (timings are not pass/fail). With `alternate_with`, the step measures two
/// conditions in turns, `windows` windows each: without the load (recorded under
/// `alternate_with`, measured first) and with it (under `name`), `for / windows` per window;
/// each condition's ticks are pooled over its windows, and the verdict compares the two. Both
/// conditions then meet the same background noise of the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeLatency {
    pub name: String,
    #[serde(rename = "for", deserialize_with = "duration::required")]
    pub duration: Duration,
    /// Tick period (default 10ms).
    #[serde(default, deserialize_with = "duration::optional")]
    pub period: Option<Duration>,
    /// The tick's I/O (sensor reads, state appends, fdatasync); `false`: the timer alone.
    #[serde(default = "yes")]
    pub load: bool,
    pub during: Option<String>,
    /// Time the `during` load runs before measuring starts (default 2s).
    #[serde(default, deserialize_with = "duration::optional")]
    pub settle: Option<Duration>,
    pub compare_to: Option<String>,
    pub max_p99_ratio: Option<f64>,
    /// The name of the condition without the load, measured in windows that alternate with
    /// the loaded ones (needs `during`; this probe's verdict compares to it).
    pub alternate_with: Option<String>,
    /// Windows per condition with `alternate_with` (default 6).
    pub windows: Option<u32>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl ProbeLatency {
    /// Windows per condition: 1 without `alternate_with`.
    pub fn windows(&self) -> u32 {
        match (&self.alternate_with, self.windows) {
            (None, _) => 1,
            (Some(_), w) => w.unwrap_or(6),
        }
    }

    /// Rules of `alternate_with`: it needs the load, a name of its own, and windows of 1s or more.
    fn check_alternation(&self, other: &str) -> Result<(), String> {
        if self.during.is_none() {
            return Err("`alternate_with` names the condition without the `during` load; give `during` too".into());
        }
        if self.compare_to.is_some() {
            return Err("`alternate_with` is what this probe compares to; drop `compare_to`".into());
        }
        if other == self.name {
            return Err(format!(
                "`alternate_with` needs a name of its own, not this probe's {other:?}"
            ));
        }
        let n = self.windows();
        if !(2..=100).contains(&n) {
            return Err(format!("`windows`: use 2..100, not {n}"));
        }
        if self.duration / n < Duration::from_secs(1) {
            return Err(format!(
                "`for` {:?} in {n} windows leaves under 1s per window; use fewer windows or a longer `for`",
                self.duration
            ));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

impl StepSpec for ProbeLatency {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.name.as_str()];
        t.extend(opt(&self.during));
        t.extend(opt(&self.compare_to));
        t.extend(opt(&self.alternate_with));
        t
    }

    fn check(&self) -> Result<(), String> {
        for (key, d) in [("for", Some(self.duration)), ("period", self.period)] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(format!("`{key}` must be more than zero"));
            }
        }
        if self.max_p99_ratio.is_some() && self.compare_to.is_none() && self.alternate_with.is_none() {
            return Err("`max_p99_ratio` needs `compare_to` (the name of an earlier probe) or `alternate_with`".into());
        }
        if self.windows.is_some() && self.alternate_with.is_none() {
            return Err("`windows` splits a probe that alternates with its unloaded condition; give `alternate_with` (its name) too".into());
        }
        if let Some(other) = &self.alternate_with {
            self.check_alternation(other)?;
        }
        if self.max_p99_ratio.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("`max_p99_ratio` is a ratio above 0, like 1.2".into());
        }
        if self.settle.is_some() && self.during.is_none() {
            return Err("`settle` is the time the `during` load runs first; give `during` too".into());
        }
        Ok(())
    }
}
