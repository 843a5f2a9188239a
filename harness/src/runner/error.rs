//! What the runner says went wrong, apart from a scenario's own verdict: a run stopped before
//! its first scenario (with the exit status it means), a scenario that could not run or whose
//! network cut did not take, and a `--partition` that is not K/N.

use crate::bench::lock::LockError;
use crate::exit::Exit;

/// Why the runner could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another run holds a device, or its lock could not be read or written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// What an earlier run left recorded on a device could not be undone.
    #[error("{device}: what an earlier run left could not be undone, so nothing ran: {why}")]
    Leftovers {
        device: String,
        why: String,
        unreachable: bool,
    },
    /// A device failed a health check.
    #[error("{0}")]
    Unhealthy(String),
    /// The scenario's changes cannot be recorded on the real device, so it did not run.
    #[error("cannot write the record of the scenario's changes in {dir} on the device, so it did not run: {why}")]
    CannotRecord { dir: &'static str, why: String },
    /// The device could not be asked (the scenario's record or its checks).
    #[error("{0}")]
    Unreachable(String),
    /// A network cut that did not freeze the device, or did not let it go in time.
    #[error("network cut {n}: {why}")]
    Cut { n: usize, why: String },
    /// `--partition` is not K/N with 1 <= K <= N.
    #[error("{given:?}: {why}")]
    Partition { given: String, why: String },
}

impl Error {
    /// The exit status it means: the device not as its owner had it is a failure (1); an
    /// unreachable device, another run holding it, or an unhealthy bench, the bench's (3); a
    /// bad `--partition`, a usage error (2).
    pub fn exit(&self) -> Exit {
        match self {
            Error::Leftovers { unreachable: false, .. } | Error::Cut { .. } => Exit::Failed,
            Error::Partition { .. } => Exit::Usage,
            _ => Exit::Infra,
        }
    }
}
