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

/// A smart plug on 127.0.0.1 for the bench test, speaking the Shelly Gen2 RPC (`Switch.Set`,
/// `Switch.GetStatus`) and Tasmota (`cm?cmnd=Power%20On|Off`) HTTP APIs. Its relay is real: off
/// cuts the stand-in's power and on restores it (`nexus-hil emulator power off|on`, which
/// signals the `emulator up` that ci/standin keeps). Every request line is kept.
struct Plug {
    addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Plug {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut on = true;
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 2048];
                let n = c.read(&mut buf).unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(line.clone());
                let relay = |to: bool| {
                    let st = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
                        .args(["emulator", "power", if to { "on" } else { "off" }])
                        .status()
                        .unwrap();
                    assert!(st.success(), "the plug could not switch the stand-in");
                };
                let (status, body) = if line.contains("/rpc/Switch.Set?id=0&on=") {
                    let (was, to) = (on, line.contains("on=true"));
                    relay(to);
                    on = to;
                    ("200 OK", format!("{{\"was_on\":{was}}}"))
                } else if line.contains("/rpc/Switch.GetStatus?id=0") {
                    ("200 OK", format!("{{\"id\":0,\"output\":{on}}}"))
                } else if line.contains("/cm?cmnd=Power%20") {
                    let to = line.contains("Power%20On");
                    relay(to);
                    on = to;
                    ("200 OK", format!("{{\"POWER\":\"{}\"}}", if on { "ON" } else { "OFF" }))
                } else {
                    ("404 Not Found", String::new())
                };
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Plug { addr, seen }
    }
}

/// An inventory naming the stand-in as a real device on a bench with `power` as its switch and
/// its serial console on the 127.0.0.1 port qemu offers it on.
fn bench_inventory(dir: &Path, power: &str) -> std::path::PathBuf {
    let target = env("NEXUS_HIL_STANDIN_TARGET");
    let port = target.rsplit(':').next().unwrap();
    let file = dir.join("targets.toml");
    std::fs::write(
        &file,
        format!(
            "[[device]]\nname = \"bench\"\nhost = \"127.0.0.1\"\nssh_port = {port}\nhttps_port = {}\nkey = \"{}\"\n\
             [device.power]\n{power}off_time = \"1s\"\nboot_timeout = \"10m\"\n\
             [device.console]\ntcp = \"127.0.0.1:{}\"\n",
            env("NEXUS_HIL_STANDIN_HTTPS_PORT"),
            env("NEXUS_HIL_STANDIN_KEY"),
            env("NEXUS_HIL_STANDIN_CONSOLE_PORT")
        ),
    )
    .unwrap();
    file
}

/// Runs `scenarios` on the bench with --require-all (a skip fails) and returns the report.
fn run_on_bench(dir: &Path, inventory: &Path, report: &str, scenarios: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(["run", "--require-all", "--targets"])
        .arg(inventory)
        .arg("--pins")
        .arg(dir.join("pins"))
        .arg("--report-dir")
        .arg(dir.join(report))
        .args(scenarios.iter().map(|s| root.join(s)))
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    serde_json::from_str(&std::fs::read_to_string(dir.join(report).join("report.json")).unwrap()).unwrap()
}

/// The transcript lines of every fault step of a report.
fn fault_lines(report: &serde_json::Value) -> String {
    let mut lines = Vec::new();
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["outcome"], "passed", "{s}");
        for st in s["steps"].as_array().unwrap() {
            if st["kind"].as_str().unwrap().starts_with("fault.") {
                lines.extend(
                    st["transcript"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l.as_str().unwrap().to_string()),
                );
            }
        }
    }
    lines.join("\n")
}

/// The portable fault scenarios on the stand-in as a real device on a bench: reached only
/// through `--targets` (SSH and HTTPS on 127.0.0.1), its power switched by a Shelly plug, a
/// Tasmota plug and the bench's own command lines, each really cutting and restoring it.
#[test]
#[ignore = "needs the arm64 stand-in booted: ci/standin runs it"]
fn faults_run_on_the_standin_through_its_power_switch() {
    let dir = tempfile::tempdir().unwrap();
    let plug = Plug::start();

    // Shelly Gen2: the daemon killed mid-backup (over SSH) and a reboot mid-backup.
    let inv = bench_inventory(dir.path(), &format!("driver = \"shelly\"\nplug = \"{}\"\n", plug.addr));
    let report = run_on_bench(
        dir.path(),
        &inv,
        "shelly",
        &[
            "scenarios/faults/01-kill-daemon-mid-backup.yaml",
            "scenarios/faults/02-reboot-mid-backup.yaml",
        ],
    );
    let lines = fault_lines(&report);
    assert!(lines.contains("rebooted; ready"), "{lines}");

    // Tasmota: the power cut in the middle of a backup.
    let inv = bench_inventory(dir.path(), &format!("driver = \"tasmota\"\nplug = \"{}\"\n", plug.addr));
    let report = run_on_bench(
        dir.path(),
        &inv,
        "tasmota",
        &["scenarios/power/02-a-cut-in-the-middle-of-a-backup.yaml"],
    );
    let lines = fault_lines(&report);
    assert!(
        lines.contains(&format!("power off: Tasmota {} power OFF", plug.addr)),
        "{lines}"
    );
    // The console was read across the power cut: the scenario's part holds the boot after it
    // (the serial port closes with the power and opens again with it), and the whole run's
    // log is in the device's folder.
    let part = std::fs::read_to_string(
        dir.path()
            .join("tasmota/bench/a-power-cut-in-the-middle-of-a-backup/console.log"),
    )
    .unwrap();
    assert!(
        part.contains("console connection lost")
            && part.contains("console reconnected")
            && part.contains("noreya-nexus login:"),
        "{part}"
    );
    assert!(dir.path().join("tasmota/bench/console.log").exists());
    let seen = plug.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with("GET /cm?cmnd=Power%20Off "))
            && seen.iter().any(|l| l.starts_with("GET /cm?cmnd=Power%20On ")),
        "{seen:?}"
    );

    // exec: the bench's command lines; the cut loses what was not flushed and keeps what was.
    let hil = env!("CARGO_BIN_EXE_nexus-hil");
    let inv = bench_inventory(
        dir.path(),
        &format!("driver = \"exec\"\noff = \"{hil} emulator power off\"\non = \"{hil} emulator power on\"\n"),
    );
    let report = run_on_bench(
        dir.path(),
        &inv,
        "exec",
        &["scenarios/power/01-a-cut-loses-what-was-not-flushed.yaml"],
    );
    let lines = fault_lines(&report);
    assert!(
        lines.contains(&format!("power off: ran `{hil} emulator power off`")),
        "{lines}"
    );
}
