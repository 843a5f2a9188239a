//! The Control UI driven in process: a fake device behind it, requests straight into
//! [`App::handle`], logs captured.

use std::io::Write as _;
use std::sync::Mutex;

use http_body_util::Full;
use hyper::header::COOKIE;

use super::device::{BackupRow, BackupStatus, SnapshotRow};
use super::*;

/// A device that keeps what it was asked in memory; `fail` makes every call fail with that
/// D-Bus error name.
#[derive(Default)]
struct Fake {
    snapshots: Mutex<Vec<SnapshotRow>>,
    running: Mutex<Option<u32>>,
    passwords: Mutex<Vec<String>>,
    fail: Mutex<Option<&'static str>>,
}

impl Fake {
    fn check(&self) -> Result<(), ApiError> {
        match *self.fail.lock().unwrap() {
            Some(name) => Err(ApiError {
                name: name.into(),
                message: "from the fake".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Device for Fake {
    async fn snapshots(&self) -> Result<Vec<SnapshotRow>, ApiError> {
        Ok(self.snapshots.lock().unwrap().clone())
    }
    async fn create_snapshot(&self, description: &str) -> Result<u32, ApiError> {
        self.check()?;
        let mut s = self.snapshots.lock().unwrap();
        let id = s.len() as u32 + 1;
        s.push(SnapshotRow {
            id,
            created: 0,
            description: description.into(),
            active: false,
        });
        Ok(id)
    }
    async fn delete_snapshot(&self, _id: u32) -> Result<(), ApiError> {
        self.check()
    }
    async fn activate_snapshot(&self, _id: u32) -> Result<(), ApiError> {
        self.check()
    }
    async fn backups(&self) -> Result<Vec<BackupRow>, ApiError> {
        Ok(Vec::new())
    }
    async fn status(&self) -> Result<BackupStatus, ApiError> {
        Ok(match *self.running.lock().unwrap() {
            Some(id) => BackupStatus {
                id,
                progress: 5,
                state: "running".into(),
            },
            None => BackupStatus::default(),
        })
    }
    async fn start_backup(&self, id: u32, password: &str) -> Result<(), ApiError> {
        self.check()?;
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return Err(ApiError {
                name: nexus_contract::names::error::BUSY.into(),
                message: "busy".into(),
            });
        }
        *running = Some(id);
        self.passwords.lock().unwrap().push(password.to_owned());
        Ok(())
    }
}

const ADMIN_PASSWORD: &str = "correct horse battery";

struct Ui {
    app: Arc<App<Fake>>,
    _dir: tempfile::TempDir,
}

fn ui() -> Ui {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.password");
    std::fs::write(&file, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let config = ControlUiConfig {
        admin_password_file: file,
        backups_dir: dir.path().to_owned(),
        ..Default::default()
    };
    Ui {
        app: Arc::new(App::new(Fake::default(), config)),
        _dir: dir,
    }
}

/// An answer: status, headers as text, body as text.
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    /// Everything a browser gets: status line parts, headers and body.
    fn everything(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.body)
    }
}

async fn send(ui: &Ui, method: Method, path: &str, cookie: Option<&str>, form: &str) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("{}={c}", session::COOKIE_NAME));
    }
    let req = req.body(Full::new(Bytes::from(form.to_owned()))).unwrap();
    let resp = ui.app.clone().handle(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = match body {
        Body::Stream(mut rx) => {
            // The first part of an event stream is enough.
            let first = rx.recv().await.unwrap().unwrap();
            String::from_utf8_lossy(&first).into_owned()
        }
        other => {
            let bytes = other.collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Logs in as the admin: the session cookie and the page's CSRF token.
async fn log_in(ui: &Ui) -> (String, String) {
    let a = send(
        ui,
        Method::POST,
        "/control/login",
        None,
        "username=admin&password=correct+horse%20battery",
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.header("location"), "/control/");
    let set = a.header("set-cookie").to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/control/"] {
        assert!(set.contains(flag), "{set}");
    }
    let token = set
        .strip_prefix("nexus_ui_session=")
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_owned();
    assert!(token.len() >= 22, "a session token of {} characters", token.len());
    let page = send(ui, Method::GET, "/control/", Some(&token), "").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    (token, csrf)
}

#[tokio::test]
async fn the_admin_logs_in_and_a_wrong_password_gets_words_and_no_session() {
    let ui = ui();
    let login = send(&ui, Method::GET, "/control/login", None, "").await;
    assert!(login.body.contains("id=\"username\"") && login.body.contains("id=\"login\""));

    let wrong = send(
        &ui,
        Method::POST,
        "/control/login",
        None,
        "username=admin&password=guess",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("<div id=\"error\""), "{}", wrong.body);
    assert!(wrong.body.contains("wrong user name or password"));
    assert_eq!(wrong.header("set-cookie"), "");
    let wrong_user = send(
        &ui,
        Method::POST,
        "/control/login",
        None,
        "username=root&password=correct+horse+battery",
    )
    .await;
    assert_eq!(wrong_user.status, StatusCode::UNAUTHORIZED);

    let (token, csrf) = log_in(&ui).await;
    assert!(csrf.len() >= 22 && csrf != token);
}

#[tokio::test]
async fn without_a_session_pages_go_to_login_and_everything_else_is_401() {
    let ui = ui();
    let page = send(&ui, Method::GET, "/control/", None, "").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), "/control/login");
    let forged = send(&ui, Method::GET, "/control/", Some("made-up"), "").await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    for (method, path) in [
        (Method::GET, "/control/events"),
        (Method::GET, "/control/download/1"),
        (Method::POST, "/control/snapshots"),
        (Method::POST, "/control/snapshots/1/backup"),
    ] {
        let a = send(&ui, method.clone(), path, None, "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert!(ui.app.device.passwords.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_changes_nothing() {
    let ui = ui();
    let (token, csrf) = log_in(&ui).await;
    for form in ["", "csrf=wrong", &format!("csrf={csrf}x")] {
        let a = send(&ui, Method::POST, "/control/snapshots", Some(&token), form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form}");
    }
    assert!(ui.app.device.snapshots.lock().unwrap().is_empty());
    let ok = send(
        &ui,
        Method::POST,
        "/control/snapshots",
        Some(&token),
        &format!("csrf={csrf}&description=before+update"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let page = send(&ui, Method::GET, "/control/", Some(&token), "").await;
    assert!(page.body.contains("<tr data-snapshot-id=\"1\""), "{}", page.body);
    assert!(page.body.contains("before update"));
}

/// Collects what the module logs (every level) while `f` runs.
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_backup_password_is_in_exactly_one_answer_and_never_logged() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || Captured(sink.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ui = ui();
    let (token, csrf) = log_in(&ui).await;
    send(
        &ui,
        Method::POST,
        "/control/snapshots",
        Some(&token),
        &format!("csrf={csrf}"),
    )
    .await;
    let mut answers = Vec::new();
    let started = send(
        &ui,
        Method::POST,
        "/control/snapshots/1/backup",
        Some(&token),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK);
    assert_eq!(started.header("cache-control"), "no-store");
    assert_eq!(started.header("location"), "");
    let password = ui.app.device.passwords.lock().unwrap()[0].clone();
    assert_eq!(password.len(), 32);
    assert!(started
        .body
        .contains(&format!("<span id=\"backup-password\">{password}</span>")));
    assert!(started.body.contains("id=\"password-box\"") && started.body.contains("data-close-after=\"20\""));
    assert_eq!(started.body.matches(&password).count(), 1);
    assert!(!format!("{:?}", started.headers).contains(&password));

    // Everything after: the page again, the event stream, a second Start (Busy), the login page.
    answers.push(send(&ui, Method::GET, "/control/", Some(&token), "").await);
    answers.push(send(&ui, Method::GET, "/control/events", Some(&token), "").await);
    let busy = send(
        &ui,
        Method::POST,
        "/control/snapshots/1/backup",
        Some(&token),
        &format!("csrf={csrf}"),
    )
    .await;
    assert!(busy.body.contains("<div id=\"error\""), "{}", busy.body);
    assert!(busy.body.contains("a backup is already running"));
    assert!(!busy.body.contains("id=\"password-box\""));
    answers.push(busy);
    answers.push(send(&ui, Method::GET, "/control/login", None, "").await);
    for a in &answers {
        assert!(
            !a.everything().contains(&password),
            "the password came again: {}",
            a.body
        );
    }
    let logged = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("backup started"), "the capture works: {logged}");
    assert!(!logged.contains(&password), "the password was logged: {logged}");
    assert!(!logged.contains(ADMIN_PASSWORD), "the admin password was logged");
}

#[tokio::test]
async fn progress_reaches_the_event_stream_as_server_sent_events() {
    let ui = ui();
    let (token, _) = log_in(&ui).await;
    *ui.app.device.running.lock().unwrap() = Some(7);
    let req = Request::builder()
        .uri("/control/events")
        .header(COOKIE, format!("nexus_ui_session={token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = ui.app.clone().handle(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let Body::Stream(mut rx) = resp.into_body() else {
        panic!("not a stream");
    };
    let first = rx.recv().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first)
        .contains("event: progress\ndata: {\"id\":7,\"percent\":5,\"state\":\"running\"}\n\n"));
    ui.app
        .event_sender()
        .send(UiEvent::Progress { id: 7, percent: 42 })
        .unwrap();
    let next = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&next),
        "event: progress\ndata: {\"id\":7,\"percent\":42,\"state\":\"running\"}\n\n"
    );
    ui.app
        .event_sender()
        .send(UiEvent::Finished {
            id: 7,
            result: "ok".into(),
        })
        .unwrap();
    let done = String::from_utf8_lossy(&rx.recv().await.unwrap().unwrap()).into_owned();
    assert!(
        done.contains("\"state\":\"finished\"") && done.contains("/control/download/7"),
        "{done}"
    );
}

#[tokio::test]
async fn device_errors_are_shown_in_words() {
    use nexus_contract::names::error;
    let ui = ui();
    let (token, csrf) = log_in(&ui).await;
    for (name, path, words) in [
        (error::NO_SPACE, "/control/snapshots/1/backup", "no space"),
        (error::ACCESS_DENIED, "/control/snapshots", "refused by polkit"),
        (
            error::NO_SUCH_SNAPSHOT,
            "/control/snapshots/9/delete",
            "unknown snapshot",
        ),
        (error::IN_USE, "/control/snapshots/1/activate", "in use"),
    ] {
        *ui.app.device.fail.lock().unwrap() = Some(name);
        let a = send(&ui, Method::POST, path, Some(&token), &format!("csrf={csrf}")).await;
        assert!(a.body.contains("<div id=\"error\""), "{name}: {}", a.body);
        assert!(a.body.contains(words), "{name}: {}", a.body);
        assert!(!a.body.contains("id=\"password-box\""));
    }
}

#[test]
fn forms_decode() {
    assert_eq!(form_decode("a+b%20c%2"), "a b c%2");
    assert_eq!(form_decode("%C3%A4%zz"), "ä%zz");
    assert_eq!(snapshot_action("/control/snapshots/12/backup"), Some((12, "backup")));
    assert_eq!(snapshot_action("/control/snapshots/012/backup"), None);
    let _ = std::io::sink().write(b"");
}

#[test]
fn the_image_grants_the_ui_user_exactly_the_actions_of_its_page() {
    use nexus_contract::names::CONTROL_UI_ACTIONS;
    use nexus_contract::paths::{CONTROL_UI_SOCKET, CONTROL_UI_USER};
    let pkla = include_str!("../../../images/polkit/20-nexus-ui.pkla");
    assert!(
        pkla.contains(&format!("\nIdentity=unix-user:{CONTROL_UI_USER}\n")),
        "{pkla}"
    );
    assert!(
        pkla.contains(&format!("\nAction={}\n", CONTROL_UI_ACTIONS.join(";"))),
        "{pkla}"
    );
    for result in ["ResultActive=yes", "ResultInactive=yes", "ResultAny=yes"] {
        assert!(pkla.contains(result), "{pkla}");
    }
    let unit = include_str!("../../../images/systemd/nexus-controlui.service");
    assert!(unit.contains(&format!("\nUser={CONTROL_UI_USER}\n")), "{unit}");
    let runtime_dir = CONTROL_UI_SOCKET
        .strip_prefix("/run/")
        .and_then(|p| p.split('/').next())
        .unwrap();
    assert!(unit.contains(&format!("\nRuntimeDirectory={runtime_dir}\n")), "{unit}");
}

/// A request body that sends its first part and then nothing, ever, as a stalled client does.
struct Stalled(Option<Bytes>);

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(first) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first)))),
            None => std::task::Poll::Pending,
        }
    }
}

fn stalled_body(first: &'static str) -> Stalled {
    Stalled(Some(Bytes::from_static(first.as_bytes())))
}

#[tokio::test]
async fn a_post_without_a_session_is_refused_before_its_body_arrives() {
    let ui = ui();
    for path in ["/control/snapshots", "/control/snapshots/1/backup", "/control/logout"] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-length", "100")
            .body(stalled_body("csrf=x"))
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(2), ui.app.clone().handle(req))
            .await
            .unwrap_or_else(|_| panic!("POST {path} without a session waited for its body"))
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn a_login_whose_form_stalls_is_told_408_and_a_large_one_413() {
    let ui = ui();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/control/login")
        .header("content-length", "100")
        .body(stalled_body("userna"))
        .unwrap();
    let answer = tokio::time::timeout(LOGIN_FORM_DEADLINE * 3, ui.app.clone().handle(req))
        .await
        .expect("a stalled login form held its request past the deadline")
        .unwrap();
    assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer.headers()["connection"], "close");
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("did not arrive within 3 s") && body.contains("send it again"),
        "{body}"
    );

    let big = format!("username=admin&password={}", "x".repeat(MAX_LOGIN_FORM_BYTES));
    let a = send(&ui, Method::POST, "/control/login", None, &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert!(a.body.contains("send a shorter one"), "{}", a.body);
}

/// Reads an event stream until it ends: everything it sent.
async fn rest_of_stream(rx: &mut mpsc::Receiver<std::io::Result<Bytes>>, within: Duration) -> String {
    let mut seen = String::new();
    tokio::time::timeout(within, async {
        while let Some(part) = rx.recv().await {
            seen.push_str(&String::from_utf8_lossy(&part.unwrap()));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the event stream is still open after {within:?}: {seen}"));
    seen
}

async fn open_events(ui: &Ui, token: &str) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let req = Request::builder()
        .uri("/control/events")
        .header(COOKIE, format!("nexus_ui_session={token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Body::Stream(rx) = ui.app.clone().handle(req).await.unwrap().into_body() else {
        panic!("not a stream");
    };
    rx
}

#[tokio::test]
async fn the_event_stream_ends_at_logout_and_when_the_session_goes_idle() {
    let long = ui();
    let (token, csrf) = log_in(&long).await;
    let mut rx = open_events(&long, &token).await;
    let out = send(
        &long,
        Method::POST,
        "/control/logout",
        Some(&token),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let seen = rest_of_stream(&mut rx, Duration::from_secs(5)).await;
    assert!(seen.contains("the session ended"), "{seen}");

    // Idle: a session of 1 s, and nothing but the open stream.
    let mut short = ui();
    let config = ControlUiConfig {
        session_idle_secs: 1,
        ..short.app.config.clone()
    };
    short.app = Arc::new(App::new(Fake::default(), config));
    let (token, _) = log_in(&short).await;
    let mut rx = open_events(&short, &token).await;
    let seen = rest_of_stream(&mut rx, Duration::from_secs(10)).await;
    assert!(seen.contains("the session ended"), "{seen}");
    let again = send(&short, Method::GET, "/control/events", Some(&token), "").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}
