//! Steps over ssh as a user: running a command, writing a file, copying files down with scp or
//! rsync and up with scp, and the vendor's setup of a backup user.

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Run a shell command on the device over ssh as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    #[serde(rename = "as")]
    pub user: String,
    pub command: String,
    pub stdin: Option<String>,
    /// Expected exit status (default 0).
    pub expect_exit: Option<i32>,
    /// Texts standard output must contain.
    #[serde(default)]
    pub expect_stdout: Vec<String>,
    /// Store standard output (trimmed), or its `capture_word`-th word (1-based), in this variable.
    pub capture: Option<String>,
    pub capture_word: Option<usize>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshRun {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.user.as_str(), &self.command];
        t.extend(opt(&self.stdin));
        t.extend(self.expect_stdout.iter().map(String::as_str));
        t
    }

    fn captures(&self) -> Option<&str> {
        self.capture.as_deref()
    }

    fn check(&self) -> Result<(), String> {
        if self.capture_word.is_some() && self.capture.is_none() {
            return Err("`capture_word` needs `capture` (the variable to store the word in)".into());
        }
        Ok(())
    }
}

/// Write a file on the device as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshPut {
    #[serde(rename = "as")]
    pub user: String,
    pub path: String,
    /// The file's text, or `source`: a file next to the scenario whose text is sent.
    pub content: Option<String>,
    pub source: Option<String>,
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SshPut {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.user.as_str(), &self.path];
        t.extend(opt(&self.content));
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.content.is_some() == self.source.is_some() {
            return Err("give exactly one of `content` (the text) or `source` (a file next to the scenario)".into());
        }
        if let Some(m) = &self.mode {
            if u32::from_str_radix(m, 8).is_err() {
                return Err(format!("mode {m:?} is not an octal mode like 0755"));
            }
        }
        Ok(())
    }

    fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

/// `scp USER@host:remote local`, as the vendor's download line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpGet {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ScpGet {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.remote, &self.local]
    }
}

/// `scp local USER@host:remote`: a file of the scenario's work folder copied onto the device,
/// as an owner copies backup files back after setting up a new card.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpPut {
    #[serde(rename = "as")]
    pub user: String,
    pub local: String,
    pub remote: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ScpPut {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.local, &self.remote]
    }
}

/// `rsync -a` of a device directory over ssh (`sudo: true` reads it as root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsyncPull {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    #[serde(default)]
    pub sudo: bool,
    /// When rsync fails (a dropped connection), run it again with --partial until the timeout.
    #[serde(default)]
    pub resume: bool,
    /// The transfer must have met a network cut (a `fault.cut_network` froze the device while
    /// it was in flight): proof that the fault happened where it was meant to.
    #[serde(default)]
    pub expect_interrupted: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for RsyncPull {
    fn texts(&self) -> Vec<&str> {
        vec![&self.user, &self.remote, &self.local]
    }

    fn check(&self) -> Result<(), String> {
        if self.expect_interrupted && !self.resume {
            return Err("`expect_interrupted` needs `resume` (an interrupted rsync is run again)".into());
        }
        Ok(())
    }
}

/// The vendor's setup of a backup user: `adduser`, the pkla grant, and the harness's key
/// (as `ssh-copy-id` would), run over ssh by the admin user with sudo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupUser {
    pub name: String,
    /// Actions to grant (`all` for the nine of the vendor's file; empty: none).
    #[serde(default)]
    pub grant: Vec<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for SetupUser {
    fn texts(&self) -> Vec<&str> {
        vec![&self.name]
    }
}
