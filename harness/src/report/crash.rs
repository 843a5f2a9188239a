//! The crash-state report (`nexus-hil crash-states`): per operation, the flush points its write
//! log held, the states checked by kind (flush point, prefix, reordered, torn), the violations found (each with the state's image and a
//! command that mounts it) and the time it took; as JSON, a terminal table and an HTML page.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::html::{esc, CSS};

/// One `crash-states` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrashReport {
    /// What recorded the operations (`emulator`, `standin`).
    pub target: String,
    /// The seed of the in-between states' draws; the same seed draws the same states.
    pub seed: u64,
    /// Reordered states: subsets of up to this many writes of a flush epoch dropped (0: none).
    #[serde(default)]
    pub reorder: usize,
    /// Torn states: one write of a flush epoch cut at a 512-byte sector.
    #[serde(default)]
    pub torn: bool,
    /// The daemon was broken on purpose (violations expected); `None`: the real daemon.
    #[serde(default)]
    pub broken_daemon: Option<BrokenDaemonReport>,
    pub operations: Vec<OperationReport>,
    /// Bringing the recording device up, every operation on it, and taking it down.
    #[serde(default)]
    pub record_s: f64,
    pub duration_s: f64,
}

/// A daemon broken on purpose, and the check meant to catch it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokenDaemonReport {
    pub name: String,
    pub what: String,
    pub check: String,
}

impl CrashReport {
    /// Which daemon ran, in a line.
    pub fn daemon(&self) -> String {
        match &self.broken_daemon {
            None => "the real nexus-backupd".into(),
            Some(b) => format!(
                "nexus-backupd BROKEN on purpose, {} ({}): the {} check must catch it, violations expected",
                b.name, b.what, b.check
            ),
        }
    }
}

/// One operation, recorded once and checked at its states.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationReport {
    pub operation: String,
    /// What the operation did, in a sentence.
    pub what: String,
    /// Entries the write log held from the operation's start to its end.
    pub log_entries: usize,
    /// FLUSH entries in that span.
    pub flush_points: usize,
    /// Flush points that differ from the one before (a flush with no write since is the same state).
    pub distinct_states: usize,
    /// States checked: flush points, and in-order prefixes of the writes between two flushes.
    pub states_checked: usize,
    pub prefixes_checked: usize,
    /// Of them, a flush epoch's writes with some dropped, and with one torn.
    #[serde(default)]
    pub reordered_checked: usize,
    #[serde(default)]
    pub torn_checked: usize,
    /// The reordered and torn states there were to draw from.
    #[serde(default)]
    pub reordered_candidates: usize,
    #[serde(default)]
    pub torn_candidates: usize,
    pub violations: Vec<Violation>,
    /// Recording the operation (on a device already up).
    pub record_s: f64,
    /// Checking its states.
    pub check_s: f64,
    /// An error that stopped the operation's recording or checks (not a violation: nothing was proven).
    pub error: Option<String>,
}

impl OperationReport {
    /// Flush points checked (the states that are no other kind).
    pub fn flush_points_checked(&self) -> usize {
        self.states_checked
            .saturating_sub(self.prefixes_checked + self.reordered_checked + self.torn_checked)
    }

    pub fn seconds_per_state(&self) -> f64 {
        if self.states_checked == 0 {
            0.0
        } else {
            self.check_s / self.states_checked as f64
        }
    }
}

/// A state that broke a check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Violation {
    /// Log entries applied in this state.
    pub entries: usize,
    /// A flush point (false: any other kind).
    pub flush_point: bool,
    /// `flush point`, `prefix`, `reordered` or `torn`.
    #[serde(default)]
    pub kind: String,
    /// The state's name: its kind, log entry, epoch, dropped entries or the torn one and where
    /// it was cut (with the seed and the same log, the same state).
    #[serde(default)]
    pub state: String,
    /// The check that failed (`btrfs check`, `mount`, `recovery`, `backups`, `ids`, `activate`,
    /// `automation`).
    pub check: String,
    pub what: String,
    /// The state's image, kept with the report, and the command that mounts it.
    pub image: Option<String>,
    pub mount: Option<String>,
}

impl Violation {
    /// The state's name (reports written before states had names: its entry and kind).
    pub fn name(&self) -> String {
        if !self.state.is_empty() {
            return self.state.clone();
        }
        let kind = if self.flush_point {
            "flush point"
        } else {
            "between flushes"
        };
        format!("{kind} at entry {}", self.entries)
    }
}

impl CrashReport {
    /// The kinds beyond in-order prefixes that were asked for, in words.
    pub fn beyond(&self) -> String {
        match (self.reorder, self.torn) {
            (0, false) => "no reordered or torn states".into(),
            (0, true) => "torn states (one write cut at a 512-byte sector)".into(),
            (k, torn) => format!(
                "reordered states (up to {k} write(s) of a flush epoch dropped){}",
                if torn {
                    ", torn states (one write cut at a 512-byte sector)"
                } else {
                    ""
                }
            ),
        }
    }

    pub fn violations(&self) -> usize {
        self.operations.iter().map(|o| o.violations.len()).sum()
    }

    pub fn errors(&self) -> usize {
        self.operations.iter().filter(|o| o.error.is_some()).count()
    }
}

/// The table for a terminal.
pub fn table(r: &CrashReport) -> String {
    let mut t = format!("daemon: {}\n", r.daemon());
    let _ = writeln!(
        t,
        "{:<16} {:>8} {:>7} {:>8} {:>8} {:>6} {:>6} {:>9} {:>6} {:>10} {:>8} {:>9}",
        "operation",
        "entries",
        "flushes",
        "distinct",
        "checked",
        "flush",
        "prefix",
        "reordered",
        "torn",
        "violations",
        "seconds",
        "s/state"
    );
    for o in &r.operations {
        let _ = writeln!(
            t,
            "{:<16} {:>8} {:>7} {:>8} {:>8} {:>6} {:>6} {:>9} {:>6} {:>10} {:>8.1} {:>9.2}",
            o.operation,
            o.log_entries,
            o.flush_points,
            o.distinct_states,
            o.states_checked,
            o.flush_points_checked(),
            o.prefixes_checked,
            o.reordered_checked,
            o.torn_checked,
            o.violations.len(),
            o.record_s + o.check_s,
            o.seconds_per_state()
        );
    }
    let _ = writeln!(
        t,
        "recording on {}: {:.1} s in all (the device up, every operation, the device down); seed {}; {}",
        r.target,
        r.record_s,
        r.seed,
        r.beyond()
    );
    for o in &r.operations {
        if let Some(e) = &o.error {
            let _ = writeln!(t, "{}: NOT CHECKED: {e}", o.operation);
        }
        for v in o.violations.iter().take(10) {
            let _ = writeln!(t, "{}: {}: {}: {}", o.operation, v.name(), v.check, v.what);
            if let Some(m) = &v.mount {
                let _ = writeln!(t, "    look at it: {m}");
            }
        }
        if o.violations.len() > 10 {
            let _ = writeln!(
                t,
                "{}: ... {} more in crash-states.json",
                o.operation,
                o.violations.len() - 10
            );
        }
    }
    t
}

/// One self-contained HTML page.
pub fn render(r: &CrashReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nexus-hil crash states</title>\n<style>{CSS}</style></head><body>\n\
         <h1>Crash states on {}</h1>\n<p class=\"totals\">{} violation(s) in {} operation(s), seed {}, {}, in {:.1} s (recording {:.1} s)</p>\n<p class=\"daemon\">daemon: {}</p>\n",
        esc(&r.target),
        r.violations(),
        r.operations.len(),
        r.seed,
        esc(&r.beyond()),
        r.duration_s,
        r.record_s,
        esc(&r.daemon())
    );
    h.push_str(
        "<table><tr><th>operation</th><th>log entries</th><th>flush points</th><th>distinct states</th>\
         <th>states checked</th><th>flush points</th><th>prefixes</th><th>reordered (of)</th><th>torn (of)</th><th>violations</th><th>seconds</th><th>s/state</th></tr>\n",
    );
    for o in &r.operations {
        let _ = writeln!(
            h,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td class=\"{}\">{}</td><td>{:.1}</td><td>{:.2}</td></tr>",
            esc(&o.what),
            esc(&o.operation),
            o.log_entries,
            o.flush_points,
            o.distinct_states,
            o.states_checked,
            o.flush_points_checked(),
            o.prefixes_checked,
            o.reordered_checked,
            o.reordered_candidates,
            o.torn_checked,
            o.torn_candidates,
            if o.violations.is_empty() && o.error.is_none() { "passed" } else { "failed" },
            match &o.error {
                Some(e) => format!("not checked: {}", esc(e)),
                None => o.violations.len().to_string(),
            },
            o.record_s + o.check_s,
            o.seconds_per_state()
        );
    }
    h.push_str("</table>\n");
    for o in r.operations.iter().filter(|o| !o.violations.is_empty()) {
        let _ = writeln!(
            h,
            "<h2>{}: violations</h2>\n<table><tr><th>state</th><th>check</th><th>what</th><th>look at it</th></tr>",
            esc(&o.operation)
        );
        for v in &o.violations {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&v.name()),
                esc(&v.check),
                esc(&v.what),
                esc(v.mount.as_deref().unwrap_or("(image not kept)"))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CrashReport {
        CrashReport {
            target: "emulator".into(),
            seed: 7,
            reorder: 1,
            torn: true,
            broken_daemon: Some(BrokenDaemonReport {
                name: "publish-before-sync".into(),
                what: "a backup gets its final name <before> its data is synced".into(),
                check: "backups".into(),
            }),
            operations: vec![OperationReport {
                operation: "backup".into(),
                what: "a backup of a snapshot".into(),
                log_entries: 900,
                flush_points: 120,
                distinct_states: 80,
                states_checked: 12,
                prefixes_checked: 2,
                reordered_checked: 3,
                torn_checked: 1,
                reordered_candidates: 40,
                torn_candidates: 90,
                violations: vec![Violation {
                    entries: 433,
                    flush_point: false,
                    kind: "torn".into(),
                    state: "torn at entry 433 (epoch from 430), entry 431 cut after 1 sector(s)".into(),
                    check: "backups".into(),
                    what: "GetList lists backup 2 <finished>, but it does not decrypt".into(),
                    image: Some("backup/state-433.img".into()),
                    mount: Some("sudo mount -o loop,offset=269484032 backup/state-433.img /mnt".into()),
                }],
                record_s: 10.0,
                check_s: 30.0,
                error: None,
            }],
            record_s: 55.0,
            duration_s: 40.0,
        }
    }

    #[test]
    fn the_table_names_each_violation_and_how_to_look_at_it() {
        let t = table(&report());
        assert!(
            t.contains("backup") && t.contains("433") && t.contains("does not decrypt"),
            "{t}"
        );
        assert!(t.contains("look at it: sudo mount -o loop"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("2.50"), "seconds per state: {t}");
        // States by kind: 6 flush points, 2 prefixes, 3 reordered, 1 torn; and the state named.
        let row: Vec<&str> = t.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(&row[4..9], &["12", "6", "2", "3", "1"], "{t}");
        assert!(
            t.contains("torn at entry 433 (epoch from 430), entry 431 cut after 1 sector(s)"),
            "{t}"
        );
        assert!(t.contains("up to 1 write(s) of a flush epoch dropped"), "{t}");
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_round_trips_as_json() {
        let r = report();
        let h = render(&r);
        assert!(h.contains("&lt;finished&gt;") && !h.contains("<finished>"), "{h}");
        assert!(
            h.contains("publish-before-sync") && h.contains("&lt;before&gt;") && h.contains("violations expected"),
            "{h}"
        );
        assert!(table(&r).starts_with("daemon: nexus-backupd BROKEN on purpose, publish-before-sync"));
        let back: CrashReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!((r.violations(), r.errors()), (1, 0));
    }
}
