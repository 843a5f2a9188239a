//! JUnit XML for CI: one test case per scenario (per repetition under `run --repeat`);
//! failures as `failure`, infrastructure as `error`, skips as `skipped`, each non-passing case
//! with its transcript and journal. Earlier tries (`run --retries`) follow the Maven Surefire
//! convention that Jenkins, GitLab and nextest read: a case that passed on a retry is a pass
//! with a `flakyFailure` per failed try (with `--flaky-fails` a `failure` too), one that never
//! passed a `failure` or `error` with a `rerunFailure` per earlier try; each holds that try's
//! transcript (`system-out`), journal (`system-err`) and why it failed (`stackTrace`).

use std::time::Duration;

use quick_junit::{FlakyOrRerun, NonSuccessKind, TestRerun};

use super::terminal::{transcript, tries_line};
use super::{Outcome, RunReport, ScenarioReport};

/// How a scenario that passed only on a retry counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flaky {
    /// A pass with its failed tries as `flakyFailure` (Surefire's and nextest's default).
    #[default]
    Passes,
    /// A `failure` with its failed tries as `flakyFailure` (`run --flaky-fails`).
    Fails,
}

/// One earlier try as a `flakyFailure` or `rerunFailure` element.
fn rerun(t: &ScenarioReport) -> TestRerun {
    let kind = if t.outcome == Outcome::Failed && !t.undo_failed {
        NonSuccessKind::Failure
    } else {
        NonSuccessKind::Error
    };
    let mut r = TestRerun::new(kind);
    r.set_time(Duration::from_secs_f64(t.duration_s.max(0.0)));
    r.set_type(if kind == NonSuccessKind::Failure {
        "failure"
    } else {
        "error"
    });
    if let Some(why) = &t.reason {
        r.set_message(why.as_str());
        r.set_stack_trace(why.as_str());
    }
    let seed = t.attempt.seed.map(|n| format!("seed {n}\n")).unwrap_or_default();
    r.set_system_out(format!("{seed}{}", transcript(t)));
    if let Some(j) = &t.journal {
        r.set_system_err(j.as_str());
    }
    r
}

impl RunReport {
    /// JUnit XML: one test case per scenario; failures as `failure`, infrastructure as `error`,
    /// a scenario that passed on a retry a pass with its `flakyFailure`s.
    pub fn to_junit(&self) -> String {
        self.to_junit_with(Flaky::Passes)
    }

    /// JUnit XML, a scenario that passed only on a retry counted as `flaky` says.
    pub fn to_junit_with(&self, flaky: Flaky) -> String {
        use quick_junit::{Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("nexus-hil");
        let mut suite = TestSuite::new(format!("nexus-hil {}", self.target));
        for r in self.repeated() {
            let on = r.device.as_deref().map(|d| format!(" on {d}")).unwrap_or_default();
            suite.add_property(quick_junit::Property::new(
                format!("repeated: {}{on}", r.name),
                r.describe(),
            ));
        }
        for s in &self.scenarios {
            let reruns: Vec<TestRerun> = s.attempt.tries.iter().map(rerun).collect();
            let status = match s.outcome {
                Outcome::Passed if s.flaky() && flaky == Flaky::Fails => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(format!("flaky (--flaky-fails): {}", tries_line(s)));
                    st.set_type("flaky");
                    st.set_rerun_kind(FlakyOrRerun::Flaky);
                    st.add_reruns(reruns);
                    st
                }
                Outcome::Passed => {
                    let mut st = TestCaseStatus::success();
                    st.add_reruns(reruns);
                    st
                }
                Outcome::Skipped => {
                    let mut st = TestCaseStatus::skipped();
                    if let Some(r) = &s.reason {
                        st.set_message(r.as_str());
                    }
                    st
                }
                Outcome::Failed | Outcome::InfraError => {
                    // An undo that failed is an error whatever the steps said: the device was
                    // not left as it was found.
                    let kind = if s.outcome == Outcome::Failed && !s.undo_failed {
                        NonSuccessKind::Failure
                    } else {
                        NonSuccessKind::Error
                    };
                    let mut st = TestCaseStatus::non_success(kind);
                    if let Some(r) = &s.reason {
                        st.set_message(r.as_str());
                    }
                    st.set_type(match (s.undo_failed, s.outcome) {
                        (true, _) => "undo",
                        (false, Outcome::Failed) => "failure",
                        _ => "infrastructure",
                    });
                    // Tries that failed before this one: reruns, never a pass.
                    st.set_rerun_kind(FlakyOrRerun::Rerun);
                    st.add_reruns(reruns);
                    st
                }
            };
            let mut case = TestCase::new(s.label(), status);
            case.set_classname(s.file.as_str());
            case.set_time(Duration::from_secs_f64(s.duration_s.max(0.0)));
            if let Some(n) = s.attempt.seed {
                case.properties.push(quick_junit::Property::new("seed", n.to_string()));
            }
            if s.flaky() {
                case.properties.push(quick_junit::Property::new("flaky", tries_line(s)));
            }
            // A missed verdict does not fail the case, but CI shows it: a property and a line.
            let missed = s.missed_verdicts();
            for v in &missed {
                case.properties
                    .push(quick_junit::Property::new("verdict-missed", v.as_str()));
            }
            if s.outcome == Outcome::Passed && !missed.is_empty() {
                case.set_system_out(
                    missed
                        .iter()
                        .map(|v| format!("verdict missed: {v}\n"))
                        .collect::<String>(),
                );
            }
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
}
