//! The stand-in's saved machine state: booted once per image, card template and key, brought to
//! ready, and its whole machine (RAM and devices) saved through QMP beside the disks it had at
//! that moment, which stay as read-only bases. A start then restores it on copy-on-write copies
//! of them in seconds instead of booting. A power cut still boots for real.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Standin, StandinSpec};
use crate::error::InfraError;
use crate::image::standin::dir;
use crate::transport::ssh::sh_quote;

/// A test-only input of the state's hash: another value is another state.
pub const SALT_ENV: &str = "NEXUS_HIL_STANDIN_STATE_SALT";
/// Set to 1 to boot every stand-in instead of restoring the saved state (a benchmark's "before").
pub const COLD_ENV: &str = "NEXUS_HIL_STANDIN_COLD";
/// Bumped when what is saved, or how, changes.
const GENERATOR: u32 = 1;
/// Saved states kept at a time (each about the guest's used RAM plus its card).
const KEEP: usize = 3;

/// A saved machine state, held in use (a shared lock) while a stand-in's disks are built on it.
pub struct SavedState {
    pub hash: String,
    pub dir: PathBuf,
    _in_use: File,
}

impl SavedState {
    /// The root disk as it was when saved (a qcow2 over the image's root file system).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }

    /// The SD card as it was when saved.
    pub fn card(&self) -> PathBuf {
        self.dir.join("sdcard.img")
    }

    /// RAM and devices.
    pub fn machine(&self) -> PathBuf {
        self.dir.join("machine.state")
    }
}

/// Whether starts restore the saved state (not when [`COLD_ENV`] is 1).
pub fn enabled() -> bool {
    std::env::var(COLD_ENV).map_or(true, |v| v != "1")
}

/// `qemu-system-aarch64 --version`'s first line.
fn qemu_version() -> Result<&'static str, InfraError> {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            std::process::Command::new("qemu-system-aarch64")
                .arg("--version")
                .output()
                .map_err(|e| format!("cannot run qemu-system-aarch64: {e}; install qemu-system-arm (ci/standin does)"))
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
        })
        .as_deref()
        .map_err(|e| InfraError::Emulator(e.clone()))
}

/// Whether this qemu migrates to a file (`file:`, qemu 8.2 on); older ones go through `cat`.
fn has_file_migration(version: &str) -> bool {
    let v = version.split("version ").nth(1).unwrap_or_default();
    let mut n = v.split(['.', ' ']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (n.next().unwrap_or(0), n.next().unwrap_or(0));
    (major, minor) >= (8, 2)
}

/// The migration URI that writes (`outgoing`) or reads the machine state at `path`.
pub fn migration_uri(path: &Path, outgoing: bool) -> String {
    let file = qemu_version().is_ok_and(has_file_migration);
    match (file, outgoing) {
        (true, _) => format!("file:{}", path.display()),
        (false, true) => format!("exec:cat > {}", sh_quote(&path.display().to_string())),
        (false, false) => format!("exec:cat {}", sh_quote(&path.display().to_string())),
    }
}

/// The SHA-256 of a file's content: each 4 KiB block that is not all zeros, with its offset,
/// so holes and written zeros hash alike (a card image is mostly holes).
fn content_hash(path: &Path) -> Result<String, InfraError> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: usize = 4096;
    let io = |e| InfraError::io(path.display(), e);
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at: i64 = 0;
    loop {
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        let start = data as u64 / BLOCK as u64 * BLOCK as u64;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut pos = start;
        while pos < hole as u64 {
            let want = ((hole as u64 - pos) as usize).min(buf.len());
            let n = f.read(&mut buf[..want]).map_err(io)?;
            if n == 0 {
                break;
            }
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    h.update((pos + (i * BLOCK) as u64).to_le_bytes());
                    h.update(block);
                }
            }
            pos += n as u64;
        }
        at = pos as i64;
    }
    h.update(len.to_le_bytes());
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// [`content_hash`], kept beside the stand-in's images by the file's size and modification
/// time, so a template is read once.
fn template_hash(path: &Path) -> Result<String, InfraError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| InfraError::io(path.display(), e))?;
    let stamp = format!(
        "{} {} {}.{}",
        path.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let memo = dir().join(format!(
        "{}.sha256",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    if let Some(hash) = std::fs::read_to_string(&memo)
        .ok()
        .and_then(|t| t.strip_prefix(&format!("{stamp}\n")).map(str::to_string))
    {
        return Ok(hash);
    }
    let hash = content_hash(path)?;
    let _ = std::fs::write(&memo, format!("{stamp}\n{hash}"));
    Ok(hash)
}

/// Which build of the image `files` are: their paths (the image's folder is named by the hash
/// of its inputs) and each file's size, change time and inode. The same inputs built again (the
/// folder removed, or pruned by another image's build) are another build, whose root's blocks
/// differ: a state saved on the first one holds their page cache, and restored on the second
/// it read files that are not there ("error while loading shared libraries").
fn image_identity(files: [&Path; 3]) -> Result<String, InfraError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for p in files {
        let m = std::fs::metadata(p).map_err(|e| InfraError::io(p.display(), e))?;
        out.push_str(&format!(
            "{} {} {}.{} {}\n",
            p.display(),
            m.len(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino()
        ));
    }
    Ok(out)
}

/// The state's name: a hash of all it depends on.
fn state_hash(spec: &StandinSpec<'_>, shape: &str) -> Result<String, InfraError> {
    let mut h = Sha256::new();
    h.update(format!("nexus-standin saved state v{GENERATOR}\n").as_bytes());
    h.update(image_identity([&spec.image.root, &spec.image.kernel, &spec.image.initrd])?.as_bytes());
    h.update(template_hash(spec.sdcard_template)?.as_bytes());
    let pubkey = spec.key.with_extension("pub");
    h.update(std::fs::read(&pubkey).map_err(|e| InfraError::io(pubkey.display(), e))?);
    h.update(shape.as_bytes());
    h.update(qemu_version()?.as_bytes());
    h.update(std::env::var(SALT_ENV).unwrap_or_default().as_bytes());
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn lock(path: &Path, how: libc::c_int) -> Result<Option<File>, InfraError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| InfraError::io(path.display(), e))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), how) } == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return Ok(None);
    }
    Err(InfraError::io(path.display(), e))
}

/// The saved state for `spec`, saved first when there is none (one cold boot; a parallel start
/// waits for it and then restores it too).
pub async fn ensure(spec: &StandinSpec<'_>, say: &(dyn Fn(&str) + Sync)) -> Result<SavedState, InfraError> {
    let hash = state_hash(spec, &Standin::shape(spec))?;
    let root = dir();
    let path = root.join(".state.lock");
    std::fs::create_dir_all(&root).map_err(|e| InfraError::io(root.display(), e))?;
    let _saving = match lock(&path, libc::LOCK_EX | libc::LOCK_NB)? {
        Some(l) => l,
        None => {
            say("waiting for another start to save the machine state");
            tokio::task::spawn_blocking(move || lock(&path, libc::LOCK_EX))
                .await
                .map_err(|e| InfraError::Emulator(e.to_string()))??
                .ok_or_else(|| InfraError::Emulator("cannot lock the saved states".into()))?
        }
    };
    let done = root.join(format!("state-{hash}"));
    if !done.join("ready").exists() {
        save(spec, &hash, &done, say).await?;
        remove_old_states(&done);
    }
    let _in_use = lock(&done.join("in-use"), libc::LOCK_SH)?
        .ok_or_else(|| InfraError::Emulator("cannot share the saved state's lock".into()))?;
    Ok(SavedState {
        hash,
        dir: done,
        _in_use,
    })
}

/// Boots a stand-in, brings it to ready and saves it: `stop`, its machine migrated to a file,
/// `quit`; its disks as they are then become the state's read-only bases.
async fn save(spec: &StandinSpec<'_>, hash: &str, done: &Path, say: &(dyn Fn(&str) + Sync)) -> Result<(), InfraError> {
    let started = Instant::now();
    let partial = dir().join(format!(".state-{hash}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let boot = partial.join("boot");
    say(&format!(
        "saving the stand-in's machine state {hash} (one boot; later starts restore it)"
    ));
    let vm = Standin::launch(
        StandinSpec {
            image: spec.image,
            sdcard_template: spec.sdcard_template,
            key: spec.key,
            boot_dir: Some(boot.clone()),
            log_writes: true,
        },
        None,
        say,
    )
    .await?;
    let booted = vm.ready_after;
    vm.save(&partial.join("machine.state")).await?;
    for f in ["root.qcow2", "sdcard.img"] {
        let (from, to) = (boot.join(f), partial.join(f));
        std::fs::rename(&from, &to).map_err(|e| InfraError::io(from.display(), e))?;
        // Bases from now on: nothing writes them again.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444));
    }
    drop(vm);
    let _ = std::fs::remove_dir_all(&boot);
    let note = format!(
        "hash {hash}\nbooted in {:.1} s, saved in {:.1} s\n",
        booted.as_secs_f64(),
        started.elapsed().as_secs_f64() - booted.as_secs_f64()
    );
    std::fs::write(partial.join("ready"), note).map_err(|e| InfraError::io(partial.display(), e))?;
    let _ = std::fs::remove_dir_all(done);
    std::fs::rename(&partial, done).map_err(|e| InfraError::io(done.display(), e))?;
    say(&format!(
        "saved the stand-in's machine state {hash} in {:.1} s (booted in {:.1} s)",
        started.elapsed().as_secs_f64(),
        booted.as_secs_f64()
    ));
    Ok(())
}

/// Keeps the newest [`KEEP`] states; older ones go unless a stand-in still uses them.
fn remove_old_states(newest: &Path) {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return;
    };
    let mut states: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != newest && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("state-")))
        .map(|p| {
            let t = std::fs::metadata(p.join("ready"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    states.sort();
    states.reverse();
    for (_, p) in states.into_iter().skip(KEEP - 1) {
        if let Ok(Some(_free)) = lock(&p.join("in-use"), libc::LOCK_EX | libc::LOCK_NB) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Sets a restored guest's clock to this host's and reseeds its kernel's random state from
/// this host's, as root over SSH, then asks whether it is ready ([`super::ready_check`]) in the
/// same login (each costs seconds of the emulated CPU): the saved machine's clock stopped when
/// it was saved, and every guest restored from it would otherwise draw the same random numbers.
/// The time is sent when the guest is ready to read it, so the SSH handshake does not make it
/// late. Returns the readiness check's output.
pub async fn wake(vm: &Standin) -> Result<String, InfraError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    // Perl (perl-base, in every Debian) starts in a fraction of python3's time under emulation.
    // clock_settime is syscall 112 on arm64; RNDADDENTROPY = _IOW('R', 3, int[2]),
    // RNDRESEEDCRNG = _IO('R', 7).
    const SCRIPT: &str = "$| = 1;\n\
        print \"ready\\n\";\n\
        my ($s, $ns, $seed) = split ' ', scalar <STDIN>;\n\
        syscall(112, 0, pack('qq', $s, $ns)) == 0 or die \"clock_settime: $!\\n\";\n\
        my $bytes = pack('H*', $seed);\n\
        open(my $r, '>', '/dev/random') or die \"/dev/random: $!\\n\";\n\
        ioctl($r, 0x40085203, pack('ii', 8 * length($bytes), length($bytes)) . $bytes) or die \"RNDADDENTROPY: $!\\n\";\n\
        ioctl($r, 0x5207, 0) or die \"RNDRESEEDCRNG: $!\\n\";\n\
        print \"done\\n\";\n";
    let mut seed = [0u8; 64];
    getrandom(&mut seed)?;
    let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let argv = vm.ssh().ssh_argv("nexus");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .arg("--")
        .arg(format!(
            "sudo -n perl -e {} && {}",
            sh_quote(SCRIPT),
            super::ready_check()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let talk = async {
        let mut child = cmd.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut first = String::new();
        out.read_line(&mut first).await.map_err(|e| e.to_string())?;
        if first.trim_end() == "ready" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            stdin
                .write_all(format!("{} {} {seed}\n", now.as_secs(), now.subsec_nanos()).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        drop(stdin);
        let mut done = String::new();
        out.read_line(&mut done).await.map_err(|e| e.to_string())?;
        let mut rest = String::new();
        out.read_to_string(&mut rest).await.map_err(|e| e.to_string())?;
        let end = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if done.trim_end() == "done" {
            Ok(rest)
        } else {
            Err(format!(
                "it said {:?} then {:?} ({}): {}",
                first.trim_end(),
                done.trim_end(),
                end.status,
                String::from_utf8_lossy(&end.stderr).trim()
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(180), talk)
        .await
        .map_err(|_| "no answer within 180 s".to_string())
        .and_then(|r| r)
        .map_err(|e| {
            InfraError::Emulator(format!(
                "cannot set the restored stand-in's clock and reseed its random state over SSH: {e}"
            ))
        })
}

/// Bytes from this host's OS random source.
fn getrandom(buf: &mut [u8]) -> Result<(), InfraError> {
    use std::io::Read;
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| InfraError::io("/dev/urandom", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_migration_is_used_from_qemu_8_2_on() {
        assert!(!has_file_migration(
            "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)"
        ));
        assert!(!has_file_migration("QEMU emulator version 8.1.5"));
        assert!(has_file_migration(
            "QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)"
        ));
        assert!(has_file_migration("QEMU emulator version 10.0.0"));
    }

    #[test]
    fn an_image_built_again_from_the_same_inputs_is_another_build() {
        let d = tempfile::tempdir().unwrap();
        let files = ["root.img", "vmlinuz", "initrd.img"].map(|f| d.path().join(f));
        for f in &files {
            std::fs::write(f, b"first build").unwrap();
        }
        let of = |files: &[PathBuf; 3]| image_identity([&files[0], &files[1], &files[2]]).unwrap();
        let first = of(&files);
        assert_eq!(of(&files), first, "an untouched image is the same build");
        // Built again: the folder replaced by a new one of the same name and the same sizes.
        std::thread::sleep(Duration::from_millis(20));
        let again = d.path().join("again");
        std::fs::create_dir(&again).unwrap();
        std::fs::write(again.join("root.img"), b"other build").unwrap();
        std::fs::rename(again.join("root.img"), &files[0]).unwrap();
        assert_ne!(of(&files), first, "the same paths and sizes, another build");
        std::fs::remove_file(&files[2]).unwrap();
        assert!(image_identity([&files[0], &files[1], &files[2]]).is_err());
    }

    #[test]
    fn a_card_hashes_by_its_content_not_its_holes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.img"), d.path().join("b.img"));
        let f = File::create(&a).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"card", 4 << 20).unwrap();
        let mut bytes = vec![0u8; 8 << 20];
        bytes[4 << 20..(4 << 20) + 4].copy_from_slice(b"card");
        std::fs::write(&b, &bytes).unwrap();
        let hash = |p: &Path| content_hash(p).unwrap();
        assert_eq!(hash(&a), hash(&b));
        bytes[0] = 1;
        std::fs::write(&b, &bytes).unwrap();
        assert_ne!(hash(&a), hash(&b));
    }
}
