//! Flaky or real? A scenario run more than once: `--repeat N` runs each N times, `--retries N`
//! runs a failed one again (on a fresh target; on a real device after its undo) up to N times.
//! Each try has its own seed, derived from the run's, and its own work folder, so a failing
//! try's evidence is kept; only a plain failure is tried again.

use crate::report::{Outcome, ScenarioReport};

/// How often each scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Runs of each scenario (`--repeat`, at least 1).
    pub repeat: usize,
    /// Further tries of a run that failed (`--retries`).
    pub retries: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { repeat: 1, retries: 0 }
    }
}

impl Plan {
    /// The seed of a scenario's `k`-th try in all (0-based, across its repetitions): the run's
    /// own seed for the first, so a run without repeats or retries draws as it always did; then
    /// a splitmix64 step away from it per try, so the same `--seed` repeats every try.
    pub fn seed(run_seed: u64, k: usize) -> u64 {
        if k == 0 {
            return run_seed;
        }
        let mut z = run_seed.wrapping_add((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The index (0-based, across repetitions) of repetition `rep`'s try `t` (both 1-based).
    pub fn index(&self, rep: usize, t: usize) -> usize {
        (rep - 1) * (self.retries + 1) + (t - 1)
    }

    /// The repetition to name in reports: none unless the scenario is repeated.
    pub fn repetition(&self, rep: usize) -> Option<usize> {
        (self.repeat > 1).then_some(rep)
    }

    /// The work folder of repetition `rep`'s try `t` of the scenario whose folder is `slug`:
    /// the slug itself for the first, `SLUG.rep-R.try-T` otherwise (a slug has no dot).
    pub fn work(&self, slug: &str, rep: usize, t: usize) -> String {
        let mut w = slug.to_string();
        if self.repeat > 1 && rep > 1 {
            w.push_str(&format!(".rep-{rep}"));
        }
        if t > 1 {
            w.push_str(&format!(".try-{t}"));
        }
        w
    }
}

/// Whether a try is run again: only a plain failure. A pass is kept; a skip stays a skip; an
/// infrastructure error and an undo that failed (the device not as it was found) are never
/// retried into a pass.
pub fn retry(r: &ScenarioReport) -> bool {
    r.outcome == Outcome::Failed && !r.undo_failed
}

/// The tries of one run, oldest first, as one report: the last, holding the earlier ones.
pub fn fold(mut tries: Vec<ScenarioReport>) -> Option<ScenarioReport> {
    let mut last = tries.pop()?;
    last.attempt.tries = tries;
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Attempt;

    fn report(outcome: Outcome, undo_failed: bool) -> ScenarioReport {
        ScenarioReport {
            name: "s".into(),
            file: "s.yaml".into(),
            outcome,
            reason: None,
            duration_s: 1.0,
            ready_s: None,
            steps: Vec::new(),
            journal: None,
            console: None,
            device_state: None,
            cleanup: Vec::new(),
            undo_failed,
            device: None,
            device_info: None,
            required: false,
            attempt: Attempt::default(),
        }
    }

    #[test]
    fn only_a_plain_failure_is_tried_again() {
        assert!(retry(&report(Outcome::Failed, false)));
        assert!(!retry(&report(Outcome::Passed, false)));
        assert!(!retry(&report(Outcome::Skipped, false)), "a skip stays a skip");
        assert!(
            !retry(&report(Outcome::InfraError, false)),
            "the bench's trouble is never retried into a pass"
        );
        assert!(
            !retry(&report(Outcome::Failed, true)),
            "an undo that failed is never retried"
        );
    }

    #[test]
    fn every_try_has_its_own_seed_and_folder_and_the_same_seed_repeats_them() {
        let plan = Plan { repeat: 3, retries: 2 };
        let seeds: Vec<u64> = (1..=3)
            .flat_map(|rep| (1..=3).map(move |t| (rep, t)))
            .map(|(rep, t)| Plan::seed(42, plan.index(rep, t)))
            .collect();
        assert_eq!(seeds[0], 42, "the first try draws as a run without retries");
        let distinct: std::collections::BTreeSet<_> = seeds.iter().collect();
        assert_eq!(distinct.len(), 9, "{seeds:?}");
        assert_eq!(Plan::seed(42, 5), Plan::seed(42, 5));
        assert_ne!(Plan::seed(42, 5), Plan::seed(43, 5));
        let mut folders: Vec<String> = (1..=3)
            .flat_map(|rep| (1..=3).map(move |t| plan.work("a-b", rep, t)))
            .collect();
        assert_eq!(folders[0], "a-b");
        assert_eq!(folders[8], "a-b.rep-3.try-3");
        folders.sort();
        folders.dedup();
        assert_eq!(folders.len(), 9, "no try overwrites another's evidence");
        assert_eq!(Plan::default().work("a-b", 1, 2), "a-b.try-2");
    }

    #[test]
    fn the_last_try_holds_the_earlier_ones() {
        let r = fold(vec![report(Outcome::Failed, false), report(Outcome::Passed, false)]).unwrap();
        assert!(r.flaky());
        assert_eq!(r.try_count(), 2);
        let r = fold(vec![report(Outcome::Failed, false), report(Outcome::Failed, false)]).unwrap();
        assert!(
            !r.flaky() && r.outcome == Outcome::Failed,
            "failed every try: a plain failure"
        );
        assert!(fold(Vec::new()).is_none());
    }
}
