//! Backup throughput of nexus-backupd's pipeline (tar -> OpenPGP, cap off) on the mixed data set,
//! next to `tar | gpg --symmetric --cipher-algo AES256 --compress-algo none` on the same data in
//! the same run. Also prints CPU seconds per GiB of each. Size: NEXUS_BENCH_BYTES (default 1 GiB).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nexus_benches::{cpu_time, mixed_dataset, tar_gpg};
use nexus_emulator::config::BackupConfig;
use nexus_emulator::pipeline::{encrypt_tree, Progress};

const PASSWORD: &str = "benchmark password, not a secret";

fn backup_pipeline(c: &mut Criterion) {
    let bytes: u64 = std::env::var("NEXUS_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = tmp.join(format!("mixed-{bytes}"));
    mixed_dataset(&src, bytes).expect("make the data set");
    let out = tmp.join("bench-out.gpg");
    let pw_file = tmp.join("bench-password");
    std::fs::write(&pw_file, PASSWORD).unwrap();
    let gnupg_home = tempfile_dir(tmp, "gnupg");
    let config = BackupConfig {
        read_bytes_per_sec: 0,
        ..BackupConfig::default()
    };

    let mut group = c.benchmark_group("backup_pipeline");
    group.sample_size(10).throughput(Throughput::Bytes(bytes));
    let mut cpu = Vec::new();
    let mut ours = (Duration::ZERO, 0u32);
    group.bench_function("nexus_backupd/mixed", |b| {
        b.iter_custom(|iters| {
            let mut wall = Duration::ZERO;
            for _ in 0..iters {
                let file = std::fs::File::create(&out).unwrap();
                let cpu0 = cpu_time(false);
                let t = Instant::now();
                let progress = Progress::default();
                encrypt_tree(
                    &src,
                    &["system", "data"],
                    file,
                    PASSWORD,
                    &config,
                    "bench.tar",
                    &progress,
                    |_| {},
                )
                .unwrap();
                wall += t.elapsed();
                ours.0 += cpu_time(false) - cpu0;
                ours.1 += 1;
            }
            wall
        })
    });
    cpu.push(("nexus_backupd", ours));
    let mut base = (Duration::ZERO, 0u32);
    group.bench_function("tar_gpg_baseline/mixed", |b| {
        b.iter_custom(|iters| {
            let mut wall = Duration::ZERO;
            for _ in 0..iters {
                let cpu0 = cpu_time(true);
                let t = Instant::now();
                tar_gpg(&src, &out, &pw_file, &gnupg_home).unwrap();
                wall += t.elapsed();
                base.0 += cpu_time(true) - cpu0;
                base.1 += 1;
            }
            wall
        })
    });
    cpu.push(("tar_gpg_baseline", base));
    group.finish();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let per_gib: Vec<f64> = cpu
        .iter()
        .map(|(_, (t, n))| t.as_secs_f64() / (*n).max(1) as f64 / gib)
        .collect();
    for ((name, _), v) in cpu.iter().zip(&per_gib) {
        println!("cpu_seconds_per_gib {name}: {v:.2}");
    }
    if per_gib[1] > 0.0 {
        println!("cpu ratio nexus_backupd / tar_gpg: {:.2}", per_gib[0] / per_gib[1]);
    }
    let _ = std::fs::remove_file(&out);
}

fn tempfile_dir(tmp: &Path, name: &str) -> std::path::PathBuf {
    let d = tmp.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    d
}

criterion_group!(benches, backup_pipeline);
criterion_main!(benches);
