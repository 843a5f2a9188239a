//! The Control UI on the real parts (root only, `ci/test`): nexus-backupd on btrfs with the
//! system bus and polkitd, `nexus-controlui` running as an unprivileged user granted exactly the
//! UI's actions by a pkla file, and curl as the browser through nexus-backupd's HTTPS server.

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_contract::names::CONTROL_UI_ACTIONS;
use support::*;

/// The UI user of the test: `nobody`, as the device fixture grants its pkla actions to it.
const UI_USER: &str = "nobody";

struct Ui(Child);

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(dev: &Device, jar: &Path, args: &[&str]) -> String {
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

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    text.split(start)
        .nth(1)
        .and_then(|r| r.split(end).next())
        .unwrap_or_else(|| panic!("{start} not in {text}"))
}

#[test]
fn the_documented_control_ui_flow_through_https_with_polkit() {
    let ui_dir_holder = tempfile::Builder::new().prefix("nexus-ui-").tempdir().unwrap();
    let ui_dir = ui_dir_holder.path();
    fs::set_permissions(ui_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let socket = ui_dir.join("http.sock");
    let dev = Device::start(DeviceOptions {
        data_bytes: 1 << 20,
        grant_nobody: CONTROL_UI_ACTIONS.to_vec(),
        https_toml: format!("control_ui_socket = \"{}\"\n", socket.display()),
        ..Default::default()
    });
    let base = format!("https://127.0.0.1:{}", dev.https_port);
    let jar = ui_dir.join("cookies");

    // Nothing listens on the UI's socket yet: 502 in words.
    let out = curl(&dev, &jar, &["-w", "%{http_code}", &format!("{base}/control/login")]);
    assert!(
        out.contains("Control UI is not running") && out.ends_with("502"),
        "{out}"
    );

    // The UI as an unprivileged user; its admin password readable by it.
    let password_file = ui_dir.join("admin.password");
    fs::write(&password_file, "open sesame\n").unwrap();
    let config = ui_dir.join("controlui.toml");
    fs::write(
        &config,
        format!(
            "socket = \"{}\"\nadmin_password_file = \"{}\"\nbackups_dir = \"{}\"\npassword_box_secs = 7\n",
            socket.display(),
            password_file.display(),
            dev.broot.join("backups").display()
        ),
    )
    .unwrap();
    let log_path = ui_dir.join("controlui.log");
    let gid = Command::new("id").args(["-g", UI_USER]).output().unwrap();
    let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
    let _ui = Ui(Command::new("setpriv")
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
        .unwrap());
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the UI did not start: {}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // Log in (a wrong password first), read the CSRF token, create a snapshot.
    let wrong = curl(
        &dev,
        &jar,
        &["-d", "username=admin&password=nope", &format!("{base}/control/login")],
    );
    assert!(wrong.contains("wrong user name or password"), "{wrong}");
    let out = curl(
        &dev,
        &jar,
        &[
            "-w",
            "%{http_code} %{redirect_url}",
            "-d",
            "username=admin&password=open+sesame",
            &format!("{base}/control/login"),
        ],
    );
    assert!(out.ends_with(&format!("303 {base}/control/")), "{out}");
    let page = curl(&dev, &jar, &[&format!("{base}/control/")]);
    let csrf = between(&page, "name=\"csrf\" value=\"", "\"").to_owned();
    curl(
        &dev,
        &jar,
        &[
            "-d",
            &format!("csrf={csrf}&description=by+hand"),
            &format!("{base}/control/snapshots"),
        ],
    );
    let page = curl(&dev, &jar, &[&format!("{base}/control/")]);
    let id = between(&page, "<tr data-snapshot-id=\"", "\"").to_owned();
    assert!(page.contains("by hand"), "{page}");

    // Follow the events through the HTTPS server while the backup runs.
    let mut events = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "120", "--cacert"])
        .arg(dev.ca_path())
        .arg("-b")
        .arg(&jar)
        .arg(format!("{base}/control/events"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = curl(
        &dev,
        &jar,
        &[
            "-D",
            "-",
            "-d",
            &format!("csrf={csrf}"),
            &format!("{base}/control/snapshots/{id}/backup"),
        ],
    );
    assert!(
        started.to_ascii_lowercase().contains("cache-control: no-store"),
        "{started}"
    );
    assert!(started.contains("data-close-after=\"7\""), "{started}");
    let password = between(&started, "<span id=\"backup-password\">", "</span>").to_owned();
    assert_eq!(password.len(), 32);
    // A second Start while it runs, or after: words, never a second password.
    let again = curl(
        &dev,
        &jar,
        &[
            "-d",
            &format!("csrf={csrf}"),
            &format!("{base}/control/snapshots/{id}/backup"),
        ],
    );
    assert!(
        again.contains("a backup is already running") || again.contains("exists already"),
        "{again}"
    );

    let mut stream = events.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: finished") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = events.kill();
    let _ = events.wait();
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains(&format!("\"download\":\"/control/download/{id}\"")) && seen.contains("\"state\":\"finished\""),
        "{seen}"
    );

    // Download from the page's link and restore with the password shown once.
    let page = curl(&dev, &jar, &[&format!("{base}/control/")]);
    assert!(
        page.contains(&format!("<a class=\"download\" href=\"/control/download/{id}\"")),
        "{page}"
    );
    assert!(!page.contains(&password));
    let file = ui_dir.join("backup.tar.gpg");
    curl(
        &dev,
        &jar,
        &[
            "-f",
            "-o",
            file.to_str().unwrap(),
            &format!("{base}/control/download/{id}"),
        ],
    );
    assert_backup_restores(&file, &password, &dev.snapshot_dir(id.parse().unwrap()));

    // Neither log holds the password.
    let ui_log = fs::read_to_string(&log_path).unwrap();
    assert!(ui_log.contains("backup started"), "{ui_log}");
    assert!(!ui_log.contains(&password) && !dev.log().contains(&password));
}
