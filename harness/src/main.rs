//! `nexus-hil`: runs NOREYA NEXUS backup scenarios against the emulator or a real device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nexus_harness::error::InfraError;
use nexus_harness::{emulator, image, sdcard};

/// Hardware-in-the-loop tests of the NOREYA NEXUS backup system.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the emulator image (skipped when its inputs are unchanged).
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Start, stop and look into emulators.
    Emulator {
        #[command(subcommand)]
        command: EmulatorCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
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

#[derive(Debug, Subcommand)]
enum EmulatorCmd {
    /// Start an emulator and keep it up until Ctrl-C; prints how to reach it.
    Up {
        #[arg(long)]
        backupd: Option<PathBuf>,
    },
    /// Remove every emulator container left behind by earlier runs.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("NEXUS_HIL_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexus-hil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus-hil: infrastructure error: {e}");
            ExitCode::from(3)
        }
    }
}

fn say(msg: &str) {
    eprintln!("nexus-hil: {msg}");
}

async fn build_all(backupd: Option<PathBuf>, force: bool) -> Result<(String, PathBuf), InfraError> {
    let backupd = backupd.unwrap_or_else(image::default_backupd);
    let inputs = image::ImageInputs::collect(&backupd)?;
    let built = image::ensure(&inputs, force, say).await?;
    match built.build_time {
        Some(t) => say(&format!("built {} in {:.1} s", built.reference, t.as_secs_f64())),
        None => say(&format!("{} is up to date", built.reference)),
    }
    let template = tokio::task::spawn_blocking(|| sdcard::template(sdcard::DEFAULT_CONTENT, say))
        .await
        .map_err(|e| InfraError::SdCard(e.to_string()))??;
    Ok((built.reference, template))
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode, InfraError> {
    match cmd {
        Cmd::Image {
            command: ImageCmd::Build { force, backupd },
        } => {
            let (reference, template) = build_all(backupd, force).await?;
            println!("{reference}");
            say(&format!("SD-card template: {}", template.display()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Emulator {
            command: EmulatorCmd::Up { backupd },
        } => {
            let (reference, template) = build_all(backupd, false).await?;
            let dir = image::cache_dir().join(format!("emulator-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
            let key = nexus_harness::ssh::make_key(&dir).await?;
            let emu = emulator::Emulator::start(emulator::EmulatorSpec {
                image: &reference,
                sdcard_template: &template,
                admin_pubkey: &key.with_extension("pub"),
                work_dir: &dir,
            })
            .await?;
            println!(
                "emulator {} ready in {:.2} s\n  ssh -i {} -p {} nexus@127.0.0.1\n  https://127.0.0.1:{}/noreya-nexus/certificates/ca.pem\nCtrl-C stops and removes it.",
                &emu.id[..12.min(emu.id.len())],
                emu.ready_after.as_secs_f64(),
                key.display(),
                emu.ssh_port,
                emu.https_port
            );
            let _ = tokio::signal::ctrl_c().await;
            emu.remove().await?;
            let _ = std::fs::remove_dir_all(&dir);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Emulator {
            command: EmulatorCmd::Down,
        } => {
            let n = emulator::remove_all().await?;
            say(&format!("removed {n} emulator container(s)"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
