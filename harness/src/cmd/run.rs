//! `nexus-hil run`: load scenarios, bring up a device for each (a fresh emulator, or the real
//! devices named by `--target ssh://...` or `--targets`), run them with a progress display, and
//! write the reports. Exit status: 0 all passed, 1 a scenario failed, 2 bad scenario files or
//! arguments, 3 infrastructure error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::args::TargetArgs;
use super::say;
use crate::device::Target;
use crate::error::InfraError;
use crate::exit::Exit;
use crate::report::{slug, RunReport};
use crate::runner::hold::HoldOptions;
use crate::runner::schedule;
use crate::runner::slots::{self, SlotOptions, Slots};
use crate::runner::tries::Plan;
use crate::scenario::{self, Scenario};

/// Arguments of `nexus-hil run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders of them.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only scenarios with this tag.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Folder for this run's work files and reports (default: target/nexus-hil/run-<time>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// The nexus-backupd binary for the emulator's image (default: next to nexus-hil; for
    /// `--target standin`, the arm64 cross build in target/aarch64-unknown-linux-gnu/release/).
    #[arg(long)]
    pub backupd: Option<PathBuf>,
    /// Home-automation content on the SD card of the emulator or stand-in: 32MiB, 256MiB, 1GiB or
    /// bytes. Default: 32 MiB on the emulator and the stand-in (the functional suites). A
    /// scenario's `card_content` asks for more (the perf suite: 256MiB): the run's card is the
    /// largest asked for, and it says which.
    #[arg(long, value_name = "SIZE", alias = "content-bytes", value_parser = crate::scenario::parse_size)]
    pub card_content: Option<u64>,
    /// Run only part K of N of the (filtered) scenarios, e.g. 2/3: CI jobs that share a suite
    /// each take one part; the split is deterministic (round robin in file order).
    #[arg(long, value_name = "K/N", value_parser = schedule::parse_partition)]
    pub partition: Option<(usize, usize)>,
    /// With --partition: split by the scenarios' durations recorded in the history (the median
    /// of their last 5 passed runs; unknown ones count as the median) instead of round robin,
    /// so the jobs take about as long. Every job must read the same history (cache it).
    #[arg(long, requires = "partition")]
    pub balance: bool,
    /// Print the scenarios that would run (after --filter and --partition) and start nothing.
    #[arg(long)]
    pub list: bool,
    /// An inventory of real devices (targets.toml: name, host, ssh_port, admin, key, https_port,
    /// ca_sha256 per [[device]]); the scenarios are shared out among them, one combined report.
    #[arg(long, conflicts_with = "target")]
    pub targets: Option<PathBuf>,
    /// Fail the run (exit 1) when any scenario is skipped, not only those that say `must_run`
    /// (CI's fault and power suites: a fault that could not be injected proves nothing).
    #[arg(long)]
    pub require_all: bool,
    /// Fail the run (exit 1) when a latency verdict is missed; without it a missed verdict is
    /// reported (terminal, JUnit, HTML) but does not fail anything, as timings are not pass/fail.
    #[arg(long)]
    pub fail_on_verdict: bool,
    /// The seed of the run's random draws (e.g. `at_percent_between`); default: from the clock.
    /// The report names it; the same seed repeats the same draws.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long to wait for a real device that another run holds (its lock lives on the
    /// device, so runs from other machines count too), e.g. 90s, 10m.
    #[arg(long, default_value = "10m", value_parser = crate::scenario::parse_duration)]
    pub lock_wait: Duration,
    /// Fail at once (exit 3, naming the holder) when a real device is held by another run.
    #[arg(long)]
    pub no_wait: bool,
    /// Skip the health check of each real device before the run (reachable, clock, free space,
    /// btrfs and kernel I/O errors, the daemon: `nexus-hil health`). A failing check otherwise
    /// stops the run before its first scenario (exit 3), naming it.
    #[arg(long)]
    pub no_health: bool,
    /// How long a real device's lease lives unless this run refreshes it (every quarter of
    /// it). A run killed or cut off holds the device that long; one that cannot refresh for
    /// that long has lost it and stops at its next step, undoing nothing.
    #[arg(long, default_value = "2m", value_parser = crate::scenario::parse_duration)]
    pub lock_ttl: Duration,
    /// The results history each run appends its measurements to (durations, throughput,
    /// latency histograms; keyed by commit, branch, device, host): a SQLite file, or a
    /// `postgres://` URL for a team's shared store. Default: $NEXUS_HIL_HISTORY, else
    /// history.sqlite beside the report folder (target/nexus-hil/history.sqlite for the default
    /// and ci/suite's report folders).
    #[arg(long, value_name = "FILE|URL")]
    pub history: Option<String>,
    /// Append nothing to the history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// Run each selected scenario N times (flaky or real?): a fresh emulator or stand-in each
    /// time, or on a real device after the undo of the last. The reports give each scenario's
    /// passes of N and its failure ratio with a 95 % interval; the history keeps every outcome
    /// (`nexus-hil history flaky`). Each run has its own seed (`${seed}`), derived from --seed.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,
    /// Run a scenario that failed again, on a fresh target, up to N times. One that then
    /// passes is FLAKY: named in the summary, a pass with a `flakyFailure` per failed try in
    /// JUnit, each try's transcript and work folder kept. Only failures are retried: a skip, an
    /// infrastructure error or an undo that failed is never retried into a pass.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// A scenario that passed only on a retry fails the run (exit 1), and JUnit gives it a
    /// `failure` besides its `flakyFailure`s.
    #[arg(long)]
    pub flaky_fails: bool,
    /// How many scenarios run at once: emulators side by side (default 1; each scenario still
    /// gets its own fresh container), or devices of --targets (default: all of them). Side by
    /// side the longest expected start first (their recorded durations in the history; never
    /// recorded: those that declare a timeout, the longer first); the reports keep the files'
    /// order.
    #[arg(long, short = 'j', overrides_with = "jobs")]
    pub jobs: Option<usize>,
    /// At a scenario's first failed step, keep its device as it is (no clean-up, no undo yet;
    /// a real device's lease kept) for up to DURATION (e.g. 10m) and print how to get in: the
    /// ssh command with the harness's key, the container's shell or the console, the browser's
    /// page, the scenario's variables (secrets masked). Enter ends it sooner; without a
    /// terminal (CI) only DURATION does. Then the clean-up runs as always. One scenario holds
    /// at a time: with -j another failure waits its turn.
    #[arg(long, value_name = "DURATION", value_parser = crate::scenario::parse_duration)]
    pub hold_on_failure: Option<Duration>,
}

/// Runs `nexus-hil run`.
pub async fn run(args: RunArgs) -> Result<ExitCode, InfraError> {
    let started = Instant::now();
    let run_started = crate::history::record::now();
    let target = match &args.targets {
        Some(path) => Target::fleet(path),
        None => Target::parse(&args.target.target),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            say(&e.to_string());
            return Ok(ExitCode::from(e.exit()));
        }
    };
    // --balance splits by the scenarios' recorded durations, and cannot without them.
    let durations = if args.balance {
        match recorded_durations(&args).await {
            Ok(d) => Some(d),
            Err(e) => {
                say(&format!("--balance: {e}"));
                return Ok(ExitCode::from(Exit::Usage));
            }
        }
    } else {
        None
    };
    let scenarios = match load(&args, durations.as_ref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if args.list {
        for s in &scenarios {
            println!("{}\t{}\t[{}]", s.file.display(), s.name, s.tags.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let card = match card(&args, &target, &scenarios) {
        Ok(c) => c,
        Err(e) => {
            say(&e);
            return Ok(ExitCode::from(Exit::Usage));
        }
    };
    let report_dir = report_dir(&args)?;
    let seed = args.seed.unwrap_or_else(super::clock_seed);
    let mut report = RunReport {
        target: target_name(&args, &target),
        duration_s: 0.0,
        scenarios: Vec::new(),
        infra_error: None,
        seed: Some(seed),
        partition: args.partition,
        health: Default::default(),
        changes: Vec::new(),
    };
    let slots = match slots::prepare(&target, slot_options(&args, card, &report_dir), &say).await {
        Ok(s) => Some(s),
        Err(e) => {
            report.infra_error = Some(e.to_string());
            None
        }
    };
    // One run per real device at a time: each is held (its lease, an earlier run's leftovers
    // undone, its health read) before anything runs; a device that cannot be stops the run.
    let mut held = crate::runner::hold::Held::default();
    if let Some(Slots::Devices(members)) = &slots {
        let opts = HoldOptions {
            owner: format!("nexus-hil run ({})", report_dir.display()),
            wait: (!args.no_wait).then_some(args.lock_wait),
            ttl: args.lock_ttl,
            health: !args.no_health,
        };
        match crate::runner::hold::hold(members, &opts, &mut report.health, &say).await {
            Ok(h) => held = h,
            Err(stop) => {
                say(&stop.to_string());
                report.infra_error = Some(stop.to_string());
                report.duration_s = started.elapsed().as_secs_f64();
                write_reports(&args, &report, &report_dir)?;
                append_history(&args, &report, &report_dir, run_started).await;
                return Ok(ExitCode::from(stop.exit()));
            }
        }
    }
    // Ctrl-C: remove this run's containers, undo what its scenarios changed on the devices it
    // holds and give them back, then stop.
    crate::runner::interrupt::guard("removing this run's emulator, undoing its changes on its devices, releasing them");
    // A card read after a power cut (`inspect`) is checked as crash-states checks a state.
    crate::steps::card_read::provide(Box::new(crate::crash_states::card::OnCard::new()));
    let bar = ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    if let Some(d) = args.hold_on_failure {
        crate::runner::inspect::enable(d, bar.clone());
    }
    if let Some(slots) = &slots {
        let plan = Plan {
            repeat: args.repeat as usize,
            retries: args.retries as usize,
        };
        // Side by side the longest start first, by their recorded durations where known (an
        // unreadable history is no reason to stop: their timeouts rank them instead); one at a
        // time they run in the files' order.
        let order = if slots.width() > 1 && scenarios.len() > 1 {
            let recorded = match durations {
                Some(d) => d,
                None => recorded_durations(&args).await.unwrap_or_default(),
            };
            schedule::start_order(&scenarios, &recorded)
        } else {
            (0..scenarios.len()).collect()
        };
        report.scenarios = schedule::run_all(&scenarios, &order, slots, &report_dir, seed, plan, &bar).await;
    }
    bar.finish_and_clear();
    held.release(&say).await;
    report.duration_s = started.elapsed().as_secs_f64();
    report.changes = what_changed(&args, &report, &report_dir).await;
    crate::history::software::keep_one_list_per_device(&mut report);
    write_reports(&args, &report, &report_dir)?;
    append_history(&args, &report, &report_dir, run_started).await;
    Ok(exit_code(&args, &report))
}

/// The scenarios' recorded durations in the run's history (by slug), or why not.
async fn recorded_durations(args: &RunArgs) -> Result<std::collections::HashMap<String, f64>, String> {
    let spec = crate::history::store_spec(args.history.as_deref(), &default_report_parent(args));
    match tokio::time::timeout(Duration::from_secs(10), crate::history::recorded_durations(&spec)).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err("the history did not answer in 10 s".into()),
    }
}

/// What changed on each device since its last passing run in the history (none with
/// --no-history; a history that cannot be read is said, not fatal).
async fn what_changed(args: &RunArgs, report: &RunReport, report_dir: &Path) -> Vec<crate::report::WhatChanged> {
    if args.no_history {
        return Vec::new();
    }
    let spec = crate::history::store_spec(args.history.as_deref(), report_dir);
    crate::history::what_changed(&spec, report).await.unwrap_or_else(|e| {
        say(&format!("what changed since the last passing run: {e}"));
        Vec::new()
    })
}

/// Appends the run to the results history (its scenarios' measurements, its devices' health).
async fn append_history(args: &RunArgs, report: &RunReport, report_dir: &Path, run_started: i64) {
    if args.no_history || (report.scenarios.is_empty() && report.health.is_empty()) {
        return;
    }
    let spec = crate::history::store_spec(args.history.as_deref(), report_dir);
    match crate::history::append_run(&spec, report, run_started, "run").await {
        Ok(n) => println!("history: {n} series appended to {spec}"),
        // The reports are written: a history that cannot take the run is said, not fatal.
        Err(e) => say(&format!(
            "{e} (the run's reports are written; --no-history skips the history)"
        )),
    }
}

/// 3 for an infrastructure error; 1 for a failure, a required scenario skipped, nothing run at
/// all, or (with --fail-on-verdict) a missed verdict; else 0. Each reason but the first is said.
fn exit_code(args: &RunArgs, report: &RunReport) -> ExitCode {
    let t = report.totals();
    if t.errors > 0 {
        return ExitCode::from(Exit::Infra);
    }
    let mut fail = !report.all_passed();
    if t.passed == 0 && t.failed == 0 {
        println!("nothing ran: every scenario was skipped, so the run proves nothing");
    }
    let skips = report.required_skips(args.require_all);
    if !skips.is_empty() {
        let names: Vec<&str> = skips.iter().map(|s| s.name.as_str()).collect();
        println!(
            "{} scenario(s) had to run but were skipped ({}): {}",
            skips.len(),
            if args.require_all { "--require-all" } else { "must_run" },
            names.join("; ")
        );
        fail = true;
    }
    if args.flaky_fails && !report.flaky().is_empty() {
        println!("--flaky-fails: a scenario passed only on a retry");
        fail = true;
    }
    if args.fail_on_verdict && !report.missed_verdicts().is_empty() {
        println!("--fail-on-verdict: a latency verdict was missed");
        fail = true;
    }
    if fail {
        ExitCode::from(Exit::Failed)
    } else {
        ExitCode::SUCCESS
    }
}

/// The scenarios to run: found, loaded (every mistake printed), filtered and partitioned.
fn load(args: &RunArgs, durations: Option<&std::collections::HashMap<String, f64>>) -> Result<Vec<Scenario>, ExitCode> {
    let files = match scenario::discover(&args.paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            say(&format!("no scenario files (*.yaml) in {:?}", args.paths));
            return Err(ExitCode::from(Exit::Usage));
        }
        Err(e) => {
            say(&e);
            return Err(ExitCode::from(Exit::Usage));
        }
    };
    let mut scenarios = Vec::new();
    let mut bad = 0;
    for f in &files {
        match Scenario::load(f) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                say(&e.to_string());
                bad += 1;
            }
        }
    }
    if bad > 0 {
        say(&format!("{bad} scenario file(s) have mistakes; nothing was run"));
        return Err(ExitCode::from(Exit::Usage));
    }
    if let Some(tag) = &args.filter {
        scenarios.retain(|s| s.has_tag(tag));
    }
    if let Some(part) = args.partition {
        let all = scenarios.len();
        scenarios = match durations {
            Some(d) => {
                let known = scenarios.iter().filter(|s| d.contains_key(&slug(&s.name))).count();
                say(&format!("--balance: recorded durations for {known} of {all} scenarios"));
                schedule::partition_balanced(scenarios, part, |s| d.get(&slug(&s.name)).copied())
            }
            None => schedule::partition(scenarios, part),
        };
        say(&format!(
            "partition {}/{}: {} of {all} scenarios",
            part.0,
            part.1,
            scenarios.len()
        ));
    }
    Ok(scenarios)
}

/// The report folder a run would use, not made (where the default history is found).
fn default_report_parent(args: &RunArgs) -> PathBuf {
    args.report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/nexus-hil/run"))
}

/// The run's report folder, made and made absolute.
fn report_dir(args: &RunArgs) -> Result<PathBuf, InfraError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/nexus-hil/run-{stamp}")));
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    dir.canonicalize().map_err(|e| InfraError::io(dir.display(), e))
}

/// How the report names the target.
fn target_name(args: &RunArgs, target: &Target) -> String {
    match target {
        Target::Fresh(kind) => kind.label().to_string(),
        Target::Remote { user, host, port } => format!("ssh://{user}@{host}:{port}"),
        Target::Fleet(devices) => {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            format!(
                "{} ({})",
                args.targets.as_deref().unwrap_or(Path::new("")).display(),
                names.join(", ")
            )
        }
    }
}

/// The content of the run's SD cards, for the targets whose card the harness makes (the kinds
/// it starts): the largest asked for (`sdcard::content_for`), said on the terminal. A size that
/// cannot be made is a mistake in the arguments or a file.
fn card(args: &RunArgs, target: &Target, scenarios: &[Scenario]) -> Result<u64, String> {
    let default = match target {
        Target::Fresh(kind) => kind.run_content(),
        Target::Remote { .. } | Target::Fleet(_) => {
            if args.card_content.is_some() {
                say("--card-content is for the emulator and the stand-in: a real device has its own card");
            }
            return Ok(0);
        }
    };
    let (bytes, why) = crate::image::sdcard::content_for(args.card_content, default, scenarios)?;
    say(&why);
    Ok(bytes)
}

/// What making the run's slots takes from its arguments.
fn slot_options<'a>(args: &'a RunArgs, card: u64, report_dir: &'a Path) -> SlotOptions<'a> {
    let t = &args.target;
    SlotOptions {
        target: &t.target,
        key: t.key.clone(),
        https_port: t.https_port,
        pins: t.pins.as_deref(),
        backupd: args.backupd.clone(),
        card,
        jobs: args.jobs,
        report_dir,
    }
}

/// JSON (in the report folder and at --json), JUnit, HTML; the summary on the terminal.
fn write_reports(args: &RunArgs, report: &RunReport, report_dir: &Path) -> Result<(), InfraError> {
    let json_path = args.json.clone().unwrap_or_else(|| report_dir.join("report.json"));
    write(&json_path, &report.to_json())?;
    write(&report_dir.join("report.json"), &report.to_json())?;
    if let Some(j) = &args.junit {
        let flaky = if args.flaky_fails {
            crate::report::junit::Flaky::Fails
        } else {
            crate::report::junit::Flaky::Passes
        };
        write(j, &report.to_junit_with(flaky))?;
    }
    write(&report_dir.join("report.html"), &crate::report::html::render(report))?;
    print!("{}", report.summary());
    let ready: Vec<f64> = report.scenarios.iter().filter_map(|s| s.ready_s).collect();
    if !ready.is_empty() {
        println!(
            "emulator start-to-ready: {:.2} s on average, {:.2} s at most",
            ready.iter().sum::<f64>() / ready.len() as f64,
            ready.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!("reports: {}", report_dir.display());
    if let Some(j) = &args.junit {
        println!("junit: {}", j.display());
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), InfraError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| InfraError::io(d.display(), e))?;
    }
    std::fs::write(path, text).map_err(|e| InfraError::io(path.display(), e))
}
