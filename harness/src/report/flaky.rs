//! Flaky or real? A repeated scenario's passes and its failure ratio with a 95 % Wilson
//! interval (`run --repeat N`), shared by the terminal, JUnit and HTML reports.

use super::{Outcome, RunReport, ScenarioReport};

/// The z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval (95 %) of a proportion seen `k` times in `n` trials, as
/// (low, high). Unlike the normal approximation it stays within 0..1 and is not empty at 0 of n.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// One repeated scenario on one device: every try's verdict counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeated {
    pub name: String,
    pub file: String,
    pub device: Option<String>,
    /// Tries that passed.
    pub passes: usize,
    /// Tries that reached a verdict (passed or failed); skips and infrastructure errors say
    /// nothing of the scenario and are counted apart.
    pub runs: usize,
    /// Tries skipped or stopped by the infrastructure.
    pub other: usize,
}

impl Repeated {
    /// The share of the runs that failed.
    pub fn failure_ratio(&self) -> f64 {
        if self.runs == 0 {
            return 0.0;
        }
        (self.runs - self.passes) as f64 / self.runs as f64
    }

    /// The 95 % Wilson interval of the failure ratio.
    pub fn interval(&self) -> (f64, f64) {
        wilson(self.runs - self.passes, self.runs)
    }

    /// E.g. `20/30 passed, failure ratio 33.3 % (95 % interval 19.2-51.2 %, Wilson)`.
    pub fn describe(&self) -> String {
        let (lo, hi) = self.interval();
        let mut out = format!(
            "{}/{} passed, failure ratio {:.1} % (95 % interval {:.1}-{:.1} %, Wilson)",
            self.passes,
            self.runs,
            self.failure_ratio() * 100.0,
            lo * 100.0,
            hi * 100.0
        );
        if self.other > 0 {
            out.push_str(&format!(
                "; {} more skipped or stopped by the infrastructure, not counted",
                self.other
            ));
        }
        out
    }
}

/// Every try of `s` (its earlier tries first) by outcome, into `r`.
fn count(r: &mut Repeated, s: &ScenarioReport) {
    for t in s.attempt.tries.iter().chain(std::iter::once(s)) {
        match t.outcome {
            Outcome::Passed => {
                r.passes += 1;
                r.runs += 1;
            }
            Outcome::Failed => r.runs += 1,
            Outcome::Skipped | Outcome::InfraError => r.other += 1,
        }
    }
}

impl RunReport {
    /// The repeated scenarios (`run --repeat N`), per file and device, in the report's order.
    pub fn repeated(&self) -> Vec<Repeated> {
        let mut out: Vec<Repeated> = Vec::new();
        for s in self.scenarios.iter().filter(|s| s.attempt.repetition.is_some()) {
            let i = match out.iter().position(|r| r.file == s.file && r.device == s.device) {
                Some(i) => i,
                None => {
                    out.push(Repeated {
                        name: s.name.clone(),
                        file: s.file.clone(),
                        device: s.device.clone(),
                        passes: 0,
                        runs: 0,
                        other: 0,
                    });
                    out.len() - 1
                }
            };
            count(&mut out[i], s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 5e-4 && (a.1 - b.1).abs() < 5e-4
    }

    #[test]
    fn the_wilson_interval_matches_published_values() {
        // Wilson (1927); the values as R's prop.test(correct = FALSE) and statsmodels'
        // proportion_confint(method="wilson") give them.
        assert!(close(wilson(5, 10), (0.2366, 0.7634)), "{:?}", wilson(5, 10));
        assert!(close(wilson(0, 10), (0.0, 0.2775)), "{:?}", wilson(0, 10));
        assert!(close(wilson(10, 30), (0.1923, 0.5122)), "{:?}", wilson(10, 30));
        assert!(close(wilson(30, 30), (0.8865, 1.0)), "{:?}", wilson(30, 30));
        assert_eq!(wilson(0, 0), (0.0, 1.0), "no run: nothing known");
    }

    #[test]
    fn a_repeated_scenario_counts_every_try_and_sets_skips_and_errors_apart() {
        let r = Repeated {
            name: "s".into(),
            file: "s.yaml".into(),
            device: None,
            passes: 20,
            runs: 30,
            other: 2,
        };
        assert_eq!(
            r.describe(),
            "20/30 passed, failure ratio 33.3 % (95 % interval 19.2-51.2 %, Wilson); \
             2 more skipped or stopped by the infrastructure, not counted"
        );
    }

    fn scenario(name: &str, outcome: Outcome, seed: u64) -> ScenarioReport {
        ScenarioReport {
            name: name.into(),
            file: format!("{name}.yaml"),
            outcome,
            reason: (outcome != Outcome::Passed).then(|| format!("step 1 ssh.run (line 4): exit 1 with seed {seed}")),
            duration_s: 1.0,
            ready_s: None,
            steps: vec![crate::report::StepReport {
                index: 1,
                kind: "ssh.run".into(),
                line: 4,
                outcome,
                duration_s: 0.5,
                message: None,
                transcript: vec![format!("$ test $(( {seed} % 3 )) -ne 0")],
                progress: vec![],
                latency: None,
                baseline: None,
                browser: None,
                wear: None,
                card: None,
            }],
            journal: (outcome == Outcome::Failed).then(|| format!("journal of seed {seed}")),
            console: None,
            device_state: None,
            cleanup: vec![],
            undo_failed: false,
            device: None,
            device_info: None,
            required: false,
            attempt: crate::report::Attempt {
                seed: Some(seed),
                ..Default::default()
            },
        }
    }

    fn run(scenarios: Vec<ScenarioReport>) -> RunReport {
        // From JSON, so that fields other reports add keep their defaults.
        let mut r: RunReport = serde_json::from_str(
            r#"{"target": "emulator", "duration_s": 3.0, "scenarios": [], "infra_error": null, "seed": 3}"#,
        )
        .unwrap();
        r.scenarios = scenarios;
        r
    }

    /// A scenario that passed on its second try, one that failed both, one stopped by the
    /// infrastructure after a failure: every report tells the first apart from a plain pass,
    /// and a JUnit reader (quick-junit's, as nextest reads it; Jenkins and GitLab take the
    /// same Surefire shape) sees a pass with a flakyFailure, and failures with their reruns.
    #[test]
    fn a_pass_on_a_retry_is_flaky_in_every_report_and_never_a_plain_pass() {
        use quick_junit::{NonSuccessKind, Report, TestCaseStatus};
        let mut flaky = scenario("flaky", Outcome::Passed, 9);
        flaky.attempt.tries = vec![scenario("flaky", Outcome::Failed, 3)];
        flaky.attempt.tries[0].attempt.work = Some("flaky".into());
        flaky.attempt.work = Some("flaky.try-2".into());
        let mut real = scenario("real", Outcome::Failed, 6);
        real.attempt.tries = vec![scenario("real", Outcome::Failed, 3)];
        let mut infra = scenario("infra", Outcome::InfraError, 5);
        infra.attempt.tries = vec![scenario("infra", Outcome::Failed, 3)];
        let r = run(vec![flaky, real, infra, scenario("plain", Outcome::Passed, 3)]);

        let t = r.totals();
        assert_eq!((t.passed, t.flaky, t.failed, t.errors), (2, 1, 1, 1));
        let summary = r.summary();
        assert!(summary.contains("FLAKY flaky (1.0 s)"), "{summary}");
        assert!(
            summary.contains("try 1 of 2 failed (seed 3): step 1 ssh.run"),
            "{summary}"
        );
        assert!(
            summary.contains("2 passed (1 FLAKY: passed only on a retry)"),
            "{summary}"
        );
        assert!(summary.contains("FLAKY: flaky\n"), "{summary}");
        assert!(summary.contains("PASS  plain"), "{summary}");

        let page = crate::report::html::render(&r);
        assert!(page.contains("FLAKY: passed on try 2 of 2"), "{page}");
        assert!(
            page.contains("<summary>try 1 of 2: failed (seed 3): step 1 ssh.run"),
            "{page}"
        );
        assert!(
            page.contains("$ test $(( 3 % 3 )) -ne 0"),
            "the failed try's transcript: {page}"
        );
        assert!(page.contains("failed on every try (2)"), "{page}");

        let json: RunReport = serde_json::from_str(&r.to_json()).unwrap();
        assert!(json.scenarios[0].flaky() && json.scenarios[0].attempt.tries[0].attempt.seed == Some(3));

        let xml = r.to_junit();
        let parsed = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        let cases = &parsed.test_suites[0].test_cases;
        let status = |name: &str| &cases.iter().find(|c| c.name.as_str() == name).unwrap().status;
        match status("flaky") {
            TestCaseStatus::Success { flaky_runs } => {
                assert_eq!(flaky_runs.len(), 1);
                assert_eq!(flaky_runs[0].kind, NonSuccessKind::Failure);
                let out = flaky_runs[0].system_out.as_ref().unwrap().as_str();
                assert!(out.contains("seed 3") && out.contains("$ test $(( 3 % 3 ))"), "{out}");
                assert!(flaky_runs[0].stack_trace.as_ref().unwrap().as_str().contains("exit 1"));
            }
            other => panic!("flaky is {other:?}"),
        }
        assert!(xml.contains("<flakyFailure"), "{xml}");
        match status("real") {
            TestCaseStatus::NonSuccess { kind, reruns, .. } => {
                assert_eq!(*kind, NonSuccessKind::Failure);
                assert_eq!(reruns.runs.len(), 1, "the earlier try as a rerunFailure");
            }
            other => panic!("real is {other:?}"),
        }
        assert!(
            matches!(
                status("infra"),
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Error,
                    ..
                }
            ),
            "an infrastructure error after a failure is an error, never a pass"
        );
        assert!(matches!(status("plain"), TestCaseStatus::Success { flaky_runs } if flaky_runs.is_empty()));

        // --flaky-fails: a failure too, its failed tries still flakyFailure.
        let xml = r.to_junit_with(crate::report::junit::Flaky::Fails);
        let parsed = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        let case = parsed.test_suites[0]
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == "flaky")
            .unwrap();
        match &case.status {
            TestCaseStatus::NonSuccess { kind, reruns, ty, .. } => {
                assert_eq!(*kind, NonSuccessKind::Failure);
                assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("flaky"));
                assert_eq!(reruns.kind, quick_junit::FlakyOrRerun::Flaky);
                assert_eq!(reruns.runs.len(), 1);
            }
            other => panic!("with --flaky-fails flaky is {other:?}"),
        }
    }

    #[test]
    fn repetitions_give_passes_of_n_and_the_failure_ratio_in_every_report() {
        let mut all: Vec<ScenarioReport> = (1..=30)
            .map(|i| {
                let mut s = scenario(
                    "one in three",
                    if i % 3 == 0 { Outcome::Failed } else { Outcome::Passed },
                    i,
                );
                s.attempt.repetition = Some(i as usize);
                s
            })
            .collect();
        all.push(scenario("once", Outcome::Passed, 1));
        let r = run(all);
        let rep = r.repeated();
        assert_eq!(rep.len(), 1, "only the repeated scenario: {rep:?}");
        assert_eq!((rep[0].passes, rep[0].runs), (20, 30));
        let line = "20/30 passed, failure ratio 33.3 % (95 % interval 19.2-51.2 %, Wilson)";
        assert!(
            r.summary().contains(&format!("REPEATED one in three: {line}")),
            "{}",
            r.summary()
        );
        assert!(
            r.summary().contains("FAIL  one in three (repetition 3)"),
            "{}",
            r.summary()
        );
        let xml = r.to_junit();
        assert!(
            xml.contains(&format!("name=\"repeated: one in three\" value=\"{line}\"")),
            "{xml}"
        );
        let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(parsed.test_suites[0].test_cases.len(), 31, "a case per repetition");
        let page = crate::report::html::render(&r);
        assert!(
            page.contains("<td>20/30</td><td>33.3 %</td><td>19.2-51.2 %</td>"),
            "{page}"
        );
        assert!(page.contains("id=\"one-in-three-repetition-30\""), "{page}");
    }
}
