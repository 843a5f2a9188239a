//! `nexus-hil provision`: runs the provisioning (or undo) script of `crate::provision` on a
//! real device as its admin, with sudo. Exit status: 0 done, 1 the device lacks something,
//! 2 bad arguments, 3 the device could not be reached or refused.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::args::TargetArgs;
use crate::bench::lock::{DeviceLock, LockError, Timing};
use crate::device::keys::harness_key;
use crate::device::remote::{self, RemoteSpec};
use crate::device::Target;
use crate::error::InfraError;
use crate::exit::Exit;
use crate::provision::{provision_script, undo_script};
use crate::transport::ssh::SshTarget;

/// Arguments of `nexus-hil provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The device's admin account: `--target ssh://nexus@HOST[:PORT]`; `--key` (or
    /// `--login-key`) logs in as the admin while provisioning. The admin needs sudo without a
    /// password prompt.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print each command and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove exactly what earlier provisioning added.
    #[arg(long)]
    pub undo: bool,
}

/// Runs `nexus-hil provision`. Exit status: 0 done, 1 the device lacks something, 2 bad
/// arguments, 3 the device could not be reached or refused.
pub async fn command(args: ProvisionArgs) -> Result<ExitCode, InfraError> {
    let (user, host, port) = match args.target.parsed() {
        Ok(Target::Remote { user, host, port }) => (user, host, port),
        Ok(Target::Fresh(_) | Target::Fleet(_)) => {
            super::say("provision prepares a real device: --target ssh://nexus@HOST[:PORT]");
            return Ok(ExitCode::from(Exit::Usage));
        }
        Err(code) => return Ok(code),
    };
    let key = harness_key();
    let dir = key.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    crate::transport::ssh::make_key(&dir).await?;
    let pubkey = std::fs::read_to_string(key.with_extension("pub"))
        .map_err(|e| InfraError::io(key.with_extension("pub").display(), e))?;
    let script = if args.undo {
        undo_script(&pubkey, args.dry_run)
    } else {
        provision_script(&user, &pubkey, args.dry_run)
    };
    let login = args.target.key.clone().unwrap_or_else(|| key.clone());
    let ssh = SshTarget {
        host: host.clone(),
        port,
        key: login.clone(),
        known_hosts: dir.join("known_hosts"),
        multiplex: None,
    };
    let mut argv = ssh.ssh_argv(&user);
    if args.target.key.is_none() {
        // Besides the harness key, whatever the user's own ssh offers (keys, agent).
        if let Some(i) = argv.iter().position(|a| a == "IdentitiesOnly=yes") {
            argv.drain(i - 1..=i);
        }
    }
    // The undo takes the device's lease first: it never undoes what a run that holds the
    // device is still doing, and no run starts on it while it works.
    let lease = if args.undo && !args.dry_run {
        let dev = remote::device(RemoteSpec {
            user: &user,
            host: &host,
            ssh_port: port,
            https_port: args.target.https_port,
            key: login.clone(),
            pins: None,
            ca_sha256: None,
            work: &dir,
            ui: Default::default(),
        });
        let owner = "nexus-hil provision --undo";
        match DeviceLock::acquire(&dev, owner, None, Timing::default(), &super::say).await {
            Ok(l) => Some(l),
            Err(e @ LockError::Held { .. }) => {
                super::say(&format!(
                    "{e}; provision --undo does not undo a record while a run holds the device"
                ));
                return Ok(ExitCode::from(Exit::Infra));
            }
            Err(e) => return Err(InfraError::Unreachable(e.to_string())),
        }
    } else {
        None
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).arg("--").arg("sudo -n sh -s");
    eprintln!(
        "nexus-hil: {} {user}@{host}:{port}{}",
        if args.undo {
            "undoing the provisioning of"
        } else {
            "provisioning"
        },
        if args.dry_run {
            " (dry run: nothing changes)"
        } else {
            ""
        }
    );
    let out = crate::transport::ssh::run_local(cmd, Some(script.as_bytes()), Duration::from_secs(120)).await;
    if let Some(l) = lease {
        if let Err(e) = l.release().await {
            super::say(&format!("cannot release the device's lock: {e}"));
        }
    }
    let out = out.map_err(|e| InfraError::Unreachable(format!("ssh {user}@{host}:{port}: {e}")))?;
    print!("{}", out.stdout);
    match out.code {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(4) => Ok(ExitCode::from(Exit::Failed)),
        Some(255) => Err(InfraError::Unreachable(format!(
            "ssh {user}@{host}:{port} as the admin failed: {}; pass --login-key, or make sure your ssh can log in",
            out.stderr.trim()
        ))),
        _ if out.stderr.contains("sudo") => Err(InfraError::Unreachable(format!(
            "{user} cannot use sudo without a password prompt ({}); the suite needs that for its root steps: \
             allow it (for example `{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/nexus-hil) and provision again",
            out.stderr.trim()
        ))),
        code => Err(InfraError::Unreachable(format!(
            "provisioning stopped (exit {code:?}): {}",
            out.stderr.trim()
        ))),
    }
}
