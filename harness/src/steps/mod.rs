//! What each step of a scenario does to the device, one module per family: [`dbus`] (calls and
//! waiting for a backup), [`shell`] (commands and files over SSH), [`transfer`] (HTTPS, scp,
//! rsync; scp back), [`verify`] (GnuPG and comparing an archive with its snapshot, through [`tree`]),
//! [`setup`] (users and polkit grants: the vendor's recipe, shared with `provision`), [`fault`]
//! (with [`card_read`]: a bench's card read after a power cut),
//! [`probe`] (the automation loop's latency) and [`browser`] (the device's web page). [`run`] sends a step to its family; the
//! runner around it keeps the order, the timeouts and the report; a step that does not pass
//! ends with a [`StepEnd`], the room's error.

mod backup_area;
pub(crate) mod browser;
pub(crate) mod card_read;
pub(crate) mod dbus;
pub(crate) mod fault;
pub(crate) mod probe;
pub(crate) mod setup;
pub(crate) mod shell;
pub(crate) mod transfer;
pub(crate) mod tree;
pub(crate) mod verify;

use std::time::{Duration, Instant};

use crate::device::FaultError;
use crate::report::{BrowserEvidence, Latency, ProgressSample, Wear};
use crate::scenario::{self, family, Family, Step};
use crate::session::Session;

/// How a step can end other than passing: the room's error. The runner branches on the kind
/// (a failure fails the scenario, an unsupported step skips it); the report shows the message.
#[derive(Debug, thiserror::Error)]
pub enum StepEnd {
    /// The step ran and the device (or the network, or a file) did not do what it asks.
    #[error("{0}")]
    Failed(String),
    /// The target cannot do this (a fault on a real device): the scenario is skipped.
    #[error("{0}")]
    Unsupported(String),
}

impl From<String> for StepEnd {
    fn from(s: String) -> Self {
        StepEnd::Failed(s)
    }
}

impl From<&str> for StepEnd {
    fn from(s: &str) -> Self {
        StepEnd::Failed(s.to_string())
    }
}

impl From<crate::transport::Error> for StepEnd {
    fn from(e: crate::transport::Error) -> Self {
        StepEnd::Failed(e.to_string())
    }
}

impl From<crate::browser::Error> for StepEnd {
    fn from(e: crate::browser::Error) -> Self {
        StepEnd::Failed(e.to_string())
    }
}

impl From<crate::report::Error> for StepEnd {
    fn from(e: crate::report::Error) -> Self {
        StepEnd::Failed(e.to_string())
    }
}

impl From<crate::session::Error> for StepEnd {
    fn from(e: crate::session::Error) -> Self {
        StepEnd::Failed(e.to_string())
    }
}

impl From<FaultError> for StepEnd {
    fn from(e: FaultError) -> Self {
        match e {
            FaultError::Failed(m) => StepEnd::Failed(m),
            FaultError::Unsupported(m) => StepEnd::Unsupported(m),
        }
    }
}

/// What a step did: its transcript, progress samples, and what a probe measured.
#[derive(Default)]
pub struct StepLog {
    pub lines: Vec<String>,
    pub progress: Vec<ProgressSample>,
    pub latency: Option<Latency>,
    pub baseline: Option<Latency>,
    pub browser: Option<BrowserEvidence>,
    pub wear: Option<Wear>,
    /// A `fault.power_cut` with `inspect`: the card read after the cut.
    pub card: Option<crate::report::card::CardRead>,
}

const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// The time limit of a step of this kind without its own `timeout`; `probe.latency`'s is its
/// measuring time plus [`default_timeout`]`("")`, so `None`. `scenarios/README.md` says the same
/// (a test holds it to this).
pub fn default_timeout(kind: &str) -> Option<Duration> {
    Some(match kind {
        "backup.wait" => DEFAULT_WAIT_TIMEOUT,
        // A guest's boot under software emulation can take minutes on a busy machine.
        "fault.power_cut" | "fault.reboot" | "fault.replace_card" | "fault.io_error" => DEFAULT_WAIT_TIMEOUT,
        "repeat" => Duration::from_secs(30 * 60),
        "probe.latency" => return None,
        _ => DEFAULT_STEP_TIMEOUT,
    })
}

/// A step's time limit: its own `timeout`, or the default for its kind.
pub fn step_timeout(step: &Step) -> Duration {
    step.timeout().unwrap_or_else(|| match step {
        Step::ProbeLatency(p) => probe::default_timeout(p) + DEFAULT_STEP_TIMEOUT,
        _ => default_timeout(step.kind()).unwrap_or(DEFAULT_STEP_TIMEOUT),
    })
}

/// Runs one step against the session's device.
pub async fn run(s: &mut Session<'_>, step: &Step, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    // One line a family; each family's module matches its own steps (`scenario::family`).
    match step.family() {
        Family::Dbus(d) => dbus::step(s, d, timeout, log).await,
        Family::Shell(d) => shell::step(s, d, timeout, log).await,
        Family::Transfer(d) => transfer::step(s, d, timeout, log).await,
        Family::Verify(d) => verify::step(s, d, timeout, log).await,
        Family::Setup(d) => setup::step(s, d, timeout, log).await,
        Family::Fault(d) => fault::run(s, d, timeout, log).await,
        Family::Probe(d) => probe::step(s, d, timeout, log).await,
        Family::Browser(d) => browser::run(s, d, timeout, log).await,
        Family::Control(family::Control::Repeat(r)) => repeat(s, r, log).await,
    }
}

/// `repeat`: the inner steps `times` times, `${iteration}` the round; only a failing step's
/// lines reach the transcript, besides one line a round.
async fn repeat(s: &mut Session<'_>, r: &scenario::Repeat, log: &mut StepLog) -> Result<(), StepEnd> {
    let started = Instant::now();
    for round in 1..=r.times {
        s.vars.insert(scenario::ITERATION.to_string(), round.to_string());
        for inner in &r.steps {
            let t = step_timeout(inner);
            let line = inner.span().start().map(|m| m.line()).unwrap_or(0);
            let kind = inner.kind();
            let mut inner_log = StepLog::default();
            let result = match tokio::time::timeout(
                t + Duration::from_secs(5),
                Box::pin(run(s, inner, t, &mut inner_log)),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(StepEnd::Failed(format!("did not finish within its timeout of {t:?}"))),
            };
            if inner_log.browser.is_some() {
                log.browser = inner_log.browser.take();
            }
            if let Err(e) = result {
                log.lines.append(&mut inner_log.lines);
                s.vars.remove(scenario::ITERATION);
                return Err(match e {
                    StepEnd::Failed(m) => StepEnd::Failed(format!("round {round}, {kind} (line {line}): {m}")),
                    other => other,
                });
            }
        }
        // Keep the transcript short: one line a round.
        log.lines.push(format!(
            "round {round} of {} done at {:.1} s",
            r.times,
            started.elapsed().as_secs_f64()
        ));
    }
    s.vars.remove(scenario::ITERATION);
    Ok(())
}

#[cfg(test)]
mod reference;
