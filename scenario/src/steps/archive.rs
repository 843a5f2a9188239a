//! Steps on a downloaded backup, on the harness's side: decrypting it with GnuPG and comparing
//! it with the snapshot it was made from (on the device, or a copy kept earlier).

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
/// content, mode, owner, mtime and symlink targets: the snapshot on the device (`snapshot`, read
/// over ssh), or as it was saved earlier (`saved`: a tar archive or a folder in the work folder,
/// for when the device no longer has it, as after a new SD card).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMatchesSnapshot {
    pub archive: Option<String>,
    pub dir: Option<String>,
    pub snapshot: Option<String>,
    pub saved: Option<String>,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for ArchiveMatchesSnapshot {
    fn texts(&self) -> Vec<&str> {
        let mut t: Vec<&str> = opt(&self.snapshot).into_iter().collect();
        t.extend(opt(&self.saved));
        t.extend(opt(&self.archive));
        t.extend(opt(&self.dir));
        t
    }

    fn check(&self) -> Result<(), String> {
        if self.archive.is_some() == self.dir.is_some() {
            return Err("give exactly one of `archive` (a tar file) or `dir` (a pulled directory)".into());
        }
        if self.snapshot.is_some() == self.saved.is_some() {
            return Err(
                "give exactly one of `snapshot` (its id, read on the device) or `saved` (a copy of it kept earlier: a tar file or a folder)"
                    .into(),
            );
        }
        Ok(())
    }
}
