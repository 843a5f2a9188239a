//! The Control UI on the real parts (root only, `ci/test`): nexus-backupd on btrfs with the
//! system bus and polkitd, `nexus-controlui` running as an unprivileged user granted exactly the
//! UI's actions by a pkla file, and curl as the browser through nexus-backupd's HTTPS server.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nexus_contract::names::CONTROL_UI_ACTIONS;
use support::*;

fn curl(dev: &Device, jar: &Path, args: &[&str]) -> String {
    curl_jar(dev, jar, args)
}

#[test]
fn the_documented_control_ui_flow_through_https_with_polkit() {
    let ui_dir = UiDir::new();
    let dev = Device::start(DeviceOptions {
        data_bytes: 1 << 20,
        grant_nobody: CONTROL_UI_ACTIONS.to_vec(),
        https_toml: ui_dir.https_toml(),
        ..Default::default()
    });
    let base = format!("https://127.0.0.1:{}", dev.https_port);
    let jar = ui_dir.path().join("cookies");

    // Nothing listens on the UI's socket yet: 502 in words.
    let out = curl(&dev, &jar, &["-w", "%{http_code}", &format!("{base}/control/login")]);
    assert!(
        out.contains("Control UI is not running") && out.ends_with("502"),
        "{out}"
    );

    // The UI as an unprivileged user.
    let ui = ControlUi::start(ui_dir, &dev, "open sesame");
    let ui_dir = ui.dir.path().to_owned();

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
    let ui_log = ui.log();
    assert!(ui_log.contains("backup started"), "{ui_log}");
    assert!(!ui_log.contains(&password) && !dev.log().contains(&password));
}
