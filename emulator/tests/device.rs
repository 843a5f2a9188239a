//! nexus-backupd on the real parts, as on the device: a btrfs image on a loop device, the system
//! bus (dbus-daemon) with the shipped policy, polkitd with the shipped actions and the vendor's
//! pkla grant, GnuPG to decrypt, tar to restore, curl over HTTPS. Runs as root (`ci/test`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nexus_contract::names::{action, error, object_path, BACKUP1, SNAPSHOT1};
use support::*;
use zbus::Connection;

async fn call<B, R>(conn: &Connection, iface: &str, method: &str, body: &B) -> Result<R, String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let path = object_path(iface);
    conn.call_method(Some(iface), path.as_str(), Some(iface), method, body)
        .await
        .map(|r| r.body().deserialize::<R>().unwrap())
        .map_err(|e| e.to_string())
}

/// `dbus-send --print-reply` as `user`: `method` of `service` on its object, with `args` in
/// dbus-send's notation, as the vendor's shell examples call it.
fn dbus_send(dev: &Device, user: &str, service: &str, method: &str, args: &[&str]) -> std::process::Output {
    let dest = format!("--dest={service}");
    let path = object_path(service);
    let member = format!("{service}.{method}");
    let mut all = vec![dest.as_str(), path.as_str(), member.as_str()];
    all.extend_from_slice(args);
    dev.dbus_send_as(user, &all)
}

async fn status(conn: &Connection) -> Dict {
    call(conn, BACKUP1, "Status", &()).await.unwrap()
}

/// Polls Status like the vendor's client until the backup is no longer running.
async fn wait_backup(conn: &Connection) -> Dict {
    wait_for("the backup to finish", Duration::from_secs(120), || async {
        let s = status(conn).await;
        (get::<u32>(&s, "id") == 0).then_some(s)
    })
    .await
}

fn btrfs_ro(path: &Path) -> String {
    let out = Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(path)
        .arg("ro")
        .output()
        .unwrap();
    assert!(out.status.success(), "{} is not a btrfs subvolume", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn random_password() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap();
    format!("pw-{}", nexus_emulator::backup::hex(&b))
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_flow_backup_restores_the_snapshot_exactly() {
    let dev = Device::start(DeviceOptions::default());
    // The doc's root shell flow: the 10th word of dbus-send's reply is the snapshot id.
    let out = dbus_send(
        &dev,
        "root",
        SNAPSHOT1,
        "Create",
        &["boolean:true", "boolean:true", "string:Automated backup"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(words.get(9).map(String::as_str), Some("1"), "reply words: {words:?}");
    let snap = dev.snapshot_dir(1);
    assert_eq!(btrfs_ro(&snap.join("system")), "ro=true");
    assert_eq!(btrfs_ro(&snap.join("data")), "ro=true");
    assert!(compare_trees(&dev.broot.join("system"), &snap.join("system")).is_empty());

    let conn = dev.conn().await;
    let password = random_password();
    call::<_, ()>(&conn, BACKUP1, "Create", &(1u32, password.as_str()))
        .await
        .unwrap();
    let s = wait_backup(&conn).await;
    assert_eq!(get::<String>(&s, "last_result"), "ok", "{}", dev.log());
    let file = dev.backup_file(1);
    assert_backup_restores(&file, &password, &snap);
    // No leftovers beside the published file.
    let names: Vec<String> = std::fs::read_dir(dev.broot.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["nexus_backup_1.tar.gpg"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn polkit_allows_exactly_what_the_pkla_grants() {
    let dev = Device::start(DeviceOptions {
        grant_nobody: vec![
            action::SNAPSHOT1_CREATE,
            action::SNAPSHOT1_GETLIST,
            action::BACKUP1_STATUS,
        ],
        ..DeviceOptions::default()
    });
    // The granted user may create a snapshot...
    let out = dbus_send(
        &dev,
        "nobody",
        SNAPSHOT1,
        "Create",
        &["boolean:true", "boolean:false", "string:by nobody"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ...but not back it up: the refusal names the action, and nothing starts.
    let out = dbus_send(&dev, "nobody", BACKUP1, "Create", &["uint32:1", "string:pw"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied") && err.contains(action::BACKUP1_CREATE),
        "{err}"
    );
    let conn = dev.conn().await;
    assert_eq!(get::<u32>(&status(&conn).await, "id"), 0);
    assert!(!dev.broot.join("backups/.nexus_backup_1.tar.gpg.partial").exists());
    // A stranger gets nothing, not even the list.
    let out = dbus_send(&dev, "daemon", SNAPSHOT1, "GetList", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AccessDenied") && err.contains(action::SNAPSHOT1_GETLIST),
        "{err}"
    );
    let out = dbus_send(&dev, "daemon", SNAPSHOT1, "Delete", &["uint32:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(action::SNAPSHOT1_DELETE));
    assert!(
        dev.snapshot_dir(1).join("info.json").exists(),
        "a refused Delete must leave the snapshot"
    );
    // Root may do everything.
    let out = dbus_send(&dev, "root", SNAPSHOT1, "Delete", &["uint32:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dev.snapshot_dir(1).exists());
}

fn curl(dev: &Device, args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(dev.ca_path())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_backups_with_ranges_and_nothing_else() {
    let dev = Device::start(DeviceOptions::default());
    let conn = dev.conn().await;
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, true, "web")).await.unwrap();
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    wait_backup(&conn).await;
    let list: Vec<Dict> = call(&conn, BACKUP1, "GetList", &()).await.unwrap();
    let url = format!("https://127.0.0.1:{}{}", dev.https_port, get::<String>(&list[0], "url"));

    // The whole file, checked against the sha256 that GetList reports.
    let dl = dev.dir.path().join("download.gpg");
    let out = curl(&dev, &["-f", "-o", dl.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sha = Command::new("sha256sum").arg(&dl).output().unwrap();
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(&get::<String>(&list[0], "sha256")));
    // The certificate is valid for the device's names, with the CA the device publishes.
    let host_url = format!(
        "https://noreya-nexus.local:{}/noreya-nexus/certificates/ca.pem",
        dev.https_port
    );
    let out = curl(
        &dev,
        &[
            "-f",
            "--resolve",
            &format!("noreya-nexus.local:{}:127.0.0.1", dev.https_port),
            &host_url,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dev.ca_path()).unwrap()
    );

    // A range, as a resuming client asks for it.
    let out = curl(&dev, &["-f", "-D", "-", "-o", "/dev/null", "-r", "100-199", &url]);
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(
        head.contains("content-length: 100") && head.contains("etag: \""),
        "{head}"
    );
    let out = curl(&dev, &["-f", "-r", "100-199", &url]);
    assert_eq!(out.stdout, std::fs::read(&dl).unwrap()[100..200]);
    let out = curl(
        &dev,
        &["-o", "/dev/null", "-w", "%{http_code}", "-r", "999999999-", &url],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "416");

    // Nothing else is served: traversal, listings, partial files, planted symlinks.
    std::os::unix::fs::symlink("/etc/passwd", dev.broot.join("backups/nexus_backup_77.tar.gpg")).unwrap();
    std::fs::write(dev.broot.join("backups/.nexus_backup_5.tar.gpg.partial"), b"partial").unwrap();
    for path in [
        "/nexus-backups/",
        "/nexus-backups/nexus_backup_77.tar.gpg",
        "/nexus-backups/.nexus_backup_5.tar.gpg.partial",
        "/nexus-backups/../snapshot/snapshots/1/info.json",
        "/nexus-backups/%2e%2e/%2e%2e/etc/passwd",
        "/nexus-backups/%252e%252e/etc/passwd",
        "/nexus-backups/..%5c..%5cetc%5cpasswd",
        "/nexus-backups/nexus_backup_01.tar.gpg",
        "/etc/passwd",
    ] {
        let out = curl(
            &dev,
            &[
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://127.0.0.1:{}{path}", dev.https_port),
            ],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_fails_cleanly_and_the_next_backup_succeeds() {
    let dev = Device::start(DeviceOptions {
        image_mib: 320,
        data_bytes: 40 << 20,
        ..DeviceOptions::default()
    });
    let conn = dev.conn().await;
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, true, "before fill"))
        .await
        .unwrap();
    // Fill the file system with data that is not in the snapshot.
    let ballast = dev.broot.join("data/ballast");
    let fill = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "status=none", "conv=fsync"])
        .arg(format!("of={}", ballast.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&fill.stderr).contains("No space left"),
        "the image did not fill up"
    );
    // Completely full: the backup cannot even be registered, and says why.
    let err = call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap_err();
    assert!(
        err.contains(error::NO_SPACE) && err.contains("delete old backups or snapshots"),
        "{err}"
    );
    assert_eq!(get::<u32>(&status(&conn).await, "id"), 0);
    // Room for a few MiB: the backup starts and runs out of space while writing.
    let f = std::fs::OpenOptions::new().write(true).open(&ballast).unwrap();
    f.set_len(f.metadata().unwrap().len() - (8 << 20)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    Command::new("btrfs")
        .args(["filesystem", "sync"])
        .arg(&dev.broot)
        .status()
        .unwrap();
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    let s = wait_backup(&conn).await;
    let result: String = get(&s, "last_result");
    assert!(result.starts_with("failed: no space left"), "{result}\n{}", dev.log());
    assert!(result.contains("delete old backups or snapshots"), "{result}");
    let names: Vec<_> = std::fs::read_dir(dev.broot.join("backups")).unwrap().collect();
    assert!(names.is_empty(), "nothing may be left after a failed backup: {names:?}");
    assert!(compare_trees(&dev.broot.join("system"), &dev.snapshot_dir(id).join("system")).is_empty());

    std::fs::remove_file(&ballast).unwrap();
    Command::new("btrfs")
        .args(["filesystem", "sync"])
        .arg(&dev.broot)
        .status()
        .unwrap();
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    assert_eq!(
        get::<String>(&wait_backup(&conn).await, "last_result"),
        "ok",
        "{}",
        dev.log()
    );
    assert_backup_restores(&dev.backup_file(id), "pw", &dev.snapshot_dir(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_kill_and_stop_never_leave_a_partial_backup() {
    let mut dev = Device::start(DeviceOptions {
        data_bytes: 16 << 20,
        backup_toml: "read_bytes_per_sec = 1048576\nchunk_bytes = 65536\n".into(),
        ..DeviceOptions::default()
    });
    let partial = dev.broot.join("backups/.nexus_backup_1.tar.gpg.partial");
    let conn = dev.conn().await;
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, true, "")).await.unwrap();

    // Cancel: the partial file is gone when Cancel returns.
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    wait_for("the partial file", Duration::from_secs(10), || async {
        partial.exists().then_some(())
    })
    .await;
    call::<_, ()>(&conn, BACKUP1, "Cancel", &()).await.unwrap();
    assert!(!partial.exists());
    assert_eq!(get::<String>(&status(&conn).await, "last_result"), "cancelled");

    // SIGKILL mid-backup: after the restart the partial file is gone and the run is reported.
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    wait_for("the partial file", Duration::from_secs(10), || async {
        partial.exists().then_some(())
    })
    .await;
    dev.kill_daemon();
    assert!(partial.exists(), "a killed daemon cannot clean up; the restart must");
    dev.start_daemon();
    assert!(!partial.exists());
    assert!(!dev.backup_file(id).exists());
    let conn = dev.conn().await;
    let s = status(&conn).await;
    assert_eq!((get::<u32>(&s, "id"), get::<u32>(&s, "last_id")), (0, id));
    assert!(
        get::<String>(&s, "last_result").starts_with("failed: interrupted"),
        "{s:?}"
    );

    // SIGTERM mid-backup (systemctl stop): the daemon cleans up itself and exits 0.
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    wait_for("the partial file", Duration::from_secs(10), || async {
        partial.exists().then_some(())
    })
    .await;
    assert!(dev.stop_daemon().success(), "{}", dev.log());
    assert!(!partial.exists());
    // The snapshot survived all of it, and a backup of it now completes.
    let conf = std::fs::read_to_string(&dev.config_path)
        .unwrap()
        .replace("read_bytes_per_sec = 1048576", "read_bytes_per_sec = 0");
    std::fs::write(&dev.config_path, conf).unwrap();
    dev.start_daemon();
    let conn = dev.conn().await;
    assert!(get::<String>(&status(&conn).await, "last_result").starts_with("failed: interrupted"));
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, "pw")).await.unwrap();
    assert_eq!(get::<String>(&wait_backup(&conn).await, "last_result"), "ok");
    assert_backup_restores(&dev.backup_file(id), "pw", &dev.snapshot_dir(id));
}

/// Every process's argv and environment, searched for `needle`.
fn processes_showing(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for f in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(e.path().join(f)) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(format!("/proc/{}/{f}", name.to_string_lossy()));
                }
            }
        }
    }
    hits
}

/// Files below `root` (other than `except`) whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8], except: &Path) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && p != except {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_is_found_nowhere_but_inside_the_encrypted_backup() {
    let dev = Device::start(DeviceOptions {
        data_bytes: 8 << 20,
        backup_toml: "read_bytes_per_sec = 4194304\nchunk_bytes = 65536\n".into(),
        ..DeviceOptions::default()
    });
    let password = random_password();
    let conn = dev.conn().await;
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, true, "")).await.unwrap();
    // The doc's way of passing it: over D-Bus, from a client process (dbus-send as root).
    let out = dbus_send(
        &dev,
        "root",
        BACKUP1,
        "Create",
        &[&format!("uint32:{id}"), &format!("string:{password}")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // dbus-send has exited: the caller is gone and the backup must go on to the end regardless.
    // While it runs: no process shows it, not the daemon nor anything it started.
    let mut looked = 0;
    while get::<u32>(&status(&conn).await, "id") == id {
        let hits = processes_showing(password.as_bytes());
        assert!(hits.is_empty(), "password visible in {hits:?}");
        looked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(looked > 0, "the backup ended before it could be watched");
    assert_eq!(get::<String>(&status(&conn).await, "last_result"), "ok");
    let backup = dev.backup_file(id);
    // After it: not in the daemon's log (its journal), not in any file of the device but the backup.
    assert!(!dev.log().contains(&password), "password in the daemon's log");
    let hits = files_containing(&dev.broot, password.as_bytes(), &backup);
    assert!(hits.is_empty(), "password stored in {hits:?}");
    let hits = files_containing(&dev.dir.path().join("tls"), password.as_bytes(), &backup);
    assert!(hits.is_empty(), "password stored in {hits:?}");
    assert!(!std::fs::read(&backup)
        .unwrap()
        .windows(password.len())
        .any(|w| w == password.as_bytes()));
    assert_backup_restores(&backup, &password, &dev.snapshot_dir(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn activated_snapshot_is_the_system_after_a_restart() {
    let mut dev = Device::start(DeviceOptions::default());
    let conn = dev.conn().await;
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, false, "known good"))
        .await
        .unwrap();
    std::fs::write(
        dev.broot.join("system/etc/openhab/services/runtime.cfg"),
        b"broken=true\n",
    )
    .unwrap();
    call::<_, ()>(&conn, SNAPSHOT1, "Activate", &(id,)).await.unwrap();
    drop(conn);
    assert!(dev.stop_daemon().success());
    dev.start_daemon();
    let conn = dev.conn().await;
    assert!(compare_trees(&dev.snapshot_dir(id).join("system"), &dev.broot.join("system")).is_empty());
    assert_eq!(
        btrfs_ro(&dev.broot.join("system")),
        "ro=false",
        "the live system must be writable"
    );
    let list: Vec<Dict> = call(&conn, SNAPSHOT1, "GetList", &()).await.unwrap();
    let active: Vec<u32> = list
        .iter()
        .filter(|d| get::<bool>(d, "active"))
        .map(|d| get(d, "id"))
        .collect();
    assert_eq!(active, [id]);
    let left: u32 = list.iter().map(|d| get::<u32>(d, "id")).max().unwrap();
    assert_eq!(
        std::fs::read(dev.snapshot_dir(left).join("system/etc/openhab/services/runtime.cfg")).unwrap(),
        b"broken=true\n",
        "the state that was left must be kept as a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_asks_for_the_token_when_one_is_configured_and_keeps_its_ca() {
    let mut dev = Device::start(DeviceOptions {
        https_toml: "token = \"s3cret-token\"\n".into(),
        ..DeviceOptions::default()
    });
    let url = format!("https://127.0.0.1:{}/noreya-nexus/certificates/ca.pem", dev.https_port);
    let code = |dev: &Device, args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        all.push(&url);
        String::from_utf8_lossy(&curl(dev, &all).stdout).into_owned()
    };
    assert_eq!(code(&dev, &[]), "401");
    assert_eq!(code(&dev, &["-u", "token:wrong"]), "401");
    assert_eq!(code(&dev, &["-u", "token:s3cret-token"]), "200");
    // The CA is made once and kept across restarts, so a pinned CA stays valid.
    let ca = std::fs::read(dev.ca_path()).unwrap();
    assert!(dev.stop_daemon().success());
    dev.start_daemon();
    assert_eq!(std::fs::read(dev.ca_path()).unwrap(), ca);
    assert_eq!(code(&dev, &["-u", "token:s3cret-token"]), "200");
}

/// The vendor's total-failure recipe: a new card, then the backup files copied over. The new
/// card's daemon starts its ids afresh, but an id a restored backup holds is taken: the next
/// snapshot must get an id above it, or the vendor's client's next backup fails with Exists
/// (found by scenarios/power/09 on the stand-in).
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_ids_stay_above_backups_copied_onto_a_new_card() {
    let dev = Device::start(DeviceOptions::default());
    let conn = dev.conn().await;
    // As `scp nexus_backup_7.tar.gpg nexus@device:/broot/backups/` leaves it.
    std::fs::write(dev.backup_file(7), b"a backup restored from the old card").unwrap();
    let id: u32 = call(&conn, SNAPSHOT1, "Create", &(true, true, "after the restore"))
        .await
        .unwrap();
    assert_eq!(id, 8, "the restored backup's id 7 is taken");
    let password = random_password();
    call::<_, ()>(&conn, BACKUP1, "Create", &(id, password.as_str()))
        .await
        .unwrap();
    let st = wait_backup(&conn).await;
    assert_eq!(get::<String>(&st, "last_result"), "ok");
    assert_eq!(
        std::fs::read(dev.backup_file(7)).unwrap(),
        b"a backup restored from the old card",
        "the restored backup is untouched"
    );
}
