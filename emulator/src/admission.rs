//! Who may hold a connection of the HTTPS server, and for how long: the cap per client, the
//! Control UI's own budget of slots (so downloads of backups and the CA always have room), and
//! the deadlines on what is forwarded to the UI. [`crate::https`] applies them.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

/// Connections served at once. Each costs a TLS session and buffers (~100 KiB); 256 fit the
/// device's memory with room to spare. A new one beyond takes an idle one's place, or waits in
/// the listen queue when all are busy serving.
pub const MAX_CONNECTIONS: usize = 256;
/// Of those, how many may be busy below `/control/` at once. The UI is one admin's browser (a
/// handful of connections); the other 192 are left for downloads, which are what the device
/// is for, whatever anyone sends to the UI.
pub const CONTROL_SLOTS: usize = 64;
/// Connections one client (an IPv4 address, or an IPv6 /64, which one host can fill with
/// addresses) may have open at once. A browser opens 6 per host and a download manager up to
/// 16; 32 is room for both, and one client can take at most an eighth of the slots. At the cap
/// an idle connection of the client makes room for its new one ([`Clients`]).
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// A request body below `/control/` must have arrived within this, whatever the UI does with
/// it (the UI has shorter deadlines of its own for its forms): a browser sends a form in well
/// under a second, so a body missing after 10 s is a stalled client holding a slot.
pub const CONTROL_BODY_DEADLINE: Duration = Duration::from_secs(10);
/// A request below `/control/` from its start to the end of its answer. The UI's slowest answer
/// (a backup start: a D-Bus call that polkit judges) takes well under 10 s on the device. Not for
/// the progress stream, which ends with its session, nor for downloads, which are large and
/// are cut by the write timeout when their client stops reading.
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(60);
/// Connections being told that their client is over its cap; beyond these they are closed
/// without a word, so refusing costs no more than this many tasks.
pub const REFUSAL_SLOTS: usize = 16;
/// How long telling one takes at most: its handshake, its request and the 429.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(5);
/// How long a connection must have been idle before it is closed for another client's new one
/// when the server is full. A client on the LAN finishes its handshake and sends its request
/// within milliseconds, on poor Wi-Fi still well within this; so a burst of genuine new
/// connections never displaces itself, while ones that ask for nothing do make room.
pub const IDLE_GRACE: Duration = Duration::from_secs(2);
/// At most one warning per this long about refused or displaced connections, with the count of
/// the others, so a flood does not wear out the SD card through the journal.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open connections of each client, to keep each at or below its cap.
///
/// A client at its cap that opens another connection gets it when one of its others is idle
/// (in its handshake, waiting for a request, or between requests): its oldest idle one is
/// closed for it. Only when all are busy serving is the new one refused. So hostile
/// connections from an address never lock out a client at the same address that asks for
/// something (a scenario's own download beside its `http.hold`s, users behind one NAT). In the
/// same way, when every slot of the server is taken, the connection of any client idle longest
/// (at least [`IDLE_GRACE`]) makes room ([`Clients::make_room_for`]). A request that starts just as its connection is
/// picked is cut off, as when a server closes a keep-alive connection; clients retry those.
#[derive(Debug, Default)]
pub struct Clients {
    open: Mutex<HashMap<IpAddr, Vec<Arc<Connection>>>>,
}

/// One open connection as its client's count sees it.
#[derive(Debug)]
struct Connection {
    /// Since when it serves nothing: opened, or its last answer sent.
    idle_since: Mutex<Instant>,
    /// Requests being served on it (answers not yet sent).
    busy: AtomicUsize,
    /// Told when it is closed to make room for a newer connection.
    evict: tokio::sync::Notify,
}

/// One admitted connection of a client; counted until dropped.
#[derive(Debug)]
pub struct ClientSlot {
    clients: Arc<Clients>,
    key: IpAddr,
    conn: Arc<Connection>,
    /// Whether another connection of its client was closed to admit it.
    made_room: bool,
}

/// Held while a request of a connection is served; the connection is not idle meanwhile.
#[derive(Debug)]
pub struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

impl Clients {
    /// Counts a new connection from `ip`. At the client's `cap`, the one of its connections
    /// idle longest is closed to make room; `None` when all `cap` are busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let key = client_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let conns = open.entry(key).or_default();
        let made_room = conns.len() >= cap;
        if made_room {
            let idle = idle_longest(conns, None, Duration::ZERO)?;
            // notify_one keeps the word for a connection not yet waiting for it.
            conns.swap_remove(idle).evict.notify_one();
        }
        let conn = Arc::new(Connection {
            idle_since: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            evict: tokio::sync::Notify::new(),
        });
        conns.push(conn.clone());
        Some(ClientSlot {
            clients: self.clone(),
            key,
            conn,
            made_room,
        })
    }

    /// Closes the connection of any client but `new` that has been idle longest, at least
    /// [`IDLE_GRACE`], to free a slot for `new` when all are taken; where it came from, or
    /// `None` when no other connection has been idle that long.
    pub fn make_room_for(&self, new: &ClientSlot) -> Option<IpAddr> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (key, i) = open
            .iter()
            .filter_map(|(key, conns)| {
                let i = idle_longest(conns, Some(&new.conn), IDLE_GRACE)?;
                Some((*key, i, idle_since(&conns[i])))
            })
            .min_by_key(|(_, _, since)| *since)
            .map(|(key, i, _)| (key, i))?;
        let conns = open.get_mut(&key)?;
        conns.swap_remove(i).evict.notify_one();
        if conns.is_empty() {
            open.remove(&key);
        }
        Some(key)
    }
}

/// The connection in `conns` that has served nothing for longest, at least `for_at_least`;
/// never `except`.
fn idle_longest(conns: &[Arc<Connection>], except: Option<&Arc<Connection>>, for_at_least: Duration) -> Option<usize> {
    let now = Instant::now();
    conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0 && !except.is_some_and(|e| Arc::ptr_eq(c, e)))
        .map(|(i, c)| (i, idle_since(c)))
        .filter(|(_, since)| now.duration_since(*since) >= for_at_least)
        .min_by_key(|(_, since)| *since)
        .map(|(i, _)| i)
}

fn idle_since(c: &Connection) -> Instant {
    *c.idle_since.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientSlot {
    /// Whether another connection of its client was closed to admit it.
    pub fn made_room(&self) -> bool {
        self.made_room
    }

    /// A handle for the connection's requests to mark it busy.
    pub fn busy_marker(&self) -> BusyMarker {
        BusyMarker(self.conn.clone())
    }

    /// Returns when the connection was picked to close for a newer one.
    pub async fn evicted(&self) {
        self.conn.evict.notified().await
    }
}

/// Marks a connection busy while one of its requests is served.
#[derive(Debug, Clone)]
pub struct BusyMarker(Arc<Connection>);

impl BusyMarker {
    /// Busy until the guard is dropped (with the request's answer).
    pub fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = open.get_mut(&self.key) {
            conns.retain(|c| !Arc::ptr_eq(c, &self.conn));
            if conns.is_empty() {
                open.remove(&self.key);
            }
        }
    }
}

/// The client an address belongs to: the IPv4 address itself (also when mapped into IPv6), or
/// the /64 of an IPv6 address.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Warnings that say what happened once per [`WARN_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
pub struct QuietWarnings {
    last: Mutex<Option<Instant>>,
    held_back: AtomicUsize,
}

impl QuietWarnings {
    /// Logs `what` at warn level, or counts it when one was logged less than [`WARN_EVERY`] ago.
    pub fn warn(&self, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{what}");
            return;
        }
        *last = Some(now);
        let held_back = self.held_back.swap(0, Ordering::Relaxed);
        tracing::warn!(more_since_last_warning = held_back, "{what}");
    }
}

const BODY_RUNNING: u8 = 0;
const BODY_DONE: u8 = 1;
const BODY_LATE: u8 = 2;

/// How a forwarded request body ended, seen after the Control UI answered.
#[derive(Debug, Clone)]
pub struct BodyProgress(Arc<AtomicU8>);

impl BodyProgress {
    /// The whole body went through.
    pub fn done(&self) -> bool {
        self.0.load(Ordering::Acquire) == BODY_DONE
    }

    /// It was cut off at its deadline.
    pub fn late(&self) -> bool {
        self.0.load(Ordering::Acquire) == BODY_LATE
    }
}

/// A client's request body on its way to the Control UI: fails with `TimedOut` when it has not
/// all arrived by its deadline, and keeps the request's slot of the UI's budget while it lives
/// (a body still being read keeps its connection busy, even after the answer).
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    progress: BodyProgress,
    _slot: Arc<OwnedSemaphorePermit>,
}

impl DeadlineBody {
    pub fn new(inner: Incoming, limit: Duration, slot: Arc<OwnedSemaphorePermit>) -> (Self, BodyProgress) {
        let state = if hyper::body::Body::is_end_stream(&inner) {
            BODY_DONE
        } else {
            BODY_RUNNING
        };
        let progress = BodyProgress(Arc::new(AtomicU8::new(state)));
        let body = Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            progress: progress.clone(),
            _slot: slot,
        };
        (body, progress)
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.is_none() || hyper::body::Body::is_end_stream(&self.inner) {
                self.progress.0.store(BODY_DONE, Ordering::Release);
            }
            return Poll::Ready(frame.map(|r| r.map_err(io::Error::other)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.progress.0.store(BODY_LATE, Ordering::Release);
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the request body did not arrive within {:?}", self.limit),
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// An answer on its way to the client, holding what its request holds until it has been sent:
/// a slot of the Control UI's budget, or its connection's [`Busy`] mark. Fails with `TimedOut`
/// (closing the connection) when it is still going at its deadline, if it has one.
pub struct HeldAnswer {
    pub(crate) inner: Box<crate::https::Body>,
    deadline: Option<Pin<Box<Sleep>>>,
    _held: Held,
}

/// What an answer holds until it has been sent.
pub enum Held {
    ControlSlot(Arc<OwnedSemaphorePermit>),
    Busy(Busy),
}

impl HeldAnswer {
    pub fn new(inner: crate::https::Body, deadline: Option<tokio::time::Instant>, held: Held) -> Self {
        Self {
            inner: Box::new(inner),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            _held: held,
        }
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Poll::Ready(frame) = hyper::body::Body::poll_frame(Pin::new(&mut *self.inner), cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                tracing::info!("a Control UI answer still going after {CONTROL_DEADLINE:?} was cut off");
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the Control UI's answer took longer than {CONTROL_DEADLINE:?}"),
                ))))
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("192.168.1.7")), ip("192.168.1.7"));
        assert_eq!(client_of(ip("::ffff:192.168.1.7")), ip("192.168.1.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn at_its_cap_a_client_gets_room_from_its_longest_idle_connection_or_none() {
        let clients = Arc::new(Clients::default());
        let a = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| clients.admit(a, 3).expect("below the cap")).collect();
        let _busy: Vec<_> = slots[1..].iter().map(|s| s.busy_marker().busy()).collect();
        // The fourth closes the only idle one, the first.
        let fourth = clients.admit(a, 3).expect("the idle one makes room");
        let evicted = futures_util::FutureExt::now_or_never(slots[0].evicted());
        assert!(evicted.is_some(), "the idle connection was not told to close");
        // All three open ones busy: a fifth is refused; another client is not affected.
        let _also_busy = fourth.busy_marker().busy();
        assert!(clients.admit(a, 3).is_none(), "a connection over the cap was admitted");
        assert!(clients.admit("10.0.0.2".parse().unwrap(), 3).is_some());
        // A connection that ends gives its place back.
        drop(slots);
        assert!(clients.admit(a, 3).is_some());
    }
}
