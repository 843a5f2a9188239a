//! The Pi-class stand-in: an arm64 NEXUS in qemu-system-aarch64 (`virt`, Cortex-A72, 2 vCPU,
//! 1 GiB), reached like hardware only over SSH and HTTPS forwarded to 127.0.0.1 ports. Its root
//! file system is the emulator image (the same packages and `images/` files) made for arm64 with
//! mmdebstrap, plus what `images/standin/` adds (kernel, fstab, networkd, the admin key); the
//! SD-card template is its second disk. Rebuilt only when an input changes; every boot gets
//! its own copies of both disks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::InfraError;
use crate::image::{self, FILES, SUITE};
use crate::ssh::SshTarget;

/// The Rust target the stand-in's binaries are built for.
pub const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";
/// Label of the stand-in's root file system (`root=LABEL=...`, and its fstab).
const ROOT_LABEL: &str = "nexus-standin";
/// Size of the root file system image (sparse): room for the journal and the scenarios' users.
const ROOT_BYTES: u64 = 3 << 30;
/// Bumped when the way the image is made changes, so old images are remade.
const GENERATOR: u32 = 1;
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

const STANDIN_PACKAGES: &str = include_str!("../../images/standin/packages.txt");

/// Files of `images/standin/` and where they go, on top of [`FILES`].
const STANDIN_FILES: [(&str, &[u8], u32); 3] = [
    (
        "usr/local/lib/nexus-hil/standin.sh",
        include_bytes!("../../images/standin/customize.sh"),
        0o755,
    ),
    (
        "etc/fstab",
        include_bytes!("../../images/standin/rootfs/etc/fstab"),
        0o644,
    ),
    (
        "etc/systemd/network/20-wired.network",
        include_bytes!("../../images/standin/rootfs/etc/systemd/network/20-wired.network"),
        0o644,
    ),
];

/// Where the stand-in keeps its key, images and boots.
pub fn dir() -> PathBuf {
    image::cache_dir().join("standin-arm64")
}

/// The arm64 daemon binary: `<target dir>/aarch64-unknown-linux-gnu/release/nexus-backupd`
/// beside this executable's `<target dir>/release/`.
pub fn default_backupd() -> PathBuf {
    let native = image::default_backupd();
    let profile = native.parent().and_then(Path::file_name).map(PathBuf::from);
    match (native.parent().and_then(Path::parent), profile) {
        (Some(target), Some(profile)) => target.join(RUST_TARGET).join(profile).join("nexus-backupd"),
        _ => PathBuf::from("nexus-backupd"),
    }
}

fn packages() -> Vec<&'static str> {
    let emulator = std::str::from_utf8(FILES[0].1).unwrap_or_default();
    emulator
        .lines()
        .chain(STANDIN_PACKAGES.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Reads `path`, which must be an arm64 (aarch64) ELF executable.
fn read_arm64_binary(path: &Path) -> Result<Vec<u8>, InfraError> {
    let how = format!(
        "build it with `cargo build --release -p nexus-emulator --bins --target {RUST_TARGET}` (ci/standin does) or pass --backupd"
    );
    let bytes =
        std::fs::read(path).map_err(|e| InfraError::Image(format!("cannot read {}: {e}; {how}", path.display())))?;
    // ELF magic, 64-bit, and e_machine 183 (EM_AARCH64), little-endian.
    let arm64 = bytes.len() > 20 && bytes[..5] == *b"\x7fELF\x02" && bytes[18..20] == [0xb7, 0x00];
    if !arm64 {
        return Err(InfraError::Image(format!(
            "{} is not an arm64 executable; {how}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// What the stand-in's root file system is made of; its hash names it.
pub struct StandinInputs {
    backupd: Vec<u8>,
    automation: Vec<u8>,
    pubkey: Vec<u8>,
    mirrors: Vec<String>,
    pub tag: String,
}

impl StandinInputs {
    pub fn collect(backupd: &Path, pubkey: &Path) -> Result<Self, InfraError> {
        let daemon = read_arm64_binary(backupd)?;
        let automation = read_arm64_binary(&image::automation_next_to(backupd))?;
        let key = std::fs::read(pubkey).map_err(|e| InfraError::io(pubkey.display(), e))?;
        let mirrors = image::host_mirrors(SUITE)?;
        let mut h = Sha256::new();
        h.update(format!("nexus-standin arm64 v{GENERATOR}\n").as_bytes());
        for (dest, bytes, mode) in FILES.iter().chain(STANDIN_FILES.iter()) {
            h.update(format!("{dest} {mode:o} {}\n", bytes.len()).as_bytes());
            h.update(bytes);
        }
        h.update(STANDIN_PACKAGES.as_bytes());
        for part in [&daemon, &automation, &key] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for m in &mirrors {
            h.update(m.as_bytes());
        }
        let tag = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            backupd: daemon,
            automation,
            pubkey: key,
            mirrors,
            tag,
        })
    }
}

/// A built stand-in image: root file system, kernel and initramfs.
pub struct StandinImage {
    pub root: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl StandinImage {
    fn at(dir: &Path) -> Self {
        Self {
            root: dir.join("root.img"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        }
    }
}

/// Makes sure the image for these inputs exists, building it when missing or `force`.
pub async fn ensure(
    inputs: StandinInputs,
    force: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<StandinImage, InfraError> {
    let lock = tokio::task::spawn_blocking(|| image::BuildLock::take_in(&dir()))
        .await
        .map_err(|e| InfraError::Image(e.to_string()))??;
    let done = dir().join(format!("image-{}", inputs.tag));
    let image = StandinImage::at(&done);
    if !force && image.root.exists() && image.kernel.exists() && image.initrd.exists() {
        say(&format!("stand-in image {} is up to date", inputs.tag));
        return Ok(image);
    }
    enable_binfmt()?;
    let start = Instant::now();
    let work = dir().join(format!(".image-{}.partial", inputs.tag));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| InfraError::io(work.display(), e))?;
    let log = work.join("build.log");
    say(&format!(
        "building the arm64 stand-in image {} with mmdebstrap, kernel included (several minutes; log: {})",
        inputs.tag,
        log.display()
    ));
    let w = work.clone();
    let job = tokio::task::spawn_blocking(move || build(&w, &inputs));
    // An emulator container of an image made before its binfmt units were masked runs
    // systemd-binfmt, which clears the host's handlers (privileged containers share
    // binfmt_misc); the arm64 maintainer scripts would fail from then on, so the entry is put
    // back at once.
    let keep_binfmt = || {
        if !binfmt_enabled() {
            tracing::warn!("the binfmt entry qemu-aarch64 went away during the build; enabling it again");
            let _ = enable_binfmt();
        }
    };
    with_progress("mmdebstrap (arm64)", &log, job, keep_binfmt)
        .await
        .map_err(|e| InfraError::Image(e.to_string()))??;
    // Older images of the stand-in are of no more use; they take a few GiB each.
    if let Ok(entries) = std::fs::read_dir(dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("image-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::rename(&work, &done).map_err(|e| InfraError::io(done.display(), e))?;
    say(&format!(
        "built the stand-in image {} in {:.0} s",
        done.display(),
        start.elapsed().as_secs_f64()
    ));
    drop(lock);
    Ok(image)
}

/// Shows a spinner with the build log's last line while `job` runs (a line every 30 s when
/// stderr is not a terminal).
async fn with_progress<T>(
    label: &str,
    log: &Path,
    mut job: tokio::task::JoinHandle<T>,
    on_tick: impl Fn(),
) -> Result<T, tokio::task::JoinError> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = tick.tick() => {
                on_tick();
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let line: String = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(100).collect();
                if bar.is_hidden() {
                    if last_print.elapsed() >= Duration::from_secs(30) {
                        eprintln!("nexus-hil: {label}: {:.0} s: {line}", start.elapsed().as_secs_f64());
                        last_print = Instant::now();
                    }
                } else {
                    bar.set_message(format!("{label}: {line}"));
                    bar.tick();
                }
            }
        }
    };
    bar.finish_and_clear();
    result
}

fn binfmt_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_ok_and(|t| t.starts_with("enabled"))
}

/// Lets the host run arm64 programs (mmdebstrap's maintainer scripts) through qemu-user.
fn enable_binfmt() -> Result<(), InfraError> {
    let enabled = binfmt_enabled;
    if enabled() {
        return Ok(());
    }
    if !Path::new("/proc/sys/fs/binfmt_misc/status").exists() {
        let _ = Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
            .status();
    }
    let _ = Command::new("update-binfmts")
        .args(["--enable", "qemu-aarch64"])
        .stderr(Stdio::null())
        .status();
    if enabled() {
        Ok(())
    } else {
        Err(InfraError::Image(
            "the host cannot run arm64 programs: install qemu-user-static and binfmt-support, then as root \
             `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` and `update-binfmts --enable qemu-aarch64` \
             (ci/standin does)"
                .into(),
        ))
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InfraError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
    }
    std::fs::write(path, bytes).map_err(|e| InfraError::io(path.display(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| InfraError::io(path.display(), e))
}

/// Runs `cmd` with its output appended to `log`; on failure, the error (made by `wrap`) quotes
/// the log's end.
fn logged(cmd: &mut Command, log: &Path, wrap: fn(String) -> InfraError) -> Result<(), InfraError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| InfraError::io(log.display(), e))?;
    let err = file.try_clone().map_err(|e| InfraError::io(log.display(), e))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| {
            InfraError::Image(format!(
                "cannot run {program}: {e}; ci/standin installs what the stand-in needs"
            ))
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(wrap(format!(
        "{program} failed ({status}); last lines of {}:\n{}",
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// mmdebstrap into a folder, then the folder into an ext4 image; kernel and initramfs beside it.
fn build(work: &Path, inputs: &StandinInputs) -> Result<(), InfraError> {
    let stage = work.join("stage");
    for (dest, bytes, mode) in FILES.iter().chain(STANDIN_FILES.iter()) {
        write_file(&stage.join(dest), bytes, *mode)?;
    }
    write_file(&stage.join("usr/local/bin/nexus-backupd"), &inputs.backupd, 0o755)?;
    write_file(&stage.join("usr/local/bin/nexus-automation"), &inputs.automation, 0o755)?;
    write_file(
        &stage.join("usr/local/lib/nexus-hil/admin_authorized_keys"),
        &inputs.pubkey,
        0o644,
    )?;
    let log = work.join("build.log");
    let rootdir = work.join("rootdir");
    let result = (|| {
        logged(
            Command::new("mmdebstrap")
                .args([
                    "--variant=apt",
                    "--mode=root",
                    "--format=directory",
                    "--architectures=arm64",
                ])
                .arg(format!("--include={}", packages().join(",")))
                .arg("--aptopt=Acquire::Languages \"none\"")
                .arg("--dpkgopt=path-exclude=/usr/share/man/*")
                .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
                .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
                .arg(format!("--customize-hook=sync-in {} /", stage.display()))
                .arg("--customize-hook=chroot \"$1\" /bin/sh /usr/local/lib/nexus-hil/customize.sh")
                .arg("--customize-hook=chroot \"$1\" /bin/sh /usr/local/lib/nexus-hil/standin.sh")
                .arg(SUITE)
                .arg(&rootdir)
                .args(&inputs.mirrors),
            &log,
            InfraError::Image,
        )
        .map_err(|e| {
            // Seen here: the binfmt entry went away while mmdebstrap ran (something else on the
            // host re-registered binfmt handlers), and every arm64 maintainer script failed.
            if binfmt_enabled() {
                e
            } else {
                InfraError::Image(format!(
                    "{e}\nthe host's binfmt entry qemu-aarch64 is gone (removed while mmdebstrap ran?): run again"
                ))
            }
        })?;
        let image = StandinImage::at(work);
        for (prefix, dest) in [("vmlinuz-", &image.kernel), ("initrd.img-", &image.initrd)] {
            let boot = rootdir.join("boot");
            let found = std::fs::read_dir(&boot)
                .map_err(|e| InfraError::io(boot.display(), e))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
                .ok_or_else(|| {
                    InfraError::Image(format!(
                        "the stand-in's root file system has no /boot/{prefix}*: the kernel install failed; see {}",
                        log.display()
                    ))
                })?;
            std::fs::copy(&found, dest).map_err(|e| InfraError::io(found.display(), e))?;
        }
        logged(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", ROOT_LABEL, "-d"])
                .arg(&rootdir)
                .arg(&image.root)
                .arg(format!("{}k", ROOT_BYTES / 1024)),
            &log,
            InfraError::Image,
        )
    })();
    let _ = std::fs::remove_dir_all(&rootdir);
    let _ = std::fs::remove_dir_all(&stage);
    result
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
        crate::sdcard::copy_for(sdcard_template, &sdcard)?;
        let (ssh_port, https_port) = (free_port()?, free_port()?);
        // Each boot makes a new HTTPS CA; a pin left from an earlier device on this port is stale.
        let _ = std::fs::remove_file(crate::run::pin_path(None, "127.0.0.1", https_port));
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
        loop {
            let names = ssh
                .run(
                    "nexus",
                    "busctl --system list --no-legend --acquired",
                    None,
                    Duration::from_secs(30),
                )
                .await
                .map(|o| o.stdout)
                .unwrap_or_default();
            if names.contains("tech.noreya.Snapshot1") && names.contains("tech.noreya.Backup1") {
                return Ok(());
            }
            if start.elapsed() > BOOT_TIMEOUT {
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
                return Err(InfraError::Emulator(format!(
                    "nexus-backupd did not take its D-Bus names on the stand-in; its journal:\n{log}"
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
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
    let key = crate::ssh::make_key(&dir).await?;
    let backupd = backupd.unwrap_or_else(default_backupd);
    let inputs = StandinInputs::collect(&backupd, &key.with_extension("pub"))?;
    let image = ensure(inputs, force, say).await?;
    let template = {
        let lock = tokio::task::spawn_blocking(image::BuildLock::take)
            .await
            .map_err(|e| InfraError::SdCard(e.to_string()))??;
        let t = tokio::task::spawn_blocking(move || crate::sdcard::template(content, |m| eprintln!("nexus-hil: {m}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_gets_the_emulators_packages_and_a_kernel_toolchain() {
        let p = packages();
        for name in [
            "systemd-sysv",
            "openssh-server",
            "btrfs-progs",
            "python3-dbus",
            "initramfs-tools",
            "udev",
        ] {
            assert!(p.contains(&name), "{name} missing from {p:?}");
        }
        let script = std::str::from_utf8(STANDIN_FILES[0].1).unwrap();
        // The module list is cut before the kernel comes in, else the initramfs takes very long.
        let conf = script.find("MODULES=list").unwrap();
        assert!(conf < script.find("linux-image-arm64").unwrap());
    }

    #[test]
    fn fstab_mounts_the_sd_cards_btrfs_at_broot() {
        let fstab = std::str::from_utf8(STANDIN_FILES[1].1).unwrap();
        let line = fstab.lines().find(|l| l.contains(" /broot ")).unwrap();
        // sdcard.rs labels the btrfs partition so.
        assert!(line.starts_with("LABEL=nexus-root "), "{line}");
        assert!(fstab.contains(&format!("LABEL={ROOT_LABEL} ")));
    }
}
