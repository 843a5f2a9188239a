//! Checking what came off the device: `gpg.decrypt` with the real GnuPG, as the vendor
//! documents, and `archive.matches_snapshot` (a tar or a pulled folder against the snapshot,
//! read over SSH or from a copy saved earlier, entry by entry through [`super::tree`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nexus_contract::paths;

use super::tree;
use super::{StepEnd, StepLog};
use crate::scenario::{family, ArchiveMatchesSnapshot, GpgDecrypt};
use crate::session::Session;

/// `gpg.decrypt`, or with `expect_failure` its refusal.
/// Does a step of the verify family (GnuPG, an archive against its snapshot).
pub async fn step(
    s: &mut Session<'_>,
    step: family::Verify<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Verify::GpgDecrypt(d) => gpg(s, d, timeout, log).await,
        family::Verify::ArchiveMatchesSnapshot(a) => archive(s, a, timeout, log).await,
    }
}

pub async fn gpg(s: &mut Session<'_>, d: &GpgDecrypt, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let file = s.local(&d.file);
    let output = s.local(&d.output);
    let password = s.subst(&d.password);
    log.lines.push(format!(
        "gpg --batch --pinentry-mode loopback --passphrase-fd 0 --decrypt {} > {}",
        file.display(),
        output.display()
    ));
    let r = gpg_decrypt(&file, &password, &output, timeout).await;
    match (r, d.expect_failure) {
        (Ok(()), false) => Ok(()),
        (Err(e), true) => {
            log.lines.push(format!(
                "-> refused as expected: {}",
                e.to_string().lines().last().unwrap_or("")
            ));
            let _ = std::fs::remove_file(&output);
            Ok(())
        }
        (Ok(()), true) => Err("gpg decrypted the file, but it was expected to fail".into()),
        (Err(e), false) => Err(StepEnd::Failed(format!(
            "gpg could not decrypt {}: {e}",
            file.display()
        ))),
    }
}

/// `archive.matches_snapshot`: against the snapshot on the device, or a copy of it saved earlier.
pub async fn archive(
    s: &mut Session<'_>,
    a: &ArchiveMatchesSnapshot,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let (local, what) = match (&a.archive, &a.dir) {
        (Some(f), _) => (tree::from_tar(&s.local(f))?, s.local(f)),
        (_, Some(d)) => (tree::from_dir(&s.local(d))?, s.local(d)),
        _ => return Err("give `archive` or `dir`".into()),
    };
    let (expected, against) = match (&a.snapshot, &a.saved) {
        (Some(snapshot), _) => {
            let remote_dir = paths::snapshot_dir(s.subst(snapshot));
            log.lines
                .push(format!("comparing {} with {remote_dir} on the device", what.display()));
            let cmd = tree::remote_listing_command(&remote_dir);
            let out = s.ssh("root", &cmd, None, timeout).await?;
            if out.code != Some(0) {
                return Err(StepEnd::Failed(format!(
                    "cannot list {remote_dir}: {}",
                    out.stderr.trim()
                )));
            }
            (tree::parse_remote_listing(&out.stdout)?, "on the device")
        }
        (_, Some(saved)) => {
            let saved = s.local(saved);
            log.lines.push(format!(
                "comparing {} with the snapshot as saved in {}",
                what.display(),
                saved.display()
            ));
            (saved_tree(&saved)?, "in the saved copy")
        }
        _ => return Err("give `snapshot` or `saved`".into()),
    };
    let diffs = tree::compare(&expected, &local);
    log.lines.push(format!(
        "{} entries {against}, {} in the copy",
        expected.len(),
        local.len()
    ));
    if !diffs.is_empty() {
        let shown: Vec<String> = diffs.iter().take(20).cloned().collect();
        return Err(StepEnd::Failed(format!(
            "{} difference(s): {}",
            diffs.len(),
            shown.join("; ")
        )));
    }
    Ok(())
}

/// A snapshot as it was saved: a folder, or a tar archive.
fn saved_tree(path: &Path) -> Result<tree::Tree, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => tree::from_dir(path),
        Ok(_) => tree::from_tar(path),
        Err(e) => Err(format!("the saved copy {}: {e}", path.display())),
    }
}

/// `gpg --decrypt` with the password on its stdin and a GnuPG home of its own, removed after.
async fn gpg_decrypt(file: &Path, password: &str, output: &Path, timeout: Duration) -> Result<(), StepEnd> {
    let home = tempdir_in(file.parent().unwrap_or(Path::new(".")))?;
    let mut cmd = tokio::process::Command::new("gpg");
    cmd.args([
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        "0",
        "--output",
    ])
    .arg(output)
    .arg("--decrypt")
    .arg(file)
    .env("GNUPGHOME", &home);
    let out = crate::transport::ssh::run_local(cmd, Some(password.as_bytes()), timeout).await;
    let _ = std::fs::remove_dir_all(&home);
    let out = out?;
    if out.code == Some(0) {
        Ok(())
    } else {
        Err(out.stderr.trim().to_string().into())
    }
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, StepEnd> {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join(format!(
        ".gnupg-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::saved_tree;
    use crate::steps::tree;

    #[test]
    fn a_saved_copy_is_a_folder_or_a_tar_and_a_changed_one_differs() {
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("saved");
        std::fs::create_dir_all(saved.join("etc")).unwrap();
        std::fs::write(saved.join("etc/a.cfg"), "a = 1\n").unwrap();
        let tar = dir.path().join("saved.tar");
        let ok = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&saved)
            .arg("etc")
            .status()
            .unwrap();
        assert!(ok.success());
        let (as_dir, as_tar) = (saved_tree(&saved).unwrap(), saved_tree(&tar).unwrap());
        assert!(tree::compare(&as_dir, &as_tar).is_empty());
        std::fs::write(saved.join("etc/a.cfg"), "a = 2\n").unwrap();
        let diffs = tree::compare(&saved_tree(&saved).unwrap(), &as_tar);
        assert!(diffs.iter().any(|d| d.contains("content differs")), "{diffs:?}");
        let e = saved_tree(&dir.path().join("gone.tar")).unwrap_err();
        assert!(e.contains("gone.tar"), "{e}");
    }
}
