//! The stand-in's SD card failing requests with EIO, as a worn card does: qemu's `blkdebug` put
//! between the guest's disk and the card's write log while it fails, through QMP.
//!
//! The card's nodes (mod.rs): `sdcard` (raw, the guest's disk) over `card-logged`
//! (`blklogwrites`) over the image file. To fail, a `blkdebug` node over `card-logged` is added
//! with one `once` rule per request to fail (EIO for writes on `pwritev`, for flushes on
//! `flush_to_os`, the event qemu raises on the node under the one flushed), and `blockdev-reopen`
//! makes it `sdcard`'s child; to heal, `card-logged` is the child again and the node goes.
//! The failing node sits above the log, so the log holds what the card took: a failed write is
//! not in it, and a failed flush is no flush point (a power cut afterwards keeps only what a
//! flush that worked had made durable). A failing area of the card is a rule per sector that
//! stays (not `once`): every write that touches one of them fails until the card heals.
//!
//! blkdebug activates a rule when its event is raised on the node, and each event that has
//! error rules first clears the active ones: a flush rule is active from the flush's own
//! `flush_to_os` (raised on `sdcard`'s child, the failing node, as the raw driver has no flush
//! of its own) until the next write's `pwritev`. A flush therefore fails when it comes, unless
//! a write comes in between; on btrfs, after a failed write of its metadata, none comes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::qmp::Qmp;
use super::Standin;
use crate::device::{Applied, FaultError, IoLog};

/// The guest's disk: a raw node whose child is switched.
pub const TOP: &str = "sdcard";
/// The card behind its write log.
pub const LOGGED: &str = "card-logged";
/// The failing node, there only while the card fails.
const FAILING: &str = "card-failing";
/// Most requests one fault may fail (one blkdebug rule each).
pub const MAX_COUNT: u32 = 10_000;
/// Most rules of a failing area: qemu 7.2 takes minutes over `blockdev-add` of 6,500 (its
/// option parsing is quadratic in them); 1,000 take a moment.
const MAX_AREA_RULES: u64 = 1_000;
/// A failing area's rules are at least this many sectors apart (128 KiB), further when the
/// area is large: 1 MiB for 1 GiB, so each MiB the backup's flush-behind writes out contiguously
/// holds one, and the request that holds it fails.
const AREA_STEP: u64 = 256;

/// What to fail, how often, where.
#[derive(Debug, Clone)]
pub struct Failing {
    pub write: bool,
    pub flush: bool,
    pub count: u32,
    /// Card sectors (from the disk's start) whose writes fail; empty: every write, `count` times.
    pub area: Vec<std::ops::Range<u64>>,
}

impl Failing {
    /// `blockdev-add` of the failing node: `count` one-shot EIO rules per kind of request, or
    /// for an area a lasting rule on every `AREA_STEP`-th sector of it (a request fails when it
    /// holds a rule's sector).
    fn node(&self) -> Value {
        let rule =
            |event: &str, iotype: &str| json!({"event": event, "iotype": iotype, "errno": libc::EIO, "once": true});
        let mut rules = Vec::new();
        if self.area.is_empty() {
            for _ in 0..self.count.min(MAX_COUNT) {
                if self.write {
                    rules.push(rule("pwritev", "write"));
                }
                if self.flush {
                    rules.push(rule("flush_to_os", "flush"));
                }
            }
        } else {
            for sector in area_sectors(&self.area) {
                rules.push(json!({"event": "pwritev", "iotype": "write", "errno": libc::EIO, "sector": sector}));
            }
        }
        json!({"driver": "blkdebug", "node-name": FAILING, "image": LOGGED, "inject-error": rules})
    }

    /// Whether every armed failure has happened.
    fn spent(&self, writes: u64, flushes: u64) -> bool {
        let count = u64::from(self.count);
        (!self.write || writes >= count) && (!self.flush || flushes >= count)
    }
}

/// The sectors of `area` that get a rule: multiples of a step (`AREA_STEP`, doubled until
/// there are at most `MAX_AREA_RULES`) inside its ranges.
fn area_sectors(area: &[std::ops::Range<u64>]) -> Vec<u64> {
    let total: u64 = area.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    let mut step = AREA_STEP;
    while total / step > MAX_AREA_RULES {
        step *= 2;
    }
    area.iter()
        .flat_map(|r| (r.start.div_ceil(step) * step..r.end).step_by(step as usize))
        .collect()
}

/// `(failed writes, failed flushes)` of the guest's disk so far, as qemu's block statistics
/// count them (the device model accounts each request it completed with an error).
async fn failed(qmp: &mut Qmp) -> Result<(u64, u64), FaultError> {
    let stats = qmp.execute("query-blockstats", json!({})).await.map_err(infra)?;
    let disk = stats
        .as_array()
        .and_then(|a| a.iter().find(|d| d["node-name"] == TOP))
        .ok_or_else(|| FaultError::Failed(format!("qemu's block statistics have no disk on node {TOP:?}")))?;
    let n = |k: &str| disk["stats"][k].as_u64().unwrap_or(0);
    Ok((n("failed_wr_operations"), n("failed_flush_operations")))
}

fn infra(e: crate::error::InfraError) -> FaultError {
    FaultError::Failed(e.to_string())
}

/// `sdcard`'s child switched to `child`.
async fn reopen(qmp: &mut Qmp, child: &str) -> Result<(), FaultError> {
    qmp.execute(
        "blockdev-reopen",
        json!({"options": [{"driver": "raw", "node-name": TOP, "file": child}]}),
    )
    .await
    .map(drop)
    .map_err(infra)
}

impl Standin {
    /// Fails what `failing` says until it has all failed or `heal` is notified, then heals;
    /// writes the failed requests to `log` and names them in the note.
    pub async fn io_error(
        &self,
        failing: Failing,
        heal: std::sync::Arc<tokio::sync::Notify>,
        log: IoLog,
    ) -> Result<Applied, FaultError> {
        if !self.log_writes {
            return Err(FaultError::Unsupported(
                "this stand-in's card has no switchable node (it was started without logged writes); \
                 fault.io_error needs --target standin"
                    .into(),
            ));
        }
        if self.qemu_pid() == 0 {
            return Err(FaultError::Failed("the stand-in is powered off".into()));
        }
        let mut qmp = Qmp::connect(&self.qmp, Duration::from_secs(10)).await.map_err(infra)?;
        let before = failed(&mut qmp).await?;
        qmp.execute("blockdev-add", failing.node()).await.map_err(infra)?;
        if let Err(e) = reopen(&mut qmp, FAILING).await {
            let _ = qmp.execute("blockdev-del", json!({"node-name": FAILING})).await;
            return Err(e);
        }
        let armed = Instant::now();
        let note =
            |l: &IoLog, f: &dyn Fn(&mut crate::device::IoState)| f(&mut l.lock().unwrap_or_else(|p| p.into_inner()));
        note(&log, &|s| s.armed_at = Some(armed));
        let ended = loop {
            tokio::select! {
                () = heal.notified() => break "the window ended",
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let now = match failed(&mut qmp).await {
                        Ok(n) => n,
                        Err(e) => return Err(heal_after(&mut qmp, e).await),
                    };
                    let (w, f) = (now.0 - before.0, now.1 - before.1);
                    note(&log, &|s| { s.failed_writes = w; s.failed_flushes = f; });
                    if failing.spent(w, f) {
                        break "every armed failure happened";
                    }
                }
            }
        };
        heal_card(&mut qmp, failing.count).await?;
        let healed = Instant::now();
        // Requests that failed between the last look and the heal.
        let last = failed(&mut qmp).await?;
        let (w, f) = (last.0 - before.0, last.1 - before.1);
        note(&log, &|s| {
            s.failed_writes = w;
            s.failed_flushes = f;
            s.healed_at = Some(healed);
        });
        let area = if failing.area.is_empty() {
            String::new()
        } else {
            let sectors: u64 = failing.area.iter().map(|r| r.end - r.start).sum();
            format!(
                " to its failing area ({} MiB; {} rule(s))",
                sectors / 2048,
                area_sectors(&failing.area).len()
            )
        };
        Ok(Applied {
            ports: None,
            note: Some(format!(
                "the card failed {w} write(s){area} and {f} flush(es) with EIO over {:.2} s (qemu's block \
                 statistics of the guest's disk), then healed: {ended}",
                healed.duration_since(armed).as_secs_f64()
            )),
        })
    }
}

/// `card-logged` made `sdcard`'s child again and the failing node removed. A reopen flushes
/// first, through the failing node: while it has flush rules left that flush fails (the guest
/// never sees it, and qemu's statistics of its disk do not count it) and uses one up, so the
/// reopen is tried again, at most once per rule.
async fn heal_card(qmp: &mut Qmp, count: u32) -> Result<(), FaultError> {
    let mut tries = 0;
    loop {
        match reopen(qmp, LOGGED).await {
            Ok(()) => break,
            Err(FaultError::Failed(m)) if m.contains("Error flushing") && tries <= count.min(MAX_COUNT) => tries += 1,
            Err(e) => return Err(e),
        }
    }
    qmp.execute("blockdev-del", json!({"node-name": FAILING}))
        .await
        .map(drop)
        .map_err(infra)
}

/// The statistics could not be read while the card fails: heal it before saying so.
async fn heal_after(qmp: &mut Qmp, e: FaultError) -> FaultError {
    let healed = heal_card(qmp, MAX_COUNT).await.is_ok();
    let m = match e {
        FaultError::Failed(m) | FaultError::Unsupported(m) => m,
    };
    FaultError::Failed(if healed {
        format!("{m}; the card was healed")
    } else {
        format!("{m}; the card could not be healed either")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_request_to_fail() {
        let f = Failing {
            write: true,
            flush: true,
            count: 3,
            area: Vec::new(),
        };
        let node = f.node();
        let rules = node["inject-error"].as_array().unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(rules.iter().filter(|r| r["iotype"] == "flush").count(), 3);
        assert!(rules.iter().all(|r| r["errno"] == 5 && r["once"] == true));
        assert_eq!(node["image"], LOGGED);
        assert!(!f.spent(3, 2));
        assert!(f.spent(3, 3));
        let writes = Failing {
            write: true,
            flush: false,
            count: 2,
            area: Vec::new(),
        };
        assert!(writes.spent(2, 0));
    }

    #[test]
    fn an_area_fails_every_write_that_touches_it_until_healed() {
        let f = Failing {
            write: true,
            flush: false,
            count: 1,
            area: vec![1000..1600, 4096..4097],
        };
        let node = f.node();
        let rules = node["inject-error"].as_array().unwrap();
        let sectors: Vec<u64> = rules.iter().map(|r| r["sector"].as_u64().unwrap()).collect();
        assert_eq!(sectors, [1024, 1280, 1536, 4096]);
        assert!(rules
            .iter()
            .all(|r| r["event"] == "pwritev" && r["iotype"] == "write" && r.get("once").is_none()));
        // A large area: fewer rules, further apart, still inside it.
        let whole = 0..(1 << 24);
        let big = area_sectors(std::slice::from_ref(&whole));
        assert!(big.len() as u64 <= MAX_AREA_RULES && big.len() > 500, "{}", big.len());
        assert!(big.iter().all(|&s| s < 1 << 24));
    }
}
