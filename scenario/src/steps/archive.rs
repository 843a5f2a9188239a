//! Steps on a downloaded backup, on the harness's side: decrypting it with GnuPG and comparing
//! it with the snapshot it was made from.

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Decrypt a local file with the real GnuPG, as the vendor documents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpgDecrypt {
    pub file: String,
    pub password: String,
    pub output: String,
    /// The decryption must fail (wrong password).
    #[serde(default)]
    pub expect_failure: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for GpgDecrypt {
    fn texts(&self) -> Vec<&str> {
        vec![&self.file, &self.password, &self.output]
    }
}

/// A local tar archive (or a pulled directory) must hold exactly the snapshot's files, with
/// content, mode, owner, mtime and symlink targets; the snapshot is read over ssh.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMatchesSnapshot {
    pub archive: Option<String>,
    pub dir: Option<String>,
    pub snapshot: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ArchiveMatchesSnapshot {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.snapshot.as_str()];
        t.extend(opt(&self.archive));
        t.extend(opt(&self.dir));
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.archive.is_some() == self.dir.is_some() {
            return Err("give exactly one of `archive` (a tar file) or `dir` (a pulled directory)".into());
        }
        Ok(())
    }
}
