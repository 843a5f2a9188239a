//! Loading scenario files: every kind of mistake gets a message that names the file, the line
//! and what to do; and every file of the default suite loads.

use std::path::Path;

use nexus_scenario::Scenario;

fn error_of(text: &str) -> String {
    Scenario::parse(text, Path::new("scenarios/bad.yaml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_step_names_the_steps_there_are() {
    let e = error_of("name: x\nsteps:\n  - dbus.calll:\n      as: root\n");
    assert!(e.starts_with("scenarios/bad.yaml:3:"), "{e}");
    assert!(
        e.contains("unknown step") && e.contains("dbus.calll") && e.contains("backup.wait"),
        "{e}"
    );
}

#[test]
fn missing_field_is_named_with_its_line() {
    let e = error_of("name: x\nsteps:\n  - backup.wait:\n      as: root\n");
    assert!(e.starts_with("scenarios/bad.yaml:"), "{e}");
    assert!(e.contains("missing field `id`"), "{e}");
}

#[test]
fn bad_type_is_named_with_its_line() {
    let e = error_of("name: x\nsteps:\n  - http.get:\n      path: /x\n      expect_status: lots\n");
    assert!(e.starts_with("scenarios/bad.yaml:5:"), "{e}");
    assert!(e.to_lowercase().contains("invalid digit") || e.contains("lots"), "{e}");
}

#[test]
fn unknown_field_lists_the_known_ones() {
    let e = error_of("name: x\nsteps:\n  - ssh.run:\n      as: nexus\n      command: id\n      expect_code: 0\n");
    assert!(e.starts_with("scenarios/bad.yaml:6:"), "{e}");
    assert!(e.contains("expect_code") && e.contains("expect_exit"), "{e}");
}

#[test]
fn unknown_variable_says_where_variables_come_from() {
    let text = "name: x\nvars:\n  password: p\nsteps:\n  - dbus.call:\n      as: root\n      service: tech.noreya.Backup1\n      method: Create\n      args: [\"${snap}\", \"${password}\"]\n";
    let e = error_of(text);
    assert!(e.starts_with("scenarios/bad.yaml:5:"), "{e}");
    assert!(
        e.contains("unknown variable ${snap}") && e.contains("known here: password"),
        "{e}"
    );
}

#[test]
fn a_variable_is_known_only_after_the_step_that_captures_it() {
    let text = "name: x\nsteps:\n  - backup.wait: {as: root, id: \"${id}\"}\n  - dbus.call: {as: root, service: tech.noreya.Snapshot1, method: Create, args: [true, true, x], capture: id}\n";
    let e = error_of(text);
    assert!(e.starts_with("scenarios/bad.yaml:3:") && e.contains("${id}"), "{e}");
    let ok = "name: x\nsteps:\n  - dbus.call: {as: root, service: tech.noreya.Snapshot1, method: Create, args: [true, true, x], capture: id}\n  - backup.wait: {as: root, id: \"${id}\"}\n  - ssh.run: {as: root, command: 'echo $${HOME} ${id}'}\n";
    Scenario::parse(ok, Path::new("ok.yaml")).unwrap();
}

#[test]
fn broken_yaml_and_bad_durations_point_at_the_spot() {
    let e = error_of("name: x\nsteps:\n  - ssh.run: {as: root, command: a: b}\n");
    assert!(
        e.starts_with("scenarios/bad.yaml:3:") && e.contains("not valid YAML"),
        "{e}"
    );
    let e = error_of("name: x\nsteps:\n  - ssh.run: {as: root, command: id, timeout: soon}\n");
    assert!(e.contains("timeout") && e.contains("30s"), "{e}");
    let e = error_of("name: x\nsteps:\n  - ssh.run: {as: root, command: id, timeout: 99999999999999999h}\n");
    assert!(
        e.starts_with("scenarios/bad.yaml:3:") && e.contains("longer than any run"),
        "{e}"
    );
    let e = error_of("name: x\nsteps: []\n");
    assert!(e.contains("no steps"), "{e}");
}

#[test]
fn every_file_of_the_default_suite_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = nexus_scenario::discover(&[dir.clone(), dir.join("faults"), dir.join("perf")]).unwrap();
    assert!(files.len() >= 9, "{files:?}");
    for f in files {
        let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !s.description.is_empty(),
            "{}: describe what the scenario shows",
            f.display()
        );
    }
}

#[test]
fn iteration_is_known_only_inside_repeat() {
    let inside = "name: x\nsteps:\n  - repeat:\n      times: 3\n      steps:\n        - ssh.run: {as: root, command: 'echo ${iteration}'}\n";
    Scenario::parse(inside, Path::new("ok.yaml")).unwrap();
    let outside = format!("{inside}  - ssh.run: {{as: root, command: 'echo ${{iteration}}'}}\n");
    let e = error_of(&outside);
    assert!(
        e.starts_with("scenarios/bad.yaml:7:") && e.contains("${iteration}"),
        "{e}"
    );
    let e = error_of("name: x\nsteps:\n  - repeat: {times: 0, steps: [{ssh.run: {as: root, command: id}}]}\n");
    assert!(e.contains("at least 1"), "{e}");
}

#[test]
fn probe_mistakes_are_named() {
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 0s}\n");
    assert!(
        e.starts_with("scenarios/bad.yaml:3:") && e.contains("`for` must be more than zero"),
        "{e}"
    );
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, max_p99_ratio: 1.2}\n");
    assert!(e.contains("`max_p99_ratio` needs `compare_to`"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, settle: 1s}\n");
    assert!(e.contains("give `during` too"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, period: fast}\n");
    assert!(e.contains("`period`") && e.contains("500ms"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, alternate_with: idle}\n");
    assert!(e.contains("`alternate_with`") && e.contains("give `during` too"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, windows: 3}\n");
    assert!(e.contains("give `alternate_with`"), "{e}");
    let e = error_of(
        "name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, during: x, alternate_with: b, compare_to: c}\n",
    );
    assert!(e.contains("drop `compare_to`"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, during: x, alternate_with: a}\n");
    assert!(e.contains("a name of its own"), "{e}");
    let e = error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 5s, during: x, alternate_with: b}\n");
    assert!(e.contains("under 1s per window") && e.contains("fewer windows"), "{e}");
    let e =
        error_of("name: x\nsteps:\n  - probe.latency: {name: a, for: 50s, during: x, alternate_with: b, windows: 1}\n");
    assert!(e.contains("`windows`: use 2..100"), "{e}");
    let e = error_of("name: x\nsteps:\n  - fault.slow_io: {read_bytes_per_sec: lots}\n");
    assert!(e.starts_with("scenarios/bad.yaml:3:"), "{e}");
}

#[test]
fn the_format_documentation_describes_every_step() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/README.md")).unwrap();
    for name in nexus_scenario::Step::NAMES {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "scenarios/README.md has no table row for `{name}`"
        );
    }
}
