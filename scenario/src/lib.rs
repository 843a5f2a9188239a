//! `nexus-scenario`: scenario files of nexus-hil, the model and loading with checks whose errors
//! point at `file:line:column`. The format is documented in `scenarios/README.md`.
//!
//! `load` reads a file into a [`Scenario`]: serde builds the [`Step`]s declared in `steps` (one
//! table line and one struct per step), `duration` turns every duration into a `Duration` on the
//! way and `size` every size into bytes, and `check` then applies the rules across steps
//! (variables from `vars`, with `${...}` read by `vars`). Every mistake becomes a
//! [`ScenarioError`] (`error`).

mod check;
mod duration;
mod error;
mod load;
mod size;
mod steps;
mod vars;

pub use duration::parse_duration;
pub use error::ScenarioError;
pub use load::{discover, Need, Scenario, EMULATOR_ONLY, PORTABLE};
pub use size::{parse_size, show_size};
pub use steps::*;
pub use vars::{references, ITERATION, SEED};
