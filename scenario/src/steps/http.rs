//! Steps against the device's HTTPS server: one request, and connections held open to see
//! whether others are still served.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// GET a path over HTTPS, the device's CA pinned on first use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    pub path: String,
    /// `GET` (default), `HEAD`, or any other method to see it refused.
    pub method: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Local file (in the scenario's work folder) to save the body in.
    pub save: Option<String>,
    pub range: Option<String>,
    /// Expected status (default 200).
    pub expect_status: Option<u16>,
    /// The body's SHA-256 must be this.
    pub expect_sha256: Option<String>,
    /// When the transfer breaks off or stalls (3 s without data), reconnect and ask for the
    /// rest with a Range request, until the step's timeout (needs `save`).
    #[serde(default)]
    pub resume: bool,
    /// The transfer must have met a network cut (a `fault.cut_network` froze the device while
    /// it was in flight) and resumed: proof that the fault happened where it was meant to.
    #[serde(default)]
    pub expect_interrupted: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for HttpGet {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.path.as_str()];
        t.extend(opt(&self.save));
        t.extend(opt(&self.expect_sha256));
        t.extend(opt(&self.range));
        t.extend(self.headers.values().map(String::as_str));
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.resume && self.save.is_none() {
            return Err("`resume` needs `save` (the file the rest is appended to)".into());
        }
        if self.expect_interrupted && !self.resume {
            return Err("`expect_interrupted` needs `resume` (an interrupted download is resumed)".into());
        }
        Ok(())
    }
}

/// Opens `connections` connections to the HTTPS port and holds them in the background until
/// the scenario ends: `idle` ones send nothing, `slow` ones finish TLS and then dribble a
/// request header a byte a second (slowloris). Later steps show whether others are still served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHold {
    pub connections: u32,
    pub mode: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for HttpHold {
    fn check(&self) -> Result<(), String> {
        if self.mode != "idle" && self.mode != "slow" {
            return Err(format!(
                "mode {:?}: use `idle` (connect, send nothing) or `slow` (slowloris)",
                self.mode
            ));
        }
        if self.connections == 0 || self.connections > 1000 {
            return Err("connections: use 1..1000".into());
        }
        Ok(())
    }
}
