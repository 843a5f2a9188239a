//! A real card read after a real power cut (`fault.power_cut` with `inspect` on a bench), checked
//! as every state here is ([`super::check::Checker`]): the card is one state, a flush point of
//! no recorded operation, whose earlier backups are those the device listed before the cut.
//! The checks' findings become the rows of the step's table (`report::card`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use super::check::{Broken, Checker};
use super::ops::{Facts, Op};
use super::pick::{Kind, State};
use crate::report::card::{CardCheck, CheckOutcome};
use crate::steps::card_read::CardChecks;

/// The checks, in the order they run, and what each needs before it.
const CHECKS: &[&str] = &[
    "btrfs check",
    "mount",
    "automation",
    "recovery",
    "ids",
    "backups",
    "earlier backups",
];

/// What starting the daemon's recovery needs, made on first use.
struct Prepared {
    image: String,
    key: PathBuf,
    pubkey: String,
}

/// `crash-states`' checks for the cards `nexus-hil run` reads.
pub struct OnCard {
    prepared: tokio::sync::OnceCell<Result<Prepared, String>>,
}

impl OnCard {
    pub fn new() -> Self {
        Self {
            prepared: tokio::sync::OnceCell::new(),
        }
    }

    /// The container emulator's image (for the daemon's recovery on the card) and a key to
    /// reach it, made or found once per run.
    async fn prepared(&self) -> Result<&Prepared, String> {
        let p = self
            .prepared
            .get_or_init(|| async {
                let say = |m: &str| eprintln!("nexus-hil: {m}");
                let (image, _) =
                    crate::device::container::prepare(None, false, crate::image::sdcard::FUNCTIONAL_CONTENT, &say)
                        .await
                        .map_err(|e| format!("the container emulator for the daemon's recovery: {e}"))?;
                let dir = crate::cache::dir().join("card-checks");
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let key = crate::transport::ssh::make_key(&dir).await.map_err(|e| e.to_string())?;
                let pubkey = std::fs::read_to_string(key.with_extension("pub")).map_err(|e| e.to_string())?;
                Ok(Prepared { image, key, pubkey })
            })
            .await;
        p.as_ref().map_err(String::clone)
    }
}

impl Default for OnCard {
    fn default() -> Self {
        Self::new()
    }
}

impl CardChecks for OnCard {
    fn check<'a>(
        &'a self,
        card: &'a Path,
        work: &'a Path,
        passwords: &'a [String],
        listed_before: &'a BTreeMap<u64, String>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<CardCheck>, String>> + 'a>> {
        Box::pin(async move {
            let p = self.prepared().await?;
            let facts = Facts {
                backups_before: listed_before.clone(),
                ..Default::default()
            };
            let (first, others) = passwords
                .split_first()
                .ok_or("no password to decrypt the backups with")?;
            // No operation was recorded: an Activate's own checks never apply (no facts name one).
            let mut checker = Checker::new(Op::Backup, &facts, &p.image, &p.key, &p.pubkey, work, first);
            checker.other_passwords = others.to_vec();
            check(&mut checker, card).await
        })
    }
}

/// Runs `checker` on `card` as one flush point of no recorded operation; the table.
async fn check(checker: &mut Checker<'_>, card: &Path) -> Result<Vec<CardCheck>, String> {
    let state = State {
        epoch: 0,
        entries: 0,
        kind: Kind::FlushPoint,
        variant: Default::default(),
    };
    let found = checker.check(card, &state).await.map_err(|e| e.to_string())?;
    Ok(table(&found))
}

/// One row per check: failed with what it found, not reached when the card did not mount (or
/// the daemon did not start on it) before it, passed otherwise.
fn table(found: &[Broken]) -> Vec<CardCheck> {
    let of = |name: &str| -> Vec<String> {
        found
            .iter()
            .filter(|b| b.check == name)
            .map(|b| b.what.clone())
            .collect()
    };
    // The checks stop at a card that does not mount, or a daemon that does not start on it
    // (or whose first calls fail): what comes after is not checked.
    let mount_failed = of("mount").iter().any(|w| w.starts_with("a writable mount fails"));
    let recovery_stopped = of("recovery")
        .iter()
        .any(|w| !w.starts_with("after the start Status reports") && !w.starts_with("Status says the backup"));
    let reached = |name: &str| match name {
        "btrfs check" | "mount" => true,
        "automation" | "recovery" => !mount_failed,
        _ => !mount_failed && !recovery_stopped,
    };
    CHECKS
        .iter()
        .map(|name| {
            let what = of(name);
            let outcome = if !what.is_empty() {
                CheckOutcome::Failed
            } else if reached(name) {
                CheckOutcome::Passed
            } else {
                CheckOutcome::NotReached
            };
            CardCheck {
                check: name.to_string(),
                outcome,
                found: what,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(check: &'static str, what: &str) -> Broken {
        Broken {
            check,
            what: what.into(),
        }
    }

    /// The real checks on a card whose btrfs superblock the cut destroyed (zeroed here): btrfs
    /// check and the mount fail, red in the table, and nothing after them is said to pass. No
    /// container is started (the card never mounts). Needs root (loop devices, mount).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_card_without_its_superblock_fails_red_and_stops_the_checks() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let template = crate::image::sdcard::template(crate::image::sdcard::FUNCTIONAL_CONTENT, |_| {}).unwrap();
        let card = dir.path().join("card.img");
        crate::image::sdcard::copy_for(&template, &card).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&card)
            .unwrap()
            .write_all_at(&[0u8; 4096], crate::image::sdcard::ROOT_START + (64 << 10))
            .unwrap();
        let facts = Facts::default();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let key = dir.path().join("no-key");
        let mut checker = Checker::new(Op::Backup, &facts, "never-started", &key, "", &work, "pw");
        let rows = check(&mut checker, &card).await.unwrap();
        use CheckOutcome::*;
        assert_eq!(
            outcomes(&rows),
            [
                ("btrfs check", Failed),
                ("mount", Failed),
                ("automation", NotReached),
                ("recovery", NotReached),
                ("ids", NotReached),
                ("backups", NotReached),
                ("earlier backups", NotReached),
            ],
            "{rows:?}"
        );
        let read = crate::report::card::CardRead {
            card: "test".into(),
            partition_start: 0,
            partition_bytes: 0,
            data_bytes: 0,
            image: card.display().to_string(),
            read_s: 0.0,
            check_s: 0.0,
            checks: rows,
        };
        assert!(read.html().contains("<details open class=\"failed\">"));
    }

    fn outcomes(rows: &[CardCheck]) -> Vec<(&str, CheckOutcome)> {
        rows.iter().map(|r| (r.check.as_str(), r.outcome)).collect()
    }

    #[test]
    fn every_check_has_a_row_and_what_a_failure_stopped_is_not_reached() {
        use CheckOutcome::*;
        let rows = table(&[]);
        assert!(rows.iter().all(|r| r.outcome == Passed) && rows.len() == CHECKS.len());

        let rows = table(&[
            b(
                "btrfs check",
                "btrfs check --readonly fails: superblock checksum mismatch",
            ),
            b("mount", "a writable mount fails: wrong fs type"),
        ]);
        assert_eq!(
            outcomes(&rows),
            [
                ("btrfs check", Failed),
                ("mount", Failed),
                ("automation", NotReached),
                ("recovery", NotReached),
                ("ids", NotReached),
                ("backups", NotReached),
                ("earlier backups", NotReached),
            ]
        );
        assert_eq!(
            rows[0].found,
            ["btrfs check --readonly fails: superblock checksum mismatch"]
        );

        let rows = table(&[b(
            "recovery",
            "nexus-backupd does not start on this state: it did not come up",
        )]);
        assert_eq!(outcomes(&rows)[3..5], [("recovery", Failed), ("ids", NotReached)]);
        // A recovery that went on (a backup still reported running) leaves the rest checked.
        let rows = table(&[
            b(
                "recovery",
                "after the start Status reports the backup of snapshot 3 as running",
            ),
            b(
                "backups",
                "nexus_backup_3.tar.gpg.part is left in /broot/backups after the daemon's start",
            ),
        ]);
        assert_eq!(
            outcomes(&rows)[3..],
            [
                ("recovery", Failed),
                ("ids", Passed),
                ("backups", Failed),
                ("earlier backups", Passed)
            ]
        );
    }
}
