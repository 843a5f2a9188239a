//! The real-device path, with an emulator standing in for the device and reached only over its
//! published SSH and HTTPS ports, as a NEXUS on the LAN is: `provision` (dry run, idempotent,
//! `--undo` leaves /etc and /home as they were), portable scenarios through `--target ssh://`
//! that leave the device's snapshots as they found them, `conform` (pinned with insta), and a
//! changed CA refused with the way to re-pin.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
}

fn backupd() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_nexus-hil")).with_file_name("nexus-backupd")
}

fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test starts emulator containers and must run as root: use ci/test"
    );
}

/// An emulator kept up by `nexus-hil emulator up`, used as if it were a device on the network.
struct Device {
    child: Child,
    ssh_port: u16,
    https_port: u16,
    /// The admin's key (what a QA engineer's own ssh key is to a real device).
    admin_key: PathBuf,
}

impl Device {
    fn up() -> Self {
        require_root();
        let mut child = bin()
            .args(["emulator", "up", "--backupd"])
            .arg(backupd())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut ssh_port, mut https_port, mut admin_key) = (0, 0, PathBuf::new());
        for line in lines.by_ref() {
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

    fn target(&self) -> String {
        format!("ssh://nexus@127.0.0.1:{}", self.ssh_port)
    }

    /// Runs a command as root on the device with the admin's key.
    fn root(&self, cmd: &str) -> String {
        common::ssh_root(self.ssh_port, &self.admin_key, cmd)
    }

    /// Every file, folder and link under /etc and /home with its mode, owner and content hash.
    fn etc_and_home(&self) -> String {
        self.root(common::ETC_AND_HOME)
    }

    fn snapshot_ids(&self) -> String {
        self.root("ls /broot/snapshot/snapshots")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // `emulator up` removes its container on Ctrl-C.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn provision(dev: &Device, extra: &[&str]) -> Output {
    bin()
        .args(["provision", "--target", &dev.target(), "--login-key"])
        .arg(&dev.admin_key)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn provision_then_the_portable_suite_then_undo_leaves_the_device_as_it_was() {
    let dev = Device::up();
    let before = dev.etc_and_home();
    let snapshots_before = dev.snapshot_ids();

    let dry = provision(&dev, &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("$ adduser --disabled-password --gecos Backup remotebackup")
            && said.contains("10-backup.pkla")
            && said.contains("python3-dbus and rsync are present"),
        "{said}"
    );
    assert_eq!(dev.etc_and_home(), before, "a dry run changed the device");

    let first = provision(&dev, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let pkla = dev.root("cat /etc/polkit-1/localauthority/50-local.d/10-backup.pkla");
    assert!(
        pkla.starts_with("[Backup permissions]\nIdentity=unix-user:remotebackup\nAction=tech.noreya.Backup1.Cancel;")
            && pkla.contains("ResultAny=yes"),
        "{pkla}"
    );
    let second = provision(&dev, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let again = String::from_utf8_lossy(&second.stdout);
    assert!(
        !again.contains("$ "),
        "the second provisioning changed something:\n{again}"
    );

    // The suite through --target with the harness key that provision installed.
    let dir = tempfile::tempdir().unwrap();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let run = run_on(
        &dev,
        dir.path(),
        "r",
        &[
            scenarios.join("06-polkit-grants.yaml"),
            scenarios.join("00-dbus-backup-flow.yaml"),
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/report.json")).unwrap()).unwrap();
    assert_eq!(report["target"], dev.target().as_str());
    let cleanup: Vec<String> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["cleanup"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        cleanup
            .iter()
            .any(|c| c.starts_with("deleted snapshot") && c.ends_with("and its backup")),
        "{cleanup:?}"
    );
    assert!(cleanup.iter().any(|c| c == "removed user stranger"), "{cleanup:?}");
    assert_eq!(
        dev.snapshot_ids(),
        snapshots_before,
        "the scenarios' snapshots were left on the device"
    );
    assert_eq!(dev.root("ls -A /broot/backups"), "");

    // A device without the latency probe (a real NEXUS) gets the harness's build for this step
    // only: copied over, run, removed.
    let probe = dev.root("command -v nexus-automation").trim().to_string();
    dev.root(&format!("mv {probe} /root/nexus-automation.aside"));
    let file = dir.path().join("probe.yaml");
    std::fs::write(
        &file,
        "name: probe on a device without it\ntags: [portable]\nsteps:\n  - probe.latency:\n      name: idle\n      for: 1s\n",
    )
    .unwrap();
    let run = run_on(&dev, dir.path(), "p", &[file]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("p/report.json")).unwrap()).unwrap();
    let step = &report["scenarios"][0]["steps"][0];
    assert_eq!(step["latency"]["samples"], 100, "{step}");
    assert!(
        step["transcript"]
            .to_string()
            .contains("the device has no nexus-automation: copied"),
        "{step}"
    );
    assert_eq!(
        dev.root("ls /tmp | grep -c nexus-hil-probe || true").trim(),
        "0",
        "the copied probe was left behind"
    );
    dev.root(&format!("mv /root/nexus-automation.aside {probe}"));

    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    common::assert_same_etc_and_home(&before, &dev.etc_and_home());
}

#[test]
fn conform_on_the_emulator_holds_every_documented_item() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["conform", "--backupd"])
        .arg(backupd())
        .arg("--json")
        .arg(dir.path().join("conform.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    insta::assert_snapshot!("conform_emulator", String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("conform.json")).unwrap()).unwrap();
    assert_eq!(json["conforms"], true);
    assert_eq!(json["checks"].as_array().unwrap().len(), 39);
}

#[test]
fn a_device_whose_ca_changed_is_refused_with_how_to_re_pin() {
    let dev = Device::up();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    // A CA pinned earlier for this address that the device does not have any more.
    std::fs::create_dir_all(&pins).unwrap();
    let other = rcgen_free_ca();
    let pin = pins.join(format!("127.0.0.1_{}.pem", dev.https_port));
    std::fs::write(&pin, other).unwrap();
    let out = conform(&dev, &pins);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("HTTPS CA")).unwrap_or_default();
    assert!(
        line.starts_with("[doc]  FAIL")
            && line.contains("does not chain to the CA pinned in")
            && line.contains("delete that file to pin its new CA"),
        "{stdout}"
    );
    // Re-pinning as the message says makes it pass.
    std::fs::remove_file(&pin).unwrap();
    let out = conform(&dev, &pins);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::read_to_string(&pin)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

/// `nexus-hil run --target` the device with the harness key; CAs pinned in `dir/pins`, reports
/// in `dir/report`.
fn run_on(dev: &Device, dir: &Path, report: &str, files: &[PathBuf]) -> Output {
    run_cmd(dev, dir, report).args(files).output().unwrap()
}

/// `nexus-hil run --target` the device, CAs pinned in `dir/pins`, reports in `dir/report`;
/// the scenarios to add.
fn run_cmd(dev: &Device, dir: &Path, report: &str) -> Command {
    let mut c = bin();
    c.args([
        "run",
        "--target",
        &dev.target(),
        "--https-port",
        &dev.https_port.to_string(),
    ])
    .arg("--pins")
    .arg(dir.join("pins"))
    .arg("--report-dir")
    .arg(dir.join(report));
    c
}

/// `nexus-hil conform` against the device, with the admin's key and CAs pinned in `pins`.
fn conform(dev: &Device, pins: &Path) -> Output {
    bin()
        .args([
            "conform",
            "--target",
            &dev.target(),
            "--https-port",
            &dev.https_port.to_string(),
        ])
        .arg("--key")
        .arg(&dev.admin_key)
        .arg("--pins")
        .arg(pins)
        .output()
        .unwrap()
}

/// Some other CA: the one of a second emulator would do; a fixed self-signed certificate is enough.
fn rcgen_free_ca() -> String {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=another CA",
            "-days",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ca_fingerprint(dev: &Device) -> String {
    let pem = dev.root("cat /etc/nexus/tls/ca.pem");
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), pem.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit('=').next().unwrap().to_string()
}

fn inventory(devs: &[(&str, &Device, String)]) -> String {
    devs.iter()
        .map(|(name, d, fp)| {
            format!(
                "[[device]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nssh_port = {}\nhttps_port = {}\nca_sha256 = \"{fp}\"\n",
                d.ssh_port, d.https_port
            )
        })
        .collect()
}

#[test]
fn an_inventory_shares_the_suite_among_devices_in_one_report() {
    let (a, b) = (Device::up(), Device::up());
    for d in [&a, &b] {
        let p = provision(d, &[]);
        assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    }
    let dir = tempfile::tempdir().unwrap();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let run = |inv: &str, report: &str| {
        let file = dir.path().join(format!("{report}.toml"));
        std::fs::write(&file, inv).unwrap();
        bin()
            .arg("run")
            .arg("--targets")
            .arg(&file)
            .args(["-j", "2", "--pins"])
            .arg(dir.path().join(format!("pins-{report}")))
            .arg("--report-dir")
            .arg(dir.path().join(report))
            .arg(scenarios.join("00-dbus-backup-flow.yaml"))
            .arg(scenarios.join("04-root-incremental.yaml"))
            .arg(scenarios.join("06-polkit-grants.yaml"))
            .output()
            .unwrap()
    };
    let (fa, fb) = (ca_fingerprint(&a), ca_fingerprint(&b));
    assert_ne!(fa, fb, "each emulator makes its own CA");

    // lab-2 pinned to another device's CA: refused before anything runs, naming the device.
    let out = run(
        &inventory(&[("lab-1", &a, fa.clone()), ("lab-2", &b, fa.clone())]),
        "wrong",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("lab-2: ") && err.contains("but the inventory pins"),
        "{err}"
    );
    assert!(!dir
        .path()
        .join("pins-wrong")
        .join(format!("127.0.0.1_{}.pem", b.https_port))
        .exists());

    let out = run(&inventory(&[("lab-1", &a, fa), ("lab-2", &b, fb)]), "good");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("good/report.json")).unwrap()).unwrap();
    let runs = report["scenarios"].as_array().unwrap();
    let files: Vec<&str> = runs.iter().map(|s| s["file"].as_str().unwrap()).collect();
    assert!(
        files[0].ends_with("00-dbus-backup-flow.yaml") && files[2].ends_with("06-polkit-grants.yaml"),
        "the report keeps the files' order: {files:?}"
    );
    let mut used: Vec<&str> = runs.iter().map(|s| s["device"].as_str().unwrap()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used, ["lab-1", "lab-2"], "both devices took scenarios");
    assert!(runs.iter().all(|s| s["outcome"] == "passed"), "{report}");
    for d in ["lab-1", "lab-2"] {
        assert!(dir.path().join("good").join(d).is_dir(), "work files of {d}");
    }
    for d in [&a, &b] {
        provision(d, &["--undo"]);
    }
}

/// A scenario that changes the device in every recorded way (an existing user's key, a new
/// user, a sudoers line, a config edit with a restart, a snapshot, a file in a home, a helper
/// script) and then runs `last`.
fn changing_scenario(dir: &Path, name: &str, last: &str) -> PathBuf {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            r##"name: left as found, {name}
tags: [portable]
steps:
  - setup.user: {{name: remotebackup, grant: [all]}}
  - setup.user: {{name: visitor}}
  - ssh.put: {{as: root, path: /etc/sudoers.d/90_remotebackup, content: "remotebackup ALL=NOPASSWD: ALL\n", mode: "0440"}}
  - ssh.edit: {{path: /etc/nexus/backupd.toml, sed: "s/^read_bytes_per_sec = .*/read_bytes_per_sec = 0/", restart: nexus-backupd}}
  - dbus.call: {{as: root, service: tech.noreya.Snapshot1, method: Create, args: [true, true, "left as found"]}}
  - ssh.put: {{as: remotebackup, path: /home/remotebackup/note.txt, content: "a note"}}
  - ssh.put: {{as: root, path: /usr/local/bin/nexus-hil-left-as-found, content: "#!/bin/sh\n", mode: "0755"}}
  - {last}
"##
        ),
    )
    .unwrap();
    file
}

/// Starts `run` on the device with `file`, waits until the scenario has made its last change,
/// then sends `signal` to that process (which this test started) and returns its output.
fn run_until_changed_then(dev: &Device, dir: &Path, report: &str, file: &Path, signal: i32) -> Output {
    let child = run_cmd(dev, dir, report)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut changed = false;
    for _ in 0..300 {
        if dev
            .root("test -e /usr/local/bin/nexus-hil-left-as-found && echo changed || true")
            .trim()
            == "changed"
        {
            changed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(changed, "the scenario never made its changes");
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait_with_output().unwrap()
}

/// A device set up as the vendor's page says: `remotebackup` with the backup server's key and
/// the documented grant. Provisioning, the portable suite, a scenario that fails midway, one
/// interrupted by Ctrl-C, one whose harness is killed (undone by the next run's start), and
/// `--undo` leave it as found, and the backup server still logs in after each.
#[test]
fn a_vendor_set_up_device_keeps_its_backup_servers_key_through_the_suite_and_undo() {
    let dev = Device::up();
    let dir = tempfile::tempdir().unwrap();
    let server_key = dir.path().join("backup-server");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "backup-server", "-f"])
        .arg(&server_key)
        .status()
        .unwrap();
    assert!(st.success());
    let server_pub = std::fs::read_to_string(server_key.with_extension("pub")).unwrap();
    let actions = "tech.noreya.Backup1.Cancel;tech.noreya.Backup1.Create;tech.noreya.Backup1.Delete;tech.noreya.Backup1.GetList;tech.noreya.Backup1.Status;tech.noreya.Snapshot1.Activate;tech.noreya.Snapshot1.Create;tech.noreya.Snapshot1.Delete;tech.noreya.Snapshot1.GetList;";
    dev.root(&format!(
        "adduser --disabled-password --gecos Backup remotebackup >/dev/null && \
         printf \"[Backup permissions]\\nIdentity=unix-user:remotebackup\\nAction={actions}\\nResultActive=yes\\nResultInactive=yes\\nResultAny=yes\\n\\n\" \
         > /etc/polkit-1/localauthority/50-local.d/10-backup.pkla && \
         install -d -m 700 -o remotebackup -g remotebackup /home/remotebackup/.ssh && \
         echo \"{}\" > /home/remotebackup/.ssh/authorized_keys && \
         chown remotebackup: /home/remotebackup/.ssh/authorized_keys && chmod 600 /home/remotebackup/.ssh/authorized_keys",
        server_pub.trim()
    ));
    let server_logs_in = || common::ssh_as(dev.ssh_port, &server_key, "remotebackup", &["echo in"]);
    assert_eq!(String::from_utf8_lossy(&server_logs_in().stdout).trim(), "in");
    let before = dev.etc_and_home();

    let p = provision(&dev, &[]);
    assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    let provisioned = dev.etc_and_home();
    // The portable suite, each scenario left undone behind itself.
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let run = run_cmd(&dev, dir.path(), "r")
        .args(["--filter", "portable"])
        .arg(&scenarios)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    common::assert_same_etc_and_home(&provisioned, &dev.etc_and_home());
    let keys = dev.root("cat /home/remotebackup/.ssh/authorized_keys");
    assert!(
        keys.starts_with(server_pub.trim()),
        "the suite replaced the backup server's key:\n{keys}"
    );
    assert_eq!(
        String::from_utf8_lossy(&server_logs_in().stdout).trim(),
        "in",
        "the backup server no longer logs in after the suite"
    );
    let snapshots = dev.snapshot_ids();
    let same_as_provisioned = |when: &str| {
        let now = dev.etc_and_home();
        if now != provisioned {
            common::assert_same_etc_and_home(&provisioned, &now);
        }
        assert_eq!(
            dev.snapshot_ids(),
            snapshots,
            "{when}: the scenario's snapshot was left"
        );
        assert_eq!(
            dev.root("ls -A /var/lib/nexus-hil/undo 2>/dev/null || true").trim(),
            "",
            "{when}: the record was left"
        );
        assert_eq!(
            String::from_utf8_lossy(&server_logs_in().stdout).trim(),
            "in",
            "{when}: the backup server no longer logs in"
        );
    };

    // A scenario that fails midway: every change undone when it ends.
    let failing = changing_scenario(dir.path(), "failing midway", "ssh.run: {as: root, command: \"false\"}");
    let run = run_on(&dev, dir.path(), "f", &[failing]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let report = std::fs::read_to_string(dir.path().join("f/report.json")).unwrap();
    for undone in [
        "put /etc/nexus/backupd.toml back as it was",
        "restarted nexus-backupd",
        "removed /etc/sudoers.d/90_remotebackup",
        "removed user visitor",
        "removed the harness's key from visitor's authorized_keys",
        "deleted snapshot",
    ] {
        assert!(report.contains(undone), "the report does not say {undone:?}:\n{report}");
    }
    same_as_provisioned("after a scenario failed midway");

    // Ctrl-C in the middle of a step: undone before the run stops.
    let sleeping = "ssh.run: {as: root, command: \"sleep 600\", timeout: 15m}";
    let stopped = changing_scenario(dir.path(), "interrupted", sleeping);
    let out = run_until_changed_then(&dev, dir.path(), "i", &stopped, libc::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    same_as_provisioned("after Ctrl-C");

    // The harness killed: the changes stay recorded on the device, and the next run undoes
    // them before it starts, and says so.
    let out = run_until_changed_then(&dev, dir.path(), "k", &stopped, libc::SIGKILL);
    assert_eq!(out.status.code(), None, "{}", text(&out));
    assert_eq!(
        dev.root("test -e /etc/sudoers.d/90_remotebackup && echo left || true")
            .trim(),
        "left",
        "the killed run's changes are not on the device, so this proves nothing"
    );
    let after = run_on(&dev, dir.path(), "a", &[scenarios.join("06-polkit-grants.yaml")]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    let said = String::from_utf8_lossy(&after.stderr);
    assert!(
        said.contains("an earlier run left changes recorded on the device; undone first")
            && said.contains("removed /etc/sudoers.d/90_remotebackup"),
        "{said}"
    );
    same_as_provisioned("after the run that followed a killed one");

    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    common::assert_same_etc_and_home(&before, &dev.etc_and_home());
    assert_eq!(
        String::from_utf8_lossy(&server_logs_in().stdout).trim(),
        "in",
        "the backup server no longer logs in after --undo"
    );
}
