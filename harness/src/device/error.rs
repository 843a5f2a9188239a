//! What can go wrong in this room: a `--target` or an inventory a person got wrong (nothing ran:
//! exit 2), or the device's surroundings (the engine, an image, qemu, the network: exit 3).

use std::path::PathBuf;

use crate::error::InfraError;
use crate::exit::Exit;

/// Why a device could not be named, prepared, started or reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--target` names no kind of device and no `ssh://USER@HOST[:PORT]`.
    #[error("--target {target:?}: {why}")]
    BadTarget { target: String, why: String },
    /// An inventory (targets.toml) that cannot be read or has a mistake.
    #[error("{}: {why}", path.display())]
    Inventory { path: PathBuf, why: String },
    /// The engine, an image, qemu or the device's network failed.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl Error {
    /// The exit status it means: a mistake in the arguments or a file (2), else the bench's (3).
    pub fn exit(&self) -> Exit {
        match self {
            Error::BadTarget { .. } | Error::Inventory { .. } => Exit::Usage,
            Error::Infra(_) => Exit::Infra,
        }
    }
}

impl From<Error> for InfraError {
    fn from(e: Error) -> Self {
        match e {
            Error::Infra(e) => e,
            other => InfraError::Io(other.to_string()),
        }
    }
}
