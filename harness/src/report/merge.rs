//! The reports of a suite's shards (`nexus-hil run --partition K/N`, one per CI matrix job)
//! merged into one run: every scenario once, in the files' order, the shards checked to be the
//! parts of one suite (each K of N once, no scenario in two of them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Error, RunReport};

/// One shard's report and the folder it came from.
pub struct Shard {
    pub dir: PathBuf,
    pub report: RunReport,
}

/// Merges `shards` into one run. Errors name the shards that do not belong together. The notes
/// say what the merged report cannot tell by itself (shards without partition numbers, seeds
/// that differ).
pub fn merge(shards: &[Shard]) -> Result<(RunReport, Vec<String>), Error> {
    if shards.is_empty() {
        return Err(Error::Merge("no reports to merge".into()));
    }
    let mut notes = Vec::new();
    check_partitions(shards, &mut notes)?;
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for sh in shards {
        for s in &sh.report.scenarios {
            // A scenario that runs on several devices of an inventory appears once per device.
            let key = s.file.as_str();
            if let Some(other) = seen.get(key) {
                if *other != sh.dir.as_path() {
                    return Err(Error::Merge(format!(
                        "{} ran in two shards ({} and {}): these are not the parts of one partitioned run \
                         (give each --partition K/N job's report folder once)",
                        s.file,
                        other.display(),
                        sh.dir.display()
                    )));
                }
            }
            seen.insert(key, &sh.dir);
        }
    }
    let mut targets: Vec<&str> = shards.iter().map(|s| s.report.target.as_str()).collect();
    targets.dedup();
    let seeds: Vec<Option<u64>> = shards.iter().map(|s| s.report.seed).collect();
    let seed = if seeds.windows(2).all(|w| w[0] == w[1]) {
        seeds[0]
    } else {
        notes.push(format!(
            "the shards drew with different seeds ({}): repeat one shard with its own --seed",
            shards
                .iter()
                .map(|s| format!(
                    "{}: {}",
                    s.dir.display(),
                    s.report.seed.map_or("none".into(), |n| n.to_string())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        None
    };
    let errors: Vec<String> = shards
        .iter()
        .filter_map(|s| {
            s.report
                .infra_error
                .as_ref()
                .map(|e| format!("{}: {e}", s.dir.display()))
        })
        .collect();
    let mut scenarios: Vec<_> = shards.iter().flat_map(|s| s.report.scenarios.iter().cloned()).collect();
    // Round robin dealt the files out in order: sorting by file (then device, then repetition)
    // restores it. A scenario's tries stay inside it, each with its own work folder.
    scenarios
        .sort_by(|a, b| (&a.file, &a.device, a.attempt.repetition).cmp(&(&b.file, &b.device, b.attempt.repetition)));
    let merged = RunReport {
        target: targets.join(", "),
        // The shards ran side by side: the run took as long as the longest.
        duration_s: shards.iter().map(|s| s.report.duration_s).fold(0.0, f64::max),
        scenarios,
        infra_error: (!errors.is_empty()).then(|| errors.join("; ")),
        seed,
        partition: None,
        // Each shard read the health of the devices it ran on.
        health: shards.iter().flat_map(|s| s.report.health.clone()).collect(),
        changes: shards.iter().flat_map(|s| s.report.changes.clone()).collect(),
    };
    Ok((merged, notes))
}

/// Each K of one N exactly once, when the shards say which they are.
fn check_partitions(shards: &[Shard], notes: &mut Vec<String>) -> Result<(), Error> {
    let parts: Vec<Option<(usize, usize)>> = shards.iter().map(|s| s.report.partition).collect();
    if parts.iter().all(Option::is_none) {
        notes
            .push("the reports do not say which partition they are (not run with --partition): merged as given".into());
        return Ok(());
    }
    let name = |i: usize| shards[i].dir.display().to_string();
    if let Some(i) = parts.iter().position(Option::is_none) {
        return Err(Error::Merge(format!(
            "{} was not run with --partition, the others were",
            name(i)
        )));
    }
    let parts: Vec<(usize, usize)> = parts.into_iter().flatten().collect();
    let n = parts[0].1;
    if let Some(i) = parts.iter().position(|p| p.1 != n) {
        return Err(Error::Merge(format!(
            "{} is part {}/{} but {} is part {}/{}: shards of different splits",
            name(i),
            parts[i].0,
            parts[i].1,
            name(0),
            parts[0].0,
            n
        )));
    }
    for k in 1..=n {
        let with: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].0 == k).collect();
        match with.as_slice() {
            [] => {
                return Err(Error::Merge(format!(
                    "part {k}/{n} is missing: its job's report folder was not given (or the job did not finish)"
                )))
            }
            [_] => {}
            [a, b, ..] => {
                return Err(Error::Merge(format!(
                    "part {k}/{n} is given twice: {} and {}",
                    name(*a),
                    name(*b)
                )))
            }
        }
    }
    Ok(())
}

/// Makes the shards' work folders (everything but their own reports) reachable from the merged
/// report's folder `out`, as hard links where the file system allows and copies elsewhere, so
/// the merged HTML's links to work files hold.
pub fn link_work_files(shard: &Path, out: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(shard)? {
        let entry = entry?;
        let name = entry.file_name();
        if ["report.json", "report.html", "junit.xml"].iter().any(|r| name == *r) {
            continue;
        }
        link_tree(&entry.path(), &out.join(&name))?;
    }
    Ok(())
}

fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            link_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        if to.exists() {
            return Ok(());
        }
        std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(|_| ()))
    } else {
        // Links and other specials are not work files the report points to.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, ScenarioReport};

    fn scenario(file: &str, outcome: Outcome) -> ScenarioReport {
        ScenarioReport {
            name: file.trim_end_matches(".yaml").into(),
            file: file.into(),
            outcome,
            reason: None,
            duration_s: 1.0,
            ready_s: None,
            steps: Vec::new(),
            journal: None,
            device_state: None,
            console: None,
            cleanup: Vec::new(),
            undo_failed: false,
            device: None,
            device_info: None,
            required: false,
            attempt: Default::default(),
        }
    }

    fn shard(dir: &str, part: Option<(usize, usize)>, files: &[(&str, Outcome)], duration_s: f64) -> Shard {
        Shard {
            dir: PathBuf::from(dir),
            report: RunReport {
                target: "emulator".into(),
                duration_s,
                scenarios: files.iter().map(|(f, o)| scenario(f, *o)).collect(),
                infra_error: None,
                seed: Some(7),
                partition: part,
                health: Default::default(),
                changes: Vec::new(),
            },
        }
    }

    #[test]
    fn the_parts_of_one_run_merge_in_the_files_order_with_the_longest_shards_time() {
        let (merged, notes) = merge(&[
            shard(
                "p2",
                Some((2, 2)),
                &[("b.yaml", Outcome::Failed), ("d.yaml", Outcome::Passed)],
                40.0,
            ),
            shard(
                "p1",
                Some((1, 2)),
                &[("a.yaml", Outcome::Passed), ("c.yaml", Outcome::Skipped)],
                55.0,
            ),
        ])
        .unwrap();
        let files: Vec<&str> = merged.scenarios.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]);
        assert_eq!(merged.duration_s, 55.0);
        assert_eq!(merged.seed, Some(7));
        let t = merged.totals();
        assert_eq!((t.passed, t.failed, t.skipped), (2, 1, 1));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn repetitions_merge_in_their_order_and_a_flaky_scenario_keeps_its_tries() {
        let rep = |file: &str, r: usize, outcome| {
            let mut s = scenario(file, outcome);
            s.attempt.repetition = Some(r);
            s
        };
        let mut flaky = scenario("b.yaml", Outcome::Passed);
        let mut failed = scenario("b.yaml", Outcome::Failed);
        failed.attempt.work = Some("b".into());
        flaky.attempt.tries = vec![failed];
        flaky.attempt.work = Some("b.try-2".into());
        let mut p1 = shard("p1", Some((1, 2)), &[], 1.0);
        p1.report.scenarios = vec![
            rep("a.yaml", 2, Outcome::Failed),
            rep("a.yaml", 1, Outcome::Passed),
            rep("a.yaml", 3, Outcome::Passed),
        ];
        let mut p2 = shard("p2", Some((2, 2)), &[], 1.0);
        p2.report.scenarios = vec![flaky];
        let (merged, _) = merge(&[p2, p1]).unwrap();
        let order: Vec<(String, Option<usize>)> = merged
            .scenarios
            .iter()
            .map(|s| (s.file.clone(), s.attempt.repetition))
            .collect();
        assert_eq!(
            order,
            [
                ("a.yaml".into(), Some(1)),
                ("a.yaml".into(), Some(2)),
                ("a.yaml".into(), Some(3)),
                ("b.yaml".into(), None)
            ]
        );
        let t = merged.totals();
        assert_eq!((t.passed, t.flaky, t.failed), (3, 1, 1));
        let b = &merged.scenarios[3];
        assert!(
            b.flaky() && b.attempt.tries[0].work_dir() == "b",
            "the try's evidence stays named"
        );
        assert_eq!(merged.repeated()[0].describe().split(',').next(), Some("2/3 passed"));
    }

    #[test]
    fn shards_that_are_not_one_runs_parts_are_named() {
        let a = || shard("p1", Some((1, 3)), &[("a.yaml", Outcome::Passed)], 1.0);
        let e = merge(&[a(), shard("p3", Some((3, 3)), &[("c.yaml", Outcome::Passed)], 1.0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("part 2/3 is missing"), "{e}");
        let e = merge(&[a(), shard("again", Some((1, 3)), &[("b.yaml", Outcome::Passed)], 1.0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("part 1/3 is given twice: p1 and again"), "{e}");
        let e = merge(&[a(), shard("q", Some((2, 2)), &[("b.yaml", Outcome::Passed)], 1.0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("different splits"), "{e}");
        let e = merge(&[
            shard("x", None, &[("a.yaml", Outcome::Passed)], 1.0),
            shard("y", None, &[("a.yaml", Outcome::Failed)], 1.0),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("a.yaml ran in two shards (x and y)"), "{e}");
        let (_, notes) = merge(&[shard("x", None, &[("a.yaml", Outcome::Passed)], 1.0)]).unwrap();
        assert!(notes[0].contains("not run with --partition"), "{notes:?}");
    }

    #[test]
    fn work_files_are_linked_and_the_shards_own_reports_left_out() {
        let shard = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(shard.path().join("scenario-a")).unwrap();
        std::fs::write(shard.path().join("scenario-a/backup.tar"), "data").unwrap();
        std::fs::write(shard.path().join("report.json"), "{}").unwrap();
        link_work_files(shard.path(), out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("scenario-a/backup.tar")).unwrap(),
            "data"
        );
        assert!(!out.path().join("report.json").exists());
    }
}
