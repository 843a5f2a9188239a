//! Backup throughput of nexus-backupd's pipeline (tar -> OpenPGP, cap off) next to
//! `tar | gpg --symmetric --cipher-algo AES256 --compress-algo none` on the same data in the same
//! run, and with the cipher forced onto its portable path (the A/B of the stitched code), on two
//! data sets: mixed (15 % small files, the rest 64 MiB) and all-large. Output goes to
//! /dev/shm (NEXUS_BENCH_OUT), so the figures are the pipelines' own cost, not the disk's. Also
//! prints CPU seconds per GiB (user + system of every thread, or of tar and gpg) and the ratios,
//! and writes them to target/criterion/nexus-cpu.json for ci/bench. Size: NEXUS_BENCH_BYTES
//! (default 1 GiB; 64 MiB with NEXUS_BENCH_QUICK=1).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nexus_benches::{cpu_time, dataset_bytes, large_dataset, mixed_dataset, output_dir, quick, tar_gpg};
use nexus_emulator::config::BackupConfig;
use nexus_emulator::openpgp;
use nexus_emulator::pipeline::{encrypt_tree, Progress};

const PASSWORD: &str = "benchmark password, not a secret";

fn backup_pipeline(c: &mut Criterion) {
    let bytes = dataset_bytes();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = output_dir(tmp).join(format!("nexus-bench-{}.gpg", std::process::id()));
    let pw_file = tmp.join("bench-password");
    std::fs::write(&pw_file, PASSWORD).unwrap();
    let gnupg_home = tempfile_dir(tmp, "gnupg");
    let config = BackupConfig {
        read_bytes_per_sec: 0,
        ..BackupConfig::default()
    };
    let mut figures = serde_json::Map::new();
    let mut group = c.benchmark_group("backup_pipeline");
    group
        .sample_size(if quick() { 10 } else { 15 })
        .throughput(Throughput::Bytes(bytes));
    for (set, make) in [
        ("mixed", mixed_dataset as fn(&Path, u64) -> std::io::Result<()>),
        ("large", large_dataset),
    ] {
        let src = tmp.join(format!("{set}-{bytes}"));
        make(&src, bytes).expect("make the data set");
        // The same pipeline twice: the best cipher path this CPU has, then the portable one
        // (the `aes`, `sha1` and `sha2` crates alone), so the stitched code's gain is measured.
        let mut ours = (Duration::ZERO, Duration::ZERO, 0u32);
        let mut portable = (Duration::ZERO, Duration::ZERO, 0u32);
        for (name, force_portable, acc) in [
            ("nexus_backupd", false, &mut ours),
            ("nexus_backupd_portable_cipher", true, &mut portable),
        ] {
            openpgp::force_portable(force_portable);
            group.bench_function(format!("{name}/{set}"), |b| {
                b.iter_custom(|iters| {
                    let mut wall = Duration::ZERO;
                    for _ in 0..iters {
                        let file = std::fs::File::create(&out).unwrap();
                        let cpu0 = cpu_time(false);
                        let t = Instant::now();
                        encrypt_tree(
                            &src,
                            &["system", "data"],
                            file,
                            PASSWORD,
                            &config,
                            "bench.tar",
                            &Progress::default(),
                            |_| {},
                        )
                        .unwrap();
                        let took = t.elapsed();
                        wall += took;
                        acc.0 += cpu_time(false) - cpu0;
                        acc.1 += took;
                        acc.2 += 1;
                    }
                    wall
                })
            });
        }
        openpgp::force_portable(false);
        let mut base = (Duration::ZERO, Duration::ZERO, 0u32);
        group.bench_function(format!("tar_gpg_baseline/{set}"), |b| {
            b.iter_custom(|iters| {
                let mut wall = Duration::ZERO;
                for _ in 0..iters {
                    let cpu0 = cpu_time(true);
                    let t = Instant::now();
                    tar_gpg(&src, &out, &pw_file, &gnupg_home).unwrap();
                    let took = t.elapsed();
                    wall += took;
                    base.0 += cpu_time(true) - cpu0;
                    base.1 += took;
                    base.2 += 1;
                }
                wall
            })
        });
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let per = |(cpu, wall, n): (Duration, Duration, u32)| {
            let n = n.max(1) as f64;
            (
                cpu.as_secs_f64() / n / gib,
                bytes as f64 / (wall.as_secs_f64() / n) / 1e6,
            )
        };
        let (ours_cpu, ours_mbs) = per(ours);
        let (port_cpu, port_mbs) = per(portable);
        let (base_cpu, base_mbs) = per(base);
        println!(
            "{set}: nexus_backupd {ours_mbs:.0} MB/s, {ours_cpu:.2} CPU s/GiB; tar|gpg {base_mbs:.0} MB/s, {base_cpu:.2} CPU s/GiB; \
             throughput ratio {:.2}, CPU ratio {:.2}",
            ours_mbs / base_mbs,
            ours_cpu / base_cpu
        );
        println!(
            "{set}: cipher path {:?}: {ours_mbs:.0} MB/s, {ours_cpu:.2} CPU s/GiB; portable {port_mbs:.0} MB/s, \
             {port_cpu:.2} CPU s/GiB; throughput ratio {:.2}, CPU ratio {:.2}",
            openpgp::CipherPath::best(),
            ours_mbs / port_mbs,
            ours_cpu / port_cpu
        );
        figures.insert(
            set.to_string(),
            serde_json::json!({
                "nexus_backupd": {"mb_per_s": ours_mbs, "cpu_s_per_gib": ours_cpu},
                "tar_gpg_baseline": {"mb_per_s": base_mbs, "cpu_s_per_gib": base_cpu},
                "portable_cipher": {"mb_per_s": port_mbs, "cpu_s_per_gib": port_cpu},
                "throughput_ratio": ours_mbs / base_mbs,
                "cpu_ratio": ours_cpu / base_cpu,
            }),
        );
    }
    group.finish();
    let _ = std::fs::remove_file(&out);
    // Next to criterion's own files, for ci/bench's table.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../criterion");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("nexus-cpu.json"),
        serde_json::to_string_pretty(&figures).unwrap_or_default(),
    );
}

fn tempfile_dir(tmp: &Path, name: &str) -> std::path::PathBuf {
    let d = tmp.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    d
}

criterion_group!(benches, backup_pipeline);
criterion_main!(benches);
