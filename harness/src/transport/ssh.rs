//! The OpenSSH client side, as the device's users use it: a key made per run, `ssh`, `scp` and
//! `rsync` with a known-hosts file of the run's own (host keys accepted on first use).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::Error;
use crate::error::InfraError;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// A private folder (mode 0700) where the first login as each user stays open and later
    /// commands as that user ride on it (OpenSSH's `ControlMaster`), for a device whose logins
    /// cost seconds: the stand-in, whose every login (key exchange, PAM, logind starting the
    /// user's systemd) runs on an emulated CPU. `None`: every command is a login of its own,
    /// as on the container and a real device.
    pub multiplex: Option<PathBuf>,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Makes an ed25519 key pair `dir/id_ed25519{,.pub}` for this run.
pub async fn make_key(dir: &Path) -> Result<PathBuf, InfraError> {
    let key = dir.join("id_ed25519");
    if key.exists() {
        return Ok(key);
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nexus-hil", "-f"])
        .arg(&key)
        .output()
        .await
        .map_err(|e| InfraError::io("cannot run ssh-keygen (install openssh-client)", e))?;
    if !out.status.success() {
        return Err(InfraError::Io(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(key)
}

impl SshTarget {
    /// Options every OpenSSH tool gets: the run's key only, no prompts, the run's known hosts.
    pub fn options(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let Some(dir) = &self.multiplex {
            // One master per key and user, kept 60 s after its last command; it ends with the
            // connection (the guest powered off, cut or rebooted), and the next login opens a
            // new one. The path stays short: a socket's path ends at 108 bytes.
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(self.key.as_os_str().as_encoded_bytes());
            let key: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            v.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={}/{key}-%r", dir.display()),
                "-o".into(),
                "ControlPersist=60".into(),
            ]);
        }
        v
    }

    /// The `ssh` command line (without the remote command) for `user`.
    pub fn ssh_argv(&self, user: &str) -> Vec<String> {
        let mut v = vec!["ssh".to_string(), "-T".into(), "-p".into(), self.port.to_string()];
        v.extend(self.options());
        v.push(format!("{user}@{}", self.host));
        v
    }

    /// Runs `command` on the device as `user`, feeding `stdin`; gives up after `timeout`.
    pub async fn run(
        &self,
        user: &str,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, Error> {
        let argv = self.ssh_argv(user);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).arg("--").arg(command);
        run_local(cmd, stdin, timeout).await
    }

    /// `scp user@host:remote local`, the vendor's download line (with its missing colon added).
    pub async fn scp_get(&self, user: &str, remote: &str, local: &Path, timeout: Duration) -> Result<Output, Error> {
        let mut cmd = Command::new("scp");
        cmd.arg("-P").arg(self.port.to_string()).args(self.options());
        cmd.arg(format!("{user}@{}:{remote}", self.host)).arg(local);
        run_local(cmd, None, timeout).await
    }

    /// `rsync -a` over ssh from the device; `sudo` runs the remote rsync as root.
    pub async fn rsync_pull(
        &self,
        user: &str,
        remote: &str,
        local: &Path,
        sudo: bool,
        timeout: Duration,
    ) -> Result<Output, Error> {
        let mut ssh = vec!["ssh".to_string(), "-p".into(), self.port.to_string()];
        ssh.extend(self.options());
        let mut cmd = Command::new("rsync");
        // --partial keeps what a dropped connection already brought, for the next run.
        cmd.args(["-a", "--numeric-ids", "-H", "--partial", "-e"])
            .arg(ssh.join(" "));
        if sudo {
            cmd.arg("--rsync-path=sudo rsync");
        }
        cmd.arg(format!("{user}@{}:{remote}", self.host)).arg(local);
        run_local(cmd, None, timeout).await
    }
}

/// Runs a local command with a timeout; the child is killed when the time is up. `stdin` is
/// written whole or the run is an error naming how much got through: a child that stops
/// reading early (ssh whose connection dropped, a remote `cat` that failed) may still exit 0.
pub async fn run_local(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, Error> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = format!("{:?}", cmd.as_std().get_program());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Program(format!("cannot run {program}: {e}")))?;
    // Written while the output is read, so neither side waits on a full pipe.
    let pipe = child.stdin.take();
    let writing = async {
        match (stdin, pipe) {
            (Some(data), Some(pipe)) => feed(pipe, data).await,
            _ => Ok(()),
        }
    };
    let both = async { tokio::join!(child.wait_with_output(), writing) };
    let Ok((out, fed)) = tokio::time::timeout(timeout, both).await else {
        return Err(Error::TimedOut(format!(
            "{program} did not finish within {timeout:?} and was stopped"
        )));
    };
    let out = out.map_err(|e| Error::Program(format!("{program} failed: {e}")))?;
    let out = Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    match fed {
        Ok(()) => Ok(out),
        Err((written, e)) => Err(Error::ShortInput(format!(
            "{program} took only {written} of {} bytes of its standard input ({e}) and ended with {}: {}",
            stdin.map_or(0, <[u8]>::len),
            out.code.map_or("a signal".into(), |c| format!("exit status {c}")),
            out.stderr.trim()
        ))),
    }
}

/// Writes all of `data` to the child and closes its stdin; on failure, how much was written.
async fn feed(mut pipe: tokio::process::ChildStdin, data: &[u8]) -> Result<(), (usize, std::io::Error)> {
    use tokio::io::AsyncWriteExt;
    let mut written = 0;
    while written < data.len() {
        match pipe.write(&data[written..]).await {
            Ok(0) => return Err((written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    pipe.shutdown().await.map_err(|e| (written, e))
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_that_stops_reading_its_input_is_an_error_naming_what_was_not_written() {
        // `head` reads its 10 bytes and exits 0; most of the 10 MB never gets through.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 10 >/dev/null"]);
        let data = vec![b'x'; 10 << 20];
        let e = run_local(cmd, Some(&data), Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(e, Error::ShortInput(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("took only") && e.contains("of 10485760 bytes"), "{e}");
        assert!(e.contains("ended with exit status 0"), "{e}");
    }

    #[tokio::test]
    async fn input_read_to_the_end_is_written_whole() {
        let data = vec![b'x'; 10 << 20];
        let mut cmd = Command::new("wc");
        cmd.arg("-c");
        let out = run_local(cmd, Some(&data), Duration::from_secs(30)).await.unwrap();
        assert_eq!((out.code, out.stdout.trim()), (Some(0), "10485760"));
    }

    fn control_path(t: &SshTarget) -> Option<String> {
        t.options()
            .into_iter()
            .find_map(|o| o.strip_prefix("ControlPath=").map(str::to_string))
    }

    #[test]
    fn logins_ride_on_one_connection_per_key_and_user_only_when_asked() {
        let mut t = SshTarget {
            host: "127.0.0.1".into(),
            port: 2222,
            key: "/a/long/cache/folder/of/the/harness/keys/id_ed25519".into(),
            known_hosts: "/tmp/known_hosts".into(),
            multiplex: None,
        };
        assert_eq!(control_path(&t), None, "no master unless asked");
        t.multiplex = Some(std::env::temp_dir().join(format!("nexus-hil-ssh-{}-{}", u32::MAX, u32::MAX)));
        let one = control_path(&t).unwrap();
        assert!(t.options().contains(&"ControlMaster=auto".to_string()));
        // ssh binds the socket at the path plus a 17-byte suffix, then renames it; a user name
        // on Debian is at most 32 bytes; a socket's path ends at 108 bytes with its NUL.
        let longest = one.replace("%r", &"u".repeat(32)).len() + 17;
        assert!(longest < 108, "{one}: {longest} bytes");
        t.key = "/another/key".into();
        assert_ne!(
            control_path(&t).unwrap(),
            one,
            "another key never rides on this key's login"
        );
    }
}
