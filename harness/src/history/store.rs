//! The results history: every run's measurements, keyed by commit, branch, device, host and
//! time, in one SQLite file (the default, which CI can cache) or a team's PostgreSQL, through
//! the same code (sqlx's `Any` driver; the URL chooses). The schema is versioned: each
//! migration runs once, in order, in a transaction, and a store newer than this build is
//! refused rather than written wrongly.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::Row;

use super::software::{self, Found};
use super::Error;
use crate::report::PassedRun;

/// The schema, one migration per version (version = index + 1). Portable SQL only: it runs on
/// SQLite and PostgreSQL as written.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        commit_id TEXT NOT NULL,
        branch TEXT NOT NULL,
        device TEXT NOT NULL,
        device_kind TEXT NOT NULL,
        device_model TEXT,
        software TEXT,
        host TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        source TEXT NOT NULL
    )",
        "CREATE TABLE series (
        name TEXT PRIMARY KEY,
        unit TEXT NOT NULL,
        better TEXT NOT NULL,
        stat TEXT NOT NULL
    )",
        "CREATE TABLE samples (
        run_id TEXT NOT NULL REFERENCES runs(id),
        series TEXT NOT NULL REFERENCES series(name),
        idx BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        weight BIGINT NOT NULL,
        PRIMARY KEY (run_id, series, idx)
    )",
        "CREATE INDEX samples_series ON samples (series)",
    ],
    // 2: a series' role; the series recorded before it measure the code.
    &["ALTER TABLE series ADD COLUMN role TEXT NOT NULL DEFAULT 'measure'"],
    // 3: the software each run found on its device (`software.rs`), each distinct package list
    // once, by its hash; `passed`: no scenario on the device failed, one passed at least.
    &[
        "CREATE TABLE package_lists (
        sha256 TEXT PRIMARY KEY,
        gz_base64 TEXT NOT NULL
    )",
        "CREATE TABLE run_software (
        run_id TEXT PRIMARY KEY REFERENCES runs(id),
        daemon TEXT,
        kernel TEXT,
        packages_sha256 TEXT REFERENCES package_lists(sha256),
        passed BIGINT NOT NULL
    )",
    ],
    // 4: every try's outcome (`run --repeat`, `--retries`; `history flaky`), its seed as text
    // (a u64); a run's runs row made for it when its device measured nothing.
    &[
        "CREATE TABLE outcomes (
        run_id TEXT NOT NULL REFERENCES runs(id),
        scenario TEXT NOT NULL,
        repetition BIGINT NOT NULL,
        try_no BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        seed TEXT,
        PRIMARY KEY (run_id, scenario, repetition, try_no)
    )",
        "CREATE INDEX outcomes_scenario ON outcomes (scenario)",
    ],
];

/// Which way a series gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// What a series' changes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It measures the code under test: a change for the worse is a regression.
    Measure,
    /// It measures the machine, not the code (a probe's idle windows, a bench of other tools'
    /// work): a canary, as MongoDB's performance CI keeps. Its changes say the host moved; they
    /// are shown and never gate.
    Control,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Measure => "measure",
            Role::Control => "control",
        }
    }
}

/// The value of one run that a series' trend follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// The weighted median of the run's samples (durations, throughputs).
    Median,
    /// The weighted 99th percentile (latencies).
    P99,
}

impl Stat {
    fn as_str(self) -> &'static str {
        match self {
            Stat::Median => "median",
            Stat::P99 => "p99",
        }
    }
}

/// A series: what it measures and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub stat: Stat,
    pub role: Role,
}

/// Where and what a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunKey {
    pub id: String,
    pub commit: String,
    pub branch: String,
    pub device: String,
    /// container, vm, stand-in or real.
    pub device_kind: String,
    pub device_model: Option<String>,
    pub software: Option<String>,
    pub host: String,
    /// Seconds since the epoch.
    pub started_at: i64,
    /// `run` or `bench`.
    pub source: String,
}

/// One series' samples in one run: (value, how many times it was seen).
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub series: Series,
    pub samples: Vec<(f64, u64)>,
}

/// A run's value of a series, for the trend.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub commit: String,
    pub device: String,
    pub started_at: i64,
    pub run_id: String,
    /// The samples, ascending, with weights.
    pub samples: Vec<(f64, u64)>,
}

/// An open history.
pub struct Store {
    pool: AnyPool,
}

/// The store a path or URL names: `postgres://...` and `sqlite://...` as given, anything else a
/// SQLite file (made when missing).
pub fn url_of(spec: &str) -> String {
    if spec.contains("://") {
        spec.to_string()
    } else {
        format!("sqlite://{}?mode=rwc", Path::new(spec).display())
    }
}

/// Inserts the run's row; `or_keep`: a row already there for this id is kept (no error).
async fn insert_run(tx: &mut sqlx::Transaction<'_, sqlx::Any>, run: &RunKey, or_keep: bool) -> Result<(), sqlx::Error> {
    let sql = if or_keep {
        "INSERT INTO runs (id, commit_id, branch, device, device_kind, device_model, software, host, started_at, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING"
    } else {
        "INSERT INTO runs (id, commit_id, branch, device, device_kind, device_model, software, host, started_at, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    };
    sqlx::query(sql)
        .bind(&run.id)
        .bind(&run.commit)
        .bind(&run.branch)
        .bind(&run.device)
        .bind(&run.device_kind)
        .bind(run.device_model.clone())
        .bind(run.software.clone())
        .bind(&run.host)
        .bind(run.started_at)
        .bind(&run.source)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A failed read of the store, its message as sqlx says it.
fn read(e: sqlx::Error) -> Error {
    Error::Read(e.to_string())
}

impl Store {
    /// Opens (and migrates) the store `spec` names.
    pub async fn open(spec: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        if !spec.contains("://") {
            if let Some(dir) = Path::new(spec).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::Open(format!("{}: {e}", dir.display())))?;
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url_of(spec))
            .await
            .map_err(|e| Error::Open(format!("cannot open the history {spec}: {e}")))?;
        let store = Store { pool };
        store
            .migrate()
            .await
            .map_err(|e| Error::Open(format!("the history {spec}: {e}")))?;
        Ok(store)
    }

    /// The schema's version in the store.
    pub async fn version(&self) -> Result<usize, Error> {
        let exists = sqlx::query("SELECT version FROM nh_schema")
            .fetch_optional(&self.pool)
            .await;
        match exists {
            Ok(Some(row)) => Ok(row.try_get::<i64, _>(0).map_err(|e| Error::Read(e.to_string()))? as usize),
            Ok(None) => Ok(0),
            // No table yet: a new store.
            Err(_) => Ok(0),
        }
    }

    async fn migrate(&self) -> Result<(), String> {
        let err = |e: sqlx::Error| e.to_string();
        let have = self.version().await.map_err(|e| e.to_string())?;
        if have > MIGRATIONS.len() {
            return Err(format!(
                "its schema is version {have}, newer than this nexus-hil knows ({}): update nexus-hil",
                MIGRATIONS.len()
            ));
        }
        if have == 0 {
            sqlx::query("CREATE TABLE IF NOT EXISTS nh_schema (version BIGINT NOT NULL)")
                .execute(&self.pool)
                .await
                .map_err(err)?;
        }
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(have) {
            let mut tx = self.pool.begin().await.map_err(err)?;
            for sql in *steps {
                sqlx::query(*sql).execute(&mut *tx).await.map_err(err)?;
            }
            sqlx::query("DELETE FROM nh_schema")
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            sqlx::query("INSERT INTO nh_schema (version) VALUES ($1)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
        }
        Ok(())
    }

    /// Appends one run's measurements, all or nothing.
    pub async fn append(&self, run: &RunKey, measurements: &[Measurement]) -> Result<(), Error> {
        let err = |e: sqlx::Error| Error::Write(format!("cannot append to the history: {e}"));
        let mut tx = self.pool.begin().await.map_err(err)?;
        insert_run(&mut tx, run, false).await.map_err(err)?;
        for m in measurements {
            let s = &m.series;
            // A new series as recorded; a known one keeps its unit and kind and takes the newest
            // recorder's word on its role (a series recorded before roles were).
            sqlx::query(
                "INSERT INTO series (name, unit, better, stat, role) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role",
            )
            .bind(&s.name)
            .bind(&s.unit)
            .bind(s.better.as_str())
            .bind(s.stat.as_str())
            .bind(s.role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            for (i, (value, weight)) in m.samples.iter().enumerate() {
                sqlx::query("INSERT INTO samples (run_id, series, idx, value, weight) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&run.id)
                    .bind(&s.name)
                    .bind(i as i64)
                    .bind(*value)
                    .bind(*weight as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)
    }

    /// Records the software a run (already appended) found on its device, its package list
    /// stored once by its hash.
    pub async fn record_software(&self, run_id: &str, found: &Found, passed: bool) -> Result<(), Error> {
        let err = |e: sqlx::Error| Error::Write(format!("cannot record the device's software in the history: {e}"));
        let mut tx = self.pool.begin().await.map_err(err)?;
        let sha = match &found.packages {
            Some(list) => {
                let sha = software::hash(list);
                sqlx::query(
                    "INSERT INTO package_lists (sha256, gz_base64) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&sha)
                .bind(software::pack(list)?)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                Some(sha)
            }
            None => None,
        };
        sqlx::query(
            "INSERT INTO run_software (run_id, daemon, kernel, packages_sha256, passed) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run_id)
        .bind(found.daemon.clone())
        .bind(found.kernel.clone())
        .bind(sha)
        .bind(i64::from(passed))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    #[cfg(test)]
    pub(crate) fn pool_for_tests(&self) -> AnyPool {
        self.pool.clone()
    }

    /// The last run on `device` that passed and recorded its software, with what it found.
    pub async fn last_passed(&self, device: &str) -> Result<Option<(PassedRun, Found)>, Error> {
        let err = |e: sqlx::Error| Error::Read(format!("cannot read the history's last passing run on {device}: {e}"));
        let row = sqlx::query(
            "SELECT r.id, r.commit_id, r.started_at, s.daemon, s.kernel, p.gz_base64
             FROM runs r JOIN run_software s ON s.run_id = r.id
             LEFT JOIN package_lists p ON p.sha256 = s.packages_sha256
             WHERE r.device = $1 AND s.passed = 1
             ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        let Some(r) = row else { return Ok(None) };
        let packed: Option<String> = r.try_get(5).map_err(err)?;
        let run = PassedRun {
            run_id: r.try_get(0).map_err(err)?,
            commit: r.try_get(1).map_err(err)?,
            started_at: r.try_get(2).map_err(err)?,
        };
        let found = Found {
            commit: run.commit.clone(),
            daemon: r.try_get(3).map_err(err)?,
            kernel: r.try_get(4).map_err(err)?,
            packages: packed.as_deref().map(software::unpack).transpose()?,
        };
        Ok(Some((run, found)))
    }

    /// Keeps every try's outcome of one run on one device (`outcomes::rows`), the run's own
    /// row made first when its device measured nothing; all or nothing.
    pub async fn append_outcomes(&self, run: &RunKey, rows: &[super::outcomes::Row]) -> Result<(), Error> {
        let err = |e: sqlx::Error| Error::Write(format!("cannot append the outcomes to the history: {e}"));
        let mut tx = self.pool.begin().await.map_err(err)?;
        insert_run(&mut tx, run, true).await.map_err(err)?;
        for r in rows {
            sqlx::query(
                "INSERT INTO outcomes (run_id, scenario, repetition, try_no, outcome, seed) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&run.id)
            .bind(&r.scenario)
            .bind(r.repetition as i64)
            .bind(r.try_no as i64)
            .bind(super::outcomes::word(r.outcome))
            .bind(r.seed.map(|n| n.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// Every kept outcome with its commit and device, oldest run first.
    pub async fn outcomes(&self) -> Result<Vec<super::outcomes::Seen>, Error> {
        let rows = sqlx::query(
            "SELECT r.commit_id, r.device, o.scenario, o.outcome
             FROM outcomes o JOIN runs r ON r.id = o.run_id
             ORDER BY r.started_at, r.id, o.scenario, o.repetition, o.try_no",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(read)?;
        rows.iter()
            .map(|r| {
                let get = |i: usize| r.try_get::<String, _>(i).map_err(read);
                Ok(super::outcomes::Seen {
                    commit: get(0)?,
                    device: get(1)?,
                    scenario: get(2)?,
                    outcome: get(3)?,
                })
            })
            .collect()
    }

    /// Every series the store knows.
    pub async fn series(&self) -> Result<Vec<Series>, Error> {
        let rows = sqlx::query("SELECT name, unit, better, stat, role FROM series ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(read)?;
        rows.iter()
            .map(|r| {
                let get = |i: usize| r.try_get::<String, _>(i).map_err(read);
                Ok(Series {
                    name: get(0)?,
                    unit: get(1)?,
                    better: if get(2)? == "higher" {
                        Better::Higher
                    } else {
                        Better::Lower
                    },
                    stat: if get(3)? == "p99" { Stat::P99 } else { Stat::Median },
                    role: if get(4)? == "control" {
                        Role::Control
                    } else {
                        Role::Measure
                    },
                })
            })
            .collect()
    }

    /// One series' runs, oldest first, each with its samples (ascending).
    pub async fn points(&self, series: &str) -> Result<Vec<Point>, Error> {
        let rows = sqlx::query(
            "SELECT r.id, r.commit_id, r.device, r.started_at, s.value, s.weight
             FROM samples s JOIN runs r ON r.id = s.run_id
             WHERE s.series = $1
             ORDER BY r.started_at, r.id, s.value",
        )
        .bind(series)
        .fetch_all(&self.pool)
        .await
        .map_err(read)?;
        let mut points: Vec<Point> = Vec::new();
        for r in rows {
            let id: String = r.try_get(0).map_err(read)?;
            let value: f64 = r.try_get(4).map_err(read)?;
            let weight: i64 = r.try_get(5).map_err(read)?;
            match points.last_mut() {
                Some(p) if p.run_id == id => p.samples.push((value, weight as u64)),
                _ => points.push(Point {
                    commit: r.try_get(1).map_err(read)?,
                    device: r.try_get(2).map_err(read)?,
                    started_at: r.try_get(3).map_err(read)?,
                    run_id: id,
                    samples: vec![(value, weight as u64)],
                }),
            }
        }
        Ok(points)
    }
}

/// The weighted quantile `q` (0..1) of ascending samples.
pub fn quantile(samples: &[(f64, u64)], q: f64) -> f64 {
    let total: u64 = samples.iter().map(|s| s.1).sum();
    if total == 0 {
        return f64::NAN;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (v, w) in samples {
        seen += w;
        if seen >= want {
            return *v;
        }
    }
    samples.last().map_or(f64::NAN, |s| s.0)
}

impl Point {
    /// The value the trend follows for this run.
    pub fn value(&self, stat: Stat) -> f64 {
        quantile(
            &self.samples,
            match stat {
                Stat::Median => 0.5,
                Stat::P99 => 0.99,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_quantiles_count_each_sample_its_weight() {
        let s = [(1.0, 98), (5.0, 1), (100.0, 1)];
        assert_eq!(quantile(&s, 0.5), 1.0);
        assert_eq!(quantile(&s, 0.99), 5.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn paths_are_sqlite_files_and_urls_are_kept() {
        assert_eq!(url_of("target/h.sqlite"), "sqlite://target/h.sqlite?mode=rwc");
        assert_eq!(url_of("postgres://u@127.0.0.1:5/h"), "postgres://u@127.0.0.1:5/h");
    }
}
