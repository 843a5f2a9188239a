//! Before a run touches real devices: each one's lease taken ([`crate::bench::lock`]), what an
//! earlier run left recorded there undone ([`super::tidy::undo_on`]), and its health read
//! ([`crate::bench::health`]). Any of them failing stops the run before its first scenario,
//! with an [`Error`] that names why and which exit status it means.

use std::collections::BTreeMap;
use std::time::Duration;

use super::slots::FleetMember;
use super::Error;
use crate::bench::health::{self, Health, Limits};
use crate::bench::lock::{DeviceLock, Timing};

/// How a run holds its devices.
pub struct HoldOptions {
    /// Who holds them, as the lock file names the holder.
    pub owner: String,
    /// How long to wait for a device another run holds (`None`: not at all).
    pub wait: Option<Duration>,
    /// The lease's time to live; it is refreshed every quarter of it.
    pub ttl: Duration,
    /// Read each device's health first (`--no-health` turns it off).
    pub health: bool,
}

/// The devices a run holds: their leases, released by [`Held::release`].
#[derive(Default)]
pub struct Held {
    locks: Vec<DeviceLock>,
}

impl Held {
    /// Gives every device back.
    pub async fn release(self, say: &(dyn Fn(&str) + Sync)) {
        for l in self.locks {
            if let Err(e) = l.release().await {
                say(&format!("cannot release a device's lock: {e}"));
            }
        }
    }
}

/// Takes `members` for a run: each device's lease, then its leftovers undone (said), then its
/// health (into `healths`, by the device's name, whatever it says). On an error every lease
/// taken so far is given back.
pub async fn hold(
    members: &[FleetMember],
    opts: &HoldOptions,
    healths: &mut BTreeMap<String, Health>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Held, Error> {
    let mut held = Held::default();
    let stopped = async |held: Held, stop: Error| {
        held.release(say).await;
        Err(stop)
    };
    let timing = Timing {
        ttl: opts.ttl.max(Duration::from_secs(2)),
        refresh: (opts.ttl / 4).max(Duration::from_secs(1)),
    };
    for m in members {
        match DeviceLock::acquire(&m.dev, &opts.owner, opts.wait, timing, say).await {
            Ok(l) => held.locks.push(l),
            Err(e) => return stopped(held, e.into()).await,
        }
    }
    // What an earlier run left (it crashed, or lost the device before its scenario ended) is
    // undone before anything runs there; what cannot be undone stops the run: nothing runs on
    // a device that is not as its owner had it.
    for m in members {
        let device = name(m);
        let undone = super::tidy::undo_on(&m.dev).await;
        if !undone.lines.is_empty() {
            say(&format!(
                "{device}: an earlier run left changes recorded on the device; undone first:\n  {}",
                undone.lines.join("\n  ")
            ));
        }
        if let Some(why) = undone.error {
            let stop = Error::Leftovers {
                device,
                why,
                unreachable: undone.unreachable,
            };
            return stopped(held, stop).await;
        }
    }
    // Is it the bench or the product? A failing check is the bench's trouble.
    if opts.health {
        let mut sick = Vec::new();
        for m in members {
            let device = name(m);
            let h = health::read(&m.dev, Limits::default()).await;
            let failed: Vec<String> = h.failed().iter().map(|c| format!("{}: {}", c.name, c.said)).collect();
            if !failed.is_empty() {
                sick.push(format!(
                    "{device} is not healthy, so nothing ran on it: {}",
                    failed.join("; ")
                ));
            }
            healths.insert(device, h);
        }
        if !sick.is_empty() {
            return stopped(held, Error::Unhealthy(sick.join("\n"))).await;
        }
    }
    Ok(held)
}

/// How a device is named in what is said: its inventory name, else its host.
fn name(m: &FleetMember) -> String {
    m.name.clone().unwrap_or_else(|| m.dev.ssh.host.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn leftovers_the_device_refused_fail_the_run_and_the_bench_s_troubles_are_infrastructure() {
        let left = |unreachable| Error::Leftovers {
            device: "lab-1".into(),
            why: "kept in /var/lib/nexus-hil/undo/000002".into(),
            unreachable,
        };
        assert_eq!(left(false).exit(), Exit::Failed);
        assert_eq!(left(true).exit(), Exit::Infra);
        assert_eq!(Error::Unhealthy("lab-1 is not healthy".into()).exit(), Exit::Infra);
        assert!(left(false)
            .to_string()
            .starts_with("lab-1: what an earlier run left could not be undone"));
    }
}
