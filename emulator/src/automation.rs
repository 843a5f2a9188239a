//! The simulated home-automation workload and its latency probe (`nexus-automation`).
//!
//! A periodic loop, as a persistence service runs it: every tick it reads the sensor files,
//! computes, and appends a state record, with `fdatasync` every `sync_every` ticks. Ticks are
//! scheduled on absolute deadlines (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`, as
//! cyclictest does): a tick that wakes late is measured against its own deadline, and the ticks
//! missed meanwhile run at once and are measured against theirs, so a stall is counted as every
//! tick it delayed (no coordinated omission). Lateness and each tick's I/O time go into HDR
//! histograms (microseconds, 3 significant digits).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

// The probe's report is part of the contract: the harness reads it back.
pub use nexus_contract::probe::{Percentiles, ProbeResult};

/// What the loop does each tick.
#[derive(Debug, Clone)]
pub struct Workload {
    pub period: Duration,
    /// Sensor files read and the state file written live here (on the device: `/broot/data`).
    pub dir: PathBuf,
    /// Read sensors and append state each tick (`false`: the timer alone).
    pub io: bool,
    /// `fdatasync` the state file every this many ticks.
    pub sync_every: u32,
    pub sensors: usize,
}

impl Workload {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            period: Duration::from_millis(10),
            dir: dir.into(),
            io: true,
            sync_every: 10,
            sensors: 8,
        }
    }
}

/// The error of a workload that cannot run (its folder, its files).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct WorkloadError {
    what: String,
    source: std::io::Error,
}

fn ctx(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkloadError {
    let what = what.into();
    move |source| WorkloadError { what, source }
}

/// The open files of a running workload.
struct Files {
    sensors: Vec<File>,
    state: File,
    written: u64,
}

/// The state file is kept under this size (it starts over, as a ring would).
const STATE_LIMIT: u64 = 4 << 20;

impl Files {
    fn open(w: &Workload) -> Result<Self, WorkloadError> {
        std::fs::create_dir_all(&w.dir).map_err(ctx(format!("cannot create {}", w.dir.display())))?;
        let mut sensors = Vec::new();
        for i in 0..w.sensors {
            let p = w.dir.join(format!("sensor{i}"));
            if !p.exists() {
                std::fs::write(&p, format!("{}.{}\n", 18 + i, i * 7 % 10))
                    .map_err(ctx(format!("cannot write {}", p.display())))?;
            }
            sensors.push(File::open(&p).map_err(ctx(format!("cannot open {}", p.display())))?);
        }
        let p = w.dir.join("state.log");
        let state = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(ctx(format!("cannot open {}", p.display())))?;
        let written = state.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            sensors,
            state,
            written,
        })
    }

    /// One tick's work: read every sensor, compute, append a record; sync every so often.
    fn tick(&mut self, n: u64, sync_every: u32) -> std::io::Result<()> {
        let mut buf = [0u8; 64];
        let mut sum = 0.0f64;
        for f in &self.sensors {
            let len = f.read_at(&mut buf, 0)?;
            let v: f64 = std::str::from_utf8(&buf[..len])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0.0);
            sum += v;
        }
        let avg = sum / self.sensors.len().max(1) as f64;
        // A little control work: a PI step towards 21 °C.
        let out = (21.0 - avg) * 0.8 + (n % 100) as f64 * 0.001;
        let record = format!("{n} {avg:.3} {out:.4}\n");
        if self.written + record.len() as u64 > STATE_LIMIT {
            self.state.set_len(0)?;
            self.state.seek(SeekFrom::Start(0))?;
            self.written = 0;
        }
        self.state.write_all(record.as_bytes())?;
        self.written += record.len() as u64;
        if sync_every > 0 && n.is_multiple_of(u64::from(sync_every)) {
            self.state.sync_data()?;
        }
        Ok(())
    }
}

fn now() -> libc::timespec {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

fn ns(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn add(ts: &libc::timespec, d: Duration) -> libc::timespec {
    let total = ns(ts) + d.as_nanos() as i128;
    libc::timespec {
        tv_sec: (total / 1_000_000_000) as libc::time_t,
        tv_nsec: (total % 1_000_000_000) as libc::c_long,
    }
}

/// Sleeps until the absolute monotonic time `at`.
fn sleep_until(at: &libc::timespec) {
    loop {
        // SAFETY: valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, at, std::ptr::null_mut()) };
        if r != libc::EINTR {
            return;
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// (highest equivalent value, count) of every bucket that holds a value, ascending.
fn counts(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

/// The loop, one tick at a time: for benchmarks that measure single ticks, and for [`probe`].
pub struct Ticker {
    files: Option<Files>,
    period: Duration,
    sync_every: u32,
    deadline: libc::timespec,
    n: u64,
}

/// One tick: how late it woke against its deadline, and how long its I/O took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub lateness: Duration,
    pub io: Duration,
}

impl Ticker {
    /// Opens the workload's files; the first deadline is one period from now.
    pub fn new(w: &Workload) -> Result<Self, WorkloadError> {
        Ok(Self {
            files: if w.io { Some(Files::open(w)?) } else { None },
            period: w.period,
            sync_every: w.sync_every,
            deadline: add(&now(), w.period),
            n: 0,
        })
    }

    /// The next deadline, in monotonic nanoseconds.
    fn deadline_ns(&self) -> i128 {
        ns(&self.deadline)
    }

    /// Sleeps until the next deadline, does the tick's work, and schedules the one after.
    pub fn tick(&mut self) -> Result<Tick, WorkloadError> {
        sleep_until(&self.deadline);
        let woke = now();
        let lateness = (ns(&woke) - ns(&self.deadline)).max(0);
        self.n += 1;
        let mut io = 0;
        if let Some(f) = self.files.as_mut() {
            f.tick(self.n, self.sync_every).map_err(ctx("the tick's I/O failed"))?;
            io = (ns(&now()) - ns(&woke)).max(0);
        }
        self.deadline = add(&self.deadline, self.period);
        Ok(Tick {
            lateness: Duration::from_nanos(lateness as u64),
            io: Duration::from_nanos(io as u64),
        })
    }
}

/// Runs the loop for `duration` (or until `stop` says so) and returns what it measured.
pub fn probe(w: &Workload, duration: Option<Duration>, stop: &dyn Fn() -> bool) -> Result<ProbeResult, WorkloadError> {
    let mut ticker = Ticker::new(w)?;
    let mut late = histogram();
    let mut io = histogram();
    let mut missed = 0u64;
    let end = duration.map(|d| ticker.deadline_ns() - w.period.as_nanos() as i128 + d.as_nanos() as i128);
    loop {
        if end.is_some_and(|e| ticker.deadline_ns() > e) || stop() {
            break;
        }
        let t = ticker.tick()?;
        if t.lateness >= w.period {
            missed += 1;
        }
        late.saturating_record((t.lateness.as_micros() as u64).max(1));
        if w.io {
            io.saturating_record((t.io.as_micros() as u64).max(1));
        }
    }
    let mut buckets = Vec::new();
    if !late.is_empty() {
        for v in late.iter_log(1, 2.0) {
            buckets.push((v.value_iterated_to(), v.count_since_last_iteration()));
        }
        // Trailing empty buckets say nothing.
        while buckets.last().is_some_and(|b| b.1 == 0) {
            buckets.pop();
        }
    }
    Ok(ProbeResult {
        period_us: w.period.as_micros() as u64,
        io: w.io,
        samples: late.len(),
        missed,
        lateness_us: percentiles(&late),
        io_us: w.io.then(|| percentiles(&io)),
        lateness_buckets: buckets,
        lateness_counts: counts(&late),
        io_counts: counts(&io),
    })
}

/// Reads a whole small file (used by tests to look at the state the loop wrote).
pub fn read_state(dir: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    File::open(dir.join("state.log"))?.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_counts_every_tick_and_writes_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Workload::new(dir.path());
        w.period = Duration::from_millis(5);
        let r = probe(&w, Some(Duration::from_millis(500)), &|| false).unwrap();
        // 500 ms of 5 ms ticks: 100 deadlines, each measured once.
        assert_eq!(r.samples, 100, "{r:?}");
        assert!(r.lateness_us.p50 <= r.lateness_us.p99 && r.lateness_us.p99 <= r.lateness_us.max);
        assert_eq!(r.lateness_buckets.iter().map(|b| b.1).sum::<u64>(), r.samples);
        let state = read_state(dir.path()).unwrap();
        assert_eq!(state.lines().count(), 100);
        assert!(state.lines().last().unwrap().starts_with("100 "), "{state}");
        assert!(r.io_us.is_some());
        assert_eq!(r.lateness_counts.iter().map(|b| b.1).sum::<u64>(), r.samples);
        assert_eq!(r.io_counts.iter().map(|b| b.1).sum::<u64>(), r.samples);
        assert!(r.lateness_counts.windows(2).all(|w| w[0].0 < w[1].0), "{r:?}");
        // The counts hold the percentiles: the p99 is the value where 99 % of the ticks are reached.
        let mut seen = 0;
        let p99 = r.lateness_counts.iter().find(|b| {
            seen += b.1;
            seen >= 99
        });
        assert_eq!(p99.map(|b| b.0), Some(r.lateness_us.p99), "{r:?}");
    }

    #[test]
    fn a_stall_counts_as_every_tick_it_delayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Workload::new(dir.path());
        w.period = Duration::from_millis(2);
        w.io = false;
        // The first check of `stop` stalls the loop for 50 ms: the 25 ticks due meanwhile are
        // all measured late, not skipped.
        let first = std::cell::Cell::new(true);
        let r = probe(&w, Some(Duration::from_millis(200)), &|| {
            if first.replace(false) {
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
        .unwrap();
        assert_eq!(r.samples, 100, "{r:?}");
        assert!(r.missed >= 20, "{r:?}");
        assert!(r.lateness_us.max >= 40_000, "{r:?}");
        assert!(r.io_us.is_none());
    }

    #[test]
    fn an_unusable_folder_is_named() {
        let e = probe(
            &Workload::new("/proc/no-such/dir"),
            Some(Duration::from_millis(10)),
            &|| false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/proc/no-such/dir"), "{e}");
    }
}
