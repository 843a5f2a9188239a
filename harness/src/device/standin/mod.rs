//! The Pi-class stand-in: an arm64 NEXUS in qemu-system-aarch64 (`virt`, Cortex-A72, 2 vCPU,
//! 1 GiB), reached like hardware only over SSH and HTTPS forwarded to 127.0.0.1 ports. It boots
//! the image of `image::standin` with the SD-card template as its second disk; every start gets
//! its own copies of both disks. A start restores the machine state saved once per image, card
//! template and key ([`saved`]) instead of booting. The harness owns its power ([`power`]): a
//! cut kills qemu, and with the card's writes logged the card comes back as it was at its last
//! flush; the power-on after it boots for real. As a kind of device behind the one seam, with
//! `emulator up --arch arm64` and its power switch: [`kind`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ready::{both_names_owned, wait_for_names, LIST_NAMES};

mod io_error;
mod kind;
pub(crate) mod power;
mod qmp;
pub(crate) mod saved;

use crate::error::InfraError;
use crate::image::mmdebstrap::logged;
use crate::image::standin::{dir, StandinImage, ROOT_LABEL};
use crate::transport::ssh::SshTarget;
pub use kind::{device, prepare, StandinKind, StandinParts};

/// How long a boot may take until SSH answers (software emulation; about 45 s seen).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What says a stand-in is ready, in one SSH login: systemd's state once it is done starting
/// (first line), then the names owned on the system bus.
pub(crate) fn ready_check() -> String {
    format!("systemctl is-system-running --wait; {LIST_NAMES}")
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
    qemu: Mutex<Option<Child>>,
    pub ssh_port: u16,
    pub https_port: u16,
    /// The serial console, offered on 127.0.0.1 as a raw TCP server as a bench's ser2net offers
    /// a board's: what a `[device.console]` with `tcp` reads. qemu does not wait for a reader.
    pub console_port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// qemu's own log of the console, appended to on every power-on, reader or not.
    pub console: PathBuf,
    pub boot_dir: PathBuf,
    /// Time from qemu's start until SSH answered and both D-Bus names were owned.
    pub ready_after: Duration,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The SD-card image the first boot's card was copied from (a new card is a fresh copy).
    template: PathBuf,
    /// Whether the SD card's writes are logged (`blklogwrites`): a power cut then keeps only
    /// what the guest had flushed.
    log_writes: bool,
    /// Power-ons so far (the first boot is 1).
    power_ons: AtomicU32,
    /// qemu's QMP socket (a short path: unix socket paths end at 108 bytes).
    qmp: PathBuf,
    /// Where its SSH logins stay open for the next command (made at the first power-on, mode
    /// 0700, removed at the stop): see [`SshTarget::multiplex`].
    ssh_mux: PathBuf,
    /// The saved state this stand-in's disks are built on (held in use while it lives).
    saved: Option<saved::SavedState>,
    /// Whether the next power-on restores the saved state (only the first does).
    restore: std::sync::atomic::AtomicBool,
}

/// How a stand-in is started.
pub struct StandinSpec<'a> {
    pub image: &'a StandinImage,
    pub sdcard_template: &'a Path,
    pub key: &'a Path,
    /// Where its disks, write logs and console go (default: a folder of its own in the cache).
    pub boot_dir: Option<PathBuf>,
    /// Log the SD card's writes, so a power cut loses what was not flushed.
    pub log_writes: bool,
}

impl Standin {
    pub fn qemu_pid(&self) -> u32 {
        self.child().as_ref().map(Child::id).unwrap_or(0)
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.qemu.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `ssh://nexus@127.0.0.1:PORT`, the target for `nexus-hil run`.
    pub fn target(&self) -> String {
        format!("ssh://nexus@127.0.0.1:{}", self.ssh_port)
    }

    pub(super) fn ssh(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.ssh_port,
            key: self.key.clone(),
            known_hosts: self.known_hosts.clone(),
            multiplex: Some(self.ssh_mux.clone()),
        }
    }

    /// The SD card as the guest sees it.
    pub fn sdcard(&self) -> PathBuf {
        self.boot_dir.join("sdcard.img")
    }

    /// Starts a stand-in as `spec` says, from the saved machine state (saved first when there
    /// is none for these inputs; booted instead when that fails or [`saved::COLD_ENV`] is 1);
    /// returns once it is ready.
    pub async fn start(spec: StandinSpec<'_>, say: &(dyn Fn(&str) + Sync)) -> Result<Self, InfraError> {
        remove_stale_boots();
        let saved = if saved::enabled() {
            match saved::ensure(&spec, say).await {
                Ok(s) => Some(s),
                Err(e) => {
                    say(&format!("cannot use a saved machine state, booting instead: {e}"));
                    None
                }
            }
        } else {
            None
        };
        Self::launch(spec, saved, say).await
    }

    /// The stand-in `spec` describes, not yet powered on.
    fn new(spec: &StandinSpec<'_>, boot_dir: PathBuf, ports: (u16, u16, u16)) -> Self {
        static QMP: AtomicU32 = AtomicU32::new(0);
        let n = QMP.fetch_add(1, Ordering::SeqCst);
        let qmp = std::env::temp_dir().join(format!("nexus-hil-qmp-{}-{n}.sock", std::process::id()));
        let ssh_mux = std::env::temp_dir().join(format!("nexus-hil-ssh-{}-{n}", std::process::id()));
        Self {
            qemu: Mutex::new(None),
            ssh_port: ports.0,
            https_port: ports.1,
            console_port: ports.2,
            key: spec.key.to_owned(),
            known_hosts: boot_dir.join("known_hosts"),
            console: boot_dir.join("console.log"),
            boot_dir,
            ready_after: Duration::ZERO,
            kernel: spec.image.kernel.clone(),
            initrd: spec.image.initrd.clone(),
            template: spec.sdcard_template.to_owned(),
            log_writes: spec.log_writes,
            power_ons: AtomicU32::new(0),
            qmp,
            ssh_mux,
            saved: None,
            restore: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// qemu's command line for `spec` with its ports and paths as placeholders: what a saved
    /// machine state is only valid for.
    fn shape(spec: &StandinSpec<'_>) -> String {
        let mut vm = Self::new(spec, PathBuf::from("/BOOT"), (1, 2, 3));
        vm.qmp = PathBuf::from("/QMP");
        vm.log_writes = true;
        let cmd = vm.command();
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        args.join(" ")
    }

    /// Starts a stand-in on copies of the saved state's disks and restores it, or (`saved`
    /// `None`) on copies of the image and the card template and boots it.
    async fn launch(
        spec: StandinSpec<'_>,
        saved: Option<saved::SavedState>,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, InfraError> {
        let boot_dir = spec
            .boot_dir
            .clone()
            .unwrap_or_else(|| dir().join(format!("boot-{}", std::process::id())));
        std::fs::create_dir_all(&boot_dir).map_err(|e| InfraError::io(boot_dir.display(), e))?;
        let _ = std::fs::remove_file(boot_dir.join("known_hosts"));
        let (base, format, card) = match &saved {
            Some(s) => (s.root(), "qcow2", s.card()),
            None => (spec.image.root.clone(), "raw", spec.sdcard_template.to_owned()),
        };
        let root = boot_dir.join("root.qcow2");
        let _ = std::fs::remove_file(&root);
        logged(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
                .arg(&base)
                .arg(&root),
            &boot_dir.join("qemu-img.log"),
            InfraError::Emulator,
        )?;
        let _ = std::fs::remove_file(boot_dir.join("sdcard.img"));
        crate::image::sdcard::copy_for(&card, &boot_dir.join("sdcard.img"))?;
        let ports = (free_port()?, free_port()?, free_port()?);
        // Each boot makes a new HTTPS CA; a pin left from an earlier device on this port is stale.
        let _ = std::fs::remove_file(super::keys::pin_path(None, "127.0.0.1", ports.1));
        let mut vm = Self::new(&spec, boot_dir, ports);
        vm.restore = std::sync::atomic::AtomicBool::new(saved.is_some());
        vm.saved = saved;
        vm.ready_after = vm.power_on(say).await?;
        Ok(vm)
    }

    /// The qemu command line: the SD card behind `blklogwrites` when its writes are logged (its
    /// flushes then are the guest's only durability points) under a raw node whose child can be
    /// switched to a failing one, the console on a TCP port and appended to a file.
    fn command(&self) -> Command {
        let dir = &self.boot_dir;
        let (ssh_port, https_port) = (self.ssh_port, self.https_port);
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-nographic", "-monitor", "none"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=console,host=127.0.0.1,port={},server=on,wait=off,logfile={},logappend=on",
                self.console_port,
                self.console.display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            // quiet: only warnings, errors and the login prompt reach the emulated serial
            // console (which the bench test reads); the journal has the boot's messages.
            .arg(format!("root=LABEL={ROOT_LABEL} rw console=ttyAMA0 panic=-1 quiet"))
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=root,format=qcow2",
                dir.join("root.qcow2").display()
            ));
        cmd.args(["-device", "virtio-blk-pci,drive=root"]);
        if self.log_writes {
            // One node each, so that `blockdev-reopen` of the top one (raw, the guest's disk)
            // can put a failing node between it and the log (io_error.rs) and take it out again.
            cmd.arg("-blockdev")
                .arg(format!(
                    "driver=file,node-name=card-file,filename={}",
                    self.sdcard().display()
                ))
                .arg("-blockdev")
                .arg(format!(
                    "driver=file,node-name=card-log-file,filename={}",
                    dir.join("sdcard.log").display()
                ))
                .arg("-blockdev")
                .arg(format!(
                    "driver=blklogwrites,node-name={},file=card-file,log=card-log-file,log-super-update-interval=1",
                    io_error::LOGGED
                ))
                .arg("-blockdev")
                .arg(format!(
                    "driver=raw,node-name={},file={}",
                    io_error::TOP,
                    io_error::LOGGED
                ));
        } else {
            cmd.arg("-drive")
                .arg(format!("file={},if=none,id=sdcard,format=raw", self.sdcard().display()));
        }
        cmd.args(["-device", "virtio-blk-pci,drive=sdcard"])
            // The only way in: SSH and HTTPS on loopback; restrict=on cuts the guest off from
            // everything else.
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-no-reboot")
            // How the machine state is saved and restored (saved.rs).
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", self.qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// Starts qemu and waits until the device is ready; returns how long that took. With logged
    /// writes the card as it is now is kept as `sdcard.base` (the log's starting point) and the
    /// log starts empty. The first power-on of a stand-in on a saved state restores it (then
    /// sets its clock and reseeds its random state); every other one boots.
    pub(super) async fn power_on(&self, say: &(dyn Fn(&str) + Sync)) -> Result<Duration, InfraError> {
        let n = self.power_ons.fetch_add(1, Ordering::SeqCst) + 1;
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&self.ssh_mux) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(InfraError::io(self.ssh_mux.display(), e));
            }
        }
        if self.log_writes {
            let base = self.boot_dir.join("sdcard.base");
            let _ = std::fs::remove_file(&base);
            crate::crash::log::sparse_copy(&self.sdcard(), &base).map_err(|e| InfraError::io(base.display(), e))?;
            // QEMU opens the log, it does not make it; an empty one starts a new log.
            let log = self.boot_dir.join("sdcard.log");
            std::fs::File::create(&log).map_err(|e| InfraError::io(log.display(), e))?;
        }
        let restore = self.restore.swap(false, Ordering::SeqCst);
        let mut cmd = self.command();
        if restore {
            cmd.args(["-incoming", "defer"]);
        }
        let _ = std::fs::remove_file(&self.qmp);
        let qemu_log = self.boot_dir.join("qemu.log");
        cmd.stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&qemu_log)
                .map_err(|e| InfraError::io(qemu_log.display(), e))?,
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
        let child = cmd.spawn().map_err(|e| {
            InfraError::Emulator(format!(
                "cannot run qemu-system-aarch64: {e}; install qemu-system-arm (ci/standin does)"
            ))
        })?;
        let how = match (&self.saved, restore, n) {
            (Some(s), true, _) => format!("from the saved state {}", s.hash),
            (_, _, 1) => "first boot".to_string(),
            _ => format!("power-on {n}, a boot"),
        };
        say(&format!(
            "powering on the arm64 stand-in ({how}; qemu pid {}; console: tcp 127.0.0.1:{} (log: {}))",
            child.id(),
            self.console_port,
            self.console.display()
        ));
        *self.child() = Some(child);
        let mut steps = String::new();
        if let (Some(s), true) = (&self.saved, restore) {
            self.restore_from(s).await?;
            let loaded = start.elapsed();
            // The restored sshd answers at once; each login takes seconds of the emulated
            // CPU, so one login sets the clock and random state and asks for readiness.
            let listing = saved::wake(self).await?;
            let woke = start.elapsed();
            self.judge_ready(start, &listing).await?;
            steps = format!(
                " (state loaded in {:.1} s; clock and random state set and readiness read {:.1} s later)",
                loaded.as_secs_f64(),
                (woke - loaded).as_secs_f64()
            );
        } else {
            self.wait_ready(start).await?;
        }
        let took = start.elapsed();
        match (&self.saved, restore) {
            (Some(s), true) => say(&format!(
                "the arm64 stand-in started from the saved state {}: ready in {:.1} s{steps}",
                s.hash,
                took.as_secs_f64()
            )),
            _ => say(&format!(
                "the arm64 stand-in booted: ready in {:.1} s",
                took.as_secs_f64()
            )),
        }
        Ok(took)
    }

    /// Loads the saved machine state into the qemu just started with `-incoming defer`, and
    /// lets it run.
    async fn restore_from(&self, s: &saved::SavedState) -> Result<(), InfraError> {
        let failed = |e: InfraError| {
            InfraError::Emulator(format!(
                "restoring the saved state {} ({}): {e}; qemu's log and the console's end:\n{}",
                s.hash,
                s.dir.display(),
                self.console_tail(20)
            ))
        };
        let mut qmp = qmp::Qmp::connect(&self.qmp, Duration::from_secs(30))
            .await
            .map_err(failed)?;
        let uri = saved::migration_uri(&s.machine(), false);
        qmp.execute("migrate-incoming", serde_json::json!({ "uri": uri }))
            .await
            .map_err(failed)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.exited() {
                return Err(failed(InfraError::Emulator(format!("qemu ended ({status})"))));
            }
            let status = qmp.status().await.map_err(failed)?;
            match status.as_str() {
                "running" => return Ok(()),
                "inmigrate" if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                "inmigrate" => return Err(failed(InfraError::Emulator("still loading after 120 s".into()))),
                // Saved stopped, so it comes back paused.
                _ => {
                    qmp.execute("cont", serde_json::json!({})).await.map_err(failed)?;
                }
            }
        }
    }

    /// Saves the whole machine (RAM and devices) to `to` and ends qemu: `stop`, a migration to
    /// the file, `quit`. The disks then are exactly as the state expects them.
    async fn save(&self, to: &Path) -> Result<(), InfraError> {
        let mut qmp = qmp::Qmp::connect(&self.qmp, Duration::from_secs(10)).await?;
        qmp.execute("stop", serde_json::json!({})).await?;
        let uri = saved::migration_uri(to, true);
        qmp.execute("migrate", serde_json::json!({ "uri": uri })).await?;
        qmp.wait_migrated(Duration::from_secs(300)).await?;
        // qemu may close the socket before it answers.
        let _ = qmp.execute("quit", serde_json::json!({})).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.exited().is_none() {
            if Instant::now() > deadline {
                return Err(InfraError::Emulator("qemu did not quit within 30 s of saving".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.child().take();
        Ok(())
    }

    /// Why qemu is not running, if it is not.
    pub fn exited(&self) -> Option<String> {
        match self.child().as_mut().map(Child::try_wait) {
            None => Some("powered off".into()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(_) => None,
        }
    }

    /// The end of qemu's log and of the console, for errors.
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let qemu = std::fs::read_to_string(self.boot_dir.join("qemu.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        format!("{}{}", qemu, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    /// Waits until SSH answers, systemd is done starting and both D-Bus names are owned. Each
    /// SSH login costs seconds under emulation: the first one that gets in asks for the state
    /// and the names ([`ready_check`]).
    async fn wait_ready(&self, start: Instant) -> Result<(), InfraError> {
        let ssh = self.ssh();
        let listing = loop {
            if let Some(status) = self.exited() {
                return Err(InfraError::Emulator(format!(
                    "qemu ended ({status}) before SSH answered; its log and the console's end:\n{}",
                    self.console_tail(30)
                )));
            }
            // 255 is ssh's own failure (not in yet); any other status is the check's.
            match ssh.run("nexus", &ready_check(), None, Duration::from_secs(180)).await {
                Ok(o) if o.code.is_some_and(|c| c != 255) => break o.stdout,
                _ => {}
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
        };
        self.judge_ready(start, &listing).await
    }

    /// Reads [`ready_check`]'s output: systemd's state (the failed units are shown when it is
    /// not `running`) and the names, asked again until both are owned or the boot's time is up.
    async fn judge_ready(&self, start: Instant, listing: &str) -> Result<(), InfraError> {
        let ssh = self.ssh();
        let (state, names) = listing.split_once('\n').unwrap_or((listing, ""));
        let state = state.trim();
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
                .unwrap_or_else(|e| e.to_string());
            tracing::warn!("the stand-in's systemd says {state:?}; failed units:\n{failed}");
            eprintln!("nexus-hil: the stand-in's systemd says {state:?}; failed units:\n{failed}");
        }
        let listed = both_names_owned(names)
            || wait_for_names(start + BOOT_TIMEOUT, Duration::from_secs(1), || async {
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
            .unwrap_or_else(|e| e.to_string());
        Err(InfraError::Emulator(format!(
            "nexus-backupd did not take its D-Bus names on the stand-in; its journal:\n{log}"
        )))
    }

    /// Stops qemu (SIGTERM to its pid, SIGKILL after 10 s) and removes the boot's disk copies;
    /// the console log stays in the boot folder.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child().take() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill on the pid of our own child, which has not been reaped yet.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.qmp);
        // Its SSH masters ended with qemu (their connections closed); their sockets go too.
        let _ = std::fs::remove_dir_all(&self.ssh_mux);
        // Never powered on (the shape of a command line only): nothing of its own to remove.
        if self.power_ons.load(Ordering::SeqCst) == 0 {
            return;
        }
        for f in ["root.qcow2", "sdcard.img", "sdcard.base", "sdcard.log"] {
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
