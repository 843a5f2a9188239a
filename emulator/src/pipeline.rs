//! The backup stream: a directory tree as tar, framed as an OpenPGP literal packet and encrypted,
//! into a file. Three threads: the reader (scan, read under the bandwidth cap, tar, frame), the
//! encrypter (SHA-1 MDC, AES-CFB, SHA-256 of the output: serial chains that run stitched on one
//! core, see [`crate::openpgp`]) and the writer, all at the configured low priority, joined by
//! small bounded channels so memory stays flat whatever the size.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::archive;
use crate::config::BackupConfig;
use crate::openpgp::{self, Encryptor, Plaintext};
use crate::snapshot::unix_now;
use crate::throttle::{lower_thread_priority, Cancelled, TokenBucket};

/// Chunks in flight between the reader and the writer.
const CHANNEL_DEPTH: usize = 4;

/// Progress of one run, readable from other threads; also carries the cancel request.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

impl Progress {
    /// File bytes read so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// File bytes to read in all (known once the tree is scanned).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Percent done, 0..=99 while running.
    pub fn percent(&self) -> u32 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        ((self.done().min(total) * 100) / total).min(99) as u32
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub file: fs::File,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Writes `members` of `dir` as an encrypted tar into `file`. `on_progress` gets the percent
/// after every chunk read. Fails with the first error (ENOSPC included) or when cancelled; the
/// caller removes the file then.
#[allow(clippy::too_many_arguments)]
pub fn encrypt_tree(
    dir: &Path,
    members: &[&str],
    file: fs::File,
    password: &str,
    config: &BackupConfig,
    literal_name: &str,
    progress: &Progress,
    on_progress: impl FnMut(u32),
) -> io::Result<Written> {
    let scan = archive::scan(dir, members)?;
    for s in &scan.skipped {
        tracing::warn!("{} is a socket; tar cannot hold it, left out", s.display());
    }
    progress.total.store(scan.content_bytes, Ordering::Relaxed);
    let (skesk, key) = openpgp::skesk_packet(password.as_bytes(), config.s2k_count)?;
    // Three stages on three threads: reading and tar beside the cipher's serial chains, and
    // the writes (which may wait for the disk) beside both.
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (ctx, crx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (prio_enc, prio_write) = (config.clone(), config.clone());
    let enc = Encryptor::new(&skesk, &key);
    drop(key);
    let encrypter = std::thread::Builder::new()
        .name("backup-encrypt".into())
        .spawn(move || {
            lower_thread_priority(&prio_enc);
            encrypt(enc, rx, ctx)
        })?;
    let flush_every = config.write_flush_bytes;
    let sync_parts = config.writer == crate::config::Writer::InPlace;
    let writer = std::thread::Builder::new().name("backup-write".into()).spawn(move || {
        lower_thread_priority(&prio_write);
        write_out(file, crx, flush_every, sync_parts)
    })?;
    let read_result = read_plain(&scan, config, literal_name, progress, on_progress, tx);
    let sha256 = encrypter
        .join()
        .map_err(|_| io::Error::other("backup encrypter thread panicked"))?;
    let write_result = writer
        .join()
        .map_err(|_| io::Error::other("backup writer thread panicked"))?;
    // The writer's error (e.g. ENOSPC) is the cause when both failed.
    match (read_result, write_result, sha256) {
        (_, Err(e), _) | (Err(e), _, _) => Err(e),
        (Ok(()), Ok(Some((file, size))), Some(sha256)) => Ok(Written { file, sha256, size }),
        (Ok(()), Ok(_), _) => Err(io::Error::other("backup stream ended early")),
    }
}

/// The reader: archives and frames the tree, sending plaintext chunks to the writer.
fn read_plain(
    scan: &archive::Scan,
    config: &BackupConfig,
    literal_name: &str,
    progress: &Progress,
    mut on_progress: impl FnMut(u32),
    tx: SyncSender<Vec<u8>>,
) -> io::Result<()> {
    let chunk = config.chunk_bytes;
    let mut bucket = TokenBucket::new(config.read_bytes_per_sec);
    let (mut plain, mut out) = Plaintext::start(literal_name, unix_now() as u32)?;
    let mut tar_bytes: Vec<u8> = Vec::with_capacity(chunk + 1024);
    let mut written_tar: u64 = 0;
    let cancelled = |_: Cancelled| io::Error::other("cancelled");
    let send = |buf: Vec<u8>| tx.send(buf).map_err(|_| io::Error::other("backup writer stopped"));
    let flush = |tar_bytes: &mut Vec<u8>, out: &mut Vec<u8>, plain: &mut Plaintext| -> io::Result<()> {
        plain.push(tar_bytes, out);
        tar_bytes.clear();
        if !out.is_empty() {
            send(std::mem::replace(out, Vec::with_capacity(chunk + 64)))?;
        }
        Ok(())
    };

    for entry in &scan.entries {
        if progress.cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let before = tar_bytes.len();
        archive::header(entry, &mut tar_bytes)?;
        written_tar += (tar_bytes.len() - before) as u64;
        if entry.meta.file_type().is_file() && entry.link_to.is_none() {
            let mut file_left = entry.meta.len();
            archive::content(entry, chunk, |data| {
                bucket.take(data.len() as u64, &progress.cancel).map_err(cancelled)?;
                tar_bytes.extend_from_slice(data);
                written_tar += data.len() as u64;
                let content = (data.len() as u64).min(file_left);
                file_left -= content;
                progress.done.fetch_add(content, Ordering::Relaxed);
                if tar_bytes.len() >= chunk {
                    flush(&mut tar_bytes, &mut out, &mut plain)?;
                    // CPU-friendly: give the automation a chance between chunks.
                    std::thread::yield_now();
                }
                on_progress(progress.percent());
                Ok(())
            })
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(e.kind(), format!("the snapshot changed while backed up: {e}"))
                } else {
                    e
                }
            })?;
        }
        if tar_bytes.len() >= chunk {
            flush(&mut tar_bytes, &mut out, &mut plain)?;
        }
    }
    archive::trailer(written_tar, &mut tar_bytes);
    flush(&mut tar_bytes, &mut out, &mut plain)?;
    plain.finish(&mut out);
    send(out)?;
    // An empty chunk marks the end, so the writer can tell a finished stream from an abort.
    send(Vec::new())
}

/// The middle stage: encrypts plaintext chunks in place and passes the framed, hashed
/// ciphertext on; returns the SHA-256 of all of it. An empty chunk ends the stream (and is passed
/// on); a closed channel aborts it (`None`).
fn encrypt(mut enc: Encryptor, rx: Receiver<Vec<u8>>, tx: SyncSender<Vec<u8>>) -> Option<[u8; 32]> {
    while let Ok(mut chunk) = rx.recv() {
        if chunk.is_empty() {
            let (out, sha256) = enc.finish();
            return tx.send(out).and_then(|_| tx.send(Vec::new())).ok().map(|_| sha256);
        }
        let out = enc.encrypt(&mut chunk);
        if !out.is_empty() && tx.send(out).is_err() {
            return None;
        }
    }
    None
}

/// The writer: writes the ciphertext, flushing behind every `flush_every` bytes (with
/// `sync_parts`, the test-only in-place writer, each part is made durable with fdatasync
/// instead); the file and its size, or `None` when the stream was aborted.
fn write_out(
    mut file: fs::File,
    rx: Receiver<Vec<u8>>,
    flush_every: u64,
    sync_parts: bool,
) -> io::Result<Option<(fs::File, u64)>> {
    let mut size = 0u64;
    let mut flushed = 0u64;
    let mut dropped = 0u64;
    while let Ok(chunk) = rx.recv() {
        if chunk.is_empty() {
            file.flush()?;
            return Ok(Some((file, size)));
        }
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
        if sync_parts && size - flushed >= flush_every.max(1 << 20) {
            file.sync_data()?;
            flushed = size;
        } else if flush_every > 0 && size - flushed >= flush_every {
            flush_behind(&file, flushed, size, &mut dropped)?;
            flushed = size;
        }
    }
    Ok(None)
}

/// The page cache drops only whole folios, which can be as large as 2 MiB: drop in windows
/// aligned to that, so no written page stays behind because its folio straddled a flush.
const DROP_ALIGN: u64 = 2 << 20;

/// Writes `[from, to)` of `file` out and waits for it, then drops the written pages up to the
/// last aligned boundary from the page cache (`dropped` is how far that has gone).
fn flush_behind(file: &fs::File, from: u64, to: u64, dropped: &mut u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on an open descriptor with an in-range span.
    if unsafe { libc::sync_file_range(fd, from as libc::off64_t, (to - from) as libc::off64_t, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = to / DROP_ALIGN * DROP_ALIGN;
    if end > *dropped {
        // Written out, so clean; nobody reads them here again. Advice only: its result is moot.
        // SAFETY: as above.
        unsafe {
            libc::posix_fadvise(
                fd,
                *dropped as libc::off_t,
                (end - *dropped) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        *dropped = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `path` in the page cache, and all its pages.
    fn resident(path: &Path) -> (usize, usize) {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of an open file, unmapped before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        (vec.iter().filter(|b| **b & 1 == 1).count(), pages)
    }

    fn backup(src: &Path, out: &Path, write_flush_bytes: u64) {
        let config = BackupConfig {
            read_bytes_per_sec: 0,
            write_flush_bytes,
            ..BackupConfig::default()
        };
        let file = fs::File::create(out).unwrap();
        encrypt_tree(
            src,
            &["system", "data"],
            file,
            "pw",
            &config,
            "t.tar",
            &Progress::default(),
            |_| {},
        )
        .unwrap();
    }

    #[test]
    fn reported_sha256_and_size_are_those_of_the_written_file() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        fs::create_dir_all(src.join("system/etc")).unwrap();
        fs::create_dir_all(src.join("data")).unwrap();
        fs::write(src.join("system/etc/a.conf"), b"a = 1\n").unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        fs::write(src.join("data/db.bin"), &big).unwrap();
        let out = dir.path().join("b.gpg");
        let config = BackupConfig {
            read_bytes_per_sec: 0,
            ..BackupConfig::default()
        };
        let written = encrypt_tree(
            &src,
            &["system", "data"],
            fs::File::create(&out).unwrap(),
            "pw",
            &config,
            "t.tar",
            &Progress::default(),
            |_| {},
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(written.size, bytes.len() as u64);
        assert_eq!(written.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn flush_behind_keeps_the_backup_out_of_the_page_cache() {
        // On a disk-backed folder (tmpfs pages are the storage and cannot be dropped).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let src = dir.path().join("tree");
        fs::create_dir_all(src.join("system")).unwrap();
        fs::create_dir_all(src.join("data")).unwrap();
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut f = fs::File::create(src.join("data/db.bin")).unwrap();
        for _ in 0..16 {
            f.write_all(&block).unwrap();
        }
        drop(f);
        let kept = dir.path().join("kept.gpg");
        backup(&src, &kept, 0);
        let (r, all) = resident(&kept);
        assert!(
            r * 10 > all * 9,
            "without flush-behind the new file stays cached: {r} of {all} pages"
        );
        let dropped = dir.path().join("dropped.gpg");
        backup(&src, &dropped, 256 * 1024);
        let (r, all) = resident(&dropped);
        // Only the tail after the last flush may still be there.
        assert!(
            r * 4 < all,
            "flush-behind dropped what it wrote: {r} of {all} pages resident"
        );
    }
}
