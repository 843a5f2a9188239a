//! File names as the file system holds them, through the whole backup path: the archive, the
//! OpenPGP encryption, `gpg --decrypt` and GNU `tar -x`, byte for byte. Names that are not UTF-8
//! must neither come back with U+FFFD nor collide with each other.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nexus_emulator::config::BackupConfig;
use nexus_emulator::pipeline::{encrypt_tree, Progress};
use support::{compare_trees, filetime, gpg_decrypt, set_mtime};

/// A snapshot's worth of awkward names below `root/system` and `root/data`; the raw names of the
/// files made, with their content.
fn fill_awkward_names(root: &Path) -> Vec<(Vec<u8>, &'static str)> {
    let raw = |rel: &[u8]| root.join(OsStr::from_bytes(rel));
    // Over 100 bytes and not ASCII, below a directory that is neither.
    let long_dir = [&b"data/"[..], "é".repeat(40).as_bytes()].concat();
    let long_file = [&long_dir[..], b"/", &[0xe9; 110][..]].concat();
    let files: Vec<(Vec<u8>, &str)> = vec![
        (b"system/caf\xe9".to_vec(), "latin-1"),
        (b"system/\xff\xfe/inner".to_vec(), "in a directory named \\xff\\xfe"),
        (b"data/a\xff".to_vec(), "a ff"),
        (b"data/a\xfe".to_vec(), "a fe"),
        ("data/café".as_bytes().to_vec(), "utf-8"),
        (long_file, "long"),
    ];
    for (name, content) in &files {
        let p = raw(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    fs::set_permissions(raw(b"data/a\xfe"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&raw(b"system/caf\xe9"), filetime(1_600_000_000));
    set_mtime(&raw(b"system/\xff\xfe"), filetime(1_500_000_000));
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), raw(b"system/l\xfe")).unwrap();
    std::os::unix::fs::symlink("ü".repeat(80), raw(b"data/long-target")).unwrap();
    fs::hard_link(raw(b"data/a\xff"), raw(b"data/h\xfe")).unwrap();
    fs::create_dir(raw(b"data/empty\x80")).unwrap();
    files
}

#[test]
fn names_that_are_not_utf8_restore_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("snapshot");
    let files = fill_awkward_names(&src);
    let backup = dir.path().join("backup.tar.gpg");
    let config = BackupConfig {
        read_bytes_per_sec: 0,
        s2k_count: 96,
        ..BackupConfig::default()
    };
    encrypt_tree(
        &src,
        &["system", "data"],
        fs::File::create(&backup).unwrap(),
        "pw",
        &config,
        "backup.tar",
        &Progress::default(),
        |_| {},
    )
    .unwrap();
    let tar = dir.path().join("backup.tar");
    gpg_decrypt(&backup, "pw", &tar).unwrap();

    // GNU tar reads pax names as UTF-8 and converts them to the locale's charset where it can:
    // the names must come back the same in a plain and in a UTF-8 locale.
    for locale in ["C", "C.UTF-8"] {
        let out = dir.path().join(format!("restored-{locale}"));
        fs::create_dir(&out).unwrap();
        let x = Command::new("tar")
            .args(["-x", "--numeric-owner", "-p", "-f"])
            .arg(&tar)
            .arg("-C")
            .arg(&out)
            .env("LC_ALL", locale)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&x.stderr);
        assert!(x.status.success() && stderr.is_empty(), "tar -x in {locale}: {stderr}");
        let diffs = compare_trees(&src, &out);
        assert!(diffs.is_empty(), "restored in {locale}:\n{}", diffs.join("\n"));
        for (name, content) in &files {
            let p = out.join(OsStr::from_bytes(name));
            assert_eq!(fs::read_to_string(&p).unwrap(), *content, "{p:?} in {locale}");
        }
    }
}
