//! The write log QEMU's `blklogwrites` block driver keeps of a guest's disk, in the
//! dm-log-writes format: a superblock (magic, version, entry count, sector size), then per
//! entry a sector-padded header (sector, sector count, flags, data length) followed by the
//! written data, none for a flush or a discard. [`Replayer`] rebuilds the disk as it was after
//! any prefix of the log onto a copy of the disk the guest started from; [`WriteLog::apply`]
//! applies a span of it as a card without power-loss protection may have kept it (some writes
//! never kept, one kept only up to a sector: a [`Variant`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The superblock's magic number.
const MAGIC: u64 = 0x006a_7366_7773_6872;
/// The entry flags.
pub const FLUSH: u64 = 1;
pub const FUA: u64 = 1 << 1;
pub const DISCARD: u64 = 1 << 2;
pub const MARK: u64 = 1 << 3;
/// The guest's sectors are always 512 bytes in the log's `sector` and `nr_sectors`.
const DISK_SECTOR: u64 = 512;

/// A write log that cannot be read, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a blklogwrites log ({what}); was the disk attached with driver=blklogwrites?")]
    Format { path: PathBuf, what: String },
}

/// One logged write, flush or discard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The guest's first sector (512 bytes).
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: u64,
    /// Where the entry's data starts in the log file.
    data_at: u64,
}

impl Entry {
    pub fn is_flush(&self) -> bool {
        self.flags & FLUSH != 0
    }

    pub fn is_discard(&self) -> bool {
        self.flags & DISCARD != 0
    }

    /// Written with FUA: on the card once acknowledged (logged), whatever comes after.
    pub fn is_fua(&self) -> bool {
        self.flags & FUA != 0
    }

    /// A write or discard of the guest's disk (not a flush, not a mark).
    pub fn is_write(&self) -> bool {
        !self.is_flush() && self.flags & MARK == 0 && self.nr_sectors > 0
    }

    /// Bytes of the guest's disk the entry covers.
    pub fn bytes(&self) -> u64 {
        self.nr_sectors * DISK_SECTOR
    }

    /// An entry with these flags and no data, for tests of what reads entries.
    #[cfg(test)]
    pub fn for_test(flags: u64) -> Self {
        Self::for_test_sized(flags, if flags & FLUSH != 0 { 0 } else { 1 })
    }

    /// The same, `nr_sectors` long.
    #[cfg(test)]
    pub fn for_test_sized(flags: u64, nr_sectors: u64) -> Self {
        Self {
            sector: 0,
            nr_sectors,
            flags,
            data_at: 0,
        }
    }
}

/// How a state differs from the log's in-order prefix: writes the card never kept (log entry
/// indices), and one write it kept only its first sectors of (index, 512-byte sectors kept),
/// the rest of that write's sectors holding what they held before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Variant {
    pub dropped: Vec<usize>,
    pub torn: Option<(usize, u64)>,
}

/// A write log, its entries read (not their data).
pub struct WriteLog {
    path: PathBuf,
    file: File,
    pub entries: Vec<Entry>,
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

impl WriteLog {
    /// Reads the log's superblock and entry headers. Entries past the end of the file (QEMU
    /// killed mid-entry) are dropped: the disk never acknowledged them.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let format = |what: String| LogError::Format {
            path: path.to_owned(),
            what,
        };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut sb = [0u8; 28];
        file.read_exact(&mut sb)
            .map_err(|_| format("shorter than its superblock".into()))?;
        if le64(&sb[0..]) != MAGIC {
            return Err(format(format!("magic {:#x}", le64(&sb[0..]))));
        }
        if le64(&sb[8..]) != 1 {
            return Err(format(format!("version {}", le64(&sb[8..]))));
        }
        let count = le64(&sb[16..]);
        let sector_size = u64::from(u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]));
        if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(format(format!("sector size {sector_size}")));
        }
        let pad = |n: u64| n.div_ceil(sector_size) * sector_size;
        let mut entries = Vec::new();
        let mut at = sector_size;
        let mut header = [0u8; 32];
        for _ in 0..count {
            if at + 32 > len {
                break;
            }
            file.seek(SeekFrom::Start(at)).map_err(io)?;
            file.read_exact(&mut header).map_err(io)?;
            let e = Entry {
                sector: le64(&header[0..]),
                nr_sectors: le64(&header[8..]),
                flags: le64(&header[16..]),
                data_at: at + sector_size,
            };
            let data = if e.is_discard() || e.flags & MARK != 0 {
                if e.flags & MARK != 0 {
                    pad(le64(&header[24..]))
                } else {
                    0
                }
            } else {
                pad(e.bytes())
            };
            if e.data_at + data > len {
                break;
            }
            at = e.data_at + data;
            entries.push(e);
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            entries,
        })
    }

    /// The number of entries applied at each flush: the states the disk promised to keep.
    pub fn flush_points(&self) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_flush())
            .map(|(i, _)| i + 1)
            .collect()
    }

    /// The entries applied at the last flush (0 if none): what a power cut leaves.
    pub fn last_flush(&self) -> usize {
        self.flush_points().last().copied().unwrap_or(0)
    }

    fn data(&self, e: &Entry, buf: &mut Vec<u8>) -> Result<(), LogError> {
        buf.resize(e.bytes() as usize, 0);
        self.file.read_exact_at(buf, e.data_at).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Applies entry `i` to `disk`, only its first `keep` sectors if given; discards become
    /// holes (read as zeros).
    fn apply_entry(
        &self,
        i: usize,
        disk: &File,
        disk_path: &Path,
        keep: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let io = |source| LogError::Io {
            path: disk_path.to_owned(),
            source,
        };
        let e = self.entries[i];
        if !e.is_write() {
            return Ok(());
        }
        let sectors = keep.unwrap_or(e.nr_sectors).min(e.nr_sectors);
        let at = e.sector * DISK_SECTOR;
        if e.is_discard() {
            return punch_hole(disk, at, sectors * DISK_SECTOR).map_err(io);
        }
        self.data(&e, buf)?;
        disk.write_all_at(&buf[..(sectors * DISK_SECTOR) as usize], at)
            .map_err(io)
    }

    /// Applies entries `from..to` to `disk` (which holds the state after `from` of them) as
    /// `variant` says: its dropped entries skipped, its torn one cut after its sectors.
    pub fn apply(&self, disk: &Path, from: usize, to: usize, variant: &Variant) -> Result<(), LogError> {
        let io = |source| LogError::Io {
            path: disk.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new().write(true).open(disk).map_err(io)?;
        let mut buf = Vec::new();
        for i in from..to.min(self.entries.len()) {
            if variant.dropped.contains(&i) {
                continue;
            }
            let keep = variant.torn.filter(|(t, _)| *t == i).map(|(_, n)| n);
            self.apply_entry(i, &file, disk, keep, &mut buf)?;
        }
        file.sync_all().map_err(io)
    }
}

/// Applies a log's entries in order to a disk image, from its first entry on.
pub struct Replayer<'a> {
    log: &'a WriteLog,
    disk: File,
    disk_path: PathBuf,
    applied: usize,
    buf: Vec<u8>,
}

impl<'a> Replayer<'a> {
    /// Starts from `disk`, which must hold what the guest's disk held when the log began.
    pub fn new(log: &'a WriteLog, disk: &Path) -> Result<Self, LogError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(disk)
            .map_err(|source| LogError::Io {
                path: disk.to_owned(),
                source,
            })?;
        Ok(Self {
            log,
            disk: file,
            disk_path: disk.to_owned(),
            applied: 0,
            buf: Vec::new(),
        })
    }

    /// Applies entries until `upto` have been; discards become holes (reads as zeros).
    pub fn advance_to(&mut self, upto: usize) -> Result<(), LogError> {
        while self.applied < upto.min(self.log.entries.len()) {
            self.log
                .apply_entry(self.applied, &self.disk, &self.disk_path, None, &mut self.buf)?;
            self.applied += 1;
        }
        self.disk.flush().map_err(|source| LogError::Io {
            path: self.disk_path.clone(),
            source,
        })
    }
}

/// Deallocates `len` bytes at `at`, so they read as zeros (falls back to writing zeros).
fn punch_hole(f: &File, at: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            at as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Copies `from` to `to` keeping holes (a card image is mostly empty).
pub fn sparse_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let st = std::process::Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp {} {} failed ({st})",
            from.display(),
            to.display()
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log in the format QEMU writes, for tests: `(sector, flags, data)` entries.
    pub(crate) fn write_log(path: &Path, entries: &[(u64, u64, Vec<u8>)], claimed: Option<u64>) {
        let mut f = File::create(path).unwrap();
        let mut sb = vec![0u8; 512];
        sb[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        sb[8..16].copy_from_slice(&1u64.to_le_bytes());
        sb[16..24].copy_from_slice(&claimed.unwrap_or(entries.len() as u64).to_le_bytes());
        sb[24..28].copy_from_slice(&512u32.to_le_bytes());
        f.write_all(&sb).unwrap();
        for (sector, flags, data) in entries {
            let mut h = vec![0u8; 512];
            let n = if *flags & DISCARD != 0 {
                8
            } else {
                (data.len() as u64) / 512
            };
            h[0..8].copy_from_slice(&sector.to_le_bytes());
            h[8..16].copy_from_slice(&n.to_le_bytes());
            h[16..24].copy_from_slice(&flags.to_le_bytes());
            f.write_all(&h).unwrap();
            if *flags & DISCARD == 0 {
                f.write_all(data).unwrap();
            }
        }
    }

    #[test]
    fn a_disk_is_rebuilt_as_it_was_at_each_point_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log_path, disk) = (dir.path().join("sd.log"), dir.path().join("sd.img"));
        std::fs::write(&disk, vec![7u8; 8192]).unwrap();
        let a = vec![1u8; 1024];
        let b = vec![2u8; 512];
        write_log(
            &log_path,
            &[
                (0, 0, a.clone()),    // sectors 0-1 := 1
                (0, FLUSH, vec![]),   // flush: 2 entries applied
                (2, 0, b.clone()),    // sector 2 := 2
                (8, DISCARD, vec![]), // sectors 8-15 discarded
                (0, FLUSH, vec![]),   // flush: 5 applied
                (4, 0, b.clone()),    // sector 4 := 2, never flushed
            ],
            None,
        );
        let log = WriteLog::open(&log_path).unwrap();
        assert_eq!(log.entries.len(), 6);
        assert_eq!(log.flush_points(), vec![2, 5]);
        assert_eq!(log.last_flush(), 5);
        let mut r = Replayer::new(&log, &disk).unwrap();
        r.advance_to(2).unwrap();
        let img = std::fs::read(&disk).unwrap();
        assert!(img[..1024].iter().all(|&x| x == 1) && img[1024..].iter().all(|&x| x == 7));
        r.advance_to(log.last_flush()).unwrap();
        let img = std::fs::read(&disk).unwrap();
        assert!(img[1024..1536].iter().all(|&x| x == 2));
        assert!(img[4096..8192].iter().all(|&x| x == 0), "the discard reads as zeros");
        assert!(
            img[2048..2560].iter().all(|&x| x == 7),
            "the unflushed write is not there"
        );
        r.advance_to(6).unwrap();
        assert!(std::fs::read(&disk).unwrap()[2048..2560].iter().all(|&x| x == 2));
    }

    #[test]
    fn a_log_cut_mid_entry_keeps_the_whole_entries_and_a_wrong_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sd.log");
        write_log(&p, &[(0, 0, vec![1u8; 512]), (0, FLUSH, vec![])], Some(3));
        // The superblock claims 3 entries; QEMU died before the third was written.
        assert_eq!(WriteLog::open(&p).unwrap().entries.len(), 2);
        std::fs::write(&p, vec![0u8; 600]).unwrap();
        let e = WriteLog::open(&p).err().unwrap().to_string();
        assert!(e.contains("not a blklogwrites log") && e.contains("magic"), "{e}");
    }

    #[test]
    fn a_dropped_write_is_not_on_the_card_and_the_writes_after_it_are() {
        let dir = tempfile::tempdir().unwrap();
        let (log_path, disk) = (dir.path().join("sd.log"), dir.path().join("sd.img"));
        std::fs::write(&disk, vec![7u8; 8192]).unwrap();
        write_log(
            &log_path,
            &[
                (0, 0, vec![1u8; 512]),   // 0: sector 0 := 1
                (0, FLUSH, vec![]),       // 1
                (1, 0, vec![2u8; 512]),   // 2: sector 1 := 2, dropped
                (2, 0, vec![3u8; 512]),   // 3: sector 2 := 3
                (1, 0, vec![4u8; 1024]),  // 4: sectors 1-2 := 4, dropped
                (3, FUA, vec![5u8; 512]), // 5: sector 3 := 5
                (0, FLUSH, vec![]),       // 6
            ],
            None,
        );
        let log = WriteLog::open(&log_path).unwrap();
        assert!(log.entries[5].is_fua() && !log.entries[3].is_fua());
        assert!(log.entries[2].is_write() && !log.entries[1].is_write());
        Replayer::new(&log, &disk).unwrap().advance_to(2).unwrap();
        let v = Variant {
            dropped: vec![2, 4],
            torn: None,
        };
        log.apply(&disk, 2, 6, &v).unwrap();
        let img = std::fs::read(&disk).unwrap();
        let sector = |n: usize| &img[n * 512..(n + 1) * 512];
        assert!(sector(0).iter().all(|&x| x == 1), "before the epoch: kept");
        assert!(
            sector(1).iter().all(|&x| x == 7),
            "both writes of sector 1 dropped: the old content"
        );
        assert!(
            sector(2).iter().all(|&x| x == 3),
            "the later write that covered it dropped too"
        );
        assert!(
            sector(3).iter().all(|&x| x == 5),
            "the write after the dropped ones is there"
        );
        assert!(img[2048..].iter().all(|&x| x == 7));
    }

    #[test]
    fn a_torn_write_keeps_its_first_sectors_and_the_old_content_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log_path, disk) = (dir.path().join("sd.log"), dir.path().join("sd.img"));
        std::fs::write(&disk, vec![7u8; 8192]).unwrap();
        let mut data = Vec::new();
        for s in 0..8u8 {
            data.extend(std::iter::repeat_n(10 + s, 512));
        }
        write_log(
            &log_path,
            &[
                (0, FLUSH, vec![]),      // 0
                (2, 0, data.clone()),    // 1: sectors 2-9 := 10..17, torn after 3
                (12, 0, vec![9u8; 512]), // 2: sector 12 := 9
                (0, FLUSH, vec![]),      // 3
            ],
            None,
        );
        let log = WriteLog::open(&log_path).unwrap();
        let v = Variant {
            dropped: vec![],
            torn: Some((1, 3)),
        };
        log.apply(&disk, 1, 3, &v).unwrap();
        let img = std::fs::read(&disk).unwrap();
        assert_eq!(img.len(), 8192, "the card keeps its size");
        let sector = |n: usize| &img[n * 512..(n + 1) * 512];
        for n in 0..2 {
            assert!(sector(n).iter().all(|&x| x == 7), "sector {n} is not written");
        }
        for n in 2..5 {
            assert!(
                sector(n).iter().all(|&x| x == 10 + (n as u8 - 2)),
                "sector {n} is before the cut: new"
            );
        }
        for n in 5..10 {
            assert!(
                sector(n).iter().all(|&x| x == 7),
                "sector {n} is after the cut: the old content"
            );
        }
        assert!(
            sector(12).iter().all(|&x| x == 9),
            "the write after the torn one is there"
        );
        // The same span applied whole: every sector of the write is new.
        std::fs::write(&disk, vec![7u8; 8192]).unwrap();
        log.apply(&disk, 1, 3, &Variant::default()).unwrap();
        assert_eq!(&std::fs::read(&disk).unwrap()[1024..5120], &data[..]);
    }
}
