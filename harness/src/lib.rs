//! `nexus-harness`: the `nexus-hil` tool. Imports only point down this list:
//!
//! - [`cmd`]: one module per command (arguments and dispatch only).
//! - [`conform`], [`provision`]: the contract checks and the provisioning scripts.
//! - [`runner`]: runs scenarios (and shares a suite out among devices); [`crash_states`]:
//!   an operation recorded on a card whose writes are logged, and the card checked at each of
//!   its flush points; [`steps`]: what each step does, one module per family; [`session`]: one
//!   scenario's hold on its device.
//! - [`report`]: the result model and its formats (JSON, JUnit, terminal, HTML); [`history`]:
//!   measurements over commits and where they changed.
//! - [`device`]: the kinds of device (container emulator, arm64 stand-in, real devices), how
//!   each is opened, and the lifecycle through which faults are injected.
//! - [`image`]: the images (container, stand-in, SD card) those devices boot; [`engine`]: the
//!   container engine.
//! - [`transport`]: SSH, D-Bus over SSH, HTTPS; [`browser`]: headless Chromium driven over
//!   WebDriver; [`crash`]: a guest's disk rebuilt from its write log; [`cache`], [`error`]: leaves.
//!
//! The device's names (bus names, actions, errors, paths, the probe's output) come from
//! `nexus_contract`; scenario files from `nexus_scenario`. Infrastructure failures are
//! [`error::InfraError`]s, kept apart from test failures; [`exit::Exit`] names every exit status.
//!
//! Modules are `pub(crate)`; what `main.rs` and the integration tests use is public, as a module
//! they name or re-exported at the room's top (ARCHITECTURE.md lists what each room offers).
//! Each room fails with one `thiserror` enum whose variants are the kinds of failure a caller
//! branches on (`transport::Error`, `browser::Error`, `steps::StepEnd`, `history::Error`, ...);
//! its message names what failed and what to do next.

pub mod bench;
pub mod browser;
pub(crate) mod cache;
pub mod cmd;
pub(crate) mod conform;
pub(crate) mod crash;
pub mod crash_states;
pub mod device;
pub(crate) mod engine;
pub mod error;
pub mod exit;
pub mod history;
pub mod image;
pub(crate) mod provision;
pub mod report;
pub mod runner;
pub(crate) mod session;
pub(crate) mod steps;
pub mod transport;
pub use nexus_scenario as scenario;
