//! `fault.power_cut` with `inspect: true`: the cut as `fault::power_cut` times it, done by the
//! device's [`Lifecycle::power_cut_read`] (a bench whose card an SD mux switches here), and the
//! card's image checked as `crash-states` checks a state before the power comes back; the
//! checks' table goes into the step's report, and a failing check fails the step. The checks are
//! `crate::crash_states::card`'s, a room above this one: the command that runs scenarios hands
//! them down once ([`provide`]), so that imports keep pointing down.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{StepEnd, StepLog};
use crate::device::{Applied, Fault, FaultError, Lifecycle, ReadCard};
use crate::report::card::{CardCheck, CardRead};
use crate::scenario::PowerCut;
use crate::session::Session;

/// The checks of a card read after a cut.
pub trait CardChecks: Send + Sync {
    /// Checks the card image `card` (a copy the checks may change; the card's layout, its btrfs
    /// partition at the SD-card image's offset) with `work` as scratch space: the backups the
    /// daemon lists decrypted with one of `passwords`, and each of `listed_before` (id and
    /// SHA-256, as GetList listed them before the cut) still listed with its SHA-256. The rows
    /// of the table, or why the card could not be checked (this machine's trouble).
    fn check<'a>(
        &'a self,
        card: &'a Path,
        work: &'a Path,
        passwords: &'a [String],
        listed_before: &'a BTreeMap<u64, String>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<CardCheck>, String>> + 'a>>;
}

static CHECKS: OnceLock<Box<dyn CardChecks>> = OnceLock::new();

/// Hands down the checks a read card goes through (once per process; later calls change nothing).
pub fn provide(checks: Box<dyn CardChecks>) {
    let _ = CHECKS.set(checks);
}

/// The lifecycle of the step's device, whose power cut reads the card.
struct Reading<'a> {
    inner: &'a dyn Lifecycle,
    image: PathBuf,
    read: &'a ReadCard,
}

impl Lifecycle for Reading<'_> {
    fn fault(&self, fault: Fault) -> Pin<Box<dyn Future<Output = Result<Applied, FaultError>> + '_>> {
        match fault {
            Fault::PowerCut { .. } => self.inner.power_cut_read(&self.image, self.read),
            other => self.inner.fault(other),
        }
    }

    fn throwaway(&self) -> bool {
        self.inner.throwaway()
    }

    fn power_switch(&self) -> bool {
        self.inner.power_switch()
    }

    fn ways_in(&self) -> Vec<String> {
        self.inner.ways_in()
    }
}

/// Runs `fault.power_cut` with `inspect`.
pub(super) async fn power_cut(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    p: &PowerCut,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    if CHECKS.get().is_none() {
        return Err(StepEnd::Unsupported(
            "this command does not check cards: `inspect` is for `nexus-hil run`".into(),
        ));
    }
    let passwords = s.secret_values();
    if passwords.is_empty() {
        return Err(
            "`inspect` decrypts the card's backups with the scenario's password variables (a variable \
                    named like `password`); this scenario has none"
                .into(),
        );
    }
    let listed_before = listed(s, timeout).await?;
    log.lines.push(format!(
        "listed before the cut: {} finished backup(s) ({})",
        listed_before.len(),
        listed_before.keys().map(u64::to_string).collect::<Vec<_>>().join(", ")
    ));
    std::fs::create_dir_all(&s.work).map_err(|e| format!("{}: {e}", s.work.display()))?;
    // The container that recovers the card mounts files from here: an absolute path.
    let work = std::fs::canonicalize(&s.work).map_err(|e| format!("{}: {e}", s.work.display()))?;
    let image = crate::bench::card_read::image_path(&work);
    let slot: Arc<Mutex<Option<CardRead>>> = Arc::default();
    let read = {
        let (slot, work, image) = (slot.clone(), work.join("card-check"), image.clone());
        move |r: CardRead| -> Pin<Box<dyn Future<Output = Result<CardRead, String>>>> {
            let (slot, work, image) = (slot.clone(), work.clone(), image.clone());
            let (passwords, listed_before) = (passwords.clone(), listed_before.clone());
            Box::pin(async move {
                let started = Instant::now();
                let checks = check_copy(&image, &work, &passwords, &listed_before).await?;
                let r = CardRead {
                    checks,
                    check_s: started.elapsed().as_secs_f64(),
                    ..r
                };
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
                Ok(r)
            })
        }
    };
    let reading = Reading {
        inner: lifecycle,
        image,
        read: &read,
    };
    let cut = super::fault::power_cut(s, &reading, p, timeout, log).await;
    let Some(card) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return cut;
    };
    log.lines.extend(card.lines());
    let failed: Vec<String> = card
        .failed()
        .iter()
        .map(|c| format!("{}: {}", c.check, c.found.join("; ")))
        .collect();
    let image = card.image.clone();
    log.card = Some(card);
    cut?;
    if !failed.is_empty() {
        return Err(format!(
            "the card read after the cut fails {} check(s): {}; the card as the cut left it: {image}",
            failed.len(),
            failed.join(" | ")
        )
        .into());
    }
    Ok(())
}

/// Checks a copy of the card's image (the checks mount it writable and recover it), removed
/// after; the image stays as the cut left it.
async fn check_copy(
    image: &Path,
    work: &Path,
    passwords: &[String],
    listed_before: &BTreeMap<u64, String>,
) -> Result<Vec<CardCheck>, String> {
    let checks = CHECKS.get().ok_or("no card checks")?;
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let copy = work.join("card-checked.img");
    let _ = std::fs::remove_file(&copy);
    crate::crash::log::sparse_copy(image, &copy).map_err(|e| format!("copying {}: {e}", image.display()))?;
    let r = checks.check(&copy, work, passwords, listed_before).await;
    let _ = std::fs::remove_file(&copy);
    r
}

/// The finished backups `Backup1.GetList` lists: id and SHA-256.
async fn listed(s: &mut Session<'_>, timeout: Duration) -> Result<BTreeMap<u64, String>, StepEnd> {
    let bus = s.bus("root", timeout).await?;
    Ok(bus
        .finished_backups()
        .await
        .map_err(|e| format!("GetList before the cut failed: {e}"))?)
}
