//! `nexus-hil history`: the results history that every run appends to. `check` finds the
//! change points of every series (per device) and can fail CI on a recent regression.

use std::process::ExitCode;

use super::say;
use crate::error::InfraError;
use crate::history::{self, changepoint, store::Store};

/// Arguments of `nexus-hil history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: HistoryCmd,
}

/// `nexus-hil history ...`.
#[derive(Debug, clap::Subcommand)]
pub enum HistoryCmd {
    /// Find where each series changed (PELT, each change confirmed by Welch's t-test).
    ///
    /// Per series and device, one value per commit (the median of that commit's runs; a
    /// latency's p99): each change is printed with its commit range, its size, whether it is
    /// worse, and its p-value. Exit status: 0, or 1 with --fail-on-regression when one of the
    /// newest commits holds a significant change for the worse; 2 when the history cannot be
    /// read.
    Check {
        /// The history (a SQLite file or a postgres:// URL). Default: $NEXUS_HIL_HISTORY, else
        /// target/nexus-hil/history.sqlite.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
        /// Only this device's runs.
        #[arg(long)]
        device: Option<String>,
        /// Only series whose name contains this.
        #[arg(long)]
        series: Option<String>,
        /// Exit 1 when a change for the worse is among the newest commits.
        #[arg(long)]
        fail_on_regression: bool,
        /// How many of the newest commits count as newest.
        #[arg(long, default_value_t = 3)]
        newest: usize,
        /// The largest p-value of a change that is reported (0.01: about one false alarm per
        /// hundred series of pure noise).
        #[arg(long, default_value_t = 0.01)]
        max_p: f64,
    },
}

/// Runs `nexus-hil history`.
pub async fn command(args: HistoryArgs) -> Result<ExitCode, InfraError> {
    let HistoryCmd::Check {
        history,
        device,
        series,
        fail_on_regression,
        newest,
        max_p,
    } = args.command;
    let spec = history::store_spec(history.as_deref(), std::path::Path::new("target/nexus-hil/run"));
    if !spec.contains("://") && !std::path::Path::new(&spec).exists() {
        say(&format!(
            "no history at {spec}: `nexus-hil run` appends to it (or name one with --history / NEXUS_HIL_HISTORY)"
        ));
        return Ok(ExitCode::from(2));
    }
    let store = match Store::open(&spec).await {
        Ok(s) => s,
        Err(e) => {
            say(&e);
            return Ok(ExitCode::from(2));
        }
    };
    let all = match store.series().await {
        Ok(s) => s,
        Err(e) => {
            say(&format!("{spec}: {e}"));
            return Ok(ExitCode::from(2));
        }
    };
    let o = changepoint::Options {
        max_p,
        ..changepoint::Options::default()
    };
    let (mut checked, mut changes, mut regressions) = (0, 0, 0);
    for s in all
        .iter()
        .filter(|s| series.as_deref().is_none_or(|f| s.name.contains(f)))
    {
        let points = match store.points(&s.name).await {
            Ok(p) => p,
            Err(e) => {
                say(&format!("{spec}: {}: {e}", s.name));
                return Ok(ExitCode::from(2));
            }
        };
        for t in history::trends(s, &points, o) {
            if device.as_deref().is_some_and(|d| d != t.device) {
                continue;
            }
            checked += 1;
            let n = t.commits.len();
            for c in &t.changes {
                changes += 1;
                let worse = t.worse(c);
                let recent = c.index + newest >= n;
                if worse && recent {
                    regressions += 1;
                }
                let short = |i: usize| t.commits[i].0.chars().take(12).collect::<String>();
                println!(
                    "{}  {} on {}: {:+.1} % ({:.4} -> {:.4} {}) between {} and {} (p = {:.2e}){}",
                    if worse { "WORSE " } else { "better" },
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
                    }
                );
            }
        }
    }
    println!(
        "{checked} series checked in {spec}: {changes} change point(s), {regressions} for the worse among the newest {newest} commits"
    );
    Ok(if fail_on_regression && regressions > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
