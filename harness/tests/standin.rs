//! The arm64 stand-in, a Pi-class NEXUS in qemu reached only over SSH and HTTPS on 127.0.0.1:
//! conform pinned with insta, and provision then `--undo` leaving /etc and /home as they were.
//! It takes minutes to build and boot, so `ci/standin` (part of `.ci/run`) boots it and runs
//! these tests with `--include-ignored`, naming it in `NEXUS_HIL_STANDIN_TARGET`,
//! `NEXUS_HIL_STANDIN_HTTPS_PORT` and `NEXUS_HIL_STANDIN_KEY`.

mod common;

use std::path::Path;
use std::process::Command;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this through ci/standin"))
}

#[test]
#[ignore = "needs the arm64 stand-in booted: ci/standin runs it"]
fn conform_on_the_arm64_standin_holds_every_documented_item() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["conform", "--target", &env("NEXUS_HIL_STANDIN_TARGET")])
        .args(["--https-port", &env("NEXUS_HIL_STANDIN_HTTPS_PORT")])
        .args(["--key", &env("NEXUS_HIL_STANDIN_KEY")])
        .arg("--pins")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("conform_standin", stdout);
}

/// Runs a command as root on the stand-in with the admin's key.
fn root(cmd: &str) -> String {
    let target = env("NEXUS_HIL_STANDIN_TARGET");
    let port = target.rsplit(':').next().unwrap().parse().unwrap();
    common::ssh_root(port, Path::new(&env("NEXUS_HIL_STANDIN_KEY")), cmd)
}

fn provision(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["provision", "--target", &env("NEXUS_HIL_STANDIN_TARGET")])
        .args(["--login-key", &env("NEXUS_HIL_STANDIN_KEY")])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs the arm64 stand-in booted: ci/standin runs it"]
fn provision_then_undo_leaves_the_arm64_standin_as_it_was() {
    let before = root(common::ETC_AND_HOME);
    let first = provision(&[]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(root("id remotebackup").contains("remotebackup"));
    let again = provision(&[]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        !said.contains("$ "),
        "the second provisioning changed something:\n{said}"
    );
    let undo = provision(&["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{undo:?}");
    common::assert_same_etc_and_home(&before, &root(common::ETC_AND_HOME));
}
