//! `nexus-backupd`: the NOREYA NEXUS backup daemon (emulator).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nexus_emulator::config::{Config, DEFAULT_CONFIG_PATH};

/// Serves tech.noreya.Snapshot1 and tech.noreya.Backup1 on the system bus, and the finished
/// backups over HTTPS, on the btrfs file system mounted at /broot.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (every key is optional; see images/etc/nexus/backupd.toml).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration file and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    nexus_emulator::cli::init_logging();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nexus-backupd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    nexus_emulator::cli::serve("nexus-backupd", 2, nexus_emulator::service::run(config))
}
