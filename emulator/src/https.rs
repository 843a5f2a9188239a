//! The HTTPS file server: `GET`/`HEAD` of `/nexus-backups/nexus_backup_N.tar.gpg` (with Range,
//! Content-Length, ETag) and of the CA at `/noreya-nexus/certificates/ca.pem`; everything else 404.
//! Paths are matched exactly, never decoded or joined, files are opened without following links,
//! and slow, idle or stuck clients are cut off so others keep being served. [ours] Every request
//! below `/control/` (any method) goes to the Control UI's unix socket, bodies streamed both ways,
//! as nginx does on the device; the UI has its own login, so the token auth is not asked there.
//! Anyone on the LAN can reach that door, so what it may hold is bounded ([`crate::admission`]):
//! a budget of slots of its own, deadlines on bodies and answers, a cap per client.

use std::convert::Infallible;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Seek};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_RANGE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use nexus_contract::paths::{
    BACKUPS_URL_PREFIX, CA_PATH, CONTROL_UI_DOWNLOAD_PREFIX, CONTROL_UI_EVENTS, CONTROL_UI_PREFIX,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::admission::{
    ClientSlot, Clients, DeadlineBody, Held, HeldAnswer, QuietWarnings, CONTROL_BODY_DEADLINE, CONTROL_DEADLINE,
    CONTROL_SLOTS, IDLE_GRACE, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT, REFUSAL_DEADLINE, REFUSAL_SLOTS,
};
use crate::layout::Layout;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the server serves.
#[derive(Debug)]
pub struct FileServer {
    pub backups_dir: PathBuf,
    pub ca_pem: String,
    /// `Basic base64(token:<value>)` when auth is on.
    pub expected_auth: Option<String>,
    /// The Control UI's unix socket, where `/control/` is forwarded; `None`: 404 there.
    pub control_ui: Option<PathBuf>,
}

impl FileServer {
    pub fn new(backups_dir: PathBuf, ca_pem: String, token: Option<&str>) -> Self {
        use base64::Engine;
        let expected_auth = token.map(|t| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("token:{t}"))
            )
        });
        Self {
            backups_dir,
            ca_pem,
            expected_auth,
            control_ui: None,
        }
    }

    /// The same server, forwarding `/control/` to the Control UI at `socket`.
    pub fn with_control_ui(mut self, socket: PathBuf) -> Self {
        self.control_ui = Some(socket);
        self
    }

    /// Answers one request.
    async fn handle(self: Arc<Self>, req: Request<Incoming>, door: Arc<Door>) -> Result<Response<Body>, Infallible> {
        if req.uri().path().starts_with(CONTROL_UI_PREFIX) {
            return Ok(match &self.control_ui {
                Some(socket) => door.forward(socket, req).await,
                None => not_found(),
            });
        }
        let (parts, _body) = req.into_parts();
        let is_head = parts.method == Method::HEAD;
        if parts.method != Method::GET && !is_head {
            let mut r = simple(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        if let Some(expected) = &self.expected_auth {
            let given = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
            if !given.is_some_and(|g| constant_time_eq(g, expected.as_bytes())) {
                let mut r = simple(
                    StatusCode::UNAUTHORIZED,
                    "this device needs HTTP Basic auth with user 'token'\n",
                );
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"NOREYA NEXUS\""),
                );
                return Ok(r);
            }
        }
        let path = parts.uri.path();
        let response = if path == CA_PATH {
            let mut r = Response::new(if is_head {
                Body::Empty
            } else {
                Body::Full(Some(Bytes::from(self.ca_pem.clone())))
            });
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(self.ca_pem.len()));
            r
        } else if let Some(id) = path
            .strip_prefix(BACKUPS_URL_PREFIX)
            .and_then(Layout::parse_backup_name)
        {
            let file = self.backups_dir.join(Layout::backup_name(id));
            let headers = parts.headers.clone();
            tokio::task::spawn_blocking(move || serve_file(file, &headers, is_head))
                .await
                .unwrap_or_else(|_| simple(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
        } else {
            not_found()
        };
        Ok(response)
    }
}

/// Headers that belong to one hop, not to the request or answer passed on (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the connections of one server share: the Control UI's budget of slots, each client's
/// count of connections, the slots for refusing, and the warnings about refusals.
struct Door {
    limits: Limits,
    control: Arc<Semaphore>,
    clients: Arc<Clients>,
    refusals: Arc<Semaphore>,
    warnings: QuietWarnings,
}

impl Door {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            control: Arc::new(Semaphore::new(limits.control_slots)),
            clients: Arc::default(),
            refusals: Arc::new(Semaphore::new(REFUSAL_SLOTS)),
            warnings: QuietWarnings::default(),
        }
    }

    /// Connections one client may have open: its cap, never above the total.
    fn per_client(&self) -> usize {
        self.limits.per_client.min(self.limits.max_connections)
    }

    /// Passes a request to the Control UI within the UI's budget of slots: a request body must
    /// arrive within [`CONTROL_BODY_DEADLINE`] and the answer end within [`CONTROL_DEADLINE`]
    /// (not the progress stream nor downloads: see there). 503 when the budget is used up.
    async fn forward(&self, socket: &Path, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let Ok(slot) = self.control.clone().try_acquire_owned() else {
            self.warnings.warn(format_args!(
                "all {} slots of the Control UI are busy; {path} was answered 503",
                self.limits.control_slots
            ));
            let mut r = simple(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the Control UI is busy with {} requests; try again in a few seconds\n",
                    self.limits.control_slots
                ),
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        };
        let slot = Arc::new(slot);
        let streams = path == CONTROL_UI_EVENTS || path.starts_with(CONTROL_UI_DOWNLOAD_PREFIX);
        let until = tokio::time::Instant::now() + CONTROL_DEADLINE;
        let (parts, body) = req.into_parts();
        let (body, progress) = DeadlineBody::new(body, CONTROL_BODY_DEADLINE, slot.clone());
        let answer = tokio::time::timeout_at(until, forward(socket, Request::from_parts(parts, body))).await;
        let mut r = match answer {
            Ok(Ok(r)) => r.map(Body::Upstream),
            Ok(Err(_)) | Err(_) if progress.late() => {
                tracing::info!(
                    path,
                    "the request body did not arrive within {CONTROL_BODY_DEADLINE:?}; answered 408"
                );
                simple(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s; check the network and send it again\n",
                        CONTROL_BODY_DEADLINE.as_secs()
                    ),
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(path, "{e}");
                e.answer()
            }
            Err(_) => {
                tracing::warn!(
                    path,
                    "the Control UI did not answer within {CONTROL_DEADLINE:?}; answered 504"
                );
                simple(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the Control UI did not answer in time; see the journal of nexus-controlui\n",
                )
            }
        };
        // A body not read to its end leaves the connection at an unknown place: not reused.
        if !progress.done() {
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // The progress stream ends with its session, a download when its client stops reading
        // (the write timeout); both may rightly last longer than any fixed deadline.
        let deadline = (!streams).then_some(until);
        r.map(|b| Body::Held(HeldAnswer::new(b, deadline, Held::ControlSlot(slot))))
    }

    /// Tells a connection over its client's cap (all its others busy) so with a 429 within
    /// [`REFUSAL_DEADLINE`], or closes it at once when [`REFUSAL_SLOTS`] are being told already.
    fn refuse(&self, tcp: TcpStream, peer: SocketAddr, acceptor: tokio_rustls::TlsAcceptor) {
        let cap = self.per_client();
        self.warnings.warn(format_args!(
            "{peer} has {cap} connections busy already, its cap; a new one was refused with 429"
        ));
        let Ok(slot) = self.refusals.clone().try_acquire_owned() else {
            return; // dropping it closes it
        };
        tokio::spawn(async move {
            let _slot = slot;
            let tell = async move {
                let tls = acceptor.accept(tcp).await?;
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut r = simple(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "this address has {cap} connections busy on the device already; let some finish (or close them) and try again\n"
                        ),
                    );
                    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("10"));
                    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    Ok::<_, Infallible>(r)
                });
                hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(REFUSAL_DEADLINE)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                    .map_err(io::Error::other)
            };
            if let Ok(Err(e)) = tokio::time::timeout(REFUSAL_DEADLINE, tell).await {
                tracing::debug!(%peer, "refusing a connection: {e}");
            }
        });
    }
}

/// Why a request could not be passed to the Control UI.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("the Control UI cannot be reached at {}: {source}", socket.display())]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error("the Control UI's socket does not speak HTTP: {0}")]
    NotHttp(hyper::Error),
    #[error("the Control UI gave no answer: {0}")]
    NoAnswer(hyper::Error),
}

impl ForwardError {
    /// The client's answer: 502 in words.
    fn answer(&self) -> Response<Body> {
        match self {
            ForwardError::Unreachable { .. } => simple(
                StatusCode::BAD_GATEWAY,
                "the Control UI is not running (nothing answers on its socket); start nexus-controlui.service\n",
            ),
            ForwardError::NotHttp(_) | ForwardError::NoAnswer(_) => simple(
                StatusCode::BAD_GATEWAY,
                "the Control UI gave no answer; see the journal of nexus-controlui\n",
            ),
        }
    }
}

/// Passes one request to the Control UI's unix socket; its answer streams back.
async fn forward(socket: &Path, mut req: Request<DeadlineBody>) -> Result<Response<Incoming>, ForwardError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ForwardError::Unreachable {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(ForwardError::NotHttp)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection to the Control UI ended: {e}");
        }
    });
    strip_hop_by_hop(req.headers_mut());
    let mut resp = sender.send_request(req).await.map_err(ForwardError::NoAnswer)?;
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A short plain-text answer.
pub fn simple(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(text.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn not_found() -> Response<Body> {
    simple(StatusCode::NOT_FOUND, "not found\n")
}

/// A single byte range of a file of `len` bytes: `Ok(None)` means the whole file,
/// `Err(())` a range that cannot be satisfied.
fn parse_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None); // other units are ignored (RFC 9110 14.2)
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: serve the whole file, as RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Result<u64, ()> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            Err(())
        } else {
            s.parse().map_err(|_| ())
        }
    };
    let (start, end) = if a.is_empty() {
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start = num(a)?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            num(b)?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some((start, end)))
}

/// A backup file (or a range of it) as an answer; 404 when it is missing or not a plain file.
/// Blocking: call it on a blocking thread.
pub fn serve_file(path: PathBuf, headers: &hyper::HeaderMap, is_head: bool) -> Response<Body> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(_) => return not_found(),
    };
    let meta = match file.metadata() {
        Ok(m) if m.is_file() => m,
        _ => return not_found(),
    };
    let len = meta.len();
    let etag = format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        len,
        meta.mtime(),
        meta.mtime_nsec()
    );
    let range_header = headers.get(RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = headers
        .get(IF_RANGE)
        .map(|v| v.as_bytes() == etag.as_bytes())
        .unwrap_or(true);
    let range = match range_header.filter(|_| if_range_ok) {
        Some(h) => parse_range(h, len),
        None => Ok(None),
    };
    let (status, start, count) = match range {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut r = simple(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if is_head || count == 0 {
        Body::Empty
    } else {
        match FileBody::start(file, start, count) {
            Ok(b) => Body::File(b),
            Err(_) => return simple(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n"),
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/pgp-encrypted"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1)) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    r
}

/// Response bodies: nothing, a buffer, a file read on a blocking thread, parts sent by a task
/// (server-sent events), the Control UI's answer passed through, or one of these holding its
/// slot of the Control UI's budget until sent.
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    File(FileBody),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
    Upstream(Incoming),
    Held(HeldAnswer),
}

/// A file range streamed by a reader thread through a small channel.
pub struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl FileBody {
    fn start(mut file: fs::File, start: u64, count: u64) -> io::Result<Self> {
        file.seek(io::SeekFrom::Start(start))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut left = count;
            while left > 0 {
                let mut buf = vec![0u8; (256 * 1024).min(left as usize)];
                match file.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank")));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return; // client went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(Self { rx })
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::File(f) => f.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            Body::Upstream(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(io::Error::other))),
            Body::Held(held) => held.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::File(_) | Body::Stream(_) => false,
            Body::Upstream(inner) => hyper::body::Body::is_end_stream(inner),
            Body::Held(held) => hyper::body::Body::is_end_stream(&*held.inner),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Upstream(inner) => hyper::body::Body::size_hint(inner),
            Body::Held(held) => hyper::body::Body::size_hint(&*held.inner),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// How many clients are served at once, and how long a stuck one may keep its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. A new one beyond takes the place of an idle one (in its
    /// handshake, or waiting for a request); when all are busy it waits in the listen queue.
    pub max_connections: usize,
    /// A send that makes no progress for this long closes the connection and frees its slot:
    /// the client stopped reading (or its network is gone). Time spent waiting for the SD card
    /// does not count, only time the client's side of the connection is full.
    pub write_timeout: Duration,
    /// Requests below `/control/` served at once; more are answered 503 at once.
    pub control_slots: usize,
    /// Connections one client may have open; more are answered 429 (or closed).
    pub per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            // A client that reads at all, even over a slow link, drains the socket buffer in
            // well under a second; 30 s of nothing taken is a client that has stopped reading.
            write_timeout: Duration::from_secs(30),
            control_slots: CONTROL_SLOTS,
            per_client: MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

/// Accepts connections forever with the default [`Limits`].
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, files: Arc<FileServer>) {
    serve_with_limits(listener, tls, files, Limits::default()).await
}

/// Accepts connections forever: TLS handshake, then HTTP/1.1 with header and write timeouts,
/// each client at most at its cap, idle connections closed for new ones when all slots are taken.
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    files: Arc<FileServer>,
    limits: Limits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let door = Arc::new(Door::new(limits));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(client) = door.clients.admit(peer.ip(), door.per_client()) else {
            door.refuse(tcp, peer, acceptor.clone());
            continue;
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match slot_when_full(&slots, &door, &client, peer).await {
                Some(p) => p,
                None => return,
            },
        };
        tokio::spawn(connection(
            tcp,
            peer,
            (client, permit),
            acceptor.clone(),
            files.clone(),
            door.clone(),
        ));
    }
}

/// A slot for a new connection when all are taken: a connection that has served nothing (in its
/// handshake, waiting for a request, or between requests) for [`IDLE_GRACE`] is closed for it,
/// so connections that never ask for anything cannot keep others out; while none has, it waits
/// for a slot (and the next ones in the listen queue). `None` when the server is closing.
async fn slot_when_full(
    slots: &Arc<Semaphore>,
    door: &Door,
    client: &ClientSlot,
    peer: SocketAddr,
) -> Option<OwnedSemaphorePermit> {
    // A connection of its own client closed for it frees a slot already.
    let mut made_room = client.made_room();
    loop {
        if !made_room {
            if let Some(from) = door.clients.make_room_for(client) {
                made_room = true;
                door.warnings.warn(format_args!(
                    "all {} connections were taken; an idle one of {from} was closed for {peer}",
                    door.limits.max_connections
                ));
            }
        }
        tokio::select! {
            p = slots.clone().acquire_owned() => return p.ok(),
            // One idle too briefly to be closed now may be later.
            () = tokio::time::sleep(IDLE_GRACE / 4), if !made_room => {}
        }
    }
}

/// Serves one admitted connection: TLS handshake, then HTTP/1.1 with header and write timeouts,
/// until it ends or is closed while idle for a newer connection of its client.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    (client, slot): (ClientSlot, OwnedSemaphorePermit),
    acceptor: tokio_rustls::TlsAcceptor,
    files: Arc<FileServer>,
    door: Arc<Door>,
) {
    let marker = client.busy_marker();
    let write_timeout = door.limits.write_timeout;
    let served = async move {
        let tcp = WriteTimeout::new(tcp, write_timeout);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let service = hyper::service::service_fn(move |req| {
            // Busy from the request until its answer has been sent.
            let busy = marker.busy();
            let answer = files.clone().handle(req, door.clone());
            async move {
                let r = answer.await?;
                Ok::<_, Infallible>(r.map(|b| Body::Held(HeldAnswer::new(b, None, Held::Busy(busy)))))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
        if let Err(e) = conn.await {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    };
    tokio::select! {
        () = served => {}
        () = client.evicted() => {
            tracing::debug!(%peer, "closed while idle, for a newer connection");
        }
    }
    // In this order: the client's count is down before the slot is free, so the next connection
    // of the same client, which may be waiting for that slot, fits.
    drop(client);
    drop(slot);
}

/// A TCP connection whose sends fail with `TimedOut` once they have made no progress for
/// `limit`. Hyper has no write timeout of its own, and a client that stops reading would
/// otherwise keep its connection (and its slot) for as long as it stays connected.
struct WriteTimeout {
    tcp: TcpStream,
    limit: Duration,
    /// Set when a send could not go on; re-armed, not re-allocated, at each stall.
    stall: Pin<Box<tokio::time::Sleep>>,
    stalled: bool,
}

impl WriteTimeout {
    fn new(tcp: TcpStream, limit: Duration) -> Self {
        Self {
            tcp,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            stalled: false,
        }
    }

    /// A send's result, with the time it has been stuck counted.
    fn guard(&mut self, cx: &mut Context<'_>, sent: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if !sent.is_pending() {
            self.stalled = false;
            return sent;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            self.stall.as_mut().reset(deadline);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let sent = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.guard(cx, sent)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sent = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.guard(cx, sent)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    // A TcpStream's flush and shutdown never wait.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client of the test server, trusting the server's CA.
    async fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        connect_from(addr, [127, 0, 0, 1].into(), ca_pem).await
    }

    /// The same from the loopback address `from`: another client to the server.
    async fn connect_from(
        addr: std::net::SocketAddr,
        from: std::net::Ipv4Addr,
        ca_pem: &str,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_loses_its_slot_to_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        fs::create_dir(&backups).unwrap();
        // Far more than the socket buffers on both sides hold; sparse, so nothing is written.
        let size = 256u64 << 20;
        fs::File::create(backups.join(Layout::backup_name(1)))
            .unwrap()
            .set_len(size)
            .unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let files = Arc::new(FileServer::new(backups, tls.ca_pem.clone(), None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let write_timeout = Duration::from_secs(1);
        let limits = Limits {
            max_connections: 1,
            write_timeout,
            ..Limits::default()
        };
        tokio::spawn(serve_with_limits(listener, tls.server.clone(), files, limits));

        // The only slot: asks for the big file and never reads the answer.
        let mut stuck = connect(addr, &tls.ca_pem).await;
        stuck
            .write_all(
                format!(
                    "GET {BACKUPS_URL_PREFIX}{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                    Layout::backup_name(1)
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        stuck.flush().await.unwrap();
        // Its answer has started: it is being served, not idle (an idle one would make room).
        read_until(&mut stuck, "HTTP/1.1 200").await;

        // The next client (another address: this one is at its cap of 1) waits for the only slot
        // until the stuck one's send times out.
        let start = Instant::now();
        let served = tokio::time::timeout(Duration::from_secs(30), async {
            let mut next = connect_from(addr, [127, 0, 0, 2].into(), &tls.ca_pem).await;
            next.write_all(
                format!("GET {CA_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut reply = Vec::new();
            let _ = next.read_to_end(&mut reply).await; // no close_notify is fine
            String::from_utf8_lossy(&reply).into_owned()
        })
        .await
        .expect("the next client was not served: the stuck client kept the only slot");
        let waited = start.elapsed();
        assert!(
            served.starts_with("HTTP/1.1 200") && served.ends_with(&tls.ca_pem),
            "{served}"
        );
        // It did wait for the slot (so the stuck client held it), about the write timeout.
        assert!(waited >= write_timeout / 2, "served after {waited:?}");

        // The stuck client's connection was closed before the whole file went through.
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let read_all = async {
            loop {
                match stuck.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read_all)
            .await
            .expect("the stuck client's connection is still open");
        assert!(got < size, "{got} of {size} bytes arrived");
    }

    /// Reads from `stream` until `needle` has arrived; what arrived.
    async fn read_until(stream: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before {needle:?}: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn control_requests_go_to_the_ui_socket_and_stream_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let socket = dir.path().join("ui.sock");
        let files = Arc::new(
            FileServer::new(dir.path().to_owned(), tls.ca_pem.clone(), Some("t")).with_control_ui(socket.clone()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, tls.server.clone(), files));

        // Nothing listens yet: 502 in words.
        let mut c = connect(addr, &tls.ca_pem).await;
        c.write_all(b"GET /control/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 502") && reply.contains("Control UI is not running"),
            "{reply}"
        );

        // A UI that echoes the POST's method and body, then sends a second part only when told.
        let ui = tokio::net::UnixListener::bind(&socket).unwrap();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let go_rx = Arc::new(tokio::sync::Mutex::new(Some(go_rx)));
        tokio::spawn(async move {
            let (stream, _) = ui.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let go_rx = go_rx.clone();
                async move {
                    use http_body_util::BodyExt;
                    let method = req.method().clone();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let (tx, rx) = mpsc::channel(2);
                    tx.send(Ok(Bytes::from(format!(
                        "{method} {}\n",
                        String::from_utf8_lossy(&body)
                    ))))
                    .await
                    .unwrap();
                    tokio::spawn(async move {
                        let go = go_rx.lock().await.take().unwrap();
                        go.await.unwrap();
                        tx.send(Ok(Bytes::from_static(b"second part\n"))).await.unwrap();
                    });
                    Ok::<_, Infallible>(Response::new(Body::Stream(rx)))
                }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
                .unwrap();
        });
        let mut c = connect(addr, &tls.ca_pem).await;
        c.write_all(b"POST /control/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let first = read_until(&mut c, "POST hello").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(!first.contains("second part"));
        go_tx.send(()).unwrap();
        read_until(&mut c, "second part").await;

        // Elsewhere POST is still refused.
        let mut c = connect(addr, &tls.ca_pem).await;
        c.write_all(b"POST /nexus-backups/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply).await;
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 405"));
    }

    /// A GET of the CA on `c`: the whole answer as text.
    async fn get_ca(mut c: tokio_rustls::client::TlsStream<TcpStream>) -> String {
        c.write_all(format!("GET {CA_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply).await;
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_at_its_cap_gets_room_from_an_idle_connection_else_429_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        fs::create_dir(&backups).unwrap();
        // Far more than the socket buffers hold (sparse): a client that does not read it stays busy.
        fs::File::create(backups.join(Layout::backup_name(1)))
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let files = Arc::new(FileServer::new(backups, tls.ca_pem.clone(), None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            per_client: 2,
            ..Limits::default()
        };
        tokio::spawn(serve_with_limits(listener, tls.server.clone(), files, limits));
        let within = |what: &'static str, f| async move {
            tokio::time::timeout(Duration::from_secs(10), f)
                .await
                .unwrap_or_else(|_| panic!("{what} got no answer"))
        };
        let download = format!(
            "GET {BACKUPS_URL_PREFIX}{} HTTP/1.1\r\nHost: x\r\n\r\n",
            Layout::backup_name(1)
        );

        // At the cap, one busy (a download it does not read) and one idle: a new connection
        // is served, and the idle one is closed for it.
        let mut busy = connect(addr, &tls.ca_pem).await;
        busy.write_all(download.as_bytes()).await.unwrap();
        read_until(&mut busy, "HTTP/1.1 200").await;
        let mut idle = connect(addr, &tls.ca_pem).await;
        let served = within("a connection at the cap", get_ca(connect(addr, &tls.ca_pem).await)).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the idle connection was not closed: {closed:?}"
        );

        // Both busy: the next one is told 429 in words; another client is served meanwhile.
        let mut second = connect(addr, &tls.ca_pem).await;
        second.write_all(download.as_bytes()).await.unwrap();
        read_until(&mut second, "HTTP/1.1 200").await;
        let refused = within("a connection over the cap", get_ca(connect(addr, &tls.ca_pem).await)).await;
        assert!(
            refused.starts_with("HTTP/1.1 429")
                && refused.contains("2 connections busy")
                && refused.contains("try again"),
            "{refused}"
        );
        let other = within(
            "another client",
            get_ca(connect_from(addr, [127, 0, 0, 2].into(), &tls.ca_pem).await),
        )
        .await;
        assert!(
            other.starts_with("HTTP/1.1 200") && other.ends_with(&tls.ca_pem),
            "{other}"
        );

        // A connection that ends gives its client's place back.
        drop(busy);
        let mut again = String::new();
        for _ in 0..100 {
            again = get_ca(connect(addr, &tls.ca_pem).await).await;
            if again.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_slowloris_connections_from_one_address_leave_its_download_served() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        fs::create_dir(&backups).unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(backups.join(Layout::backup_name(1)), &content).unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let files = Arc::new(FileServer::new(backups, tls.ca_pem.clone(), None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, tls.server.clone(), files));

        // As scenario faults/08 holds them: 100 that never start TLS, 100 that send their
        // request line a few bytes at a time and never end it; all from the owner's address.
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut slow = Vec::new();
        for _ in 0..100 {
            let opened = tokio::time::timeout(Duration::from_secs(5), async {
                let mut c = connect(addr, &tls.ca_pem).await;
                c.write_all(b"GET /noreya-nexus/certificates/ca.pem HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                    .await
                    .ok()
                    .map(|()| c)
            })
            .await;
            slow.extend(opened.ok().flatten());
        }
        let download = tokio::time::timeout(Duration::from_secs(10), async {
            let mut c = connect(addr, &tls.ca_pem).await;
            c.write_all(
                format!(
                    "GET {BACKUPS_URL_PREFIX}{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    Layout::backup_name(1)
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut reply = Vec::new();
            let _ = c.read_to_end(&mut reply).await;
            reply
        })
        .await
        .expect("the owner's download got no answer beside the held connections");
        assert!(
            download.starts_with(b"HTTP/1.1 200") && download.ends_with(&content),
            "{}",
            String::from_utf8_lossy(&download[..download.len().min(300)])
        );
        drop((held, slow));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_that_never_ask_for_anything_from_many_addresses_make_room_for_one_that_does() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let files = Arc::new(FileServer::new(dir.path().to_owned(), tls.ca_pem.clone(), None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 4,
            ..Limits::default()
        };
        tokio::spawn(serve_with_limits(listener, tls.server.clone(), files, limits));

        // Every slot taken, from four addresses: two never start TLS, two never send a request.
        let mut silent = Vec::new();
        for last in [11, 12] {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
            silent.push(socket.connect(addr).await.unwrap());
        }
        let mut quiet = Vec::new();
        for last in [13, 14] {
            quiet.push(connect_from(addr, [127, 0, 0, last].into(), &tls.ca_pem).await);
        }
        // Well within the handshake and header timeouts (10 s) that would free a slot anyway.
        let owner = tokio::time::timeout(
            Duration::from_secs(5),
            get_ca(connect_from(addr, [127, 0, 0, 2].into(), &tls.ca_pem).await),
        )
        .await
        .expect("a connection that asks for the CA waited behind ones that ask for nothing");
        assert!(
            owner.starts_with("HTTP/1.1 200") && owner.ends_with(&tls.ca_pem),
            "{owner}"
        );
        // The oldest of them made room.
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), silent[0].read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_stalls_on_its_way_to_the_ui_is_cut_off_with_408() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::load_or_make(&dir.path().join("tls"), &[]).unwrap();
        let socket = dir.path().join("ui.sock");
        // A UI without deadlines of its own: it waits for the whole body, however long.
        let ui = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ui.accept().await {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    use http_body_util::BodyExt;
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Body::Empty))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        let files = Arc::new(FileServer::new(dir.path().to_owned(), tls.ca_pem.clone(), None).with_control_ui(socket));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, tls.server.clone(), files));

        let mut c = connect(addr, &tls.ca_pem).await;
        c.write_all(b"POST /control/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello=")
            .await
            .unwrap();
        let reply = tokio::time::timeout(CONTROL_BODY_DEADLINE * 3, async {
            let mut reply = Vec::new();
            let _ = c.read_to_end(&mut reply).await;
            String::from_utf8_lossy(&reply).into_owned()
        })
        .await
        .expect("a stalled body kept its request past the deadline");
        assert!(
            reply.starts_with("HTTP/1.1 408") && reply.contains("did not arrive within 10 s"),
            "{reply}"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=x-3", 100), Err(()));
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Err(()));
    }
}
