//! `nexus-hil conform`: checks a device against the contract in `spec/nexus-backup-api.md`.
//!
//! Every item the vendor documents ([doc]) must hold, or the check fails. Every item this project
//! defined where the documentation is silent ([ours]) is reported as the same as the emulator or
//! as a deviation, never as a failure. Types are read from the device (introspection and the
//! replies' own signatures), so a device whose ids are `t` or `i` is called correctly and
//! reported with the type it has. This module is the result model; [`interfaces`] checks what
//! introspection shows, [`device`] what the device does. [`Error`]: the device could not be
//! checked at all.

pub(crate) mod device;
pub(crate) mod interfaces;

use serde::Serialize;

pub use device::check;

/// Why the device could not be checked at all (each item that fails is a [`Check`], not this).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin user cannot run commands as root without a password prompt.
    #[error("{0}")]
    Sudo(String),
    /// No D-Bus connection to the device as root.
    #[error(transparent)]
    Bus(#[from] crate::transport::Error),
}

/// Where a contract item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Doc,
    Ours,
}

/// How an item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A [doc] item holds.
    Ok,
    /// A [doc] item does not hold.
    Fail,
    /// An [ours] item is as the emulator does it.
    Same,
    /// An [ours] item differs; reported, not failed.
    Deviates,
    /// The device gave no occasion to check it (the note says why).
    NotSeen,
}

/// One checked item of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub source: Source,
    pub item: String,
    pub status: Status,
    pub note: String,
}

impl Check {
    pub(crate) fn doc(item: impl Into<String>, ok: bool, note: impl Into<String>) -> Self {
        let status = if ok { Status::Ok } else { Status::Fail };
        Self {
            source: Source::Doc,
            item: item.into(),
            status,
            note: note.into(),
        }
    }

    pub(crate) fn ours(item: impl Into<String>, same: bool, note: impl Into<String>) -> Self {
        let status = if same { Status::Same } else { Status::Deviates };
        Self {
            source: Source::Ours,
            item: item.into(),
            status,
            note: note.into(),
        }
    }

    pub(crate) fn not_seen(source: Source, item: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            source,
            item: item.into(),
            status: Status::NotSeen,
            note: note.into(),
        }
    }
}

/// The whole result, as the terminal shows it.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let source = match c.source {
            Source::Doc => "[doc] ",
            Source::Ours => "[ours]",
        };
        let status = match c.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Same => "same",
            Status::Deviates => "deviates",
            Status::NotSeen => "not seen",
        };
        out.push_str(&format!("{source} {status:<8}  {}: {}\n", c.item, c.note));
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} documented item(s) hold, {} fail; {} of ours the same, {} deviate, {} not seen\n",
        count(Status::Ok),
        count(Status::Fail),
        count(Status::Same),
        count(Status::Deviates),
        count(Status::NotSeen)
    ));
    out
}

/// True when every [doc] item holds.
pub fn conforms(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Compares a reply's keys and their D-Bus types with ours.
pub(crate) fn check_keys(item: &str, types: &serde_json::Value, want: &[(&str, &str)]) -> Check {
    let mut diffs = Vec::new();
    for (k, t) in want {
        match types.get(k).and_then(|v| v.as_str()) {
            Some(seen) if seen == *t => {}
            Some(seen) => diffs.push(format!("{k} is {seen}, ours {t}")),
            None => diffs.push(format!("no key {k}")),
        }
    }
    let shown: Vec<String> = want.iter().map(|(k, t)| format!("{k} {t}")).collect();
    if diffs.is_empty() {
        Check::ours(item, true, shown.join(", "))
    } else {
        Check::ours(item, false, format!("{}; ours: {}", diffs.join("; "), shown.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_with_their_types() {
        let types = serde_json::json!({"id": "t", "progress": "u"});
        let c = check_keys("Status keys", &types, &[("id", "u"), ("progress", "u"), ("state", "s")]);
        assert_eq!(c.status, Status::Deviates);
        assert_eq!(c.note, "id is t, ours u; no key state; ours: id u, progress u, state s");
    }
}
