//! Runs scenarios against devices. [`run_scenario`] runs one scenario's steps in order against
//! one device: each step under its timeout (sent to its family in `steps`), the transcript and
//! the step reports, the scenario's time limit, and on failure the device's journal and state;
//! on a real device [`tidy`] then undoes what the scenario changed, from the record on the
//! device. [`slots`] makes where a run's scenarios run (fresh devices of a kind, through the
//! device room's one seam, or real devices), [`hold`] takes the real ones, and [`schedule`]
//! shares a suite out among them ([`run_fresh`]: one scenario on a fresh device), each
//! scenario run as often as [`tries`] plans. What goes wrong is an [`Error`].

mod error;
pub(crate) mod hold;
pub(crate) mod inspect;
pub(crate) mod interrupt;
pub(crate) mod schedule;
pub(crate) mod slots;
pub(crate) mod tidy;
pub(crate) mod tries;

pub use error::Error;
pub use schedule::run_fresh;
pub use tries::Plan;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::device::{Device, Lifecycle};
use crate::report::{Outcome, ScenarioReport, StepReport};
use crate::scenario::Scenario;
use crate::session::{SeededRandom, Session};
use crate::steps::{self, StepEnd, StepLog};

/// Runs one scenario's steps against `dev`, with `work` as its local folder and `seed` (the
/// try's: `${seed}` in its steps) for its random draws. `on_step` hears of each step as it
/// starts.
pub async fn run_scenario(
    s: &Scenario,
    dev: &Device,
    lifecycle: Option<&dyn Lifecycle>,
    work: &Path,
    seed: u64,
    on_step: &(dyn Fn(&str) + Sync),
) -> ScenarioReport {
    let started = Instant::now();
    let _ = std::fs::create_dir_all(work);
    let mut vars = s.vars.clone();
    vars.insert(crate::scenario::SEED.to_string(), seed.to_string());
    let mut session = Session {
        dev: dev.clone(),
        lifecycle,
        work: work.to_owned(),
        vars,
        buses: HashMap::new(),
        scenario_dir: s.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        holds: Vec::new(),
        probes: Vec::new(),
        cuts: Vec::new(),
        random: SeededRandom::for_scenario(seed, &s.name),
        browser: None,
        secrets: Vec::new(),
        card_before_backup: Default::default(),
    };
    // A real device is left as it was found: a scenario that cannot record its changes there,
    // or that would make one no record can take back, does not touch it.
    let real = session.real();
    let refused = unmet_need(s, lifecycle);
    let recorded = if refused.is_some() {
        Ok(())
    } else if real {
        tidy::can_record(&session).await
    } else {
        Ok(())
    };
    // What the device says it is, for the results history (before a step can cut its power).
    let device_info = if recorded.is_ok() {
        tidy::identify(&session).await
    } else {
        None
    };
    let (steps, mut outcome, mut reason) = match (refused, recorded) {
        (Some(why), _) => (Vec::new(), Outcome::Skipped, Some(why)),
        (None, Ok(())) => run_steps(&mut session, s, started, on_step).await,
        (None, Err(why)) => (Vec::new(), Outcome::InfraError, Some(why.to_string())),
    };
    // `run --hold-on-failure`: the device kept as the failed step left it, for a person.
    if let Some(h) = inspect::active().filter(|_| outcome == Outcome::Failed && !steps.is_empty()) {
        let ways_in = lifecycle.map(|l| l.ways_in()).unwrap_or_default();
        h.hold(&s.name, reason.as_deref().unwrap_or_default(), &session, &ways_in)
            .await;
    }
    for h in session.holds.drain(..) {
        h.abort();
    }
    // The browser goes whatever the outcome (a step that timed out left it as it was).
    if let Some(b) = session.browser.take() {
        b.close().await;
    }
    // A scenario that failed already is not held up for its cuts (its emulator goes anyway).
    if outcome == Outcome::Passed {
        if let Err(why) = cuts_took(&session).await {
            outcome = Outcome::Failed;
            reason = Some(why.to_string());
        }
    }
    let (journal, device_state) = if outcome == Outcome::Failed && !steps.is_empty() {
        let (j, st) = tidy::evidence(&session).await;
        (Some(j), Some(st))
    } else {
        (None, None)
    };
    let (outcome, reason, undone) = give_back(&mut session, real && !steps.is_empty(), outcome, reason).await;
    let mut cleanup = undone.lines;
    if let Some(why) = &undone.error {
        cleanup.push(why.clone());
    }
    ScenarioReport {
        name: s.name.clone(),
        file: s.file.display().to_string(),
        outcome,
        reason,
        duration_s: started.elapsed().as_secs_f64(),
        ready_s: None,
        steps,
        journal,
        device_state,
        console: None,
        cleanup,
        undo_failed: undone.error.is_some(),
        device: None,
        device_info,
        required: s.must_run,
        attempt: crate::report::Attempt {
            seed: Some(seed),
            ..Default::default()
        },
    }
}

/// The device given back after a scenario: on a real device every recorded change undone,
/// unless the run lost the device's lease (then it learnt nothing it can trust and undoes
/// nothing: the device, and its record, may be another run's now). An undo that fails fails the
/// scenario: the device is not as it was found. Returns the verdict as it now stands.
async fn give_back(
    session: &mut Session<'_>,
    undo: bool,
    mut outcome: Outcome,
    mut reason: Option<String>,
) -> (Outcome, Option<String>, tidy::Undone) {
    // The first reason stays in the report, after the one that now decides.
    let before =
        |reason: &mut Option<String>, what: &str| reason.take().map(|r| format!(" ({what}: {r})")).unwrap_or_default();
    let lost = crate::bench::lock::lost(&session.dev);
    if let Some(why) = &lost {
        if outcome != Outcome::InfraError {
            let was = before(&mut reason, "the scenario");
            reason = Some(format!(
                "lost the device's lease: {why}; nothing was undone by this run{was}"
            ));
            outcome = Outcome::InfraError;
        }
    }
    let undone = if undo && lost.is_none() {
        tidy::undo(session).await
    } else {
        tidy::Undone::default()
    };
    if let Some(why) = &undone.error {
        let was = before(&mut reason, "the scenario itself");
        reason = Some(format!("{why}{was}"));
        outcome = match (outcome, undone.unreachable) {
            (_, true) | (Outcome::InfraError, _) => Outcome::InfraError,
            _ => Outcome::Failed,
        };
    }
    (outcome, reason, undone)
}

/// Why a scenario does not run on this target, before its first step: a need it declares
/// (`needs:`) that the target lacks.
fn unmet_need(s: &Scenario, lifecycle: Option<&dyn Lifecycle>) -> Option<String> {
    use crate::scenario::Need;
    s.needs.iter().find_map(|need| {
        let met = match need {
            Need::Throwaway => lifecycle.is_some_and(|l| l.throwaway()),
            Need::Power => lifecycle.is_some_and(|l| l.power_switch()),
        };
        (!met).then(|| match need {
            Need::Throwaway => "needs a throwaway device (it changes the device in ways no record puts back): \
                                run it on the emulator or the stand-in"
                .to_string(),
            Need::Power => "needs a device whose power the harness can cut: the stand-in, or a bench device \
                            with [device.power] in targets.toml"
                .to_string(),
        })
    })
}

/// The steps in order until one fails or is unsupported, or the time limit is reached.
async fn run_steps(
    session: &mut Session<'_>,
    s: &Scenario,
    started: Instant,
    on_step: &(dyn Fn(&str) + Sync),
) -> (Vec<StepReport>, Outcome, Option<String>) {
    let mut steps = Vec::new();
    let limit = s.time_limit();
    for (i, step) in s.steps.iter().enumerate() {
        let line = step.span().start().map(|m| m.line()).unwrap_or(0);
        let kind = step.kind();
        if started.elapsed() > limit {
            let why = format!(
                "the scenario's time limit of {limit:?} was reached before step {} ({kind})",
                i + 1
            );
            return (steps, Outcome::Failed, Some(why));
        }
        // A run that lost the device's lease stops here: another run may hold the device now.
        if let Some(why) = crate::bench::lock::lost(&session.dev) {
            let why = format!(
                "lost the device's lease before step {} ({kind}): {why}; this run stops and undoes nothing, \
                 its record is undone by the run that holds the device now, or by `nexus-hil provision --undo`",
                i + 1
            );
            return (steps, Outcome::InfraError, Some(why));
        }
        on_step(&format!("step {}/{}: {kind}", i + 1, s.steps.len()));
        let timeout = steps::step_timeout(step);
        let t = Instant::now();
        let mut log = StepLog::default();
        // The step's own timeout, with a margin for the work around it.
        let r = match tokio::time::timeout(
            timeout + Duration::from_secs(5),
            steps::run(session, step, timeout, &mut log),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(StepEnd::Failed(format!(
                "the step did not finish within its timeout of {timeout:?}"
            ))),
        };
        let (outcome, message) = match r {
            Ok(()) => (Outcome::Passed, None),
            Err(StepEnd::Unsupported(why)) => (Outcome::Skipped, Some(why)),
            Err(StepEnd::Failed(m)) => (Outcome::Failed, Some(session.mask(&m))),
        };
        steps.push(StepReport {
            index: i + 1,
            kind: kind.to_string(),
            line,
            outcome,
            duration_s: t.elapsed().as_secs_f64(),
            message: message.clone(),
            transcript: log.lines,
            progress: log.progress,
            latency: log.latency,
            baseline: log.baseline,
            browser: log.browser,
            wear: log.wear,
            card: log.card,
        });
        if outcome != Outcome::Passed {
            let why = format!("step {} {kind} (line {line}): {}", i + 1, message.unwrap_or_default());
            return (steps, outcome, Some(why));
        }
    }
    (steps, Outcome::Passed, None)
}

/// Every network cut froze the device and let it go again: waits (bounded) for cuts still
/// under way, so that nothing is torn down frozen, and names the first that did not take.
async fn cuts_took(session: &Session<'_>) -> Result<(), Error> {
    for (i, cut) in session.cuts.iter().enumerate() {
        let deadline = cut.started + cut.ends_after + Duration::from_secs(15);
        let state = loop {
            let state = cut.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if state.error.is_some() || state.thawed_at.is_some() || Instant::now() > deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let cut = |why: &str| Error::Cut {
            n: i + 1,
            why: why.to_string(),
        };
        match (state.error, state.frozen_at, state.thawed_at) {
            (Some(e), _, _) => return Err(cut(&e)),
            (None, None, _) => return Err(cut("the device never froze")),
            (None, Some(_), None) => return Err(cut("the device was not thawed in time")),
            (None, Some(_), Some(_)) => {}
        }
    }
    Ok(())
}
