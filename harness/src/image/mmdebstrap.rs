//! The one way images are made here: the `images/` files staged in a folder, then one
//! mmdebstrap call from the host's Debian mirror (the container image as a tar, the stand-in's
//! root as a folder), its output in a log whose end is quoted when it fails.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::InfraError;

/// One mmdebstrap run.
pub struct Bootstrap<'a> {
    /// `tar` or `directory`.
    pub format: &'a str,
    /// A foreign architecture (`arm64`), run through qemu-user; `None` for the host's.
    pub arch: Option<&'a str>,
    pub packages: &'a [&'a str],
    /// A folder synced into the new root before the hooks run.
    pub stage: &'a Path,
    /// Scripts (paths inside the new root) run in it, in order, after the sync.
    pub scripts: &'a [&'a str],
    pub suite: &'a str,
    pub out: &'a Path,
    pub mirrors: &'a [String],
}

impl Bootstrap<'_> {
    /// The mmdebstrap command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=apt", "--mode=root"])
            .arg(format!("--format={}", self.format));
        if let Some(a) = self.arch {
            cmd.arg(format!("--architectures={a}"));
        }
        cmd.arg(format!("--include={}", self.packages.join(",")))
            .arg("--aptopt=Acquire::Languages \"none\"")
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg(format!("--customize-hook=sync-in {} /", self.stage.display()));
        for s in self.scripts {
            cmd.arg(format!("--customize-hook=chroot \"$1\" /bin/sh {s}"));
        }
        cmd.arg(self.suite).arg(self.out).args(self.mirrors);
        cmd
    }

    /// Runs it with its output appended to `log`.
    pub fn run(&self, log: &Path) -> Result<(), InfraError> {
        logged(&mut self.command(), log, InfraError::Image)
    }
}

/// The package names of a `packages.txt` (one a line, `#` comments).
pub fn package_list(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Writes `bytes` to `path` (parents made) with `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InfraError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
    }
    std::fs::write(path, bytes).map_err(|e| InfraError::io(path.display(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| InfraError::io(path.display(), e))
}

/// Runs `cmd` with its output appended to `log`; on failure, the error (made by `wrap`) quotes
/// the log's end.
pub fn logged(cmd: &mut Command, log: &Path, wrap: fn(String) -> InfraError) -> Result<(), InfraError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| InfraError::io(log.display(), e))?;
    let err = file.try_clone().map_err(|e| InfraError::io(log.display(), e))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| {
            wrap(format!(
                "cannot run {program}: {e}; ci/setup-host (ci/standin for the stand-in) installs what it needs"
            ))
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(wrap(format!(
        "{program} failed ({status}); last lines of {}:\n{}",
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_arch_stage_scripts_suite_and_mirrors() {
        let mirrors = vec!["deb http://m.example/debian bookworm main".to_string()];
        let b = Bootstrap {
            format: "directory",
            arch: Some("arm64"),
            packages: &["systemd", "dbus"],
            stage: Path::new("/tmp/stage"),
            scripts: &["/a.sh", "/b.sh"],
            suite: "bookworm",
            out: Path::new("/tmp/root"),
            mirrors: &mirrors,
        };
        let args: Vec<String> = b
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--architectures=arm64".to_string()), "{args:?}");
        assert!(args.contains(&"--include=systemd,dbus".to_string()), "{args:?}");
        let hooks: Vec<&String> = args.iter().filter(|a| a.starts_with("--customize-hook")).collect();
        assert_eq!(hooks.len(), 3, "sync-in then both scripts in order: {hooks:?}");
        assert!(hooks[1].ends_with("/a.sh") && hooks[2].ends_with("/b.sh"));
        assert_eq!(&args[args.len() - 3..], ["bookworm", "/tmp/root", mirrors[0].as_str()]);
    }
}
