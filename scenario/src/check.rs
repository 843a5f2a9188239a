//! Checks that need more than one step: variables known where they are used, files named by
//! `source` next to the scenario, and the steps inside `repeat`.

use std::collections::BTreeSet;
use std::path::Path;

use marked_yaml::Spanned;

use crate::vars::{references, ITERATION};
use crate::{ScenarioError, Step};

/// Checks one scenario's steps, for errors naming `file`.
pub(crate) struct Checker<'a> {
    pub file: &'a str,
    /// The folder the scenario's `source` files are in.
    pub dir: &'a Path,
}

impl Checker<'_> {
    /// Checks steps in order: variables known where used, each step's own rules, files named by
    /// `source`, inner steps; `defined` grows with every capture.
    pub fn steps(&self, steps: &[Spanned<Step>], defined: &mut BTreeSet<String>) -> Result<(), ScenarioError> {
        for step in steps {
            let kind = step.kind();
            let fail = |message: String| ScenarioError::at(self.file, step.span(), format!("{kind}: {message}"));
            if let Some(name) = step
                .texts()
                .into_iter()
                .flat_map(references)
                .find(|n| !defined.contains(*n))
            {
                let known: Vec<&str> = defined.iter().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(fail(format!(
                    "unknown variable ${{{name}}}; define it under `vars:` or capture it in an earlier step (known here: {known})"
                )));
            }
            step.check().map_err(fail)?;
            if let Some(src) = step.source() {
                let full = self.dir.join(src);
                if !full.is_file() {
                    return Err(fail(format!("source {} does not exist", full.display())));
                }
            }
            if let Step::Repeat(r) = &**step {
                let fresh = defined.insert(ITERATION.to_string());
                self.steps(&r.steps, defined)?;
                if fresh {
                    defined.remove(ITERATION);
                }
            }
            if let Some(v) = step.captures() {
                defined.insert(v.to_string());
            }
        }
        Ok(())
    }
}
