//! Criterion's saved baselines as history measurements: each benchmark's samples (its time per
//! iteration in every sample criterion took) from `target/criterion/**/BASELINE/sample.json`.

use std::path::Path;

use serde::Deserialize;

use super::store::{Better, Measurement, Role, Series, Stat};

/// Criterion's `sample.json`: per sample, how many iterations and their total time in ns.
#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// The measurements of criterion's baseline `baseline` under `dir`, one series per benchmark
/// (`bench/GROUP/ID/time_ns`, lower is better), sorted by name. A benchmark whose name
/// contains one of `controls` is a control series (it times the machine or other tools, not
/// our code: `ci/bench` names the hand-made `tar | gpg` and the idle tick).
pub fn baseline(dir: &Path, baseline: &str, controls: &[String]) -> Result<Vec<Measurement>, super::Error> {
    let mut out = Vec::new();
    walk(dir, dir, baseline, &mut out)?;
    out.sort_by(|a, b| a.series.name.cmp(&b.series.name));
    for m in &mut out {
        if controls.iter().any(|c| m.series.name.contains(c.as_str())) {
            m.series.role = Role::Control;
        }
    }
    if out.is_empty() {
        return Err(super::Error::Baseline(format!(
            "no benchmark saved as baseline {baseline:?} under {} (cargo bench -- --save-baseline {baseline})",
            dir.display()
        )));
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, baseline: &str, out: &mut Vec<Measurement>) -> Result<(), super::Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| super::Error::Baseline(format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let sample = path.join("sample.json");
        if e.file_name() == baseline && sample.exists() {
            let text = std::fs::read_to_string(&sample)
                .map_err(|e| super::Error::Baseline(format!("{}: {e}", sample.display())))?;
            let s: Sample = serde_json::from_str(&text).map_err(|e| {
                super::Error::Baseline(format!("{} is not criterion's sample.json: {e}", sample.display()))
            })?;
            let bench = dir
                .strip_prefix(root)
                .map_err(|e| super::Error::Baseline(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            out.push(Measurement {
                series: Series {
                    name: format!("bench/{bench}/time_ns"),
                    unit: "ns".into(),
                    better: Better::Lower,
                    stat: Stat::Median,
                    role: Role::Measure,
                },
                samples: {
                    let mut v: Vec<(f64, u64)> = s
                        .iters
                        .iter()
                        .zip(&s.times)
                        .filter(|(i, _)| **i > 0.0)
                        .map(|(i, t)| (t / i, 1))
                        .collect();
                    v.sort_by(|a, b| a.0.total_cmp(&b.0));
                    v
                },
            });
        } else if e.file_name() != "report" {
            walk(root, &path, baseline, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_benchmark_of_the_baseline_is_a_series_of_its_times_per_iteration() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, json: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("sample.json"), json).unwrap();
        };
        put(
            "backup/throughput/abc123",
            r#"{"sampling_mode":"Flat","iters":[2.0,4.0],"times":[100.0,160.0]}"#,
        );
        put(
            "backup/throughput/old",
            r#"{"sampling_mode":"Flat","iters":[1.0],"times":[9.0]}"#,
        );
        put(
            "tick/idle/abc123",
            r#"{"sampling_mode":"Linear","iters":[10.0],"times":[20.0]}"#,
        );
        let ms = baseline(dir.path(), "abc123", &["tick/idle".into()]).unwrap();
        let got: Vec<(&str, &[(f64, u64)])> = ms
            .iter()
            .map(|m| (m.series.name.as_str(), m.samples.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("bench/backup/throughput/time_ns", &[(40.0, 1), (50.0, 1)][..]),
                ("bench/tick/idle/time_ns", &[(2.0, 1)][..])
            ]
        );
        let roles: Vec<Role> = ms.iter().map(|m| m.series.role).collect();
        assert_eq!(roles, [Role::Measure, Role::Control]);
        let e = baseline(dir.path(), "nope", &[]).unwrap_err().to_string();
        assert!(e.contains("no benchmark saved as baseline \"nope\""), "{e}");
    }
}
