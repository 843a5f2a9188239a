//! `nexus-hil conform`: opens the target (a fresh device of a kind, the emulator by default, or
//! a real one), runs the contract checks of `crate::conform`, prints them (and writes JSON). Exit status: 0 every documented
//! item holds, 1 one does not, 2 bad arguments, 3 the device could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::TargetArgs;
use crate::conform::{check, conforms, render};
use crate::device::{open_device, OpenSpec};
use crate::error::InfraError;
use crate::exit::Exit;

/// Arguments of `nexus-hil conform`.
#[derive(Debug, clap::Args)]
pub struct ConformArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also write the checks as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The nexus-backupd binary for the emulator image (default: next to nexus-hil).
    #[arg(long)]
    pub backupd: Option<PathBuf>,
}

/// Runs `nexus-hil conform`.
pub async fn command(args: ConformArgs) -> Result<ExitCode, InfraError> {
    let target = match args.target.parsed() {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let work = crate::cache::dir().join(format!("conform-{}", std::process::id()));
    crate::runner::interrupt::guard("removing this run's emulator");
    let opened = open_device(OpenSpec {
        target: &target,
        https_port: args.target.https_port,
        key: args.target.key.clone(),
        backupd: args.backupd.clone(),
        pins: args.target.pins.as_deref(),
        work: &work,
    })
    .await;
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e.into());
        }
    };
    super::say(&format!(
        "checking {} against the backup contract (spec/nexus-backup-api.md)",
        args.target.target
    ));
    let result = check(&opened.dev).await;
    opened.close().await;
    let _ = std::fs::remove_dir_all(&work);
    let checks = result.map_err(|e| InfraError::Unreachable(e.to_string()))?;
    print!("{}", render(&checks));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "target": args.target.target,
            "conforms": conforms(&checks),
            "checks": checks,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| InfraError::io(path.display(), e))?;
    }
    Ok(if conforms(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Failed)
    })
}
