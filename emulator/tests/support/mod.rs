//! Test fixtures: sample device content, tree comparison, GnuPG decryption, and (for tests run as
//! root) a whole device: a btrfs image on a loop device at /broot's place, a private system bus
//! (dbus-daemon), polkitd with the project's policy and a pkla grant, `nexus-backupd` itself, and
//! the Control UI (`nexus-controlui`) as an unprivileged user behind its HTTPS server.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACTIONS: [&str; 9] = nexus_emulator::polkit::ACTIONS;

/// A D-Bus dictionary reply (`a{sv}`), as Status and the GetList entries are.
pub type Dict = HashMap<String, zbus::OwnedVariant>;

/// The value of `key` in a dictionary reply, as `T`; a missing key fails the test with the reply.
pub fn get<T: TryFrom<zbus::OwnedVariant>>(d: &Dict, key: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(
        d.get(key)
            .unwrap_or_else(|| panic!("key {key} missing in {d:?}"))
            .try_clone()
            .unwrap(),
    )
    .unwrap()
}

/// The workspace's `images/` folder.
pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fills `root/system` and `root/data` with content like a home-automation controller's: config
/// trees, modes and owners of all kinds, symlinks, hard links, an empty directory, a FIFO, long
/// names, old mtimes, and `data_bytes` of incompressible database content.
pub fn fill_sample(root: &Path, data_bytes: usize) {
    let sys = root.join("system");
    let data = root.join("data");
    let w = |p: &Path, content: &[u8], mode: u32| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w(
        &sys.join("etc/openhab/services/runtime.cfg"),
        b"org.openhab.restauth:enabled=true\n",
        0o644,
    );
    w(
        &sys.join("etc/openhab/things/zwave.things"),
        b"Bridge zwave:serial_zstick:controller\n",
        0o640,
    );
    w(
        &sys.join("etc/ssh/ssh_host_ed25519_key"),
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n",
        0o600,
    );
    w(
        &sys.join("opt/automation/bin/run.sh"),
        b"#!/bin/sh\nexec automation\n",
        0o755,
    );
    w(&sys.join("opt/automation/bin/setuid-helper"), b"\x7fELF", 0o4755);
    fs::create_dir_all(sys.join("var/lib/automation/empty-dir")).unwrap();
    std::os::unix::fs::symlink("../../etc/openhab", sys.join("opt/automation/conf")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", sys.join("opt/automation/dangling")).unwrap();
    let long_dir = sys.join("var/lib/automation").join("d".repeat(90)).join("e".repeat(90));
    w(&long_dir.join("f".repeat(120)), b"long path content\n", 0o644);
    std::os::unix::fs::symlink("t".repeat(150), sys.join("opt/automation/long-link")).unwrap();
    let fifo = std::ffi::CString::new(sys.join("var/lib/automation/control.fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o620) }, 0);

    let mut db = vec![0u8; data_bytes];
    getrandom::fill(&mut db).unwrap();
    w(&data.join("persistence/rrd4j/items.db"), &db, 0o660);
    w(
        &data.join("logs/events.log"),
        "2026-11-26 sensor.kitchen ON\n".repeat(2000).as_bytes(),
        0o644,
    );
    w(&data.join("logs/empty.log"), b"", 0o644);
    fs::hard_link(data.join("logs/events.log"), data.join("logs/events.log.1")).unwrap();
    fs::create_dir_all(data.join("cache/empty")).unwrap();

    // Owners and times a backup must keep (only root can give files away).
    if unsafe { libc::geteuid() } == 0 {
        for (p, uid, gid) in [
            (sys.join("etc/openhab/things/zwave.things"), 1000, 1000),
            (data.join("persistence/rrd4j/items.db"), 999, 998),
            (data.join("cache"), 1000, 100),
        ] {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        }
        std::os::unix::fs::lchown(sys.join("opt/automation/conf"), Some(1000), Some(1000)).unwrap();
    }
    let old = filetime(1_600_000_000);
    set_mtime(&sys.join("etc/openhab/services/runtime.cfg"), old);
    set_mtime(&data.join("logs/events.log"), filetime(1_700_000_000));
    set_mtime(&sys.join("var/lib/automation/empty-dir"), old);
}

pub fn filetime(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

pub fn set_mtime(p: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [t, t];
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) },
        0
    );
}

/// Every difference a user would notice between two trees: names (byte for byte), types, content,
/// symlink targets, modes, owners, mtimes (not of symlinks) and which files are hard links of each
/// other. Names are shown as Rust shows paths, bytes that are not UTF-8 escaped.
pub fn compare_trees(a: &Path, b: &Path) -> Vec<String> {
    fn collect(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let m = fs::symlink_metadata(e.path()).unwrap();
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                if m.is_dir() {
                    stack.push(e.path());
                }
                out.insert(rel, m);
            }
        }
        out
    }
    let (ta, tb) = (collect(a), collect(b));
    let mut diffs = Vec::new();
    for name in ta.keys().filter(|k| !tb.contains_key(*k)) {
        diffs.push(format!("missing in {}: {name:?}", b.display()));
    }
    for name in tb.keys().filter(|k| !ta.contains_key(*k)) {
        diffs.push(format!("extra in {}: {name:?}", b.display()));
    }
    let mut links_a: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    let mut links_b: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for (name, ma) in &ta {
        let Some(mb) = tb.get(name) else { continue };
        let (pa, pb) = (a.join(name), b.join(name));
        if ma.file_type() != mb.file_type() {
            diffs.push(format!("{name:?}: type differs"));
            continue;
        }
        if !ma.file_type().is_symlink() && ma.mode() != mb.mode() {
            diffs.push(format!("{name:?}: mode {:o} vs {:o}", ma.mode(), mb.mode()));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            diffs.push(format!(
                "{name:?}: owner {}:{} vs {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        if !ma.file_type().is_symlink() && ma.mtime() != mb.mtime() {
            diffs.push(format!("{name:?}: mtime {} vs {}", ma.mtime(), mb.mtime()));
        }
        if ma.is_file() {
            if fs::read(&pa).unwrap() != fs::read(&pb).unwrap() {
                diffs.push(format!("{name:?}: content differs"));
            }
            if ma.nlink() > 1 {
                links_a.entry(ma.ino()).or_default().push(name);
                links_b.entry(mb.ino()).or_default().push(name);
            }
        }
        if ma.file_type().is_symlink() && fs::read_link(&pa).unwrap() != fs::read_link(&pb).unwrap() {
            diffs.push(format!("{name:?}: symlink target differs"));
        }
    }
    let groups = |m: HashMap<u64, Vec<&PathBuf>>| {
        let mut g: Vec<Vec<PathBuf>> = m.into_values().map(|v| v.into_iter().cloned().collect()).collect();
        g.iter_mut().for_each(|v| v.sort());
        g.sort();
        g
    };
    let (ga, gb) = (groups(links_a), groups(links_b));
    if ga != gb {
        diffs.push(format!("hard links differ: {ga:?} vs {gb:?}"));
    }
    diffs
}

/// Decrypts `file` with GnuPG exactly as the vendor documents
/// (`gpg --batch --pinentry-mode loopback --passphrase-fd 0 --decrypt`), into `out`.
pub fn gpg_decrypt(file: &Path, password: &str, out: &Path) -> Result<(), String> {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("gpg")
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--output",
        ])
        .arg(out)
        .arg("--decrypt")
        .arg(file)
        .env("GNUPGHOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpg is installed");
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Extracts a tar archive as root would restore it: owners, modes and times kept.
pub fn tar_extract(tar: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .args(["-x", "--numeric-owner", "-p", "-f"])
        .arg(tar)
        .arg("-C")
        .arg(into));
}

/// Decrypts a backup and checks that it restores `snapshot_dir` exactly.
pub fn assert_backup_restores(backup: &Path, password: &str, snapshot_dir: &Path) {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("backup.tar");
    gpg_decrypt(backup, password, &tar).unwrap_or_else(|e| panic!("gpg cannot decrypt {}: {e}", backup.display()));
    let out = work.path().join("restored");
    tar_extract(&tar, &out);
    let diffs = compare_trees(snapshot_dir, &out);
    assert!(
        diffs.is_empty(),
        "restored backup differs from the snapshot:\n{}",
        diffs.join("\n")
    );
}

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Tests of the real device need root (loop devices, mounts, other users); say so plainly.
pub fn require_root() {
    assert!(
        is_root(),
        "this test drives a real btrfs image, dbus-daemon and polkitd and must run as root: use `ci/test`"
    );
}

/// A whole device on this machine.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub broot: PathBuf,
    pub bus_addr: String,
    pub https_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    dbus: Option<Child>,
    polkit: Option<Child>,
    daemon: Option<Child>,
}

/// How to make a device.
pub struct DeviceOptions {
    /// Size of the btrfs image in MiB.
    pub image_mib: u64,
    /// Incompressible bytes in data/persistence.
    pub data_bytes: usize,
    /// Extra `[backup]` settings for backupd.toml.
    pub backup_toml: String,
    /// Actions granted to `nobody` by a pkla file, as the vendor's doc grants them.
    pub grant_nobody: Vec<&'static str>,
    /// Extra `[https]` settings for backupd.toml.
    pub https_toml: String,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            image_mib: 512,
            data_bytes: 4 << 20,
            backup_toml: "read_bytes_per_sec = 0\n".into(),
            grant_nobody: ACTIONS.to_vec(),
            https_toml: String::new(),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Device {
    pub fn start(opts: DeviceOptions) -> Device {
        require_root();
        let dir = tempfile::Builder::new().prefix("nexus-device-").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        // The SD card's btrfs partition, loop-mounted where the daemon expects /broot.
        let image = d.join("sd-root.img");
        let broot = d.join("broot");
        fs::create_dir(&broot).unwrap();
        fs::File::create(&image).unwrap().set_len(opts.image_mib << 20).unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&broot));
        // From here on, Drop unmounts and stops whatever was started, also when set-up fails.
        let log_path = d.join("nexus-backupd.log");
        let config_path = d.join("backupd.toml");
        let sock = d.join("system_bus_socket");
        let mut dev = Device {
            broot: broot.clone(),
            bus_addr: format!("unix:path={}", sock.display()),
            https_port: free_port(),
            config_path: config_path.clone(),
            log_path,
            dbus: None,
            polkit: None,
            daemon: None,
            dir,
        };
        let d = dev.dir.path().to_owned();
        let d = d.as_path();
        for sub in ["system", "data"] {
            run(Command::new("btrfs").args(["subvolume", "create"]).arg(broot.join(sub)));
        }
        fs::create_dir_all(broot.join("snapshot/snapshots")).unwrap();
        fs::create_dir_all(broot.join("backups")).unwrap();
        fill_sample(&broot, opts.data_bytes);

        // A private system bus with the device's policy files.
        let conf = d.join("bus.conf");
        fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <include>{policy}</include>
</busconfig>
"#,
                sock = sock.display(),
                policy = images_dir().join("dbus/tech.noreya.Backup1.conf").canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        dev.dbus = Some(
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", conf.display()))
                .arg("--nofork")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dbus-daemon is installed"),
        );
        let start = Instant::now();
        while !sock.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }

        // polkitd sees the project's .policy and the pkla grant in a mount namespace of its own,
        // so the host's polkit configuration is left as it is.
        let actions = d.join("polkit-actions");
        let pkla = d.join("pkla");
        fs::create_dir(&actions).unwrap();
        fs::create_dir(&pkla).unwrap();
        fs::copy(
            images_dir().join("polkit/tech.noreya.backup.policy"),
            actions.join("tech.noreya.backup.policy"),
        )
        .unwrap();
        if !opts.grant_nobody.is_empty() {
            fs::write(
                pkla.join("10-backup.pkla"),
                format!(
                    "[Backup permissions]\nIdentity=unix-user:nobody\nAction={};\nResultActive=yes\nResultInactive=yes\nResultAny=yes\n",
                    opts.grant_nobody.join(";")
                ),
            )
            .unwrap();
        }
        dev.polkit = Some(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /usr/share/polkit-1/actions && mount --bind {} /etc/polkit-1/localauthority/50-local.d && exec /usr/lib/polkit-1/polkitd --no-debug",
                actions.display(),
                pkla.display()
            ))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &dev.bus_addr)
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("polkitd.log")).unwrap())
            .spawn()
            .expect("unshare and polkitd are installed"));

        let https_port = dev.https_port;
        fs::write(
            &config_path,
            format!(
                "[paths]\nbroot = \"{}\"\ntls_dir = \"{}\"\n\n[backup]\ns2k_count = 96\nprogress_interval_ms = 50\n{}\n[https]\nlisten = [\"127.0.0.1:{https_port}\"]\n{}",
                broot.display(),
                d.join("tls").display(),
                opts.backup_toml,
                opts.https_toml
            ),
        )
        .unwrap();
        dev.wait_name("org.freedesktop.PolicyKit1");
        dev.start_daemon_on_a_free_port();
        dev
    }

    fn names(&self) -> String {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.bus_addr))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/",
                "org.freedesktop.DBus.ListNames",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_name(&mut self, name: &str) {
        if let Err(log) = self.wait_name_or_exit(name) {
            panic!("{log}");
        }
    }

    /// Waits for `name` on the bus; `Err` with the daemon's log when it exited first.
    fn wait_name_or_exit(&mut self, name: &str) -> Result<(), String> {
        let start = Instant::now();
        while !self.names().contains(&format!("\"{name}\"")) {
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(status)) = d.try_wait() {
                    self.daemon = None;
                    return Err(format!(
                        "nexus-backupd exited ({status}) before owning {name}:\n{}",
                        self.log()
                    ));
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name} did not appear on the bus:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// The first start: when another process took the HTTPS port between [`free_port`] and the
    /// daemon's bind (tests running beside each other open many), again on a fresh port.
    fn start_daemon_on_a_free_port(&mut self) {
        for _ in 0..5 {
            let logged = self.log().len();
            let Err(log) = self.try_start_daemon() else {
                return;
            };
            if !self
                .log()
                .get(logged..)
                .unwrap_or("")
                .contains("Address already in use")
            {
                panic!("{log}");
            }
            let config = fs::read_to_string(&self.config_path).unwrap();
            let (old, new) = (self.https_port, free_port());
            let config = config.replace(&format!("\"127.0.0.1:{old}\""), &format!("\"127.0.0.1:{new}\""));
            fs::write(&self.config_path, config).unwrap();
            self.https_port = new;
        }
        panic!("no free HTTPS port after 5 tries:\n{}", self.log());
    }

    /// Starts nexus-backupd and waits until it owns both names.
    pub fn start_daemon(&mut self) {
        if let Err(log) = self.try_start_daemon() {
            panic!("{log}");
        }
    }

    fn try_start_daemon(&mut self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nexus-backupd"))
            .arg("--config")
            .arg(&self.config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_addr)
            .env("NEXUS_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        self.wait_name_or_exit(nexus_contract::names::SNAPSHOT1)?;
        self.wait_name_or_exit(nexus_contract::names::BACKUP1)
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// SIGKILLs the daemon, as a power cut or OOM kill would.
    pub fn kill_daemon(&mut self) {
        let mut d = self.daemon.take().expect("daemon running");
        d.kill().unwrap();
        d.wait().unwrap();
    }

    /// Stops the daemon with SIGTERM, as systemd does.
    pub fn stop_daemon(&mut self) -> std::process::ExitStatus {
        let mut d = self.daemon.take().expect("daemon running");
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        d.wait().unwrap()
    }

    /// The daemon's log so far (its journal on the device).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A zbus connection to the device's system bus, as root.
    pub async fn conn(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.bus_addr.as_str())
            .build()
            .await
            .unwrap()
    }

    /// `dbus-send --print-reply` as `user` (looked up in /etc/passwd) on the device's bus.
    pub fn dbus_send_as(&self, user: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        if user != "root" {
            let gid = Command::new("id").args(["-g", user]).output().unwrap();
            let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
            cmd.args([&format!("--reuid={user}"), &format!("--regid={gid}"), "--clear-groups"]);
        }
        cmd.arg("dbus-send")
            .arg(format!("--bus={}", self.bus_addr))
            .arg("--print-reply")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn snapshot_dir(&self, id: u32) -> PathBuf {
        self.broot.join(format!("snapshot/snapshots/{id}"))
    }

    pub fn backup_file(&self, id: u32) -> PathBuf {
        self.broot.join(format!("backups/nexus_backup_{id}.tar.gpg"))
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for c in [self.polkit.take(), self.dbus.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg(&self.broot).status();
    }
}

/// Where the Control UI of a test lives before it runs: a directory its user may use, and its
/// socket, which the device's `[https]` settings must name ([`UiDir::https_toml`]).
pub struct UiDir {
    dir: tempfile::TempDir,
}

impl UiDir {
    pub fn new() -> UiDir {
        let dir = tempfile::Builder::new().prefix("nexus-ui-").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        UiDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("http.sock")
    }

    /// The `[https]` line that makes nexus-backupd forward `/control/` to this UI.
    pub fn https_toml(&self) -> String {
        format!("control_ui_socket = \"{}\"\n", self.socket().display())
    }
}

/// The UI user of the tests: `nobody`, as the device fixture grants its pkla actions to it.
pub const UI_USER: &str = "nobody";

/// `nexus-controlui` running as [`UI_USER`] on the device's bus; stopped when dropped.
pub struct ControlUi {
    child: Child,
    pub dir: UiDir,
    pub log_path: PathBuf,
}

impl ControlUi {
    /// Starts the UI with admin password `password` and waits for its socket.
    pub fn start(dir: UiDir, dev: &Device, password: &str) -> ControlUi {
        let password_file = dir.path().join("admin.password");
        fs::write(&password_file, format!("{password}\n")).unwrap();
        let config = dir.path().join("controlui.toml");
        fs::write(
            &config,
            format!(
                "socket = \"{}\"\nadmin_password_file = \"{}\"\nbackups_dir = \"{}\"\npassword_box_secs = 7\n",
                dir.socket().display(),
                password_file.display(),
                dev.broot.join("backups").display()
            ),
        )
        .unwrap();
        let log_path = dir.path().join("controlui.log");
        let gid = Command::new("id").args(["-g", UI_USER]).output().unwrap();
        let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={UI_USER}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_nexus-controlui"))
            .arg("--config")
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &dev.bus_addr)
            .env("NEXUS_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let ui = ControlUi { child, dir, log_path };
        let start = Instant::now();
        while !ui.dir.socket().exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the UI did not start: {}",
                ui.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        ui
    }

    /// The UI's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ControlUi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl as the browser of the device's HTTPS server, trusting its CA, with a cookie jar; the
/// body of the answer.
pub fn curl_jar(dev: &Device, jar: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(dev.ca_path())
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text between the first `start` and the next `end`; a missing `start` fails the test.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    text.split(start)
        .nth(1)
        .and_then(|r| r.split(end).next())
        .unwrap_or_else(|| panic!("{start} not in {text}"))
}
