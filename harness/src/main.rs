//! `nexus-hil`: runs NOREYA NEXUS backup scenarios against the emulator or a real device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nexus_harness::error::InfraError;
use nexus_harness::{emulator, image, run, sdcard, standin};

/// Hardware-in-the-loop tests of the NOREYA NEXUS backup system.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run scenario files against the emulator or a real device.
    Run(run::RunArgs),
    /// Build the emulator image (skipped when its inputs are unchanged).
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Check a device against the backup contract (spec/nexus-backup-api.md): every documented
    /// item must hold (exit 1 otherwise); this project's own choices are reported as the same or
    /// as deviations. Makes one snapshot and deletes it again.
    Conform(nexus_harness::conform::ConformArgs),
    /// Prepare a real device for the suite with its admin account, as the vendor documents it:
    /// user remotebackup, the polkit grant, the harness's key; idempotent, `--undo` removes
    /// exactly what it added, `--dry-run` prints each command and changes nothing.
    Provision(nexus_harness::provision::ProvisionArgs),
    /// Render a run's report.json as one self-contained HTML page (charts inline, nothing fetched).
    Report {
        /// The run's report folder or its report.json.
        #[arg(default_value = "target/nexus-hil/suite")]
        report: PathBuf,
        /// Where to write the page (default: report.html next to report.json).
        #[arg(long, short)]
        output: Option<PathBuf>,
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
        /// The nexus-backupd binary (default: next to nexus-hil; for arm64 the cross-built one).
        #[arg(long)]
        backupd: Option<PathBuf>,
        /// `native`: the container emulator; `arm64`: the Pi-class stand-in in
        /// qemu-system-aarch64, reached only over SSH and HTTPS on 127.0.0.1 ports.
        #[arg(long, value_enum, default_value = "native")]
        arch: standin::Arch,
        /// Bytes of home-automation content on its SD card (default: 256 MiB; 64 MiB for arm64,
        /// whose qemu user network serves HTTPS at about 5 MB/s, so a 256 MiB backup's
        /// download would outlast the scenarios' 60 s step timeouts).
        #[arg(long)]
        content_bytes: Option<u64>,
    },
    /// Remove every emulator container left behind by earlier runs.
    Down,
    /// Open a shell on the emulator that `emulator up` keeps running (as the admin user).
    Shell,
    /// Print the nexus-backupd journal of the emulator that `emulator up` keeps running.
    Logs {
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
    },
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
    run::prepare_emulator(backupd, force, sdcard::DEFAULT_CONTENT, &say).await
}

/// What `emulator up` leaves for `shell` and `logs`.
fn up_state() -> PathBuf {
    image::cache_dir().join("emulator-up.json")
}

fn ssh_to_up() -> Result<Vec<String>, InfraError> {
    let text = std::fs::read_to_string(up_state())
        .map_err(|_| InfraError::Emulator("no emulator is up; start one with `nexus-hil emulator up`".into()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| InfraError::io(up_state().display(), e))?;
    let port = v["ssh_port"].as_u64().unwrap_or(22).to_string();
    // Interactive use: the run's key and known hosts, but prompts allowed and a terminal if there is one.
    let argv = vec![
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
    ];
    Ok(argv)
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode, InfraError> {
    match cmd {
        Cmd::Run(args) => run::run(args).await,
        Cmd::Conform(args) => nexus_harness::conform::command(args).await,
        Cmd::Provision(args) => nexus_harness::provision::command(args).await,
        Cmd::Report { report, output } => {
            let json = if report.is_dir() {
                report.join("report.json")
            } else {
                report
            };
            let text = match std::fs::read_to_string(&json) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "nexus-hil: {}: {e}; give a run's report folder (--report-dir of `nexus-hil run`) or its report.json",
                        json.display()
                    );
                    return Ok(ExitCode::from(2));
                }
            };
            let parsed: nexus_harness::report::RunReport = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("nexus-hil: {} is not a nexus-hil report: {e}", json.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let out = output.unwrap_or_else(|| json.with_file_name("report.html"));
            std::fs::write(&out, nexus_harness::html::render(&parsed)).map_err(|e| InfraError::io(out.display(), e))?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Image {
            command: ImageCmd::Build { force, backupd },
        } => {
            let (reference, template) = build_all(backupd, force).await?;
            println!("{reference}");
            say(&format!("SD-card template: {}", template.display()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Emulator {
            command:
                EmulatorCmd::Up {
                    backupd,
                    arch: standin::Arch::Arm64,
                    content_bytes,
                },
        } => {
            standin::up(backupd, content_bytes.unwrap_or(standin::DEFAULT_CONTENT), false, &say).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Emulator {
            command: EmulatorCmd::Up {
                backupd, content_bytes, ..
            },
        } => {
            let content = content_bytes.unwrap_or(sdcard::DEFAULT_CONTENT);
            let (reference, template) = run::prepare_emulator(backupd, false, content, &say).await?;
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
        Cmd::Emulator {
            command: EmulatorCmd::Shell,
        } => {
            let argv = ssh_to_up()?;
            let mut cmd = std::process::Command::new(&argv[0]);
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                cmd.arg("-t");
            }
            let status = cmd.args(&argv[1..]).status().map_err(|e| InfraError::io("ssh", e))?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        Cmd::Emulator {
            command: EmulatorCmd::Logs { follow },
        } => {
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
        Cmd::Emulator {
            command: EmulatorCmd::Down,
        } => {
            let n = emulator::remove_all().await?;
            say(&format!("removed {n} emulator container(s)"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
