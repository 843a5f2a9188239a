use std::time::Duration;

use super::Step;

/// The smallest body each step accepts; a step missing here fails `every_step_reads_its_timeout`.
const MINIMAL: &[(&str, &str)] = &[
    ("dbus.call", "as: root, service: tech.noreya.Backup1, method: GetList"),
    ("backup.wait", "as: root, id: x"),
    ("ssh.run", "as: root, command: id"),
    ("ssh.put", "as: root, path: /x, content: y"),
    ("http.get", "path: /"),
    ("http.hold", "connections: 1, mode: idle"),
    ("scp.get", "as: root, remote: a, local: b"),
    ("rsync.pull", "as: root, remote: a, local: b"),
    ("gpg.decrypt", "file: a, password: p, output: b"),
    ("archive.matches_snapshot", "archive: a, snapshot: s"),
    ("setup.user", "name: u"),
    ("fault.kill_daemon", ""),
    ("fault.restart_daemon", ""),
    ("fault.reboot", ""),
    ("fault.fill_disk", "leave_bytes: 0"),
    ("fault.cut_network", "after: 1s, for: 2s"),
    ("fault.slow_io", "read_bytes_per_sec: 0"),
    ("fault.power_cut", ""),
    ("probe.latency", "name: a, for: 5s"),
    ("repeat", "times: 1, steps: [{ssh.run: {as: root, command: id}}]"),
];

fn step(name: &str, body: &str) -> Step {
    let yaml = format!("{name}: {{{body}}}");
    marked_yaml::from_yaml(0, &yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

#[test]
fn every_step_reads_its_timeout() {
    let names: Vec<&str> = MINIMAL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, Step::NAMES, "MINIMAL lists every step of the table");
    for (name, body) in MINIMAL {
        let plain = step(name, body);
        assert_eq!(plain.kind(), *name);
        assert_eq!(plain.timeout(), None, "{name}");
        let sep = if body.is_empty() { "" } else { ", " };
        let timed = step(name, &format!("{body}{sep}timeout: 90s"));
        assert_eq!(timed.timeout(), Some(Duration::from_secs(90)), "{name}");
        assert_eq!(timed.check(), Ok(()), "{name}: the minimal body passes its rules");
    }
}

#[test]
fn the_table_names_the_variants_serde_reads() {
    let e = marked_yaml::from_yaml::<Step>(0, "no.such.step: {}")
        .unwrap_err()
        .to_string();
    let expected = e.split_once("expected one of ").map_or("", |(_, list)| list);
    let serde_names: Vec<&str> = expected
        .split(", ")
        .map(|n| n.trim_start_matches("or ").trim_matches('`'))
        .collect();
    assert_eq!(serde_names, Step::NAMES, "{e}");
}

#[test]
fn texts_and_captures_come_from_each_step() {
    let call = step(
        "dbus.call",
        "as: '${u}', service: tech.noreya.Backup1, method: Create, args: ['${id}'], capture: out",
    );
    assert_eq!(call.texts(), ["${u}", "tech.noreya.Backup1", "Create", "${id}"]);
    assert_eq!(call.captures(), Some("out"));
    let kill = step("fault.kill_daemon", "at_percent: 50, id: '${id}'");
    assert_eq!((kill.texts(), kill.captures()), (vec!["${id}"], None));
    assert!(step("fault.slow_io", "read_bytes_per_sec: 1").texts().is_empty());
}

#[test]
fn probe_durations_are_durations() {
    let Step::ProbeLatency(p) = step("probe.latency", "name: a, for: 2m, period: 5ms, settle: 1s") else {
        unreachable!()
    };
    assert_eq!(
        (p.duration, p.period, p.settle),
        (
            Duration::from_secs(120),
            Some(Duration::from_millis(5)),
            Some(Duration::from_secs(1))
        )
    );
    let Step::FaultCutNetwork(c) = step("fault.cut_network", "after: 500ms, for: 3s") else {
        unreachable!()
    };
    assert_eq!(
        (c.after, c.duration),
        (Duration::from_millis(500), Duration::from_secs(3))
    );
    let zero = step("probe.latency", "name: a, for: 5s, period: 0ms");
    assert_eq!(zero.check(), Err("`period` must be more than zero".into()));
}

#[test]
fn a_power_cut_draws_its_percent_from_a_range_with_an_id() {
    let ok = step("fault.power_cut", "at_percent_between: [10, 80], id: x");
    assert_eq!(ok.check(), Ok(()));
    for (body, says) in [
        ("at_percent_between: [80, 10], id: x", "low <= high"),
        ("at_percent_between: [10, 101], id: x", "<= 100"),
        ("at_percent_between: [10, 80]", "needs `id`"),
        ("at_percent_between: [10, 80], at_percent: 5, id: x", "not both"),
    ] {
        let e = step("fault.power_cut", body).check().unwrap_err();
        assert!(e.contains(says), "{body}: {e}");
    }
}
