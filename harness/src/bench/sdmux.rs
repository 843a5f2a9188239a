//! A bench's SD-card mux (`[device.sdmux]`): the card switched between the device and this
//! machine (a USB-SD-Mux through `usbsdmux`, an SDWire through `sd-mux-ctrl`, or the bench's own
//! command lines), the card's block device awaited (bounded) at its stable path, checked
//! (a block device, not mounted or held, the inventory's size), and an image written to it:
//! only the image's mapped blocks (its holes skipped, as `bmaptool` does with a bmap made from
//! the same sparse file), then read back and compared. Every step is bounded and named in its
//! error; a card switched to this machine is recorded, so that it is switched back to the device
//! in every outcome, Ctrl-C included ([`give_back_all`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::inventory::{SdMuxDriverName, SdMuxEntry};

/// Where the card is switched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This machine: the card appears here as a block device.
    Host,
    /// The device: it boots from the card.
    Dut,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Host => "this machine (host)",
            Side::Dut => "the device (dut)",
        }
    }
}

/// What can go wrong with a mux and its card; each names what to check.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("the SD mux did not switch the card to {side}: {why}")]
    Switch { side: &'static str, why: String },
    #[error(
        "the card did not appear at {path} within {waited:?} after the switch to this machine \
         ({last}); check the mux's USB cable, that a card is in it, and that the path is the \
         card's (ls -l /dev/disk/by-id/)"
    )]
    NoCard {
        path: String,
        waited: Duration,
        last: String,
    },
    #[error("{path} is not the inventory's card: {why}")]
    NotTheCard { path: String, why: String },
    #[error("{dev} (the card at {path}) is in use: {why}; unmount it (or stop what holds it) first")]
    InUse { path: String, dev: String, why: String },
    #[error(
        "the card at {path} holds {actual} bytes, the inventory says {expected} (± {tolerance}): \
         is it the bench's card? Fix `card_size` under [device.sdmux] if the card was replaced"
    )]
    Size {
        path: String,
        actual: u64,
        expected: u64,
        tolerance: u64,
    },
    #[error("the image {image} needs {needs} bytes, more than the card's {card}")]
    TooLarge { image: String, needs: u64, card: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the card does not hold what was written: bytes {at}..{end} read back differ from the \
         image (a failing card or reader: try another card)"
    )]
    Verify { at: u64, end: u64 },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MuxError {
    let what = what.into();
    move |source| MuxError::Io { what, source }
}

/// How long a mux command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The muxes this process switched to the host and has not given back: Ctrl-C gives them back.
static ON_HOST: Mutex<Vec<SdMuxEntry>> = Mutex::new(Vec::new());

/// Switches the card to `side`; the line says what was run.
pub async fn switch(m: &SdMuxEntry, side: Side) -> Result<String, MuxError> {
    let line = command_line(m, side);
    let out = super::power::exec_in_group(&line, COMMAND_TIMEOUT)
        .await
        .map_err(|why| MuxError::Switch {
            side: side.name(),
            why: why.to_string(),
        })?;
    if out.code != Some(0) {
        return Err(MuxError::Switch {
            side: side.name(),
            why: format!("`{line}` exited {:?}: {}", out.code, out.stderr.trim()),
        });
    }
    let mut on_host = ON_HOST.lock().unwrap_or_else(|p| p.into_inner());
    on_host.retain(|o| o != m);
    if side == Side::Host {
        on_host.push(m.clone());
    }
    Ok(format!("ran `{line}`"))
}

/// The command line that switches `m` to `side`.
fn command_line(m: &SdMuxEntry, side: Side) -> String {
    let q = crate::transport::ssh::sh_quote;
    match (m.driver, side) {
        (SdMuxDriverName::Usbsdmux, Side::Host) => format!("usbsdmux {} host", q(&m.control)),
        (SdMuxDriverName::Usbsdmux, Side::Dut) => format!("usbsdmux {} dut", q(&m.control)),
        (SdMuxDriverName::Sdwire, Side::Host) => format!("sd-mux-ctrl --device-serial={} --ts", q(&m.control)),
        (SdMuxDriverName::Sdwire, Side::Dut) => format!("sd-mux-ctrl --device-serial={} --dut", q(&m.control)),
        (SdMuxDriverName::Exec, Side::Host) => m.host.clone().unwrap_or_default(),
        (SdMuxDriverName::Exec, Side::Dut) => m.dut.clone().unwrap_or_default(),
    }
}

/// Switches every card this process left on the host back to its device (Ctrl-C, a panic's
/// clean-up); says what it did or could not do.
pub async fn give_back_all() -> Vec<String> {
    let muxes: Vec<SdMuxEntry> = ON_HOST.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut said = Vec::new();
    for m in muxes {
        said.push(match switch(&m, Side::Dut).await {
            Ok(done) => format!("the card at {} is back on its device: {done}", m.card.display()),
            Err(e) => format!("THE CARD STAYS ON THIS MACHINE: {e}"),
        });
    }
    said
}

/// Waits (up to the entry's `switch_timeout`) until the card's path is a block device that
/// opens and has a size: right after a switch the reader may not have it yet. Returns the
/// device the path resolves to.
pub async fn wait_for_card(m: &SdMuxEntry) -> Result<PathBuf, MuxError> {
    let started = Instant::now();
    let mut last;
    loop {
        match probe(&m.card) {
            Ok(dev) => return Ok(dev),
            Err(why) => last = why,
        }
        if started.elapsed() >= m.switch_timeout {
            return Err(MuxError::NoCard {
                path: m.card.display().to_string(),
                waited: m.switch_timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The card's device if it is there and readable with a size, or what is not yet so.
fn probe(path: &Path) -> Result<PathBuf, String> {
    let dev = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = std::fs::metadata(&dev).map_err(|e| format!("{}: {e}", dev.display()))?;
    if !meta.file_type().is_block_device() {
        return Err(format!("{} is not a block device", dev.display()));
    }
    let mut f = File::open(&dev).map_err(|e| format!("{} does not open: {e}", dev.display()))?;
    match f.seek(SeekFrom::End(0)) {
        Ok(0) => Err(format!("{} has no medium yet (size 0)", dev.display())),
        Ok(_) => Ok(dev),
        Err(e) => Err(format!("{}: {e}", dev.display())),
    }
}

/// Checks that `dev` (what the card's path resolves to) is the inventory's card and free: not
/// mounted (itself or a partition), not held by another driver (device mapper, RAID), and of
/// the inventory's size within its tolerance. Returns its size.
pub fn check_card(m: &SdMuxEntry, dev: &Path) -> Result<u64, MuxError> {
    let path = m.card.display().to_string();
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| MuxError::NotTheCard {
            path: path.clone(),
            why: format!("{} has no device name", dev.display()),
        })?
        .to_string();
    let sys = Path::new("/sys/class/block").join(&name);
    if !sys.exists() {
        return Err(MuxError::NotTheCard {
            path,
            why: format!(
                "{} is not a whole disk this kernel lists in /sys/class/block",
                dev.display()
            ),
        });
    }
    if sys.join("partition").exists() {
        return Err(MuxError::NotTheCard {
            path,
            why: format!("{} is a partition; give the whole card's path", dev.display()),
        });
    }
    let in_use = |why: String| MuxError::InUse {
        path: path.clone(),
        dev: dev.display().to_string(),
        why,
    };
    // The card and its partitions, by name (sdb, sdb1, ...; mmcblk0, mmcblk0p1; loop3, loop3p1).
    let mut names = vec![name.clone()];
    if let Ok(dir) = std::fs::read_dir(&sys) {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&name) && e.path().join("partition").exists() {
                names.push(n);
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(io("reading /proc/self/mounts"))?;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(source), Some(at)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(source) = source.strip_prefix("/dev/") else {
            continue;
        };
        let resolved = std::fs::canonicalize(Path::new("/dev").join(source)).unwrap_or_default();
        let sname = resolved.file_name().and_then(|n| n.to_str()).unwrap_or(source);
        if names.iter().any(|n| n == sname) {
            return Err(in_use(format!("/dev/{sname} is mounted at {at}")));
        }
    }
    for n in &names {
        let holders = Path::new("/sys/class/block").join(n).join("holders");
        if let Some(h) = std::fs::read_dir(&holders).ok().and_then(|mut d| d.next()) {
            let h = h.map_err(io(format!("reading {}", holders.display())))?;
            return Err(in_use(format!(
                "/dev/{n} is held by {}",
                h.file_name().to_string_lossy()
            )));
        }
    }
    let size = File::open(dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(io(format!("reading the size of {}", dev.display())))?;
    if size.abs_diff(m.card_size) > m.size_tolerance {
        return Err(MuxError::Size {
            path,
            actual: size,
            expected: m.card_size,
            tolerance: m.size_tolerance,
        });
    }
    Ok(size)
}

/// The byte ranges of a file that hold data (its holes left out), through `SEEK_DATA` and
/// `SEEK_HOLE`; a file system without them gives the whole file as one range.
pub fn mapped_ranges(f: &File, len: u64) -> Result<Vec<(u64, u64)>, std::io::Error> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut ranges = Vec::new();
    let mut at = 0u64;
    while at < len {
        // SAFETY: lseek on a descriptor this function borrows; no memory is passed.
        let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // No data past `at`.
            }
            if e.raw_os_error() == Some(libc::EINVAL) && at == 0 {
                return Ok(vec![(0, len)]); // No SEEK_DATA here: all of it.
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (start, end) = (data as u64, (hole as u64).min(len));
        if end > start {
            ranges.push((start, end));
        }
        at = end.max(start + 1);
    }
    Ok(ranges)
}

/// What writing an image to a card did.
#[derive(Debug, Clone, PartialEq)]
pub struct Flashed {
    pub image_bytes: u64,
    /// Bytes written (the image's mapped ranges) and read back equal.
    pub written: u64,
    pub ranges: usize,
    pub write_s: f64,
    pub verify_s: f64,
}

impl Flashed {
    /// The write's rate in MB/s (10^6 bytes), as card makers give theirs.
    pub fn write_mb_s(&self) -> f64 {
        self.written as f64 / 1e6 / self.write_s.max(1e-9)
    }
}

/// The card switched here, awaited, checked (the inventory's, not mounted, its size), `image`
/// written and read back; the mux is left on this machine (the caller gives it back).
pub async fn write_image(mux: &SdMuxEntry, image: &Path, say: &(dyn Fn(&str) + Sync)) -> Result<Flashed, MuxError> {
    say(&format!("card to this machine: {}", switch(mux, Side::Host).await?));
    let dev = wait_for_card(mux).await?;
    let size = check_card(mux, &dev)?;
    say(&format!(
        "{} is {} ({size} bytes), not mounted: writing {}",
        mux.card.display(),
        dev.display(),
        image.display()
    ));
    let (image, dev2) = (image.to_path_buf(), dev.clone());
    let progress = {
        let name = dev.display().to_string();
        move |l: String| eprintln!("nexus-hil: {name}: {l}")
    };
    let r = tokio::task::spawn_blocking(move || flash(&image, &dev2, size, &progress))
        .await
        .map_err(|e| MuxError::Io {
            what: "the writing thread".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    r
}

/// How much is written or read at a time.
const CHUNK: usize = 4 << 20;

/// Writes `image`'s mapped ranges to the card `dev` (opened exclusively: the kernel refuses a
/// mounted or held device), syncs it, drops the kernel's cached copy and reads every range back,
/// comparing it with the image. `progress` hears a line now and then (bytes so far, MB/s).
pub fn flash(image: &Path, dev: &Path, card_size: u64, progress: &dyn Fn(String)) -> Result<Flashed, MuxError> {
    let img = File::open(image).map_err(io(format!("opening the image {}", image.display())))?;
    let len = img
        .metadata()
        .map_err(io(format!("reading {}", image.display())))?
        .len();
    if len > card_size {
        return Err(MuxError::TooLarge {
            image: image.display().to_string(),
            needs: len,
            card: card_size,
        });
    }
    let ranges = mapped_ranges(&img, len).map_err(io(format!("mapping the data of {}", image.display())))?;
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let card = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => MuxError::InUse {
                path: dev.display().to_string(),
                dev: dev.display().to_string(),
                why: "the kernel refused to open it exclusively (mounted or held)".into(),
            },
            _ => MuxError::Io {
                what: format!("opening {} to write", dev.display()),
                source: e,
            },
        })?;
    let mut buf = vec![0u8; CHUNK];
    let started = Instant::now();
    let mut said = Instant::now();
    let mut done = 0u64;
    for &(start, end) in &ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            img.read_exact_at(&mut buf[..n], at)
                .map_err(io(format!("reading {} at {at}", image.display())))?;
            card.write_all_at(&buf[..n], at)
                .map_err(io(format!("writing {} at {at}", dev.display())))?;
            at += n as u64;
            done += n as u64;
            if said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                progress(format!(
                    "written {} of {} MiB ({:.1} MB/s)",
                    done >> 20,
                    total >> 20,
                    done as f64 / 1e6 / started.elapsed().as_secs_f64()
                ));
            }
        }
    }
    card.sync_all().map_err(io(format!("syncing {}", dev.display())))?;
    let write_s = started.elapsed().as_secs_f64();
    drop(card);
    progress(format!(
        "written {} MiB in {write_s:.1} s; reading it back",
        total >> 20
    ));
    let verify_started = Instant::now();
    let back = File::open(dev).map_err(io(format!("opening {} to read back", dev.display())))?;
    drop_cache(&back);
    let mut other = vec![0u8; CHUNK];
    for &(start, end) in &ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            img.read_exact_at(&mut buf[..n], at)
                .map_err(io(format!("reading {} at {at}", image.display())))?;
            (&back)
                .seek(SeekFrom::Start(at))
                .and_then(|_| (&back).read_exact(&mut other[..n]))
                .map_err(io(format!("reading {} back at {at}", dev.display())))?;
            if buf[..n] != other[..n] {
                return Err(MuxError::Verify { at, end: at + n as u64 });
            }
            at += n as u64;
        }
    }
    Ok(Flashed {
        image_bytes: len,
        written: total,
        ranges: ranges.len(),
        write_s,
        verify_s: verify_started.elapsed().as_secs_f64(),
    })
}

/// Drops the kernel's cached pages of a block device, so that reading it back reads the card.
pub(super) fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // BLKFLSBUF: _IO(0x12, 97).
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    // SAFETY: ioctl and fadvise on a descriptor borrowed for the call; no memory is passed.
    unsafe {
        libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0);
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_image_maps_to_its_data_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[2u8; 8192], 32 << 20).unwrap();
        f.sync_all().unwrap();
        let ranges = mapped_ranges(&f, 64 << 20).unwrap();
        let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        assert!(ranges.len() >= 2, "{ranges:?}");
        assert!(ranges[0].0 == 0 && ranges.iter().any(|(s, e)| *s <= 32 << 20 && *e >= (32 << 20) + 8192));
        // File systems map data in their own blocks; the holes are skipped.
        assert!(total < 4 << 20, "{total} bytes mapped of 64 MiB: {ranges:?}");
    }

    /// The read-back catches a card that does not keep what it was sent: here the "card" (a
    /// file) loses a byte between the write and the read-back, as a failing card would.
    #[test]
    fn a_card_that_loses_a_write_fails_the_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        let img = File::create(&image).unwrap();
        img.set_len(16 << 20).unwrap();
        img.write_all_at(&[7u8; 1 << 20], 8 << 20).unwrap();
        img.sync_all().unwrap();
        let card = dir.path().join("card");
        File::create(&card).unwrap().set_len(32 << 20).unwrap();

        let f = flash(&image, &card, 32 << 20, &|_| {}).unwrap();
        assert_eq!((f.image_bytes, f.written), (16 << 20, f.written));
        assert!(f.written >= 1 << 20 && f.written < 4 << 20, "{f:?}");

        let lose = |line: String| {
            if line.contains("reading it back") {
                File::options()
                    .write(true)
                    .open(&card)
                    .unwrap()
                    .write_all_at(&[0], (8 << 20) + 4242)
                    .unwrap();
            }
        };
        match flash(&image, &card, 32 << 20, &lose) {
            Err(MuxError::Verify { at, end }) => assert!(at <= (8 << 20) + 4242 && end > (8 << 20) + 4242),
            other => panic!("a lost write must fail the read-back: {other:?}"),
        }
        let e = flash(&image, &card, 8 << 20, &|_| {}).unwrap_err();
        assert!(matches!(e, MuxError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn the_commands_of_each_driver() {
        let entry = |driver| SdMuxEntry {
            driver,
            control: "/dev/sg1".into(),
            card: "/dev/disk/by-id/usb-LinuxAut_sdmux_HS-SD_MMC_1-0:0".into(),
            card_size: 1 << 30,
            size_tolerance: 0,
            host: Some("mux host".into()),
            dut: Some("mux dut".into()),
            switch_timeout: Duration::from_secs(1),
            new_card: None,
        };
        assert_eq!(
            command_line(&entry(SdMuxDriverName::Usbsdmux), Side::Host),
            "usbsdmux '/dev/sg1' host"
        );
        assert_eq!(
            command_line(&entry(SdMuxDriverName::Usbsdmux), Side::Dut),
            "usbsdmux '/dev/sg1' dut"
        );
        assert_eq!(
            command_line(&entry(SdMuxDriverName::Sdwire), Side::Host),
            "sd-mux-ctrl --device-serial='/dev/sg1' --ts"
        );
        assert_eq!(command_line(&entry(SdMuxDriverName::Exec), Side::Dut), "mux dut");
    }

    #[tokio::test]
    async fn a_card_that_never_comes_is_named_with_what_was_seen() {
        let dir = tempfile::tempdir().unwrap();
        let m = SdMuxEntry {
            driver: SdMuxDriverName::Exec,
            control: String::new(),
            card: dir.path().join("by-id").join("card"),
            card_size: 1 << 30,
            size_tolerance: 0,
            host: Some("true".into()),
            dut: Some("true".into()),
            switch_timeout: Duration::from_millis(600),
            new_card: None,
        };
        let e = wait_for_card(&m).await.unwrap_err().to_string();
        assert!(e.contains("did not appear") && e.contains("No such file"), "{e}");
        std::fs::create_dir(dir.path().join("by-id")).unwrap();
        std::fs::write(&m.card, b"a file").unwrap();
        let e = wait_for_card(&m).await.unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
    }
}
