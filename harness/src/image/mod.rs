//! The emulator image: Debian bookworm made with mmdebstrap from the mirror the host's apt
//! sources name, with nexus-backupd and its unit, D-Bus and polkit files, imported into the
//! container engine as `localhost/nexus-emulator:<content hash>`. Rebuilt only when an input
//! (the files under `images/`, embedded in this binary; the daemon binary; the mirror) changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::InfraError;
use mmdebstrap::{package_list, write_file, Bootstrap};

pub(crate) mod mmdebstrap;
pub mod sdcard;
pub(crate) mod standin;

/// Repository name of the emulator image in the engine.
pub const REPO: &str = "localhost/nexus-emulator";
/// Debian release the emulator is made from (the device's base).
pub const SUITE: &str = "bookworm";

macro_rules! input {
    ($dest:literal, $src:literal, $mode:literal) => {
        (
            $dest,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../images/", $src)) as &[u8],
            $mode,
        )
    };
}

/// Files of `images/` and where they go in the image, with their modes.
pub const FILES: [(&str, &[u8], u32); 16] = [
    input!("usr/local/lib/nexus-hil/packages.txt", "emulator/packages.txt", 0o644),
    input!("usr/local/lib/nexus-hil/customize.sh", "emulator/customize.sh", 0o755),
    input!(
        "etc/systemd/system/broot.mount",
        "emulator/rootfs/etc/systemd/system/broot.mount",
        0o644
    ),
    input!(
        "etc/systemd/system/nexus-hostkeys.service",
        "emulator/rootfs/etc/systemd/system/nexus-hostkeys.service",
        0o644
    ),
    input!(
        "etc/ssh/sshd_config.d/nexus-hil.conf",
        "emulator/rootfs/etc/ssh/sshd_config.d/nexus-hil.conf",
        0o644
    ),
    input!(
        "usr/share/dbus-1/system.d/tech.noreya.Backup1.conf",
        "dbus/tech.noreya.Backup1.conf",
        0o644
    ),
    input!(
        "usr/share/dbus-1/system-services/tech.noreya.Snapshot1.service",
        "dbus/tech.noreya.Snapshot1.service",
        0o644
    ),
    input!(
        "usr/share/dbus-1/system-services/tech.noreya.Backup1.service",
        "dbus/tech.noreya.Backup1.service",
        0o644
    ),
    input!(
        "usr/share/polkit-1/actions/tech.noreya.backup.policy",
        "polkit/tech.noreya.backup.policy",
        0o644
    ),
    input!(
        "etc/systemd/system/nexus-backupd.service",
        "systemd/nexus-backupd.service",
        0o644
    ),
    input!(
        "etc/systemd/system/nexus-automation.service",
        "systemd/nexus-automation.service",
        0o644
    ),
    input!("etc/nexus/backupd.toml", "etc/nexus/backupd.toml", 0o644),
    // [ours] The Control UI: its units, its polkit grant and its configuration.
    input!(
        "etc/systemd/system/nexus-controlui.service",
        "systemd/nexus-controlui.service",
        0o644
    ),
    input!(
        "etc/systemd/system/nexus-controlui-password.service",
        "systemd/nexus-controlui-password.service",
        0o644
    ),
    input!(
        "etc/polkit-1/localauthority/50-local.d/20-nexus-ui.pkla",
        "polkit/20-nexus-ui.pkla",
        0o644
    ),
    input!("etc/nexus/controlui.toml", "etc/nexus/controlui.toml", 0o644),
];

/// The Debian archive lines for `suite` found in the host's apt sources (one-line and deb822
/// formats), as `deb URI SUITE... COMPONENT...` lines mmdebstrap takes.
pub fn host_mirrors(suite: &str) -> Result<Vec<String>, InfraError> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut lines = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if f.extension().is_some_and(|e| e == "sources") {
            lines.extend(parse_deb822(&text, suite));
        } else {
            lines.extend(parse_one_line(&text, suite));
        }
    }
    if lines.is_empty() {
        return Err(InfraError::Image(format!(
            "no Debian mirror for {suite} in /etc/apt/sources.list(.d); the emulator image is made from the host's mirror: add one"
        )));
    }
    Ok(lines)
}

fn suite_matches(s: &str, suite: &str) -> bool {
    s == suite || s.strip_prefix(suite).is_some_and(|rest| rest.starts_with('-'))
}

fn parse_one_line(text: &str, suite: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb ") || l.starts_with("deb\t"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().filter(|w| !w.starts_with('[')).collect();
            // deb [options] URI SUITE COMPONENT...
            let (uri, s) = (words.get(1)?, words.get(2)?);
            suite_matches(s, suite).then(|| format!("deb {uri} {}", words[2..].join(" ")))
        })
        .collect()
}

fn parse_deb822(text: &str, suite: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        if !field("Types").iter().any(|t| t == "deb") {
            continue;
        }
        let suites: Vec<String> = field("Suites")
            .into_iter()
            .filter(|s| suite_matches(s, suite))
            .collect();
        if suites.is_empty() {
            continue;
        }
        for uri in field("URIs") {
            out.push(format!(
                "deb {uri} {} {}",
                suites.join(" "),
                field("Components").join(" ")
            ));
        }
    }
    out
}

/// What the image is made of; its hash names it.
pub struct ImageInputs {
    pub backupd: PathBuf,
    pub mirrors: Vec<String>,
    pub tag: String,
}

impl ImageInputs {
    /// Collects the inputs: the daemon binary, the embedded files, the host's mirror.
    pub fn collect(backupd: &Path) -> Result<Self, InfraError> {
        let binary = std::fs::read(backupd).map_err(|e| {
            InfraError::Image(format!(
                "cannot read the daemon binary {}: {e}; build it with `cargo build --release -p nexus-emulator` or pass --backupd",
                backupd.display()
            ))
        })?;
        let mirrors = host_mirrors(SUITE)?;
        let mut h = Sha256::new();
        h.update(b"nexus-emulator image v1\n");
        for (dest, bytes, mode) in FILES {
            h.update(format!("{dest} {mode:o} {}\n", bytes.len()).as_bytes());
            h.update(bytes);
        }
        h.update(&binary);
        let automation = automation_next_to(backupd);
        h.update(&std::fs::read(&automation).map_err(|e| {
            InfraError::Image(format!(
                "cannot read the home-automation loop {}: {e}; build it with `cargo build --release -p nexus-emulator`",
                automation.display()
            ))
        })?);
        let controlui = controlui_next_to(backupd);
        h.update(&std::fs::read(&controlui).map_err(|e| {
            InfraError::Image(format!(
                "cannot read the Control UI {}: {e}; build it with `cargo build --release -p nexus-emulator`",
                controlui.display()
            ))
        })?);
        for m in &mirrors {
            h.update(m.as_bytes());
        }
        let tag = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            backupd: backupd.to_owned(),
            mirrors,
            tag,
        })
    }

    pub fn reference(&self) -> String {
        format!("{REPO}:{}", self.tag)
    }
}

/// `nexus-automation` (the home-automation loop and latency probe) next to the daemon binary.
pub fn automation_next_to(backupd: &Path) -> PathBuf {
    backupd.with_file_name("nexus-automation")
}

/// `nexus-controlui` (the [ours] Control UI) next to the daemon binary.
pub fn controlui_next_to(backupd: &Path) -> PathBuf {
    backupd.with_file_name("nexus-controlui")
}

/// A `nexus-automation` (the latency probe) built for a device of architecture `arch` (`uname -m`),
/// to copy onto a real device that lacks it: `$NEXUS_HIL_AUTOMATION` if set, else the one next to
/// this executable for the host's own architecture, else a cross build in
/// `target/<arch>-unknown-linux-gnu/{this profile,release}/`.
pub fn automation_for_arch(arch: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NEXUS_HIL_AUTOMATION") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if arch == std::env::consts::ARCH {
        let p = dir.join("nexus-automation");
        return p.exists().then_some(p);
    }
    let profile = dir.file_name()?.to_owned();
    let triple = dir.parent()?.join(format!("{arch}-unknown-linux-gnu"));
    [triple.join(&profile), triple.join("release")]
        .into_iter()
        .map(|d| d.join("nexus-automation"))
        .find(|p| p.exists())
}

/// The daemon binary next to this executable (`target/<profile>/nexus-backupd`).
pub fn default_backupd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        // A test binary lives one folder down, in target/<profile>/deps/.
        .map(|d| match d.file_name() {
            Some(n) if n == "deps" => d.parent().map(Path::to_path_buf).unwrap_or(d),
            _ => d,
        })
        .map(|d| d.join("nexus-backupd"))
        .unwrap_or_else(|| PathBuf::from("nexus-backupd"))
}

/// An exclusive lock on the cache folder while images are made, so parallel runs (or test
/// processes) build each image once. Released on drop.
pub struct BuildLock {
    _file: std::fs::File,
}

impl BuildLock {
    pub fn take() -> Result<Self, InfraError> {
        Self::take_in(&crate::cache::images())
    }

    /// The same lock on another folder (the arm64 stand-in's images have their own).
    pub fn take_in(dir: &Path) -> Result<Self, InfraError> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
        let path = dir.join(".build.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| InfraError::io(path.display(), e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(InfraError::io(path.display(), std::io::Error::last_os_error()));
        }
        Ok(Self { _file: f })
    }
}

/// The outcome of [`ensure`].
pub struct Built {
    pub reference: String,
    /// How long the build took; `None` when the image was already there.
    pub build_time: Option<Duration>,
}

/// Makes sure the image for these inputs is in the engine, building it when missing or `force`.
pub async fn ensure(inputs: &ImageInputs, force: bool, log: impl Fn(&str)) -> Result<Built, InfraError> {
    let docker = crate::engine::client().await?;
    let reference = inputs.reference();
    if !force && docker.inspect_image(&reference).await.is_ok() {
        return Ok(Built {
            reference,
            build_time: None,
        });
    }
    let start = Instant::now();
    let work = crate::cache::images().join(format!("image-{}", inputs.tag));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| InfraError::io(work.display(), e))?;
    log(&format!(
        "building {reference} with mmdebstrap (log: {})",
        work.join("mmdebstrap.log").display()
    ));
    let tar = work.join("rootfs.tar");
    let inputs_ref = inputs;
    let (work2, tar2) = (work.clone(), tar.clone());
    let backupd = inputs_ref.backupd.clone();
    let mirrors = inputs_ref.mirrors.clone();
    tokio::task::spawn_blocking(move || mmdebstrap(&work2, &backupd, &mirrors, &tar2))
        .await
        .map_err(|e| InfraError::Image(e.to_string()))??;
    log(&format!("importing {reference} into the container engine"));
    import(&docker, &tar, &inputs.tag).await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(Built {
        reference,
        build_time: Some(start.elapsed()),
    })
}

fn mmdebstrap(work: &Path, backupd: &Path, mirrors: &[String], tar: &Path) -> Result<(), InfraError> {
    let stage = work.join("stage");
    for (dest, bytes, mode) in FILES {
        write_file(&stage.join(dest), bytes, mode)?;
    }
    let bin = std::fs::read(backupd).map_err(|e| InfraError::io(backupd.display(), e))?;
    write_file(&stage.join("usr/local/bin/nexus-backupd"), &bin, 0o755)?;
    let automation = automation_next_to(backupd);
    let bin = std::fs::read(&automation).map_err(|e| InfraError::io(automation.display(), e))?;
    write_file(&stage.join("usr/local/bin/nexus-automation"), &bin, 0o755)?;
    let controlui = controlui_next_to(backupd);
    let bin = std::fs::read(&controlui).map_err(|e| InfraError::io(controlui.display(), e))?;
    write_file(&stage.join("usr/local/bin/nexus-controlui"), &bin, 0o755)?;
    let packages: Vec<&str> = package_list(std::str::from_utf8(FILES[0].1).unwrap_or_default()).collect();
    Bootstrap {
        format: "tar",
        arch: None,
        packages: &packages,
        stage: &stage,
        scripts: &["/usr/local/lib/nexus-hil/customize.sh"],
        suite: SUITE,
        out: tar,
        mirrors,
    }
    .run(&work.join("mmdebstrap.log"))
}

async fn import(docker: &testcontainers::bollard::Docker, tar: &Path, tag: &str) -> Result<(), InfraError> {
    use futures_util::StreamExt;
    use testcontainers::bollard::query_parameters::CreateImageOptionsBuilder;
    let bytes = tokio::fs::read(tar)
        .await
        .map_err(|e| InfraError::io(tar.display(), e))?;
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        // The API lets the repo carry the tag; Podman honours only that form.
        .repo(&format!("{REPO}:{tag}"))
        .tag(tag)
        // No `changes`: engines disagree on how to read several; the emulator sets its command
        // when it starts a container.
        .build();
    let mut stream = docker.create_image(
        Some(options),
        Some(testcontainers::bollard::body_full(bytes.into())),
        None,
    );
    while let Some(item) = stream.next().await {
        item.map_err(|e| InfraError::Image(format!("the engine refused the image: {e}")))?;
    }
    docker
        .inspect_image(&format!("{REPO}:{tag}"))
        .await
        .map(|_| ())
        .map_err(|e| {
            InfraError::Image(format!(
                "the engine imported the image but does not list {REPO}:{tag}: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let deb822 =
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: https://other.example/apt\nSuites: cloud-sdk-bookworm\nComponents: main\n";
        assert_eq!(
            parse_deb822(deb822, "bookworm"),
            ["deb http://mirror.example/debian bookworm bookworm-updates main"]
        );
        let one = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main contrib\ndeb http://x.example/ trixie main\n";
        assert_eq!(
            parse_one_line(one, "bookworm"),
            ["deb http://m.example/debian bookworm main contrib"]
        );
    }
}
