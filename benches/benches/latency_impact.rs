//! The home-automation loop's tick with and without a concurrent backup (nexus-backupd's
//! pipeline with the daemon's defaults: SCHED_IDLE, idle I/O class, 32 MiB/s read cap; writing to
//! the target folder's disk, looping over the mixed data set). Criterion measures the tick's
//! response: lateness against its absolute deadline plus the tick's own I/O (sensor reads,
//! state append, fdatasync every 10 ticks), 2 ms period. Also prints each condition's p99
//! lateness and their ratio; the harness's `probe.latency` table on the device is the
//! authoritative figure, this one tracks regressions commit by commit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use nexus_benches::{dataset_bytes, mixed_dataset, quick};
use nexus_emulator::automation::{Ticker, Workload};
use nexus_emulator::config::BackupConfig;
use nexus_emulator::pipeline::{encrypt_tree, Progress};

fn p99(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn ticks(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, dir: &Path) -> Duration {
    let mut w = Workload::new(dir);
    w.period = Duration::from_millis(2);
    let mut lateness = Vec::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut ticker = Ticker::new(&w).expect("the workload's folder");
            let mut response = Duration::ZERO;
            for _ in 0..iters {
                let t = ticker.tick().expect("the tick's I/O");
                lateness.push(t.lateness);
                response += t.lateness + t.io;
            }
            response
        })
    });
    p99(lateness)
}

fn latency_impact(c: &mut Criterion) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bytes = dataset_bytes();
    let src = tmp.join(format!("mixed-{bytes}"));
    mixed_dataset(&src, bytes).expect("make the data set");
    let dir = tmp.join("automation");
    let mut group = c.benchmark_group("latency_impact");
    // The returned time is the ticks' response, about a tenth of their wall time.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(if quick() { 200 } else { 1000 }));
    let idle = ticks(&mut group, "tick/idle", &dir);

    let stop = Arc::new(AtomicBool::new(false));
    let backup = {
        let stop = stop.clone();
        let (src, out) = (src.clone(), tmp.join("latency-backup.gpg"));
        std::thread::spawn(move || {
            let config = BackupConfig::default();
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let progress = Progress::default();
                let file = std::fs::File::create(&out).expect("backup output");
                // Cancelled from outside when the measurement is done.
                let watch = stop.clone();
                let r = std::thread::scope(|s| {
                    s.spawn(|| {
                        while !watch.load(Ordering::Relaxed) && progress.percent() < 100 {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        progress.cancel();
                    });
                    encrypt_tree(
                        &src,
                        &["system", "data"],
                        file,
                        "bench",
                        &config,
                        "b.tar",
                        &progress,
                        |_| {},
                    )
                });
                rounds += u32::from(r.is_ok());
            }
            let _ = std::fs::remove_file(&out);
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let busy = ticks(&mut group, "tick/during_backup", &dir);
    stop.store(true, Ordering::Relaxed);
    let rounds = backup.join().unwrap_or(0);
    group.finish();
    println!(
        "latency_impact: p99 lateness idle {idle:?}, during a backup {busy:?} (ratio {:.2}; {rounds} backups finished meanwhile)",
        busy.as_secs_f64() / idle.as_secs_f64().max(1e-9)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, latency_impact);
criterion_main!(benches);
