//! Comparing a restored copy with a snapshot on the device: the snapshot is listed over ssh
//! (`find` and `sha256sum`, as any admin could), the copy is a local tar archive or directory.
//! Names, types, content, modes, owners, mtimes, symlink targets and hard links must agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// What is compared of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `f` file, `d` directory, `l` symlink, `p` FIFO, `c`/`b` devices.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<String>,
}

/// A tree: entries by relative path, and groups of hard-linked files.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<String, Entry>,
    pub hard_links: BTreeSet<Vec<String>>,
}

impl Tree {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The shell command that lists `dir` on the device (run as root).
pub fn remote_listing_command(dir: &str) -> String {
    let d = crate::transport::ssh::sh_quote(dir);
    format!(
        "cd {d} && find . -mindepth 1 -printf '%P\\t%y\\t%m\\t%U\\t%G\\t%T@\\t%s\\t%i\\t%n\\t%l\\n' && echo '--' && find . -type f -print0 | xargs -0 -r sha256sum"
    )
}

/// Parses what [`remote_listing_command`] printed.
pub fn parse_remote_listing(text: &str) -> Result<Tree, String> {
    let (listing, sums) = text.split_once("\n--\n").ok_or("the listing has no checksum part")?;
    let mut tree = Tree::default();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.splitn(10, '\t').collect();
        if f.len() != 10 {
            return Err(format!("unreadable listing line {line:?}"));
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?} in {line:?}"));
        let kind = f[1].chars().next().unwrap_or('?');
        let mtime = f[5]
            .split('.')
            .next()
            .unwrap_or("0")
            .parse::<i64>()
            .map_err(|e| e.to_string())?;
        if kind == 'f' && num(f[8])? > 1 {
            inodes.entry(num(f[7])?).or_default().push(f[0].to_string());
        }
        tree.entries.insert(
            f[0].to_string(),
            Entry {
                kind,
                mode: u32::from_str_radix(f[2], 8).map_err(|e| e.to_string())?,
                uid: num(f[3])?,
                gid: num(f[4])?,
                mtime,
                size: if kind == 'f' { num(f[6])? } else { 0 },
                sha256: None,
                link: (kind == 'l').then(|| f[9].to_string()),
            },
        );
    }
    for line in sums.lines().filter(|l| !l.is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("bad checksum line {line:?}"))?;
        let name = name.strip_prefix("./").unwrap_or(name);
        if let Some(e) = tree.entries.get_mut(name) {
            e.sha256 = Some(sum.to_string());
        }
    }
    tree.hard_links = groups(inodes);
    Ok(tree)
}

fn groups(m: HashMap<u64, Vec<String>>) -> BTreeSet<Vec<String>> {
    m.into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect()
}

fn sha256_of(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The SHA-256 of a local file, in hex.
pub fn sha256_file(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    sha256_of(f).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a tar archive.
pub fn from_tar(path: &Path) -> Result<Tree, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut tree = Tree::default();
    let mut links: HashMap<String, Vec<String>> = HashMap::new();
    let bad = |e: std::io::Error| format!("{} is not a readable tar archive: {e}", path.display());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        let h = entry.header().clone();
        let t = h.entry_type();
        let link = entry
            .link_name()
            .map_err(bad)?
            .map(|l| l.to_string_lossy().into_owned());
        let mut e = Entry {
            kind: match t {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Fifo => 'p',
                tar::EntryType::Char => 'c',
                tar::EntryType::Block => 'b',
                _ => 'f',
            },
            mode: h.mode().map_err(bad)? & 0o7777,
            uid: h.uid().map_err(bad)?,
            gid: h.gid().map_err(bad)?,
            mtime: h.mtime().map_err(bad)? as i64,
            size: 0,
            sha256: None,
            link: None,
        };
        match t {
            tar::EntryType::Symlink => e.link = link,
            tar::EntryType::Link => {
                let target = link.unwrap_or_default();
                let first = tree
                    .entries
                    .get(&target)
                    .cloned()
                    .ok_or_else(|| format!("hard link {name} to unknown {target}"))?;
                links
                    .entry(target.clone())
                    .or_insert_with(|| vec![target.clone()])
                    .push(name.clone());
                e.size = first.size;
                e.sha256 = first.sha256;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                e.size = h.size().map_err(bad)?;
                e.sha256 = Some(sha256_of(&mut entry).map_err(bad)?);
            }
            _ => {}
        }
        tree.entries.insert(name, e);
    }
    tree.hard_links = links
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Ok(tree)
}

/// Reads a local directory (e.g. one pulled with rsync).
pub fn from_dir(root: &Path) -> Result<Tree, String> {
    let mut tree = Tree::default();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
            let name = p
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_fifo() {
                'p'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                'f'
            };
            if kind == 'f' && m.nlink() > 1 {
                inodes.entry(m.ino()).or_default().push(name.clone());
            }
            tree.entries.insert(
                name,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid() as u64,
                    gid: m.gid() as u64,
                    mtime: m.mtime(),
                    size: if kind == 'f' { m.len() } else { 0 },
                    sha256: if kind == 'f' {
                        Some(
                            sha256_of(std::fs::File::open(&p).map_err(|e| e.to_string())?)
                                .map_err(|e| e.to_string())?,
                        )
                    } else {
                        None
                    },
                    link: if kind == 'l' {
                        Some(
                            std::fs::read_link(&p)
                                .map_err(|e| e.to_string())?
                                .to_string_lossy()
                                .into_owned(),
                        )
                    } else {
                        None
                    },
                },
            );
        }
    }
    tree.hard_links = groups(inodes);
    Ok(tree)
}

/// Differences between the snapshot on the device and a copy of it, in words.
pub fn compare(device: &Tree, copy: &Tree) -> Vec<String> {
    let mut d = Vec::new();
    for name in device.entries.keys().filter(|k| !copy.entries.contains_key(*k)) {
        d.push(format!("{name} missing from the copy"));
    }
    for name in copy.entries.keys().filter(|k| !device.entries.contains_key(*k)) {
        d.push(format!("{name} is not in the snapshot"));
    }
    for (name, a) in &device.entries {
        let Some(b) = copy.entries.get(name) else { continue };
        if a.kind != b.kind {
            d.push(format!("{name}: type {} vs {}", a.kind, b.kind));
            continue;
        }
        if a.kind != 'l' && a.mode != b.mode {
            d.push(format!("{name}: mode {:o} vs {:o}", a.mode, b.mode));
        }
        if (a.uid, a.gid) != (b.uid, b.gid) {
            d.push(format!("{name}: owner {}:{} vs {}:{}", a.uid, a.gid, b.uid, b.gid));
        }
        if a.kind != 'l' && a.mtime != b.mtime {
            d.push(format!("{name}: mtime {} vs {}", a.mtime, b.mtime));
        }
        if a.kind == 'f' && (a.size != b.size || a.sha256 != b.sha256) {
            d.push(format!("{name}: content differs"));
        }
        if a.link != b.link {
            d.push(format!("{name}: symlink target {:?} vs {:?}", a.link, b.link));
        }
    }
    if device.hard_links != copy.hard_links {
        d.push(format!("hard links {:?} vs {:?}", device.hard_links, copy.hard_links));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_listing_is_read_with_checksums_and_links() {
        let text = "a\tf\t644\t0\t0\t1700000000.5\t3\t11\t2\t\nb\tf\t644\t0\t0\t1700000000.0\t3\t11\t2\t\nl\tl\t777\t0\t0\t1\t1\t12\t1\ta\nd\td\t755\t1000\t1000\t5\t0\t13\t2\t\n--\n\
                    ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ./a\n\
                    ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ./b\n";
        let t = parse_remote_listing(text).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.entries["a"].mtime, 1_700_000_000);
        assert_eq!(t.entries["l"].link.as_deref(), Some("a"));
        assert_eq!(t.entries["d"].uid, 1000);
        assert!(t.entries["b"].sha256.as_deref().unwrap().starts_with("ba78"));
        assert_eq!(
            t.hard_links.iter().next().unwrap(),
            &vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn a_changed_copy_is_reported_in_words() {
        let text = "a\tf\t644\t0\t0\t100\t3\t11\t1\t\n--\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ./a\n";
        let device = parse_remote_listing(text).unwrap();
        let mut copy = parse_remote_listing(text).unwrap();
        copy.entries.get_mut("a").unwrap().mode = 0o600;
        copy.entries.get_mut("a").unwrap().sha256 = Some("00".into());
        let d = compare(&device, &copy);
        assert_eq!(d, ["a: mode 644 vs 600", "a: content differs"]);
    }
}
