//! Time of `Snapshot1.Create`'s work (read-only btrfs snapshot + info.json + state, all synced) on
//! a subvolume holding 256 MiB, 1 GiB and 4 GiB (256 MiB and 1 GiB with NEXUS_BENCH_QUICK=1):
//! btrfs snapshots are O(1), so the figures should stay flat.
//! Needs root (loop device, mount); as another user it says so and measures nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use nexus_benches::{fill_pseudo_random, LoopBtrfs};
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
        grow(&broot.join("system"), &mut filled, size);
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
                    let info = store.create(true, false, "bench").unwrap();
                    total += t.elapsed();
                    store.delete(info.id).unwrap();
                }
                total
            })
        });
    }
    group.finish();
}

/// Adds 64 MiB files to `dir` until it holds `size` bytes, synced.
fn grow(dir: &std::path::Path, filled: &mut u64, size: u64) {
    let mut buf = vec![0u8; 64 << 20];
    while *filled < size {
        fill_pseudo_random(&mut buf, *filled + 1);
        std::fs::write(dir.join(format!("blob{}", *filled >> 26)), &buf).unwrap();
        *filled += buf.len() as u64;
    }
    std::process::Command::new("sync").status().unwrap();
}

criterion_group!(benches, snapshot_create);
criterion_main!(benches);
