//! `nexus-hil image build` and `nexus-hil emulator up|down|shell|logs`: making the emulator
//! image, keeping one emulator (or the arm64 stand-in) up for people, and reaching into it.

use std::path::PathBuf;
use std::process::ExitCode;

use super::say;
use crate::device::container::{self, Emulator, EmulatorSpec};
use crate::device::open::prepare_emulator;
use crate::device::standin;
use crate::error::InfraError;
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
        #[arg(long, value_enum, default_value = "native")]
        arch: standin::Arch,
        /// Home-automation content on its SD card, e.g. 32MiB, 256MiB or bytes (default: 256 MiB,
        /// about a device's; 64 MiB for arm64, whose qemu user network serves HTTPS at about
        /// 5 MB/s, so a 256 MiB backup's download would outlast the scenarios' 60 s step
        /// timeouts).
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

/// Runs `nexus-hil image build`.
pub async fn image(cmd: ImageCmd) -> Result<ExitCode, InfraError> {
    let ImageCmd::Build { force, backupd } = cmd;
    let (reference, template) = prepare_emulator(backupd, force, sdcard::FULL_CONTENT, &say).await?;
    println!("{reference}");
    say(&format!("SD-card template: {}", template.display()));
    Ok(ExitCode::SUCCESS)
}

/// Runs `nexus-hil emulator ...`.
pub async fn emulator(cmd: EmulatorCmd) -> Result<ExitCode, InfraError> {
    match cmd {
        EmulatorCmd::Power { state } => {
            let now = standin::switch_power(matches!(state, PowerState::On)).await?;
            say(&format!("the stand-in's power is {now}"));
            Ok(ExitCode::SUCCESS)
        }
        EmulatorCmd::Up {
            backupd,
            arch: standin::Arch::Arm64,
            card_content,
        } => {
            let content =
                sdcard::content_for(card_content, standin::DEFAULT_CONTENT, &[]).map_err(InfraError::SdCard)?;
            standin::up(backupd, content.0, false, &say).await?;
            Ok(ExitCode::SUCCESS)
        }
        EmulatorCmd::Up {
            backupd, card_content, ..
        } => {
            let content = sdcard::content_for(card_content, sdcard::FULL_CONTENT, &[]).map_err(InfraError::SdCard)?;
            up(backupd, content.0).await
        }
        EmulatorCmd::Shell => {
            let argv = ssh_to_up()?;
            let mut cmd = std::process::Command::new(&argv[0]);
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                cmd.arg("-t");
            }
            let status = cmd.args(&argv[1..]).status().map_err(|e| InfraError::io("ssh", e))?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        EmulatorCmd::Logs { follow } => {
            let argv = ssh_to_up()?;
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

/// What `emulator up` leaves for `shell` and `logs`.
fn up_state() -> PathBuf {
    crate::cache::dir().join("emulator-up.json")
}

/// `emulator up` of the container emulator: up until Ctrl-C, then removed.
async fn up(backupd: Option<PathBuf>, content: u64) -> Result<ExitCode, InfraError> {
    let (reference, template) = prepare_emulator(backupd, false, content, &say).await?;
    let dir = crate::cache::dir().join(format!("emulator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    let key = crate::transport::ssh::make_key(&dir).await?;
    let emu = Emulator::start(EmulatorSpec {
        image: &reference,
        sdcard_template: &template,
        admin_pubkey: &key.with_extension("pub"),
        work_dir: &dir,
        in_place: false,
    })
    .await?;
    println!(
        "emulator {} ready in {:.2} s\n  ssh -i {} -p {} nexus@127.0.0.1\n  https://127.0.0.1:{}{}\n  \
         Control UI: https://127.0.0.1:{}{} (user admin; its password: `sudo cat {}` in `nexus-hil emulator shell`)\n\
         Ctrl-C stops and removes it.",
        &emu.id[..12.min(emu.id.len())],
        emu.ready_after.as_secs_f64(),
        key.display(),
        emu.ssh_port,
        emu.https_port,
        nexus_contract::paths::CA_PATH,
        emu.https_port,
        nexus_contract::paths::CONTROL_UI_PREFIX,
        nexus_contract::paths::CONTROL_UI_ADMIN_PASSWORD_FILE,
    );
    let state = serde_json::json!({
        "id": emu.id, "ssh_port": emu.ssh_port, "https_port": emu.https_port,
        "key": key, "known_hosts": dir.join("known_hosts"),
    });
    let _ = std::fs::write(up_state(), state.to_string());
    let _ = tokio::signal::ctrl_c().await;
    let _ = std::fs::remove_file(up_state());
    emu.remove().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// The ssh command line for the emulator that `emulator up` keeps running.
fn ssh_to_up() -> Result<Vec<String>, InfraError> {
    let text = std::fs::read_to_string(up_state())
        .map_err(|_| InfraError::Emulator("no emulator is up; start one with `nexus-hil emulator up`".into()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| InfraError::io(up_state().display(), e))?;
    let port = v["ssh_port"].as_u64().unwrap_or(22).to_string();
    // Interactive use: the run's key and known hosts, but prompts allowed and a terminal if there is one.
    Ok(vec![
        "ssh".to_string(),
        "-p".into(),
        port,
        "-i".into(),
        v["key"].as_str().unwrap_or_default().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", v["known_hosts"].as_str().unwrap_or_default()),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "nexus@127.0.0.1".into(),
    ])
}
