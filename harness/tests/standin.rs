//! The arm64 stand-in, a Pi-class NEXUS in qemu reached only over SSH and HTTPS on 127.0.0.1.
//! It takes minutes to build and boot, so `ci/standin` (part of `.ci/run`) boots it and runs
//! these tests with `--run-ignored only`, naming it in `NEXUS_HIL_STANDIN_TARGET`,
//! `NEXUS_HIL_STANDIN_HTTPS_PORT` and `NEXUS_HIL_STANDIN_KEY`.

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
