//! What a run found, and how it is told: the result model, JSON for tools, JUnit XML for CI,
//! and the terminal summary. Infrastructure errors are reported as such, apart from failures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// What `nexus-automation probe` prints on the device (its JSON, read as the wire format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    pub period_us: u64,
    pub io: bool,
    pub samples: u64,
    /// Ticks that started a whole period or more after their deadline.
    pub missed: u64,
    pub lateness_us: Percentiles,
    pub io_us: Option<Percentiles>,
    /// (upper bound of a log2 bucket in µs, ticks in it)
    pub lateness_buckets: Vec<(u64, u64)>,
    /// The probe's histogram at full precision, (value in µs, ticks), for pooling windows;
    /// not kept in the report.
    #[serde(default, skip_serializing)]
    pub lateness_counts: Vec<(u64, u64)>,
    #[serde(default, skip_serializing)]
    pub io_counts: Vec<(u64, u64)>,
}

impl Measured {
    /// One measurement out of several windows of the same condition: their ticks pooled into
    /// one histogram, so the percentiles are those of all the ticks together (not an average of
    /// percentiles). Needs each window's full-precision counts.
    pub fn pool(windows: &[Measured]) -> Result<Measured, String> {
        let Some(first) = windows.first() else {
            return Err("no window was measured".into());
        };
        if windows.len() == 1 {
            return Ok(first.clone());
        }
        if windows.iter().any(|w| w.samples > 0 && w.lateness_counts.is_empty()) {
            return Err("the probe on the device does not print its full histogram (an older \
                        nexus-automation): update it (rebuild the emulator image) to pool windows"
                .into());
        }
        let samples = windows.iter().map(|w| w.samples).sum();
        let lateness_counts = add_counts(windows.iter().map(|w| &w.lateness_counts));
        let io = first.io;
        let io_counts = add_counts(windows.iter().map(|w| &w.io_counts));
        let mean = |f: &dyn Fn(&Measured) -> f64| {
            windows.iter().map(|w| f(w) * w.samples as f64).sum::<f64>() / (samples as f64).max(1.0)
        };
        let lateness_us = Percentiles {
            mean: mean(&|w| w.lateness_us.mean),
            ..percentiles_of(&lateness_counts)
        };
        let io_us = io.then(|| Percentiles {
            mean: mean(&|w| w.io_us.as_ref().map_or(0.0, |p| p.mean)),
            ..percentiles_of(&io_counts)
        });
        Ok(Measured {
            period_us: first.period_us,
            io,
            samples,
            missed: windows.iter().map(|w| w.missed).sum(),
            lateness_us,
            io_us,
            lateness_buckets: add_counts(windows.iter().map(|w| &w.lateness_buckets)),
            lateness_counts,
            io_counts,
        })
    }
}

/// (value, count) lists added up, ascending by value.
fn add_counts<'a>(lists: impl Iterator<Item = &'a Vec<(u64, u64)>>) -> Vec<(u64, u64)> {
    let mut sum = std::collections::BTreeMap::new();
    for &(v, n) in lists.flatten() {
        *sum.entry(v).or_insert(0) += n;
    }
    sum.into_iter().collect()
}

/// Percentiles of ascending (value, count) pairs, as `hdrhistogram`'s `value_at_quantile`
/// computes them (the value at which the count reaches ceil(q x total)); `mean` is left 0.
fn percentiles_of(counts: &[(u64, u64)]) -> Percentiles {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let at = |q: f64| {
        let target = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts
            .iter()
            .find(|c| {
                seen += c.1;
                seen >= target
            })
            .map_or(0, |c| c.0)
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: counts.last().map_or(0, |c| c.0),
        mean: 0.0,
    }
}

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
    /// The device's `nexus-backupd` journal, attached when the scenario did not pass.
    pub journal: Option<String>,
    /// The device's file system usage and its lists of snapshots and backups, attached when
    /// the scenario did not pass.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_state: Option<String>,
    /// On a real device: what the harness removed afterwards (the scenario's snapshots, users).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub cleanup: Vec<String>,
    /// The inventory's name of the device it ran on (`--targets`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub duration_s: f64,
    pub scenarios: Vec<ScenarioReport>,
    /// An infrastructure error that stopped the run before or between scenarios.
    pub infra_error: Option<String>,
}

/// Counts by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl RunReport {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.scenarios {
            match s.outcome {
                Outcome::Passed => t.passed += 1,
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

    /// True when every scenario that ran passed and nothing broke around them.
    pub fn all_passed(&self) -> bool {
        let t = self.totals();
        t.failed == 0 && t.errors == 0 && t.passed + t.skipped > 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// JUnit XML: one test case per scenario; failures as `failure`, infrastructure as `error`.
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("nexus-hil");
        let mut suite = TestSuite::new(format!("nexus-hil {}", self.target));
        for s in &self.scenarios {
            let status = match s.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Skipped => {
                    let mut st = TestCaseStatus::skipped();
                    if let Some(r) = &s.reason {
                        st.set_message(r.as_str());
                    }
                    st
                }
                Outcome::Failed | Outcome::InfraError => {
                    let kind = if s.outcome == Outcome::Failed {
                        NonSuccessKind::Failure
                    } else {
                        NonSuccessKind::Error
                    };
                    let mut st = TestCaseStatus::non_success(kind);
                    if let Some(r) = &s.reason {
                        st.set_message(r.as_str());
                    }
                    st.set_type(if s.outcome == Outcome::Failed {
                        "failure"
                    } else {
                        "infrastructure"
                    });
                    st
                }
            };
            let mut case = TestCase::new(s.name.as_str(), status);
            case.set_classname(s.file.as_str());
            case.set_time(Duration::from_secs_f64(s.duration_s.max(0.0)));
            if s.outcome != Outcome::Passed {
                case.set_system_out(transcript(s));
                if let Some(j) = &s.journal {
                    case.set_system_err(j.as_str());
                }
            }
            suite.add_test_case(case);
        }
        if let Some(e) = &self.infra_error {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(e.as_str());
            st.set_type("infrastructure");
            suite.add_test_case(TestCase::new("nexus-hil infrastructure", st));
        }
        suite.set_time(Duration::from_secs_f64(self.duration_s.max(0.0)));
        report.add_test_suite(suite);
        report.to_string().expect("junit serializes")
    }

    /// The closing summary for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            let mark = match s.outcome {
                Outcome::Passed => "PASS ",
                Outcome::Failed => "FAIL ",
                Outcome::Skipped => "SKIP ",
                Outcome::InfraError => "ERROR",
            };
            out.push_str(&format!("{mark} {} ({:.1} s) [{}]\n", s.name, s.duration_s, s.file));
            if let Some(r) = &s.reason {
                out.push_str(&format!("      {r}\n"));
            }
        }
        if let Some(e) = &self.infra_error {
            out.push_str(&format!("ERROR infrastructure: {e}\n"));
        }
        let t = self.totals();
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped, {} infrastructure errors ({:.1} s)\n",
            t.passed, t.failed, t.skipped, t.errors, self.duration_s
        ));
        out
    }
}

/// The steps of a scenario as text, for reports.
pub fn transcript(s: &ScenarioReport) -> String {
    let mut out = String::new();
    for st in &s.steps {
        out.push_str(&format!(
            "step {} {} (line {}): {:?} in {:.2} s\n",
            st.index, st.kind, st.line, st.outcome, st.duration_s
        ));
        for l in &st.transcript {
            out.push_str(&format!("  {l}\n"));
        }
        if let Some(m) = &st.message {
            out.push_str(&format!("  => {m}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(counts: Vec<(u64, u64)>, missed: u64) -> Measured {
        let lateness_us = Percentiles {
            mean: counts.iter().map(|c| (c.0 * c.1) as f64).sum::<f64>()
                / counts.iter().map(|c| c.1).sum::<u64>() as f64,
            ..percentiles_of(&counts)
        };
        Measured {
            period_us: 10_000,
            io: true,
            samples: counts.iter().map(|c| c.1).sum(),
            missed,
            lateness_us: lateness_us.clone(),
            io_us: Some(lateness_us),
            lateness_buckets: counts.iter().map(|&(v, n)| (v.next_power_of_two(), n)).collect(),
            io_counts: counts.clone(),
            lateness_counts: counts,
        }
    }

    #[test]
    fn pooled_windows_have_the_percentiles_of_all_their_ticks() {
        // One window with 2 % of its ticks at 3 ms (its p99 is 3 ms), one without: over all
        // 2000 ticks only 1 % is that late, so the pooled p99 is 100 µs, not an average of p99s.
        let a = window(vec![(100, 980), (3000, 20)], 0);
        let b = window(vec![(90, 500), (100, 500)], 0);
        assert_eq!((a.lateness_us.p99, b.lateness_us.p99), (3000, 100));
        let p = Measured::pool(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(p.samples, 2000);
        assert_eq!(
            (
                p.lateness_us.p50,
                p.lateness_us.p99,
                p.lateness_us.p999,
                p.lateness_us.max
            ),
            (100, 100, 3000, 3000)
        );
        assert_eq!(p.io_us.as_ref().map(|io| io.p999), Some(3000));
        assert!(
            (p.lateness_us.mean - (100.0 * 980.0 + 3000.0 * 20.0 + 90.0 * 500.0 + 100.0 * 500.0) / 2000.0).abs() < 1e-9
        );
        assert_eq!(p.lateness_buckets, vec![(128, 1980), (4096, 20)]);
        // Missed periods add up: three windows with two ticks over the period each.
        let late = window(vec![(100, 998), (12_000, 2)], 2);
        let p = Measured::pool(&[late.clone(), late.clone(), late]).unwrap();
        assert_eq!((p.missed, p.lateness_us.p999, p.lateness_us.max), (6, 12_000, 12_000));
    }

    #[test]
    fn windows_without_their_full_histogram_are_not_pooled() {
        let mut old = window(vec![(100, 1000)], 0);
        old.lateness_counts.clear();
        let e = Measured::pool(&[old.clone(), old.clone()]).unwrap_err();
        assert!(e.contains("older") && e.contains("rebuild"), "{e}");
        // One window alone needs no pooling.
        assert_eq!(Measured::pool(std::slice::from_ref(&old)).unwrap(), old);
    }
}
