//! The real-device path, with an emulator standing in for the device and reached only over its
//! published SSH and HTTPS ports, as a NEXUS on the LAN is: `provision` (dry run, idempotent,
//! `--undo` leaves /etc and /home as they were), portable scenarios through `--target ssh://`
//! that leave the device's snapshots as they found them, `conform` (pinned with insta), and a
//! changed CA refused with the way to re-pin.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

// An emulator kept up by `nexus-hil emulator up`, used as if it were a device on the network,
// and what these tests read on it.
use common::{text, UpEmulator as Device};

trait OnTheDevice {
    fn etc_and_home(&self) -> String;
    fn snapshot_ids(&self) -> String;
    fn owners_backup(&self, server_key: &Path) -> u64;
    fn owners_backup_is_whole(&self, id: u64, when: &str);
}

impl OnTheDevice for Device {
    /// Every file, folder and link under /etc and /home with its mode, owner and content hash.
    fn etc_and_home(&self) -> String {
        self.root(common::ETC_AND_HOME)
    }

    fn snapshot_ids(&self) -> String {
        self.root("ls /broot/snapshot/snapshots")
    }

    /// The owner's backup server at work: the vendor's backup.py run as `remotebackup` with the
    /// server's own key, as its `DumpPreUserCmd` does. Returns the snapshot id it made.
    fn owners_backup(&self, server_key: &Path) -> u64 {
        let out = common::ssh_as(self.ssh_port, server_key, "remotebackup", &["python3", "backup.py"]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && said.contains("Backup finished"),
            "{}",
            text(&out)
        );
        said.split_whitespace()
            .nth(3)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no id in {said}"))
    }

    /// The owner's snapshot is there and its backup is listed and decrypts with the
    /// password the vendor's script uses.
    fn owners_backup_is_whole(&self, id: u64, when: &str) {
        let said = self.root(&format!(
            "test -d /broot/snapshot/snapshots/{id} && echo snapshot; \
             gpg --batch --quiet --pinentry-mode loopback --passphrase aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
             -d /broot/backups/nexus_backup_{id}.tar.gpg 2>/dev/null | tar -t >/dev/null && echo decrypts; true"
        ));
        assert_eq!(
            said.split_whitespace().collect::<Vec<_>>(),
            ["snapshot", "decrypts"],
            "{when}: the owner's snapshot {id} or its backup is gone or broken"
        );
    }
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
        cleanup.iter().any(|c| c.starts_with("deleted backup"))
            && cleanup.iter().any(|c| c.starts_with("deleted snapshot")),
        "{cleanup:?}"
    );
    assert!(cleanup.iter().any(|c| c == "removed user stranger"), "{cleanup:?}");
    assert_eq!(
        dev.snapshot_ids(),
        snapshots_before,
        "the scenarios' snapshots were left on the device"
    );
    assert_eq!(dev.root("ls -A /broot/backups"), "");

    // The power scenarios on a device without [device.power]: each is skipped before its first
    // step, naming what it needs; nothing changed on the card, the automation still runs.
    let card = dev.root("find /broot -xdev | sort");
    let power = run_cmd(&dev, dir.path(), "pw")
        .arg(scenarios.join("power"))
        .output()
        .unwrap();
    assert_eq!(
        power.status.code(),
        Some(1),
        "they must run, so their skips fail the run: {}",
        text(&power)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("pw/report.json")).unwrap()).unwrap();
    let ran = report["scenarios"].as_array().unwrap();
    assert!(ran.len() >= 8, "{report}");
    for s in ran {
        assert_eq!(s["outcome"], "skipped", "{s}");
        assert_eq!(s["steps"].as_array().map_or(0, Vec::len), 0, "a step ran: {s}");
        assert!(
            s["reason"].as_str().unwrap().contains("needs a device whose power"),
            "{s}"
        );
    }
    assert_eq!(dev.root("systemctl is-active nexus-automation").trim(), "active");
    assert_eq!(dev.root("find /broot -xdev | sort"), card, "the card changed");

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
    // A killed run's lease expires soon, so the next run takes the device over in seconds.
    run_cmd_ttl(dev, dir, report, "20s")
}

/// [`run_cmd`] with the lease's time to live.
fn run_cmd_ttl(dev: &Device, dir: &Path, report: &str, ttl: &str) -> Command {
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
    .arg(dir.join(report))
    .args(["--lock-ttl", ttl]);
    c
}

/// Waits (bounded) until `path` exists on the device.
fn wait_for_file(dev: &Device, path: &str) {
    for _ in 0..600 {
        if dev.root(&format!("test -e {path} && echo there || true")).trim() == "there" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{path} never appeared on the device");
}

/// A run whose device froze past its lease's expiry has lost it: another run takes the device,
/// undoes the first run's record (and says so), runs and undoes its own; the first stops at its
/// next step with an infrastructure error and undoes nothing. `provision --undo` is refused
/// while a run holds the device.
#[test]
fn a_run_that_lost_its_lease_stops_and_undoes_nothing_of_the_next_runs() {
    let dev = Device::up();
    let p = provision(&dev, &[]);
    assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    let dir = tempfile::tempdir().unwrap();
    let scenario = |name: &str, steps: &str| {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &f,
            format!("name: {name}\ndescription: x\ntags: [portable]\nsteps:\n{steps}"),
        )
        .unwrap();
        f
    };
    let a = scenario(
        "run a",
        "  - ssh.put: {as: root, path: /usr/local/bin/nexus-hil-a, content: a}\n  \
         - ssh.run: {as: root, command: \"touch /tmp/nexus-hil-a-waits; sleep 25\", timeout: 2m}\n  \
         - ssh.run: {as: root, command: \"true\"}\n",
    );
    let b = scenario(
        "run b",
        "  - ssh.put: {as: root, path: /usr/local/bin/nexus-hil-b, content: b}\n",
    );
    let run_a = run_cmd_ttl(&dev, dir.path(), "a", "3s")
        .arg(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&dev, "/tmp/nexus-hil-a-waits");
    // The device freezes for longer than A's lease lives; B asks for the device meanwhile.
    let container = String::from_utf8_lossy(
        &Command::new("podman")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=tech.noreya.nexus-hil.emulator={}", dev.child.id()))
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    assert!(!container.is_empty(), "the emulator's container was not found");
    assert!(Command::new("podman")
        .args(["pause", &container])
        .status()
        .unwrap()
        .success());
    let run_b = run_cmd_ttl(&dev, dir.path(), "b", "3s")
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert!(Command::new("podman")
        .args(["unpause", &container])
        .status()
        .unwrap()
        .success());
    let b_out = run_b.wait_with_output().unwrap();
    assert_eq!(b_out.status.code(), Some(0), "{}", text(&b_out));
    let said = String::from_utf8_lossy(&b_out.stderr);
    assert!(
        said.contains("took over a stale lock")
            && said.contains("an earlier run left changes recorded on the device; undone first")
            && said.contains("removed /usr/local/bin/nexus-hil-a"),
        "{said}"
    );
    let a_out = run_a.wait_with_output().unwrap();
    assert_eq!(a_out.status.code(), Some(3), "{}", text(&a_out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/report.json")).unwrap()).unwrap();
    let s = &report["scenarios"][0];
    assert_eq!(s["outcome"], "infra_error", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("lost the device's lease"), "{s}");
    assert!(
        s["cleanup"].as_array().is_none_or(Vec::is_empty),
        "A undid something: {s}"
    );
    assert_eq!(
        dev.root(
            "ls /usr/local/bin/nexus-hil-a /usr/local/bin/nexus-hil-b /var/lib/nexus-hil/undo 2>/dev/null || true"
        )
        .trim(),
        "",
        "a change or a record was left"
    );

    // `provision --undo` while a run holds the device is refused, and changes nothing.
    let c = scenario(
        "run c",
        "  - ssh.run: {as: root, command: \"touch /tmp/nexus-hil-c-waits; sleep 8\"}\n",
    );
    let run_c = run_cmd(&dev, dir.path(), "c")
        .arg(&c)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&dev, "/tmp/nexus-hil-c-waits");
    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(3), "{}", text(&undo));
    assert!(text(&undo).contains("in use by nexus-hil run"), "{}", text(&undo));
    let c_out = run_c.wait_with_output().unwrap();
    assert_eq!(c_out.status.code(), Some(0), "{}", text(&c_out));
    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
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
    // The vendor's client in the backup user's home, as the vendor's page sets it up.
    let client = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/files/backup.py")).unwrap();
    dev.root(&format!(
        "echo {} | base64 -d > /home/remotebackup/backup.py && chown remotebackup: /home/remotebackup/backup.py",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &client)
    ));
    let server_logs_in = || common::ssh_as(dev.ssh_port, &server_key, "remotebackup", &["echo in"]);
    assert_eq!(String::from_utf8_lossy(&server_logs_in().stdout).trim(), "in");
    // The owner's first backup, before anyone tested anything.
    let mut owners = vec![dev.owners_backup(&server_key)];
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
    let mut snapshots = dev.snapshot_ids();
    let same_as_provisioned = |when: &str, snapshots: &str| {
        let now = dev.etc_and_home();
        if now != provisioned {
            common::assert_same_etc_and_home(&provisioned, &now);
        }
        let ids = |l: &str| {
            l.split_whitespace()
                .map(str::to_string)
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(
            ids(&dev.snapshot_ids()),
            ids(snapshots),
            "{when}: the scenario's snapshot was left, or someone else's was deleted"
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
    same_as_provisioned("after a scenario failed midway", &snapshots);

    // The backup server makes a snapshot and a backup while a scenario runs (which made its
    // own): the undo deletes the run's and nothing of the owner's.
    let meanwhile = dir.path().join("meanwhile.yaml");
    std::fs::write(
        &meanwhile,
        r#"name: the owner backs up meanwhile
tags: [portable]
steps:
  - dbus.call: {as: root, service: tech.noreya.Snapshot1, method: Create, args: [true, true, "the run's"], capture: id}
  - dbus.call: {as: root, service: tech.noreya.Backup1, method: Create, args: ["${id}", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}
  - backup.wait: {as: root, id: "${id}", timeout: 5m}
  - ssh.run: {as: root, command: "echo ${id} > /tmp/nexus-hil-waiting; until [ -e /tmp/nexus-hil-go ]; do sleep 0.2; done; rm -f /tmp/nexus-hil-go /tmp/nexus-hil-waiting", timeout: 10m}
"#,
    )
    .unwrap();
    let child = run_cmd(&dev, dir.path(), "m")
        .arg(&meanwhile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut runs = String::new();
    for _ in 0..600 {
        runs = dev
            .root("cat /tmp/nexus-hil-waiting 2>/dev/null || true")
            .trim()
            .to_string();
        if !runs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!runs.is_empty(), "the scenario never reached its wait");
    owners.push(dev.owners_backup(&server_key));
    dev.root("touch /tmp/nexus-hil-go");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = std::fs::read_to_string(dir.path().join("m/report.json")).unwrap();
    for undone in [format!("deleted backup {runs}"), format!("deleted snapshot {runs}")] {
        assert!(
            report.contains(&undone),
            "the report does not say {undone:?}:\n{report}"
        );
    }
    snapshots = dev.snapshot_ids();
    for id in &owners {
        dev.owners_backup_is_whole(*id, "after a scenario that ran while the owner backed up");
    }
    assert!(
        !snapshots.split_whitespace().any(|s| s == runs),
        "the run's own snapshot {runs} was left: {snapshots}"
    );

    // A user the undo cannot remove (a process of it still runs, which this test started):
    // the run is red, JUnit carries the error, the record keeps it; the next run's start
    // finishes the undo once the process is gone.
    let busy = dir.path().join("busy.yaml");
    std::fs::write(
        &busy,
        "name: a user kept busy\ntags: [portable]\nsteps:\n  - setup.user: {name: busy}\n  \
         - ssh.run: {as: root, command: \"systemd-run --quiet --unit nexus-hil-busy --uid busy sleep 600\"}\n",
    )
    .unwrap();
    let out = run_cmd(&dev, dir.path(), "b")
        .arg("--junit")
        .arg(dir.path().join("b/junit.xml"))
        .arg(&busy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let junit = std::fs::read_to_string(dir.path().join("b/junit.xml")).unwrap();
    assert!(
        junit.contains("<error") && junit.contains("type=\"undo\"") && junit.contains("the undo stopped"),
        "{junit}"
    );
    assert!(
        dev.root("ls /var/lib/nexus-hil/undo").trim() != "",
        "the entry that could not be undone was not kept"
    );
    dev.root("systemctl stop nexus-hil-busy");
    let after = run_on(&dev, dir.path(), "b2", &[scenarios.join("06-polkit-grants.yaml")]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("removed user busy"),
        "{}",
        text(&after)
    );
    same_as_provisioned("after the busy user's undo was finished", &snapshots);

    // Ctrl-C in the middle of a step: undone before the run stops.
    let sleeping = "ssh.run: {as: root, command: \"sleep 600\", timeout: 15m}";
    let stopped = changing_scenario(dir.path(), "interrupted", sleeping);
    let out = run_until_changed_then(&dev, dir.path(), "i", &stopped, libc::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    same_as_provisioned("after Ctrl-C", &snapshots);

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
    // Between the killed run and the next one, the backup server backs up again: the next run
    // undoes the killed run's record and nothing the owner made since.
    owners.push(dev.owners_backup(&server_key));
    snapshots = format!("{snapshots}\n{}", owners.last().unwrap());
    let after = run_on(&dev, dir.path(), "a", &[scenarios.join("06-polkit-grants.yaml")]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    let said = String::from_utf8_lossy(&after.stderr);
    assert!(
        said.contains("an earlier run left changes recorded on the device; undone first")
            && said.contains("removed /etc/sudoers.d/90_remotebackup"),
        "{said}"
    );
    same_as_provisioned("after the run that followed a killed one", &snapshots);

    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    common::assert_same_etc_and_home(&before, &dev.etc_and_home());
    assert_eq!(
        String::from_utf8_lossy(&server_logs_in().stdout).trim(),
        "in",
        "the backup server no longer logs in after --undo"
    );
    for id in &owners {
        dev.owners_backup_is_whole(*id, "after provision --undo");
    }
}

/// `nexus-hil health` on the device, as the harness key reaches it.
fn health(dev: &Device) -> Output {
    bin().args(["health", "--target", &dev.target()]).output().unwrap()
}

/// Is it the bench or the product? A device with a full /broot, one whose btrfs counted errors
/// and one whose clock is 10 minutes off: `health` names the check (exit 3), and a run on it
/// stops before its first scenario with an infrastructure error naming it, the health in its
/// report.
#[test]
fn an_unhealthy_device_stops_the_run_naming_the_check() {
    let dev = Device::up();
    let p = provision(&dev, &[]);
    assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    let ok = health(&dev);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("ok   free space"), "{}", text(&ok));
    let dir = tempfile::tempdir().unwrap();
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");

    // A full /broot: the run stops before its first scenario.
    dev.root(
        "avail=$(df -B1 --output=avail /broot | tail -n 1); \
         fallocate -l $((avail - 100 * 1024 * 1024)) /broot/data/nexus-hil-ballast && sync",
    );
    let sick = health(&dev);
    assert_eq!(sick.status.code(), Some(3), "{}", text(&sick));
    assert!(text(&sick).contains("FAIL free space"), "{}", text(&sick));
    let run = run_on(&dev, dir.path(), "full", &[scenarios.join("00-dbus-backup-flow.yaml")]);
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("full/report.json")).unwrap()).unwrap();
    assert!(
        report["infra_error"].as_str().unwrap_or("").contains("free space"),
        "{report}"
    );
    assert_eq!(
        report["scenarios"].as_array().map_or(0, Vec::len),
        0,
        "a scenario ran: {report}"
    );
    assert!(report["health"].as_object().is_some_and(|h| !h.is_empty()), "{report}");
    dev.root("rm -f /broot/data/nexus-hil-ballast && sync");

    // btrfs counted errors: a block of a file overwritten under the file system, then read.
    let corrupt = include_str!("common/corrupt-a-block.sh");
    let said = dev.root(&format!(
        "echo {} | base64 -d | sh",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, corrupt)
    ));
    assert!(said.contains("corruption_errs"), "{said}");
    let sick = health(&dev);
    assert_eq!(sick.status.code(), Some(3), "{}", text(&sick));
    assert!(
        text(&sick).contains("FAIL btrfs errors") && text(&sick).contains("corruption_errs"),
        "{}",
        text(&sick)
    );
    dev.root("btrfs device stats -z /broot >/dev/null && rm -f /broot/data/nexus-hil-victim");

    // A clock 10 minutes ahead (the device's own `date`, as root's PATH finds it first).
    dev.root(
        "printf \"#!/bin/sh\\nexec /bin/date -d @\\$(( \\$(/bin/date +%%s) + 600 )) \\\"\\$@\\\"\\n\" > /usr/local/sbin/date \
         && chmod 755 /usr/local/sbin/date",
    );
    let sick = health(&dev);
    dev.root("rm -f /usr/local/sbin/date");
    assert_eq!(sick.status.code(), Some(3), "{}", text(&sick));
    assert!(
        text(&sick).contains("FAIL clock: +60") || text(&sick).contains("FAIL clock: +59"),
        "{}",
        text(&sick)
    );
    let ok = health(&dev);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let undo = provision(&dev, &["--undo"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
}

/// A package `name` at `version` built here with dpkg-deb and installed on the device with
/// `dpkg -i` (no network needed).
fn install_package(dev: &Device, dir: &Path, name: &str, version: &str) {
    let root = dir.join(format!("{name}-deb"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: nexus-hil tests <tests@example.invalid>\n\
             Description: a package installed between two runs\n"
        ),
    )
    .unwrap();
    let deb = dir.join(format!("{name}.deb"));
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb (install dpkg) builds the test's package");
    assert!(built.status.success(), "{}", text(&built));
    let mut ssh = Command::new("ssh")
        .args(["-p", &dev.ssh_port.to_string(), "-i"])
        .arg(&dev.admin_key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "nexus@127.0.0.1"])
        .arg("sudo -n sh -c 'cat >/tmp/t.deb && dpkg -i /tmp/t.deb && rm /tmp/t.deb'")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut ssh.stdin.take().unwrap(), &std::fs::read(&deb).unwrap()).unwrap();
    let out = ssh.wait_with_output().unwrap();
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
}

/// What changed, and `run --hold-on-failure`, on a device reached over ssh (an emulator): a
/// passing run is recorded in the history (its header: nothing to compare with); a package is
/// installed; the next run's header names it, in the terminal, the JSON and the HTML, and so
/// does a merged run of shards that ran without the history after an upgrade of it. Then a
/// scenario that puts a file and fails is held: the ssh command it prints logs in and finds the
/// file, its password variable is masked, the lease is still refreshed past its time to live,
/// and after the hold the undo has taken the file away; Ctrl-C during a hold undoes it too.
#[test]
fn a_failed_scenario_holds_its_device_and_the_header_says_what_changed() {
    let dev = Device::up();
    let p = provision(&dev, &[]);
    assert_eq!(p.status.code(), Some(0), "{}", text(&p));
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.sqlite");
    let passing = dir.path().join("passing.yaml");
    std::fs::write(
        &passing,
        "name: what changed\ntags: [portable]\nsteps:\n  - ssh.run: {as: root, command: \"true\"}\n",
    )
    .unwrap();
    // One commit for both runs, whatever lands in the checkout meanwhile.
    let run = |report: &str| {
        run_cmd(&dev, dir.path(), report)
            .env("NEXUS_HIL_COMMIT", "0123456789abcdef")
            .arg("--history")
            .arg(&history)
            .arg(&passing)
            .output()
            .unwrap()
    };
    let device = dev.target();
    let first = run("first");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let said = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        said.starts_with(&format!(
            "what changed on {device}: nothing to compare with (the history has no earlier passing run on it)\n"
        )),
        "{said}"
    );
    install_package(&dev, dir.path(), "nexus-hil-marker", "1.0");
    let second = run("second");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let said = String::from_utf8_lossy(&second.stdout).to_string();
    let header: Vec<&str> = said.lines().take_while(|l| !l.starts_with("PASS")).collect();
    assert!(
        header[0].starts_with(&format!("what changed on {device} since its last passing run (")),
        "{said}"
    );
    // Only the package: the same harness, daemon and kernel.
    assert_eq!(header.len(), 2, "{said}");
    assert!(
        header[1].starts_with("  packages (list ") && header[1].ends_with("): + nexus-hil-marker 1.0"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("second/report.json")).unwrap()).unwrap();
    assert_eq!(
        json["changes"][0]["added"],
        serde_json::json!([["nexus-hil-marker", "1.0"]])
    );
    let html = std::fs::read_to_string(dir.path().join("second/report.html")).unwrap();
    assert!(html.contains("<li>packages (list ") && html.contains("+ nexus-hil-marker 1.0</li>"));
    // A suite run in shards without the history, merged with it: the shard's report carries
    // the device's list, and the merge says what changed.
    install_package(&dev, dir.path(), "nexus-hil-marker", "2.0");
    let shard = run_cmd(&dev, dir.path(), "shard")
        .env("NEXUS_HIL_COMMIT", "0123456789abcdef")
        .args(["--partition", "1/1", "--no-history"])
        .arg(&passing)
        .output()
        .unwrap();
    assert_eq!(shard.status.code(), Some(0), "{}", text(&shard));
    let merged = bin()
        .env("NEXUS_HIL_COMMIT", "0123456789abcdef")
        .args(["report", "merge"])
        .arg(dir.path().join("shard"))
        .arg("--output")
        .arg(dir.path().join("merged"))
        .arg("--history")
        .arg(&history)
        .output()
        .unwrap();
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged));
    let said = String::from_utf8_lossy(&merged.stdout).to_string();
    assert!(
        said.contains("): ~ nexus-hil-marker 1.0 -> 2.0\n"),
        "the merged run's header: {said}"
    );

    let failing = dir.path().join("held.yaml");
    std::fs::write(
        &failing,
        "name: held\ntags: [portable]\nvars:\n  password: \"held-Secret-9x\"\nsteps:\n  \
         - ssh.put: {as: root, path: /root/nexus-hil-held.txt, content: \"written before the failure\"}\n  \
         - ssh.run: {as: root, command: \"echo ${password} >/dev/null; exit 3\"}\n",
    )
    .unwrap();
    // The hold outlasts the lease's time to live: only a refresh during the hold keeps it.
    let mut child = run_cmd_ttl(&dev, dir.path(), "held", "8s")
        .args(["--hold-on-failure", "14s"])
        .arg(&failing)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let ssh_line = loop {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no hold was printed:\n{}", seen.join("\n")));
        seen.push(l.clone());
        if let Some(cmd) = l.trim().strip_prefix("ssh:") {
            break cmd.trim().to_string();
        }
    };
    let held_at = std::time::Instant::now();
    // The printed command, pasted as it is (the test adds only the command to run there).
    let words: Vec<&str> = ssh_line.split_whitespace().collect();
    assert_eq!(words[0], "ssh", "{ssh_line}");
    let inside = Command::new(words[0])
        .args(&words[1..])
        .arg("sudo -n cat /root/nexus-hil-held.txt")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout),
        "written before the failure",
        "the printed `{ssh_line}`: {}",
        text(&inside)
    );
    std::thread::sleep(std::time::Duration::from_secs(10).saturating_sub(held_at.elapsed()));
    let lease = dev.root("sed -n 's/^expires=//p' /var/lib/nexus-hil/lock; date +%s");
    let v: Vec<i64> = lease.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert!(
        v[0] > v[1],
        "10 s into the hold the 8 s lease was not refreshed: expires {} now {}",
        v[0],
        v[1]
    );
    let out = child.wait_with_output().unwrap();
    seen.extend(rx.iter());
    let err = seen.join("\n");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}\n{err}");
    assert!(
        err.contains("    password = <password>") && !err.contains("held-Secret-9x"),
        "{err}"
    );
    assert!(
        err.contains("standard input is not a terminal: the hold ends after 14s"),
        "{err}"
    );
    assert!(err.contains("HOLD  held: 14s passed; cleaning up"), "{err}");
    assert!(
        said.contains("FAIL  held") && said.contains("exit status Some(3), expected 0"),
        "{said}"
    );
    assert_eq!(
        dev.root("test -e /root/nexus-hil-held.txt && echo left || echo undone")
            .trim(),
        "undone",
        "after the hold the scenario's file was not undone:\n{said}"
    );

    // Ctrl-C during a long hold ends it and cleans up as always: the file undone, exit 130.
    let mut child = run_cmd(&dev, dir.path(), "interrupted")
        .args(["--hold-on-failure", "10m"])
        .arg(&failing)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.trim().starts_with("ssh:")) {
        match stderr.next() {
            Some(Ok(l)) => seen.push(l),
            _ => panic!("no hold was printed:\n{}", seen.join("\n")),
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}\n{}", text(&out), rest.join("\n"));
    assert_eq!(
        dev.root("test -e /root/nexus-hil-held.txt && echo left || echo undone")
            .trim(),
        "undone",
        "Ctrl-C during the hold did not undo the scenario's file:\n{}",
        rest.join("\n")
    );
}
