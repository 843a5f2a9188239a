//! The benches' loop-mounted btrfs says why it failed when its host disk fills: the case that
//! turned `snapshot_create` read-only in CI with nothing but "Read-only file system" to go on.
//! Needs root (tmpfs and loop mounts), as `ci/test` runs it.

use std::path::Path;
use std::process::Command;

use nexus_benches::{free_bytes, LoopBtrfs};

/// A small tmpfs standing in for a nearly full host disk, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs (needs root: run the tests with ci/test)");
        SmallDisk(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_host_disk_is_named_when_the_loop_btrfs_fails() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test mounts a tmpfs and a loop device: run it as root (ci/test does)"
    );
    let disk = SmallDisk::new(400);
    assert!(free_bytes(disk.path()).unwrap() > 390 << 20);
    let fs = LoopBtrfs::new(disk.path(), 2 << 30).expect("a 2 GiB sparse btrfs on the 400 MiB disk");
    assert!(fs.device.starts_with("/dev/loop"), "device {:?}", fs.device);

    // More than the host disk holds: the page cache takes it, the loop device's writes fail.
    let mut buf = vec![0u8; 64 << 20];
    for i in 0..10 {
        nexus_benches::fill_pseudo_random(&mut buf, i + 1);
        if std::fs::write(fs.mount.join(format!("blob{i}")), &buf).is_err() {
            break;
        }
    }
    let synced = Command::new("sync").arg("-f").arg(&fs.mount).status().unwrap();
    assert!(
        !synced.success(),
        "sync -f reported no error although the host disk is full"
    );
    let after = std::fs::write(fs.mount.join("state"), b"x");
    assert!(after.is_err(), "btrfs took a write after its device failed");

    let why = fs.diagnose();
    eprintln!("{why}");
    assert!(why.contains(" 0 MiB free"), "the full disk is not named:\n{why}");
    assert!(
        why.contains("forced readonly"),
        "the kernel's read-only switch is not shown:\n{why}"
    );
}
