//! What people read in the terminal: a line per finished scenario, the closing summary, and a
//! scenario's steps as text (also JUnit's system-out).

use super::{Outcome, RunReport, ScenarioReport, WhatChanged};

/// The mark of a scenario's outcome in the terminal: FLAKY for one that passed only on a retry.
fn mark(s: &ScenarioReport) -> &'static str {
    if s.flaky() {
        return "FLAKY";
    }
    match s.outcome {
        Outcome::Passed => "PASS ",
        Outcome::Failed => "FAIL ",
        Outcome::Skipped => "SKIP ",
        Outcome::InfraError => "ERROR",
    }
}

/// The line printed when a scenario finishes (with its missed verdicts, if any).
pub fn result_line(r: &ScenarioReport) -> String {
    let mut line = match &r.device {
        Some(d) => format!("{} {} ({:.1} s on {d})", mark(r), r.label(), r.duration_s),
        None => format!("{} {} ({:.1} s)", mark(r), r.label(), r.duration_s),
    };
    if !r.attempt.tries.is_empty() {
        line.push_str(&format!("\n      {}", tries_line(r)));
    }
    for v in r.missed_verdicts() {
        line.push_str(&format!("\n      verdict missed: {v}"));
    }
    line
}

/// A time in seconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// What changed on a device since its last passing run, as the header's lines.
pub fn what_changed(w: &WhatChanged) -> Vec<String> {
    let Some(since) = &w.since else {
        return vec![format!(
            "what changed on {}: nothing to compare with (the history has no earlier passing run on it)",
            w.device
        )];
    };
    let mut lines = vec![format!(
        "what changed on {} since its last passing run ({}, commit {}):{}",
        w.device,
        utc(since.started_at),
        since.commit.chars().take(12).collect::<String>(),
        if w.is_empty() { " nothing" } else { "" }
    )];
    if !w.changed.is_empty() {
        let parts: Vec<String> = w
            .changed
            .iter()
            .map(|(what, b, n)| format!("{what} {b} -> {n}"))
            .collect();
        lines.push(format!("  {}", parts.join("; ")));
    }
    let mut packages: Vec<String> = w.added.iter().map(|(n, v)| format!("+ {n} {v}")).collect();
    packages.extend(w.removed.iter().map(|(n, v)| format!("- {n} {v}")));
    packages.extend(w.upgraded.iter().map(|(n, b, v)| format!("~ {n} {b} -> {v}")));
    if !packages.is_empty() {
        // A whole upgrade is hundreds of packages: the first few, and how many more.
        const SHOWN: usize = 12;
        let more = packages.len().saturating_sub(SHOWN);
        packages.truncate(SHOWN);
        let sha = w
            .packages_sha256
            .as_deref()
            .map(|s| &s[..s.len().min(12)])
            .unwrap_or("?");
        lines.push(format!(
            "  packages (list {sha}): {}{}",
            packages.join("; "),
            if more > 0 {
                format!("; and {more} more (report.json has all)")
            } else {
                String::new()
            }
        ));
    }
    lines.extend(w.notes.iter().map(|n| format!("  {n}")));
    lines
}

impl RunReport {
    /// The closing summary for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for w in &self.changes {
            for l in what_changed(w) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        for s in &self.scenarios {
            out.push_str(&format!(
                "{} {} ({:.1} s) [{}]\n",
                mark(s),
                s.label(),
                s.duration_s,
                s.file
            ));
            if let Some(r) = &s.reason {
                out.push_str(&format!("      {r}\n"));
            }
            if !s.attempt.tries.is_empty() {
                out.push_str(&format!("      {}\n", tries_line(s)));
            }
            for v in s.missed_verdicts() {
                out.push_str(&format!("      verdict missed: {v}\n"));
            }
            for l in s.steps.iter().filter_map(|st| st.card.as_ref()).flat_map(|c| c.lines()) {
                out.push_str(&format!("      {l}\n"));
            }
        }
        if let Some(e) = &self.infra_error {
            out.push_str(&format!("ERROR infrastructure: {e}\n"));
        }
        for r in self.repeated() {
            let on = r.device.as_deref().map(|d| format!(" on {d}")).unwrap_or_default();
            out.push_str(&format!("REPEATED {}{on}: {}\n", r.name, r.describe()));
        }
        let t = self.totals();
        let flaky = if t.flaky > 0 {
            format!(" ({} FLAKY: passed only on a retry)", t.flaky)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{} passed{flaky}, {} failed, {} skipped, {} infrastructure errors ({:.1} s)\n",
            t.passed, t.failed, t.skipped, t.errors, self.duration_s
        ));
        let flaky = self.flaky();
        if !flaky.is_empty() {
            let names: Vec<String> = flaky.iter().map(|s| s.label()).collect();
            out.push_str(&format!("FLAKY: {}\n", names.join("; ")));
        }
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

/// How its tries went, e.g. `try 1 of 2 failed (seed 3): step 1 ssh.run ...; try 2 passed (seed 9)`.
pub fn tries_line(s: &ScenarioReport) -> String {
    let seed = |t: &ScenarioReport| t.attempt.seed.map(|n| format!(" (seed {n})")).unwrap_or_default();
    let n = s.try_count();
    let mut parts: Vec<String> = s
        .attempt
        .tries
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "try {} of {n} {}{}: {}",
                i + 1,
                outcome_word(t.outcome),
                seed(t),
                t.reason.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.push(format!("try {n} of {n} {}{}", outcome_word(s.outcome), seed(s)));
    parts.join("; ")
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
        Outcome::InfraError => "stopped by the infrastructure",
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

    #[test]
    fn the_header_says_what_changed_since_the_last_passing_run_or_that_there_is_none() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_796_620_500), "2026-12-07 05:15 UTC");
        assert_eq!(utc(951_827_696), "2000-02-29 12:34 UTC");
        let mut w = WhatChanged {
            device: "pi-1".into(),
            ..Default::default()
        };
        assert_eq!(
            what_changed(&w),
            ["what changed on pi-1: nothing to compare with (the history has no earlier passing run on it)"]
        );
        w.since = Some(crate::report::PassedRun {
            run_id: "r".into(),
            commit: "0123456789abcdef".into(),
            started_at: 0,
        });
        assert_eq!(
            what_changed(&w),
            ["what changed on pi-1 since its last passing run (1970-01-01 00:00 UTC, commit 0123456789ab): nothing"]
        );
        w.changed = vec![("kernel".into(), "6.1".into(), "6.2".into())];
        w.added = vec![("nexus-hil-marker".into(), "1.0".into())];
        w.upgraded = (0..20).map(|i| (format!("p{i}"), "1".into(), "2".into())).collect();
        w.packages_sha256 = Some("ab".repeat(32));
        let lines = what_changed(&w);
        assert_eq!(lines[1], "  kernel 6.1 -> 6.2");
        assert!(
            lines[2].starts_with("  packages (list abababababab): + nexus-hil-marker 1.0; ~ p0 1 -> 2;"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("; and 9 more (report.json has all)"), "{}", lines[2]);
        let mut r = run(Vec::new());
        r.changes = vec![w];
        assert!(r.summary().starts_with("what changed on pi-1 since"), "{}", r.summary());
    }
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
                wear: None,
                card: None,
            }],
            journal: None,
            console: None,
            device_state: None,
            cleanup: vec![],
            undo_failed: false,
            device: None,
            device_info: None,
            required: false,
            attempt: Default::default(),
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
            changes: Vec::new(),
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
