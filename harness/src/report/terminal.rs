//! What people read in the terminal: a line per finished scenario, the closing summary, and a
//! scenario's steps as text (also JUnit's system-out).

use super::{Outcome, RunReport, ScenarioReport};

/// The mark of an outcome in the terminal.
fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "PASS ",
        Outcome::Failed => "FAIL ",
        Outcome::Skipped => "SKIP ",
        Outcome::InfraError => "ERROR",
    }
}

/// The line printed when a scenario finishes (with its missed verdicts, if any).
pub fn result_line(r: &ScenarioReport) -> String {
    let mut line = match &r.device {
        Some(d) => format!("{} {} ({:.1} s on {d})", mark(r.outcome), r.name, r.duration_s),
        None => format!("{} {} ({:.1} s)", mark(r.outcome), r.name, r.duration_s),
    };
    for v in r.missed_verdicts() {
        line.push_str(&format!("\n      verdict missed: {v}"));
    }
    line
}

impl RunReport {
    /// The closing summary for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            out.push_str(&format!(
                "{} {} ({:.1} s) [{}]\n",
                mark(s.outcome),
                s.name,
                s.duration_s,
                s.file
            ));
            if let Some(r) = &s.reason {
                out.push_str(&format!("      {r}\n"));
            }
            for v in s.missed_verdicts() {
                out.push_str(&format!("      verdict missed: {v}\n"));
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
        if let Some(seed) = self.seed {
            out.push_str(&format!(
                "seed {seed} (--seed {seed} repeats this run's random draws)\n"
            ));
        }
        let missed = self.missed_verdicts().len();
        if missed > 0 {
            out.push_str(&format!(
                "{missed} latency verdict(s) missed (they do not fail the run unless --fail-on-verdict)\n"
            ));
        }
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
        // A failed browser step's page console (its screenshot is named in the transcript).
        for l in st.browser.iter().flat_map(|b| &b.console) {
            out.push_str(&format!("  page console: {l}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Measured, Percentiles, StepReport, Verdict};

    fn scenario(name: &str, outcome: Outcome, verdict_met: Option<bool>) -> ScenarioReport {
        let latency = verdict_met.map(|met| Latency {
            name: "backup, default cap".into(),
            during: None,
            window_p99_us: vec![],
            measured: Measured {
                period_us: 10_000,
                io: false,
                samples: 100,
                missed: 0,
                lateness_us: Percentiles {
                    p50: 1,
                    p99: 2,
                    p999: 3,
                    max: 4,
                    mean: 1.0,
                },
                io_us: None,
                lateness_buckets: vec![],
                lateness_counts: vec![],
                io_counts: vec![],
            },
            verdict: Some(Verdict {
                compare_to: "idle".into(),
                ratio: if met { 1.1 } else { 1.35 },
                max_ratio: Some(1.2),
                met,
            }),
        });
        ScenarioReport {
            name: name.into(),
            file: format!("{name}.yaml"),
            outcome,
            reason: None,
            duration_s: 1.0,
            ready_s: None,
            steps: vec![StepReport {
                index: 1,
                kind: "probe.latency".into(),
                line: 3,
                outcome: Outcome::Passed,
                duration_s: 1.0,
                message: None,
                transcript: vec![],
                progress: vec![],
                latency,
                baseline: None,
                browser: None,
            }],
            journal: None,
            console: None,
            device_state: None,
            cleanup: vec![],
            undo_failed: false,
            device: None,
            device_info: None,
            required: false,
        }
    }

    fn run(scenarios: Vec<ScenarioReport>) -> RunReport {
        RunReport {
            target: "emulator".into(),
            duration_s: 1.0,
            scenarios,
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
        }
    }

    #[test]
    fn a_missed_verdict_is_named_in_the_terminal_and_in_junit() {
        let r = run(vec![scenario("perf", Outcome::Passed, Some(false))]);
        let line = result_line(&r.scenarios[0]);
        assert!(
            line.contains("verdict missed: backup, default cap: p99 1.35x that of \"idle\" (at most 1.2)"),
            "{line}"
        );
        let summary = r.summary();
        assert!(summary.contains("1 latency verdict(s) missed"), "{summary}");
        let junit = r.to_junit();
        assert!(junit.contains("verdict-missed") && junit.contains("1.35x"), "{junit}");
        // A met verdict says nothing.
        let ok = run(vec![scenario("perf", Outcome::Passed, Some(true))]);
        assert!(ok.missed_verdicts().is_empty());
        assert!(!ok.summary().contains("missed") && !ok.to_junit().contains("verdict-missed"));
    }

    #[test]
    fn a_failed_browser_steps_page_console_is_in_the_transcript_and_junit() {
        let mut s = scenario("ui", Outcome::Failed, None);
        s.steps[0].kind = "browser.click".into();
        s.steps[0].outcome = Outcome::Failed;
        s.steps[0].transcript = vec!["the page at the failure: browser-failure-1.png".into()];
        s.steps[0].browser = Some(crate::report::BrowserEvidence {
            console: vec!["SEVERE https://127.0.0.1/control/app.js 3:7 Uncaught TypeError: x is null".into()],
            ..Default::default()
        });
        let text = transcript(&s);
        assert!(
            text.contains("  page console: SEVERE https://127.0.0.1/control/app.js 3:7 Uncaught TypeError"),
            "{text}"
        );
        let junit = run(vec![s]).to_junit();
        assert!(
            junit.contains("page console: SEVERE") && junit.contains("browser-failure-1.png"),
            "{junit}"
        );
    }

    #[test]
    fn skipped_is_not_passed() {
        // Nothing ran: not a pass.
        let all_skipped = run(vec![scenario("a", Outcome::Skipped, None)]);
        assert!(!all_skipped.all_passed());
        let mut r = run(vec![
            scenario("a", Outcome::Passed, None),
            scenario("b", Outcome::Skipped, None),
        ]);
        assert!(r.all_passed());
        // A skip fails where the run or the scenario requires it.
        assert!(r.required_skips(false).is_empty());
        assert_eq!(r.required_skips(true).len(), 1);
        r.scenarios[1].required = true;
        assert_eq!(r.required_skips(false)[0].name, "b");
        assert!(r.to_junit().contains("<skipped"), "{}", r.to_junit());
    }
}
