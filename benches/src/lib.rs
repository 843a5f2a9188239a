//! Data sets and baselines for the criterion benchmarks in `benches/`: a deterministic mixed
//! snapshot (many small files, a few large ones), the hand-made `tar | gpg` pipeline a user would
//! write, CPU-time accounting, and a loop-mounted btrfs file system for snapshot timings.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Incompressible bytes from a fixed seed (xorshift64*), so every run archives the same data.
pub fn fill_pseudo_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Begins making the data set `spec` at `root`: `None` when it is there already (its marker
/// says so), else an empty `root` and the marker to write once it is complete.
fn start_dataset(root: &Path, spec: &str) -> io::Result<Option<(PathBuf, String)>> {
    let marker = root.join(".dataset");
    if fs::read_to_string(&marker).ok().as_deref() == Some(spec) {
        return Ok(None);
    }
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    Ok(Some((marker, spec.to_string())))
}

/// The mixed data set: about 15 % in 1-16 KiB files (config trees, small records), the rest in
/// 64 MiB files (databases, logs), `total` bytes in all, under `root/system` and `root/data`.
/// Made once and reused while its marker says it has this size.
pub fn mixed_dataset(root: &Path, total: u64) -> io::Result<()> {
    let Some(marker) = start_dataset(root, &format!("mixed {total}\n"))? else {
        return Ok(());
    };
    let small_total = total * 15 / 100;
    let mut made = 0u64;
    let mut i = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while made < small_total {
        let len = 1024 + (i * 7919 % (15 * 1024)) as usize;
        let dir = root.join(format!("system/etc/conf{:03}", i % 200));
        fs::create_dir_all(&dir)?;
        fill_pseudo_random(&mut buf[..len], i + 1);
        fs::write(dir.join(format!("item{i}.cfg")), &buf[..len])?;
        made += len as u64;
        i += 1;
    }
    let big = 64 << 20;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while made < total {
        let dir = root.join("data/persistence");
        fs::create_dir_all(&dir)?;
        let len = big.min(total - made);
        write_random(&dir.join(format!("db{n}.bin")), len, n * 1_000_003, &mut buf)?;
        made += len;
        n += 1;
    }
    fs::write(&marker.0, &marker.1)
}

/// Writes `len` pseudo-random bytes (seeded from `seed`) to a new file at `path`.
fn write_random(path: &Path, len: u64, seed: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut f = io::BufWriter::new(fs::File::create(path)?);
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        fill_pseudo_random(&mut buf[..k], seed + left);
        f.write_all(&buf[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// The all-large data set: `total` bytes in 64 MiB files only (databases, recordings), under
/// `root/system` (one file) and `root/data`.
pub fn large_dataset(root: &Path, total: u64) -> io::Result<()> {
    let Some(marker) = start_dataset(root, &format!("large {total}\n"))? else {
        return Ok(());
    };
    let big = 64u64 << 20;
    let mut buf = vec![0u8; 1 << 20];
    let (mut made, mut n) = (0u64, 0u64);
    while made < total {
        let dir = root.join(if n == 0 { "system/var/lib" } else { "data/recordings" });
        fs::create_dir_all(&dir)?;
        let len = big.min(total - made);
        write_random(&dir.join(format!("blob{n}.bin")), len, n * 7_000_003, &mut buf)?;
        made += len;
        n += 1;
    }
    fs::create_dir_all(root.join("data"))?;
    fs::write(&marker.0, &marker.1)
}

/// Benchmark sizes: `NEXUS_BENCH_QUICK=1` (CI: the benches must run, not measure well) makes
/// them small; `NEXUS_BENCH_BYTES` sets the data set size.
pub fn quick() -> bool {
    std::env::var("NEXUS_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// Bytes of each backup data set: NEXUS_BENCH_BYTES, else 1 GiB (64 MiB when quick).
pub fn dataset_bytes() -> u64 {
    std::env::var("NEXUS_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 64 << 20 } else { 1 << 30 })
}

/// Where backups are written: `NEXUS_BENCH_OUT`, else /dev/shm (memory: the pipeline's own cost,
/// not the disk's), else the target folder.
pub fn output_dir(fallback: &Path) -> PathBuf {
    if let Ok(d) = std::env::var("NEXUS_BENCH_OUT") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

/// The baseline a user would write by hand: `tar -cf - . | gpg --symmetric --cipher-algo AES256
/// --compress-algo none`, at normal priority.
pub fn tar_gpg(src: &Path, out: &Path, password_file: &Path, gnupg_home: &Path) -> io::Result<()> {
    let script = format!(
        "tar -cf - -C '{}' system data | gpg --batch --yes --quiet --pinentry-mode loopback --passphrase-file '{}' \
         --symmetric --cipher-algo AES256 --compress-algo none -o '{}'",
        src.display(),
        password_file.display(),
        out.display()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("GNUPGHOME", gnupg_home)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("tar | gpg failed: {status}")));
    }
    Ok(())
}

/// User + system CPU time of this process (all threads) or of its waited-for children.
pub fn cpu_time(children: bool) -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: ru is a valid out-parameter.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A btrfs file system on a loop device, unmounted (and the loop device freed) on drop.
pub struct LoopBtrfs {
    pub mount: PathBuf,
    /// The loop device it is on (`/dev/loopN`), as the kernel names it in its log.
    pub device: String,
    image: PathBuf,
    /// The kernel log's clock (seconds since boot) when this file system was made: earlier users
    /// of the same loop device are not its story.
    log_start: f64,
}

impl LoopBtrfs {
    /// Makes a sparse image of `size` bytes in `dir` and mounts it at `dir/mnt`. Needs root.
    pub fn new(dir: &Path, size: u64) -> io::Result<Self> {
        let image = dir.join("btrfs.img");
        let mount = dir.join("mnt");
        fs::create_dir_all(&mount)?;
        fs::File::create(&image)?.set_len(size)?;
        let log_start = kernel_log().last().map_or(0.0, |(t, _)| *t);
        run(Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount))?;
        let out = Command::new("findmnt").args(["-no", "SOURCE"]).arg(&mount).output()?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Self {
            mount,
            device,
            image,
            log_start,
        })
    }

    /// Why a write on this file system may have failed: the free space left on the disk that
    /// holds its sparse image (a full host disk fails the loop device's writes, and btrfs then
    /// turns itself read-only) and the kernel's last log lines about its loop device.
    pub fn diagnose(&self) -> String {
        let host = self.image.parent().unwrap_or(Path::new("."));
        let free = match free_bytes(host) {
            Ok(b) => format!("{} MiB free", b >> 20),
            Err(e) => format!("free space unknown ({e})"),
        };
        let needle = format!("device {}", self.device.trim_start_matches("/dev/"));
        let lines: Vec<String> = if self.device.is_empty() {
            Vec::new()
        } else {
            kernel_log()
                .into_iter()
                .filter(|(t, l)| *t >= self.log_start && l.contains(&needle))
                .map(|(_, l)| l)
                .collect()
        };
        let log = lines[lines.len().saturating_sub(15)..].join("\n");
        format!(
            "the disk holding the image ({}) has {free}; the kernel's log for {}:\n{log}",
            host.display(),
            self.device
        )
    }
}

/// The kernel's log, a line each with its time in seconds since boot (`[  722.340040] ...`);
/// empty if `dmesg` cannot be read.
fn kernel_log() -> Vec<(f64, String)> {
    let Ok(out) = Command::new("dmesg").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let t = l
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(t, _)| t.trim().parse().ok())
                .unwrap_or(0.0);
            (t, l.to_owned())
        })
        .collect()
}

/// Bytes free for root on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bfree as u64 * st.f_frsize as u64)
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
