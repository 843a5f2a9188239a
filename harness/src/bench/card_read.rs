//! A power cut whose card is read before the device's own boot can replay or repair it: the
//! power off, the card switched to this machine by the bench's SD mux, awaited and checked as
//! `flash` checks it, its btrfs partition (found in the card's MBR by btrfs's magic) imaged into
//! the scenario's work folder with the device's layout (the partition at the SD-card image's
//! offset, all-zero blocks left as holes), the card switched back, then the image handed to the
//! reader that checks it while the power comes on and the device boots. Each step is bounded
//! and named in its error; the card goes back and the power comes on in every outcome (a step
//! dropped at its timeout too; Ctrl-C gives the card back through `sdmux::give_back_all`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::power::{switch, switch_on, Bench};
use super::sdmux::{self, MuxError, Side};
use crate::device::inventory::{PowerEntry, SdMuxEntry};
use crate::device::{Applied, FaultError, ReadCard};
use crate::image::sdcard::ROOT_START;
use crate::report::card::CardRead;

/// What can go wrong reading a card after a cut; each names the card and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Mux(#[from] MuxError),
    #[error(
        "no btrfs partition on the card at {card}: its MBR lists {seen}; is it the device's card \
         (an MBR with the root file system as btrfs)?"
    )]
    NoBtrfs { card: String, seen: String },
    #[error(
        "reading the card's btrfs partition ({bytes} bytes at {card}) did not finish within {limit:?}, \
         {done} bytes in: a failing card or reader (try another)"
    )]
    TooSlow {
        card: String,
        bytes: u64,
        done: u64,
        limit: Duration,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReadError {
    let what = what.into();
    move |source| ReadError::Io { what, source }
}

/// The slowest a card may be read before the read is given up: 1 MB/s, after a minute.
const READ_FLOOR_BYTES_PER_S: u64 = 1_000_000;
const READ_GRACE: Duration = Duration::from_secs(60);

/// btrfs's magic, 64 bytes into its superblock at 64 KiB.
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
const BTRFS_MAGIC_AT: u64 = 0x1_0040;

impl Bench {
    /// The power cut of `fault.power_cut` with `inspect`: off, the card read into `image` and
    /// given back, `read` run on it, on, and the wait for SSH and both D-Bus names.
    pub(super) async fn power_cut_and_read(&self, image: &Path, read: &ReadCard) -> Result<Applied, FaultError> {
        let p = self.power()?;
        let m = self.sdmux.as_ref().ok_or_else(|| {
            FaultError::Unsupported(
                "fault.power_cut with `inspect` reads the card through the bench's SD mux: add [device.sdmux] \
                 to this device's entry in targets.toml (docs/real-hardware.md)"
                    .into(),
            )
        })?;
        let before = self.boot_id().await;
        let off = switch(p, false).await?;
        let mut back = GiveBack {
            mux: Some(m.clone()),
            power: Some(p.clone()),
        };
        tokio::time::sleep(p.off_time).await;
        let started = Instant::now();
        let imaged = read_card(m, image).await;
        let returned = sdmux::switch(m, Side::Dut).await;
        back.mux = None;
        let read_s = started.elapsed().as_secs_f64();
        // The image is checked while the device boots: its power stays off no longer than the
        // read (the run's lease on the device is refreshed only while it answers).
        let checking = async {
            match (&imaged, &returned) {
                (Ok(r), Ok(_)) => Some(read(CardRead { read_s, ..r.clone() }).await),
                _ => None,
            }
        };
        let booting = async {
            let on = switch_on(p).await.map_err(|e| e.to_string())?;
            let ready = self.wait_ready(p.boot_timeout, before.as_deref()).await;
            Ok::<_, String>((on, ready))
        };
        let (checked, booted) = tokio::join!(checking, booting);
        back.power = None;
        let mut said = vec![format!("power off: {off}")];
        match &imaged {
            Ok(r) => said.push(format!(
                "the card's btrfs partition ({} bytes at byte {}, {} of data) imaged to {} in {read_s:.1} s",
                r.partition_bytes, r.partition_start, r.data_bytes, r.image
            )),
            Err(e) => said.push(format!("the card was not read: {e}")),
        }
        match &returned {
            Ok(done) => said.push(format!("the card is back on the device: {done}")),
            Err(e) => said.push(format!("THE CARD STAYS ON THIS MACHINE: {e}")),
        }
        match &checked {
            Some(Ok(c)) => said.push(format!(
                "{} check(s) of the card, {} failed",
                c.checks.len(),
                c.failed().len()
            )),
            Some(Err(e)) => said.push(format!("the card's image could not be checked: {e}")),
            None => {}
        }
        let failed = |said: &[String]| FaultError::Failed(said.join("; "));
        match booted {
            Ok((on, Ok(t))) => said.push(format!("on: {on}; ready {:.1} s after", t.as_secs_f64())),
            Ok((on, Err(e))) => {
                said.push(format!("on: {on}; {e}"));
                return Err(failed(&said));
            }
            Err(e) => {
                said.push(e);
                return Err(failed(&said));
            }
        }
        if imaged.is_err() || returned.is_err() || matches!(checked, Some(Err(_))) {
            return Err(failed(&said));
        }
        Ok(Applied {
            ports: None,
            note: Some(said.join("; ")),
        })
    }
}

/// Gives the card back and the power on if the read is dropped half-way (its step's timeout):
/// what has not been done yet is done in the background.
pub(super) struct GiveBack {
    pub(super) mux: Option<SdMuxEntry>,
    pub(super) power: Option<PowerEntry>,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        let (mux, power) = (self.mux.take(), self.power.take());
        if mux.is_none() && power.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(m) = mux {
                    if let Err(e) = sdmux::switch(&m, Side::Dut).await {
                        eprintln!("nexus-hil: THE CARD STAYS ON THIS MACHINE: {e}");
                    }
                }
                if let Some(p) = power {
                    if let Err(e) = switch_on(&p).await {
                        eprintln!("nexus-hil: {e}");
                    }
                }
            });
        }
    }
}

/// The card switched here, awaited, checked (the inventory's, not mounted, its size) and its
/// btrfs partition imaged into `image`; the mux is left on this machine (the caller gives it
/// back).
async fn read_card(m: &SdMuxEntry, image: &Path) -> Result<CardRead, ReadError> {
    sdmux::switch(m, Side::Host).await?;
    let dev = sdmux::wait_for_card(m).await?;
    sdmux::check_card(m, &dev)?;
    let card = m.card.display().to_string();
    let (dev2, image2, card2) = (dev.clone(), image.to_path_buf(), card.clone());
    let (start, bytes, data) = tokio::task::spawn_blocking(move || image_btrfs(&dev2, &card2, &image2))
        .await
        .map_err(|e| ReadError::Io {
            what: "the reading thread".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(CardRead {
        card,
        partition_start: start,
        partition_bytes: bytes,
        data_bytes: data,
        image: image.display().to_string(),
        read_s: 0.0,
        check_s: 0.0,
        checks: Vec::new(),
    })
}

/// The btrfs partition of the card `dev` copied into `image` at the SD-card image's offset
/// ([`ROOT_START`]), so that the checks read it as they read any card; returns the partition's
/// start and length on the card and the bytes of data copied.
fn image_btrfs(dev: &Path, card: &str, image: &Path) -> Result<(u64, u64, u64), ReadError> {
    let f = File::open(dev).map_err(io(format!("opening {} ({card}) to read", dev.display())))?;
    // A reader that stayed plugged in may hold the card's old blocks in the page cache.
    sdmux::drop_cache(&f);
    let (start, len) = btrfs_partition(&f, card)?;
    copy_range(&f, start, len, image, card).map(|data| (start, len, data))
}

/// The MBR partition of the card that holds btrfs: its byte offset and length.
fn btrfs_partition(f: &File, card: &str) -> Result<(u64, u64), ReadError> {
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0)
        .map_err(io(format!("reading the partition table of {card}")))?;
    let mut seen = Vec::new();
    if mbr[510..512] == [0x55, 0xAA] {
        for n in 0..4 {
            let e = &mbr[446 + 16 * n..446 + 16 * (n + 1)];
            let kind = e[4];
            let lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            if kind == 0 || sectors == 0 {
                continue;
            }
            let (start, len) = (lba * 512, sectors * 512);
            let mut magic = [0u8; 8];
            let is_btrfs = len > BTRFS_MAGIC_AT + 8
                && f.read_exact_at(&mut magic, start + BTRFS_MAGIC_AT).is_ok()
                && &magic == BTRFS_MAGIC;
            if is_btrfs {
                return Ok((start, len));
            }
            seen.push(format!(
                "partition {} (type {kind:#04x}, {len} bytes at {start})",
                n + 1
            ));
        }
    }
    Err(ReadError::NoBtrfs {
        card: card.to_string(),
        seen: if seen.is_empty() {
            "no partition".into()
        } else {
            seen.join(", ")
        },
    })
}

/// Copies `len` bytes from `start` of `f` to [`ROOT_START`] of a new sparse `image`, leaving
/// all-zero blocks as holes, within the read's time limit; the bytes of data copied.
fn copy_range(f: &File, start: u64, len: u64, image: &Path, card: &str) -> Result<u64, ReadError> {
    const CHUNK: usize = 4 << 20;
    // The unit of holes in the image (btrfs's data is scattered in small extents).
    const BLOCK: usize = 64 << 10;
    let _ = std::fs::remove_file(image);
    let out = File::create(image).map_err(io(format!("making {}", image.display())))?;
    out.set_len(ROOT_START + len)
        .map_err(io(format!("sizing {}", image.display())))?;
    let limit = READ_GRACE + Duration::from_secs(len / READ_FLOOR_BYTES_PER_S);
    let started = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let (mut at, mut data) = (0u64, 0u64);
    while at < len {
        if started.elapsed() > limit {
            return Err(ReadError::TooSlow {
                card: card.to_string(),
                bytes: len,
                done: at,
                limit,
            });
        }
        let n = ((len - at) as usize).min(CHUNK);
        f.read_exact_at(&mut buf[..n], start + at)
            .map_err(io(format!("reading {card} at byte {}", start + at)))?;
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block.iter().any(|b| *b != 0) {
                let to = ROOT_START + at + (i * BLOCK) as u64;
                out.write_all_at(block, to)
                    .map_err(io(format!("writing {}", image.display())))?;
                data += block.len() as u64;
            }
        }
        at += n as u64;
    }
    out.sync_all().map_err(io(format!("syncing {}", image.display())))?;
    Ok(data)
}

/// Where a scenario's card read goes in its work folder.
pub fn image_path(work: &Path) -> PathBuf {
    work.join("card-after-cut.img")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card of the device's layout in a file: an MBR with a FAT partition and a btrfs one
    /// (only its magic), data at a few places of the btrfs one.
    fn card(dir: &Path, btrfs: bool) -> PathBuf {
        let p = dir.join("card.img");
        let f = File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        let mut mbr = [0u8; 512];
        let entry = |mbr: &mut [u8; 512], n: usize, kind: u8, lba: u32, sectors: u32| {
            let e = &mut mbr[446 + 16 * n..446 + 16 * (n + 1)];
            e[4] = kind;
            e[8..12].copy_from_slice(&lba.to_le_bytes());
            e[12..16].copy_from_slice(&sectors.to_le_bytes());
        };
        entry(&mut mbr, 0, 0x0c, 2048, 4096);
        entry(&mut mbr, 1, 0x83, 8192, 16384);
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        f.write_all_at(&mbr, 0).unwrap();
        if btrfs {
            f.write_all_at(BTRFS_MAGIC, 8192 * 512 + BTRFS_MAGIC_AT).unwrap();
        }
        f.write_all_at(&[7u8; 4096], 8192 * 512 + (5 << 20)).unwrap();
        p
    }

    #[test]
    fn the_btrfs_partition_is_found_by_its_magic_and_imaged_at_the_cards_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = card(dir.path(), true);
        let image = dir.path().join("out.img");
        let (start, len, data) = image_btrfs(&p, "test card", &image).unwrap();
        assert_eq!((start, len), (8192 * 512, 16384 * 512));
        assert!(
            data >= 4096 && data < len,
            "all-zero blocks are not copied: {data} of {len}"
        );
        let out = File::open(&image).unwrap();
        assert_eq!(out.metadata().unwrap().len(), ROOT_START + len);
        let mut magic = [0u8; 8];
        out.read_exact_at(&mut magic, ROOT_START + BTRFS_MAGIC_AT).unwrap();
        assert_eq!(&magic, BTRFS_MAGIC);
        let mut seven = [0u8; 4096];
        out.read_exact_at(&mut seven, ROOT_START + (5 << 20)).unwrap();
        assert!(seven.iter().all(|b| *b == 7));
    }

    #[test]
    fn a_card_without_btrfs_is_named_with_what_its_mbr_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = card(dir.path(), false);
        let e = image_btrfs(&p, "the bench's card", &dir.path().join("out.img"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no btrfs partition on the card at the bench's card")
                && e.contains("partition 1 (type 0x0c")
                && e.contains("partition 2 (type 0x83"),
            "{e}"
        );
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let e = image_btrfs(&p, "c", &dir.path().join("out.img"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lists no partition"), "{e}");
    }
}
