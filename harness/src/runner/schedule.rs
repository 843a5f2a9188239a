//! A suite shared out among devices: slots take the next scenario when free, either `-j`
//! fresh devices of a kind (a new one per scenario) or the real devices of a run. Results keep
//! the files' order; a fresh device that died during a scenario makes it an infrastructure
//! error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::ProgressBar;

use super::run_scenario;
use super::slots::{FleetMember, Slots};
use super::tries::{self, Plan};
use super::Error;
use crate::bench::console::{self, Console};
use crate::bench::power::Bench;
use crate::device::{Lifecycle, Parts};
use crate::report::terminal::result_line;
use crate::report::{slug, Outcome, ScenarioReport, CONSOLE_LINES};
use crate::scenario::{self, Scenario};

/// A line for the person watching: above the progress bar on a terminal, and on stderr as it
/// happens where there is no terminal (a CI log), where the bar draws nothing and its
/// `println` is lost.
pub fn line(bar: &ProgressBar, text: String) {
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}

/// The order the slots start `scenarios` in (indices): the longest expected first, so that no
/// long one starts last and holds up the end of the run while the other slots idle (the
/// default suite at `-j 2`: 62 s in the files' order, 51 s so). Expected is the median of a
/// scenario's last passed runs in the history (`recorded`, by slug); one never recorded (a
/// fresh checkout's CI) is started first, those that declare a `timeout` before those that do
/// not, the longer first; ties keep the files' order.
pub fn start_order(scenarios: &[Scenario], recorded: &HashMap<String, f64>) -> Vec<usize> {
    let rank = |s: &Scenario| match recorded.get(&slug(&s.name)) {
        None => (1, s.timeout.map_or(0.0, |t| t.as_secs_f64())),
        Some(d) => (0, *d),
    };
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (rank(&scenarios[a]), rank(&scenarios[b]));
        rb.0.cmp(&ra.0).then(rb.1.total_cmp(&ra.1)).then(a.cmp(&b))
    });
    order
}

/// Runs `scenarios` on `slots` as `plan` says (each `repeat` times, a failure tried again up
/// to `retries` times on a fresh target), started in `order` ([`start_order`]), each try in
/// its own folder under `report_dir` with its own seed derived from the run's `seed`, a line
/// printed as each run ends (and as a try is retried); the reports in the scenarios' order, a
/// scenario's repetitions in theirs.
pub async fn run_all(
    scenarios: &[Scenario],
    order: &[usize],
    slots: &Slots,
    report_dir: &Path,
    seed: u64,
    plan: Plan,
    bar: &ProgressBar,
) -> Vec<ScenarioReport> {
    // A real device's console is read for the whole run, into its folder's console.log.
    let consoles: Vec<Option<Console>> = match slots {
        Slots::Devices(members) => members
            .iter()
            .map(|m| {
                let entry = m.console.as_ref()?;
                let dir = member_dir(m, report_dir);
                let _ = std::fs::create_dir_all(&dir);
                Console::start(entry, dir.join("console.log"))
                    .map_err(|e| line(bar, format!("{}: the console cannot be logged: {e}", m.dev.ssh.host)))
                    .ok()
            })
            .collect(),
        _ => Vec::new(),
    };
    let workers: Vec<(Option<&FleetMember>, Option<&Console>)> = match slots {
        Slots::Fresh { .. } => vec![(None, None); slots.width()],
        Slots::Devices(members) => members
            .iter()
            .zip(&consoles)
            .map(|(m, c)| (Some(m), c.as_ref()))
            .collect(),
    };
    // Every repetition of every scenario is one item; the slots take the next when free.
    let repeat = plan.repeat.max(1);
    let items: Vec<usize> = order
        .iter()
        .flat_map(|&si| (0..repeat).map(move |r| si * repeat + r))
        .collect();
    bar.set_length((scenarios.len() * repeat) as u64);
    let next = Mutex::new(0usize);
    let done: Mutex<Vec<(usize, ScenarioReport)>> = Mutex::default();
    let (next, done_ref, items) = (&next, &done, &items);
    // The slots run concurrently within this task (the runner's futures are not Send).
    let workers = workers.into_iter().map(|(member, console)| async move {
        loop {
            let i = {
                let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                *n - 1
            };
            let Some(&i) = items.get(i) else { break };
            let Some(s) = scenarios.get(i / repeat) else { break };
            let rep = i % repeat + 1;
            let mut tries = Vec::new();
            for t in 1..=plan.retries + 1 {
                let k = plan.index(rep, t);
                let try_seed = Plan::seed(seed, k);
                let work = plan.work(&slug(&s.name), rep, t);
                let mut r = match (member, slots) {
                    (None, Slots::Fresh { kind, parts, .. }) => {
                        bar.set_message(format!("{}: {}", s.name, kind.starting()));
                        run_fresh(s, parts.as_ref(), &report_dir.join(&work), try_seed, bar).await
                    }
                    (Some(m), _) => run_on_device(s, m, console, report_dir, &work, try_seed, bar).await,
                    (None, Slots::Devices(_)) => return,
                };
                r.attempt.seed = Some(try_seed);
                r.attempt.repetition = plan.repetition(rep);
                if work != slug(&s.name) {
                    r.attempt.work = Some(match member.and_then(|m| m.name.as_ref()) {
                        Some(n) => format!("{n}/{work}"),
                        None => work.clone(),
                    });
                }
                let again = tries::retry(&r) && t <= plan.retries;
                if again {
                    line(
                        bar,
                        format!(
                            "RETRY {} (try {t} of at most {} failed, seed {try_seed}: {}; evidence in {})",
                            r.label(),
                            plan.retries + 1,
                            r.reason.as_deref().unwrap_or(""),
                            r.work_dir()
                        ),
                    );
                }
                tries.push(r);
                if !again {
                    break;
                }
            }
            let Some(r) = tries::fold(tries) else { continue };
            line(bar, result_line(&r));
            bar.inc(1);
            done_ref.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
        }
    });
    futures_util::future::join_all(workers).await;
    let mut done = std::mem::take(&mut *done.lock().unwrap_or_else(|p| p.into_inner()));
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// A real device's folder in the report: its inventory name, or the report's own.
fn member_dir(m: &FleetMember, report_dir: &Path) -> PathBuf {
    match &m.name {
        Some(n) => report_dir.join(n),
        None => report_dir.to_path_buf(),
    }
}

/// One scenario on a real device (skipped when it needs the emulator), in the device's folder's
/// `work`; its part of the device's console goes into that folder, and its tail into the
/// report when it failed.
async fn run_on_device(
    s: &Scenario,
    m: &FleetMember,
    console: Option<&Console>,
    report_dir: &Path,
    work: &str,
    seed: u64,
    bar: &ProgressBar,
) -> ScenarioReport {
    if s.has_tag(scenario::EMULATOR_ONLY) {
        let mut r = skipped(s, "emulator-only: needs the emulator's lifecycle");
        r.device = m.name.clone();
        return r;
    }
    let dir = member_dir(m, report_dir);
    let from = console.map(Console::offset);
    let label = match &m.name {
        Some(n) => format!("{n}: {}", s.name),
        None => s.name.clone(),
    };
    let b = bar.clone();
    let bench = Bench {
        dev: m.dev.clone(),
        power: m.power.clone(),
        sdmux: m.sdmux.clone(),
        throwaway: m.throwaway,
    };
    let mut r = run_scenario(s, &m.dev, Some(&bench), &dir.join(work), seed, &move |msg| {
        b.set_message(format!("{label}: {msg}"))
    })
    .await;
    if let (Some(c), Some(from)) = (console, from) {
        let part = c.slice(from);
        let _ = std::fs::write(dir.join(work).join("console.log"), &part);
        if r.outcome != Outcome::Passed {
            r.console = Some(console::tail(&part, CONSOLE_LINES));
        }
    }
    r.device = m.name.clone();
    r
}

/// A scenario that did not run, and why.
pub fn skipped(s: &Scenario, why: &str) -> ScenarioReport {
    ScenarioReport {
        name: s.name.clone(),
        file: s.file.display().to_string(),
        outcome: Outcome::Skipped,
        reason: Some(why.to_string()),
        duration_s: 0.0,
        ready_s: None,
        steps: Vec::new(),
        journal: None,
        device_state: None,
        console: None,
        cleanup: Vec::new(),
        undo_failed: false,
        device: None,
        device_info: None,
        required: s.must_run,
        attempt: Default::default(),
    }
}

/// A scenario whose device could not be started: an infrastructure error, not a failure.
fn not_started(s: &Scenario, e: &crate::device::Error, started: Instant) -> ScenarioReport {
    let mut r = skipped(s, "");
    r.outcome = Outcome::InfraError;
    r.reason = Some(e.to_string());
    r.duration_s = started.elapsed().as_secs_f64();
    r
}

/// Runs one scenario on a fresh device started from `parts`, its files in `work`, removed
/// afterwards (what it keeps for people, a stand-in's console, stays there).
pub async fn run_fresh(s: &Scenario, parts: &dyn Parts, work: &Path, seed: u64, bar: &ProgressBar) -> ScenarioReport {
    let started = Instant::now();
    let (dev, device) = match parts.start(work, &|m| line(bar, format!("nexus-hil: {m}"))).await {
        Ok(d) => d,
        Err(e) => return not_started(s, &e, started),
    };
    let lifecycle: &dyn Lifecycle = device.as_ref();
    let name = s.name.clone();
    let b = bar.clone();
    let mut r = run_scenario(s, &dev, Some(lifecycle), work, seed, &move |m| {
        b.set_message(format!("{name}: {m}"))
    })
    .await;
    r.ready_s = Some(device.ready_after().as_secs_f64());
    r.duration_s = started.elapsed().as_secs_f64();
    // A step that failed because the device died is the infrastructure's failure, not the
    // scenario's: say so, with the step it happened in.
    if r.outcome == Outcome::Failed {
        if let Some(why) = device.gone().await {
            r.outcome = Outcome::InfraError;
            r.reason = Some(format!(
                "{why}; {}",
                r.reason.as_deref().unwrap_or("no step had failed yet")
            ));
        }
    }
    if let Err(e) = device.close().await {
        eprintln!("nexus-hil: {e}");
    }
    r
}

/// Parses `K/N` with 1 <= K <= N.
pub fn parse_partition(s: &str) -> Result<(usize, usize), Error> {
    let bad = |why: String| Error::Partition {
        given: s.to_string(),
        why,
    };
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| bad("write K/N, e.g. 2/3 for the second of three parts".into()))?;
    let (k, n): (usize, usize) = match (k.trim().parse(), n.trim().parse()) {
        (Ok(k), Ok(n)) => (k, n),
        _ => return Err(bad("K and N are whole numbers, e.g. 2/3".into())),
    };
    if n == 0 || k == 0 || k > n {
        return Err(bad(format!("need 1 <= K <= N, e.g. 1/{}", n.max(1))));
    }
    Ok((k, n))
}

/// Part `k` of `n` of `items`: every n-th one from the k-th on, in their order.
pub fn partition<T>(items: Vec<T>, (k, n): (usize, usize)) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == k - 1)
        .map(|(_, t)| t)
        .collect()
}

/// Part `k` of `n` of `items` balanced by their expected durations (`cost`; `None`: not
/// known, counted as the median of the known ones): the longest first, each to the part with
/// the least so far (ties to the lower part), so every job that computes it from the same
/// history gets the same split. The part keeps the files' order.
pub fn partition_balanced<T>(items: Vec<T>, (k, n): (usize, usize), cost: impl Fn(&T) -> Option<f64>) -> Vec<T> {
    let costs: Vec<Option<f64>> = items.iter().map(&cost).collect();
    let mut known: Vec<f64> = costs.iter().flatten().copied().collect();
    known.sort_by(f64::total_cmp);
    let fallback = known.get(known.len() / 2).copied().unwrap_or(1.0);
    let costs: Vec<f64> = costs.into_iter().map(|c| c.unwrap_or(fallback)).collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0.0; n];
    let mut part_of = vec![0; items.len()];
    for i in order {
        let (p, _) = load.iter().enumerate().fold(
            (0, f64::INFINITY),
            |best, (p, l)| if *l < best.1 { (p, *l) } else { best },
        );
        load[p] += costs[i];
        part_of[i] = p;
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| part_of[*i] == k - 1)
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_expected_scenario_starts_first() {
        let sc = |name: &str, timeout: &str| {
            let t = if timeout.is_empty() {
                String::new()
            } else {
                format!("timeout: {timeout}\n")
            };
            let yaml = format!("name: {name}\n{t}steps:\n  - ssh.run: {{as: root, command: id}}\n");
            Scenario::parse(&yaml, Path::new("t.yaml")).unwrap()
        };
        // The default suite on a fresh checkout: no history; the two that declare a limit
        // (the UI flow, the total failure) first, the longer limit first, then the files' order.
        let suite = [
            sc("a", ""),
            sc("ui", "8m"),
            sc("b", ""),
            sc("total", "15m"),
            sc("c", ""),
        ];
        assert_eq!(start_order(&suite, &HashMap::new()), [3, 1, 0, 2, 4]);
        // With recorded durations the longest goes first; a scenario never recorded before them.
        let recorded = HashMap::from([
            ("a".to_string(), 5.0),
            ("ui".to_string(), 36.0),
            ("b".to_string(), 9.0),
            ("total".to_string(), 21.0),
        ]);
        assert_eq!(start_order(&suite, &recorded), [4, 1, 3, 2, 0]);
    }

    #[test]
    fn a_balanced_split_evens_the_recorded_durations_out() {
        // Round robin would give 110 s and 90 s; by durations both parts take 100 s.
        let items = [
            ("a", Some(100.0)),
            ("b", Some(10.0)),
            ("c", Some(10.0)),
            ("d", Some(80.0)),
        ];
        let part = |k| {
            partition_balanced(items.to_vec(), (k, 2), |i| i.1)
                .iter()
                .map(|i| i.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(part(1), ["a"]);
        assert_eq!(part(2), ["b", "c", "d"]);
        // An unknown duration counts as the median of the known ones; every item lands once.
        let items: Vec<(usize, Option<f64>)> = (0..9).map(|i| (i, (i % 3 != 0).then_some(i as f64))).collect();
        let mut all: Vec<usize> = (1..=3)
            .flat_map(|k| partition_balanced(items.clone(), (k, 3), |i| i.1))
            .map(|i| i.0)
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn partitions_parse_and_cover_the_suite_once() {
        assert_eq!(parse_partition("2/3").ok(), Some((2, 3)));
        for bad in ["3", "0/2", "3/2", "a/b", "1/0"] {
            let e = parse_partition(bad).unwrap_err().to_string();
            assert!(
                e.contains("K/N") || e.contains("K <= N") || e.contains("whole numbers"),
                "{bad}: {e}"
            );
        }
        let items: Vec<u32> = (0..11).collect();
        let parts: Vec<Vec<u32>> = (1..=3).map(|k| partition(items.clone(), (k, 3))).collect();
        let mut all: Vec<u32> = parts.concat();
        all.sort();
        assert_eq!(all, items, "every scenario in exactly one part");
        assert!(
            parts.iter().all(|p| p.len() == 3 || p.len() == 4),
            "balanced: {parts:?}"
        );
        assert_eq!(
            partition(items.clone(), (2, 3)),
            partition(items, (2, 3)),
            "deterministic"
        );
    }
}
