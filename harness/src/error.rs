//! Errors of the harness: infrastructure failures (engine, image, device unreachable) are kept
//! apart from test failures, in every report.

/// Something around the tests failed, not a test: the run cannot say anything about the device.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("container engine: {0}")]
    Engine(String),
    #[error("image build: {0}")]
    Image(String),
    #[error("SD-card image: {0}")]
    SdCard(String),
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("device unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Io(String),
}

impl InfraError {
    pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Io(format!("{what}: {e}"))
    }
}
