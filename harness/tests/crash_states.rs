//! The crash-state check proven both ways on the same operation (a backup) with the same seed:
//! the daemon's writer (hidden partial file, fsync, rename) passes at every state checked, and
//! the daemon's test-only in-place writer (the final name before the data) is caught, with the
//! failing state kept as an image and the command that mounts it. A green crash-state run
//! proves something only next to this red one. Needs root, a container engine,
//! qemu-storage-daemon and the debug `nexus-backupd` (`ci/test` does all).

use std::path::Path;

use nexus_harness::crash_states::{self, ops::Op, Options, RecordOn};
use nexus_harness::report::crash::{self, CrashReport};

fn check(dir: &Path, broken_writer: bool) -> CrashReport {
    let opts = Options {
        on: RecordOn::Emulator,
        standin_backupd: None,
        ops: vec![Op::Backup],
        max_states: 6,
        prefixes: 1,
        seed: 7,
        content: 64 << 20,
        broken_writer,
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

#[test]
fn the_daemons_writer_survives_every_state_and_a_writer_that_names_first_is_caught() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the crash-state check mounts card images and starts privileged containers: use ci/test"
    );
    let work = tempfile::Builder::new()
        .prefix("nexus-crash-states-")
        .tempdir()
        .unwrap();

    let good = check(&work.path().join("safe"), false);
    let op = &good.operations[0];
    assert_eq!(op.error, None, "the backup was recorded and its states checked");
    assert!(op.flush_points >= 6, "a backup flushes many times: {op:?}");
    assert!(
        op.states_checked >= 6,
        "six flush points and a prefix between two: {op:?}"
    );
    assert!(op.violations.is_empty(), "the daemon's writer: {:?}", op.violations);

    let bad = check(&work.path().join("in-place"), true);
    let op = &bad.operations[0];
    assert_eq!(op.error, None, "the broken writer's backup was recorded and checked");
    let caught: Vec<_> = op
        .violations
        .iter()
        .filter(|v| v.check == "backups" && v.what.contains("does not decrypt"))
        .collect();
    assert!(
        !caught.is_empty(),
        "a state with a half-written backup under its final name must be caught: {:?}",
        op.violations
    );
    let kept = op
        .violations
        .iter()
        .find_map(|v| v.image.clone())
        .expect("the failing state is kept");
    assert!(Path::new(&kept).is_file(), "{kept} is kept");
    let mount = op.violations[0].mount.clone().unwrap_or_default();
    assert!(mount.contains("offset=") && mount.contains(&kept), "{mount}");
}
