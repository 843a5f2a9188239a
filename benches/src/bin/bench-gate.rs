//! `bench-gate`: compares two criterion baselines benchmark by benchmark, critcmp-style, from
//! criterion's own `estimates.json` files, and flags changes beyond a threshold. It reports; it
//! fails (exit 1) only with `--fail-on-regression`, so a pipeline chooses whether timings gate.
//!
//! Usage: bench-gate --old NAME --new NAME [--threshold PERCENT] [--dir target/criterion] [--fail-on-regression]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

/// Compare two criterion baselines (critcmp-style) and flag changes beyond a threshold.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The baseline to compare against (a name given to `--save-baseline`).
    #[arg(long)]
    old: String,
    /// The baseline of this run.
    #[arg(long)]
    new: String,
    /// Flag changes of the mean beyond this many percent.
    #[arg(long, default_value_t = 10.0)]
    threshold: f64,
    /// Criterion's output folder.
    #[arg(long, default_value = "target/criterion")]
    dir: PathBuf,
    /// Exit 1 when a benchmark got slower beyond the threshold (default: only report).
    #[arg(long)]
    fail_on_regression: bool,
}

/// One benchmark of one baseline: mean time in ns and the bytes of one iteration, if declared.
struct Estimate {
    mean_ns: f64,
    bytes: Option<f64>,
}

/// Every benchmark saved under `baseline`, by its full id.
fn baseline(dir: &Path, baseline: &str) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|n| n == baseline) {
                let read =
                    |f: &str| -> Option<Value> { serde_json::from_str(&std::fs::read_to_string(p.join(f)).ok()?).ok() };
                if let (Some(b), Some(est)) = (read("benchmark.json"), read("estimates.json")) {
                    if let (Some(id), Some(mean)) = (b["full_id"].as_str(), est["mean"]["point_estimate"].as_f64()) {
                        out.insert(
                            id.to_string(),
                            Estimate {
                                mean_ns: mean,
                                bytes: b["throughput"]["Bytes"].as_f64(),
                            },
                        );
                    }
                }
            } else {
                stack.push(p);
            }
        }
    }
    out
}

fn show(e: &Estimate) -> String {
    let ns = e.mean_ns;
    let t = if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    };
    match e.bytes {
        Some(b) => format!("{t} ({:.0} MB/s)", b / (ns / 1e9) / 1e6),
        None => t,
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let (old, new) = (baseline(&a.dir, &a.old), baseline(&a.dir, &a.new));
    if new.is_empty() {
        eprintln!(
            "bench-gate: no benchmark saved as {:?} under {}; run `cargo bench -p nexus-benches -- --save-baseline {}`",
            a.new,
            a.dir.display(),
            a.new
        );
        return ExitCode::from(2);
    }
    let width = new.keys().map(String::len).max().unwrap_or(9).max(9);
    println!("{:width$}  {:>24}  {:>24}  {:>8}", "benchmark", a.old, a.new, "change");
    let mut regressions = 0;
    for (id, n) in &new {
        let Some(o) = old.get(id) else {
            println!("{id:width$}  {:>24}  {:>24}  {:>8}", "-", show(n), "new");
            continue;
        };
        let change = (n.mean_ns / o.mean_ns - 1.0) * 100.0;
        let flag = if change > a.threshold {
            regressions += 1;
            "  REGRESSION"
        } else if change < -a.threshold {
            "  improved"
        } else {
            ""
        };
        println!("{id:width$}  {:>24}  {:>24}  {change:>+7.1}%{flag}", show(o), show(n));
    }
    println!(
        "{regressions} benchmark(s) slower by more than {}% ({} compared, {} new)",
        a.threshold,
        new.keys().filter(|k| old.contains_key(*k)).count(),
        new.keys().filter(|k| !old.contains_key(*k)).count()
    );
    if a.fail_on_regression && regressions > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
