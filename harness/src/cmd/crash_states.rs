//! `nexus-hil crash-states`: records operations on an emulator whose card's writes are logged,
//! then checks the card as a power cut could have left it at every flush point, seeded points
//! between, and (`--reorder`, `--torn`) as a card that keeps a flush epoch's writes in any
//! order, or tears one, could have. Exit status: 0 no violation, 1 a violation, 2 bad arguments, 3 an
//! operation could not be recorded or checked (nothing was proven).

use std::path::PathBuf;
use std::process::ExitCode;

use super::say;
use crate::crash_states::{self, broken::BrokenDaemon, ops::Op, Options, RecordOn};
use crate::error::InfraError;
use crate::exit::Exit;
use crate::report::crash;

/// Arguments of `nexus-hil crash-states`.
#[derive(Debug, clap::Args)]
pub struct CrashStatesArgs {
    /// Operations to record and check (default: all of them).
    #[arg(long = "op", value_enum, value_delimiter = ',')]
    pub ops: Vec<Op>,
    /// Where the operations run: `emulator` (a container; the host's kernel writes its card) or
    /// `standin` (the arm64 guest with its own kernel, slower: a boot per operation). The states
    /// are checked on this machine either way.
    #[arg(long, value_enum, default_value = "emulator")]
    pub target: RecordOn,
    /// The arm64 nexus-backupd for the stand-in's image (default: the cross build in
    /// target/aarch64-unknown-linux-gnu/release/).
    #[arg(long)]
    pub standin_backupd: Option<PathBuf>,
    /// States checked per operation and kind: an even spread of its distinct flush points (the
    /// first and last among them), and a seeded sample of as many reordered and as many torn
    /// states (0: every one; CI checks a few, the full campaign all).
    #[arg(long, default_value_t = 0)]
    pub max_states: usize,
    /// In-order prefixes of the writes between two flush points checked per operation, drawn
    /// with --seed.
    #[arg(long, default_value_t = 4)]
    pub prefixes: usize,
    /// Reordered states: between two flushes a card may keep any of the writes it was sent.
    /// For each flush epoch, the states that drop each subset of up to K of its writes (a
    /// seeded sample of 16 subsets when there are more; FUA writes are always kept; dropping
    /// only the last writes is a prefix, not drawn again). 0: none.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub reorder: usize,
    /// Torn states: one write of a flush epoch (two sectors or more, not FUA) cut at a 512-byte
    /// sector drawn with --seed, the sectors after the cut holding what they held before it.
    #[arg(long)]
    pub torn: bool,
    /// The seed of the draws (default: from the clock); the report names it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Bytes of home-automation content on the card (a backup's size).
    #[arg(long, default_value_t = 64 << 20)]
    pub content_bytes: u64,
    /// Record and check with nexus-backupd broken on purpose by one test-only fault (allowed
    /// only on the harness's throwaway emulator and stand-in): the proof that the check meant
    /// for it catches it. Without --op, the operation that shows it. Expect violations (exit 1).
    #[arg(long, value_enum)]
    pub broken_daemon: Option<BrokenDaemon>,
    /// The same as --broken-daemon publish-before-sync (the in-place writer: a backup gets its
    /// final name before its data).
    #[arg(long, conflicts_with = "broken_daemon")]
    pub broken_writer: bool,
    /// Failing states kept as images per operation, with a command that mounts each.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Folder for the report (crash-states.json, crash-states.html) and kept states
    /// (default: target/nexus-hil/crash-states).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// The nexus-backupd binary for the emulator's image (default: next to nexus-hil).
    #[arg(long)]
    pub backupd: Option<PathBuf>,
}

/// Runs `nexus-hil crash-states`.
pub async fn command(args: CrashStatesArgs) -> Result<ExitCode, InfraError> {
    let report_dir = args
        .report_dir
        .unwrap_or_else(|| PathBuf::from("target/nexus-hil/crash-states"));
    // Absolute: the containers that check the states mount files from it.
    std::fs::create_dir_all(&report_dir).map_err(|e| InfraError::io(report_dir.display(), e))?;
    let report_dir = report_dir
        .canonicalize()
        .map_err(|e| InfraError::io(report_dir.display(), e))?;
    let seed = args.seed.unwrap_or_else(super::clock_seed);
    let broken_daemon = args
        .broken_daemon
        .or(args.broken_writer.then_some(BrokenDaemon::PublishBeforeSync));
    let mut ops = if let (true, Some(b)) = (args.ops.is_empty(), broken_daemon) {
        vec![b.op()]
    } else if args.ops.is_empty() {
        Op::ALL.to_vec()
    } else {
        args.ops
    };
    ops.sort();
    ops.dedup();
    say(&format!(
        "crash states of {} (seed {seed}; {} flush points per operation, {} prefixes between flushes, {}{})",
        ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
        if args.max_states == 0 {
            "all".to_string()
        } else {
            format!("up to {}", args.max_states)
        },
        args.prefixes,
        if args.reorder == 0 {
            "no reordered states".to_string()
        } else {
            format!("reordered states dropping up to {} write(s) of an epoch", args.reorder)
        },
        if args.torn { ", torn states" } else { "" }
    ));
    let opts = Options {
        on: args.target,
        standin_backupd: args.standin_backupd,
        ops,
        max_states: args.max_states,
        prefixes: args.prefixes,
        reorder: args.reorder,
        torn: args.torn,
        seed,
        content: args.content_bytes,
        broken_daemon,
        report_dir: report_dir.clone(),
        backupd: args.backupd,
        keep: args.keep,
    };
    let report = crash_states::run(&opts, &say).await?;
    let json = report_dir.join("crash-states.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| InfraError::Emulator(e.to_string()))?;
    std::fs::write(&json, text).map_err(|e| InfraError::io(json.display(), e))?;
    let html = report_dir.join("crash-states.html");
    std::fs::write(&html, crash::render(&report)).map_err(|e| InfraError::io(html.display(), e))?;
    print!("{}", crash::table(&report));
    say(&format!("report: {} and {}", json.display(), html.display()));
    Ok(if report.errors() > 0 {
        ExitCode::from(Exit::Infra)
    } else if report.violations() > 0 {
        ExitCode::from(Exit::Failed)
    } else {
        ExitCode::SUCCESS
    })
}
