//! A device's serial console (`[device.console]`), read for a whole run into one log file: a TCP
//! console (ser2net raw or telnet, a QEMU guest's console port) or a local serial device. When
//! the connection or the device goes away the reader reopens it and says so in the log, so the
//! log keeps everything received; a scenario's part of it is cut out by offsets.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::device::inventory::ConsoleEntry;
use crate::error::InfraError;

/// The first wait before reopening, doubled after each failed attempt up to [`MAX_BACKOFF`]. Kept
/// short: what a QEMU guest prints while nobody is connected to its console port is not sent.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lasted this long starts the backoff over; one closed at once (a ser2net
/// port someone else holds) keeps it at its longest.
const STEADY: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A console being read into its log until this is dropped.
///
/// The runner starts one per device for the run, takes [`offset`](Self::offset) when a scenario
/// starts and [`slice`](Self::slice) from it when the scenario ends.
pub struct Console {
    log: PathBuf,
    /// The log's length: what the reader has written (and any earlier content of the file).
    end: Arc<AtomicU64>,
    /// Dropping it wakes the reader, which then ends.
    stop: Option<UnixStream>,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    /// Starts reading `entry`'s console into `log` (created, or appended to) on a thread of its
    /// own, which reopens the console whenever it is lost. Fails only when the log cannot be
    /// opened: a console that cannot be reached is retried, and the log says so.
    pub fn start(entry: &ConsoleEntry, log: PathBuf) -> Result<Console, InfraError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| InfraError::io(dir.display(), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| InfraError::io(log.display(), e))?;
        let len = file.metadata().map_err(|e| InfraError::io(log.display(), e))?.len();
        let end = Arc::new(AtomicU64::new(len));
        let writer = LogFile {
            at_line_start: len == 0 || last_byte(&log, len) == Some(b'\n'),
            file,
            end: end.clone(),
            path: log.clone(),
            warned: false,
        };
        let source = match (&entry.tcp, &entry.serial) {
            (Some(addr), _) => Source::Tcp(addr.clone()),
            (None, Some(path)) => Source::Serial {
                path: path.clone(),
                baud: entry.baud,
            },
            (None, None) => {
                return Err(InfraError::Io(
                    "[device.console] names neither `tcp` nor `serial`".into(),
                ))
            }
        };
        let (stop, wake) =
            UnixStream::pair().map_err(|e| InfraError::io("cannot make the console's stop signal", e))?;
        let reader = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || follow(source, writer, wake))
            .map_err(|e| InfraError::io("cannot start the console's reader", e))?;
        Ok(Console {
            log,
            end,
            stop: Some(stop),
            reader: Some(reader),
        })
    }

    /// The log's length so far in bytes: the position a later [`slice`](Self::slice) starts at.
    pub fn offset(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// What was logged from position `from` until now, as text (invalid UTF-8 replaced).
    pub fn slice(&self, from: u64) -> String {
        let end = self.offset();
        if from >= end {
            return String::new();
        }
        let mut bytes = Vec::new();
        // The log is ours and was written a moment ago; should it be gone, there is nothing to cut.
        let _ = File::open(&self.log).and_then(|mut f| {
            f.seek(SeekFrom::Start(from))?;
            f.take(end - from).read_to_end(&mut bytes)
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Console {
    /// Stops the reader and waits for it, so the log is complete when this returns. That is at
    /// once, unless a connection attempt is under way (a few seconds at most).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The last `lines` lines of a console's `text`, for people: terminal escape sequences (the
/// colours of systemd's boot messages) and other control characters removed.
pub fn tail(text: &str, lines: usize) -> String {
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter().rev().map(printable).collect::<Vec<_>>().join("\n")
}

/// `line` without ANSI escape sequences and control characters other than tabs.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn last_byte(path: &Path, len: u64) -> Option<u8> {
    let mut b = [0u8];
    File::open(path).and_then(|f| f.read_exact_at(&mut b, len - 1)).ok()?;
    Some(b[0])
}

/// Where a console is read from.
enum Source {
    /// HOST:PORT.
    Tcp(String),
    Serial {
        path: PathBuf,
        baud: u32,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Tcp(addr) => write!(f, "tcp {addr}"),
            Source::Serial { path, baud } => write!(f, "{} at {baud} baud", path.display()),
        }
    }
}

/// An open console.
enum Conn {
    Tcp(TcpStream, Telnet),
    Serial(File),
}

impl Source {
    fn open(&self) -> io::Result<Conn> {
        match self {
            Source::Tcp(addr) => open_tcp(addr).map(|s| Conn::Tcp(s, Telnet::Unknown)),
            Source::Serial { path, baud } => open_serial(path, *baud).map(Conn::Serial),
        }
    }
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s, _) => s.as_raw_fd(),
            Conn::Serial(f) => f.as_raw_fd(),
        }
    }

    /// Reads what is there into `buf`; `Ok(None)` is the end of the stream, `Ok(Some(n))` the
    /// device's bytes at the start of `buf` (telnet's commands taken out).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let n = match self {
            Conn::Tcp(s, _) => s.read(buf)?,
            Conn::Serial(f) => f.read(buf)?,
        };
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(match self {
            Conn::Tcp(_, telnet) => telnet.decode(&mut buf[..n]),
            Conn::Serial(_) => n,
        }))
    }
}

/// Connects to HOST:PORT, non-blocking, with keepalive: a console host that vanishes without
/// closing the connection is noticed within about half a minute instead of never.
fn open_tcp(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                for (level, name, value) in [
                    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
                    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 15),
                    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5),
                    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
                ] {
                    let value: libc::c_int = value;
                    // SAFETY: an open socket of ours and a c_int option of its size.
                    let r = unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            level,
                            name,
                            (&value as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    if r != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Opens a serial device raw (no line editing, echo or newline translation) at `baud`,
/// non-blocking and without making it our controlling terminal. Bytes already waiting in the
/// driver are kept: after a reopen they are the ones that would otherwise be lost.
fn open_serial(path: &Path, baud: u32) -> io::Result<File> {
    let speed = speed(baud).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{baud} is not a baud rate the serial driver knows"),
        )
    })?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain data; every call gets our open descriptor and that struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        if libc::cfsetspeed(&mut t, speed) != 0 || libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19_200 => libc::B19200,
        38_400 => libc::B38400,
        57_600 => libc::B57600,
        115_200 => libc::B115200,
        230_400 => libc::B230400,
        460_800 => libc::B460800,
        500_000 => libc::B500000,
        576_000 => libc::B576000,
        921_600 => libc::B921600,
        1_000_000 => libc::B1000000,
        1_500_000 => libc::B1500000,
        2_000_000 => libc::B2000000,
        3_000_000 => libc::B3000000,
        4_000_000 => libc::B4000000,
        _ => return None,
    })
}

/// The log file and its length as [`Console`] reports it.
struct LogFile {
    file: File,
    end: Arc<AtomicU64>,
    path: PathBuf,
    at_line_start: bool,
    warned: bool,
}

impl LogFile {
    fn append(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else { return };
        // A File is unbuffered: once write_all returns, a reader of the log sees the bytes.
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.end.fetch_add(bytes.len() as u64, Ordering::Release);
                self.at_line_start = last == b'\n';
            }
            Err(e) => {
                // Part of it may have been written: the length is the file's.
                if let Ok(m) = self.file.metadata() {
                    self.end.store(m.len(), Ordering::Release);
                }
                if !self.warned {
                    self.warned = true;
                    tracing::warn!("cannot write the console's log {}: {e}", self.path.display());
                }
            }
        }
    }

    /// A line of the harness's own in the log, on a line of its own.
    fn mark(&mut self, what: &str) {
        let lead = if self.at_line_start { "" } else { "\n" };
        self.append(format!("{lead}[nexus-hil: {what}]\n").as_bytes());
    }
}

/// The reader: opens the console, logs what it reads, reopens it when it is lost, until `wake`
/// says stop (its other end was dropped).
fn follow(source: Source, mut log: LogFile, wake: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut backoff = MIN_BACKOFF;
    // Since when the log says the console is away.
    let mut away: Option<Instant> = None;
    loop {
        let mut conn = match source.open() {
            Ok(c) => c,
            Err(e) => {
                if away.is_none() {
                    log.mark(&format!("cannot open console {source} ({e}); retrying"));
                    away = Some(Instant::now());
                }
                if sleep(&wake, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Some(since) = away.take() {
            log.mark(&format!(
                "console reconnected after {:.1} s",
                since.elapsed().as_secs_f64()
            ));
        }
        let opened = Instant::now();
        let lost = loop {
            match ready(conn.fd(), &wake) {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => break e.to_string(),
            }
            match conn.read(&mut buf) {
                Ok(Some(n)) => log.append(&buf[..n]),
                Ok(None) => break "end of stream".to_string(),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => break e.to_string(),
            }
        };
        drop(conn);
        log.mark(&format!("console connection lost ({lost}); reconnecting"));
        away = Some(Instant::now());
        if opened.elapsed() >= STEADY {
            backoff = MIN_BACKOFF;
        }
        if sleep(&wake, backoff) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits until `fd` can be read (true) or `wake` says stop (false).
fn ready(fd: RawFd, wake: &UnixStream) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two initialised pollfds on descriptors that stay open during the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        // POLLHUP and POLLERR too: the read then tells what happened.
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

/// Waits `d` unless `wake` says stop first (true).
fn sleep(wake: &UnixStream, d: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // SAFETY: one initialised pollfd on a descriptor that stays open during the call.
        let r = unsafe { libc::poll(&mut fd, 1, left.as_millis().clamp(1, 60_000) as libc::c_int) };
        if r > 0 {
            return true;
        }
    }
}

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
/// WILL, WONT, DO, DONT: a negotiation, one option byte follows.
const NEGOTIATE: std::ops::RangeInclusive<u8> = 251..=254;
/// A subnegotiation longer than this is taken to be data after all (RFC 2217's are a few bytes).
const MAX_SUB: usize = 256;

/// Telnet's commands in a TCP console's stream (ser2net's telnet mode), taken out so the log
/// holds what the device printed. A connection is telnet when it starts with a negotiation, as
/// a telnet server's does; otherwise it is raw and every byte is kept. Nothing is answered: a
/// byte sent to a raw console would be typed into the device.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Telnet {
    /// Nothing read yet.
    Unknown,
    Raw,
    Commands(Command),
}

/// Where a telnet stream is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Command {
    /// Outside any command.
    None,
    Iac,
    /// The option byte of a negotiation comes next.
    Negotiation,
    /// Inside a subnegotiation, this many bytes so far.
    Sub(usize),
    SubIac(usize),
}

impl Telnet {
    /// Takes telnet's commands out of `buf` in place; returns how many data bytes are left.
    fn decode(&mut self, buf: &mut [u8]) -> usize {
        if *self == Telnet::Unknown {
            *self = match buf {
                [IAC] => Telnet::Commands(Command::None),
                [IAC, b, ..] if NEGOTIATE.contains(b) => Telnet::Commands(Command::None),
                _ => Telnet::Raw,
            };
        }
        let Telnet::Commands(at) = self else {
            return buf.len();
        };
        let mut kept = 0;
        for i in 0..buf.len() {
            let b = buf[i];
            let (next, keep) = match (*at, b) {
                (Command::None, IAC) => (Command::Iac, false),
                (Command::None, _) => (Command::None, true),
                (Command::Iac, IAC) => (Command::None, true),
                (Command::Iac, SB) => (Command::Sub(0), false),
                (Command::Iac, b) if NEGOTIATE.contains(&b) => (Command::Negotiation, false),
                (Command::Iac, _) | (Command::Negotiation, _) => (Command::None, false),
                (Command::Sub(n), IAC) => (Command::SubIac(n), false),
                (Command::Sub(n), _) | (Command::SubIac(n), _) if n >= MAX_SUB => (Command::None, false),
                (Command::Sub(n), _) => (Command::Sub(n + 1), false),
                (Command::SubIac(_), SE) => (Command::None, false),
                (Command::SubIac(n), _) => (Command::Sub(n + 1), false),
            };
            if keep {
                buf[kept] = b;
                kept += 1;
            }
            *at = next;
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn tcp(addr: String) -> ConsoleEntry {
        ConsoleEntry {
            tcp: Some(addr),
            serial: None,
            baud: 115_200,
        }
    }

    /// Waits until `log` holds `what`; returns the log.
    fn wait_for(log: &Path, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(what) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what:?} did not reach the log:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_tcp_console_is_logged_across_a_reconnect_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dev").join("console.log");
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let console = Console::start(&tcp(server.local_addr().unwrap().to_string()), log.clone()).unwrap();

        let (mut first, _) = server.accept().unwrap();
        first.write_all(b"U-Boot 2024.01\r\n").unwrap();
        first.write_all(b"Starting kernel ...").unwrap();
        wait_for(&log, "Starting kernel ...");
        drop(first);

        let (mut second, _) = server.accept().unwrap();
        wait_for(&log, "reconnected");
        let from = console.offset();
        second.write_all(b"[    0.000000] Booting Linux\n").unwrap();
        second.write_all(b"nexus login: ").unwrap();
        let text = wait_for(&log, "nexus login: ");

        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "U-Boot 2024.01\r", "bytes are kept as they came");
        assert_eq!(lines[1], "Starting kernel ...", "the marker starts a line of its own");
        assert_eq!(
            lines[2],
            "[nexus-hil: console connection lost (end of stream); reconnecting]"
        );
        assert!(
            lines[3].starts_with("[nexus-hil: console reconnected after ") && lines[3].ends_with(" s]"),
            "{text}"
        );
        assert_eq!(&lines[4..], ["[    0.000000] Booting Linux", "nexus login: "]);
        assert_eq!(console.offset(), text.len() as u64);
        assert_eq!(console.slice(from), "[    0.000000] Booting Linux\nnexus login: ");

        // Dropping it closes the connection: the console's port is free for someone else.
        drop(console);
        second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(second.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn a_console_not_there_yet_is_retried_and_the_log_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "an earlier run").unwrap();
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let console = Console::start(&tcp(addr.to_string()), log.clone()).unwrap();
        wait_for(&log, "retrying");

        let server = TcpListener::bind(addr).unwrap();
        let (mut conn, _) = server.accept().unwrap();
        conn.write_all(b"hello\n").unwrap();
        let text = wait_for(&log, "hello\n");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "an earlier run");
        assert!(
            lines[1].starts_with(&format!("[nexus-hil: cannot open console tcp {addr} (")),
            "{text}"
        );
        assert!(lines[2].starts_with("[nexus-hil: console reconnected after "), "{text}");
        assert_eq!(lines[3], "hello");
        // Offsets are positions in the log, earlier content included.
        assert_eq!(console.offset(), text.len() as u64);
        assert_eq!(console.slice(14), text[14..]);
    }

    #[test]
    fn a_serial_device_is_read_raw_at_its_baud_rate() {
        let (mut master, slave, path) = pty();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let entry = ConsoleEntry {
            tcp: None,
            serial: Some(path),
            baud: 57_600,
        };
        let console = Console::start(&entry, log.clone()).unwrap();
        // The console sets the line up when it opens it: wait for its speed.
        let deadline = Instant::now() + Duration::from_secs(10);
        let t = loop {
            let t = termios(&slave);
            // SAFETY: a termios read from the pty.
            if unsafe { libc::cfgetispeed(&t) } == libc::B57600 {
                break t;
            }
            assert!(Instant::now() < deadline, "the console did not set 57600 baud");
            std::thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::cfgetospeed(&t) }, libc::B57600);
        assert_eq!(
            t.c_lflag & (libc::ICANON | libc::ECHO),
            0,
            "raw: no line editing, no echo"
        );

        // Raw: carriage returns stay, and a line without its newline arrives at once.
        master
            .write_all(b"Hit any key to stop autoboot:  2 \x08\x08\x081 \r\n")
            .unwrap();
        master.write_all(b"=> ").unwrap();
        let text = wait_for(&log, "=> ");
        assert_eq!(text, "Hit any key to stop autoboot:  2 \x08\x08\x081 \r\n=> ");
        assert_eq!(console.slice(0), text);
        drop(console);
    }

    /// A pty: its master as a file, its slave's descriptor and path.
    fn pty() -> (File, OwnedFd, PathBuf) {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty fills two descriptors; no name buffer, default termios and size.
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(r, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: both were just opened and are owned by nobody else.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let path = std::fs::read_link(format!("/proc/self/fd/{s}")).unwrap();
        (master, slave, path)
    }

    fn termios(fd: &OwnedFd) -> libc::termios {
        // SAFETY: termios is plain data, filled by tcgetattr on an open tty.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
            t
        }
    }

    #[test]
    fn telnet_commands_are_taken_out_and_raw_bytes_kept() {
        let mut stream: Vec<u8> = vec![IAC, 251, 1, IAC, 253, 3, b'o', b'k', IAC, IAC, b' '];
        stream.extend([IAC, SB, 44, 1, 0, 0, IAC, IAC, IAC, SE, b'!']);
        // Any split across reads decodes the same.
        for cut in 1..stream.len() {
            let mut t = Telnet::Unknown;
            let (mut a, mut b) = (stream[..cut].to_vec(), stream[cut..].to_vec());
            let (na, nb) = (t.decode(&mut a), t.decode(&mut b));
            let out = [&a[..na], &b[..nb]].concat();
            assert_eq!(out, b"ok\xff !", "cut at {cut}");
        }
        // A raw console's 0xFF (noise at the wrong baud rate) is data.
        let mut raw = vec![IAC, b'x', IAC, SB, b'y'];
        let mut t = Telnet::Unknown;
        assert_eq!(t.decode(&mut raw), 5);
    }

    #[test]
    fn tail_keeps_the_last_lines_without_terminal_escapes() {
        let text = "one\r\ntwo\n[\u{1b}[0;32m  OK  \u{1b}[0m] Started \u{1b}]0;title\u{7}nexus-backupd.\r\nfour";
        assert_eq!(tail(text, 2), "[  OK  ] Started nexus-backupd.\nfour");
        assert_eq!(tail(text, 10).lines().count(), 4);
        assert_eq!(tail("", 40), "");
    }
}
