//! `nexus-hil image build` and `nexus-hil emulator up|down|power|shell|logs`: making the
//! emulator image, keeping one device of a kind up for people (`--arch`: each kind's, through
//! its seam in `crate::device`), its power, and reaching into the container emulator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser};

use super::say;
use crate::device::{container, Prepare, KINDS};
use crate::error::InfraError;
use crate::exit::Exit;
use crate::image::sdcard;

/// `nexus-hil image ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Make the emulator image and the SD-card template; prints the image reference.
    Build {
        /// Rebuild even when an image for these inputs exists.
        #[arg(long)]
        force: bool,
        /// The nexus-backupd binary to put in the image (default: next to nexus-hil).
        #[arg(long)]
        backupd: Option<PathBuf>,
    },
}

/// `nexus-hil emulator ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EmulatorCmd {
    /// Start an emulator and keep it up until Ctrl-C; prints how to reach it.
    Up {
        /// The nexus-backupd binary (default: next to nexus-hil; for arm64 the cross-built one).
        #[arg(long)]
        backupd: Option<PathBuf>,
        /// `native`: the container emulator; `arm64`: the Pi-class stand-in in
        /// qemu-system-aarch64, reached only over SSH and HTTPS on 127.0.0.1 ports.
        #[arg(long, default_value = "native", value_parser = arches())]
        arch: String,
        /// Home-automation content on its SD card, e.g. 32MiB, 256MiB or bytes (default: 256 MiB,
        /// about a device's; 32 MiB for arm64, whose qemu user network serves HTTPS at about
        /// 5 MB/s under TCG, so a 256 MiB backup's download would outlast the scenarios' 60 s
        /// step timeouts).
        #[arg(long, value_name = "SIZE", alias = "content-bytes", value_parser = crate::scenario::parse_size)]
        card_content: Option<u64>,
    },
    /// Remove every emulator container left behind by earlier runs.
    Down,
    /// Switch the power of the arm64 stand-in that `emulator up --arch arm64` keeps: `off`
    /// cuts it (qemu killed, never a shutdown), `on` boots it again from the same disks. For a
    /// bench's `[device.power]` exec driver, or by hand.
    Power {
        #[arg(value_enum)]
        state: PowerState,
    },
    /// Open a shell on the emulator that `emulator up` keeps running (as the admin user).
    Shell,
    /// Print the nexus-backupd journal of the emulator that `emulator up` keeps running.
    Logs {
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
    },
}

/// `emulator power on|off`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PowerState {
    On,
    Off,
}

/// `--arch`: what each kind of device calls itself there.
fn arches() -> PossibleValuesParser {
    PossibleValuesParser::new(KINDS.iter().map(|k| {
        let (arch, what) = k.arch();
        PossibleValue::new(arch).help(what)
    }))
}

/// Runs `nexus-hil image build`.
pub async fn image(cmd: ImageCmd) -> Result<ExitCode, InfraError> {
    let ImageCmd::Build { force, backupd } = cmd;
    let (reference, template) = container::prepare(backupd, force, sdcard::FULL_CONTENT, &say).await?;
    println!("{reference}");
    say(&format!("SD-card template: {}", template.display()));
    Ok(ExitCode::SUCCESS)
}

/// Runs `nexus-hil emulator ...`.
pub async fn emulator(cmd: EmulatorCmd) -> Result<ExitCode, InfraError> {
    match cmd {
        EmulatorCmd::Power { state } => {
            let on = matches!(state, PowerState::On);
            let Some(switch) = KINDS.iter().find_map(|k| k.power(on)) else {
                say("no kind of device here has a power switch");
                return Ok(ExitCode::from(Exit::Usage));
            };
            say(&switch.await?);
            Ok(ExitCode::SUCCESS)
        }
        EmulatorCmd::Up {
            backupd,
            arch,
            card_content,
        } => {
            let Some(kind) = crate::device::kind_for_arch(&arch) else {
                say(&format!("--arch {arch:?}: no such kind of device"));
                return Ok(ExitCode::from(Exit::Usage));
            };
            let content = sdcard::content_for(card_content, kind.device_content(), &[]).map_err(InfraError::SdCard)?;
            let work = crate::cache::dir().join(format!("emulator-{}", std::process::id()));
            kind.up(Prepare {
                backupd,
                content: content.0,
                force: false,
                key: None,
                work: &work,
                say: &say,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        EmulatorCmd::Shell => {
            let argv = container::ssh_to_up()?;
            let mut cmd = std::process::Command::new(&argv[0]);
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                cmd.arg("-t");
            }
            let status = cmd.args(&argv[1..]).status().map_err(|e| InfraError::io("ssh", e))?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        EmulatorCmd::Logs { follow } => {
            let argv = container::ssh_to_up()?;
            let mut cmd = "sudo journalctl -u nexus-backupd --no-pager -n 200".to_string();
            if follow {
                cmd.push_str(" -f");
            }
            let status = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .arg(cmd)
                .status()
                .map_err(|e| InfraError::io("ssh", e))?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        EmulatorCmd::Down => {
            let n = container::remove_all().await?;
            say(&format!("removed {n} emulator container(s)"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
