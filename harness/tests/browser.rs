//! The browser steps in a real scenario through the runner, against a little page served on
//! loopback (no emulator): Debian's chromedriver and Chromium (ci/setup-host installs them).
//! A form is filled, a revealed password read into a secret variable, a vanishing element
//! waited for, a file downloaded by clicking its link, a screenshot taken; the last step fails
//! and its report holds the page's picture and its console error; the browser is gone after.
//! Over HTTPS, the page is opened only when its certificate chains to the device's pinned CA,
//! and Chromium then accepts that server's key and no other.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nexus_harness::device::{Applied, Device, Fault, FaultError, Lifecycle, WebUi};
use nexus_harness::report::{Outcome, RunReport};
use nexus_harness::runner::run_scenario;
use nexus_harness::transport::https::HttpsTarget;
use nexus_harness::transport::ssh::SshTarget;
use nexus_scenario::Scenario;

/// The file behind the download link: 300 KB that are not all alike.
fn payload() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The page: a login form, a password revealed by the button, a progress line that goes a
/// second later, a download link, a console error, and a fetch of another loopback port that
/// the browser must not reach.
fn page(other_port: u16) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>nexus</title></head><body>
<input id="username"> <input id="password" type="password">
<button id="login" onclick="login()">Log in</button>
<div id="password-box" style="display:none">Password: <span id="backup-password"></span></div>
<div id="progress">working</div>
<div role="alert">the page's own error: disk   full</div>
<a id="download" href="/files/backup.tar.gpg">download</a>
<script>
console.error("the page says: boom 42");
fetch("http://127.0.0.1:{other_port}/leak").catch(function () {{}});
function login() {{
  var u = document.getElementById("username").value;
  var p = document.getElementById("password").value;
  document.getElementById("backup-password").textContent = "pw-for-" + u + "-" + p.length;
  document.getElementById("password-box").style.display = "block";
  setTimeout(function () {{ document.getElementById("progress").remove(); }}, 1000);
}}
</script></body></html>"#
    )
}

/// Serves the page and the file on 127.0.0.1; each connection one request.
fn serve(listener: TcpListener, other_port: u16) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (head, body) = match path.as_str() {
                "/" => ("Content-Type: text/html; charset=utf-8".to_string(), page(other_port).into_bytes()),
                "/other" => (
                    "Content-Type: text/html; charset=utf-8".to_string(),
                    b"<!doctype html><title>other</title><p>nothing kept here</p>".to_vec(),
                ),
                // A page that keeps what the login page showed (for the password file's
                // "s3cret-pw": 9 characters) in its origin's localStorage.
                "/keep" => (
                    "Content-Type: text/html; charset=utf-8".to_string(),
                    b"<!doctype html><title>keep</title><script>localStorage.setItem('saved', 'pw-for-' + 'admin-9');</script>"
                        .to_vec(),
                ),
                "/files/backup.tar.gpg" => (
                    "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"backup.tar.gpg\""
                        .to_string(),
                    payload(),
                ),
                _ => ("Content-Type: text/plain".to_string(), b"not here".to_vec()),
            };
            let status = if head.contains("text/plain") {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\n{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
        }
    });
}

/// A device with nothing behind SSH (port 1 of loopback refuses at once), its page on `base`.
fn device(base: String, work: &Path) -> Device {
    Device {
        ssh: SshTarget {
            host: "127.0.0.1".into(),
            port: 1,
            key: work.join("no-key"),
            known_hosts: work.join("known_hosts"),
            multiplex: None,
        },
        https: HttpsTarget {
            host: "127.0.0.1".into(),
            port: 1,
            pin: work.join("pinned-ca.pem"),
            token: None,
            ca_sha256: None,
        },
        admin: "nexus".into(),
        pubkey: String::new(),
        ui: WebUi {
            base: Some(base),
            ..WebUi::emulator()
        },
    }
}

/// The harness's own throwaway device: nothing to record or undo.
struct Throwaway;

impl Lifecycle for Throwaway {
    fn fault(
        &self,
        _: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>> {
        Box::pin(async { Err(FaultError::Unsupported("no faults here".into())) })
    }
}

const SCENARIO: &str = r#"
name: browser steps on a little page
timeout: 2m
vars:
  user: alice
steps:
  - browser.open: {path: /}
  - browser.fill: {selector: '@username', value: '${user}'}
  - browser.fill: {selector: 'input#password', value: hunter2, secret: true}
  - browser.click: {selector: '@login'}
  - browser.wait_for: {selector: '@progress', gone: true, timeout: 5s}
  - browser.wait_for: {selector: '@password_box'}
  - browser.read: {selector: '@backup_password', capture: backup_password, secret: true}
  - browser.expect_text: {selector: '@password_box', contains: 'Password:'}
  - browser.read: {selector: '@download', attribute: href, capture: link}
  - browser.download: {selector: '@download', save: 'got/backup.tar.gpg', timeout: 20s}
  - browser.screenshot: {name: after-download}
  - browser.click: {selector: 'button#no-such-button', timeout: 2s}
"#;

/// The tests count this process's browsers: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_drives_a_page_and_a_failed_step_keeps_its_picture_and_console() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    // Another loopback port the page tries to reach: the browser must not get there.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let leaked = Arc::new(AtomicUsize::new(0));
    let count = leaked.clone();
    std::thread::spawn(move || {
        for c in other.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    serve(listener, other_port);

    let file = dir.path().join("page.yaml");
    std::fs::write(&file, SCENARIO).unwrap();
    let scenario = Scenario::load(&file).unwrap();
    let dev = device(base.clone(), dir.path());
    let report = run_scenario(&scenario, &dev, Some(&Throwaway), &work, 1, &|_| {}).await;

    let steps = &report.steps;
    let last = steps.last().unwrap();
    assert_eq!(report.outcome, Outcome::Failed, "{:?}", report.reason);
    assert_eq!(steps.len(), 12, "{steps:#?}");
    assert!(
        steps[..11].iter().all(|s| s.outcome == Outcome::Passed),
        "{:#?}",
        steps.iter().map(|s| (&s.kind, &s.message)).collect::<Vec<_>>()
    );
    let started = steps[0].browser.as_ref().and_then(|b| b.started_s).unwrap();
    assert!(started > 0.0 && started < 30.0, "browser start {started} s");
    assert!(steps[0].transcript.iter().any(|l| l.contains("browser started in")));

    // The captured password is a secret: shown nowhere, even where the page shows it.
    let read = &steps[6].transcript.join("\n");
    assert!(
        read.contains("into ${backup_password}: <secret, 14 characters>"),
        "{read}"
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("pw-for-alice"), "the read secret leaked into the report");
    assert!(!json.contains("hunter2"), "the typed secret leaked into the report");
    let shown = steps[7].transcript.join("\n");
    assert!(
        shown.contains("shows \"Password: <") && !shown.contains("pw-for"),
        "{shown}"
    );
    assert!(steps[8].transcript.join("\n").contains("/files/backup.tar.gpg"));

    // The download is the server's file, moved to its name in the work folder.
    assert_eq!(std::fs::read(work.join("got/backup.tar.gpg")).unwrap(), payload());
    let shot = std::fs::read(work.join("after-download.png")).unwrap();
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert_eq!(steps[10].browser.as_ref().unwrap().screenshots, ["after-download.png"]);
    assert!(
        steps[10]
            .transcript
            .join("\n")
            .contains("2 text(s) holding a secret covered"),
        "the shown password and the typed one: {:?}",
        steps[10].transcript
    );

    // The failed step: why, the page's picture (inline and a file) and its console.
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("no element matches \"button#no-such-button\""),
        "{:?}",
        last.message
    );
    // ...and what the page showed instead: where it was and its alert, in the message itself.
    assert!(
        last.message.as_deref().unwrap_or("").ends_with(&format!(
            "; the page: {base}/ (\"nexus\"), its alert(s): \"the page's own error: disk full\""
        )),
        "{:?}",
        last.message
    );
    let ev = last.browser.as_ref().unwrap();
    assert_eq!(ev.screenshots, ["browser-failure-1.png"]);
    assert!(std::fs::read(work.join("browser-failure-1.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    assert!(ev.failure_png.as_deref().is_some_and(|p| p.starts_with("iVBORw0KGgo")));
    assert!(
        ev.console.iter().any(|l| l.contains("the page says: boom 42")),
        "{:?}",
        ev.console
    );
    let html = nexus_harness::report::html::render(&RunReport {
        target: "page".into(),
        duration_s: report.duration_s,
        scenarios: vec![report.clone()],
        infra_error: None,
        seed: None,
        partition: None,
        health: Default::default(),
        changes: Vec::new(),
    });
    assert!(html.contains("src=\"data:image/png;base64,iVBORw0KGgo"));
    assert!(html.contains("the page says: boom 42"));
    assert!(html.contains("browser started in"));

    // Closed at the end, and it reached nothing but its target.
    assert_eq!(nexus_harness::browser::driver::live(), 0, "chromedriver still running");
    assert_eq!(
        leaked.load(Ordering::SeqCst),
        0,
        "the page reached another loopback port"
    );
}

const LOGIN: &str = r#"
name: the target's account, and a secret kept nowhere
timeout: 2m
steps:
  - browser.open: {path: /}
  - browser.login: {}
  - browser.read: {selector: '@backup_password', capture: backup_password, secret: true}
  - browser.screenshot: {name: with-the-secret}
  - browser.expect_text: {selector: '@backup_password', contains: pw-for-admin}
  - browser.expect_absent: {value: '${backup_password}'}
  - browser.open: {path: /other}
  - browser.expect_absent: {value: '${backup_password}'}
  - browser.open: {path: /keep}
  - browser.open: {path: /other}
  - browser.expect_absent: {value: '${backup_password}'}
"#;

/// `browser.login` types the target's account (user and password file from the inventory),
/// never showing the password; `browser.expect_absent` passes where a secret is gone and fails,
/// naming where, when the page shows it or the site kept it in localStorage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_uses_the_targets_account_and_a_kept_secret_is_found() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    serve(listener, 9);
    let password_file = dir.path().join("ui.password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();

    let file = dir.path().join("login.yaml");
    std::fs::write(&file, LOGIN).unwrap();
    let scenario = Scenario::load(&file).unwrap();
    let mut dev = device(base, dir.path());
    dev.ui.password_file = Some(password_file);
    let report = run_scenario(&scenario, &dev, Some(&Throwaway), &work, 1, &|_| {}).await;
    let steps = &report.steps;
    let says = |i: usize| steps[i].transcript.join("\n") + steps[i].message.as_deref().unwrap_or("");

    assert_eq!(steps.len(), 6, "a failed step ends the scenario: {steps:#?}");
    assert!(says(1).contains("logged in as admin"), "{}", says(1));
    // The page shows what it made of the account: "admin" and the password's 9 characters.
    assert!(says(2).contains("<secret, 14 characters>"), "{}", says(2));
    // The picture covers the secret the page shows and the account's password still in its
    // field, and the page shows them again afterwards.
    assert!(says(3).contains("2 text(s) holding a secret covered"), "{}", says(3));
    assert!(std::fs::read(work.join("with-the-secret.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    assert_eq!(steps[4].outcome, Outcome::Passed, "{}", says(4));
    assert_eq!(
        steps[5].outcome,
        Outcome::Failed,
        "the page itself shows it: {}",
        says(5)
    );
    assert!(says(5).contains("in the page's source"), "{}", says(5));

    // Run again from the page without it: gone, until a page keeps it in localStorage.
    let file = dir.path().join("login-2.yaml");
    std::fs::write(
        &file,
        LOGIN.replace(
            "  - browser.expect_absent: {value: '${backup_password}'}\n  - browser.open: {path: /other}",
            "  - browser.open: {path: /other}",
        ),
    )
    .unwrap();
    let scenario = Scenario::load(&file).unwrap();
    let report = run_scenario(&scenario, &dev, Some(&Throwaway), &work, 1, &|_| {}).await;
    let steps = &report.steps;
    let says = |i: usize| steps[i].transcript.join("\n") + steps[i].message.as_deref().unwrap_or("");
    assert_eq!(steps.len(), 10, "{steps:#?}");
    assert_eq!(steps[6].outcome, Outcome::Passed, "{}", says(6));
    assert!(
        says(6).contains("is in none of the page's source and address"),
        "{}",
        says(6)
    );
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(says(9).contains("localStorage"), "{}", says(9));
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("s3cret-pw"), "the account's password reached the report");
    assert!(!json.contains("pw-for-admin"), "the read secret reached the report");
    assert_eq!(nexus_harness::browser::driver::live(), 0, "chromedriver still running");
}

/// `openssl` with these arguments, in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir` (`NAME.pem`, `NAME.key`).
fn make_ca(dir: &Path, name: &str) {
    let (pem, key, subj) = (format!("{name}.pem"), format!("{name}.key"), format!("/CN={name}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &subj,
            "-days",
            "2",
        ],
    );
}

/// A server certificate for 127.0.0.1 signed by the CA `ca` (`leaf.pem`, `leaf.key`).
fn make_leaf(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// Serves a one-line page over TLS with `leaf.pem` on 127.0.0.1; its port.
async fn serve_tls(dir: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "<!doctype html><p id=\"hello\">served over https</p>";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                if !buf.starts_with(b"HEAD ") {
                    let _ = tls.write_all(body.as_bytes()).await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

const HTTPS_SCENARIO: &str = r#"
name: the page over https
steps:
  - browser.open: {path: /}
  - browser.expect_text: {selector: 'p#hello', contains: 'over https', timeout: 5s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_page_is_opened_only_with_the_devices_pinned_ca() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "device-ca");
    make_ca(dir.path(), "other-ca");
    make_leaf(dir.path(), "device-ca");
    let port = serve_tls(dir.path()).await;
    let file = dir.path().join("https.yaml");
    std::fs::write(&file, HTTPS_SCENARIO).unwrap();
    let scenario = Scenario::load(&file).unwrap();
    let on_https = |pin: &str| {
        let mut dev = device(String::new(), dir.path());
        dev.ui.base = None;
        dev.https.port = port;
        dev.https.pin = dir.path().join(pin);
        dev
    };

    let report = run_scenario(
        &scenario,
        &on_https("device-ca.pem"),
        Some(&Throwaway),
        &dir.path().join("ok"),
        1,
        &|_| {},
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Passed,
        "{:?} {:#?}",
        report.reason,
        report.steps
    );
    let opened = report.steps[0].transcript.join("\n");
    assert!(
        opened.contains(&format!(
            "https://127.0.0.1:{port} has a certificate chained to the device's pinned CA"
        )),
        "{opened}"
    );

    let report = run_scenario(
        &scenario,
        &on_https("other-ca.pem"),
        Some(&Throwaway),
        &dir.path().join("bad"),
        1,
        &|_| {},
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed);
    let why = report.steps[0].message.clone().unwrap_or_default();
    assert!(
        why.contains(&format!("the device's web page at https://127.0.0.1:{port}"))
            && why.contains("UnknownIssuer: the device's certificate does not chain to the CA pinned in"),
        "{why}"
    );
    assert!(report.steps[0].browser.is_none(), "no browser was started for it");
    assert_eq!(nexus_harness::browser::driver::live(), 0);

    // Chromium itself accepts the checked key and no other: told another key (the other CA's),
    // it refuses the same server.
    let pem = std::fs::read(dir.path().join("other-ca.pem")).unwrap();
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
    };
    let other_key = nexus_harness::transport::https::spki_sha256(der.as_ref()).unwrap();
    let cfg = nexus_harness::browser::Config {
        base: format!("https://127.0.0.1:{port}"),
        downloads: dir.path().join("dl"),
        server_spki: Some(other_key),
    };
    let b = nexus_harness::browser::Browser::start(&cfg, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let refused = b.open("/").await;
    b.close().await;
    let why = refused
        .expect_err("Chromium opened a page whose key is not the pinned one")
        .to_string();
    assert!(
        why.contains(&format!(
            "cannot open https://127.0.0.1:{port}/: Chromium refused the server's certificate (NET::ERR_CERT_"
        )) && why.contains("not the one the harness checked"),
        "{why}"
    );
    assert_eq!(nexus_harness::browser::driver::live(), 0);
}
