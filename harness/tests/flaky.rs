//! Flaky or real? `run --repeat N` and `run --retries N` end to end, on an emulator reached only
//! over its published SSH port as a bench device (`--target ssh://`: the lease, the record and
//! its undo between tries, no container per try, so 30 repetitions are cheap). The fixture
//! `flaky/one-in-three.yaml` fails when its try's seed is a multiple of three: under
//! `--repeat 30` each repetition's outcome follows its recorded seed and the ratio with its
//! interval is printed and written; the same `--seed` repeats the same outcomes; the history
//! keeps each and `history flaky` lists it. Under `--retries 2` a first try that fails makes it
//! FLAKY in the terminal, JSON, HTML and JUnit (read back as a JUnit consumer reads it), each
//! try's evidence in its own folder; `flaky/always-fails.yaml` stays a plain failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nexus_harness::report::wilson;
use nexus_harness::runner::Plan;
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flaky").join(name)
}

// An emulator kept up by `nexus-hil emulator up`, reached as a device on the network.
use common::{text, UpEmulator as Device};

trait RunOn {
    fn run(&self, dir: &Path, name: &str, args: &[&str], files: &[PathBuf]) -> Output;
}

impl RunOn for Device {
    /// `nexus-hil run` on this device with the admin's key, reports in `dir/name`, JUnit at
    /// `dir/name.xml`, the history `dir/history.sqlite`.
    fn run(&self, dir: &Path, name: &str, args: &[&str], files: &[PathBuf]) -> Output {
        bin()
            .args([
                "run",
                "--target",
                &self.target(),
                "--https-port",
                &self.https_port.to_string(),
            ])
            .arg("--key")
            .arg(&self.admin_key)
            .arg("--pins")
            .arg(dir.join("pins"))
            .arg("--report-dir")
            .arg(dir.join(name))
            .arg("--junit")
            .arg(dir.join(format!("{name}.xml")))
            .arg("--history")
            .arg(dir.join("history.sqlite"))
            .args(["--lock-ttl", "20s"])
            .args(args)
            .args(files)
            .output()
            .unwrap()
    }
}

fn json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("report.json")).unwrap()).unwrap()
}

/// Each entry's (seed, outcome).
fn seeds_and_outcomes(report: &serde_json::Value) -> Vec<(u64, String)> {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["seed"].as_u64().unwrap(), s["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn one_in_three_outcome(seed: u64) -> &'static str {
    if seed.is_multiple_of(3) {
        "failed"
    } else {
        "passed"
    }
}

#[test]
fn a_scenario_that_fails_one_try_in_three_is_measured_by_repeat_and_flaky_under_retries() {
    let dev = Device::up();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // --repeat 30: every repetition's outcome is its seed's; the ratio and its interval said.
    let run = dev.run(
        d,
        "repeat",
        &["--repeat", "30", "--seed", "7"],
        &[fixture("one-in-three.yaml")],
    );
    let report = json(d, "repeat");
    let tries = seeds_and_outcomes(&report);
    assert_eq!(tries.len(), 30, "{}", text(&run));
    for (i, (seed, outcome)) in tries.iter().enumerate() {
        assert_eq!(
            outcome,
            one_in_three_outcome(*seed),
            "repetition {}: {}",
            i + 1,
            text(&run)
        );
        assert_eq!(report["scenarios"][i]["repetition"], i + 1);
    }
    let distinct: std::collections::BTreeSet<u64> = tries.iter().map(|t| t.0).collect();
    assert_eq!(distinct.len(), 30, "each repetition has its own seed");
    let failed = tries.iter().filter(|t| t.1 == "failed").count();
    assert!(
        (3..=20).contains(&failed),
        "about one in three of the seeds fail: {failed} of 30"
    );
    assert_eq!(run.status.code(), Some(1), "a repetition failed: {}", text(&run));
    let (lo, hi) = wilson(failed, 30);
    let ratio = format!(
        "{}/30 passed, failure ratio {:.1} % (95 % interval {:.1}-{:.1} %, Wilson)",
        30 - failed,
        failed as f64 / 30.0 * 100.0,
        lo * 100.0,
        hi * 100.0
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains(&format!("REPEATED one in three: {ratio}")), "{stdout}");
    let xml = std::fs::read_to_string(d.join("repeat.xml")).unwrap();
    assert!(xml.contains(&format!("value=\"{ratio}\"")), "{xml}");
    let junit = Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(junit.test_suites[0].test_cases.len(), 30);
    let page = std::fs::read_to_string(d.join("repeat/report.html")).unwrap();
    assert!(
        page.contains(&format!(
            "<td>{}/30</td><td>{:.1} %</td>",
            30 - failed,
            failed as f64 / 30.0 * 100.0
        )),
        "{page}"
    );

    // The same --seed repeats the same outcomes.
    let again = dev.run(
        d,
        "again",
        &["--repeat", "3", "--seed", "7"],
        &[fixture("one-in-three.yaml")],
    );
    assert_eq!(seeds_and_outcomes(&json(d, "again")), tries[..3], "{}", text(&again));

    // The history kept every outcome: it passed and failed on this commit and device.
    let flaky = bin()
        .args(["history", "flaky", "--history"])
        .arg(d.join("history.sqlite"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&flaky.stdout);
    assert_eq!(flaky.status.code(), Some(0), "{}", text(&flaky));
    let passes_all = 30 - failed + tries[..3].iter().filter(|t| t.1 == "passed").count();
    assert!(
        said.contains(&format!("FLAKY  one in three on {} at ", dev.target()))
            && said.contains(&format!(": {passes_all}/33 passed")),
        "{said}"
    );

    // --retries 2 with a seed whose first try fails and second passes: FLAKY everywhere; the
    // scenario that fails every try stays a plain failure with each try.
    let seed = (1..)
        .map(|n| n * 3)
        .find(|&s: &u64| !Plan::seed(s, 1).is_multiple_of(3))
        .unwrap();
    let run = dev.run(
        d,
        "retries",
        &["--retries", "2", "--seed", &seed.to_string()],
        &[fixture("one-in-three.yaml"), fixture("always-fails.yaml")],
    );
    assert_eq!(run.status.code(), Some(1), "always-fails failed: {}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("FLAKY one in three ("), "{stdout}");
    assert!(
        stdout.contains(&format!("try 1 of 2 failed (seed {seed}): step 1 ssh.run")),
        "{stdout}"
    );
    assert!(stdout.contains("FLAKY: one in three\n"), "{stdout}");
    assert!(stdout.contains("FAIL  always fails"), "{stdout}");
    let report = json(d, "retries");
    let flaky = &report["scenarios"][0];
    assert_eq!(flaky["outcome"], "passed");
    assert_eq!(flaky["tries"][0]["outcome"], "failed");
    assert_eq!(flaky["tries"][0]["seed"], seed);
    assert_eq!(flaky["seed"], Plan::seed(seed, 1));
    let always = &report["scenarios"][1];
    assert_eq!(always["outcome"], "failed");
    assert_eq!(always["tries"].as_array().map(Vec::len), Some(2), "{always}");
    // Each try's evidence in its own folder.
    for (work, seed) in [("one-in-three", seed), ("one-in-three.try-2", Plan::seed(seed, 1))] {
        assert!(d.join("retries").join(work).is_dir(), "{work}");
        let transcript =
            flaky["tries"][0]["steps"][0]["transcript"].to_string() + &flaky["steps"][0]["transcript"].to_string();
        assert!(transcript.contains(&format!("seed {seed}")), "{transcript}");
    }
    assert!(d.join("retries/always-fails.try-3").is_dir());
    let page = std::fs::read_to_string(d.join("retries/report.html")).unwrap();
    assert!(page.contains("FLAKY: passed on try 2 of 2"), "{page}");
    assert!(
        page.contains(&format!("<summary>try 1 of 2: failed (seed {seed})")),
        "{page}"
    );
    assert!(page.contains("failed on every try (3)"), "{page}");
    // A JUnit consumer reads the Surefire shape: a pass with a flakyFailure holding the failed
    // try's output; the plain failure a failure with its reruns.
    let xml = std::fs::read_to_string(d.join("retries.xml")).unwrap();
    let junit = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let cases = &junit.test_suites[0].test_cases;
    match &cases[0].status {
        TestCaseStatus::Success { flaky_runs } => {
            assert_eq!(flaky_runs.len(), 1, "{xml}");
            assert_eq!(flaky_runs[0].kind, NonSuccessKind::Failure);
            let out = flaky_runs[0].system_out.as_ref().unwrap().as_str();
            assert!(out.contains(&format!("seed {seed}")), "{out}");
        }
        other => panic!("one in three: {other:?}\n{xml}"),
    }
    match &cases[1].status {
        TestCaseStatus::NonSuccess { kind, reruns, .. } => {
            assert_eq!(*kind, NonSuccessKind::Failure);
            assert_eq!(reruns.runs.len(), 2, "{xml}");
        }
        other => panic!("always fails: {other:?}\n{xml}"),
    }

    // --flaky-fails: the same FLAKY pass fails the run, and JUnit says failure.
    let strict = dev.run(
        d,
        "strict",
        &["--retries", "2", "--seed", &seed.to_string(), "--flaky-fails"],
        &[fixture("one-in-three.yaml")],
    );
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    let xml = std::fs::read_to_string(d.join("strict.xml")).unwrap();
    assert!(xml.contains("<failure") && xml.contains("<flakyFailure"), "{xml}");
}
