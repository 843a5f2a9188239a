//! The `nexus-hil` commands: each module holds one command's arguments and dispatches to the
//! library; [`args`] holds the target flags that `run`, `conform` and `provision` share.

pub mod args;
pub mod conform;
pub mod crash_states;
pub mod emulator;
pub mod provision;
pub mod report;
pub mod run;

/// How the commands speak to people: one line on stderr.
pub fn say(msg: &str) {
    eprintln!("nexus-hil: {msg}");
}
