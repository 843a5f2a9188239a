//! The `nexus-hil` commands: each module holds one command's arguments and dispatches to the
//! library; [`args`] holds the target flags that `run`, `conform` and `provision` share.

pub(crate) mod args;
pub mod conform;
pub mod crash_states;
pub mod emulator;
pub mod flash;
pub mod health;
pub mod history;
pub mod provision;
pub mod report;
pub mod run;
pub mod steps;

/// A seed for a run's random draws when none is given: from the clock (the report names it).
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        % 1_000_000
}

/// How the commands speak to people: one line on stderr.
pub fn say(msg: &str) {
    eprintln!("nexus-hil: {msg}");
}
