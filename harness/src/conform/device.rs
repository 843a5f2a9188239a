//! The checks that need the live device: sudo, storage, polkit actions, `Status`, a snapshot
//! made and deleted again, the backups list and the HTTPS CA.

use std::time::Duration;

use nexus_contract::names::{error, ACTIONS, BACKUP1, SNAPSHOT1};
use nexus_contract::paths::{self, BACKUPS_DIR, BROOT, CA_PATH, SNAPSHOTS_DIR};

/// The item of the documented snapshot folder.
const CREATE_ITEM: &str = "Snapshot1.Create makes /broot/snapshot/snapshots/<id>/";

use super::interfaces::check_interfaces;
use super::{check_keys, Check, Source};
use crate::device::Device;
use crate::transport::dbus::{CallError, DeviceBus};
use crate::transport::ssh::sh_quote;

/// Runs a command as root through the admin's sudo; its stdout, or why it failed.
async fn root(dev: &Device, cmd: &str) -> Result<String, String> {
    let full = format!("sudo -n sh -c {}", sh_quote(cmd));
    let o = dev
        .ssh
        .run(&dev.admin, &full, None, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    if o.code == Some(0) {
        Ok(o.stdout)
    } else {
        Err(format!("`{cmd}` failed: {}", o.stderr.trim()))
    }
}

/// Checks the device. Makes one snapshot (described "nexus-hil conform") and deletes it again.
/// `Err` only when the device cannot be reached at all.
pub async fn check(dev: &Device) -> Result<Vec<Check>, super::Error> {
    let timeout = Duration::from_secs(30);
    let mut out = Vec::new();
    match root(dev, "true").await {
        Ok(_) => out.push(Check::doc(
            "admin sudo",
            true,
            format!("{} runs commands as root with sudo", dev.admin),
        )),
        Err(e) => {
            return Err(super::Error::Sudo(format!(
                "{} cannot use sudo without a password prompt: {e}",
                dev.admin
            )))
        }
    }
    let bus = DeviceBus::connect(&dev.ssh, &dev.admin, "root", timeout).await?;
    let snap_xml = bus.introspect(SNAPSHOT1).await.map_err(|e| e.to_string());
    let backup_xml = bus.introspect(BACKUP1).await.map_err(|e| e.to_string());
    out.extend(check_interfaces(
        snap_xml.as_deref().map_err(String::as_str),
        backup_xml.as_deref().map_err(String::as_str),
    ));
    out.extend(storage(dev).await);
    out.push(polkit(dev).await);
    out.extend(status(&bus).await);
    out.extend(snapshot_cycle(dev, &bus).await);
    out.push(backup_list(&bus).await);
    out.push(https(dev).await);
    Ok(out)
}

/// /broot is btrfs, its folders are there, and (ours) the subvolumes' layout.
async fn storage(dev: &Device) -> Vec<Check> {
    let mut out = Vec::new();
    let fs = root(dev, &format!("stat -f -c %T {BROOT}")).await;
    out.push(Check::doc(
        "/broot is btrfs",
        fs.as_deref().map(str::trim) == Ok("btrfs"),
        match &fs {
            Ok(t) => format!("file system type {}", t.trim()),
            Err(e) => e.clone(),
        },
    ));
    for dir in [SNAPSHOTS_DIR, BACKUPS_DIR] {
        let r = root(dev, &format!("test -d {dir}")).await;
        out.push(Check::doc(
            format!("{dir} exists"),
            r.is_ok(),
            if r.is_ok() { "a directory" } else { "missing" },
        ));
    }
    let subvols = root(dev, "btrfs subvolume list -o /broot").await.unwrap_or_default();
    let names: Vec<&str> = subvols.lines().filter_map(|l| l.split_whitespace().last()).collect();
    let layout = names.contains(&"system") && names.contains(&"data");
    out.push(Check::ours(
        "SD card subvolumes",
        layout,
        if layout {
            "system and data at the top of /broot".to_string()
        } else {
            format!("top-level subvolumes: {}", names.join(", "))
        },
    ));
    out
}

/// polkit: one action per method.
async fn polkit(dev: &Device) -> Check {
    let actions = root(dev, "pkaction").await.unwrap_or_default();
    let missing: Vec<&str> = ACTIONS
        .iter()
        .copied()
        .filter(|a| !actions.lines().any(|l| l.trim() == *a))
        .collect();
    Check::doc(
        "polkit actions",
        missing.is_empty(),
        if missing.is_empty() {
            format!("one per method, named <interface>.<Method> ({})", ACTIONS.len())
        } else {
            format!("pkaction lacks {}", missing.join(", "))
        },
    )
}

/// `Status`, idle or not: the documented keys, and ours with their types.
async fn status(bus: &DeviceBus) -> Vec<Check> {
    let mut out = Vec::new();
    match bus.call_typed(BACKUP1, "Status", &[]).await {
        Ok(reply) if !reply.is_empty() => {
            let (values, types) = &reply[0];
            let int = |k: &str| values.get(k).and_then(|v| v.as_i64());
            let ok = int("id").is_some() && int("progress").is_some_and(|p| (0..=100).contains(&p));
            out.push(Check::doc(
                "Backup1.Status id and progress",
                ok,
                format!(
                    "id {}, progress {} (0..100)",
                    types.get("id").and_then(|t| t.as_str()).unwrap_or("missing"),
                    types.get("progress").and_then(|t| t.as_str()).unwrap_or("missing")
                ),
            ));
            out.push(check_keys(
                "Backup1.Status keys",
                types,
                &[
                    ("id", "u"),
                    ("progress", "u"),
                    ("state", "s"),
                    ("bytes_done", "t"),
                    ("bytes_total", "t"),
                    ("last_id", "u"),
                    ("last_result", "s"),
                ],
            ));
            if values.get("state").and_then(|v| v.as_str()) == Some("idle") || int("progress").is_none() {
                out.push(Check::ours("Backup1.Status id when idle", int("id") == Some(0), "0"));
            } else {
                out.push(Check::not_seen(
                    Source::Ours,
                    "Backup1.Status id when idle",
                    "a backup is running",
                ));
            }
        }
        Ok(_) => out.push(Check::doc("Backup1.Status id and progress", false, "empty reply")),
        Err(e) => out.push(Check::doc("Backup1.Status id and progress", false, e.to_string())),
    }
    out
}

/// A snapshot made and deleted again: its folder, our keys of `GetList`, our error names.
async fn snapshot_cycle(dev: &Device, bus: &DeviceBus) -> Vec<Check> {
    let mut out = Vec::new();
    let created = bus
        .call_typed(
            SNAPSHOT1,
            "Create",
            &["true".into(), "true".into(), "nexus-hil conform".into()],
        )
        .await;
    match created {
        Ok(reply) if reply.len() == 1 && reply[0].0.as_u64().is_some() => {
            let id = reply[0].0.as_u64().unwrap_or_default().to_string();
            let ty = reply[0].1.as_str().unwrap_or("?").to_string();
            let dir = paths::snapshot_dir(&id);
            let exists = root(dev, &format!("test -d {dir}")).await.is_ok();
            out.push(Check::doc(
                CREATE_ITEM,
                exists,
                format!(
                    "replied one {ty}; {}",
                    if exists { "its folder exists" } else { "no such folder" }
                ),
            ));
            let parts = root(dev, &format!("ls {dir}")).await.unwrap_or_default();
            let parts: Vec<&str> = parts.split_whitespace().collect();
            out.push(Check::ours(
                "snapshot folder",
                ["data", "info.json", "system"].iter().all(|p| parts.contains(p)),
                format!("holds {}", parts.join(", ")),
            ));
            match bus.call_typed(SNAPSHOT1, "GetList", &[]).await {
                Ok(list) if !list.is_empty() => {
                    let entry = list[0].0.as_array().and_then(|a| {
                        a.iter().position(|e| {
                            e.get("id").and_then(|v| v.as_u64()).map(|v| v.to_string()) == Some(id.clone())
                        })
                    });
                    match entry {
                        Some(i) => out.push(check_keys(
                            "Snapshot1.GetList keys",
                            &list[0].1[i],
                            &[
                                ("id", "u"),
                                ("description", "s"),
                                ("created", "x"),
                                ("system", "b"),
                                ("data", "b"),
                                ("active", "b"),
                            ],
                        )),
                        None => out.push(Check::ours(
                            "Snapshot1.GetList keys",
                            false,
                            "the new snapshot is not listed",
                        )),
                    }
                }
                Ok(_) => out.push(Check::ours("Snapshot1.GetList keys", false, "empty reply")),
                Err(e) => out.push(Check::ours("Snapshot1.GetList keys", false, e.to_string())),
            }
            let deleted = bus.call(SNAPSHOT1, "Delete", std::slice::from_ref(&id)).await;
            let gone = root(dev, &format!("test ! -e {dir}")).await.is_ok();
            out.push(Check::ours(
                "Snapshot1.Delete removes the folder",
                deleted.is_ok() && gone,
                match deleted {
                    Ok(_) if gone => "gone".to_string(),
                    Ok(_) => format!("{dir} is still there"),
                    Err(e) => e.to_string(),
                },
            ));
            let again = bus.call(SNAPSHOT1, "Delete", std::slice::from_ref(&id)).await;
            out.push(error_check(
                "Snapshot1.Delete of an unknown id",
                again,
                error::NO_SUCH_SNAPSHOT,
            ));
            let backup = bus.call(BACKUP1, "Delete", std::slice::from_ref(&id)).await;
            out.push(error_check(
                "Backup1.Delete of an unknown id",
                backup,
                error::NO_SUCH_BACKUP,
            ));
        }
        Ok(reply) => out.push(Check::doc(
            CREATE_ITEM,
            false,
            format!("the reply is not one unsigned integer: {reply:?}"),
        )),
        Err(e) => out.push(Check::doc(CREATE_ITEM, false, e.to_string())),
    }
    out
}

/// Our keys of `Backup1.GetList`, when the device holds a backup.
async fn backup_list(bus: &DeviceBus) -> Check {
    match bus.call_typed(BACKUP1, "GetList", &[]).await {
        Ok(list) => match list.first().and_then(|(_, t)| t.as_array()).and_then(|a| a.first()) {
            Some(types) => check_keys(
                "Backup1.GetList keys",
                types,
                &[
                    ("id", "u"),
                    ("path", "s"),
                    ("url", "s"),
                    ("size", "t"),
                    ("created", "x"),
                    ("sha256", "s"),
                ],
            ),
            None => Check::not_seen(Source::Ours, "Backup1.GetList keys", "the device holds no backup"),
        },
        Err(e) => Check::ours("Backup1.GetList keys", false, e.to_string()),
    }
}

/// HTTPS: the CA where the documentation says, and the server's certificate chains to it.
async fn https(dev: &Device) -> Check {
    let ca = dev.https.pin_ca(Duration::from_secs(10)).await;
    let chained = match &ca {
        Ok(_) => dev
            .https
            .get(CA_PATH, None, None, Duration::from_secs(10))
            .await
            .map(|r| r.status)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    Check::doc(
        "HTTPS CA",
        matches!(chained, Ok(200)),
        match chained {
            Ok(200) => format!("served at {CA_PATH} and the server's certificate chains to it"),
            Ok(s) => format!("status {s} for {CA_PATH}"),
            Err(e) => e,
        },
    )
}

fn error_check(item: &str, r: Result<Vec<serde_json::Value>, CallError>, want: &str) -> Check {
    match r {
        Err(e) if e.name == want => Check::ours(item, true, want),
        Err(e) => Check::ours(item, false, format!("{}; ours is {want}", e.name)),
        Ok(_) => Check::ours(item, false, format!("succeeded; ours is {want}")),
    }
}
