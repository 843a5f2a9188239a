//! `nexus-automation`: the simulated home-automation loop of the NEXUS, and its latency probe.
//!
//! `run` is the workload (the emulator runs it as `nexus-automation.service`); `probe` runs the
//! same loop for a while and prints what it measured as JSON, for `probe.latency` steps.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use nexus_emulator::automation::{probe, Workload};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The simulated home-automation loop of the NEXUS and its latency probe"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Loop {
    /// Tick period, e.g. 10ms.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    period: Duration,
    /// Folder of the sensor files and the state file (on the SD card, as the real persistence).
    #[arg(long, default_value = "/broot/data/automation")]
    dir: PathBuf,
    /// fdatasync the state file every N ticks.
    #[arg(long, default_value_t = 10)]
    sync_every: u32,
    /// The timer alone: no sensor reads, no state writes.
    #[arg(long)]
    no_io: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the loop until stopped (SIGTERM/SIGINT), printing a summary each minute.
    Run(Loop),
    /// Run the loop for a while and print sample count, percentiles of lateness and of the
    /// tick's I/O, missed periods and a histogram as JSON.
    Probe {
        #[command(flatten)]
        l: Loop,
        /// How long to measure, e.g. 10s.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: write e.g. 10ms, 30s, 2m"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: write e.g. 10ms, 30s, 2m")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn workload(l: &Loop) -> Workload {
    let mut w = Workload::new(&l.dir);
    w.period = l.period;
    w.io = !l.no_io;
    w.sync_every = l.sync_every;
    w
}

fn main() -> ExitCode {
    let args = Args::parse();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let stop = || STOP.load(Ordering::Relaxed);
    match args.command {
        Command::Probe { l, duration } => match probe(&workload(&l), Some(duration), &stop) {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r).expect("plain data serializes"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nexus-automation: {e}");
                ExitCode::from(1)
            }
        },
        Command::Run(l) => {
            let w = workload(&l);
            while !stop() {
                match probe(&w, Some(Duration::from_secs(60)), &stop) {
                    Ok(r) => eprintln!(
                        "{} ticks of {:?}: lateness p50 {} us, p99 {} us, max {} us; {} missed",
                        r.samples, w.period, r.lateness_us.p50, r.lateness_us.p99, r.lateness_us.max, r.missed
                    ),
                    Err(e) => {
                        eprintln!("nexus-automation: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}
