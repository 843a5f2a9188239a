//! JUnit XML for CI: one test case per scenario; failures as `failure`, infrastructure as
//! `error`, skips as `skipped`, each non-passing case with its transcript and journal.

use std::time::Duration;

use super::terminal::transcript;
use super::{Outcome, RunReport};

impl RunReport {
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
                    st
                }
            };
            let mut case = TestCase::new(s.name.as_str(), status);
            case.set_classname(s.file.as_str());
            case.set_time(Duration::from_secs_f64(s.duration_s.max(0.0)));
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
