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
    // zbus traces message bodies at its most verbose levels, and a Backup1.Create body holds the
    // password: its level is capped whatever NEXUS_LOG says.
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| "info".into())
        .add_directive("zbus=info".parse().expect("static directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nexus-controlui: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nexus_emulator::controlui::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("nexus-controlui: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
