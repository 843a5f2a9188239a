//! `nexus-hil crash-states`: every flush point of an operation checked. The operation runs once
//! on a device whose SD card's writes are logged: the arm64 stand-in (a guest with its own
//! kernel, its card attached through QEMU's `blklogwrites`), or a container emulator whose card
//! the host's kernel mounts through the same driver (`crash::card`); then the card is rebuilt as it was at each
//! flush point of the operation's span of the log, at seeded in-order prefixes between two,
//! and as a card without power-loss protection may have kept a flush epoch (some of its writes
//! dropped, one torn at a sector) (`pick`), and each state is checked on this machine (`check`): the file system, the
//! daemon's recovery on it, and what the daemon then lists. [`ops`] holds the operations;
//! [`broken`] the daemons broken on purpose that show each check catching its failure; [`card`]
//! the same checks on a real card read after a real power cut (`fault.power_cut` `inspect`).
//! [`Error`]: why an operation was not recorded or its states not checked.

pub(crate) mod broken;
pub(crate) mod card;
pub(crate) mod check;
pub(crate) mod ops;
pub(crate) mod pick;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::crash::card::LoggedCard;
use crate::crash::log::{sparse_copy, Replayer, WriteLog};
use crate::device::container::{device as emulator_device, prepare as prepare_emulator};
use crate::device::container::{Emulator, EmulatorSpec};
use crate::device::standin::{self, prepare as prepare_standin, Standin, StandinParts, StandinSpec};
use crate::device::FaultError;
use crate::error::InfraError;
use crate::report::crash::{BrokenDaemonReport, CrashReport, OperationReport, Violation};
use crate::session::SeededRandom;
use ops::Recorder;
use pick::{Beyond, Kind, State};

pub use broken::BrokenDaemon;
pub use ops::Op;

/// Why an operation could not be recorded, or its states not checked (a state that breaks a
/// check is a violation in the report, not this). The report shows the message as the
/// operation's NOT CHECKED reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the daemon failed, or its reply is not what the contract says.
    #[error("{0}")]
    Daemon(String),
    /// A command on the device, or reaching it, failed.
    #[error("{0}")]
    Device(String),
    /// This machine's side failed: the write log, a card image, a mount, a container.
    #[error("{0}")]
    Machine(String),
    /// The write log does not cover the operation as recorded.
    #[error("{0}")]
    Span(String),
    /// Some states could not be checked (the machine's trouble, not the states').
    #[error("{0}")]
    Unchecked(String),
}

impl Error {
    /// The same kind of failure with more said (the daemon's journal, a context).
    fn and(self, more: impl FnOnce(String) -> String) -> Self {
        match self {
            Self::Daemon(m) => Self::Daemon(more(m)),
            Self::Device(m) => Self::Device(more(m)),
            Self::Machine(m) => Self::Machine(more(m)),
            Self::Span(m) => Self::Span(more(m)),
            Self::Unchecked(m) => Self::Unchecked(more(m)),
        }
    }
}

impl From<crate::transport::Error> for Error {
    fn from(e: crate::transport::Error) -> Self {
        Self::Device(e.to_string())
    }
}

/// A failure of this machine's side, its message as it is.
fn machine(e: impl std::fmt::Display) -> Error {
    Error::Machine(e.to_string())
}

/// Where operations are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordOn {
    /// A container emulator; the host's kernel writes its card, served through blklogwrites.
    Emulator,
    /// The arm64 stand-in: a guest with its own kernel, its card attached through blklogwrites.
    Standin,
}

/// What a `crash-states` run does.
pub struct Options {
    pub on: RecordOn,
    /// The arm64 daemon for the stand-in's image (default: the cross build).
    pub standin_backupd: Option<PathBuf>,
    pub ops: Vec<Op>,
    /// States per operation (0: every distinct flush point).
    pub max_states: usize,
    /// Seeded in-order prefixes between two flush points, per operation.
    pub prefixes: usize,
    /// Reordered states: subsets of up to this many writes of a flush epoch dropped (0: none);
    /// up to `max_states` of them per operation.
    pub reorder: usize,
    /// Torn states: one write of a flush epoch cut at a 512-byte sector; up to `max_states`.
    pub torn: bool,
    pub seed: u64,
    pub content: u64,
    /// Record and check with a daemon broken on purpose (violations expected).
    pub broken_daemon: Option<BrokenDaemon>,
    pub report_dir: PathBuf,
    pub backupd: Option<PathBuf>,
    /// Failing states kept as images, per operation.
    pub keep: usize,
}

/// Runs every operation of `opts` and checks its states.
pub async fn run(opts: &Options, say: &(dyn Fn(&str) + Sync)) -> Result<CrashReport, InfraError> {
    let started = Instant::now();
    if !opts.report_dir.is_absolute() {
        return Err(InfraError::Emulator(format!(
            "the report folder {} must be an absolute path: the containers that check the states mount files from it",
            opts.report_dir.display()
        )));
    }
    let (image, template) = prepare_emulator(opts.backupd.clone(), false, opts.content, say).await?;
    std::fs::create_dir_all(&opts.report_dir).map_err(|e| InfraError::io(opts.report_dir.display(), e))?;
    let key = crate::transport::ssh::make_key(&opts.report_dir).await?;
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).map_err(|e| InfraError::io(key.display(), e))?;
    let password = run_password()?;
    let standin = match opts.on {
        RecordOn::Standin => Some(prepare_standin(opts.standin_backupd.clone(), opts.content, false, say).await?),
        RecordOn::Emulator => None,
    };
    let mut report = CrashReport {
        target: match opts.on {
            RecordOn::Emulator => "emulator (its card served through blklogwrites)".into(),
            RecordOn::Standin => "standin (arm64 guest, its card attached through blklogwrites)".into(),
        },
        seed: opts.seed,
        reorder: opts.reorder,
        torn: opts.torn,
        broken_daemon: opts.broken_daemon.map(|b| BrokenDaemonReport {
            name: b.name().into(),
            what: b.what().into(),
            check: b.check().into(),
        }),
        operations: Vec::new(),
        record_s: 0.0,
        duration_s: 0.0,
    };
    let env = Env {
        image: &image,
        template: &template,
        key: &key,
        pubkey: &pubkey,
        password: &password,
        standin: standin.as_ref(),
    };
    let rec_dir = opts.report_dir.join("record");
    let _ = std::fs::remove_dir_all(&rec_dir);
    std::fs::create_dir_all(&rec_dir).map_err(|e| InfraError::io(rec_dir.display(), e))?;
    say(&format!(
        "recording {} on one {}, its card's writes logged",
        opts.ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
        match opts.on {
            RecordOn::Emulator => "container emulator",
            RecordOn::Standin => "arm64 stand-in",
        }
    ));
    let t = Instant::now();
    let recording = match env.standin {
        Some(parts) => record_on_standin(opts, &env, parts, &rec_dir, say).await,
        None => record(opts, &env, &rec_dir, say).await,
    };
    report.record_s = t.elapsed().as_secs_f64();
    let (recorded, log, base) = match recording {
        Ok(r) => r,
        Err(e) => {
            let failed = |op: &Op| OperationReport {
                operation: op.name().into(),
                what: op.what().into(),
                error: Some(e.to_string()),
                ..Default::default()
            };
            report.operations = opts.ops.iter().map(failed).collect();
            (Vec::new(), PathBuf::new(), PathBuf::new())
        }
    };
    for (op, facts, record_s) in recorded {
        let dir = opts.report_dir.join(op.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
        let mut r = OperationReport {
            operation: op.name().into(),
            what: op.what().into(),
            record_s,
            ..Default::default()
        };
        let t = Instant::now();
        match facts {
            Err(e) => r.error = Some(e.to_string()),
            Ok(facts) => {
                if let Err(e) = check_states(opts, &env, op, &dir, &facts, &log, &base, &mut r, say).await {
                    r.error = Some(e.to_string());
                }
            }
        }
        r.check_s = t.elapsed().as_secs_f64();
        say(&format!(
            "{}: {} state(s) checked ({} flush point(s) of {} distinct, {} prefix(es), {} reordered of {}, {} torn of {}), {} violation(s){}",
            op.name(),
            r.states_checked,
            r.flush_points_checked(),
            r.distinct_states,
            r.prefixes_checked,
            r.reordered_checked,
            r.reordered_candidates,
            r.torn_checked,
            r.torn_candidates,
            r.violations.len(),
            r.error
                .as_deref()
                .map(|e| format!("; NOT CHECKED: {e}"))
                .unwrap_or_default()
        ));
        for f in ["cursor.img", "state.img"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        report.operations.push(r);
    }
    // The recording's scratch files go (the card, its base and log, the guest's disks); kept
    // state images and the guest's console stay.
    for f in ["sdcard.img", "sdcard.base", "sdcard.log"] {
        let _ = std::fs::remove_file(rec_dir.join(f));
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What every operation shares.
struct Env<'a> {
    image: &'a str,
    template: &'a Path,
    key: &'a Path,
    pubkey: &'a str,
    password: &'a str,
    standin: Option<&'a StandinParts>,
}

/// A password for the run's backups, from the system's random source: kept in memory only,
/// given to the daemon over D-Bus and to GnuPG on its stdin.
fn run_password() -> Result<String, InfraError> {
    use base64::Engine;
    let mut b = [0u8; 18];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| InfraError::io("/dev/urandom", e))?;
    std::io::Read::read_exact(&mut f, &mut b).map_err(|e| InfraError::io("/dev/urandom", e))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Each operation's facts (or why it could not be recorded) and seconds; the write log and
/// the card it started from.
type Recording = (Vec<(Op, Result<ops::Facts, Error>, f64)>, PathBuf, PathBuf);

/// Runs every operation in turn on one device.
async fn record_ops(
    opts: &Options,
    recorder: &Recorder<'_>,
    say: &(dyn Fn(&str) + Sync),
) -> Vec<(Op, Result<ops::Facts, Error>, f64)> {
    let mut out = Vec::new();
    for &op in &opts.ops {
        say(&format!("{}: recording ({})", op.name(), op.what()));
        let t = Instant::now();
        let facts = recorder.record(op).await;
        out.push((op, facts, t.elapsed().as_secs_f64()));
    }
    out
}

/// Runs the operations on an emulator whose card's writes are logged.
async fn record(opts: &Options, env: &Env<'_>, dir: &Path, say: &(dyn Fn(&str) + Sync)) -> Result<Recording, Error> {
    let card = dir.join("sdcard.img");
    crate::image::sdcard::copy_for(env.template, &card).map_err(machine)?;
    let logged = tokio::task::block_in_place(|| LoggedCard::start(&card, dir)).map_err(machine)?;
    let emu = Emulator::start(EmulatorSpec {
        image: env.image,
        sdcard_template: &logged.exported,
        admin_pubkey: &env.key.with_extension("pub"),
        work_dir: dir,
        in_place: true,
    })
    .await
    .map_err(machine)?;
    let dev = emulator_device(&emu, env.key, env.pubkey, dir);
    let mark = || logged.entries().map_err(machine);
    let recorder = Recorder {
        dev: &dev,
        password: env.password,
        mark: &mark,
        broken: opts.broken_daemon,
    };
    let mut recorded = record_ops(opts, &recorder, say).await;
    if recorded.iter().any(|(_, f, _)| f.is_err()) {
        let journal = emu.journal("nexus-backupd", 30).await;
        for (_, f, _) in recorded.iter_mut() {
            if let Err(e) = f {
                let failed = std::mem::replace(e, Error::Machine(String::new()));
                *e = failed.and(|m| format!("{m}; the daemon's journal:\n{journal}"));
            }
        }
    }
    let _ = emu.remove().await;
    let (log, base) = (logged.log.clone(), logged.base.clone());
    drop(logged);
    Ok((recorded, log, base))
}

/// Runs the operations on a stand-in booted with its card's writes logged, then cuts its
/// power; the boot's log and the card it started from are moved out of the boot folder.
async fn record_on_standin(
    opts: &Options,
    env: &Env<'_>,
    parts: &StandinParts,
    dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Recording, Error> {
    let boot_dir = dir.join("standin");
    let vm = Standin::start(
        StandinSpec {
            image: &parts.image,
            sdcard_template: &parts.template,
            key: &parts.key,
            boot_dir: Some(boot_dir.clone()),
            log_writes: true,
        },
        say,
    )
    .await
    .map_err(machine)?;
    say(&format!(
        "the stand-in was ready in {:.1} s",
        vm.ready_after.as_secs_f64()
    ));
    let dev = standin::device(&vm, &parts.key, dir);
    let log_now = boot_dir.join("sdcard.log");
    let mark = || WriteLog::open(&log_now).map(|l| l.entries.len()).map_err(machine);
    let recorder = Recorder {
        dev: &dev,
        password: env.password,
        mark: &mark,
        broken: opts.broken_daemon,
    };
    let recorded = record_ops(opts, &recorder, say).await;
    // The power goes (SIGKILL of qemu): the log holds what the card was sent, flushes included.
    let cut = vm.power_cut(true).await.map_err(|e| match e {
        FaultError::Failed(m) | FaultError::Unsupported(m) => {
            Error::Machine(format!("the power cut that ends the recording: {m}"))
        }
    });
    let (log, base) = (dir.join("sdcard.log"), dir.join("sdcard.base"));
    let moved = std::fs::rename(boot_dir.join("sdcard-1.log"), &log)
        .and_then(|()| std::fs::rename(boot_dir.join("sdcard.base"), &base))
        .map_err(|e| Error::Machine(format!("the stand-in's write log: {e}")));
    drop(vm);
    cut?;
    moved?;
    Ok((recorded, log, base))
}

#[allow(clippy::too_many_arguments)]
async fn check_states(
    opts: &Options,
    env: &Env<'_>,
    op: Op,
    dir: &Path,
    facts: &ops::Facts,
    log_path: &Path,
    base: &Path,
    r: &mut OperationReport,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let log = WriteLog::open(log_path).map_err(machine)?;
    let mut random = SeededRandom::for_scenario(opts.seed, op.name());
    let picked = pick::pick(
        &log.entries,
        facts.start,
        facts.end,
        opts.max_states,
        opts.prefixes,
        Beyond {
            reorder: opts.reorder,
            torn: opts.torn,
        },
        &mut random,
    );
    r.log_entries = facts.end.saturating_sub(facts.start);
    r.flush_points = picked.flush_points;
    r.distinct_states = picked.distinct;
    r.reordered_candidates = picked.reordered_candidates;
    r.torn_candidates = picked.torn_candidates;
    if let Some(e) = picked.span_error(facts.start, facts.end) {
        return Err(Error::Span(e));
    }
    let cursor = dir.join("cursor.img");
    sparse_copy(base, &cursor).map_err(|e| Error::Machine(format!("{}: {e}", cursor.display())))?;
    let mut replayer = Replayer::new(&log, &cursor).map_err(machine)?;
    let work = dir.join("check");
    std::fs::create_dir_all(&work).map_err(machine)?;
    let mut checker = check::Checker::new(op, facts, env.image, env.key, env.pubkey, &work, env.password);
    if op == Op::Activate {
        // The live trees at the operation's start: what a state that did not switch must hold.
        replayer.advance_to(facts.start).map_err(machine)?;
        let card = check::state_card(&work);
        let _ = std::fs::remove_file(&card);
        sparse_copy(&cursor, &card).map_err(|e| Error::Machine(format!("{}: {e}", card.display())))?;
        let trees = check::live_trees(&card, &work.join("mnt"));
        let _ = std::fs::remove_file(&card);
        checker.before_activate = Some(
            trees.map_err(|e| Error::Machine(format!("the live trees at the Activate's start cannot be read: {e}")))?,
        );
    }
    let bar = ProgressBar::new(picked.states.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} states {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(op.name());
    let mut kept = 0;
    let mut unchecked = Vec::new();
    for state in &picked.states {
        bar.set_message(format!("({})", state.name()));
        // The in-order replay goes to the state's epoch (its end for a flush point or prefix);
        // the copy gets the rest of the epoch as the state has it.
        replayer.advance_to(state.epoch).map_err(machine)?;
        let card = check::state_card(&work);
        let make = |card: &Path| -> Result<(), Error> {
            let _ = std::fs::remove_file(card);
            sparse_copy(&cursor, card).map_err(|e| Error::Machine(format!("{}: {e}", card.display())))?;
            if state.epoch < state.entries {
                log.apply(card, state.epoch, state.entries, &state.variant)
                    .map_err(machine)?;
            }
            Ok(())
        };
        make(&card)?;
        let mut found = checker.check(&card, state).await;
        if found.is_err() {
            // Once more on a fresh copy: a container or connection that failed under load.
            make(&card)?;
            found = checker.check(&card, state).await;
        }
        let _ = std::fs::remove_file(&card);
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                unchecked.push(format!("the {}: {e}", state.name()));
                bar.inc(1);
                continue;
            }
        };
        r.states_checked += 1;
        match state.kind {
            Kind::FlushPoint => {}
            Kind::Prefix => r.prefixes_checked += 1,
            Kind::Reordered => r.reordered_checked += 1,
            Kind::Torn => r.torn_checked += 1,
        }
        if found.is_empty() {
            bar.inc(1);
            continue;
        }
        let kept_image = if kept < opts.keep {
            kept += 1;
            keep_state(&log, base, dir, state).ok()
        } else {
            None
        };
        for b in found {
            say(&format!("{}: {}: {}: {}", op.name(), state.name(), b.check, b.what));
            r.violations.push(Violation {
                entries: state.entries,
                flush_point: state.flush_point(),
                kind: state.kind.name().into(),
                state: state.name(),
                check: b.check.to_string(),
                what: b.what,
                image: kept_image.as_ref().map(|p| p.display().to_string()),
                mount: kept_image.as_deref().map(check::mount_command),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&work);
    if !unchecked.is_empty() {
        return Err(Error::Unchecked(format!(
            "{} state(s) could not be checked: {}",
            unchecked.len(),
            unchecked.join("; ")
        )));
    }
    Ok(())
}

/// The state as the power cut left it (before any mount or recovery), kept as an image.
fn keep_state(log: &WriteLog, base: &Path, dir: &Path, state: &State) -> Result<PathBuf, Error> {
    let image = dir.join(format!("{}.img", state.file_stem()));
    sparse_copy(base, &image).map_err(machine)?;
    Replayer::new(log, &image)
        .and_then(|mut r| r.advance_to(state.epoch))
        .map_err(machine)?;
    if state.epoch < state.entries {
        log.apply(&image, state.epoch, state.entries, &state.variant)
            .map_err(machine)?;
    }
    Ok(image)
}
