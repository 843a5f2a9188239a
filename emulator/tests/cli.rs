//! The `nexus-backupd` binary's own behaviour at start: clear errors for bad configuration.

use std::process::Command;

fn backupd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-backupd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_typo_in_the_config_stops_the_daemon_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("backupd.toml");
    std::fs::write(&conf, "[backup]\nread_bytes_per_secs = 100\n").unwrap();
    let out = backupd(&["--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read_bytes_per_secs") && err.contains(conf.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/etc/nexus/backupd.toml");
    let out = backupd(&["--check-config", "--config", conf]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_broot_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("backupd.toml");
    std::fs::write(&conf, "[paths]\nbroot = \"/nonexistent/broot\"\n[https]\nlisten = []\n").unwrap();
    let out = backupd(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/broot") && err.contains("mount"), "{err}");
}
