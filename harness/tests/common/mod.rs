//! Helpers shared by the tests that reach a device over SSH (`remote.rs`, `flaky.rs`,
//! `standin.rs`); each test binary uses a part of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// An emulator kept up by `nexus-hil emulator up` (the debug daemon next to the tests), reached
/// as a device on the network: only its published SSH and HTTPS ports and the admin's key (what
/// a QA engineer's own ssh key is to a real device). Dropped: Ctrl-C, which removes it.
pub struct UpEmulator {
    pub child: Child,
    pub ssh_port: u16,
    pub https_port: u16,
    pub admin_key: PathBuf,
}

impl UpEmulator {
    pub fn up() -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test starts an emulator container and must run as root: use ci/test"
        );
        let backupd = Path::new(env!("CARGO_BIN_EXE_nexus-hil")).with_file_name("nexus-backupd");
        // The functional suites' small card (32 MiB of content), as `run --target emulator`
        // makes it: `emulator up` alone makes a device's 256 MiB, which every backup, download
        // and comparison of these tests would go through for nothing they check.
        let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
            .args(["emulator", "up", "--card-content", "32MiB", "--backupd"])
            .arg(backupd)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut ssh_port, mut https_port, mut admin_key) = (0, 0, PathBuf::new());
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"ssh") {
                admin_key = PathBuf::from(words[2]);
                ssh_port = words[4].parse().unwrap();
            }
            if let Some(rest) = line.trim().strip_prefix("https://127.0.0.1:") {
                https_port = rest.split('/').next().unwrap().parse().unwrap();
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        assert!(
            ssh_port > 0 && https_port > 0,
            "emulator up did not say how to reach it"
        );
        Self {
            child,
            ssh_port,
            https_port,
            admin_key,
        }
    }

    /// The device as `--target` names it.
    pub fn target(&self) -> String {
        format!("ssh://nexus@127.0.0.1:{}", self.ssh_port)
    }

    /// Runs a command as root on the device with the admin's key.
    pub fn root(&self, cmd: &str) -> String {
        ssh_root(self.ssh_port, &self.admin_key, cmd)
    }
}

impl Drop for UpEmulator {
    fn drop(&mut self) {
        // `emulator up` removes its container on Ctrl-C.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// A command's exit status and both outputs, for an assertion's message.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

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
