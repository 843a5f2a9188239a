//! Flaky or real, over runs: every try's outcome kept in the history (each repetition and
//! retry, by commit and device), and the scenarios whose outcomes differ on one commit and
//! device (`nexus-hil history flaky`). Only passes and failures count: a skip or an
//! infrastructure error says nothing of the scenario.

use std::collections::BTreeMap;

use crate::report::{Outcome, RunReport};

/// One try's outcome, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The scenario's name.
    pub scenario: String,
    /// Its repetition (1 without `--repeat`).
    pub repetition: usize,
    /// Its try (1 for the first).
    pub try_no: usize,
    pub outcome: Outcome,
    pub seed: Option<u64>,
}

/// The word an outcome is kept as.
pub fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
        Outcome::InfraError => "infra_error",
    }
}

/// Every try of every scenario of `report`, by the device it ran on (`target` for a run
/// without an inventory).
pub fn rows(report: &RunReport) -> BTreeMap<String, Vec<Row>> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for s in &report.scenarios {
        let device = s.device.clone().unwrap_or_else(|| report.target.clone());
        let repetition = s.attempt.repetition.unwrap_or(1);
        let tries = s.attempt.tries.iter().chain(std::iter::once(s));
        out.entry(device)
            .or_default()
            .extend(tries.enumerate().map(|(i, t)| Row {
                scenario: s.name.clone(),
                repetition,
                try_no: i + 1,
                outcome: t.outcome,
                seed: t.attempt.seed,
            }));
    }
    out
}

/// A kept outcome with where it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub commit: String,
    pub device: String,
    pub scenario: String,
    pub outcome: String,
}

/// A scenario that both passed and failed on one commit and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaky {
    pub scenario: String,
    pub commit: String,
    pub device: String,
    pub passed: usize,
    pub failed: usize,
}

impl Flaky {
    /// As the repeated scenarios in a run's report: passes of the verdicts, the failure ratio
    /// and its 95 % interval.
    pub fn describe(&self) -> String {
        crate::report::flaky::Repeated {
            name: self.scenario.clone(),
            file: String::new(),
            device: Some(self.device.clone()),
            passes: self.passed,
            runs: self.passed + self.failed,
            other: 0,
        }
        .describe()
    }
}

/// The scenarios whose outcomes differ on the same commit and device, in the order first seen.
pub fn flaky(seen: &[Seen]) -> Vec<Flaky> {
    let mut all: Vec<Flaky> = Vec::new();
    for s in seen {
        let (passed, failed) = match s.outcome.as_str() {
            "passed" => (1, 0),
            "failed" => (0, 1),
            _ => continue,
        };
        match all
            .iter_mut()
            .find(|f| f.scenario == s.scenario && f.commit == s.commit && f.device == s.device)
        {
            Some(f) => {
                f.passed += passed;
                f.failed += failed;
            }
            None => all.push(Flaky {
                scenario: s.scenario.clone(),
                commit: s.commit.clone(),
                device: s.device.clone(),
                passed,
                failed,
            }),
        }
    }
    all.retain(|f| f.passed > 0 && f.failed > 0);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(commit: &str, device: &str, scenario: &str, outcome: &str) -> Seen {
        Seen {
            commit: commit.into(),
            device: device.into(),
            scenario: scenario.into(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn only_outcomes_that_differ_on_one_commit_and_device_are_flaky() {
        let all = [
            // Passed and failed on one commit and device: flaky.
            seen("c1", "pi-1", "flaky", "passed"),
            seen("c1", "pi-1", "flaky", "failed"),
            seen("c1", "pi-1", "flaky", "passed"),
            // Failed every time: a real failure, not flaky.
            seen("c1", "pi-1", "broken", "failed"),
            seen("c1", "pi-1", "broken", "failed"),
            // Differs only between commits (fixed by c2) or between devices: not flaky.
            seen("c1", "pi-1", "fixed", "failed"),
            seen("c2", "pi-1", "fixed", "passed"),
            seen("c1", "pi-1", "one device", "failed"),
            seen("c1", "pi-2", "one device", "passed"),
            // The infrastructure's trouble and a skip say nothing of the scenario.
            seen("c1", "pi-1", "bench", "passed"),
            seen("c1", "pi-1", "bench", "infra_error"),
            seen("c1", "pi-1", "bench", "skipped"),
        ];
        let f = flaky(&all);
        assert_eq!(
            f,
            [Flaky {
                scenario: "flaky".into(),
                commit: "c1".into(),
                device: "pi-1".into(),
                passed: 2,
                failed: 1
            }]
        );
        assert!(
            f[0].describe().starts_with("2/3 passed, failure ratio 33.3 %"),
            "{}",
            f[0].describe()
        );
    }
}
