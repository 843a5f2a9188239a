//! `nexus-hil run` as users and CI meet it: exit status, the summary, the reports of a failing
//! scenario (transcript and device journal attached), bad files refused before anything runs,
//! and no container left behind after Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn nexus_hil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus-hil"));
    // The debug daemon next to the debug harness, as ci/test builds them.
    let backupd = Path::new(env!("CARGO_BIN_EXE_nexus-hil")).with_file_name("nexus-backupd");
    c.arg("run").arg("--backupd").arg(backupd);
    c
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A key of the test's own, so the run gets as far as the device whatever the machine's
/// harness cache holds.
fn own_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    key
}

fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test starts emulator containers and must run as root: use ci/test"
    );
}

#[test]
fn a_file_with_a_mistake_stops_the_run_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        "name: x\nsteps:\n  - ssh.runn: {as: nexus, command: id}\n",
    );
    let out = nexus_hil()
        .arg(&f)
        .arg("--report-dir")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:3:") && err.contains("unknown step `ssh.runn`") && err.contains("nothing was run"),
        "{err}"
    );
    let out = nexus_hil().arg("--target").arg("nexus@host").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ssh://USER@HOST"));
}

/// `nexus-hil steps` lists every step a file can use, with its keys and default time limit.
#[test]
fn the_steps_command_lists_each_step_with_its_keys_and_time_limit() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .arg("steps")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |step: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .unwrap_or_else(|| panic!("no row for {step}:\n{text}"));
        line.split_whitespace()
            .map(|w| w.trim_end_matches(',').to_string())
            .collect()
    };
    assert_eq!(
        row("backup.wait"),
        ["backup.wait", "5m", "as", "id", "expect_result", "max_write_ratio"]
    );
    assert_eq!(row("scp.get"), ["scp.get", "60s", "as", "remote", "local"]);
    let cut = row("fault.power_cut");
    assert!(
        cut[1] == "5m" && cut.contains(&"during".to_string()) && cut.contains(&"stay_off".to_string()),
        "{cut:?}"
    );
    for step in nexus_scenario::Step::NAMES {
        row(step);
    }
}

#[test]
fn an_unreachable_device_is_an_infrastructure_error_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.yaml",
        "name: One\nsteps:\n  - ssh.run: {as: nexus, command: id}\n",
    );
    // Nothing listens on port 1 of this machine.
    let reports = dir.path().join("r");
    let out = nexus_hil()
        .args(["--target", "ssh://nexus@127.0.0.1:1", "--key"])
        .arg(own_key(dir.path()))
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--junit")
        .arg(reports.join("junit.xml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("ERROR infrastructure: device unreachable: ssh nexus@127.0.0.1:1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 passed, 0 failed, 0 skipped, 1 infrastructure errors"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<error") && junit.contains("type=\"infrastructure\""),
        "{junit}"
    );
    let json = std::fs::read_to_string(reports.join("report.json")).unwrap();
    assert!(json.contains("\"infra_error\": \"device unreachable"), "{json}");
}

#[test]
fn a_machine_without_the_harness_key_is_told_to_provision_in_every_report() {
    // A fresh machine: an empty cache, so no harness key.
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.yaml",
        "name: One\nsteps:\n  - ssh.run: {as: nexus, command: id}\n",
    );
    let reports = dir.path().join("r");
    let out = nexus_hil()
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["--target", "ssh://nexus@127.0.0.1:1"])
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("ERROR infrastructure: device unreachable: no key for ssh://nexus@127.0.0.1:1")
            && stdout.contains("nexus-hil provision"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(reports.join("report.json")).unwrap();
    assert!(json.contains("\"infra_error\": \"device unreachable: no key"), "{json}");
}

#[test]
fn a_failing_scenario_fails_the_run_with_its_transcript_and_journal() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "wrong.yaml",
        "name: Expects the wrong id\ndescription: fails on purpose\nsteps:\n  - dbus.call:\n      as: root\n      service: tech.noreya.Snapshot1\n      method: Create\n      args: [true, false, \"x\"]\n      expect: \"42\"\n",
    );
    let reports = dir.path().join("reports");
    let out = nexus_hil()
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--junit")
        .arg(reports.join("junit.xml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FAIL  Expects the wrong id"), "{stdout}");
    // stderr is no terminal here, as in a CI log: the scenario's result line was still printed
    // there when it ended, not only in the closing summary.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAIL  Expects the wrong id ("), "{stderr}");
    assert!(
        stdout.contains("reply \"1\", expected \"42\"") && stdout.contains("0 passed, 1 failed"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure") && junit.contains("line 4"), "{junit}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let journal = json["scenarios"][0]["journal"].as_str().unwrap();
    assert!(
        journal.contains("snapshot created"),
        "the device journal must be attached: {journal}"
    );
    let state = json["scenarios"][0]["device_state"].as_str().unwrap();
    assert!(
        state.contains("== btrfs filesystem usage /broot") && state.contains("Device size:"),
        "the file system's usage must be attached: {state}"
    );
    assert!(
        state.contains("== Snapshot1.GetList")
            && state.contains("\"description\"")
            && state.contains("== Backup1.GetList"),
        "the snapshot and backup lists must be attached: {state}"
    );
}

/// What a backup cost the card is measured on every `ok` backup, from just before its Create
/// call, and, with `max_write_ratio`, judged: a limit below what any backup can need (the file
/// itself is written) fails the step, naming the ratio, and the report keeps the bytes.
#[test]
fn a_backup_that_costs_the_card_more_than_its_limit_fails_naming_the_ratio() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "wear.yaml",
        "name: Wear limit\nsteps:\n  - dbus.call:\n      as: root\n      service: tech.noreya.Snapshot1\n      method: Create\n      args: [true, true, \"wear\"]\n      capture: id\n  - dbus.call:\n      as: root\n      service: tech.noreya.Backup1\n      method: Create\n      args: [\"${id}\", \"pw-wear-1\"]\n  - ssh.run: {as: root, command: sleep 4}\n  - backup.wait:\n      as: root\n      id: \"${id}\"\n      max_write_ratio: 0.5\n",
    );
    let reports = dir.path().join("reports");
    let out = nexus_hil().arg(&f).arg("--report-dir").arg(&reports).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bytes per byte of the backup file, more than max_write_ratio 0.5"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let wear = &json["scenarios"][0]["steps"][3]["wear"];
    let (written, file) = (
        wear["bytes_written"].as_u64().unwrap(),
        wear["backup_bytes"].as_u64().unwrap(),
    );
    // The encrypted file of the card's content reached the card, and not many times over; the
    // backup wrote for 4 s before anyone waited on it, which counts too (counted from the
    // backup.wait instead, the card had received less than half a byte per byte of the file,
    // and the run passed).
    assert!(file > 1 << 20 && written >= file && written < 4 * file, "{wear}");
}

fn our_containers(pid: u32) -> usize {
    let out = Command::new("podman")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=tech.noreya.nexus-hil.emulator={pid}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn ctrl_c_removes_the_emulator() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "slow.yaml",
        "name: Slow\ndescription: waits\nsteps:\n  - ssh.run: {as: nexus, command: sleep 120, timeout: 3m}\n",
    );
    let mut child = nexus_hil()
        .arg(&f)
        .arg("--report-dir")
        .arg(dir.path().join("r"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    while our_containers(pid) == 0 {
        assert!(start.elapsed() < Duration::from_secs(180), "the emulator never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(our_containers(pid), 0, "the interrupted run left its emulator behind");
}

#[test]
fn a_device_that_accepts_but_never_answers_is_an_infrastructure_error() {
    // A hung sshd: the TCP connection is accepted, no banner ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept() {
            conns.push(c);
            if conns.len() > 4 {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.yaml",
        "name: One\nsteps:\n  - ssh.run: {as: nexus, command: id}\n",
    );
    let start = Instant::now();
    let out = nexus_hil()
        .args(["--target", &format!("ssh://nexus@127.0.0.1:{port}"), "--key"])
        .arg(own_key(dir.path()))
        .arg(&f)
        .arg("--report-dir")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "ERROR infrastructure: device unreachable: ssh nexus@127.0.0.1:{port}"
        )) && stdout.contains("timed out"),
        "{stdout}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "a silent device must not hold the run"
    );
    drop(held);
}

fn our_container_ids(pid: u32) -> Vec<String> {
    let out = Command::new("podman")
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=tech.noreya.nexus-hil.emulator={pid}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_device_that_hangs_mid_run_names_the_step_that_timed_out() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "hang.yaml",
        "name: Hangs\ndescription: the device freezes under a running command\nsteps:\n  - ssh.run: {as: nexus, command: echo up, expect_stdout: [up]}\n  - fault.cut_network: {after: 0s, for: 5m}\n  - ssh.run: {as: nexus, command: sleep 2; echo late, timeout: 5s}\n",
    );
    let reports = dir.path().join("r");
    let child = nexus_hil()
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  Hangs")
            && stdout.contains("step 3 ssh.run (line 6)")
            && stdout.contains("did not finish within 5s"),
        "{stdout}"
    );
    // The failure's evidence says why it is missing, and the frozen device is asked once.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let s = &json["scenarios"][0];
    assert!(
        s["journal"]
            .as_str()
            .unwrap()
            .starts_with("(the journal could not be fetched: the device did not answer over SSH")
            && s["device_state"]
                .as_str()
                .unwrap()
                .starts_with("(the device's state was not asked for"),
        "{s}"
    );
    assert_eq!(our_containers(pid), 0, "the frozen emulator was left behind");
}

#[test]
fn an_emulator_that_dies_mid_run_is_an_infrastructure_error() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "dies.yaml",
        "name: Dies\ndescription: the emulator is killed under a running command\nsteps:\n  - ssh.run: {as: nexus, command: touch /tmp/step-started; sleep 120, timeout: 3m}\n",
    );
    let reports = dir.path().join("r");
    let child = nexus_hil()
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--junit")
        .arg(reports.join("junit.xml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the step runs on the device, then kill this run's own container.
    let start = Instant::now();
    let id = loop {
        assert!(start.elapsed() < Duration::from_secs(180), "the step never started");
        if let Some(id) = our_container_ids(pid).into_iter().next() {
            let started = Command::new("podman")
                .args(["exec", &id, "test", "-e", "/tmp/step-started"])
                .status()
                .is_ok_and(|s| s.success());
            if started {
                break id;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let killed = Command::new("podman").args(["kill", &id]).output().unwrap();
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("ERROR Dies")
            && stdout.contains("stopped during the scenario")
            && stdout.contains("step 1 ssh.run (line 4)")
            && stdout.contains("1 infrastructure errors"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"infrastructure\""), "{junit}");
    assert_eq!(our_containers(pid), 0, "the dead emulator was left behind");
}

#[test]
fn latency_probes_measure_each_condition_and_the_html_report_shows_them() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "1-probes.yaml",
        "name: Probes\ndescription: idle, then under a load\nsteps:\n  - probe.latency: {name: idle, for: 2s}\n  - probe.latency: {name: busy, for: 2s, period: 20ms, during: exec sleep 997, settle: 1s, compare_to: idle, max_p99_ratio: 1000}\n  - probe.latency: {name: turns, for: 2s, during: 'echo started >> /tmp/turns.log; exec sleep 996', settle: 0s, alternate_with: between, windows: 2, max_p99_ratio: 1000}\n  - ssh.run:\n      as: root\n      command: \"test ! -e /broot/data/.nexus-hil-probe && wc -l < /tmp/turns.log && for f in /proc/[0-9]*/cmdline; do tr '\\\\0' ' ' < $f; echo; done | grep -c '^sleep 99[67]'\"\n      expect_exit: 1\n      expect_stdout: [\"2\\n0\"]\n",
    );
    write(
        dir.path(),
        "2-early.yaml",
        "name: Load ends early\ndescription: a load that stops before the probe\nsteps:\n  - probe.latency: {name: short, for: 2s, during: echo gone, settle: 0s}\n",
    );
    let reports = dir.path().join("r");
    let out = nexus_hil()
        .arg(dir.path())
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PASS  Probes") && stdout.contains("FAIL  Load ends early"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the load (during) ended before the probe did: gone"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let steps = &json["scenarios"][0]["steps"];
    let (idle, busy) = (&steps[0]["latency"], &steps[1]["latency"]);
    // Absolute deadlines: 2 s of 10 ms ticks is 200 samples, of 20 ms ticks 100, however late.
    assert_eq!(idle["samples"], 200, "{idle}");
    assert_eq!(busy["samples"], 100, "{busy}");
    assert_eq!(idle["name"], "idle");
    assert!(idle["lateness_us"]["p99"].as_u64().unwrap() >= idle["lateness_us"]["p50"].as_u64().unwrap());
    assert!(
        idle["io_us"]["p99"].as_u64().is_some(),
        "the tick's I/O is measured: {idle}"
    );
    assert_eq!(busy["during"], "exec sleep 997");
    assert_eq!(busy["verdict"]["compare_to"], "idle");
    assert_eq!(busy["verdict"]["met"], true, "{busy}");
    // Taking turns: two 1 s windows per condition (the load started anew for each of its own,
    // as the ssh.run step counted), 100 ticks each, pooled; the verdict is against its turns.
    let (between, turns) = (&steps[2]["baseline"], &steps[2]["latency"]);
    assert_eq!(
        (&between["name"], &between["samples"]),
        (&"between".into(), &200.into()),
        "{between}"
    );
    assert_eq!(between["window_p99_us"].as_array().map(Vec::len), Some(2), "{between}");
    assert_eq!(between["during"], serde_json::Value::Null, "{between}");
    assert_eq!(turns["samples"], 200, "{turns}");
    assert_eq!(turns["window_p99_us"].as_array().map(Vec::len), Some(2), "{turns}");
    assert_eq!(turns["verdict"]["compare_to"], "between", "{turns}");
    let transcript = steps[2]["transcript"].to_string();
    assert!(
        transcript.contains("window 1: p99") && transcript.contains("window 2: p99"),
        "{transcript}"
    );
    assert!(!transcript.contains("window 3"), "{transcript}");
    // The page nexus-hil run wrote, and the one `nexus-hil report` writes again.
    let page = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(
        page.contains(">idle</td>")
            && page.contains(">busy</td>")
            && page.contains(">between <small>(2 windows, taking turns; p99 per window: ")
            && page.matches("<svg").count() == 5,
        "one exceedance chart and a histogram per condition"
    );
    let again = dir.path().join("again.html");
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["report"])
        .arg(&reports)
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), page);
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["report", "/nonexistent/run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--report-dir"));
}

#[test]
fn partitions_split_the_suite_for_parallel_ci_jobs() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let list = |part: &str| -> Vec<String> {
        let out = nexus_hil()
            .args(["--list", "--partition", part])
            .arg(&suite)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("partition {part}")));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let all = list("1/1");
    let (one, two) = (list("1/2"), list("2/2"));
    assert!(all.len() >= 6, "{all:?}");
    assert_eq!(one.len() + two.len(), all.len());
    assert!(one.iter().all(|l| !two.contains(l)), "the parts overlap");
    assert_eq!(one, list("1/2"), "the same part every time");
    let out = nexus_hil()
        .args(["--list", "--partition", "3/2"])
        .arg(&suite)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 <= K <= N"));
}

#[test]
fn a_missing_engine_or_daemon_binary_is_an_infrastructure_error_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.yaml",
        "name: One\nsteps:\n  - ssh.run: {as: nexus, command: id}\n",
    );
    let reports = dir.path().join("r");
    // No engine at the address given.
    let out = nexus_hil()
        .env("DOCKER_HOST", "unix:///nonexistent/podman.sock")
        .arg(&f)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--junit")
        .arg(reports.join("junit.xml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("ERROR infrastructure: container engine: DOCKER_HOST=unix:///nonexistent/podman.sock")
            && stdout.contains("ci/setup-host"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"infrastructure\""), "{junit}");
    // The image cannot be built without the daemon it carries.
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["run", "--backupd", "/nonexistent/nexus-backupd", "--report-dir"])
        .arg(&reports)
        .arg(&f)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("ERROR infrastructure: image build: cannot read the daemon binary /nonexistent/nexus-backupd"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(reports.join("report.json")).unwrap();
    assert!(
        json.contains("\"infra_error\": \"image build: cannot read the daemon binary"),
        "{json}"
    );
}

#[test]
fn faults_prove_they_happened_and_a_transfer_that_missed_the_cut_fails() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // The reboot and the kill each show the device changed; the cut is set too late for the
    // download, so the download, which expects to meet it, must fail.
    let f = write(
        dir.path(),
        "cut.yaml",
        "name: Cut too late\nsteps:\n  - fault.reboot: {}\n  - fault.kill_daemon: {}\n  - fault.cut_network: {after: 30s, for: 1s}\n  - http.get:\n      path: /noreya-nexus/certificates/ca.pem\n      save: ca.pem\n      resume: true\n      expect_interrupted: true\n",
    );
    let reports = dir.path().join("reports");
    let out = nexus_hil().arg(&f).arg("--report-dir").arg(&reports).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("step 4 http.get") && stdout.contains("it met no cut"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let transcript = |i: usize| json["scenarios"][0]["steps"][i]["transcript"].to_string();
    let (boot, kill) = (transcript(0), transcript(1));
    assert!(boot.contains("boot id: ") && boot.contains("pid1-start"), "{boot}");
    assert!(kill.contains("daemon pid: "), "{kill}");
    // The proof is a change: the two sides of the arrow differ.
    let pids: Vec<&str> = kill
        .split("daemon pid: ")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| s.split(" -> ").collect())
        .unwrap_or_default();
    assert!(pids.len() == 2 && pids[0] != pids[1], "{kill}");
}

/// A suite split with `--partition 1/2` and `2/2` (two CI jobs, each on its own emulator) and
/// merged: one report with every scenario once, in the files' order, the failure kept (exit 1),
/// the work files reachable; a missing part is refused.
#[test]
fn the_shards_of_a_partitioned_run_merge_into_one_report() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite");
    std::fs::create_dir(&suite).unwrap();
    let list = "  - dbus.call:\n      as: root\n      service: tech.noreya.Snapshot1\n      method: GetList\n";
    write(&suite, "a.yaml", &format!("name: First lists\nsteps:\n{list}"));
    write(
        &suite,
        "b.yaml",
        "name: Second fails\nsteps:\n  - ssh.run:\n      as: root\n      command: echo broken; exit 3\n",
    );
    write(&suite, "c.yaml", &format!("name: Third lists\nsteps:\n{list}"));
    for k in ["1/2", "2/2"] {
        let out = nexus_hil()
            .arg(&suite)
            .args(["--partition", k, "--report-dir"])
            .arg(dir.path().join(k.replace('/', "-of-")))
            .arg("--history")
            .arg(dir.path().join("history.sqlite"))
            .output()
            .unwrap();
        // Part 1 of 2 holds a.yaml and c.yaml (round robin), part 2 b.yaml.
        let want = if k == "1/2" { 0 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(want),
            "{k}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let merge = |parts: &[&str], out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nexus-hil"));
        c.args(["report", "merge"]);
        c.args(parts.iter().map(|p| dir.path().join(p)));
        c.arg("--output").arg(dir.path().join(out));
        c.output().unwrap()
    };
    let out = merge(&["2-of-2", "1-of-2"], "merged");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 passed, 1 failed"), "{stdout}");
    let merged = dir.path().join("merged");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["First lists", "Second fails", "Third lists"]);
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 3, "{junit}");
    assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
    let html = std::fs::read_to_string(merged.join("report.html")).unwrap();
    assert!(html.contains("Second fails") && html.contains("Third lists"));
    assert!(
        merged.join("second-fails").is_dir(),
        "the failing scenario's work folder was not brought over"
    );

    // Both jobs appended to one history: the passed scenarios' and steps' durations, nothing
    // of the failed one.
    let listed = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print('\\n'.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT DISTINCT series FROM samples ORDER BY series')))"])
        .arg(dir.path().join("history.sqlite"))
        .output()
        .unwrap();
    let series = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        series.lines().collect::<Vec<_>>(),
        [
            "scenario/first-lists/duration_s",
            "scenario/first-lists/step/1-dbus.call/duration_s",
            "scenario/third-lists/duration_s",
            "scenario/third-lists/step/1-dbus.call/duration_s",
        ],
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let out = merge(&["1-of-2"], "half");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("part 2/2 is missing"), "{stderr}");
}
