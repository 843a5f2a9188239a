//! Performance over time: [`store`] keeps every run's measurements (SQLite or PostgreSQL),
//! [`record`] turns a run's report into them, [`changepoint`] finds where a series of
//! measurements (one value per commit) changed, and whether the change is significant, [`gate`]
//! judges which changes stop a merge, and [`page`] draws the trends as one self-contained HTML
//! page; [`criterion`] reads `ci/bench`'s saved baselines.

pub mod changepoint;
pub mod criterion;
pub mod gate;
pub mod page;
pub mod record;
pub mod store;

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
) -> Result<usize, String> {
    let store = store::Store::open(spec).await?;
    let mut n = 0;
    for (device, ms) in record::measurements(report) {
        store
            .append(&record::run_key(report, &device, started_at, source), &ms)
            .await?;
        n += ms.len();
    }
    Ok(n)
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
pub async fn recorded_durations(spec: &str) -> Result<std::collections::HashMap<String, f64>, String> {
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
