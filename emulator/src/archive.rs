//! POSIX tar (ustar, with pax records where ustar runs out) of a snapshot directory: modes,
//! owners, mtimes, symlinks, hard links, devices, FIFOs and empty directories kept, names byte
//! for byte as the file system has them. The tree is scanned first (for the progress total), then
//! streamed in bounded chunks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One member of the archive.
#[derive(Debug)]
pub struct Entry {
    /// Path inside the archive (relative, `/`-separated): the file names' own bytes, which need
    /// not be UTF-8.
    pub name: Vec<u8>,
    /// Where it is on disk.
    pub path: PathBuf,
    pub meta: Metadata,
    /// For a hard link to a member already archived: that member's name.
    pub link_to: Option<Vec<u8>>,
}

/// What a scan found: the members in archive order and the file bytes they hold.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    pub content_bytes: u64,
    /// Things that cannot go into a tar archive (sockets), named for the log.
    pub skipped: Vec<PathBuf>,
}

/// Scans `root`'s children named in `members` (in that order), depth first, without following symlinks.
pub fn scan(root: &Path, members: &[&str]) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for m in members {
        let path = root.join(m);
        match fs::symlink_metadata(&path) {
            Ok(meta) => walk(&path, m.as_bytes().to_vec(), meta, &mut scan, &mut links)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Ok(scan)
}

fn walk(
    path: &Path,
    name: Vec<u8>,
    meta: Metadata,
    scan: &mut Scan,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_socket() {
        scan.skipped.push(path.to_owned());
        return Ok(());
    }
    if ft.is_dir() {
        let mut children: Vec<_> = fs::read_dir(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
            .collect::<Result<_, _>>()?;
        children.sort_by_key(|c| c.file_name());
        scan.entries.push(Entry {
            name: [&name[..], b"/"].concat(),
            path: path.to_owned(),
            meta,
            link_to: None,
        });
        for c in children {
            let child_meta = c.metadata()?;
            let child_name = [&name[..], b"/", c.file_name().as_bytes()].concat();
            walk(&c.path(), child_name, child_meta, scan, links)?;
        }
        return Ok(());
    }
    let mut link_to = None;
    if meta.nlink() > 1 {
        match links.entry((meta.dev(), meta.ino())) {
            std::collections::hash_map::Entry::Occupied(first) => link_to = Some(first.get().clone()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(name.clone());
            }
        }
    }
    if ft.is_file() && link_to.is_none() {
        scan.content_bytes += meta.len();
    }
    scan.entries.push(Entry {
        name,
        path: path.to_owned(),
        meta,
        link_to,
    });
    Ok(())
}

/// Appends a pax extended header record "LEN key=value\n".
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pad(out: &mut Vec<u8>, len: u64) {
    let rem = (len % 512) as usize;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// Appends the header block(s) of `entry` to `out`.
pub fn header(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let meta = &entry.meta;
    let ft = meta.file_type();
    let mut h = tar::Header::new_ustar();
    let mut pax = Vec::new();
    let size = if ft.is_file() && entry.link_to.is_none() {
        meta.len()
    } else {
        0
    };
    let kind = if entry.link_to.is_some() {
        tar::EntryType::Link
    } else if ft.is_dir() {
        tar::EntryType::Directory
    } else if ft.is_symlink() {
        tar::EntryType::Symlink
    } else if ft.is_char_device() {
        tar::EntryType::Char
    } else if ft.is_block_device() {
        tar::EntryType::Block
    } else if ft.is_fifo() {
        tar::EntryType::Fifo
    } else {
        tar::EntryType::Regular
    };
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    const USTAR_MAX: u64 = 0o7777777;
    for (key, v) in [("uid", u64::from(meta.uid())), ("gid", u64::from(meta.gid()))] {
        if v > USTAR_MAX {
            pax_record(&mut pax, key, v.to_string().as_bytes());
        }
    }
    h.set_uid(u64::from(meta.uid()).min(USTAR_MAX));
    h.set_gid(u64::from(meta.gid()).min(USTAR_MAX));
    let mtime = meta.mtime();
    if !(0..=0o77777777777).contains(&mtime) {
        pax_record(&mut pax, "mtime", mtime.to_string().as_bytes());
    }
    h.set_mtime(mtime.clamp(0, 0o77777777777) as u64);
    if size > 0o77777777777 {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
        h.set_size(0);
    } else {
        h.set_size(size);
    }
    if ft.is_char_device() || ft.is_block_device() {
        let rdev = meta.rdev();
        h.set_device_major(libc::major(rdev))?;
        h.set_device_minor(libc::minor(rdev))?;
    }
    // Names that ustar cannot hold, or that are not ASCII, get a pax `path` as GNU tar's pax
    // format gives them: the raw bytes, no `hdrcharset` (GNU tar warns on that keyword), which
    // GNU tar and the tar crate read back unchanged whatever the bytes. The ustar field keeps
    // the name too (cut to 100 bytes when long) for readers that know no pax.
    let name = &entry.name[..];
    let fits = h.set_path(OsStr::from_bytes(name)).is_ok() && h.path_bytes().as_ref() == name;
    if !fits || name.len() > 255 || !name.is_ascii() {
        pax_record(&mut pax, "path", name);
        if !fits {
            set_raw_name(&mut h, name);
        }
    }
    let link = match (&entry.link_to, ft.is_symlink()) {
        (Some(first), _) => Some(first.clone()),
        (None, true) => Some(fs::read_link(&entry.path)?.into_os_string().into_vec()),
        _ => None,
    };
    if let Some(link) = link {
        if link.len() > 100 || !link.is_ascii() || h.set_link_name_literal(&link).is_err() {
            pax_record(&mut pax, "linkpath", &link);
            let ustar = h.as_ustar_mut().expect("ustar header");
            let n = link.len().min(100);
            ustar.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    h.set_cksum();
    if !pax.is_empty() {
        let mut ph = tar::Header::new_ustar();
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_mode(0o644);
        ph.set_size(pax.len() as u64);
        let base = name.rsplit(|b| *b == b'/').find(|c| !c.is_empty()).unwrap_or(b"x");
        set_raw_name(&mut ph, &[b"PaxHeaders/", base].concat());
        ph.set_cksum();
        out.extend_from_slice(ph.as_bytes());
        let len = pax.len() as u64;
        out.extend_from_slice(&pax);
        pad(out, len);
    }
    out.extend_from_slice(h.as_bytes());
    Ok(())
}

/// Writes a name that does not fit ustar, cut to the name field (the pax record holds it whole);
/// no prefix, so a reader that knows no pax sees the name's first 100 bytes, as from GNU tar.
fn set_raw_name(h: &mut tar::Header, name: &[u8]) {
    let ustar = h.as_ustar_mut().expect("ustar header");
    let n = name.len().min(100);
    ustar.name = [0; 100];
    ustar.prefix = [0; 155];
    ustar.name[..n].copy_from_slice(&name[..n]);
}

/// Bytes after the last member: two zero blocks, then up to a 10 KiB record as GNU tar writes.
pub fn trailer(written: u64, out: &mut Vec<u8>) {
    let total = written + 1024;
    let record = 10240;
    let padded = total.div_ceil(record) * record;
    out.resize(out.len() + (padded - written) as usize, 0);
}

/// Reads a regular file's content in chunks of at most `chunk` bytes, exactly `size` bytes in all
/// (zero-filled if the file shrank), then the padding to a whole block. `each` gets every chunk.
pub fn content(entry: &Entry, chunk: usize, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let size = entry.meta.len();
    let mut file =
        fs::File::open(&entry.path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", entry.path.display())))?;
    let mut buf = vec![0u8; chunk.min(size.max(1) as usize + 511).max(512)];
    let mut left = size;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let mut got = 0;
        while got < want {
            let n = file.read(&mut buf[got..want])?;
            if n == 0 {
                tracing::warn!("{} shrank while archived; padding with zeros", entry.path.display());
                buf[got..want].fill(0);
                break;
            }
            got += n;
        }
        left -= want as u64;
        if left == 0 {
            // The block padding travels with the last chunk.
            let rem = (size % 512) as usize;
            let end = if rem == 0 { want } else { want + 512 - rem };
            if end > buf.len() {
                each(&buf[..want])?;
                each(&vec![0u8; end - want])?;
            } else {
                buf[want..end].fill(0);
                each(&buf[..end])?;
            }
        } else {
            each(&buf[..want])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `members` of `root` as one whole archive in memory, as the pipeline streams it.
    fn archive(root: &Path, members: &[&str]) -> Vec<u8> {
        let scan = scan(root, members).unwrap();
        let mut out = Vec::new();
        for e in &scan.entries {
            header(e, &mut out).unwrap();
            if e.meta.file_type().is_file() && e.link_to.is_none() {
                content(e, 1 << 16, |d| {
                    out.extend_from_slice(d);
                    Ok(())
                })
                .unwrap();
            }
        }
        let written = out.len() as u64;
        trailer(written, &mut out);
        out
    }

    #[test]
    fn names_are_archived_as_their_bytes_and_ascii_ones_stay_plain_ustar() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let raw = |n: &[u8]| d.join(OsStr::from_bytes(n));
        fs::create_dir(&d).unwrap();
        let long = "é".repeat(60);
        for (n, content) in [
            (&b"a\xff"[..], "ff"),
            (b"a\xfe", "fe"),
            (b"caf\xe9", "latin-1"),
            (b"plain", "ascii"),
            (long.as_bytes(), "long"),
        ] {
            fs::write(raw(n), content).unwrap();
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), raw(b"l")).unwrap();
        fs::hard_link(raw(b"a\xff"), raw(b"h\xfe")).unwrap();

        // Name, link target, content and whether a pax header came with it.
        type Member = (Vec<u8>, Option<Vec<u8>>, String, bool);
        let member = |name: &[u8], link: Option<&[u8]>, content: &str, pax: bool| -> Member {
            (name.to_vec(), link.map(<[u8]>::to_vec), content.to_string(), pax)
        };
        let tar_bytes = archive(dir.path(), &["data"]);
        let mut read = tar::Archive::new(&tar_bytes[..]);
        let mut got = Vec::new();
        for e in read.entries().unwrap() {
            let mut e = e.unwrap();
            let pax = e.pax_extensions().unwrap().is_some();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            let name = e.path_bytes().into_owned();
            let mut content = String::new();
            e.read_to_string(&mut content).unwrap();
            got.push((name, link, content, pax));
        }
        let long_name = [&b"data/"[..], long.as_bytes()].concat();
        let want = vec![
            member(b"data/", None, "", false),
            member(b"data/a\xfe", None, "fe", true),
            member(b"data/a\xff", None, "ff", true),
            member(b"data/caf\xe9", None, "latin-1", true),
            member(b"data/h\xfe", Some(b"data/a\xff"), "", true),
            member(b"data/l", Some(b"caf\xe9"), "", true),
            member(b"data/plain", None, "ascii", false),
            member(&long_name, None, "long", true),
        ];
        assert_eq!(got, want);
    }
}
