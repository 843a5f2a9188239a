use std::time::Duration;

use super::Step;

/// The smallest body each step accepts; a step missing here fails `every_step_reads_its_timeout`.
const MINIMAL: &[(&str, &str)] = &[
    ("dbus.call", "as: root, service: tech.noreya.Backup1, method: GetList"),
    ("backup.wait", "as: root, id: x"),
    ("ssh.run", "as: root, command: id"),
    ("ssh.put", "as: root, path: /x, content: y"),
    ("ssh.edit", "path: /x, sed: s/a/b/"),
    ("ssh.restore", "path: /x"),
    ("http.get", "path: /"),
    ("http.hold", "connections: 1, mode: idle"),
    ("scp.get", "as: root, remote: a, local: b"),
    ("scp.put", "as: root, local: a, remote: b"),
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
    ("fault.replace_card", ""),
    ("fault.io_error", "what: [write]"),
    ("probe.latency", "name: a, for: 5s"),
    ("browser.open", "path: /"),
    ("browser.click", "selector: '@login'"),
    ("browser.fill", "selector: 'input#username', value: admin"),
    ("browser.read", "selector: '@backup_password', capture: pw"),
    ("browser.wait_for", "selector: '#progress'"),
    ("browser.download", "selector: '@download', save: b.tar.gpg"),
    ("browser.screenshot", "name: after-login"),
    ("browser.expect_text", "selector: '@state', contains: done"),
    ("browser.login", ""),
    ("browser.expect_absent", "value: x"),
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

#[test]
fn a_failing_card_names_what_fails_and_when() {
    let Step::FaultIoError(e) = step(
        "fault.io_error",
        "what: [write, flush], count: 3, during: {backup.wait: {as: root, id: '${snap}', expect_result: any}}",
    ) else {
        unreachable!()
    };
    assert_eq!((e.what.len(), e.count), (2, 3));
    let io = Step::FaultIoError(e);
    assert_eq!(io.check(), Ok(()));
    assert!(
        io.texts().contains(&"${snap}"),
        "the inner step's variables are checked too"
    );
    assert_eq!(
        step("fault.io_error", "what: [flush], at_percent: 5, id: x").check(),
        Ok(())
    );
    assert_eq!(
        step("fault.io_error", "what: [write], after: 1s, for: 10s").check(),
        Ok(())
    );
    for (body, says) in [
        ("what: []", "name the requests to fail"),
        ("what: [write, write]", "each kind once"),
        ("what: [write], count: 0", "1 to 10000"),
        ("what: [write], count: 10001", "1 to 10000"),
        ("what: [write], at_percent: 5", "go together"),
        ("what: [write], at_percent: 5, id: x, after: 1s", "not both"),
        (
            "what: [write], for: 5s, during: {ssh.run: {as: root, command: id}}",
            "remove `for`",
        ),
        ("what: [write], during: {fault.reboot: {}}", "not fault.reboot"),
        (
            "what: [write], during: {ssh.run: {as: root, command: id, capture: x}}",
            "remove its `capture`",
        ),
    ] {
        let e = step("fault.io_error", body).check().unwrap_err();
        assert!(e.contains(says), "{body}: {e}");
    }
    let e = marked_yaml::from_yaml::<Step>(0, "fault.io_error: {what: [read]}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("read"), "{e}");
}

#[test]
fn a_power_cut_after_a_seeded_delay_comes_during_a_step_that_captures_nothing() {
    let Step::FaultPowerCut(p) = step(
        "fault.power_cut",
        "after_between: [200ms, 2s], during: {dbus.call: {as: root, service: tech.noreya.Snapshot1, method: Create, args: [true, true, '${what}']}}",
    ) else {
        unreachable!()
    };
    assert_eq!(
        p.after_between,
        Some((Duration::from_millis(200), Duration::from_secs(2)))
    );
    let cut = Step::FaultPowerCut(p);
    assert_eq!(cut.check(), Ok(()));
    assert!(
        cut.texts().contains(&"${what}"),
        "the inner step's variables are checked too"
    );
    assert_eq!(step("fault.power_cut", "after: 1s").check(), Ok(()));
    assert_eq!(
        step("fault.power_cut", "at_percent: 30, id: x, inspect: true").check(),
        Ok(())
    );
    for (body, says) in [
        ("after: 1s, after_between: [1s, 2s]", "not both"),
        ("after_between: [2s, 1s]", "low <= high"),
        ("after: 1s, at_percent: 5, id: x", "not both"),
        ("after_between: [1s, 2s], at_percent_between: [1, 5], id: x", "not both"),
        ("after: 1s, id: x", "needs none"),
        ("inspect: true, stay_off: true", "remove `stay_off`"),
        (
            "during: {ssh.run: {as: root, command: id}}",
            "needs `after` or `after_between`",
        ),
        ("after: 1s, during: {fault.reboot: {}}", "not fault.reboot"),
        (
            "after: 1s, during: {ssh.run: {as: root, command: id, capture: x}}",
            "captures nothing",
        ),
        (
            "after: 1s, during: {ssh.run: {as: root, command: id, capture_word: 2}}",
            "`during`: ssh.run: `capture_word` needs `capture`",
        ),
    ] {
        let e = step("fault.power_cut", body).check().unwrap_err();
        assert!(e.contains(says), "{body}: {e}");
    }
    let e = marked_yaml::from_yaml::<Step>(0, "fault.power_cut: {after_between: [1s, soon]}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"soon\" is not a duration"), "{e}");
}

#[test]
fn an_archive_matches_the_snapshot_on_the_device_or_a_saved_copy_of_it() {
    assert_eq!(
        step("archive.matches_snapshot", "archive: a, saved: b.tar").check(),
        Ok(())
    );
    let saved = step("archive.matches_snapshot", "dir: '${d}', saved: '${copy}'");
    assert_eq!(saved.texts(), ["${copy}", "${d}"]);
    for body in ["archive: a", "archive: a, snapshot: s, saved: b"] {
        let e = step("archive.matches_snapshot", body).check().unwrap_err();
        assert!(e.contains("exactly one of `snapshot`"), "{body}: {e}");
    }
}

#[test]
fn a_command_that_writes_the_devices_own_files_is_refused_with_the_steps_that_record() {
    use super::unrecorded_write;
    for (cmd, path) in [
        (
            "echo \"remotebackup ALL=NOPASSWD: ALL\" > /etc/sudoers.d/90_remotebackup",
            "/etc/sudoers.d/90_remotebackup",
        ),
        ("echo x >>/home/nexus/.profile", "/home/nexus/.profile"),
        (
            "sed -i 's/a/b/' /etc/nexus/backupd.toml && systemctl restart x",
            "/etc/nexus/backupd.toml",
        ),
        ("cp /tmp/x /usr/local/bin/helper", "/usr/local/bin/helper"),
        ("true; rm -f /usr/local/bin/a /usr/local/bin/b", "/usr/local/bin/a"),
        (
            "echo k | sudo tee -a /root/.ssh/authorized_keys",
            "/root/.ssh/authorized_keys",
        ),
    ] {
        assert_eq!(unrecorded_write(cmd).as_deref(), Some(path), "{cmd}");
    }
    // Reading the device's files, and writing data, temporary and runtime places, are fine.
    for cmd in [
        "cat /etc/nexus/backupd.toml > /tmp/copy",
        "install -m 0644 /home/nexus/b.tar.gpg /broot/backups/",
        "journalctl -u nexus-backupd > /dev/null 2>&1",
        "cp /etc/hostname /run/x && rm -f /tmp/y",
        "grep -c x /etc/passwd",
        "echo 'a > b'",
    ] {
        assert_eq!(unrecorded_write(cmd), None, "{cmd}");
    }
    let e = marked_yaml::from_yaml::<Step>(0, "ssh.run: {as: root, command: 'echo x > /etc/motd'}")
        .map_err(|e| e.to_string())
        .and_then(|s| s.check());
    let e = e.unwrap_err();
    assert!(
        e.contains("/etc/motd") && e.contains("ssh.put") && e.contains("ssh.edit"),
        "{e}"
    );
}

#[test]
fn browser_steps_take_selectors_by_css_or_key_and_capture_what_they_read() {
    let read = step(
        "browser.read",
        "selector: 'tr[data-id=\"${id}\"]', attribute: '${attr}', capture: pw, secret: true",
    );
    assert_eq!(read.texts(), ["tr[data-id=\"${id}\"]", "${attr}"]);
    assert_eq!(read.captures(), Some("pw"));
    let Step::BrowserRead(r) = read else { unreachable!() };
    assert!(r.secret);
    let Step::BrowserWaitFor(w) = step("browser.wait_for", "selector: '@progress', gone: true, timeout: 2m") else {
        unreachable!()
    };
    assert_eq!((w.gone, w.timeout), (true, Some(Duration::from_secs(120))));
    let fill = step("browser.fill", "selector: '@password', value: '${pw}', secret: true");
    assert_eq!(fill.texts(), ["@password", "${pw}"]);
    for (name, body, says) in [
        ("browser.click", "selector: ''", "`selector` is empty"),
        ("browser.click", "selector: '@log in'", "letters, digits or `_`"),
        ("browser.click", "selector: '@'", "letters, digits or `_`"),
        ("browser.read", "selector: a, capture: 'p w'", "capture \"p w\""),
        (
            "browser.download",
            "selector: a, save: ../x",
            "inside the scenario's work folder",
        ),
        (
            "browser.download",
            "selector: a, save: /tmp/x",
            "inside the scenario's work folder",
        ),
        ("browser.screenshot", "name: ''", "inside the scenario's work folder"),
        ("browser.open", "path: login", "starting with `/`"),
    ] {
        let e = step(name, body).check().unwrap_err();
        assert!(e.contains(says), "{name} {body}: {e}");
    }
}

#[test]
fn a_command_that_changes_a_device_beyond_any_record_is_named() {
    use super::throwaway_change;
    for (cmd, said) in [
        (
            "yes x | head -c 4194304 > /broot/data/unflushed",
            "writes /broot/data/unflushed",
        ),
        (
            "ln -s /etc/shadow /broot/backups/nexus_backup_77.tar.gpg",
            "writes /broot/backups/nexus_backup_77.tar.gpg",
        ),
        ("dd if=/dev/zero of=/broot/data/x bs=1M", "writes /broot/data/x"),
        (
            "p1=$(findmnt -no SOURCE /broot | sed 's/2$/1/') && yes r | dd of=$p1 bs=64k",
            "writes $p1 with dd",
        ),
        (
            "dd if=x of=/dev/mmcblk0p1 oflag=direct",
            "writes the block device /dev/mmcblk0p1",
        ),
        ("cat img > /dev/sda", "writes the block device /dev/sda"),
        ("systemctl stop nexus-automation; sync", "`systemctl stop`"),
        ("sudo systemctl mask nexus-backupd", "`systemctl mask`"),
        ("mkfs.btrfs -f /dev/vdb", "runs mkfs.btrfs"),
        (
            "dbus-send --system --dest=tech.noreya.Snapshot1 / tech.noreya.Snapshot1.Activate uint32:3",
            "activates a snapshot",
        ),
    ] {
        let got = throwaway_change(cmd).unwrap_or_else(|| panic!("{cmd}: not named"));
        assert!(got.contains(said), "{cmd}: {got}");
    }
    // Reading the card, writing to /dev/null or /tmp, restarting or asking about a unit: fine.
    for cmd in [
        "sha256sum /broot/backups/nexus_backup_3.tar.gpg | cut -c1-64",
        "ls -A /broot/backups > /tmp/list 2>/dev/null",
        "dd if=/dev/mmcblk0p1 of=/tmp/boot.img bs=1M count=1",
        "systemctl is-active nexus-automation; systemctl restart nexus-backupd",
        "find /broot -newer /tmp/x | wc -l",
        "journalctl -u nexus-backupd > /dev/null",
    ] {
        assert_eq!(throwaway_change(cmd), None, "{cmd}");
    }
}

#[test]
fn a_failing_card_can_fail_only_the_backups_data() {
    let Step::FaultIoError(e) = step(
        "fault.io_error",
        "what: [write], where: backup_data, at_percent: 20, id: '${snap}', for: 60s",
    ) else {
        unreachable!()
    };
    assert_eq!(e.place, super::IoWhere::BackupData);
    assert_eq!(Step::FaultIoError(e).check(), Ok(()));
    let Step::FaultIoError(e) = step("fault.io_error", "what: [write]") else {
        unreachable!()
    };
    assert_eq!(e.place, super::IoWhere::Anywhere);
    for (body, says) in [
        (
            "what: [write, flush], where: backup_data, at_percent: 5, id: x",
            "`what: [write]`",
        ),
        (
            "what: [flush], where: backup_data, at_percent: 5, id: x",
            "`what: [write]`",
        ),
        (
            "what: [write], where: backup_data, after: 1s, during: {ssh.run: {as: root, command: id}}",
            "give `at_percent` and `id`",
        ),
    ] {
        let e = step("fault.io_error", body).check().unwrap_err();
        assert!(e.contains(says), "{body}: {e}");
    }
    let e = marked_yaml::from_yaml::<Step>(0, "fault.io_error: {what: [write], where: metadata}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata"), "{e}");
}
