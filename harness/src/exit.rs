//! The exit statuses of every `nexus-hil` command, named in one place (a leaf: imports nothing
//! of the crate). CI scripts branch on them: 1 is the product's verdict, 3 the bench's.

use std::process::ExitCode;

/// How a command ended, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for ran and passed.
    Passed = 0,
    /// A scenario failed, a check found something, a regression gated, or an undo could not
    /// put a device back as it was found.
    Failed = 1,
    /// Bad arguments or a malformed file: nothing ran.
    Usage = 2,
    /// The harness or the device's surroundings failed (unreachable, no engine, a lost lease):
    /// nothing was learnt about the device.
    Infra = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statuses_are_the_documented_numbers() {
        assert_eq!(
            [Exit::Passed, Exit::Failed, Exit::Usage, Exit::Infra].map(|e| e as u8),
            [0, 1, 2, 3]
        );
    }
}
