//! The device's own door (root only, `ci/test`): what anyone on the LAN can send to
//! nexus-backupd's HTTPS server and the system bus must not lock the owner out or fool the
//! page. Stalled request bodies to the Control UI leave the CA and the backups served; a
//! `Finished` signal forged by another bus client never reaches the progress stream; the
//! stream ends at logout. All on the real parts: btrfs, dbus-daemon, polkitd, nexus-backupd and
//! nexus-controlui as an unprivileged user.

mod support;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_contract::names::{BACKUP1, BACKUP1_PATH, CONTROL_UI_ACTIONS, SNAPSHOT1, SNAPSHOT1_PATH};
use nexus_contract::paths::{backup_url, CA_PATH, CONTROL_UI_LOGIN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const ADMIN_PASSWORD: &str = "open sesame";
/// How long the owner waits for an answer: generous, far above a normal answer's few ms.
const OWNER_PATIENCE: Duration = Duration::from_secs(10);

/// A device with the Control UI behind its HTTPS server.
fn device_with_ui() -> (Device, ControlUi) {
    let ui_dir = UiDir::new();
    let dev = Device::start(DeviceOptions {
        data_bytes: 1 << 20,
        grant_nobody: CONTROL_UI_ACTIONS.to_vec(),
        https_toml: ui_dir.https_toml(),
        ..Default::default()
    });
    let ui = ControlUi::start(ui_dir, &dev, ADMIN_PASSWORD);
    (dev, ui)
}

/// A TLS client trusting the device's CA.
fn tls_client(dev: &Device) -> tokio_rustls::TlsConnector {
    let ca = std::fs::read(dev.ca_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the device from the loopback address `from` (all of 127/8 is this
/// machine, so each address is another client to the server).
async fn connect(port: u16, from: Ipv4Addr, tls: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await
}

/// Everything the server sends until it closes (a missing close_notify is fine).
async fn read_answer(c: &mut Tls) -> String {
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A GET from `from` with [`OWNER_PATIENCE`]: the whole answer, or a failure naming `path`.
async fn owner_gets(dev: &Device, from: Ipv4Addr, tls: &tokio_rustls::TlsConnector, path: &str) -> Vec<u8> {
    let get = async {
        let mut c = connect(dev.https_port, from, tls).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got).await;
        got
    };
    tokio::time::timeout(OWNER_PATIENCE, get)
        .await
        .unwrap_or_else(|_| panic!("GET {path} got no answer within {OWNER_PATIENCE:?}: the door is locked"))
}

/// The body of an HTTP/1.1 answer with a Content-Length.
fn body_of(answer: &[u8]) -> &[u8] {
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {}", String::from_utf8_lossy(answer)));
    &answer[at + 4..]
}

/// A device with the Control UI and a real backup (snapshot 1) to download: the device, its UI,
/// the backup file.
async fn device_with_a_backup() -> (Device, ControlUi, std::path::PathBuf) {
    let (dev, ui) = device_with_ui();
    let conn = dev.conn().await;
    conn.call_method(
        Some(SNAPSHOT1),
        SNAPSHOT1_PATH,
        Some(SNAPSHOT1),
        "Create",
        &(true, true, "door"),
    )
    .await
    .unwrap();
    conn.call_method(Some(BACKUP1), BACKUP1_PATH, Some(BACKUP1), "Create", &(1u32, "pw-door"))
        .await
        .unwrap();
    let file = dev.backup_file(1);
    wait_for("the backup", Duration::from_secs(120), || async {
        file.exists().then_some(())
    })
    .await;
    (dev, ui, file)
}

/// `n` stalled logins, the i-th from `from(i)`: each says 100 bytes of form follow, sends 6 and
/// then nothing, and keeps its connection. The ones that got that far.
async fn stall_logins(dev: &Device, tls: &tokio_rustls::TlsConnector, n: u32, from: fn(u32) -> Ipv4Addr) -> Vec<Tls> {
    let mut attack = tokio::task::JoinSet::new();
    for i in 0..n {
        let (port, tls) = (dev.https_port, tls.clone());
        attack.spawn(async move {
            let open = async {
                let mut c = connect(port, from(i), &tls).await?;
                // One write: the head and the 6 bytes arrive together.
                c.write_all(
                    format!(
                        "POST {CONTROL_UI_LOGIN} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuserna"
                    )
                    .as_bytes(),
                )
                .await?;
                c.flush().await?;
                Ok::<_, std::io::Error>(c)
            };
            // Over the old door a connection waits in the listen queue for good.
            tokio::time::timeout(Duration::from_secs(10), open).await.ok().and_then(Result::ok)
        });
    }
    let mut stalled = Vec::new();
    while let Some(c) = attack.join_next().await {
        stalled.extend(c.unwrap());
    }
    stalled
}

/// The owner, from 127.0.0.2: the CA and the backup, in full.
async fn owner_downloads(dev: &Device, tls: &tokio_rustls::TlsConnector, file: &Path) {
    let owner = Ipv4Addr::new(127, 0, 0, 2);
    let ca = owner_gets(dev, owner, tls, CA_PATH).await;
    assert!(ca.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&ca));
    assert_eq!(body_of(&ca), std::fs::read(dev.ca_path()).unwrap().as_slice());
    let backup = owner_gets(dev, owner, tls, &backup_url(1)).await;
    assert!(
        backup.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&backup)
    );
    assert_eq!(body_of(&backup), std::fs::read(file).unwrap().as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_logins_from_many_clients_leave_the_ca_and_backups_served() {
    let (dev, _ui, file) = device_with_a_backup().await;
    let tls = tls_client(&dev);
    // 300 stalled logins from 10 addresses, 30 each, below a client's cap: what holds them back
    // is the door itself (the Control UI's budget, the login's deadline), not the cap per client.
    let stalled = stall_logins(&dev, &tls, 300, |i| Ipv4Addr::new(127, 0, 1, 1 + (i % 10) as u8)).await;
    owner_downloads(&dev, &tls, &file).await;

    // Every stalled client was told in words what happened (the UI is busy, or its form was too
    // slow), or, idle for 2 s while every slot was taken (its request not yet read on a loaded
    // machine), closed to make room. None is left hanging.
    let (mut busy, mut late, mut closed) = (0, 0, 0);
    let mut told = tokio::task::JoinSet::new();
    for mut c in stalled {
        told.spawn(async move { tokio::time::timeout(Duration::from_secs(20), read_answer(&mut c)).await });
    }
    while let Some(answer) = told.join_next().await {
        let answer = answer.unwrap().expect("a stalled login was never answered nor closed");
        if answer.starts_with("HTTP/1.1 503") && answer.contains("try again in a few seconds") {
            busy += 1;
        } else if answer.starts_with("HTTP/1.1 408") && answer.contains("send it again") {
            late += 1;
        } else if answer.is_empty() {
            closed += 1;
        } else {
            panic!("a stalled login was told: {answer:?}");
        }
    }
    assert!(closed < busy, "{closed} closed without a word, {busy} told busy");
    assert!(busy > 0 && late > 0, "{busy} told busy, {late} told too slow");
}

/// `curl -N` on the progress stream, its output collected by a thread.
struct EventStream {
    curl: std::process::Child,
    seen: Arc<Mutex<String>>,
    ended: Arc<Mutex<bool>>,
}

impl EventStream {
    fn open(dev: &Device, jar: &Path) -> EventStream {
        let mut curl = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "180", "--cacert"])
            .arg(dev.ca_path())
            .arg("-b")
            .arg(jar)
            .arg(format!("https://127.0.0.1:{}/control/events", dev.https_port))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = curl.stdout.take().unwrap();
        let (seen, ended) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(false)));
        let (s, e) = (seen.clone(), ended.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                s.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            *e.lock().unwrap() = true;
        });
        let stream = EventStream { curl, seen, ended };
        stream.wait("the stream's start", Duration::from_secs(20), |seen, _| {
            seen.contains("retry: 3000")
        });
        stream
    }

    /// Waits until `done(seen, ended)`; what the stream sent by then.
    fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&str, bool) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if done(&seen, *self.ended.lock().unwrap()) {
                return seen;
            }
            assert!(
                start.elapsed() < timeout,
                "no {what} within {timeout:?}; the stream sent: {seen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

/// Logs in through the HTTPS server: the page's CSRF token (the cookie is in `jar`).
fn log_in(dev: &Device, jar: &Path) -> String {
    let base = format!("https://127.0.0.1:{}", dev.https_port);
    let form = format!("username=admin&password={}", ADMIN_PASSWORD.replace(' ', "+"));
    curl_jar(dev, jar, &["-d", &form, &format!("{base}/control/login")]);
    let page = curl_jar(dev, jar, &[&format!("{base}/control/")]);
    between(&page, "name=\"csrf\" value=\"", "\"").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_signal_from_another_bus_client_never_reaches_the_page() {
    let (dev, ui) = device_with_ui();
    let jar = ui.dir.path().join("cookies");
    let base = format!("https://127.0.0.1:{}", dev.https_port);
    let csrf = log_in(&dev, &jar);
    let events = EventStream::open(&dev, &jar);

    // Another client on the system bus (root, even) sends the daemon's signals as its own.
    let neighbour = dev.conn().await;
    neighbour
        .emit_signal(None::<()>, BACKUP1_PATH, BACKUP1, "Progress", &(999u32, 50u32))
        .await
        .unwrap();
    neighbour
        .emit_signal(None::<()>, BACKUP1_PATH, BACKUP1, "Finished", &(999u32, "ok"))
        .await
        .unwrap();
    // A round trip: the bus has passed the signals on before it answers this.
    zbus::fdo::DBusProxy::new(&neighbour)
        .await
        .unwrap()
        .get_id()
        .await
        .unwrap();

    // The daemon's own signals of a real backup started on the page do arrive.
    curl_jar(
        &dev,
        &jar,
        &["-d", &format!("csrf={csrf}"), &format!("{base}/control/snapshots")],
    );
    let started = curl_jar(
        &dev,
        &jar,
        &[
            "-d",
            &format!("csrf={csrf}"),
            &format!("{base}/control/snapshots/1/backup"),
        ],
    );
    assert!(
        started.contains("id=\"backup-password\""),
        "no backup started: {}\nnexus-backupd's log:\n{}\nthe UI's log:\n{}",
        between(&started, "<div id=\"error\"", "</div>"),
        dev.log(),
        ui.log()
    );
    let seen = events.wait(
        "finished event of the real backup",
        Duration::from_secs(120),
        |seen, _| {
            seen.split("event: finished\n")
                .skip(1)
                .any(|e| e.lines().next().is_some_and(|data| data.contains("\"id\":1,")))
        },
    );
    assert!(!seen.contains("999"), "the forged signal reached the page: {seen}");
    assert!(
        ui.log().contains("following the backup signals"),
        "the UI did not say whose signals it follows: {}",
        ui.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_stream_ends_at_logout() {
    let (dev, ui) = device_with_ui();
    let jar = ui.dir.path().join("cookies");
    let base = format!("https://127.0.0.1:{}", dev.https_port);
    let csrf = log_in(&dev, &jar);
    let events = EventStream::open(&dev, &jar);

    let out = curl_jar(
        &dev,
        &jar,
        &[
            "-w",
            "%{http_code}",
            "-d",
            &format!("csrf={csrf}"),
            &format!("{base}/control/logout"),
        ],
    );
    assert!(out.ends_with("303"), "{out}");
    let seen = events.wait("end of the stream after logout", Duration::from_secs(10), |_, ended| {
        ended
    });
    assert!(seen.contains("the session ended"), "{seen}");
    // Opened again: refused.
    let again = curl_jar(&dev, &jar, &["-w", "%{http_code}", &format!("{base}/control/events")]);
    assert!(again.ends_with("401"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_logins_from_one_address_are_held_to_its_cap() {
    let (dev, _ui, file) = device_with_a_backup().await;
    let tls = tls_client(&dev);
    let stalled = stall_logins(&dev, &tls, 300, |_| Ipv4Addr::new(127, 0, 2, 1)).await;
    owner_downloads(&dev, &tls, &file).await;
    // Its connections now busy with their logins, one more from the address is told why not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut more = stall_logins(&dev, &tls, 1, |_| Ipv4Addr::new(127, 0, 2, 1)).await;
    let more = more.pop().expect("the connection over the cap was not even opened");
    let answer = tokio::time::timeout(OWNER_PATIENCE, async move {
        let mut more = more;
        read_answer(&mut more).await
    })
    .await
    .expect("the connection over the cap got no answer");
    assert!(
        answer.starts_with("HTTP/1.1 429") && answer.contains("32 connections busy") && answer.contains("try again"),
        "{answer}"
    );
    drop(stalled);
}
