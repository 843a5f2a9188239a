//! The report formats CI and tools read, pinned: JUnit XML and JSON, for a run with a pass, a
//! failure (with transcript, journal and console), a skip and an infrastructure error.

use nexus_harness::report::{Outcome, ProgressSample, RunReport, ScenarioReport, StepReport};

fn sample_run() -> RunReport {
    let step = |i: usize, kind: &str, outcome: Outcome, message: Option<&str>| StepReport {
        index: i,
        kind: kind.into(),
        line: 8 + i * 5,
        outcome,
        duration_s: 0.25,
        message: message.map(String::from),
        transcript: vec![format!("{kind} ran")],
        progress: Vec::new(),
        latency: None,
        baseline: None,
        browser: None,
        wear: None,
        card: None,
    };
    let mut wait = step(2, "backup.wait", Outcome::Passed, None);
    wait.progress = vec![
        ProgressSample {
            at_s: 0.0,
            percent: 0,
            bytes_done: 0,
            bytes_total: 100,
        },
        ProgressSample {
            at_s: 0.5,
            percent: 50,
            bytes_done: 50,
            bytes_total: 100,
        },
    ];
    RunReport {
        target: "emulator".into(),
        duration_s: 12.5,
        infra_error: None,
        seed: None,
        partition: None,
        health: Default::default(),
        changes: Vec::new(),
        scenarios: vec![
            ScenarioReport {
                name: "Control-UI flow".into(),
                file: "scenarios/01-control-ui-flow.yaml".into(),
                outcome: Outcome::Passed,
                reason: None,
                duration_s: 5.0,
                ready_s: Some(0.6),
                steps: vec![step(1, "dbus.call", Outcome::Passed, None), wait],
                journal: None,
                console: None,
                device_state: None,
                cleanup: Vec::new(),
                undo_failed: false,
                device: None,
                device_info: None,
                required: false,
                attempt: Default::default(),
            },
            ScenarioReport {
                name: "Download flow".into(),
                file: "scenarios/03-download.yaml".into(),
                outcome: Outcome::Failed,
                reason: Some("step 1 http.get (line 13): status 404, expected 200".into()),
                duration_s: 2.0,
                ready_s: Some(0.7),
                steps: vec![step(1, "http.get", Outcome::Failed, Some("status 404, expected 200"))],
                journal: Some("nexus-backupd[1]: backup started\n".into()),
                console: Some("[  OK  ] Started nexus-backupd.service.\nnexus login: ".into()),
                device_state: Some("== btrfs filesystem usage /broot\nOverall:\n".into()),
                cleanup: Vec::new(),
                undo_failed: false,
                device: None,
                device_info: None,
                required: false,
                attempt: Default::default(),
            },
            ScenarioReport {
                name: "Lifecycle only".into(),
                file: "scenarios/09-faults.yaml".into(),
                outcome: Outcome::Skipped,
                reason: Some("emulator-only: needs the emulator's lifecycle".into()),
                duration_s: 0.0,
                ready_s: None,
                steps: Vec::new(),
                journal: None,
                console: None,
                device_state: None,
                cleanup: Vec::new(),
                undo_failed: false,
                device: None,
                device_info: None,
                required: false,
                attempt: Default::default(),
            },
            ScenarioReport {
                name: "Polkit grants".into(),
                file: "scenarios/06-polkit.yaml".into(),
                outcome: Outcome::InfraError,
                reason: Some("emulator: the emulator did not come up".into()),
                duration_s: 1.0,
                ready_s: None,
                steps: Vec::new(),
                journal: None,
                console: None,
                device_state: None,
                cleanup: Vec::new(),
                undo_failed: false,
                device: None,
                device_info: None,
                required: false,
                attempt: Default::default(),
            },
        ],
    }
}

#[test]
fn junit_report_is_pinned() {
    insta::assert_snapshot!(sample_run().to_junit());
}

#[test]
fn json_report_is_pinned() {
    insta::assert_snapshot!(sample_run().to_json());
}

#[test]
fn summary_counts_and_exit_policy() {
    let r = sample_run();
    let s = r.summary();
    assert!(
        s.ends_with("1 passed, 1 failed, 1 skipped, 1 infrastructure errors (12.5 s)\n"),
        "{s}"
    );
    assert!(!r.all_passed());
    let mut ok = sample_run();
    ok.scenarios.retain(|s| s.outcome == Outcome::Passed);
    assert!(ok.all_passed());
}
