//! The one step that holds steps: `repeat`, whose inner steps are checked by `check` with
//! `${iteration}` known.

use std::time::Duration;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::{Step, StepSpec};
use crate::duration;

/// Runs `steps` `times` times in a row; inside them `${iteration}` is the round (1-based).
/// Fails at the first step that fails, naming the round.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub times: u32,
    pub steps: Vec<Spanned<Step>>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for Repeat {
    fn check(&self) -> Result<(), String> {
        if self.times == 0 || self.steps.is_empty() {
            return Err("give `times` (at least 1) and some `steps`".into());
        }
        Ok(())
    }
}
