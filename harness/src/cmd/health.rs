//! `nexus-hil health`: a device's health, as every run on a bench reads it before its first
//! scenario. Exit status: 0 healthy, 3 a check failed (the bench's trouble, not the product's),
//! 2 bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use super::args::TargetArgs;
use crate::bench::health::{self, Limits};
use crate::device::remote::{device as remote_device, RemoteSpec};
use crate::device::Target;
use crate::error::InfraError;
use crate::exit::Exit;

/// Arguments of `nexus-hil health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The device: `--target ssh://nexus@HOST[:PORT]` (with `--key`, the harness key by default).
    #[command(flatten)]
    pub target: TargetArgs,
    /// The most the device's clock may differ from this machine's, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = crate::scenario::parse_duration)]
    pub max_clock_skew: Duration,
    /// The least free space /broot must have, e.g. 256MiB.
    #[arg(long, default_value = "256MiB", value_parser = crate::scenario::parse_size)]
    pub min_free: u64,
}

impl HealthArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_clock_skew: self.max_clock_skew,
            min_free_bytes: self.min_free,
        }
    }
}

/// Runs `nexus-hil health`: prints a line per check; exit 3 when one failed.
pub async fn command(args: HealthArgs) -> Result<ExitCode, InfraError> {
    let (user, host, port) = match args.target.parsed() {
        Ok(Target::Remote { user, host, port }) => (user, host, port),
        Ok(_) => {
            super::say("health reads a real device: --target ssh://nexus@HOST[:PORT]");
            return Ok(ExitCode::from(Exit::Usage));
        }
        Err(code) => return Ok(code),
    };
    let work = crate::cache::dir().join(format!("health-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| InfraError::io(work.display(), e))?;
    let dev = remote_device(RemoteSpec {
        user: &user,
        host: &host,
        ssh_port: port,
        https_port: args.target.https_port,
        key: args.target.key.clone().unwrap_or_else(crate::device::keys::harness_key),
        pins: args.target.pins.as_deref(),
        ca_sha256: None,
        work: &work,
        ui: Default::default(),
    });
    let h = health::read(&dev, args.limits()).await;
    let _ = std::fs::remove_dir_all(&work);
    println!("health of {user}@{host}:{port}:");
    for line in h.lines() {
        println!("  {line}");
    }
    let failed = h.failed();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
    super::say(&format!(
        "unhealthy: {}; a run on this device stops before its first scenario until it is fixed",
        names.join(", ")
    ));
    Ok(ExitCode::from(Exit::Infra))
}
