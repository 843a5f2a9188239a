//! The Pi-class stand-in: an arm64 NEXUS in qemu-system-aarch64 (`virt`, Cortex-A72, 2 vCPU,
//! 1 GiB), reached like hardware only over SSH and HTTPS forwarded to 127.0.0.1 ports. It boots
//! the image of `image::standin` with the SD-card template as its second disk; every boot gets
//! its own copies of both disks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ready::{wait_for_names, LIST_NAMES};
use crate::error::InfraError;
use crate::image::mmdebstrap::logged;
use crate::image::standin::{default_backupd, dir, StandinImage, StandinInputs, ROOT_LABEL};
use crate::transport::ssh::SshTarget;

/// How long a boot may take until SSH answers (software emulation; about 45 s seen).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Which emulator `emulator up` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// The container emulator, on this machine's architecture.
    Native,
    /// The Pi-class stand-in: arm64 in qemu-system-aarch64, SSH and HTTPS only.
    Arm64,
}

/// Picks a free TCP port on 127.0.0.1 (qemu binds it a moment later).
fn free_port() -> Result<u16, InfraError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| InfraError::io("cannot find a free port on 127.0.0.1", e))
}

/// A running stand-in; qemu is stopped by its pid and the boot's disk copies removed on drop.
pub struct Standin {
    qemu: Child,
    pub ssh_port: u16,
    pub https_port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub console: PathBuf,
    pub boot_dir: PathBuf,
    /// Time from qemu's start until SSH answered and both D-Bus names were owned.
    pub ready_after: Duration,
}

impl Standin {
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.id()
    }

    /// `ssh://nexus@127.0.0.1:PORT`, the target for `nexus-hil run`.
    pub fn target(&self) -> String {
        format!("ssh://nexus@127.0.0.1:{}", self.ssh_port)
    }

    fn ssh(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.ssh_port,
            key: self.key.clone(),
            known_hosts: self.known_hosts.clone(),
        }
    }

    /// Boots `image` with a copy of the SD-card template; returns once SSH answers and the
    /// backup daemon owns its names.
    pub async fn boot(
        image: &StandinImage,
        sdcard_template: &Path,
        key: &Path,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, InfraError> {
        remove_stale_boots();
        let boot_dir = dir().join(format!("boot-{}", std::process::id()));
        std::fs::create_dir_all(&boot_dir).map_err(|e| InfraError::io(boot_dir.display(), e))?;
        let overlay = boot_dir.join("root.qcow2");
        let sdcard = boot_dir.join("sdcard.img");
        let console = boot_dir.join("console.log");
        let _ = std::fs::remove_file(boot_dir.join("known_hosts"));
        logged(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&image.root)
                .arg(&overlay),
            &boot_dir.join("qemu-img.log"),
            InfraError::Emulator,
        )?;
        crate::image::sdcard::copy_for(sdcard_template, &sdcard)?;
        let (ssh_port, https_port) = (free_port()?, free_port()?);
        // Each boot makes a new HTTPS CA; a pin left from an earlier device on this port is stale.
        let _ = std::fs::remove_file(super::keys::pin_path(None, "127.0.0.1", https_port));
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-nographic", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .arg("-append")
            .arg(format!("root=LABEL={ROOT_LABEL} rw console=ttyAMA0 panic=-1"))
            .arg("-drive")
            .arg(format!("file={},if=none,id=root,format=qcow2", overlay.display()))
            .args(["-device", "virtio-blk-pci,drive=root"])
            .arg("-drive")
            .arg(format!("file={},if=none,id=sdcard,format=raw", sdcard.display()))
            .args(["-device", "virtio-blk-pci,drive=sdcard"])
            // The only way in: SSH and HTTPS on loopback; restrict=on cuts the guest off from
            // everything else.
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-no-reboot")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(boot_dir.join("qemu.log")).map_err(|e| InfraError::io(boot_dir.display(), e))?,
            );
        // qemu goes when this process goes, even when it is killed. The death signal follows
        // the spawning thread: this runs on the runtime's main or worker threads, which live
        // as long as the process (never on a blocking-pool thread, which may end early).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let start = Instant::now();
        let qemu = cmd.spawn().map_err(|e| {
            InfraError::Emulator(format!(
                "cannot run qemu-system-aarch64: {e}; install qemu-system-arm (ci/standin does)"
            ))
        })?;
        let mut vm = Self {
            qemu,
            ssh_port,
            https_port,
            key: key.to_owned(),
            known_hosts: boot_dir.join("known_hosts"),
            console,
            boot_dir,
            ready_after: Duration::ZERO,
        };
        say(&format!(
            "booting the arm64 stand-in (qemu pid {}; console: {})",
            vm.qemu_pid(),
            vm.console.display()
        ));
        vm.wait_ready(start).await?;
        vm.ready_after = start.elapsed();
        Ok(vm)
    }

    fn exited(&mut self) -> Option<String> {
        match self.qemu.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let qemu = std::fs::read_to_string(self.boot_dir.join("qemu.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        format!("{}{}", qemu, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    async fn wait_ready(&mut self, start: Instant) -> Result<(), InfraError> {
        let ssh = self.ssh();
        loop {
            if let Some(status) = self.exited() {
                return Err(InfraError::Emulator(format!(
                    "qemu ended ({status}) before SSH answered; its log and the console's end:\n{}",
                    self.console_tail(30)
                )));
            }
            if let Ok(o) = ssh.run("nexus", "true", None, Duration::from_secs(20)).await {
                if o.code == Some(0) {
                    break;
                }
            }
            if start.elapsed() > BOOT_TIMEOUT {
                return Err(InfraError::Emulator(format!(
                    "SSH on 127.0.0.1:{} did not answer within {:?}; the console's end ({}):\n{}",
                    self.ssh_port,
                    BOOT_TIMEOUT,
                    self.console.display(),
                    self.console_tail(30)
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let state = ssh
            .run(
                "nexus",
                "systemctl is-system-running --wait",
                None,
                Duration::from_secs(180),
            )
            .await
            .map(|o| o.stdout.trim().to_string())
            .unwrap_or_else(|e| e);
        if state != "running" {
            let failed = ssh
                .run(
                    "nexus",
                    "systemctl --failed --no-legend --no-pager",
                    None,
                    Duration::from_secs(30),
                )
                .await
                .map(|o| o.stdout)
                .unwrap_or_else(|e| e);
            tracing::warn!("the stand-in's systemd says {state:?}; failed units:\n{failed}");
            eprintln!("nexus-hil: the stand-in's systemd says {state:?}; failed units:\n{failed}");
        }
        let listed = wait_for_names(start + BOOT_TIMEOUT, Duration::from_secs(1), || async {
            ssh.run("nexus", LIST_NAMES, None, Duration::from_secs(30))
                .await
                .map(|o| o.stdout)
                .unwrap_or_default()
        })
        .await;
        if listed {
            return Ok(());
        }
        let log = ssh
            .run(
                "nexus",
                "sudo journalctl -u nexus-backupd --no-pager -n 40",
                None,
                Duration::from_secs(30),
            )
            .await
            .map(|o| o.stdout)
            .unwrap_or_else(|e| e);
        Err(InfraError::Emulator(format!(
            "nexus-backupd did not take its D-Bus names on the stand-in; its journal:\n{log}"
        )))
    }

    /// Stops qemu (SIGTERM to its pid, SIGKILL after 10 s) and removes the boot's disk copies;
    /// the console log stays in the boot folder.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            // SAFETY: kill on the pid of our own child, which has not been reaped yet.
            unsafe {
                libc::kill(self.qemu.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.exited().is_none() {
                let _ = self.qemu.kill();
                let _ = self.qemu.wait();
            }
        }
        for f in ["root.qcow2", "sdcard.img"] {
            let _ = std::fs::remove_file(self.boot_dir.join(f));
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes boot folders whose `nexus-hil` process is gone (killed before it could clean up).
fn remove_stale_boots() {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("boot-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Where `emulator up --arch arm64` says how to reach the stand-in it keeps running, as shell
/// assignments (ci/standin sources it).
pub fn up_env() -> PathBuf {
    dir().join("up.env")
}

/// The stand-in's SD-card content: 64 MiB. qemu's user network serves HTTPS at about 5 MB/s, so
/// the container's 256 MiB would make one download outlast the scenarios' 60 s step timeouts.
pub const DEFAULT_CONTENT: u64 = 64 * 1024 * 1024;

/// `nexus-hil emulator up --arch arm64`: builds what is missing, boots, prints how to reach the
/// stand-in, and keeps it up until Ctrl-C or SIGTERM.
pub async fn up(
    backupd: Option<PathBuf>,
    content: u64,
    force: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), InfraError> {
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    let key = crate::transport::ssh::make_key(&dir).await?;
    let backupd = backupd.unwrap_or_else(default_backupd);
    let inputs = StandinInputs::collect(&backupd, &key.with_extension("pub"))?;
    let image = crate::image::standin::ensure(inputs, force, say).await?;
    let template = {
        let lock = tokio::task::spawn_blocking(crate::image::BuildLock::take)
            .await
            .map_err(|e| InfraError::SdCard(e.to_string()))??;
        let t = tokio::task::spawn_blocking(move || {
            crate::image::sdcard::template(content, |m| eprintln!("nexus-hil: {m}"))
        })
        .await
        .map_err(|e| InfraError::SdCard(e.to_string()))??;
        drop(lock);
        t
    };
    let mut vm = Standin::boot(&image, &template, &key, say).await?;
    let target = vm.target();
    println!(
        "arm64 stand-in ready in {:.1} s (qemu pid {})\n  target:  {target}  --https-port {}  --key {}\n  ssh -i {} -p {} nexus@127.0.0.1\n  https://127.0.0.1:{}/noreya-nexus/certificates/ca.pem\n  console: {}\n  suite:   nexus-hil run --target {target} --https-port {} --key {} --filter portable scenarios\nCtrl-C stops it.",
        vm.ready_after.as_secs_f64(),
        vm.qemu_pid(),
        vm.https_port,
        key.display(),
        key.display(),
        vm.ssh_port,
        vm.https_port,
        vm.console.display(),
        vm.https_port,
        key.display(),
    );
    let env = format!(
        "UP_PID={}\nQEMU_PID={}\nTARGET={target}\nSSH_PORT={}\nHTTPS_PORT={}\nKEY={}\nKNOWN_HOSTS={}\nCONSOLE={}\n",
        std::process::id(),
        vm.qemu_pid(),
        vm.ssh_port,
        vm.https_port,
        key.display(),
        vm.known_hosts.display(),
        vm.console.display()
    );
    std::fs::write(up_env(), env).map_err(|e| InfraError::io(up_env().display(), e))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| InfraError::io("cannot watch for SIGTERM", e))?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    let gone = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            _ = term.recv() => break None,
            _ = check.tick() => if let Some(status) = vm.exited() { break Some(status) },
        }
    };
    let _ = std::fs::remove_file(up_env());
    vm.stop();
    match gone {
        None => {
            say("stopped the stand-in");
            Ok(())
        }
        Some(status) => Err(InfraError::Emulator(format!(
            "qemu ended on its own ({status}); the console's end:\n{}",
            vm.console_tail(30)
        ))),
    }
}
