//! The SD-card image the emulator boots with: a sparse file with the device's MBR layout
//! (partition 1 FAT32 `boot`, 256 MiB from 1 MiB; partition 2 btrfs root), holding subvolumes
//! `system` and `data` filled with representative home-automation content, and the directories
//! `snapshot/snapshots` and `backups`. Made once per size as a template (needs root: loop devices,
//! mkfs, mount), then copied sparsely for every emulator.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::InfraError;

const MIB: u64 = 1024 * 1024;
/// Partition 1 (boot) starts at 1 MiB and is 256 MiB long; partition 2 follows.
pub const BOOT_START: u64 = MIB;
pub const BOOT_SIZE: u64 = 256 * MIB;
/// Byte offset of the btrfs partition (the emulator's broot.mount uses it).
pub const ROOT_START: u64 = BOOT_START + BOOT_SIZE;
/// Bumped when the layout or the content generator changes, so templates are remade.
const GENERATOR: u32 = 1;

/// The home-automation content of the functional suites' card (`scenarios/`, `scenarios/faults/`,
/// the tests of `harness/tests/suite.rs`): small, so a backup, its download and its check take
/// about a second. A scenario that needs a backup still running when something happens caps the
/// backup's rate (or writes content of its own), it does not count on a full card.
pub const FUNCTIONAL_CONTENT: u64 = 32 * MIB;
/// A card about as full as the device's: what the perf suite asks for (`card_content: 256MiB`),
/// and the card of `image build`, `emulator up` and `conform`.
pub const FULL_CONTENT: u64 = 256 * MIB;
/// The least content a card can be asked for: the generator's fixed files take about 7 MiB.
pub const MIN_CONTENT: u64 = 8 * MIB;

/// The content of a run's card: the largest that `flag` (`--card-content`; else `default`) and
/// the scenarios' `card_content` ask for, with the reason in words for the run's output. A
/// size that is not a whole number of MiB (templates are made per MiB) or below
/// [`MIN_CONTENT`] is an error naming who asked for it.
pub fn content_for(
    flag: Option<u64>,
    default: u64,
    scenarios: &[crate::scenario::Scenario],
) -> Result<(u64, String), String> {
    use crate::scenario::show_size;
    let check = |bytes: u64, who: &str| {
        if !bytes.is_multiple_of(MIB) || bytes < MIN_CONTENT {
            return Err(format!(
                "{who} asks for {bytes} bytes of card content: give a whole number of MiB, at least {}",
                show_size(MIN_CONTENT)
            ));
        }
        Ok(bytes)
    };
    let (mut bytes, mut why) = match flag {
        Some(b) => (check(b, "--card-content")?, "--card-content".to_string()),
        None => (default, "the default; --card-content SIZE for another".to_string()),
    };
    for s in scenarios {
        let Some(asked) = s.card_content else { continue };
        let asked = check(asked, &format!("{} (card_content)", s.file.display()))?;
        if asked > bytes {
            let over = if flag.is_some() {
                ", more than --card-content"
            } else {
                ""
            };
            bytes = asked;
            why = format!("card_content of {}{over}", s.file.display());
        }
    }
    Ok((
        bytes,
        format!("SD card: {} of home-automation content ({why})", show_size(bytes)),
    ))
}

fn run(cmd: &mut Command) -> Result<String, InfraError> {
    let out = cmd
        .output()
        .map_err(|e| InfraError::SdCard(format!("cannot run {:?}: {e}; run ci/setup-host", cmd.get_program())))?;
    if !out.status.success() {
        return Err(InfraError::SdCard(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The MBR: two primary partitions, FAT32 LBA (0x0c) and Linux (0x83).
pub fn mbr(total: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let sector = |b: u64| (b / 512) as u32;
    let parts = [
        (0x0c_u8, sector(BOOT_START), sector(BOOT_SIZE)),
        (0x83_u8, sector(ROOT_START), sector(total - ROOT_START)),
    ];
    for (i, (kind, start, len)) in parts.into_iter().enumerate() {
        let e = &mut m[446 + 16 * i..446 + 16 * (i + 1)];
        // CHS fields at their "use LBA" maximum.
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[4] = kind;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&len.to_le_bytes());
    }
    m[440..444].copy_from_slice(&0x4e45_5859_u32.to_le_bytes()); // disk id "NEXY"
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// A loop device over part of a file, detached on drop.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<Self, InfraError> {
        Self::attach_with(file, offset, size, false)
    }

    /// The btrfs partition of a card image, read-only or not.
    pub fn root_of(card: &Path, read_only: bool) -> Result<Self, InfraError> {
        let total = fs::metadata(card).map_err(|e| InfraError::io(card.display(), e))?.len();
        Self::attach_with(card, ROOT_START, total.saturating_sub(ROOT_START), read_only)
    }

    fn attach_with(file: &Path, offset: u64, size: u64, read_only: bool) -> Result<Self, InfraError> {
        let dev = run(Command::new("losetup")
            .args(if read_only { &["--read-only"][..] } else { &[][..] })
            .args([
                "--find",
                "--show",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
            ])
            .arg(file))?;
        Ok(Self(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mount, unmounted on drop.
pub struct Mounted(pub PathBuf);

impl Mounted {
    /// Mounts `dev` (btrfs, read-write: a tree log is replayed) on `dir`.
    pub fn btrfs(dev: &Loop, dir: &Path) -> Result<Self, InfraError> {
        fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
        run(Command::new("mount").args(["-t", "btrfs"]).arg(&dev.0).arg(dir))?;
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The template for `content` bytes of content, made when missing.
pub fn template(content: u64, log: impl Fn(&str)) -> Result<PathBuf, InfraError> {
    let dir = crate::cache::images();
    fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    let path = dir.join(format!("sdcard-v{GENERATOR}-{}MiB.img", content / MIB));
    if path.exists() {
        return Ok(path);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(InfraError::SdCard(
            "making the SD-card image needs root (loop devices, mkfs, mount); run as root or with sudo".into(),
        ));
    }
    log(&format!(
        "making the SD-card image template {} ({} MiB of content)",
        path.display(),
        content / MIB
    ));
    let partial = dir.join(format!(
        ".{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let result = make(&partial, content);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, &path).map_err(|e| InfraError::io(path.display(), e))?;
    Ok(path)
}

fn make(path: &Path, content: u64) -> Result<(), InfraError> {
    let total = ROOT_START + (content * 4 + 768 * MIB).div_ceil(MIB) * MIB;
    let mut f = fs::File::create(path).map_err(|e| InfraError::io(path.display(), e))?;
    f.set_len(total).map_err(|e| InfraError::io(path.display(), e))?;
    f.write_all(&mbr(total))
        .map_err(|e| InfraError::io(path.display(), e))?;
    drop(f);
    {
        let boot = Loop::attach(path, BOOT_START, BOOT_SIZE)?;
        run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "BOOT"]).arg(&boot.0))?;
    }
    let root = Loop::attach(path, ROOT_START, total - ROOT_START)?;
    run(Command::new("mkfs.btrfs").args(["-q", "-L", "nexus-root"]).arg(&root.0))?;
    let mnt = path.with_extension("mnt");
    fs::create_dir_all(&mnt).map_err(|e| InfraError::io(mnt.display(), e))?;
    run(Command::new("mount").arg(&root.0).arg(&mnt))?;
    let mounted = Mounted(mnt.clone());
    for sub in ["system", "data"] {
        run(Command::new("btrfs").args(["subvolume", "create"]).arg(mnt.join(sub)))?;
    }
    for d in ["snapshot/snapshots", "backups"] {
        fs::create_dir_all(mnt.join(d)).map_err(|e| InfraError::io(d, e))?;
    }
    fill(&mnt, content).map_err(|e| InfraError::io("filling the SD-card image", e))?;
    run(Command::new("sync").arg("-f").arg(&mnt))?;
    drop(mounted);
    drop(root);
    let _ = fs::remove_dir(&mnt);
    Ok(())
}

/// Incompressible bytes from a fixed seed, so every template holds the same content.
fn pseudo_random(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Representative content of a home-automation controller, `content` bytes in all.
pub fn fill(root: &Path, content: u64) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let sys = root.join("system");
    let data = root.join("data");
    let mut used = 0u64;
    let mut write = |p: &Path, bytes: &[u8], mode: u32| -> std::io::Result<()> {
        fs::create_dir_all(p.parent().unwrap_or(root))?;
        fs::write(p, bytes)?;
        fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
        used += bytes.len() as u64;
        Ok(())
    };
    // Configuration trees: many small text files.
    for (i, kind) in ["services", "things", "items", "rules", "persistence", "transform"]
        .iter()
        .enumerate()
    {
        for n in 0..40 {
            let text = format!("# {kind} {n}\n").repeat(8 + (n * 13 + i * 7) % 60);
            write(
                &sys.join(format!("etc/openhab/{kind}/{kind}{n:02}.cfg")),
                text.as_bytes(),
                0o644,
            )?;
        }
    }
    write(
        &sys.join("etc/openhab/users.json"),
        b"{\"admin\": {\"hash\": \"not-a-secret\"}}\n",
        0o600,
    )?;
    write(&sys.join("etc/hostname"), b"noreya-nexus\n", 0o644)?;
    for n in 0..150 {
        let json = format!(
            "{{\"uid\": \"thing:{n}\", \"label\": \"Sensor {n}\", \"state\": {}}}\n",
            n * 17 % 100
        );
        write(
            &sys.join(format!("var/lib/automation/jsondb/thing{n:03}.json")),
            json.as_bytes(),
            0o640,
        )?;
    }
    write(
        &sys.join("opt/automation/releases/3.4.1/bin/start.sh"),
        b"#!/bin/sh\nexec java -jar automation.jar\n",
        0o755,
    )?;
    symlink("releases/3.4.1", sys.join("opt/automation/current"))?;
    symlink("../../etc/openhab", sys.join("opt/automation/conf"))?;
    symlink("/nonexistent/usb-zwave-stick", sys.join("opt/automation/zwave-device"))?;
    fs::create_dir_all(sys.join("var/lib/automation/cache/empty"))?;
    fs::create_dir_all(data.join("tmp/empty"))?;
    // Persistence: many small round-robin files, a few logs, one large database.
    let mut buf = vec![0u8; 32 * 1024];
    for n in 0..200 {
        pseudo_random(&mut buf, n + 1);
        write(&data.join(format!("persistence/rrd4j/item{n:03}.rrd")), &buf, 0o644)?;
    }
    for n in 0..5 {
        let log = format!("2026-11-26 12:00:{n:02} [INFO] sensor.kitchen changed to ON\n").repeat(2000);
        write(&data.join(format!("logs/events.log.{n}")), log.as_bytes(), 0o644)?;
    }
    fs::hard_link(data.join("logs/events.log.0"), data.join("logs/events.log"))?;
    let big_dir = data.join("persistence/mapdb");
    fs::create_dir_all(&big_dir)?;
    let left = content.saturating_sub(used);
    let files = left.div_ceil(64 * MIB).max(1);
    let mut chunk = vec![0u8; MIB as usize];
    for n in 0..files {
        let len = (left / files) as usize;
        let mut f = std::io::BufWriter::new(fs::File::create(big_dir.join(format!("storage{n}.mapdb")))?);
        let mut written = 0;
        while written < len {
            let k = (len - written).min(chunk.len());
            pseudo_random(&mut chunk[..k], n * 1_000_003 + written as u64);
            f.write_all(&chunk[..k])?;
            written += k;
        }
    }
    // Ownership as on the device: the automation runs as its own user.
    for p in [sys.join("var/lib/automation/jsondb"), data.join("persistence")] {
        std::os::unix::fs::chown(&p, Some(999), Some(999))?;
    }
    Ok(())
}

/// A fresh copy of the template for one emulator (sparse, reflinked where the file system can).
pub fn copy_for(template: &Path, dest: &Path) -> Result<(), InfraError> {
    run(Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(template)
        .arg(dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_card_is_the_largest_asked_for() {
        let scenario = |file: &str, card: &str| {
            let text = format!("name: {file}\n{card}steps:\n  - ssh.run: {{as: root, command: id}}\n");
            crate::scenario::Scenario::parse(&text, Path::new(file)).unwrap()
        };
        let plain = scenario("scenarios/00.yaml", "");
        let perf = scenario("scenarios/perf/01.yaml", "card_content: 256MiB\n");
        let (b, why) = content_for(None, FUNCTIONAL_CONTENT, std::slice::from_ref(&plain)).unwrap();
        assert_eq!(b, 32 * MIB);
        assert_eq!(
            why,
            "SD card: 32 MiB of home-automation content (the default; --card-content SIZE for another)"
        );
        let (b, why) = content_for(Some(64 * MIB), FUNCTIONAL_CONTENT, &[plain]).unwrap();
        assert_eq!((b, why.contains("(--card-content)")), (64 * MIB, true), "{why}");
        let (b, why) = content_for(Some(32 * MIB), FUNCTIONAL_CONTENT, std::slice::from_ref(&perf)).unwrap();
        assert_eq!(b, 256 * MIB);
        assert!(
            why.ends_with("(card_content of scenarios/perf/01.yaml, more than --card-content)"),
            "{why}"
        );
        let (b, _) = content_for(Some(FULL_CONTENT * 2), FUNCTIONAL_CONTENT, &[perf]).unwrap();
        assert_eq!(b, 512 * MIB, "a larger flag wins");
        let e = content_for(Some(32 * MIB + 1), FUNCTIONAL_CONTENT, &[]).unwrap_err();
        assert!(
            e.contains("--card-content asks for 33554433 bytes") && e.contains("whole number of MiB"),
            "{e}"
        );
        let small = scenario("scenarios/small.yaml", "card_content: 1MiB\n");
        let e = content_for(None, FUNCTIONAL_CONTENT, &[small]).unwrap_err();
        assert!(
            e.starts_with("scenarios/small.yaml (card_content) asks for") && e.contains("at least 8 MiB"),
            "{e}"
        );
    }

    #[test]
    fn mbr_has_the_device_layout() {
        let m = mbr(2048 * MIB);
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        let entry = |i: usize| &m[446 + 16 * i..446 + 16 * (i + 1)];
        let u32le = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as u64;
        assert_eq!(entry(0)[4], 0x0c);
        assert_eq!(u32le(&entry(0)[8..12]) * 512, BOOT_START);
        assert_eq!(u32le(&entry(0)[12..16]) * 512, BOOT_SIZE);
        assert_eq!(entry(1)[4], 0x83);
        assert_eq!(u32le(&entry(1)[8..12]) * 512, ROOT_START);
        assert_eq!(
            u32le(&entry(1)[8..12]) * 512 + u32le(&entry(1)[12..16]) * 512,
            2048 * MIB
        );
        // The emulator's mount unit names the same offset.
        let unit = include_str!("../../../images/emulator/rootfs/etc/systemd/system/broot.mount");
        assert!(unit.contains(&format!("offset={ROOT_START}")));
    }
}
