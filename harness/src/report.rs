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
}

/// One condition's latency: what was measured, under which load, and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// The condition, e.g. `idle` or `backup, default cap`.
    pub name: String,
    /// The load that ran meanwhile (`during`), if any.
    pub during: Option<String>,
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
