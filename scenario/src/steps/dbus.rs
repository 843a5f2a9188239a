//! Steps on the device's system bus: a method call of `tech.noreya.*`, and waiting for a backup
//! through `Backup1.Status`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Call a method of `tech.noreya.*` on the device's system bus as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbusCall {
    #[serde(rename = "as")]
    pub user: String,
    pub service: String,
    pub method: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The reply's first value must render as this.
    pub expect: Option<String>,
    /// For a dictionary reply (like Status): these keys must have these values.
    #[serde(default)]
    pub expect_fields: BTreeMap<String, String>,
    /// For a dictionary reply: these keys' values must contain these texts.
    #[serde(default)]
    pub expect_fields_contain: BTreeMap<String, String>,
    /// The whole reply must not contain any of these texts (e.g. a description that a refused
    /// call would have made); works on a device that holds other data too.
    #[serde(default)]
    pub expect_not_contains: Vec<String>,
    /// The call must fail with this D-Bus error name.
    pub expect_error: Option<String>,
    /// ...and its message must contain this.
    pub expect_error_contains: Option<String>,
    /// Store the reply's first value in this variable...
    pub capture: Option<String>,
    /// ...or the part of it this JSON pointer names (e.g. `/0/sha256` of a GetList reply).
    pub capture_pointer: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for DbusCall {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.user.as_str(), &self.service, &self.method];
        t.extend(self.args.iter().map(String::as_str));
        t.extend(opt(&self.expect));
        t.extend(self.expect_fields.values().map(String::as_str));
        t.extend(self.expect_fields_contain.values().map(String::as_str));
        t.extend(self.expect_not_contains.iter().map(String::as_str));
        t
    }

    fn captures(&self) -> Option<&str> {
        self.capture.as_deref()
    }

    fn check(&self) -> Result<(), String> {
        if (self.expect.is_some() || !self.expect_fields.is_empty()) && self.expect_error.is_some() {
            return Err("give `expect`/`expect_fields` or `expect_error`, not both".into());
        }
        if self.capture_pointer.is_some() && self.capture.is_none() {
            return Err("`capture_pointer` needs `capture` (the variable to store the value in)".into());
        }
        if !self.service.starts_with("tech.noreya.") {
            return Err(format!(
                "service {:?} is not one of the device's (tech.noreya.*)",
                self.service
            ));
        }
        Ok(())
    }
}

/// Poll `Backup1.Status` like the vendor's client until the backup of `id` is over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupWait {
    #[serde(rename = "as")]
    pub user: String,
    pub id: String,
    /// `last_result` must then be this (default `ok`); `any` accepts every result.
    pub expect_result: Option<String>,
    /// The most bytes the card may receive per byte of the backup file (e.g. 1.10); the step
    /// fails above it. Measured always; this makes it a verdict.
    pub max_write_ratio: Option<f64>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BackupWait {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.id]
    }

    fn check(&self) -> Result<(), String> {
        match self.max_write_ratio {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                Err(format!("max_write_ratio {r} must be a number above 0, e.g. 1.10"))
            }
            _ => Ok(()),
        }
    }
}
