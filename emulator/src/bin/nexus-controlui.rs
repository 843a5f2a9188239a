//! `nexus-controlui`: the Control UI's web pages (below `/control/`), on a unix socket that
//! nexus-backupd's HTTPS server forwards to. Runs as the user `nexus-ui`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nexus_emulator::controlui::config::{ControlUiConfig, DEFAULT_CONFIG_PATH};

/// Serves the Control UI's backup page: log in, create snapshots, start a backup (its password
/// shown once), follow its progress, download it. Every action is a D-Bus call polkit judges.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (every key is optional; see images/etc/nexus/controlui.toml).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration file and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nexus_emulator::cli::init_logging();
    let config = match ControlUiConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nexus-controlui: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    nexus_emulator::cli::serve("nexus-controlui", 1, nexus_emulator::controlui::run(config))
}
