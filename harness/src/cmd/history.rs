//! `nexus-hil history`: the results history that every run appends to. `check` finds the
//! change points of every series (per device), prints the gate's verdict on each
//! ([`crate::history::gate`] decides) and can fail CI on one that gates; `report` writes the
//! trend page; `flaky` lists the scenarios whose outcomes differ on one commit and device.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::say;
use crate::error::InfraError;
use crate::exit::Exit;
use crate::history::gate::{self, Verdict};
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
    /// work: it follows the machine, not the code) is printed as HOST and never gates. A change
    /// for the worse is excused only by a control on the same device that moved the same way,
    /// by at least half as much, at the same commit (±1): it is printed unconfirmed and judged
    /// again at every later commit, until the control comes back (then it gates) or both have
    /// stayed for more than --newest commits (then it is the machine's). A change for the worse
    /// proven only now, after more than --newest commits, gates once, where it is proven
    /// (--no-late-changes: not). Exit status: 0, or 1 with --fail-on-regression when a change
    /// gates; 2 when the history cannot be read.
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
        /// Leave out series whose name contains this (repeatable): e.g. a latency too noisy to
        /// gate on, whose changes are proven only many runs late.
        #[arg(long, value_name = "SUBSTRING")]
        exclude: Vec<String>,
        /// Series whose name contains this are controls too, besides those recorded as such
        /// (repeatable; e.g. for a history recorded before series had roles).
        #[arg(long, value_name = "SUBSTRING")]
        control: Vec<String>,
        /// Exit 1 when a change gates: one for the worse among the newest commits, one proven
        /// only now, or one whose excusing control came back.
        #[arg(long)]
        fail_on_regression: bool,
        /// How many of the newest commits count as newest.
        #[arg(long, default_value_t = 3)]
        newest: usize,
        /// Gate only on changes among the newest commits: one for the worse first proven later
        /// (a noisy series proves a change many runs after it came in) is printed, not gated.
        /// To keep the rule and leave one such series out of the gate, use --exclude with its
        /// name (e.g. --exclude probe/backup-no-cap/), or --series for the ones you gate on.
        #[arg(long)]
        no_late_changes: bool,
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
    /// List the scenarios whose outcomes differ on the same commit and device: flaky, not real.
    ///
    /// The history keeps every try of every run (each repetition of `run --repeat N`, each
    /// retry of `--retries N`, and plain runs): a scenario that both passed and failed on one
    /// commit and device is printed with its passes, its failure ratio and that ratio's 95 %
    /// interval (Wilson). Skips and infrastructure errors say nothing of a scenario and are not
    /// counted. Exit status: 0, or 1 with --fail-on-flaky when one is listed; 2 when the
    /// history cannot be read.
    Flaky {
        /// The history (a SQLite file or a postgres:// URL). Default: $NEXUS_HIL_HISTORY, else
        /// target/nexus-hil/history.sqlite.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
        /// Only this device's runs.
        #[arg(long)]
        device: Option<String>,
        /// Only this commit's runs (as the runs recorded it: the checkout's commit id, or
        /// NEXUS_HIL_COMMIT; its first characters will do).
        #[arg(long)]
        commit: Option<String>,
        /// Exit 1 when a scenario is listed.
        #[arg(long)]
        fail_on_flaky: bool,
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
async fn open(given: Option<&str>) -> Result<(String, Store), history::Error> {
    let spec = history::store_spec(given, Path::new("target/nexus-hil/run"));
    if !spec.contains("://") && !Path::new(&spec).exists() {
        return Err(history::Error::Open(format!(
            "no history at {spec}: `nexus-hil run` appends to it (or name one with --history / NEXUS_HIL_HISTORY)"
        )));
    }
    let store = Store::open(&spec).await?;
    Ok((spec, store))
}

/// What `load` found: where the history is, and its trends now and as they stood before the
/// newest commit (each device's newest commit's runs left out).
struct Loaded {
    spec: String,
    now: Vec<Trend>,
    before: Vec<Trend>,
}

/// Every trend of the history `given` names (series narrowed by `filter` and `exclude`; those
/// named like one of `controls` taken as controls).
async fn load(
    given: Option<&str>,
    filter: Option<&str>,
    exclude: &[String],
    controls: &[String],
    upto: Option<&str>,
    o: changepoint::Options,
) -> Result<Loaded, history::Error> {
    let (spec, store) = open(given).await?;
    let mut all = Vec::new();
    for mut s in store
        .series()
        .await
        .map_err(|e| history::Error::Read(format!("{spec}: {e}")))?
    {
        if filter.is_some_and(|f| !s.name.contains(f)) || exclude.iter().any(|x| s.name.contains(x.as_str())) {
            continue;
        }
        if controls.iter().any(|c| s.name.contains(c.as_str())) {
            s.role = Role::Control;
        }
        let points = store
            .points(&s.name)
            .await
            .map_err(|e| history::Error::Read(format!("{spec}: {}: {e}", s.name)))?;
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
            return Err(history::Error::Read(format!(
                "{spec} has no run of commit {c}{}: name one of its commits as the runs recorded them (the checkout's commit id, or NEXUS_HIL_COMMIT)",
                filter.map(|f| format!(" in a series named like {f}")).unwrap_or_default()
            )));
        };
        for (_, ps) in &mut all {
            ps.retain(|p| p.started_at <= cutoff);
        }
    }
    // Each device's newest commit: that of its latest run.
    let mut newest: std::collections::HashMap<&str, (i64, &str)> = std::collections::HashMap::new();
    for p in all.iter().flat_map(|(_, ps)| ps) {
        let e = newest
            .entry(p.device.as_str())
            .or_insert((p.started_at, p.commit.as_str()));
        if p.started_at > e.0 {
            *e = (p.started_at, p.commit.as_str());
        }
    }
    let earlier: Vec<Vec<history::store::Point>> = all
        .iter()
        .map(|(_, ps)| {
            ps.iter()
                .filter(|p| newest.get(p.device.as_str()).is_none_or(|(_, c)| *c != p.commit))
                .cloned()
                .collect()
        })
        .collect();
    let now = all.iter().flat_map(|(s, ps)| history::trends(s, ps, o)).collect();
    let before = all
        .iter()
        .zip(&earlier)
        .flat_map(|((s, _), ps)| history::trends(s, ps, o))
        .collect();
    Ok(Loaded { spec, now, before })
}

/// Runs `nexus-hil history`.
pub async fn command(args: HistoryArgs) -> Result<ExitCode, InfraError> {
    match args.command {
        HistoryCmd::Report {
            history,
            control,
            output,
        } => report(history.as_deref(), &control, &output).await,
        HistoryCmd::Flaky {
            history,
            device,
            commit,
            fail_on_flaky,
        } => flaky(history.as_deref(), device.as_deref(), commit.as_deref(), fail_on_flaky).await,
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
            exclude,
            control,
            fail_on_regression,
            newest,
            no_late_changes,
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
            let loaded = load(
                history.as_deref(),
                series.as_deref(),
                &exclude,
                &control,
                upto.as_deref(),
                o,
            )
            .await;
            let Loaded { spec, now, before } = match loaded {
                Ok(t) => t,
                Err(e) => {
                    say(&e.to_string());
                    return Ok(ExitCode::from(Exit::Usage));
                }
            };
            let on_device = |trends: Vec<Trend>| -> Vec<Trend> {
                trends
                    .into_iter()
                    .filter(|t| device.as_deref().is_none_or(|d| d == t.device))
                    .collect()
            };
            let (now, before) = (on_device(now), on_device(before));
            let policy = gate::Policy {
                newest,
                late_changes: !no_late_changes,
            };
            let judged = gate::judge(&now, &before, policy);
            for j in &judged {
                println!("{}", line(j));
            }
            let tally = Tally::of(&judged);
            let changes: usize = now.iter().map(|t| t.changes.len()).sum();
            if tally.regressions > 0 && tally.host > 0 {
                println!(
                    "note: a control series changed among the newest {newest} commits too: the machine itself moved meanwhile; run those commits again before blaming them"
                );
            }
            let mut aside = Vec::new();
            if tally.unconfirmed > 0 {
                aside.push(format!(
                    "{} more while a control says the machine is slower: not gating yet, run them again",
                    tally.unconfirmed
                ));
            }
            if tally.news > 0 {
                aside.push(format!(
                    "{} from before them that gate{} now: proven only now, or their control came back",
                    tally.news,
                    if tally.news == 1 { "s" } else { "" }
                ));
            }
            if tally.machine > 0 {
                aside.push(format!(
                    "{} the machine's: a control moved as much at the same commit, and both stayed",
                    tally.machine
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
                now.len(),
                tally.regressions,
                if aside.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", aside.join("; "))
                }
            );
            Ok(if fail_on_regression && judged.iter().any(|j| j.verdict.gates()) {
                ExitCode::from(Exit::Failed)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// What `check` counts for its summary.
struct Tally {
    /// Changes for the worse among the newest commits that gate.
    regressions: usize,
    /// Changes that gate from before the newest commits: proven only now, or their control
    /// came back.
    news: usize,
    /// Changes for the worse a control still excuses: not gating yet.
    unconfirmed: usize,
    /// Changes for the worse a control moved as much with, both still there after --newest
    /// commits: the machine's.
    machine: usize,
    /// Changes of control series among the newest commits (which never gate).
    host: usize,
}

impl Tally {
    fn of(judged: &[gate::Judged]) -> Self {
        let count = |f: &dyn Fn(&gate::Judged) -> bool| judged.iter().filter(|j| f(j)).count();
        Tally {
            regressions: count(&|j| j.recent && j.verdict.gates()),
            news: count(&|j| !j.recent && j.verdict.gates()),
            unconfirmed: count(&|j| matches!(j.verdict, Verdict::Unconfirmed { .. })),
            machine: count(&|j| matches!(j.verdict, Verdict::Machine { .. })),
            host: count(&|j| j.recent && j.verdict == Verdict::Host),
        }
    }
}

/// A change's line: the series, its size and commit range, and the gate's verdict on it.
fn line(j: &gate::Judged) -> String {
    let (t, c) = (j.trend, j.change);
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let n = t.commits.len();
    let why = match &j.verdict {
        Verdict::Gates | Verdict::Better | Verdict::Old => String::new(),
        Verdict::Host => "; a control: the machine moved, not the code".to_string(),
        Verdict::GatesLate { commits_after } => format!(
            "; gating: proven only now, after {commits_after} commits with it (--no-late-changes: not gating)"
        ),
        Verdict::ControlBack { control, back } => format!(
            "; gating: the control {} was slower too from {}, came back at {}, and this stayed: the code's",
            control.series,
            short(&control.commit),
            short(back)
        ),
        Verdict::Unconfirmed { control } => format!(
            "; unconfirmed, not gating yet: the control {} is slower too ({:+.1} %), since {}: the machine moved; run these commits again",
            control.series,
            control.relative * 100.0,
            short(&control.commit)
        ),
        Verdict::Machine { control } => format!(
            "; the machine's, not gating: the control {} moved as much ({:+.1} %) at {}, and both stayed",
            control.series,
            control.relative * 100.0,
            short(&control.commit)
        ),
    };
    format!(
        "{}  {} on {}: {:+.1} % ({:.4} -> {:.4} {}) between {} and {} (p = {:.2e}){}{}",
        match (&j.verdict, t.worse(c)) {
            (Verdict::Host, _) => "HOST  ",
            (_, true) => "WORSE ",
            (_, false) => "better",
        },
        t.series.name,
        t.device,
        c.relative() * 100.0,
        c.mean_before,
        c.mean_after,
        t.series.unit,
        short(&t.commits[c.index - 1].0),
        short(&t.commits[c.index].0),
        c.p_value,
        if j.recent {
            format!(", {} commit(s) ago", n - c.index)
        } else {
            String::new()
        },
        why
    )
}

/// `history report`.
async fn report(history: Option<&str>, controls: &[String], output: &Path) -> Result<ExitCode, InfraError> {
    let (spec, trends) = match load(history, None, &[], controls, None, changepoint::Options::default()).await {
        Ok(l) => (l.spec, l.now),
        Err(e) => {
            say(&e.to_string());
            return Ok(ExitCode::from(Exit::Usage));
        }
    };
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
    }
    std::fs::write(output, history::page::render(&trends, &spec)).map_err(|e| InfraError::io(output.display(), e))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

/// `history flaky`.
async fn flaky(
    history: Option<&str>,
    device: Option<&str>,
    commit: Option<&str>,
    fail_on_flaky: bool,
) -> Result<ExitCode, InfraError> {
    let read = async {
        let (spec, store) = open(history).await?;
        let mut seen = store
            .outcomes()
            .await
            .map_err(|e| history::Error::Read(format!("{spec}: {e}")))?;
        seen.retain(|s| device.is_none_or(|d| d == s.device) && commit.is_none_or(|c| s.commit.starts_with(c)));
        Ok::<_, history::Error>((spec, seen))
    };
    let (spec, seen) = match read.await {
        Ok(r) => r,
        Err(e) => {
            say(&e.to_string());
            return Ok(ExitCode::from(Exit::Usage));
        }
    };
    let flaky = history::outcomes::flaky(&seen);
    for f in &flaky {
        println!(
            "FLAKY  {} on {} at {}: {}",
            f.scenario,
            f.device,
            f.commit.chars().take(12).collect::<String>(),
            f.describe()
        );
    }
    println!(
        "{} flaky scenario(s) in {spec}: outcomes that differ on one commit and device, of {} kept",
        flaky.len(),
        seen.len()
    );
    Ok(if fail_on_flaky && !flaky.is_empty() {
        ExitCode::from(Exit::Failed)
    } else {
        ExitCode::SUCCESS
    })
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
        Ok::<_, history::Error>(ms.len())
    };
    match appended.await {
        Ok(n) => {
            println!("history: {n} benchmark series of baseline {baseline} appended to {spec}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say(&e.to_string());
            Ok(ExitCode::from(Exit::Usage))
        }
    }
}
