//! Comparing a restored copy with a snapshot on the device: the snapshot is listed over ssh
//! (`find` and `sha256sum`, as any admin could), the copy is a local tar archive or directory.
//! Names, types, content, modes, owners, mtimes, symlink targets and hard links must agree;
//! names and symlink targets byte for byte, UTF-8 or not.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

/// A relative path or a symlink target as the file system holds it: bytes, not always UTF-8.
/// Shown with bytes that are not UTF-8, control characters and `\` escaped (`caf\xe9`), so names
/// that differ only there read differently in a report.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(pub Vec<u8>);

impl Name {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Name {
    fn from(b: &[u8]) -> Self {
        Name(b.to_vec())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.as_bytes().to_vec())
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

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
    pub link: Option<Name>,
}

/// A tree: entries by relative path, and groups of hard-linked files.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<Name, Entry>,
    pub hard_links: BTreeSet<Vec<Name>>,
}

impl Tree {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The shell command that lists `dir` on the device (run as root by `sh`; GNU find and
/// coreutils). Names may hold any byte but NUL, and ssh output reaches us as text, so both parts
/// are NUL-separated fields sent as base64, split by a `--` line: per entry
/// `%y %m %U %G %T@ %s %i %n`, the path and the symlink target; then `sha256sum -z` lines (which
/// escape no names). Each part ends with an `end` field, so a part that a failing `find` or
/// `sha256sum` cut short is not read as a complete one.
pub fn remote_listing_command(dir: &str) -> String {
    let d = crate::transport::ssh::sh_quote(dir);
    format!(
        "cd {d} && {{ find . -mindepth 1 -printf '%y %m %U %G %T@ %s %i %n\\0%P\\0%l\\0' && printf 'end\\0'; }} | base64 \
         && echo -- && {{ find . -type f -print0 | xargs -0 -r sha256sum -z && printf 'end\\0'; }} | base64"
    )
}

/// Parses what [`remote_listing_command`] printed.
pub fn parse_remote_listing(text: &str) -> Result<Tree, String> {
    let lines: Vec<&str> = text.lines().collect();
    let sep = lines
        .iter()
        .position(|l| l.trim() == "--")
        .ok_or("the listing has no checksum part")?;
    let listing = decode(&lines[..sep], "listing")?;
    let sums = decode(&lines[sep + 1..], "checksum part of the listing")?;
    let mut tree = Tree::default();
    let mut inodes: HashMap<u64, Vec<Name>> = HashMap::new();
    let listing = fields(&listing, "listing")?;
    if listing.len() % 3 != 0 {
        return Err(format!("the listing has {} fields, not three per entry", listing.len()));
    }
    for record in listing.chunks(3) {
        let (stat, name, link) = (record[0], Name::from(record[1]), Name::from(record[2]));
        let bad = || format!("unreadable listing entry {} for {name}", Name::from(stat));
        let f: Vec<&str> = std::str::from_utf8(stat).map_err(|_| bad())?.split(' ').collect();
        if f.len() != 8 {
            return Err(bad());
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?} in {}", bad()));
        let kind = f[0].chars().next().unwrap_or('?');
        let mtime = f[4]
            .split('.')
            .next()
            .unwrap_or("0")
            .parse::<i64>()
            .map_err(|e| format!("{e} in {}", bad()))?;
        if kind == 'f' && num(f[7])? > 1 {
            inodes.entry(num(f[6])?).or_default().push(name.clone());
        }
        let entry = Entry {
            kind,
            mode: u32::from_str_radix(f[1], 8).map_err(|e| format!("{e} in {}", bad()))?,
            uid: num(f[2])?,
            gid: num(f[3])?,
            mtime,
            size: if kind == 'f' { num(f[5])? } else { 0 },
            sha256: None,
            link: (kind == 'l').then_some(link),
        };
        tree.entries.insert(name, entry);
    }
    for line in fields(&sums, "checksum part of the listing")? {
        let bad = || format!("bad checksum line {}", Name::from(line));
        let space = line.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let sum = std::str::from_utf8(&line[..space]).map_err(|_| bad())?;
        // "  name" for text mode, " *name" for binary mode.
        let name = line[space + 1..]
            .strip_prefix(b" ")
            .or_else(|| line[space + 1..].strip_prefix(b"*"))
            .ok_or_else(bad)?;
        let name = name.strip_prefix(b"./").unwrap_or(name);
        if let Some(e) = tree.entries.get_mut(name) {
            e.sha256 = Some(sum.to_string());
        }
    }
    tree.hard_links = groups(inodes);
    Ok(tree)
}

/// The bytes of base64 `lines` (as `base64` wraps them).
fn decode(lines: &[&str], what: &str) -> Result<Vec<u8>, String> {
    let b64: String = lines.iter().map(|l| l.trim()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the {what} is not base64 ({e}): was it cut short?"))
}

/// The NUL-terminated fields of a listing part, without its `end` mark.
fn fields<'a>(part: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, String> {
    let mut f: Vec<&[u8]> = part.split(|b| *b == 0).collect();
    // Every field ends with a NUL, so the last piece is empty and the one before it the mark.
    if f.pop() != Some(&[][..]) || f.pop() != Some(&b"end"[..]) {
        return Err(format!(
            "the {what} ended early: find or sha256sum failed on the device"
        ));
    }
    Ok(f)
}

fn groups(m: HashMap<u64, Vec<Name>>) -> BTreeSet<Vec<Name>> {
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

/// A member's name as a tree key: without `./` in front or `/` behind.
fn member_name(mut raw: &[u8]) -> Name {
    while let Some(rest) = raw.strip_prefix(b"./") {
        raw = rest;
    }
    while let Some(rest) = raw.strip_suffix(b"/") {
        raw = rest;
    }
    Name::from(raw)
}

/// Reads a tar archive; names as stored (pax `path`/`linkpath`, GNU long names or ustar), raw.
pub fn from_tar(path: &Path) -> Result<Tree, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut tree = Tree::default();
    let mut links: HashMap<Name, Vec<Name>> = HashMap::new();
    let bad = |e: std::io::Error| format!("{} is not a readable tar archive: {e}", path.display());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = member_name(&entry.path_bytes());
        let h = entry.header().clone();
        let t = h.entry_type();
        let link = entry.link_name_bytes().map(|l| Name(l.into_owned()));
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
                // Hard links name a member, in the members' own form.
                let target = member_name(link.as_ref().map_or(&[][..], Name::as_bytes));
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
    let mut inodes: HashMap<u64, Vec<Name>> = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
            let name = Name::from(p.strip_prefix(root).map_err(|e| e.to_string())?.as_os_str().as_bytes());
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
                        Some(Name(
                            std::fs::read_link(&p)
                                .map_err(|e| e.to_string())?
                                .into_os_string()
                                .into_vec(),
                        ))
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

/// Differences between the snapshot on the device and a copy of it, in words; names escaped as
/// [`Name`] shows them.
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
    use std::ffi::OsStr;
    use std::process::Command;

    use super::*;

    const SUM_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// What [`remote_listing_command`] prints for `entries` (stat fields, name, symlink target)
    /// and `sums` (checksum, name), base64 wrapped at 76 columns as `base64` does.
    fn listing(entries: &[(&str, &[u8], &[u8])], sums: &[(&str, &[u8])]) -> String {
        let b64 = |bytes: Vec<u8>| {
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            let lines: Vec<&str> = text
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            lines.join("\n") + "\n"
        };
        let nul = |fields: &[&[u8]]| {
            fields
                .iter()
                .flat_map(|f| [*f, b"\0"])
                .flatten()
                .copied()
                .collect::<Vec<u8>>()
        };
        let mut first = Vec::new();
        for (stat, name, link) in entries {
            first.extend(nul(&[stat.as_bytes(), name, link]));
        }
        first.extend(nul(&[b"end"]));
        let mut second = Vec::new();
        for (sum, name) in sums {
            second.extend(nul(&[&[sum.as_bytes(), b"  ./", name].concat()]));
        }
        second.extend(nul(&[b"end"]));
        b64(first) + "--\n" + &b64(second)
    }

    #[test]
    fn remote_listing_is_read_with_checksums_and_links() {
        let text = listing(
            &[
                ("f 644 0 0 1700000000.5000000000 3 11 2", b"a", b""),
                ("f 644 0 0 1700000000.0000000000 3 11 2", b"b", b""),
                ("l 777 0 0 1.0000000000 1 12 1", b"l", b"a"),
                ("d 755 1000 1000 5.0000000000 0 13 2", b"d", b""),
            ],
            &[(SUM_ABC, b"a"), (SUM_ABC, b"b")],
        );
        let t = parse_remote_listing(&text).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.entries[&b"a"[..]].mtime, 1_700_000_000);
        assert_eq!(t.entries[&b"l"[..]].link, Some(Name::from("a")));
        assert_eq!(t.entries[&b"d"[..]].uid, 1000);
        assert!(t.entries[&b"b"[..]].sha256.as_deref().unwrap().starts_with("ba78"));
        assert_eq!(
            t.hard_links.iter().next().unwrap(),
            &vec![Name::from("a"), Name::from("b")]
        );
    }

    #[test]
    fn a_listing_cut_short_is_an_error_not_a_smaller_tree() {
        let whole = listing(&[("f 644 0 0 100.0 3 11 1", b"a", b"")], &[(SUM_ABC, b"a")]);
        assert!(parse_remote_listing(&whole).is_ok());
        // What arrives when find fails before its `end` mark.
        let cut = format!(
            "{}\n--\n{}",
            base64::engine::general_purpose::STANDARD.encode("f 644 0 0 100.0 3 11 1\0a\0\0"),
            whole.split_once("--\n").unwrap().1
        );
        let e = parse_remote_listing(&cut).unwrap_err();
        assert!(e.contains("ended early"), "{e}");
    }

    #[test]
    fn a_changed_copy_is_reported_in_words() {
        let text = listing(&[("f 644 0 0 100.0 3 11 1", b"a", b"")], &[(SUM_ABC, b"a")]);
        let device = parse_remote_listing(&text).unwrap();
        let mut copy = parse_remote_listing(&text).unwrap();
        copy.entries.get_mut(&b"a"[..]).unwrap().mode = 0o600;
        copy.entries.get_mut(&b"a"[..]).unwrap().sha256 = Some("00".into());
        let d = compare(&device, &copy);
        assert_eq!(d, ["a: mode 644 vs 600", "a: content differs"]);
    }

    #[test]
    fn names_that_differ_only_in_a_byte_that_is_not_utf8_are_told_apart() {
        let device = parse_remote_listing(&listing(
            &[
                ("f 644 0 0 100.0 3 11 1", b"a\xff", b""),
                ("l 777 0 0 100.0 1 12 1", b"l", b"t\xff"),
            ],
            &[(SUM_ABC, b"a\xff")],
        ))
        .unwrap();
        let copy = parse_remote_listing(&listing(
            &[
                ("f 644 0 0 100.0 3 11 1", b"a\xfe", b""),
                ("l 777 0 0 100.0 1 12 1", b"l", b"t\xfe"),
            ],
            &[(SUM_ABC, b"a\xfe")],
        ))
        .unwrap();
        assert_eq!(
            compare(&device, &copy),
            [
                r"a\xff missing from the copy",
                r"a\xfe is not in the snapshot",
                r#"l: symlink target Some("t\xff") vs Some("t\xfe")"#,
            ]
        );
    }

    #[test]
    fn names_are_shown_with_what_is_not_text_escaped() {
        assert_eq!(
            Name::from(&b"caf\xe9/\\n\n\xc3\xa9"[..]).to_string(),
            r"caf\xe9/\\n\x0aé"
        );
    }

    /// Runs `command` with the local `sh` as the device's root shell would, output read as text
    /// the way the ssh transport reads it.
    fn sh(command: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(command).output().unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn names_that_are_not_utf8_match_through_the_listing_a_folder_and_tar_archives() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snapshot");
        let raw = |rel: &[u8]| snap.join(OsStr::from_bytes(rel));
        let long = [&b"data/"[..], "é".repeat(40).as_bytes(), b"/", &[0xe9; 110]].concat();
        for (name, content) in [
            (&b"system/caf\xe9"[..], "latin-1"),
            (b"system/\xff\xfe/inner", "inner"),
            (b"system/new\nline", "newline"),
            (b"data/a\xff", "ff"),
            (b"data/a\xfe", "fe"),
            ("data/café".as_bytes(), "utf-8"),
            (&long[..], "long"),
        ] {
            std::fs::create_dir_all(raw(name).parent().unwrap()).unwrap();
            std::fs::write(raw(name), content).unwrap();
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), raw(b"system/l\xfe")).unwrap();
        std::os::unix::fs::symlink("ü".repeat(80), raw(b"data/long-target")).unwrap();
        std::fs::hard_link(raw(b"data/a\xff"), raw(b"data/h\xfe")).unwrap();

        let device = parse_remote_listing(&sh(&remote_listing_command(snap.to_str().unwrap()))).unwrap();
        assert_eq!(device.len(), 14);
        for name in [&b"data/a\xff"[..], b"data/a\xfe", &long[..], b"system/new\nline"] {
            assert!(device.entries.contains_key(name), "{} not listed", Name::from(name));
        }
        assert_eq!(
            device.entries[&b"system/l\xfe"[..]].link,
            Some(Name::from(&b"caf\xe9"[..]))
        );
        assert_eq!(
            device.hard_links,
            BTreeSet::from([vec![Name::from(&b"data/a\xff"[..]), Name::from(&b"data/h\xfe"[..])]])
        );
        assert_eq!(compare(&device, &from_dir(&snap).unwrap()), Vec::<String>::new());
        // GNU tar's two ways with such names: pax records (as nexus-backupd writes them) and GNU
        // long-name entries.
        for format in ["pax", "gnu"] {
            let tar = dir.path().join(format!("{format}.tar"));
            let t = tar.display();
            sh(&format!(
                "tar --format={format} -C {} -cf {t} system data",
                snap.display()
            ));
            let copy = from_tar(&tar).unwrap();
            assert_eq!(compare(&device, &copy), Vec::<String>::new(), "{format}");
        }
    }
}
