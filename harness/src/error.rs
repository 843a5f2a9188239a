//! Errors of the harness: infrastructure failures (engine, image, device unreachable) are kept
//! apart from test failures, in every report.

/// Something around the tests failed, not a test: the run cannot say anything about the device.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// No container engine, or it refused (Podman's or Docker's socket).
    #[error("container engine: {0}")]
    Engine(String),
    /// The emulator's or the stand-in's image could not be built.
    #[error("image build: {0}")]
    Image(String),
    /// The SD card's image or template could not be made, copied or mounted.
    #[error("SD-card image: {0}")]
    SdCard(String),
    /// An emulator (container or stand-in) did not start or come up.
    #[error("emulator: {0}")]
    Emulator(String),
    /// The device could not be reached or logged in to.
    #[error("device unreachable: {0}")]
    Unreachable(String),
    /// A file or folder of this machine (the message names it).
    #[error("{0}")]
    Io(String),
}

impl InfraError {
    pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Io(format!("{what}: {e}"))
    }
}
