//! The target flags that `run`, `conform` and `provision` share.

use std::path::PathBuf;

use crate::device::Target;

/// Which device a command talks to, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// `emulator` (a fresh container), `standin` (a fresh arm64 guest in qemu, whose power the
    /// harness owns; not for `provision`) or `ssh://USER@HOST[:PORT]`, the admin user of a real
    /// device.
    #[arg(long, default_value = "emulator")]
    pub target: String,
    /// HTTPS port of a real device.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// SSH key for a real device (default: the harness key that `nexus-hil provision`
    /// installed; for `provision`, that key, then your own ssh keys and agent).
    #[arg(long, visible_alias = "login-key")]
    pub key: Option<PathBuf>,
    /// Folder where real devices' HTTPS CAs are pinned on first use (default: ~/.cache/nexus-hil/pins).
    #[arg(long)]
    pub pins: Option<PathBuf>,
}

impl TargetArgs {
    /// The parsed `--target`; a mistake is printed and becomes exit status 2.
    pub fn parsed(&self) -> Result<Target, std::process::ExitCode> {
        Target::parse(&self.target).map_err(|e| {
            super::say(&e.to_string());
            std::process::ExitCode::from(e.exit())
        })
    }
}
