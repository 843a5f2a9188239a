//! The D-Bus surface of nexus-backupd over peer-to-peer connections: names, signatures,
//! introspection, errors, polkit refusals, and the snapshot and backup logic behind them, on
//! plain directories (no btrfs, no bus, no root). `device.rs` runs the same on the real parts.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_contract::names::{action, error, BACKUP1, BACKUP1_PATH, SNAPSHOT1, SNAPSHOT1_PATH};
use nexus_emulator::config::Config;
use nexus_emulator::polkit::Authorizer;
use nexus_emulator::service::Daemon;
use nexus_emulator::subvolume::Subvolumes;
use support::*;
use zbus::Connection;

const SNAP: (&str, &str) = (SNAPSHOT1_PATH, SNAPSHOT1);
const BACKUP: (&str, &str) = (BACKUP1_PATH, BACKUP1);

struct Peer {
    dir: tempfile::TempDir,
    client: Connection,
    _server: Connection,
    auth: Authorizer,
    daemon: Daemon,
}

impl Peer {
    fn broot(&self) -> PathBuf {
        self.dir.path().join("broot")
    }
}

fn config(broot: &Path, backup_toml: &str) -> Config {
    Config::parse(
        &format!(
            "[paths]\nbroot = \"{}\"\n[backup]\ns2k_count = 96\nprogress_interval_ms = 50\n{backup_toml}\n[https]\nlisten = []\n",
            broot.display()
        ),
        Path::new("test.toml"),
    )
    .unwrap()
}

/// A daemon on a fresh plain-directory device, and a client connected to it peer to peer.
async fn peer_with(backup_toml: &str, data_bytes: usize) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let broot = dir.path().join("broot");
    std::fs::create_dir_all(broot.join("system")).unwrap();
    std::fs::create_dir_all(broot.join("data")).unwrap();
    fill_sample(&broot, data_bytes);
    connect(dir, backup_toml).await
}

async fn peer() -> Peer {
    peer_with("read_bytes_per_sec = 0", 64 * 1024).await
}

/// (Re)starts the daemon on `dir`'s device, as a restart of nexus-backupd would.
async fn connect(dir: tempfile::TempDir, backup_toml: &str) -> Peer {
    let (daemon, events) =
        Daemon::open(&config(&dir.path().join("broot"), backup_toml), Subvolumes::PlainCopy).unwrap();
    daemon.recover().unwrap();
    let auth = Authorizer::fixed(ACTIONS);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let guid = zbus::Guid::generate();
    let (server, client) = tokio::try_join!(
        zbus::connection::Builder::unix_stream(a).server(guid).p2p().build(),
        zbus::connection::Builder::unix_stream(b).p2p().build(),
    )
    .unwrap();
    daemon.serve(&server, auth.clone(), events).await.unwrap();
    Peer {
        dir,
        client,
        _server: server,
        auth,
        daemon,
    }
}

/// A method call's reply, or its error as (name, message).
async fn call<B, R>(conn: &Connection, obj: (&str, &str), method: &str, body: &B) -> Result<R, (String, String)>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    match conn.call_method(None::<&str>, obj.0, Some(obj.1), method, body).await {
        Ok(reply) => Ok(reply
            .body()
            .deserialize::<R>()
            .expect("reply has the contract's signature")),
        Err(zbus::Error::MethodError(name, desc, _)) => Err((name.to_string(), desc.unwrap_or_default())),
        Err(zbus::Error::FDO(e)) => Err((
            zbus::DBusError::name(&*e).to_string(),
            zbus::DBusError::description(&*e).unwrap_or_default().to_string(),
        )),
        Err(e) => panic!("{method}: {e}"),
    }
}

async fn create_snapshot(p: &Peer) -> u32 {
    call(&p.client, SNAP, "Create", &(true, true, "test")).await.unwrap()
}

async fn status(p: &Peer) -> Dict {
    call(&p.client, BACKUP, "Status", &()).await.unwrap()
}

async fn wait_idle(p: &Peer) -> Dict {
    wait_for("the backup to end", Duration::from_secs(60), || async {
        let s = status(p).await;
        (get::<u32>(&s, "id") == 0).then_some(s)
    })
    .await
}

fn assert_err<T: std::fmt::Debug>(r: Result<T, (String, String)>, name: &str, words: &[&str]) {
    let (n, msg) = r.expect_err(&format!("expected {name}"));
    assert_eq!(n, name, "{msg}");
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should mention {w:?}");
    }
}

#[tokio::test]
async fn introspection_matches_the_contract() {
    let p = peer().await;
    for (path, name) in [SNAP, BACKUP] {
        let xml: String = call(
            &p.client,
            (path, "org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .unwrap();
        insta::assert_snapshot!(name, xml);
    }
}

#[tokio::test]
async fn snapshots_get_growing_ids_that_are_never_reused() {
    let p = peer().await;
    assert_eq!(create_snapshot(&p).await, 1);
    assert_eq!(
        call::<_, u32>(&p.client, SNAP, "Create", &(true, false, "only system"))
            .await
            .unwrap(),
        2
    );
    call::<_, ()>(&p.client, SNAP, "Delete", &(2u32,)).await.unwrap();
    assert_eq!(
        call::<_, u32>(&p.client, SNAP, "Create", &(false, true, "only data"))
            .await
            .unwrap(),
        3
    );

    let list: Vec<Dict> = call(&p.client, SNAP, "GetList", &()).await.unwrap();
    let ids: Vec<u32> = list.iter().map(|d| get(d, "id")).collect();
    assert_eq!(ids, [1, 3]);
    assert_eq!(get::<String>(&list[1], "description"), "only data");
    assert!(!get::<bool>(&list[1], "system") && get::<bool>(&list[1], "data"));
    assert!(get::<i64>(&list[0], "created") > 1_700_000_000);
    assert!(!get::<bool>(&list[0], "active"));
    let dir = p.broot().join("snapshot/snapshots/3");
    assert!(dir.join("info.json").is_file() && dir.join("data").is_dir() && !dir.join("system").exists());
    assert!(compare_trees(&p.broot().join("data"), &dir.join("data")).is_empty());

    // A restarted daemon goes on counting.
    let Peer { dir, .. } = p;
    let p = connect(dir, "").await;
    assert_eq!(create_snapshot(&p).await, 4);
}

#[tokio::test]
async fn created_and_deleted_signals_carry_the_id() {
    use futures_util::StreamExt;
    let p = peer().await;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .build()
        .unwrap();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &p.client, None)
        .await
        .unwrap();
    let id = create_snapshot(&p).await;
    call::<_, ()>(&p.client, SNAP, "Delete", &(id,)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), signals.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let h = msg.header();
        seen.push((
            h.member().unwrap().to_string(),
            msg.body().deserialize::<u32>().unwrap(),
        ));
    }
    assert_eq!(seen, [("Created".to_string(), id), ("Deleted".to_string(), id)]);
}

#[tokio::test]
async fn bad_snapshot_arguments_are_refused_and_change_nothing() {
    let p = peer().await;
    assert_err(
        call::<_, u32>(&p.client, SNAP, "Create", &(false, false, "x")).await,
        "org.freedesktop.DBus.Error.InvalidArgs",
        &["system", "data"],
    );
    assert_err(
        call::<_, u32>(&p.client, SNAP, "Create", &(true, true, "x".repeat(300))).await,
        "org.freedesktop.DBus.Error.InvalidArgs",
        &["256"],
    );
    assert_err(
        call::<_, u32>(&p.client, SNAP, "Create", &(true, true, "line\nbreak")).await,
        "org.freedesktop.DBus.Error.InvalidArgs",
        &["control"],
    );
    // Wrong types and arity are refused by the D-Bus layer itself.
    let (name, _) = call::<_, u32>(&p.client, SNAP, "Create", &("yes", 1u32))
        .await
        .unwrap_err();
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    let (name, _) = call::<_, ()>(&p.client, SNAP, "Frobnicate", &()).await.unwrap_err();
    assert_eq!(name, "org.freedesktop.DBus.Error.UnknownMethod");
    for (method, obj) in [("Delete", SNAP), ("Activate", SNAP)] {
        assert_err(
            call::<_, ()>(&p.client, obj, method, &(42u32,)).await,
            error::NO_SUCH_SNAPSHOT,
            &["42", "GetList"],
        );
    }
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Create", &(42u32, "pw")).await,
        error::NO_SUCH_SNAPSHOT,
        &["42"],
    );
    let list: Vec<Dict> = call(&p.client, SNAP, "GetList", &()).await.unwrap();
    assert!(list.is_empty(), "refused calls must create nothing: {list:?}");
    // The ids refused calls did not take are still free.
    assert_eq!(create_snapshot(&p).await, 1);
}

#[tokio::test]
async fn polkit_refusal_names_the_action_and_changes_nothing() {
    let p = peer().await;
    let id = create_snapshot(&p).await;
    p.auth.set_allowed([action::SNAPSHOT1_GETLIST, action::BACKUP1_STATUS]);
    for (obj, method, action) in [
        (SNAP, "Delete", action::SNAPSHOT1_DELETE),
        (SNAP, "Activate", action::SNAPSHOT1_ACTIVATE),
    ] {
        assert_err(
            call::<_, ()>(&p.client, obj, method, &(id,)).await,
            "org.freedesktop.DBus.Error.AccessDenied",
            &[action],
        );
    }
    assert_err(
        call::<_, u32>(&p.client, SNAP, "Create", &(true, true, "")).await,
        "org.freedesktop.DBus.Error.AccessDenied",
        &[action::SNAPSHOT1_CREATE],
    );
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Create", &(id, "pw")).await,
        "org.freedesktop.DBus.Error.AccessDenied",
        &[action::BACKUP1_CREATE],
    );
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Cancel", &()).await,
        "org.freedesktop.DBus.Error.AccessDenied",
        &[action::BACKUP1_CANCEL],
    );
    assert_err(
        call::<_, Vec<Dict>>(&p.client, BACKUP, "GetList", &()).await,
        "org.freedesktop.DBus.Error.AccessDenied",
        &[action::BACKUP1_GETLIST],
    );
    // Granted calls still work; refused ones changed nothing.
    let list: Vec<Dict> = call(&p.client, SNAP, "GetList", &()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(get::<u32>(&status(&p).await, "id"), 0);
    assert_eq!(p.daemon.store.state().get().pending, None);
    p.auth.set_allowed([]);
    assert_err(
        call::<_, Dict>(&p.client, BACKUP, "Status", &()).await,
        "org.freedesktop.DBus.Error.AccessDenied",
        &[action::BACKUP1_STATUS],
    );
}

#[tokio::test]
async fn backup_is_listed_with_its_checksum_and_restores_the_snapshot() {
    let p = peer().await;
    let id = create_snapshot(&p).await;
    let password = "correct horse battery staple";
    call::<_, ()>(&p.client, BACKUP, "Create", &(id, password))
        .await
        .unwrap();
    let s = wait_idle(&p).await;
    assert_eq!(get::<u32>(&s, "last_id"), id);
    assert_eq!(get::<String>(&s, "last_result"), "ok");
    assert_eq!(get::<String>(&s, "state"), "idle");

    let file = p.broot().join(format!("backups/nexus_backup_{id}.tar.gpg"));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
    let list: Vec<Dict> = call(&p.client, BACKUP, "GetList", &()).await.unwrap();
    assert_eq!(list.len(), 1);
    let b = &list[0];
    assert_eq!(get::<u32>(b, "id"), id);
    assert_eq!(get::<String>(b, "path"), file.to_string_lossy());
    assert_eq!(
        get::<String>(b, "url"),
        format!("/nexus-backups/nexus_backup_{id}.tar.gpg")
    );
    assert_eq!(get::<u64>(b, "size"), std::fs::metadata(&file).unwrap().len());
    let sha = {
        use sha2::Digest;
        nexus_emulator::backup::hex(&sha2::Sha256::digest(std::fs::read(&file).unwrap()))
    };
    assert_eq!(get::<String>(b, "sha256"), sha);
    // Owners are not kept by a non-root copy, so compare content-wise only what the copy kept.
    if is_root() {
        assert_backup_restores(&file, password, &p.broot().join(format!("snapshot/snapshots/{id}")));
    } else {
        let work = tempfile::tempdir().unwrap();
        gpg_decrypt(&file, password, &work.path().join("t.tar")).unwrap();
    }
    assert!(gpg_decrypt(&file, "wrong password", &p.dir.path().join("x.tar")).is_err());

    // A second backup of the same snapshot is refused until the first is deleted.
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Create", &(id, password)).await,
        error::EXISTS,
        &["Delete"],
    );
    call::<_, ()>(&p.client, BACKUP, "Delete", &(id,)).await.unwrap();
    assert!(!file.exists());
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Delete", &(id,)).await,
        error::NO_SUCH_BACKUP,
        &["GetList"],
    );
}

#[tokio::test]
async fn progress_and_finished_signals_report_the_backup() {
    use futures_util::StreamExt;
    // 8 MiB at 16 MiB/s: about half a second of progress.
    let p = peer_with("read_bytes_per_sec = 16777216\nchunk_bytes = 65536", 8 << 20).await;
    let id = create_snapshot(&p).await;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(BACKUP1)
        .build()
        .unwrap();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &p.client, None)
        .await
        .unwrap();
    call::<_, ()>(&p.client, BACKUP, "Create", &(id, "pw")).await.unwrap();
    let mut percents = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), signals.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg.header().member().unwrap().as_str() {
            "Progress" => {
                let (sid, pct): (u32, u32) = msg.body().deserialize().unwrap();
                assert_eq!(sid, id);
                percents.push(pct);
            }
            "Finished" => {
                let (sid, result): (u32, String) = msg.body().deserialize().unwrap();
                assert_eq!((sid, result.as_str()), (id, "ok"));
                break;
            }
            other => panic!("unexpected signal {other}"),
        }
    }
    assert!(!percents.is_empty(), "no Progress signal");
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]) && percents.iter().all(|&p| p <= 100),
        "{percents:?}"
    );
    // Status already shows the end when Finished arrives.
    assert_eq!(get::<u32>(&status(&p).await, "id"), 0);
}

#[tokio::test]
async fn one_backup_at_a_time_and_cancel_removes_the_partial_file() {
    // 4 MiB at 64 KiB/s would take a minute: long enough to look at it running.
    let p = peer_with("read_bytes_per_sec = 65536\nchunk_bytes = 65536", 4 << 20).await;
    let id = create_snapshot(&p).await;
    let other = create_snapshot(&p).await;
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Cancel", &()).await,
        error::NOT_RUNNING,
        &["no backup"],
    );
    call::<_, ()>(&p.client, BACKUP, "Create", &(id, "pw")).await.unwrap();

    // Status shows the job as soon as Create returns, as the vendor's client relies on.
    let s = status(&p).await;
    assert_eq!(get::<u32>(&s, "id"), id);
    assert_eq!(get::<String>(&s, "state"), "running");
    let total = wait_for("the scan to give a total", Duration::from_secs(10), || async {
        Some(get::<u64>(&status(&p).await, "bytes_total")).filter(|&t| t > 0)
    })
    .await;
    assert!(total > 4 << 20, "bytes_total {total}");
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Create", &(other, "pw")).await,
        error::BUSY,
        &["Cancel"],
    );
    assert_err(
        call::<_, ()>(&p.client, SNAP, "Delete", &(id,)).await,
        error::IN_USE,
        &["Cancel"],
    );
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Delete", &(id,)).await,
        error::IN_USE,
        &["Cancel"],
    );
    let partial = p.broot().join(format!("backups/.nexus_backup_{id}.tar.gpg.partial"));
    wait_for("the partial file", Duration::from_secs(10), || async {
        partial.exists().then_some(())
    })
    .await;
    assert!(!p.broot().join(format!("backups/nexus_backup_{id}.tar.gpg")).exists());

    call::<_, ()>(&p.client, BACKUP, "Cancel", &()).await.unwrap();
    // When Cancel returns the job is over and nothing of it is left.
    assert!(!partial.exists(), "partial file left after Cancel");
    let s = status(&p).await;
    assert_eq!((get::<u32>(&s, "id"), get::<u32>(&s, "last_id")), (0, id));
    assert_eq!(get::<String>(&s, "last_result"), "cancelled");
    let leftovers: Vec<_> = std::fs::read_dir(p.broot().join("backups")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The snapshot is intact and free again.
    call::<_, ()>(&p.client, SNAP, "Delete", &(id,)).await.unwrap();
}

#[tokio::test]
async fn bad_passwords_are_refused_without_echoing_them() {
    let p = peer().await;
    let id = create_snapshot(&p).await;
    assert_err(
        call::<_, ()>(&p.client, BACKUP, "Create", &(id, "")).await,
        error::INVALID_PASSWORD,
        &["empty"],
    );
    let long = "s3cr3t".repeat(200);
    let (name, msg) = call::<_, ()>(&p.client, BACKUP, "Create", &(id, &long))
        .await
        .unwrap_err();
    assert_eq!(name, error::INVALID_PASSWORD);
    assert!(msg.contains("1024") && !msg.contains("s3cr3t"), "{msg}");
    assert_eq!(get::<u32>(&status(&p).await, "id"), 0);
    // NUL cannot travel in a D-Bus string; the check behind it still refuses it.
    let err = nexus_emulator::backup::BackupManager::check_password("a\0b").unwrap_err();
    assert_eq!(zbus::DBusError::name(&err).as_str(), error::INVALID_PASSWORD);
}

#[tokio::test]
async fn activate_switches_the_system_at_the_next_start_and_keeps_the_state_left() {
    let p = peer().await;
    let id = create_snapshot(&p).await;
    let marker = p.broot().join("system/etc/changed-after-snapshot");
    std::fs::write(&marker, b"new state").unwrap();
    call::<_, ()>(&p.client, SNAP, "Activate", &(id,)).await.unwrap();
    // Nothing switches before the restart.
    assert!(marker.exists());
    assert_err(
        call::<_, ()>(&p.client, SNAP, "Delete", &(id,)).await,
        error::IN_USE,
        &["activate"],
    );

    let Peer { dir, .. } = p;
    let p = connect(dir, "").await;
    assert!(!marker.exists(), "the live system must now be snapshot {id}'s");
    let list: Vec<Dict> = call(&p.client, SNAP, "GetList", &()).await.unwrap();
    assert_eq!(list.len(), 2);
    let active: Vec<u32> = list
        .iter()
        .filter(|d| get::<bool>(d, "active"))
        .map(|d| get(d, "id"))
        .collect();
    assert_eq!(active, [id]);
    // The state that was left is kept as an automatic snapshot.
    let left = list.iter().find(|d| get::<u32>(d, "id") != id).unwrap();
    assert!(get::<String>(left, "description").contains("Automatic"));
    let left_id: u32 = get(left, "id");
    assert!(p
        .broot()
        .join(format!(
            "snapshot/snapshots/{left_id}/system/etc/changed-after-snapshot"
        ))
        .exists());
    assert_err(
        call::<_, ()>(&p.client, SNAP, "Delete", &(id,)).await,
        error::IN_USE,
        &["runs on"],
    );
}

#[tokio::test]
async fn restart_reports_an_interrupted_backup_and_removes_its_partial_file() {
    let p = peer().await;
    let id = create_snapshot(&p).await;
    // What a killed daemon leaves behind: its claim on the job and a partial file.
    p.daemon.store.state().update(|s| s.running_backup = Some(id)).unwrap();
    let partial = p.broot().join(format!("backups/.nexus_backup_{id}.tar.gpg.partial"));
    std::fs::write(&partial, b"half").unwrap();
    let Peer { dir, .. } = p;
    let p = connect(dir, "").await;
    assert!(!partial.exists());
    let s = status(&p).await;
    assert_eq!(get::<u32>(&s, "id"), 0);
    assert_eq!(get::<u32>(&s, "last_id"), id);
    let result: String = get(&s, "last_result");
    assert!(
        result.starts_with("failed: interrupted") && result.contains("start the backup again"),
        "{result}"
    );
    // The same snapshot can be backed up again.
    call::<_, ()>(&p.client, BACKUP, "Create", &(id, "pw")).await.unwrap();
    assert_eq!(get::<String>(&wait_idle(&p).await, "last_result"), "ok");
}

#[test]
fn shipped_config_is_the_documented_defaults() {
    let text = std::fs::read_to_string(images_dir().join("etc/nexus/backupd.toml")).unwrap();
    assert_eq!(
        Config::parse(&text, Path::new("backupd.toml")).unwrap(),
        Config::default()
    );
}

#[test]
fn shipped_polkit_policy_declares_exactly_the_nine_actions() {
    let text = std::fs::read_to_string(images_dir().join("polkit/tech.noreya.backup.policy")).unwrap();
    let mut ids: Vec<&str> = text
        .split("<action id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ACTIONS);
}
