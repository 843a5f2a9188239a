//! [ours] The Control UI (`nexus-controlui`): the vendor's "easiest way" to back up, as a web page
//! below `/control/`. It runs as its own user and listens on a unix socket that nexus-backupd's
//! HTTPS server forwards to; every snapshot and backup action is a D-Bus call that polkit judges.
//!
//! [`config`] is its file, [`session`] the login cookie and CSRF token, [`device`] the D-Bus
//! calls and their errors in words, [`password`] the backup password made on the device,
//! [`events`] the progress stream, [`pages`] the HTML. This module routes requests to them.

pub mod config;
pub mod device;
pub mod events;
pub mod pages;
pub mod password;
pub mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use nexus_contract::paths::{
    backup_file_name, CONTROL_UI_DOWNLOAD_PREFIX, CONTROL_UI_EVENTS, CONTROL_UI_LOGIN, CONTROL_UI_PREFIX,
};
use tokio::sync::{broadcast, mpsc};

use crate::https::{self, Body};
use config::ControlUiConfig;
use device::{ApiError, Device};
use events::UiEvent;
use pages::MainView;
use session::{constant_time_eq, Sessions, CSRF_FIELD, CSRF_HEADER};

/// Largest form accepted from a session (a snapshot description is the longest field).
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Largest login form: a user name and a password. Anyone may send one, so it is kept small.
const MAX_LOGIN_FORM_BYTES: usize = 2 * 1024;
/// How long a session's form may take to arrive. A browser sends a form of a few KiB in well
/// under a second even on a poor Wi-Fi link; a body still missing after this is a stalled
/// client, and the request would keep a connection of the device's HTTPS server meanwhile.
const FORM_DEADLINE: Duration = Duration::from_secs(10);
/// How long the login form may take. Anyone on the LAN may send one, before any password is
/// checked, so it gets less time than a session's form: two lines of text need far less.
const LOGIN_FORM_DEADLINE: Duration = Duration::from_secs(3);
/// The last words of an event stream whose session ended; the page's reconnect then gets 401.
const SESSION_ENDED: &str = ": the session ended (logged out or idle); log in again\n\n";
/// A comment line on an idle event stream, so proxies and browsers keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a wrong login waits before its answer.
const WRONG_LOGIN_DELAY: Duration = Duration::from_millis(500);
/// Allowed sources of the pages: only themselves and their inline script and style.
const CSP: &str = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'";

/// The Control UI: the device it drives, its sessions, and the progress events it relays.
pub struct App<D> {
    pub device: D,
    pub config: ControlUiConfig,
    sessions: Arc<Sessions>,
    events: broadcast::Sender<UiEvent>,
}

/// A logged-in request's session.
struct Authed {
    csrf: String,
}

impl<D: Device> App<D> {
    pub fn new(device: D, config: ControlUiConfig) -> Self {
        let (events, _) = broadcast::channel(64);
        Self {
            device,
            sessions: Arc::new(Sessions::new(Duration::from_secs(config.session_idle_secs))),
            config,
            events,
        }
    }

    /// Where the backup progress events go in: [`events::feed_from_bus`] on the device.
    pub fn event_sender(&self) -> broadcast::Sender<UiEvent> {
        self.events.clone()
    }

    /// Answers one request.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let method = parts.method.clone();
        if method == Method::GET && path == CONTROL_UI_LOGIN {
            return Ok(html(StatusCode::OK, pages::login(None)));
        }
        if method == Method::POST && path == CONTROL_UI_LOGIN {
            return Ok(match read_form(body, MAX_LOGIN_FORM_BYTES, LOGIN_FORM_DEADLINE).await {
                Ok(form) => self.login(&form).await,
                Err(e) => e.answer(&path),
            });
        }
        // The session is checked before a body is read: without one, nothing waits for it.
        let is_page = method == Method::GET && path == CONTROL_UI_PREFIX;
        let Some(authed) = session::cookie_token(&parts.headers)
            .and_then(|t| self.sessions.touch(&t).map(|csrf| (t, csrf)))
            .map(|(token, csrf)| (token, Authed { csrf }))
        else {
            return Ok(if is_page {
                redirect(CONTROL_UI_LOGIN)
            } else {
                text(StatusCode::UNAUTHORIZED, "log in first at /control/login\n")
            });
        };
        let (token, authed) = authed;
        let form = if method == Method::POST {
            match read_form(body, MAX_FORM_BYTES, FORM_DEADLINE).await {
                Ok(f) => f,
                Err(e) => return Ok(e.answer(&path)),
            }
        } else {
            HashMap::new()
        };
        if method == Method::POST {
            let given = form
                .get(CSRF_FIELD)
                .map(String::as_str)
                .or_else(|| parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), authed.csrf.as_bytes()) {
                tracing::info!(path, "POST without the session's CSRF token refused");
                return Ok(text(
                    StatusCode::FORBIDDEN,
                    "this form is out of date or did not come from the Control UI; reload the page and try again\n",
                ));
            }
        }
        let response = match (&method, path.as_str()) {
            (&Method::GET, p) if p == CONTROL_UI_PREFIX => self.main_page(&authed, None, None).await,
            (&Method::GET, p) if p == CONTROL_UI_EVENTS => self.events(&token).await,
            (&Method::GET | &Method::HEAD, p) if p.starts_with(CONTROL_UI_DOWNLOAD_PREFIX) => {
                self.download(
                    &p[CONTROL_UI_DOWNLOAD_PREFIX.len()..],
                    &parts.headers,
                    method == Method::HEAD,
                )
                .await
            }
            (&Method::POST, p) if p == format!("{CONTROL_UI_PREFIX}logout") => {
                self.sessions.remove(&token);
                let mut r = redirect(CONTROL_UI_LOGIN);
                set_header(&mut r, SET_COOKIE, &session::clear_cookie());
                r
            }
            (&Method::POST, p) if p == format!("{CONTROL_UI_PREFIX}snapshots") => {
                let description = form.get("description").map(|d| d.trim()).unwrap_or("");
                let description = if description.is_empty() {
                    "Control UI"
                } else {
                    description
                };
                match self.device.create_snapshot(description).await {
                    // Start backup never redirects: the password must not travel in one.
                    Ok(_) => redirect(CONTROL_UI_PREFIX),
                    Err(e) => self.failed(&authed, "create a snapshot", e).await,
                }
            }
            (&Method::POST, p) => match snapshot_action(p) {
                Some((id, "backup")) => self.start_backup(&authed, id).await,
                Some((id, "delete")) => match self.device.delete_snapshot(id).await {
                    Ok(()) => redirect(CONTROL_UI_PREFIX),
                    Err(e) => self.failed(&authed, "delete the snapshot", e).await,
                },
                Some((id, "activate")) => match self.device.activate_snapshot(id).await {
                    Ok(()) => redirect(CONTROL_UI_PREFIX),
                    Err(e) => self.failed(&authed, "activate the snapshot", e).await,
                },
                _ => text(StatusCode::NOT_FOUND, "no such action\n"),
            },
            (&Method::GET, _) => text(StatusCode::NOT_FOUND, "not found\n"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "not allowed here\n"),
        };
        Ok(response)
    }

    async fn login(&self, form: &HashMap<String, String>) -> Response<Body> {
        let user = form.get("username").map(String::as_str).unwrap_or("");
        let given = zeroize::Zeroizing::new(form.get("password").cloned().unwrap_or_default());
        let file = self.config.admin_password_file.clone();
        let config = self.config.clone();
        let expected = tokio::task::spawn_blocking(move || config.admin_password()).await;
        let expected = match expected {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(file = %file.display(), "cannot read the admin password: {e}");
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::login(Some(
                        "the admin password is not set up on the device; see the journal of nexus-controlui",
                    )),
                );
            }
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
        };
        // Both compared in full whatever the first says, so the time taken tells nothing.
        let user_ok = constant_time_eq(user.as_bytes(), self.config.admin_user.as_bytes());
        let password_ok = constant_time_eq(given.as_bytes(), expected.as_bytes());
        if !(user_ok & password_ok) {
            tracing::info!("wrong login");
            tokio::time::sleep(WRONG_LOGIN_DELAY).await;
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(Some("wrong user name or password")),
            );
        }
        match self.sessions.create() {
            Ok((token, _csrf)) => {
                tracing::info!("admin logged in");
                let mut r = redirect(CONTROL_UI_PREFIX);
                set_header(&mut r, SET_COOKIE, &session::set_cookie(&token));
                r
            }
            Err(e) => {
                tracing::error!("cannot start a session: {e}");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot start a session; see the journal\n",
                )
            }
        }
    }

    /// The backup page, with an error or the new backup's password when there is one.
    async fn main_page(&self, authed: &Authed, error: Option<String>, password: Option<&str>) -> Response<Body> {
        let mut errors = Vec::new();
        errors.extend(error);
        let snapshots = self.device.snapshots().await.unwrap_or_else(|e| {
            errors.push(format!("cannot list the snapshots: {}", e.words()));
            Vec::new()
        });
        let backups = self.device.backups().await.unwrap_or_else(|e| {
            errors.push(format!("cannot list the backups: {}", e.words()));
            Vec::new()
        });
        let status = self.device.status().await.unwrap_or_default();
        let view = MainView {
            csrf: &authed.csrf,
            snapshots: &snapshots,
            backups: &backups,
            status,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            notice: None,
            password: password.map(|p| (p, self.config.password_box_secs)),
        };
        let status = if view.error.is_some() && password.is_none() {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        html(status, pages::main(&view))
    }

    async fn failed(&self, authed: &Authed, what: &str, e: ApiError) -> Response<Body> {
        tracing::info!(error = %e.name, "could not {what}: {}", e.message);
        self.main_page(authed, Some(format!("cannot {what}: {}", e.words())), None)
            .await
    }

    /// Start backup: a new password, the D-Bus call, and the one answer that shows the password.
    async fn start_backup(&self, authed: &Authed, id: u32) -> Response<Body> {
        let password = match password::backup_password() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot make a backup password: {e}");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot make a password; see the journal\n",
                );
            }
        };
        if let Err(e) = self.device.start_backup(id, &password).await {
            return self.failed(authed, "start the backup", e).await;
        }
        tracing::info!(snapshot = id, "backup started");
        // `password` is wiped when it goes out of scope, after the page is rendered.
        self.main_page(authed, None, Some(&password)).await
    }

    /// `text/event-stream` of the backup's progress: the current state first, then each signal,
    /// until the session ends (logout, or idle for `session_idle_secs`), so a stream never
    /// outlives the login that opened it.
    async fn events(&self, token: &str) -> Response<Body> {
        // Idle expiry is found by looking, not told: checked again when it would be due.
        let (Some(mut end), Some(due)) = (self.sessions.watch(token), self.sessions.expiry(token)) else {
            return text(StatusCode::UNAUTHORIZED, "log in first at /control/login\n");
        };
        let mut rx = self.events.subscribe();
        let first = match self.device.status().await {
            Ok(s) if s.id != 0 => Some(UiEvent::Progress {
                id: s.id,
                percent: s.progress,
            }),
            _ => None,
        };
        let sessions = self.sessions.clone();
        let token = zeroize::Zeroizing::new(token.to_owned());
        let (tx, body) = mpsc::channel::<std::io::Result<Bytes>>(16);
        tokio::spawn(async move {
            let mut start = String::from("retry: 3000\n\n");
            if let Some(e) = first {
                start.push_str(&events::sse_frame(&e));
            }
            if tx.send(Ok(Bytes::from(start))).await.is_err() {
                return;
            }
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.tick().await;
            let idle = tokio::time::sleep_until(due.into());
            tokio::pin!(idle);
            loop {
                let chunk = tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) => events::sse_frame(&ev),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = keepalive.tick() => ": keepalive\n\n".to_owned(),
                    _ = end.removed() => break,
                    _ = &mut idle => match sessions.expiry(&token) {
                        Some(due) => {
                            idle.as_mut().reset(due.into());
                            continue;
                        }
                        None => break,
                    },
                };
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return; // the page was closed
                }
            }
            tracing::debug!("session ended: its event stream is closed");
            let _ = tx.send(Ok(Bytes::from_static(SESSION_ENDED.as_bytes()))).await;
        });
        let mut r = Response::new(Body::Stream(body));
        set_header(&mut r, CONTENT_TYPE, "text/event-stream");
        set_header(&mut r, CACHE_CONTROL, "no-store");
        set_header(&mut r, "x-accel-buffering", "no");
        r
    }

    /// A finished backup file (the files are world-readable, 0644, as remotebackup reads them).
    async fn download(&self, id: &str, headers: &hyper::HeaderMap, is_head: bool) -> Response<Body> {
        let Some(id) = parse_id(id) else {
            return text(StatusCode::NOT_FOUND, "no such backup\n");
        };
        let file = self.config.backups_dir.join(backup_file_name(u64::from(id)));
        let headers = headers.clone();
        let mut r = tokio::task::spawn_blocking(move || https::serve_file(file, &headers, is_head))
            .await
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"));
        if r.status().is_success() {
            let disposition = format!("attachment; filename=\"{}\"", backup_file_name(u64::from(id)));
            set_header(&mut r, "content-disposition", &disposition);
        }
        r
    }
}

/// A snapshot id as the page writes it: digits, no leading zero, not 0.
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `/control/snapshots/N/<action>` as (N, action).
fn snapshot_action(path: &str) -> Option<(u32, &str)> {
    let rest = path.strip_prefix(CONTROL_UI_PREFIX)?.strip_prefix("snapshots/")?;
    let (id, action) = rest.split_once('/')?;
    Some((parse_id(id)?, action))
}

/// Why a request's form could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("the form is larger than {limit} bytes; send a shorter one")]
    TooLarge { limit: usize },
    #[error("the form did not arrive within {} s; check the network and send it again", .deadline.as_secs())]
    TooSlow { deadline: Duration },
    #[error("the form broke off before its end ({0}); send it again")]
    Broken(String),
}

impl FormError {
    /// The answer that says so: 413, 408 or 400. The connection is not reused after it (its
    /// body may be half read).
    fn answer(&self, path: &str) -> Response<Body> {
        let status = match self {
            FormError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FormError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            FormError::Broken(_) => StatusCode::BAD_REQUEST,
        };
        tracing::info!(path, "form refused with {status}: {self}");
        let mut r = Response::new(Body::Full(Some(Bytes::from(format!("{self}\n")))));
        *r.status_mut() = status;
        set_header(&mut r, CONTENT_TYPE, "text/plain; charset=utf-8");
        set_header(&mut r, CACHE_CONTROL, "no-store");
        set_header(&mut r, CONNECTION, "close");
        r
    }
}

/// A form body (`application/x-www-form-urlencoded`) of at most `limit` bytes that has arrived
/// in full within `deadline`.
async fn read_form<B>(body: B, limit: usize, deadline: Duration) -> Result<HashMap<String, String>, FormError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A Content-Length over the limit is refused before anything is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(FormError::TooLarge { limit });
    }
    let bytes = match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => return Err(FormError::TooSlow { deadline }),
        Ok(Ok(c)) => zeroize::Zeroizing::new(c.to_bytes().to_vec()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(FormError::TooLarge { limit }),
        Ok(Err(e)) => return Err(FormError::Broken(e.to_string())),
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect())
}

/// One form-encoded name or value: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn set_header(r: &mut Response<Body>, name: impl hyper::header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// A page; never cached (it may hold a password or a CSRF token).
fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from(page))));
    *r.status_mut() = status;
    set_header(&mut r, CONTENT_TYPE, "text/html; charset=utf-8");
    set_header(&mut r, CACHE_CONTROL, "no-store");
    set_header(&mut r, "content-security-policy", CSP);
    set_header(&mut r, "referrer-policy", "no-referrer");
    set_header(&mut r, "x-content-type-options", "nosniff");
    r
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = https::simple(status, message);
    set_header(&mut r, CACHE_CONTROL, "no-store");
    r
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::SEE_OTHER;
    set_header(&mut r, LOCATION, to);
    set_header(&mut r, CACHE_CONTROL, "no-store");
    r
}

/// Accepts connections on the unix socket forever, one task per connection.
pub async fn serve<D: Device>(listener: tokio::net::UnixListener, app: Arc<App<D>>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| app.clone().handle(req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// Why the Control UI could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to the system bus: {0}; is dbus running?")]
    Bus(#[from] zbus::Error),
    #[error("cannot listen on {path}: {source}; is RuntimeDirectory=nexus-controlui set in the unit?")]
    Listen {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Runs the Control UI until SIGTERM or SIGINT: the system bus as this process's user, the
/// progress signals, the unix socket.
pub async fn run(config: ControlUiConfig) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;

    let conn = zbus::connection::Builder::system().build().await?;
    let app = Arc::new(App::new(device::DbusDevice { conn: conn.clone() }, config));
    let feed = app.event_sender();
    tokio::spawn(async move {
        if let Err(e) = events::feed_from_bus(conn, feed).await {
            tracing::error!("backup progress signals are not followed: {e}");
        }
    });
    let path = app.config.socket.clone();
    let listen_error = |source| StartError::Listen {
        path: path.clone(),
        source,
    };
    // A socket left by a previous run would make bind fail.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(listen_error)?;
    // Only root (nexus-backupd, which forwards /control/ here) and this user connect.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_error)?;
    tracing::info!(socket = %path.display(), "Control UI ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(listen_error)?;
    tokio::select! {
        _ = serve(listener, app) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("stopping");
    Ok(())
}

#[cfg(test)]
mod tests;
