//! The daemon's one error type. Each variant is one D-Bus error name of the contract, and every
//! message says what to do next.

use nexus_contract::names::error;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

/// Errors a caller of `tech.noreya.Snapshot1` or `tech.noreya.Backup1` can get.
#[derive(Debug, thiserror::Error)]
pub enum NexusError {
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NoSuchSnapshot(String),
    #[error("{0}")]
    NoSuchBackup(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    InvalidPassword(String),
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    #[error("{0}")]
    InvalidArgs(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`; the message names the polkit action.
    #[error("{0}")]
    AccessDenied(String),
    /// `org.freedesktop.DBus.Error.Failed`: the device itself failed (I/O, btrfs).
    #[error("{0}")]
    Failed(String),
}

impl NexusError {
    /// The D-Bus error name of this error.
    pub fn dbus_name(&self) -> &'static str {
        match self {
            Self::Busy(_) => error::BUSY,
            Self::NoSuchSnapshot(_) => error::NO_SUCH_SNAPSHOT,
            Self::NoSuchBackup(_) => error::NO_SUCH_BACKUP,
            Self::InUse(_) => error::IN_USE,
            Self::NotRunning(_) => error::NOT_RUNNING,
            Self::NoSpace(_) => error::NO_SPACE,
            Self::Exists(_) => error::EXISTS,
            Self::InvalidPassword(_) => error::INVALID_PASSWORD,
            Self::InvalidArgs(_) => error::INVALID_ARGS,
            Self::AccessDenied(_) => error::ACCESS_DENIED,
            Self::Failed(_) => "org.freedesktop.DBus.Error.Failed",
        }
    }

    /// An I/O failure: ENOSPC becomes `NoSpace`, anything else `Failed`, both naming `what`; an
    /// I/O error of the card (EIO, or the file system it made read-only) says so.
    pub fn io(what: &str, err: &std::io::Error) -> Self {
        if err.raw_os_error() == Some(libc::ENOSPC) {
            Self::NoSpace(format!(
                "{what}: no space left on /broot; delete old backups or snapshots and try again"
            ))
        } else if err.raw_os_error() == Some(libc::EIO) {
            Self::Failed(format!(
                "{what}: the SD card reported an I/O error ({err}); the card may be failing: check the kernel log \
                 (dmesg) and copy the backups off the device"
            ))
        } else if err.raw_os_error() == Some(libc::EROFS) {
            Self::Failed(format!(
                "{what}: the SD card's file system is read-only ({err}; btrfs makes it so after an I/O error of the \
                 card): restart the device and check the card (dmesg)"
            ))
        } else {
            Self::Failed(format!("{what}: {err}; see the nexus-backupd journal"))
        }
    }
}

impl zbus::DBusError for NexusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.to_string(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.dbus_name())
    }

    fn description(&self) -> Option<&str> {
        match self {
            Self::Busy(m)
            | Self::NoSuchSnapshot(m)
            | Self::NoSuchBackup(m)
            | Self::InUse(m)
            | Self::NotRunning(m)
            | Self::NoSpace(m)
            | Self::Exists(m)
            | Self::InvalidPassword(m)
            | Self::InvalidArgs(m)
            | Self::AccessDenied(m)
            | Self::Failed(m) => Some(m),
        }
    }
}

/// Results of the daemon's D-Bus facing operations.
pub type NexusResult<T> = Result<T, NexusError>;
