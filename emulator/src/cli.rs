//! What the emulator's daemons (`nexus-backupd`, `nexus-controlui`) share at start: logging
//! that never shows a password, and the runtime that runs them, their error said in one line.

use std::future::Future;
use std::process::ExitCode;

/// Logs to stderr at `NEXUS_LOG` (default `info`). zbus traces message bodies at its most
/// verbose levels, and a body may hold a password (a Backup1.Create): its level is capped
/// whatever NEXUS_LOG says.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| "info".into())
        .add_directive("zbus=info".parse().expect("static directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Runs `service` on a runtime of `workers` threads; an error is printed as `name: error:
/// source: ...` and ends in a failure status.
pub fn serve<E: std::error::Error>(
    name: &str,
    workers: usize,
    service: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("{name}: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
