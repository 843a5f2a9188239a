//! How the harness reaches a device, and nothing else: [`ssh`] (OpenSSH as the device's users
//! use it), [`dbus`] (zbus over `ssh ... systemd-stdio-bridge`, so polkit judges the scenario's
//! user) and [`https`] (rustls with the device's CA pinned on first use). Leaf modules: they know
//! no scenario, step or target. Each fails with [`Error`], whose variant is the kind of failure
//! (a changed CA is [`Error::Pin`]).

pub(crate) mod dbus;
pub mod https;
pub mod ssh;

/// What reaching the device failed on. Each message names the thing and, where there is one,
/// the next step; the variants say which kind of failure it was, for a caller that branches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local program (ssh, scp, rsync, a bench's command line) could not be started or
    /// waited for.
    #[error("{0}")]
    Program(String),
    /// A program or a request did not finish within its time limit and was stopped.
    #[error("{0}")]
    TimedOut(String),
    /// A program stopped reading its standard input before the end (a dropped connection).
    #[error("{0}")]
    ShortInput(String),
    /// No D-Bus connection to the device as the user.
    #[error("{0}")]
    Bus(String),
    /// The device's introspection lacks or garbles what a call needs.
    #[error("{0}")]
    Introspection(String),
    /// A scenario's argument does not fit the D-Bus type the device declares.
    #[error("{0}")]
    Argument(String),
    /// The device's HTTPS endpoint could not be reached, or TLS with it failed.
    #[error("{0}")]
    Connect(String),
    /// The device's CA is not the one pinned or named in the inventory (reset, or another
    /// device); the message says which file to delete or which fingerprint to put in.
    #[error("{0}")]
    Pin(String),
    /// An HTTPS request failed after its connection was made (broke off, stalled).
    #[error("{0}")]
    Request(String),
    /// A local file (the pinned CA, a download) could not be read or written.
    #[error("{0}")]
    File(String),
}
