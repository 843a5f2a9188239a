//! `nexus-hil history`: the results history that every run appends to. `check` finds the
//! change points of every series (per device) and can fail CI on a recent regression; `report`
//! writes the trend page.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::say;
use crate::error::InfraError;
use crate::history::store::{Role, Store};
use crate::history::{self, changepoint, Trend};

/// Arguments of `nexus-hil history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: HistoryCmd,
}

/// `nexus-hil history ...`.
#[derive(Debug, clap::Subcommand)]
pub enum HistoryCmd {
    /// Find where each series changed (PELT, each change confirmed by a t-test).
    ///
    /// Per series and device, one value per commit (the median of that commit's runs; a
    /// latency's p99): each change is printed with its commit range, its size, whether it is
    /// worse, and its p-value. A control series (a probe's idle windows, a bench of other tools'
    /// work: it follows the machine, not the code) is printed as HOST and never gates; while one
    /// is still slower since about when a change for the worse came in, that change does not
    /// gate either (the machine slowed too: run those commits again). Exit
    /// status: 0, or 1 with --fail-on-regression when one of the newest commits holds a
    /// significant change for the worse; 2 when the history cannot be read.
    Check {
        /// The history (a SQLite file or a postgres:// URL). Default: $NEXUS_HIL_HISTORY, else
        /// target/nexus-hil/history.sqlite.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
        /// Only this device's runs.
        #[arg(long)]
        device: Option<String>,
        /// Only series whose name contains this (controls named otherwise are then not
        /// consulted either).
        #[arg(long)]
        series: Option<String>,
        /// Series whose name contains this are controls too, besides those recorded as such
        /// (repeatable; e.g. for a history recorded before series had roles).
        #[arg(long, value_name = "SUBSTRING")]
        control: Vec<String>,
        /// Exit 1 when a change for the worse is among the newest commits.
        #[arg(long)]
        fail_on_regression: bool,
        /// How many of the newest commits count as newest.
        #[arg(long, default_value_t = 3)]
        newest: usize,
        /// The largest p-value of a change that is reported (Otava's default too; the test is
        /// made at the point the fit chose, which makes its p smaller than chance alone would,
        /// and 0.01 raised a false alarm about once in 30 runs of unchanged code here).
        #[arg(long, default_value_t = changepoint::Options::default().max_p)]
        max_p: f64,
        /// The smallest change of a series' mean that is reported, as a fraction of the mean
        /// before (0.05: 5 %; 0: every significant change, however small).
        #[arg(long, default_value_t = changepoint::Options::default().min_change, value_name = "FRACTION")]
        min_change: f64,
        /// Check the history as it stood when this commit was the newest: its runs and those of
        /// the commits run before it, nothing later (would the gate have fired at that commit?).
        #[arg(long, value_name = "COMMIT")]
        upto: Option<String>,
        /// The t-test a change must pass: the default judges the runs after a change with the
        /// history's noise unless they scatter more than it; welch is slower to flag a change
        /// (the newest runs bring their own few degrees of freedom), student (Otava's) quicker
        /// but also flags a few runs the host slowed.
        #[arg(long, value_enum, default_value_t = changepoint::Options::default().test)]
        test: changepoint::Test,
    },
    /// Append a criterion baseline (`ci/bench` saves one per commit) to the history.
    ///
    /// Each benchmark becomes the series bench/GROUP/ID/time_ns with criterion's samples (time
    /// per iteration), keyed by this commit and machine (device: the host, kind `host`).
    AppendCriterion {
        /// The baseline's name (`cargo bench -- --save-baseline NAME`).
        #[arg(long)]
        baseline: String,
        /// Criterion's output folder.
        #[arg(long, default_value = "target/criterion")]
        criterion_dir: PathBuf,
        /// Benchmarks whose name contains this are control series: they time the machine or
        /// other tools, not our code, and never gate (repeatable).
        #[arg(long, value_name = "SUBSTRING")]
        control: Vec<String>,
        /// The history (a SQLite file or a postgres:// URL). Default: $NEXUS_HIL_HISTORY, else
        /// target/nexus-hil/history.sqlite.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
    },
    /// Write the trend page: one self-contained HTML file (inline SVG, nothing fetched).
    ///
    /// A chart per series and device over commits: each run a dot, the commits' medians a line,
    /// each change point marked between its two commits with its size and p-value; a device
    /// filter at the top.
    Report {
        /// The history (a SQLite file or a postgres:// URL). Default: $NEXUS_HIL_HISTORY, else
        /// target/nexus-hil/history.sqlite.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
        /// Series whose name contains this are shown as controls too (as for `check`).
        #[arg(long, value_name = "SUBSTRING")]
        control: Vec<String>,
        /// Where the page goes.
        #[arg(long, short, default_value = "target/nexus-hil/history.html")]
        output: PathBuf,
    },
}

/// Opens the history `given` names (or the default); the error says where and what to do.
async fn open(given: Option<&str>) -> Result<(String, Store), String> {
    let spec = history::store_spec(given, Path::new("target/nexus-hil/run"));
    if !spec.contains("://") && !Path::new(&spec).exists() {
        return Err(format!(
            "no history at {spec}: `nexus-hil run` appends to it (or name one with --history / NEXUS_HIL_HISTORY)"
        ));
    }
    let store = Store::open(&spec).await?;
    Ok((spec, store))
}

/// Every trend of the history `given` names (series narrowed by `filter`; those named like one
/// of `controls` taken as controls), and where it is.
async fn load(
    given: Option<&str>,
    filter: Option<&str>,
    controls: &[String],
    upto: Option<&str>,
    o: changepoint::Options,
) -> Result<(String, Vec<Trend>), String> {
    let (spec, store) = open(given).await?;
    let mut all = Vec::new();
    for mut s in store.series().await.map_err(|e| format!("{spec}: {e}"))? {
        if filter.is_some_and(|f| !s.name.contains(f)) {
            continue;
        }
        if controls.iter().any(|c| s.name.contains(c.as_str())) {
            s.role = Role::Control;
        }
        let points = store
            .points(&s.name)
            .await
            .map_err(|e| format!("{spec}: {}: {e}", s.name))?;
        all.push((s, points));
    }
    if let Some(c) = upto {
        // The history as it stood when the commit's last run had been appended.
        let Some(cutoff) = all
            .iter()
            .flat_map(|(_, ps)| ps)
            .filter(|p| p.commit == c)
            .map(|p| p.started_at)
            .max()
        else {
            return Err(format!(
                "{spec} has no run of commit {c}{}: name one of its commits as the runs recorded them (the checkout's commit id, or NEXUS_HIL_COMMIT)",
                filter.map(|f| format!(" in a series named like {f}")).unwrap_or_default()
            ));
        };
        for (_, ps) in &mut all {
            ps.retain(|p| p.started_at <= cutoff);
        }
    }
    let out = all.iter().flat_map(|(s, ps)| history::trends(s, ps, o)).collect();
    Ok((spec, out))
}

/// Runs `nexus-hil history`.
pub async fn command(args: HistoryArgs) -> Result<ExitCode, InfraError> {
    match args.command {
        HistoryCmd::Report {
            history,
            control,
            output,
        } => report(history.as_deref(), &control, &output).await,
        HistoryCmd::AppendCriterion {
            baseline,
            criterion_dir,
            control,
            history,
        } => append_criterion(&baseline, &criterion_dir, &control, history.as_deref()).await,
        HistoryCmd::Check {
            history,
            device,
            series,
            control,
            fail_on_regression,
            newest,
            max_p,
            min_change,
            upto,
            test,
        } => {
            let o = changepoint::Options {
                max_p,
                min_change,
                test,
                ..changepoint::Options::default()
            };
            let loaded = load(history.as_deref(), series.as_deref(), &control, upto.as_deref(), o).await;
            let (spec, trends) = match loaded {
                Ok(t) => t,
                Err(e) => {
                    say(&e);
                    return Ok(ExitCode::from(2));
                }
            };
            let trends: Vec<Trend> = trends
                .into_iter()
                .filter(|t| device.as_deref().is_none_or(|d| d == t.device))
                .collect();
            let tally = check(&trends, newest);
            let changes: usize = trends.iter().map(|t| t.changes.len()).sum();
            if tally.regressions > 0 && tally.host > 0 {
                println!(
                    "note: a control series changed among the newest {newest} commits too: the machine itself moved meanwhile; run those commits again before blaming them"
                );
            }
            let mut aside = Vec::new();
            if tally.excused > 0 {
                aside.push(format!(
                    "{} more while a control says the machine is slower: not gating, run them again",
                    tally.excused
                ));
            }
            if tally.host > 0 {
                aside.push(format!(
                    "{} of a control series there: the machine's, not gating",
                    tally.host
                ));
            }
            println!(
                "{} series checked in {spec}: {changes} change point(s), {} for the worse among the newest {newest} commits{}",
                trends.len(),
                tally.regressions,
                if aside.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", aside.join("; "))
                }
            );
            Ok(if fail_on_regression && tally.regressions > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// What `check` found among the newest commits.
struct Tally {
    /// Changes for the worse of series that measure the code: these gate.
    regressions: usize,
    /// Changes for the worse while a control on the same device was slower since a commit
    /// close to theirs, and still is: the machine's doing as likely as the code's; not gating.
    excused: usize,
    /// Changes of control series (which never gate).
    host: usize,
}

/// Prints every change point, and counts those among the newest commits.
///
/// A change for the worse among the newest commits gates, unless a control series on the same
/// device is at a worse level still, since a commit at most `newest` commits from where the
/// change came in: the machine slowed then too (seen: the hand-made `tar | gpg` 13 % slower
/// from two commits before the portable cipher 6 % slower, on unchanged code). A control that
/// came back does not excuse anything: what stayed slower after the machine recovered is the
/// code's.
fn check(trends: &[Trend], newest: usize) -> Tally {
    // Each control whose latest change is for the worse: its device, the commit it came in at,
    // its name.
    let slower: Vec<(&str, &str, &str)> = trends
        .iter()
        .filter(|t| t.series.role == Role::Control)
        .filter_map(|t| {
            let c = t.changes.last().filter(|c| t.worse(c))?;
            Some((t.device.as_str(), t.commits[c.index].0.as_str(), t.series.name.as_str()))
        })
        .collect();
    let mut tally = Tally {
        regressions: 0,
        excused: 0,
        host: 0,
    };
    for t in trends {
        let n = t.commits.len();
        let control = t.series.role == Role::Control;
        for c in &t.changes {
            let worse = t.worse(c);
            let recent = c.index + newest >= n;
            let short = |i: usize| t.commits[i].0.chars().take(12).collect::<String>();
            let mut why = String::new();
            if recent && control {
                tally.host += 1;
            } else if worse && recent {
                let excuse = slower.iter().find(|(device, commit, _)| {
                    *device == t.device
                        && t.commits
                            .iter()
                            .position(|(id, _)| id == commit)
                            .is_some_and(|j| j.abs_diff(c.index) <= newest)
                });
                match excuse {
                    Some((_, commit, name)) => {
                        tally.excused += 1;
                        why = format!(
                            "; not gating: the control {name} is slower too, since {}: the machine moved; run these commits again",
                            commit.chars().take(12).collect::<String>()
                        );
                    }
                    None => tally.regressions += 1,
                }
            }
            println!(
                "{}  {} on {}: {:+.1} % ({:.4} -> {:.4} {}) between {} and {} (p = {:.2e}){}{}{}",
                match (control, worse) {
                    (true, _) => "HOST  ",
                    (false, true) => "WORSE ",
                    (false, false) => "better",
                },
                t.series.name,
                t.device,
                c.relative() * 100.0,
                c.mean_before,
                c.mean_after,
                t.series.unit,
                short(c.index - 1),
                short(c.index),
                c.p_value,
                if recent {
                    format!(", {} commit(s) ago", n - c.index)
                } else {
                    String::new()
                },
                if control {
                    "; a control: the machine moved, not the code"
                } else {
                    ""
                },
                why
            );
        }
    }
    tally
}

/// `history report`.
async fn report(history: Option<&str>, controls: &[String], output: &Path) -> Result<ExitCode, InfraError> {
    let (spec, trends) = match load(history, None, controls, None, changepoint::Options::default()).await {
        Ok(t) => t,
        Err(e) => {
            say(&e);
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
    }
    std::fs::write(output, history::page::render(&trends, &spec)).map_err(|e| InfraError::io(output.display(), e))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

/// `history append-criterion`.
async fn append_criterion(
    baseline: &str,
    dir: &Path,
    controls: &[String],
    history: Option<&str>,
) -> Result<ExitCode, InfraError> {
    let spec = history::store_spec(history, Path::new("target/nexus-hil/run"));
    let appended = async {
        let ms = history::criterion::baseline(dir, baseline, controls)?;
        let store = Store::open(&spec).await?;
        let key = history::record::key(&history::record::host(), "host", history::record::now(), "bench");
        store.append(&key, &ms).await?;
        Ok::<_, String>(ms.len())
    };
    match appended.await {
        Ok(n) => {
            println!("history: {n} benchmark series of baseline {baseline} appended to {spec}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say(&e);
            Ok(ExitCode::from(2))
        }
    }
}
