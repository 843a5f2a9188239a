//! Every crash-state check seen catching its own failure: the real nexus-backupd passes every
//! state checked of a backup, a backup Delete, a snapshot Delete and an Activate, and each
//! broken daemon (one test-only fault per check, allowed only on the harness's throwaway
//! emulator) is caught on the operation that shows it, with the same seed, by the check meant
//! for it. A green crash-state run proves something only next to these red ones. Beyond in-order
//! prefixes: the real daemon also passes states that drop a write of a flush epoch (reordered),
//! and states that tear one write at a sector are checked, what they break named and kept (a
//! torn btrfs superblock does not mount: a finding about btrfs, not the daemon). Small (two
//! states per operation and kind for the real daemon, the last one for most broken ones, a
//! 32 MiB backup) because it runs in CI. Needs root, a container
//! engine, qemu-storage-daemon and the debug `nexus-backupd` (`ci/test` does all).

use std::path::Path;

use nexus_harness::crash_states::{self, BrokenDaemon, Op, Options, RecordOn};
use nexus_harness::report::crash::{self, CrashReport};

fn check(dir: &Path, broken_daemon: Option<BrokenDaemon>, ops: Vec<Op>) -> CrashReport {
    // Every broken daemon but the writer shows from the operation's end on, and the last state
    // is always among those checked; a backup half written is in the middle of one. The real
    // daemon also gets two reordered states per operation.
    let (max_states, prefixes, reorder) = match broken_daemon {
        None => (2, 0, 1),
        Some(BrokenDaemon::PublishBeforeSync) => (6, 1, 0),
        Some(_) => (1, 0, 0),
    };
    run(dir, broken_daemon, ops, max_states, prefixes, reorder, false)
}

fn run(
    dir: &Path,
    broken_daemon: Option<BrokenDaemon>,
    ops: Vec<Op>,
    max_states: usize,
    prefixes: usize,
    reorder: usize,
    torn: bool,
) -> CrashReport {
    let opts = Options {
        on: RecordOn::Emulator,
        standin_backupd: None,
        ops,
        max_states,
        prefixes,
        reorder,
        torn,
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
/// fails at any state checked, flush points and reordered states (a write of a flush epoch
/// dropped) alike. (The broken daemons are the next tests, so the three run side by side.)
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
        let no_reordered = op.reordered_candidates > 0 && op.reordered_checked == 0;
        if op.error.is_some() || !op.violations.is_empty() || op.states_checked == 0 || no_reordered {
            failures.push(format!(
                "the real daemon on {}: error {:?}, {} state(s) checked ({} reordered of {}), violations {:?}",
                op.operation, op.error, op.states_checked, op.reordered_checked, op.reordered_candidates, op.violations
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

/// Torn states of the real daemon's backup: each one write of a flush epoch cut at a sector,
/// checked like any other. The flush points pass; what a torn state breaks is named (its
/// entry, epoch, the torn write and the sectors kept) and its card kept with the command that
/// mounts it. What they break is btrfs's, not the daemon's: a torn primary superblock
/// (rewritten in place at every commit) fails its checksum, and the card does not mount.
#[test]
fn torn_states_are_checked_and_what_they_break_is_named_and_kept() {
    let work = require_root();
    let r = run(&work.path().join("torn"), None, vec![Op::Backup], 4, 0, 0, true);
    let op = &r.operations[0];
    assert!(op.error.is_none(), "{:?}", op.error);
    assert!(
        op.torn_candidates > 4,
        "a backup has many writes to tear: {}",
        op.torn_candidates
    );
    assert_eq!(op.torn_checked, 4, "{}", crash::table(&r));
    assert!(crash::table(&r).contains("torn states (one write cut at a 512-byte sector)"));
    for v in &op.violations {
        assert_eq!(v.kind, "torn", "only a torn state may fail: {v:?}");
        assert!(v.state.contains("cut after"), "{v:?}");
        eprintln!("FINDING (btrfs, not the daemon): {}: {}: {}", v.state, v.check, v.what);
    }
    if let Some(v) = op.violations.first() {
        let kept = v.image.clone().unwrap_or_default();
        assert!(kept.contains("-torn-") && Path::new(&kept).is_file(), "{v:?}");
        assert!(v.mount.as_deref().unwrap_or_default().contains(&kept), "{v:?}");
    }
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
