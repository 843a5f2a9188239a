//! A run's measurements for the history: each passed scenario's and step's duration, the
//! backup throughput `backup.wait` saw, and every probe's lateness histogram, per device; and
//! where the run was (commit, branch, host), read from CI's variables or git. A probe that ran
//! no load of ours (a baseline's idle windows) is a control series: it follows the machine, not
//! the code.

use std::collections::BTreeMap;

use super::store::{Better, Measurement, Role, RunKey, Series, Stat};
use crate::report::{slug, Outcome, RunReport};

fn series(name: String, unit: &str, better: Better, stat: Stat) -> Series {
    Series {
        name,
        unit: unit.into(),
        better,
        stat,
        role: Role::Measure,
    }
}

/// The measurements of `report`, by the device each scenario ran on (`target` for a run
/// without an inventory). Failed and skipped scenarios measure nothing.
pub fn measurements(report: &RunReport) -> BTreeMap<String, Vec<Measurement>> {
    let mut by_device: BTreeMap<String, Vec<Measurement>> = BTreeMap::new();
    // A device's health before the run: the machine's state, never the code's (controls).
    for (device, h) in &report.health {
        let out = by_device.entry(device.clone()).or_default();
        for c in &h.checks {
            let Some(v) = c.value else { continue };
            let (unit, better) = match c.name.as_str() {
                "clock" => ("s", Better::Lower),
                "free space" => ("bytes", Better::Higher),
                _ => ("count", Better::Lower),
            };
            out.push(Measurement {
                series: Series {
                    role: Role::Control,
                    ..series(format!("health/{}", slug(&c.name)), unit, better, Stat::Median)
                },
                samples: vec![(if c.name == "clock" { v.abs() } else { v }, 1)],
            });
        }
    }
    for s in report.scenarios.iter().filter(|s| s.outcome == Outcome::Passed) {
        let device = s.device.clone().unwrap_or_else(|| report.target.clone());
        let out = by_device.entry(device).or_default();
        let base = format!("scenario/{}", slug(&s.name));
        out.push(Measurement {
            series: series(format!("{base}/duration_s"), "s", Better::Lower, Stat::Median),
            samples: vec![(s.duration_s, 1)],
        });
        for st in &s.steps {
            let step = format!("{base}/step/{}-{}", st.index, st.kind);
            out.push(Measurement {
                series: series(format!("{step}/duration_s"), "s", Better::Lower, Stat::Median),
                samples: vec![(st.duration_s, 1)],
            });
            // The Status after the end has no totals: the last sample with them ends the run.
            let mut measured = st.progress.iter().filter(|p| p.bytes_total > 0);
            if let (Some(first), Some(last)) = (measured.next(), measured.next_back()) {
                let secs = last.at_s - first.at_s;
                if last.bytes_total > 0 && secs > 0.0 {
                    let mib = (last.bytes_done.saturating_sub(first.bytes_done)) as f64 / (1024.0 * 1024.0);
                    out.push(Measurement {
                        series: series(
                            format!("{step}/throughput_mib_s"),
                            "MiB/s",
                            Better::Higher,
                            Stat::Median,
                        ),
                        samples: vec![(mib / secs, 1)],
                    });
                }
            }
            if let Some(w) = &st.wear {
                out.push(Measurement {
                    series: series(
                        format!("{step}/card/bytes_written_per_backup_byte"),
                        "ratio",
                        Better::Lower,
                        Stat::Median,
                    ),
                    samples: vec![(w.ratio(), 1)],
                });
            }
            for l in st.latency.iter().chain(st.baseline.iter()) {
                // No load of ours ran meanwhile (a baseline's idle windows, or a probe without
                // `during`): the machine's own lateness.
                let role = if l.during.is_none() {
                    Role::Control
                } else {
                    Role::Measure
                };
                let samples: Vec<(f64, u64)> = l
                    .measured
                    .lateness_counts
                    .iter()
                    .map(|(v, n)| (*v as f64, *n))
                    .collect();
                if !samples.is_empty() {
                    out.push(Measurement {
                        series: Series {
                            role,
                            ..series(
                                format!("{base}/probe/{}/lateness_us", slug(&l.name)),
                                "µs",
                                Better::Lower,
                                Stat::P99,
                            )
                        },
                        samples,
                    });
                }
            }
        }
    }
    // A series measured twice in one run (a probe's baseline named like another) keeps the first.
    for ms in by_device.values_mut() {
        let mut seen = std::collections::HashSet::new();
        ms.retain(|m| seen.insert(m.series.name.clone()));
    }
    by_device
}

/// The first of these environment variables that is set and not empty.
fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The commit under test: NEXUS_HIL_COMMIT, CI's own variable (GitHub, GitLab), or git's HEAD.
pub fn commit() -> String {
    first_env(&["NEXUS_HIL_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA"])
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into())
}

/// The branch: NEXUS_HIL_BRANCH, CI's own variable, or git's.
pub fn branch() -> String {
    first_env(&["NEXUS_HIL_BRANCH", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME"])
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's name.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kind of device a run's target names.
pub fn device_kind(target: &str) -> &'static str {
    match target {
        "emulator" => "container",
        t if t.starts_with("standin") => "stand-in",
        _ => "real",
    }
}

/// Now, in seconds since the epoch (when a run started, in the history).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The key of one device's part of a run that started at `started_at` (seconds).
/// The device's model and software are what its first scenario that asked was told.
pub fn run_key(report: &RunReport, device: &str, started_at: i64, source: &str) -> RunKey {
    let mut k = key(device, device_kind(&report.target), started_at, source);
    let told = report
        .scenarios
        .iter()
        .filter(|s| s.device.as_deref().unwrap_or(&report.target) == device)
        .find_map(|s| s.device_info.as_ref());
    if let Some(info) = told {
        k.device_model = info.model.clone();
        k.software = info.software.clone();
    }
    k
}

/// The key of a run on `device` of `kind` that started at `started_at`, here and now in git.
pub fn key(device: &str, kind: &str, started_at: i64, source: &str) -> RunKey {
    RunKey {
        id: format!("{started_at}-{}-{device}", std::process::id()),
        commit: commit(),
        branch: branch(),
        device: device.to_string(),
        device_kind: kind.to_string(),
        device_model: None,
        software: None,
        host: host(),
        started_at,
        source: source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DeviceInfo, ScenarioReport};

    fn scenario(device: Option<&str>, info: Option<DeviceInfo>) -> ScenarioReport {
        ScenarioReport {
            name: "s".into(),
            file: "s.yaml".into(),
            outcome: Outcome::Passed,
            reason: None,
            duration_s: 1.0,
            ready_s: None,
            steps: Vec::new(),
            journal: None,
            console: None,
            device_state: None,
            cleanup: Vec::new(),
            undo_failed: false,
            device: device.map(String::from),
            device_info: info,
            required: false,
            attempt: Default::default(),
        }
    }

    /// What a perf run's report holds (a backup.wait whose last Status has no totals, a probe
    /// with its counts and its idle baseline) becomes a throughput series and lateness series,
    /// the baseline's a control.
    #[test]
    fn a_backups_throughput_and_a_probes_lateness_are_measured() {
        use crate::report::{Latency, Measured, Percentiles, ProgressSample, StepReport};
        let mut wait = StepReport {
            index: 5,
            kind: "backup.wait".into(),
            line: 30,
            outcome: Outcome::Passed,
            duration_s: 9.0,
            message: None,
            transcript: Vec::new(),
            progress: Vec::new(),
            latency: None,
            baseline: None,
            browser: None,
            wear: None,
            card: None,
        };
        let sample = |at_s: f64, mib: u64, total: u64| ProgressSample {
            at_s,
            percent: 0,
            bytes_done: mib << 20,
            bytes_total: total << 20,
        };
        wait.progress = vec![
            sample(0.0, 0, 256),
            sample(4.0, 128, 256),
            sample(8.0, 256, 256),
            sample(8.5, 0, 0),
        ];
        let mut probe = StepReport {
            index: 8,
            kind: "probe.latency".into(),
            ..wait.clone()
        };
        probe.progress.clear();
        probe.latency = Some(Latency {
            name: "backup, default cap".into(),
            during: Some("nexus-hil-backup-loop 1".into()),
            window_p99_us: Vec::new(),
            measured: Measured {
                period_us: 10_000,
                io: false,
                samples: 1000,
                missed: 0,
                lateness_us: Percentiles {
                    p50: 90,
                    p99: 400,
                    p999: 400,
                    max: 400,
                    mean: 100.0,
                },
                io_us: None,
                lateness_buckets: Vec::new(),
                lateness_counts: vec![(90, 990), (400, 10)],
                io_counts: Vec::new(),
            },
            verdict: None,
        });
        let mut idle = probe.latency.clone().unwrap();
        idle.name = "idle".into();
        idle.during = None;
        idle.measured.lateness_counts = vec![(80, 995), (300, 5)];
        probe.baseline = Some(idle);
        let mut s = scenario(None, None);
        s.name = "perf".into();
        s.steps = vec![wait, probe];
        let report = RunReport {
            target: "emulator".into(),
            duration_s: 1.0,
            scenarios: vec![s],
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
            changes: Vec::new(),
        };
        let ms = &measurements(&report)["emulator"];
        let find = |name: &str| {
            ms.iter()
                .find(|m| m.series.name == name)
                .map(|m| (m.samples.clone(), m.series.role))
        };
        assert_eq!(
            find("scenario/perf/step/5-backup.wait/throughput_mib_s"),
            Some((vec![(32.0, 1)], Role::Measure))
        );
        assert_eq!(
            find("scenario/perf/probe/backup-default-cap/lateness_us"),
            Some((vec![(90.0, 990), (400.0, 10)], Role::Measure))
        );
        assert_eq!(
            find("scenario/perf/probe/idle/lateness_us"),
            Some((vec![(80.0, 995), (300.0, 5)], Role::Control))
        );
    }

    #[test]
    fn a_run_is_keyed_by_the_model_and_software_its_device_told() {
        let pi = DeviceInfo {
            model: Some("Raspberry Pi 4 Model B Rev 1.4".into()),
            software: Some("NOREYA NEXUS OS 3.2".into()),
            ..Default::default()
        };
        let report = RunReport {
            target: "targets.toml".into(),
            duration_s: 2.0,
            scenarios: vec![
                scenario(Some("pi-1"), None),
                scenario(Some("pi-1"), Some(pi.clone())),
                scenario(Some("pi-2"), None),
            ],
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
            changes: Vec::new(),
        };
        let k = run_key(&report, "pi-1", 7, "run");
        assert_eq!(k.device_model, pi.model);
        assert_eq!(k.software, pi.software);
        // A device that told nothing is keyed without them.
        let k = run_key(&report, "pi-2", 7, "run");
        assert_eq!((k.device_model, k.software), (None, None));
    }
}
