//! `nexus-hil`: runs NOREYA NEXUS backup scenarios against the emulator or a real device. The
//! commands live in `nexus_harness::cmd`; this file parses the command line and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nexus_harness::cmd::{
    self, conform::ConformArgs, crash_states::CrashStatesArgs, provision::ProvisionArgs, report::ReportArgs,
    run::RunArgs,
};
use nexus_harness::error::InfraError;
use nexus_harness::exit::Exit;

/// Hardware-in-the-loop tests of the NOREYA NEXUS backup system.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run scenario files against the emulator or a real device.
    Run(Box<RunArgs>),
    /// Build the emulator image (skipped when its inputs are unchanged).
    Image {
        #[command(subcommand)]
        command: cmd::emulator::ImageCmd,
    },
    /// Check a device against the backup contract (spec/nexus-backup-api.md): every documented
    /// item must hold (exit 1 otherwise); this project's own choices are reported as the same or
    /// as deviations. Makes one snapshot and deletes it again.
    Conform(ConformArgs),
    /// Prepare a real device for the suite with its admin account, as the vendor documents it:
    /// user remotebackup, the polkit grant, the harness's key; idempotent, `--undo` removes
    /// exactly what it added, `--dry-run` prints each command and changes nothing.
    Provision(ProvisionArgs),
    /// Record operations (a backup, Cancel, Delete, snapshot Create/Delete, Activate) on an
    /// emulator whose SD card's writes are logged, then check the card as a power cut could have
    /// left it at every flush point: btrfs check, a writable mount, the daemon's recovery on it,
    /// every listed backup decrypted and matched. Exit 1 on a violation.
    CrashStates(CrashStatesArgs),
    /// Render a run's report.json as one self-contained HTML page (charts inline, nothing fetched).
    Report(ReportArgs),
    /// A real device's health, as every run on a bench reads it first: reachable, clock skew,
    /// free space on /broot, btrfs's error counters, the kernel's I/O errors on the card, the
    /// daemon answering, its software. Exit 3 when a check fails (the bench, not the product).
    Health(cmd::health::HealthArgs),
    /// Every step a scenario can take, with its keys and default time limit (what each does:
    /// scenarios/README.md).
    Steps,
    /// Write an image to a bench device's SD card through its SD mux ([device.sdmux] in
    /// targets.toml): power off, card to this machine, checked, written, read back, card back
    /// and power on. Erases the card: needs --erase.
    Flash(cmd::flash::FlashArgs),
    /// The results history every run appends to: where each series changed (`history check`).
    History(cmd::history::HistoryArgs),
    /// Start, stop and look into emulators.
    Emulator {
        #[command(subcommand)]
        command: cmd::emulator::EmulatorCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("NEXUS_HIL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexus-hil: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Infra);
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus-hil: infrastructure error: {e}");
            ExitCode::from(Exit::Infra)
        }
    }
}

async fn dispatch(command: Cmd) -> Result<ExitCode, InfraError> {
    match command {
        Cmd::Run(args) => cmd::run::run(*args).await,
        Cmd::Conform(args) => cmd::conform::command(args).await,
        Cmd::Provision(args) => cmd::provision::command(args).await,
        Cmd::Report(args) => cmd::report::command(args).await,
        Cmd::Health(args) => cmd::health::command(args).await,
        Cmd::History(args) => cmd::history::command(args).await,
        Cmd::Steps => Ok(cmd::steps::command()),
        Cmd::Flash(args) => cmd::flash::command(args).await,
        Cmd::CrashStates(args) => cmd::crash_states::command(args).await,
        Cmd::Image { command } => cmd::emulator::image(command).await,
        Cmd::Emulator { command } => cmd::emulator::emulator(command).await,
    }
}
