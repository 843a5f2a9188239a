//! `nexus-harness`: the `nexus-hil` tool.
//!
//! [`image`] builds the emulator image and [`sdcard`] the SD-card image it boots with;
//! [`emulator`] runs them in the container engine found by [`engine`]; [`standin`] boots the
//! same system built for arm64 in qemu, reached like hardware over SSH and HTTPS only.
//! Infrastructure failures are [`error::InfraError`]s, kept apart from test failures.

pub mod conform;
pub mod dbus;
pub mod emulator;
pub mod engine;
pub mod error;
pub mod html;
pub mod https;
pub mod image;
pub mod inventory;
pub mod provision;
pub mod report;
pub mod run;
pub mod runner;
pub use nexus_scenario as scenario;
pub mod sdcard;
pub mod ssh;
pub mod standin;
pub mod tree;
