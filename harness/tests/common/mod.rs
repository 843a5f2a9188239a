//! Helpers shared by the tests that reach a device over SSH (`remote.rs`, `standin.rs`).

use std::path::Path;
use std::process::{Command, Output};

/// Runs `args` over ssh on the device at 127.0.0.1:`port` as `user` with `key`, prompts off and
/// host keys not kept; its output whatever the exit status.
pub fn ssh_as(port: u16, key: &Path, user: &str, args: &[&str]) -> Output {
    Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `cmd` as root on the device at 127.0.0.1:`port` as `nexus` with `key`; its stdout.
pub fn ssh_root(port: u16, key: &Path, cmd: &str) -> String {
    let quoted = format!("'{cmd}'");
    let out = ssh_as(port, key, "nexus", &["sudo", "-n", "sh", "-c", &quoted]);
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Lists every file, folder and link under /etc and /home with its mode, owner and content hash.
pub const ETC_AND_HOME: &str = "cd / && find etc home -xdev -printf \"%p %M %u %g %l\\n\" | sort && \
     find etc home -xdev -type f -exec sha256sum {} + | sort -k2";

/// Fails with the lines only one side has when the two [`ETC_AND_HOME`] listings differ.
pub fn assert_same_etc_and_home(before: &str, after: &str) {
    if after != before {
        let b: std::collections::BTreeSet<&str> = before.lines().collect();
        let a: std::collections::BTreeSet<&str> = after.lines().collect();
        panic!(
            "/etc or /home are not as they were:\nonly before: {:#?}\nonly after: {:#?}",
            b.difference(&a).collect::<Vec<_>>(),
            a.difference(&b).collect::<Vec<_>>()
        );
    }
}
