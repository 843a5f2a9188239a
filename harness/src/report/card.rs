//! A card read after a real power cut (`fault.power_cut` with `inspect: true` on a bench with an
//! SD mux): where its btrfs partition was imaged, how long the read and the checks took, and the
//! checks' table (the checks `crash-states` runs on a state), as the step's part of the JSON, a
//! few terminal lines and an HTML table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::html::esc;

/// The card as the cut left it, read on this machine and checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CardRead {
    /// The card's stable path on this machine (the inventory's).
    pub card: String,
    /// The btrfs partition read: its first byte on the card and its length.
    pub partition_start: u64,
    pub partition_bytes: u64,
    /// The bytes that held data (all-zero blocks are left as holes in the image).
    pub data_bytes: u64,
    /// The partition's image, in the scenario's work folder, as the cut left it.
    pub image: String,
    /// From the switch to this machine until the card was back on the device.
    pub read_s: f64,
    pub check_s: f64,
    pub checks: Vec<CardCheck>,
}

/// One check of the card, in the order they run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CardCheck {
    /// The check's name, as `crash-states` names it (`btrfs check`, `mount`, `automation`,
    /// `recovery`, `ids`, `backups`, `earlier backups`).
    pub check: String,
    pub outcome: CheckOutcome,
    /// What it found (each violation), or why it did not run.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub found: Vec<String>,
}

/// How one check of a read card came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// An earlier check failed so that this one could not run (the card does not mount, the
    /// daemon does not start on it).
    NotReached,
}

impl CheckOutcome {
    fn word(self) -> &'static str {
        match self {
            CheckOutcome::Passed => "passed",
            CheckOutcome::Failed => "FAILED",
            CheckOutcome::NotReached => "not reached",
        }
    }
}

impl CardRead {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<&CardCheck> {
        self.checks
            .iter()
            .filter(|c| c.outcome == CheckOutcome::Failed)
            .collect()
    }

    /// The table as text: a heading line, then one line per check and one per finding.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "the card after the cut ({}; btrfs partition at byte {}, {} bytes, {} of data, imaged to {} in {:.1} s, checked in {:.1} s):",
            self.card, self.partition_start, self.partition_bytes, self.data_bytes, self.image, self.read_s, self.check_s
        )];
        for c in &self.checks {
            out.push(format!("  {:<16} {}", c.check, c.outcome.word()));
            out.extend(c.found.iter().map(|f| format!("    {f}")));
        }
        out
    }

    /// The table as an HTML section; red where a check failed.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let failed = !self.failed().is_empty();
        let _ = writeln!(
            h,
            "<details{}><summary>the card after the cut: {}</summary><p>{} &middot; btrfs partition at byte {}, {} bytes ({} of data) &middot; imaged to {} in {:.1} s &middot; checked in {:.1} s</p>\
             <table><tr><th>check</th><th>result</th><th>found</th></tr>",
            if failed { " open class=\"failed\"" } else { "" },
            if failed { "a check failed" } else { "every check passed" },
            esc(&self.card),
            self.partition_start,
            self.partition_bytes,
            self.data_bytes,
            esc(&self.image),
            self.read_s,
            self.check_s
        );
        for c in &self.checks {
            let class = match c.outcome {
                CheckOutcome::Passed => "passed",
                CheckOutcome::Failed => "failed",
                CheckOutcome::NotReached => "skipped",
            };
            let _ = writeln!(
                h,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.check),
                c.outcome.word(),
                c.found.iter().map(|f| esc(f)).collect::<Vec<_>>().join("<br>")
            );
        }
        h.push_str("</table></details>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(failing: bool) -> CardRead {
        let check = |name: &str, outcome, found: &[&str]| CardCheck {
            check: name.into(),
            outcome,
            found: found.iter().map(|f| f.to_string()).collect(),
        };
        CardRead {
            card: "/dev/disk/by-id/usb-sdmux-0:0".into(),
            partition_start: 269_484_032,
            partition_bytes: 512 << 20,
            data_bytes: 80 << 20,
            image: "card-after-cut.img".into(),
            read_s: 3.5,
            check_s: 41.0,
            checks: vec![
                check(
                    "btrfs check",
                    if failing {
                        CheckOutcome::Failed
                    } else {
                        CheckOutcome::Passed
                    },
                    if failing {
                        &["btrfs check --readonly fails: <bad> superblock"]
                    } else {
                        &[]
                    },
                ),
                check("recovery", CheckOutcome::Passed, &[]),
            ],
        }
    }

    #[test]
    fn the_table_names_each_check_and_a_failure_is_red_and_escaped() {
        let ok = read(false);
        assert!(ok.failed().is_empty());
        let lines = ok.lines().join("\n");
        assert!(
            lines.contains("btrfs check      passed") && lines.contains("recovery"),
            "{lines}"
        );
        assert!(ok.html().contains("every check passed") && !ok.html().contains("class=\"failed\""));

        let bad = read(true);
        assert_eq!(bad.failed().len(), 1);
        assert!(bad
            .lines()
            .join("\n")
            .contains("btrfs check      FAILED\n    btrfs check --readonly fails"));
        let html = bad.html();
        assert!(html.contains("<details open class=\"failed\">"), "{html}");
        assert!(html.contains("&lt;bad&gt;") && !html.contains("<bad>"), "{html}");
    }
}
