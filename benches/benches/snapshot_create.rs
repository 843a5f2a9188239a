//! Time of `Snapshot1.Create`'s work (read-only btrfs snapshot + info.json + state, all synced) on
//! a subvolume holding 256 MiB, 1 GiB and 4 GiB (256 MiB and 1 GiB with NEXUS_BENCH_QUICK=1):
//! btrfs snapshots are O(1), so the figures should stay flat.
//! Needs root (loop device, mount); as another user it says so and measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use nexus_benches::{fill_pseudo_random, free_bytes, LoopBtrfs};
use nexus_emulator::layout::Layout;
use nexus_emulator::snapshot::SnapshotStore;
use nexus_emulator::state::SharedState;
use nexus_emulator::subvolume::Subvolumes;

fn snapshot_create(c: &mut Criterion) {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("snapshot_create: needs root to mount a btrfs image; run `sudo cargo bench -p nexus-benches`");
        return;
    }
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshot-bench");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // Quick (CI): the benchmark must run, not measure well.
    let sizes: &[(u64, &str)] = if nexus_benches::quick() {
        &[(256 << 20, "256MiB"), (1 << 30, "1GiB")]
    } else {
        &[(256 << 20, "256MiB"), (1 << 30, "1GiB"), (4 << 30, "4GiB")]
    };
    // The image is sparse: the host's disk takes what is written (the data, btrfs's metadata
    // twice over, the snapshots' few blocks). A host disk that fills fails the loop device's
    // writes and btrfs turns read-only; say so before rather than fail in the middle.
    let need = sizes.iter().map(|s| s.0).max().unwrap_or(0) + (512 << 20);
    let free = free_bytes(&tmp).expect("free space of the target folder's disk");
    assert!(
        free >= need,
        "snapshot_create: the disk holding {} has {} MiB free and this bench writes about {} MiB: \
         free some space (or point CARGO_TARGET_DIR at a larger disk) and run it again",
        tmp.display(),
        free >> 20,
        need >> 20
    );
    let fs = LoopBtrfs::new(&tmp, 6 << 30).expect("loop-mounted btrfs");
    let broot = fs.mount.clone();
    let mut group = c.benchmark_group("snapshot_create");
    group.sample_size(20);
    let mut filled = 0u64;
    for &(size, label) in sizes {
        for sub in ["system", "data"] {
            if !broot.join(sub).exists() {
                Subvolumes::Btrfs.create(&broot.join(sub)).unwrap();
            }
        }
        grow(&fs, &broot.join("system"), &mut filled, size);
        std::fs::create_dir_all(broot.join("snapshot/snapshots")).unwrap();
        let state = Arc::new(SharedState::open(&broot.join(".nexus-backupd")).unwrap());
        let store = SnapshotStore::new(
            Layout::new(&broot, &broot.join(".nexus-backupd")),
            Subvolumes::Btrfs,
            state,
        );
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let info = store
                        .create(true, false, "bench")
                        .unwrap_or_else(|e| panic!("Snapshot1.Create on the bench's btrfs: {e}\n{}", fs.diagnose()));
                    total += t.elapsed();
                    store
                        .delete(info.id)
                        .unwrap_or_else(|e| panic!("Snapshot1.Delete on the bench's btrfs: {e}\n{}", fs.diagnose()));
                }
                total
            })
        });
    }
    group.finish();
}

/// Adds 64 MiB files to `dir` (on `fs`) until it holds `size` bytes, synced (`sync -f`: the
/// file system's own sync, which reports a write that failed underneath).
fn grow(fs: &LoopBtrfs, dir: &std::path::Path, filled: &mut u64, size: u64) {
    let mut buf = vec![0u8; 64 << 20];
    while *filled < size {
        fill_pseudo_random(&mut buf, *filled + 1);
        let file = dir.join(format!("blob{}", *filled >> 26));
        std::fs::write(&file, &buf).unwrap_or_else(|e| panic!("writing {}: {e}\n{}", file.display(), fs.diagnose()));
        *filled += buf.len() as u64;
    }
    let synced = std::process::Command::new("sync").arg("-f").arg(dir).status();
    if !synced.as_ref().is_ok_and(|s| s.success()) {
        panic!("sync -f {} failed ({synced:?})\n{}", dir.display(), fs.diagnose());
    }
}

criterion_group!(benches, snapshot_create);
criterion_main!(benches);
