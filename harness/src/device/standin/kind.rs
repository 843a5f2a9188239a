//! The arm64 stand-in as a kind of device (`--target standin`, `emulator up --arch arm64`): its
//! image and SD-card template made when their inputs changed, a fresh guest per device (its
//! card's writes logged, its boot folder in the scenario's), and one kept up for people whose
//! power `emulator power on|off` switches.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Standin, StandinSpec};
use crate::device::{Device, Error, Fresh, Kind, Parts, Pending, Prepare, Started};
use crate::error::InfraError;
use crate::image::standin::{dir, StandinImage};
use crate::transport::ssh::SshTarget;

/// The arm64 stand-in, registered in [`crate::device::KINDS`].
pub struct StandinKind;

impl Kind for StandinKind {
    fn name(&self) -> &'static str {
        "standin"
    }

    fn label(&self) -> &'static str {
        "standin (arm64, qemu)"
    }

    fn arch(&self) -> (&'static str, &'static str) {
        (
            "arm64",
            "The Pi-class stand-in: arm64 in qemu-system-aarch64, SSH and HTTPS only.",
        )
    }

    fn run_content(&self) -> u64 {
        DEFAULT_CONTENT
    }

    fn device_content(&self) -> u64 {
        DEFAULT_CONTENT
    }

    fn starting(&self) -> &'static str {
        "booting the stand-in"
    }

    /// The key is the one its image lets in (`how.key` is not used).
    fn prepare<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<Box<dyn Parts>, Error>> {
        Box::pin(async move {
            let parts: Box<dyn Parts> = Box::new(prepare(how.backupd, how.content, how.force, how.say).await?);
            Ok(parts)
        })
    }

    fn up<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<(), Error>> {
        Box::pin(async move { Ok(up(how.backupd, how.content, how.force, how.say).await?) })
    }

    fn power(&self, on: bool) -> Option<Pending<'static, Result<String, Error>>> {
        Some(Box::pin(async move {
            Ok(format!("the stand-in's power is {}", switch_power(on).await?))
        }))
    }
}

impl Parts for StandinParts {
    /// A guest whose card's writes are logged, its boot folder (disks, write logs, console) in
    /// `work`.
    fn start<'a>(&'a self, work: &'a Path, say: &'a (dyn Fn(&str) + Sync)) -> Pending<'a, Result<Fresh, Error>> {
        Box::pin(async move {
            let spec = StandinSpec {
                image: &self.image,
                sdcard_template: &self.template,
                key: &self.key,
                boot_dir: Some(work.join("standin")),
                log_writes: true,
            };
            let vm = Standin::start(spec, say).await?;
            let dev = device(&vm, &self.key, work);
            let started: Box<dyn Started> = Box::new(vm);
            Ok((dev, started))
        })
    }
}

impl Started for Standin {
    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// qemu stopped and the disk copies removed; the console's log stays.
    fn close(self: Box<Self>) -> Pending<'static, Result<(), Error>> {
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

/// What fresh stand-ins are booted from: the arm64 image (made when its inputs changed), the
/// SD-card template, and the key the image lets in.
pub struct StandinParts {
    pub image: StandinImage,
    pub template: PathBuf,
    pub key: PathBuf,
}

/// Makes sure the stand-in's image and SD-card template exist (`backupd`: the arm64 daemon,
/// default the cross build next to this executable's target folder).
pub async fn prepare(
    backupd: Option<PathBuf>,
    content: u64,
    force: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<StandinParts, InfraError> {
    use crate::image::standin::{default_backupd, ensure, StandinInputs};
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    let key = crate::transport::ssh::make_key(&dir).await?;
    let backupd = backupd.unwrap_or_else(default_backupd);
    let inputs = StandinInputs::collect(&backupd, &key.with_extension("pub"))?;
    let image = ensure(inputs, force, say).await?;
    let lock = tokio::task::spawn_blocking(crate::image::BuildLock::take)
        .await
        .map_err(|e| InfraError::SdCard(e.to_string()))??;
    let template =
        tokio::task::spawn_blocking(move || crate::image::sdcard::template(content, |m| eprintln!("nexus-hil: {m}")))
            .await
            .map_err(|e| InfraError::SdCard(e.to_string()))??;
    drop(lock);
    Ok(StandinParts { image, template, key })
}

/// The device a stand-in is, reached through its forwarded ports.
pub fn device(vm: &Standin, key: &Path, work: &Path) -> Device {
    use crate::transport::https::HttpsTarget;
    Device {
        ssh: SshTarget {
            host: "127.0.0.1".into(),
            port: vm.ssh_port,
            key: key.to_owned(),
            known_hosts: vm.known_hosts.clone(),
            multiplex: Some(vm.ssh_mux.clone()),
        },
        https: HttpsTarget {
            host: "127.0.0.1".into(),
            port: vm.https_port,
            pin: work.join("pinned-ca.pem"),
            token: None,
            ca_sha256: None,
        },
        admin: "nexus".into(),
        pubkey: std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default(),
        ui: crate::device::inventory::WebUi::emulator(),
    }
}

/// Where `emulator up --arch arm64` says how to reach the stand-in it keeps running, as shell
/// assignments (ci/standin sources it).
pub fn up_env() -> PathBuf {
    dir().join("up.env")
}

/// Where `emulator up --arch arm64` says whether its power is `on`, `off` or `booting`.
pub fn power_state() -> PathBuf {
    dir().join("power")
}

/// `nexus-hil emulator power on|off`: switches the power of the stand-in that `emulator up
/// --arch arm64` keeps (a signal to that process, named in its env file), and waits until it
/// took: off (qemu gone), or on (qemu started; the device then boots).
pub async fn switch_power(on: bool) -> Result<String, InfraError> {
    let env = std::fs::read_to_string(up_env()).map_err(|e| {
        InfraError::Emulator(format!(
            "no stand-in is up ({}: {e}); start one with `nexus-hil emulator up --arch arm64`",
            up_env().display()
        ))
    })?;
    let pid: i32 = env
        .lines()
        .find_map(|l| l.strip_prefix("UP_PID="))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| InfraError::Emulator(format!("{} names no UP_PID", up_env().display())))?;
    let sig = if on { libc::SIGUSR2 } else { libc::SIGUSR1 };
    // SAFETY: a plain signal to the process the env file names (`emulator up`, which handles it).
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(InfraError::Emulator(format!(
            "cannot signal `emulator up` (pid {pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(power_state()).unwrap_or_default();
        if (on && now != "off") || (!on && now == "off") {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(InfraError::Emulator(format!(
                "the stand-in's power is still {now:?} 30 s after asking for {}",
                if on { "on" } else { "off" }
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stand-in's SD-card content: 32 MiB, the functional suites' size, as on the emulator. Every
/// byte of it is encrypted, copied out and compared under TCG in each backup a scenario makes
/// (qemu's user network serves about 5 MB/s); at 64 MiB the power and failing-card scenarios took
/// 1,011 s at `-j 2` against 845 s at 32 MiB, for the same assertions. A scenario that needs more
/// asks for it (`card_content`).
pub const DEFAULT_CONTENT: u64 = 32 * 1024 * 1024;

/// `nexus-hil emulator up --arch arm64`: builds what is missing, boots, prints how to reach the
/// stand-in, and keeps it up until Ctrl-C or SIGTERM.
pub async fn up(
    backupd: Option<PathBuf>,
    content: u64,
    force: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), InfraError> {
    let parts = prepare(backupd, content, force, say).await?;
    let (image, template, key) = (parts.image, parts.template, parts.key);
    // The card's writes logged, so that a power cut from the bench's switch (below) loses
    // what the guest had not flushed, as a real card does.
    let mut vm = Standin::start(
        StandinSpec {
            image: &image,
            sdcard_template: &template,
            key: &key,
            boot_dir: None,
            log_writes: true,
        },
        say,
    )
    .await?;
    let target = vm.target();
    println!(
        "arm64 stand-in ready in {:.1} s (qemu pid {})\n  target:  {target}  --https-port {}  --key {}\n  ssh -i {} -p {} nexus@127.0.0.1\n  https://127.0.0.1:{}/noreya-nexus/certificates/ca.pem\n  console: tcp 127.0.0.1:{} (log: {})\n  suite:   nexus-hil run --target {target} --https-port {} --key {} --filter portable scenarios\nCtrl-C stops it.",
        vm.ready_after.as_secs_f64(),
        vm.qemu_pid(),
        vm.https_port,
        key.display(),
        key.display(),
        vm.ssh_port,
        vm.https_port,
        vm.console_port,
        vm.console.display(),
        vm.https_port,
        key.display(),
    );
    let env = format!(
        "UP_PID={}\nQEMU_PID={}\nTARGET={target}\nSSH_PORT={}\nHTTPS_PORT={}\nKEY={}\nKNOWN_HOSTS={}\nCONSOLE={}\nCONSOLE_PORT={}\nSDCARD={}\nSDCARD_TEMPLATE={}\n",
        std::process::id(),
        vm.qemu_pid(),
        vm.ssh_port,
        vm.https_port,
        key.display(),
        vm.known_hosts.display(),
        vm.console.display(),
        vm.console_port,
        vm.sdcard().display(),
        template.display()
    );
    std::fs::write(up_env(), env).map_err(|e| InfraError::io(up_env().display(), e))?;
    use tokio::signal::unix::{signal, SignalKind};
    let watch =
        |kind: SignalKind, name: &str| signal(kind).map_err(|e| InfraError::io(format!("cannot watch for {name}"), e));
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    // The bench's power switch (`nexus-hil emulator power off|on`): SIGUSR1 cuts the power
    // (SIGKILL of qemu, never a shutdown), SIGUSR2 powers it on again from the same disks.
    let mut power_off = watch(SignalKind::user_defined1(), "SIGUSR1")?;
    let mut power_on = watch(SignalKind::user_defined2(), "SIGUSR2")?;
    let state = |s: &str| {
        let _ = std::fs::write(power_state(), s);
    };
    state("on");
    let mut off = false;
    let mut last_on = Instant::now();
    let mut check = tokio::time::interval(Duration::from_secs(2));
    let gone = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break None,
            _ = term.recv() => break None,
            _ = power_off.recv() => {
                if !off {
                    let _ = vm.power_cut(true).await;
                    off = true;
                    state("off");
                    say("power off (qemu killed)");
                }
            }
            _ = power_on.recv() => {
                if off {
                    state("booting");
                    off = false;
                    match vm.power_on(say).await {
                        Ok(t) => {
                            say(&format!("powered on; ready in {:.1} s", t.as_secs_f64()));
                            state("on");
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                    last_on = Instant::now();
                }
            }
            _ = check.tick() => if !off {
                // qemu runs with -no-reboot: a guest that reboots (or halts) ends it. A board
                // starts again on its own; so does this one, unless it never got going.
                if let Some(status) = vm.exited() {
                    if last_on.elapsed() < Duration::from_secs(20) {
                        break Some(status);
                    }
                    say(&format!("qemu ended ({status}): the guest rebooted; powering on again"));
                    state("booting");
                    match vm.power_on(say).await {
                        Ok(_) => state("on"),
                        Err(e) => break Some(e.to_string()),
                    }
                    last_on = Instant::now();
                }
            },
        }
    };
    let _ = std::fs::remove_file(power_state());
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
