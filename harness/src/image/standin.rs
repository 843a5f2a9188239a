//! The arm64 stand-in's image: the emulator image's packages and `images/` files made for
//! arm64 with mmdebstrap (through qemu-user and binfmt), plus what `images/standin/` adds
//! (kernel, fstab, networkd, an initramfs without udev, the admin key), as an ext4 root with
//! the kernel and initramfs beside it. Cached by the hash of its inputs; `device::standin`
//! boots it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::InfraError;
use crate::image::mmdebstrap::{logged, package_list, write_file, Bootstrap};
use crate::image::{self, FILES, SUITE};

/// The Rust target the stand-in's binaries are built for.
pub const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";
/// Label of the stand-in's root file system (`root=LABEL=...`, and its fstab).
pub const ROOT_LABEL: &str = "nexus-standin";
/// Size of the root file system image (sparse): room for the journal and the scenarios' users.
const ROOT_BYTES: u64 = 3 << 30;
/// Bumped when the way the image is made changes, so old images are remade.
const GENERATOR: u32 = 1;

const STANDIN_PACKAGES: &str = include_str!("../../../images/standin/packages.txt");

/// Files of `images/standin/` and where they go, on top of [`FILES`].
const STANDIN_FILES: [(&str, &[u8], u32); 5] = [
    (
        "usr/local/lib/nexus-hil/standin.sh",
        include_bytes!("../../../images/standin/customize.sh"),
        0o755,
    ),
    (
        "etc/fstab",
        include_bytes!("../../../images/standin/rootfs/etc/fstab"),
        0o644,
    ),
    (
        "etc/systemd/network/20-wired.network",
        include_bytes!("../../../images/standin/rootfs/etc/systemd/network/20-wired.network"),
        0o644,
    ),
    (
        "etc/initramfs-tools/hooks/nexus-standin",
        include_bytes!("../../../images/standin/rootfs/etc/initramfs-tools/hooks/nexus-standin"),
        0o755,
    ),
    (
        "etc/initramfs-tools/scripts/init-bottom/nexus-standin",
        include_bytes!("../../../images/standin/rootfs/etc/initramfs-tools/scripts/init-bottom/nexus-standin"),
        0o755,
    ),
];

/// Where the stand-in keeps its key, images and boots.
pub fn dir() -> PathBuf {
    crate::cache::images().join("standin-arm64")
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
    package_list(emulator).chain(package_list(STANDIN_PACKAGES)).collect()
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
        let packages = packages();
        Bootstrap {
            format: "directory",
            arch: Some("arm64"),
            packages: &packages,
            stage: &stage,
            scripts: &[
                "/usr/local/lib/nexus-hil/customize.sh",
                "/usr/local/lib/nexus-hil/standin.sh",
            ],
            suite: SUITE,
            out: &rootdir,
            mirrors: &inputs.mirrors,
        }
        .run(&log)
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
