//! Performance over time: [`store`] keeps every run's measurements (SQLite or PostgreSQL),
//! [`record`] turns a run's report into them, [`changepoint`] finds where a series of
//! measurements (one value per commit) changed, and whether the change is significant, [`gate`]
//! judges which changes stop a merge, and [`page`] draws the trends as one self-contained HTML
//! page; [`outcomes`] keeps every try's outcome and finds the flaky scenarios; [`criterion`]
//! reads `ci/bench`'s saved baselines; [`software`] keeps what each run found
//! on its device and says what changed since the last run that passed there. The store's
//! types are re-exported here; every failure is an [`Error`].

pub(crate) mod changepoint;
pub(crate) mod criterion;
pub(crate) mod gate;
pub mod outcomes;
pub(crate) mod page;
pub(crate) mod record;
pub mod software;
pub(crate) mod store;

pub use store::{Better, Measurement, Role, RunKey, Series, Stat, Store};

/// Why the history could not be used. Each message names the store (or the file) and what
/// failed; a run's reports are written whatever the history says.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened, or its schema brought up to date (a schema newer than
    /// this nexus-hil: update nexus-hil).
    #[error("{0}")]
    Open(String),
    /// A run, its outcomes or its software could not be written; nothing of it is kept.
    #[error("{0}")]
    Write(String),
    /// The store could not be read, or holds what this nexus-hil cannot read.
    #[error("{0}")]
    Read(String),
    /// Criterion's saved baselines could not be read.
    #[error("{0}")]
    Baseline(String),
}

/// The store to use: `given`, else $NEXUS_HIL_HISTORY, else history.sqlite beside the run's
/// report folder (so the default runs and ci/suite share target/nexus-hil/history.sqlite).
pub fn store_spec(given: Option<&str>, report_dir: &std::path::Path) -> String {
    given
        .map(str::to_string)
        .or_else(|| std::env::var("NEXUS_HIL_HISTORY").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            report_dir
                .parent()
                .unwrap_or(report_dir)
                .join("history.sqlite")
                .display()
                .to_string()
        })
}

/// Appends `report`'s measurements to the store `spec`, one run per device; how many series.
pub async fn append_run(
    spec: &str,
    report: &crate::report::RunReport,
    started_at: i64,
    source: &str,
) -> Result<usize, Error> {
    let store = store::Store::open(spec).await?;
    let mut n = 0;
    let mut measured = record::measurements(report);
    let found = software::found_per_device(report);
    // A device whose scenarios measured nothing (they failed) is still a run of its software.
    for device in found.keys() {
        measured.entry(device.clone()).or_default();
    }
    let commit = record::commit();
    for (device, ms) in measured {
        let key = record::run_key(report, &device, started_at, source);
        store.append(&key, &ms).await?;
        n += ms.len();
        if let Some(info) = found.get(&device) {
            let what = software::Found::from_info(info, &commit);
            store
                .record_software(&key.id, &what, software::passed_on(report, &device))
                .await?;
        }
    }
    // Every try's outcome, by device (its run's row made when the device measured nothing).
    for (device, rows) in outcomes::rows(report) {
        store
            .append_outcomes(&record::run_key(report, &device, started_at, source), &rows)
            .await?;
    }
    Ok(n)
}

/// What differs on each device of `report` from its last passing run in the store `spec`
/// (read before this run is appended).
pub async fn what_changed(
    spec: &str,
    report: &crate::report::RunReport,
) -> Result<Vec<crate::report::WhatChanged>, Error> {
    let found = software::found_per_device(report);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let store = store::Store::open(spec).await?;
    let commit = record::commit();
    let mut out = Vec::new();
    for (device, info) in found {
        let then = store.last_passed(&device).await?;
        out.push(software::diff(
            &device,
            then,
            &software::Found::from_info(&info, &commit),
        ));
    }
    Ok(out)
}

/// One series on one device: its value per commit (in the order the commits were first run)
/// and where it changed.
#[derive(Debug, Clone)]
pub struct Trend {
    pub series: store::Series,
    pub device: String,
    /// (commit, the median of its runs' values).
    pub commits: Vec<(String, f64)>,
    /// Each commit's runs' values, ascending (the spread), parallel to `commits`.
    pub runs: Vec<Vec<f64>>,
    pub changes: Vec<changepoint::Change>,
}

impl Trend {
    /// Whether `c` made the series worse.
    pub fn worse(&self, c: &changepoint::Change) -> bool {
        match self.series.better {
            store::Better::Lower => c.mean_after > c.mean_before,
            store::Better::Higher => c.mean_after < c.mean_before,
        }
    }
}

/// The trends of every series in `points` (one series' runs), per device.
pub fn trends(series: &store::Series, points: &[store::Point], o: changepoint::Options) -> Vec<Trend> {
    let mut devices: Vec<&str> = points.iter().map(|p| p.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    devices
        .into_iter()
        .map(|device| {
            let mut commits: Vec<(String, Vec<f64>)> = Vec::new();
            for p in points.iter().filter(|p| p.device == device) {
                let v = p.value(series.stat);
                match commits.iter_mut().find(|(c, _)| *c == p.commit) {
                    Some((_, vs)) => vs.push(v),
                    None => commits.push((p.commit.clone(), vec![v])),
                }
            }
            let mut runs: Vec<Vec<f64>> = Vec::with_capacity(commits.len());
            let commits: Vec<(String, f64)> = commits
                .into_iter()
                .map(|(c, mut vs)| {
                    // Sorted by `median`: the commit's runs, ascending, are its spread.
                    let med = changepoint::median(&mut vs);
                    runs.push(vs);
                    (c, med)
                })
                .collect();
            let values: Vec<f64> = commits.iter().map(|c| c.1).collect();
            Trend {
                series: series.clone(),
                device: device.to_string(),
                changes: changepoint::detect(&values, o),
                commits,
                runs,
            }
        })
        .collect()
}

/// Each scenario's recorded duration (by its slug): the median of its last 5 passed runs. A
/// history that does not exist yet has none.
pub async fn recorded_durations(spec: &str) -> Result<std::collections::HashMap<String, f64>, Error> {
    let mut out = std::collections::HashMap::new();
    if !spec.contains("://") && !std::path::Path::new(spec).exists() {
        return Ok(out);
    }
    let store = store::Store::open(spec).await?;
    for s in store.series().await? {
        let Some(scenario) = s
            .name
            .strip_prefix("scenario/")
            .and_then(|r| r.strip_suffix("/duration_s"))
            .filter(|r| !r.contains('/'))
        else {
            continue;
        };
        let points = store.points(&s.name).await?;
        let mut last: Vec<f64> = points.iter().rev().take(5).map(|p| p.value(s.stat)).collect();
        if last.is_empty() {
            continue;
        }
        out.insert(scenario.to_string(), changepoint::median(&mut last));
    }
    Ok(out)
}
