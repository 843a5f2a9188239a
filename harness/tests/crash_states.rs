//! Every crash-state check seen catching its own failure: the real nexus-backupd passes every
//! state checked of a backup, a backup Delete, a snapshot Delete and an Activate, and each
//! broken daemon (one test-only fault per check, allowed only on the harness's throwaway
//! emulator) is caught on the operation that shows it, with the same seed, by the check meant
//! for it. A green crash-state run proves something only next to these red ones. Small (two
//! states per operation for the real daemon, the last one for most broken ones, a 32 MiB
//! backup) because it runs in CI. Needs root, a container
//! engine, qemu-storage-daemon and the debug `nexus-backupd` (`ci/test` does all).

use std::path::Path;

use nexus_harness::crash_states::{self, broken::BrokenDaemon, ops::Op, Options, RecordOn};
use nexus_harness::report::crash::{self, CrashReport};

fn check(dir: &Path, broken_daemon: Option<BrokenDaemon>, ops: Vec<Op>) -> CrashReport {
    // Every broken daemon but the writer shows from the operation's end on, and the last state
    // is always among those checked; a backup half written is in the middle of one.
    let (max_states, prefixes) = match broken_daemon {
        None => (2, 0),
        Some(BrokenDaemon::PublishBeforeSync) => (6, 1),
        Some(_) => (1, 0),
    };
    let opts = Options {
        on: RecordOn::Emulator,
        standin_backupd: None,
        ops,
        max_states,
        prefixes,
        reorder: 0,
        torn: false,
        seed: 7,
        content: 32 << 20,
        broken_daemon,
        report_dir: dir.to_owned(),
        backupd: None,
        keep: 1,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(crash_states::run(&opts, &|m: &str| eprintln!("{m}")))
        .expect("the crash-state run starts");
    eprintln!("{}", crash::table(&report));
    report
}

fn require_root() -> tempfile::TempDir {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the crash-state check mounts card images and starts privileged containers: use ci/test"
    );
    tempfile::Builder::new()
        .prefix("nexus-crash-states-")
        .tempdir()
        .unwrap()
}

fn header() -> String {
    format!(
        "{:<22} {:<16} {:<16} {}\n",
        "daemon", "operation", "expected check", "checks that failed"
    )
}

/// The real daemon on a backup, a backup Delete, a snapshot Delete and an Activate: no check
/// fails at any state checked. (The broken daemons are the next tests, so the three run side
/// by side.)
#[test]
fn the_real_daemon_passes_every_check() {
    let work = require_root();
    let mut failures = Vec::new();
    let mut table = header();
    let ops = vec![Op::Backup, Op::BackupDelete, Op::SnapshotDelete, Op::Activate];
    let good = check(&work.path().join("real"), None, ops.clone());
    assert_eq!(good.operations.len(), ops.len());
    for op in &good.operations {
        let checks: Vec<&str> = op.violations.iter().map(|v| v.check.as_str()).collect();
        table.push_str(&format!(
            "{:<22} {:<16} {:<16} {checks:?}\n",
            "real", op.operation, "(none)"
        ));
        if op.error.is_some() || !op.violations.is_empty() || op.states_checked == 0 {
            failures.push(format!(
                "the real daemon on {}: error {:?}, {} state(s) checked, violations {:?}",
                op.operation, op.error, op.states_checked, op.violations
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

#[test]
fn the_writer_the_earlier_backups_and_activate_checks_catch_their_broken_daemons() {
    broken_daemons_are_caught(&BrokenDaemon::ALL[..3]);
}

#[test]
fn the_automation_ids_and_listing_checks_catch_their_broken_daemons() {
    broken_daemons_are_caught(&BrokenDaemon::ALL[3..]);
}

/// Each of `daemons` is caught on the operation that shows it, with the same seed, by the
/// check meant for it.
fn broken_daemons_are_caught(daemons: &[BrokenDaemon]) {
    let work = require_root();
    let mut failures = Vec::new();
    let mut table = header();
    for &b in daemons {
        let bad = check(&work.path().join(b.name()), Some(b), vec![b.op()]);
        let op = &bad.operations[0];
        let mut checks: Vec<&str> = op.violations.iter().map(|v| v.check.as_str()).collect();
        checks.dedup();
        table.push_str(&format!(
            "{:<22} {:<16} {:<16} {checks:?}\n",
            b.name(),
            op.operation,
            b.check()
        ));
        assert!(
            crash::table(&bad).contains(b.name()),
            "the report names the broken daemon"
        );
        if op.error.is_some() || !checks.contains(&b.check()) {
            failures.push(format!(
                "{} on {}: the {} check did not catch it (error {:?}; violations {:?})",
                b.name(),
                op.operation,
                b.check(),
                op.error,
                op.violations
            ));
        }
        if b == BrokenDaemon::PublishBeforeSync {
            // The failing state is kept, with the command that mounts it.
            if let Some(v) = op.violations.iter().find(|v| v.image.is_some()) {
                let kept = v.image.clone().unwrap_or_default();
                assert!(Path::new(&kept).is_file(), "{kept} is kept");
                let mount = v.mount.clone().unwrap_or_default();
                assert!(mount.contains("offset=") && mount.contains(&kept), "{mount}");
            }
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}
