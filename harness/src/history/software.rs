//! What software each run found on its device (the harness's commit, the daemon, the kernel, the
//! installed packages), kept in the history with each distinct package list stored once by its
//! hash, compressed; and what differs from the last run that passed on the same device, for the
//! report's header.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::report::{DeviceInfo, Outcome, PassedRun, RunReport, WhatChanged};

/// The packages of a `dpkg-query -W -f '${Package} ${Version}\n'` list: name to version.
pub fn parse_packages(list: &str) -> BTreeMap<String, String> {
    list.lines()
        .filter_map(|l| {
            let (name, version) = l.trim().split_once(' ')?;
            Some((name.to_string(), version.trim().to_string()))
        })
        .collect()
}

/// A package list in one canonical form (sorted, one `name version` a line), so the same
/// packages always hash alike.
pub fn canonical(list: &str) -> String {
    parse_packages(list).iter().map(|(n, v)| format!("{n} {v}\n")).collect()
}

/// The sha256 of a canonical list, in hex.
pub fn hash(canonical: &str) -> String {
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A list as the store keeps it: gzip, then base64 (a text column works on SQLite and
/// PostgreSQL alike).
pub fn pack(canonical: &str) -> Result<String, super::Error> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(canonical.as_bytes())
        .and_then(|()| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| super::Error::Write(format!("cannot compress a package list: {e}")))
}

/// A list as [`pack`] stored it.
pub fn unpack(packed: &str) -> Result<String, super::Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed.trim())
        .map_err(|e| super::Error::Read(format!("a package list in the history is not base64: {e}")))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .map_err(|e| super::Error::Read(format!("a package list in the history does not decompress: {e}")))?;
    Ok(text)
}

/// What a run found on one device, as the history keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub commit: String,
    pub daemon: Option<String>,
    pub kernel: Option<String>,
    /// The canonical package list, when the device has one.
    pub packages: Option<String>,
}

impl Found {
    /// What `info` told, with the harness's `commit`.
    pub fn from_info(info: &DeviceInfo, commit: &str) -> Self {
        Self {
            commit: commit.to_string(),
            daemon: info.daemon.clone(),
            kernel: info.kernel.clone(),
            packages: info.packages.as_deref().map(canonical),
        }
    }
}

/// The devices of `report`, each with what its first scenario that asked was told (the first
/// with a package list, when one has it: a merged report's first scenario on a device may be
/// one whose shard kept no list).
pub fn found_per_device(report: &RunReport) -> BTreeMap<String, DeviceInfo> {
    let mut out: BTreeMap<String, DeviceInfo> = BTreeMap::new();
    for s in &report.scenarios {
        let device = s.device.clone().unwrap_or_else(|| report.target.clone());
        let Some(info) = &s.device_info else { continue };
        match out.get(&device) {
            Some(had) if had.packages.is_some() || info.packages.is_none() => {}
            _ => {
                out.insert(device, info.clone());
            }
        }
    }
    out
}

/// Keeps one package list per device in `report` (its first scenario's that has one): the
/// report carries it for `report merge` and the history, not once per scenario.
pub fn keep_one_list_per_device(report: &mut RunReport) {
    let target = report.target.clone();
    let mut kept = std::collections::BTreeSet::new();
    for s in &mut report.scenarios {
        let device = s.device.clone().unwrap_or_else(|| target.clone());
        if let Some(info) = s.device_info.as_mut().filter(|i| i.packages.is_some()) {
            if !kept.insert(device) {
                info.packages = None;
            }
        }
    }
}

/// Whether the run passed on `device`: no scenario there failed or broke, and one passed at
/// least (skips, such as a bench's emulator-only scenarios, do not spoil it).
pub fn passed_on(report: &RunReport, device: &str) -> bool {
    if report.infra_error.is_some() {
        return false;
    }
    let on: Vec<Outcome> = report
        .scenarios
        .iter()
        .filter(|s| s.device.as_deref().unwrap_or(&report.target) == device)
        .map(|s| s.outcome)
        .collect();
    on.contains(&Outcome::Passed) && !on.iter().any(|o| matches!(o, Outcome::Failed | Outcome::InfraError))
}

/// What differs between `then` (the last passing run, `None` when there is none) and `now`.
pub fn diff(device: &str, then: Option<(PassedRun, Found)>, now: &Found) -> WhatChanged {
    let mut w = WhatChanged {
        device: device.to_string(),
        packages_sha256: now.packages.as_deref().map(hash),
        ..Default::default()
    };
    let Some((run, before)) = then else {
        return w;
    };
    w.since = Some(run);
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let fields = [
        ("harness", Some(short(&before.commit)), Some(short(&now.commit))),
        ("daemon", before.daemon.clone(), now.daemon.clone()),
        ("kernel", before.kernel.clone(), now.kernel.clone()),
    ];
    for (what, b, n) in fields {
        if b != n {
            let or_none = |v: Option<String>| v.unwrap_or_else(|| "(none)".into());
            w.changed.push((what.to_string(), or_none(b), or_none(n)));
        }
    }
    match (&before.packages, &now.packages) {
        (Some(b), Some(n)) if hash(b) != hash(n) => {
            let (b, n) = (parse_packages(b), parse_packages(n));
            for (name, v) in &n {
                match b.get(name) {
                    None => w.added.push((name.clone(), v.clone())),
                    Some(old) if old != v => w.upgraded.push((name.clone(), old.clone(), v.clone())),
                    Some(_) => {}
                }
            }
            for (name, v) in &b {
                if !n.contains_key(name) {
                    w.removed.push((name.clone(), v.clone()));
                }
            }
        }
        (Some(_), Some(_)) | (None, None) => {}
        (None, Some(_)) => w
            .notes
            .push("the passing run recorded no package list: packages not compared".into()),
        (Some(_), None) => w
            .notes
            .push("the device lists no packages now (no dpkg-query): packages not compared".into()),
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(packages: &str, kernel: &str) -> Found {
        Found {
            commit: "0123456789abcdef".into(),
            daemon: Some("nexus-backupd 0.1.0".into()),
            kernel: Some(kernel.into()),
            packages: Some(canonical(packages)),
        }
    }

    fn passed() -> PassedRun {
        PassedRun {
            run_id: "1-2-dev".into(),
            commit: "0123456789abcdef".into(),
            started_at: 1,
        }
    }

    #[test]
    fn a_list_hashes_alike_in_any_order_and_survives_the_store() {
        let a = canonical("zlib1g 1:1.3\nbash 5.2-2\n");
        assert_eq!(a, "bash 5.2-2\nzlib1g 1:1.3\n");
        assert_eq!(hash(&a), hash(&canonical("bash 5.2-2\nzlib1g 1:1.3")));
        assert_ne!(hash(&a), hash(&canonical("bash 5.2-3\nzlib1g 1:1.3")));
        let big: String = (0..2000).map(|i| format!("package-{i} 1.{i}-1\n")).collect();
        let packed = pack(&big).unwrap();
        assert!(packed.len() < big.len() / 3, "{} of {}", packed.len(), big.len());
        assert_eq!(unpack(&packed).unwrap(), big);
        assert!(unpack("not base64!").unwrap_err().to_string().contains("base64"));
    }

    #[test]
    fn the_diff_names_each_added_removed_and_upgraded_package_and_the_kernel() {
        let then = found("bash 5.2-2\nold-tool 1.0\nopenssl 3.0.1\n", "6.1.0-1");
        let now = found("bash 5.2-2\nopenssl 3.0.2\nnexus-hil-marker 1.0\n", "6.1.0-2");
        let w = diff("pi-1", Some((passed(), then)), &now);
        assert_eq!(w.added, [("nexus-hil-marker".to_string(), "1.0".to_string())]);
        assert_eq!(w.removed, [("old-tool".to_string(), "1.0".to_string())]);
        assert_eq!(
            w.upgraded,
            [("openssl".to_string(), "3.0.1".to_string(), "3.0.2".to_string())]
        );
        assert_eq!(
            w.changed,
            [("kernel".to_string(), "6.1.0-1".to_string(), "6.1.0-2".to_string())]
        );
        assert!(!w.is_empty());
        // The same software: nothing to say; no passing run: nothing compared, and it says so.
        assert!(diff("pi-1", Some((passed(), now.clone())), &now).is_empty());
        let first = diff("pi-1", None, &now);
        assert!(first.since.is_none() && first.is_empty());
        assert_eq!(first.packages_sha256.as_deref().map(str::len), Some(64));
    }

    /// Two lists recorded, one of them twice: stored once each; the last passing run on the
    /// device is found with its list, a later failed run's is not taken.
    #[tokio::test]
    async fn each_distinct_list_is_stored_once_and_the_last_passing_run_is_found() {
        use crate::history::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("h.sqlite").display().to_string();
        let store = Store::open(&spec).await.unwrap();
        let one = found("bash 5.2-2\n", "6.1");
        let two = found("bash 5.2-2\nnexus-hil-marker 1.0\n", "6.1");
        let runs = [
            ("pi-1", 10, &one, true),
            ("pi-1", 20, &one, true),
            ("pi-1", 30, &two, false),
            ("pi-2", 40, &two, true),
        ];
        for (device, at, f, passed) in runs {
            let key = crate::history::record::key(device, "real", at, "run");
            store.append(&key, &[]).await.unwrap();
            store.record_software(&key.id, f, passed).await.unwrap();
        }
        let (run, then) = store.last_passed("pi-1").await.unwrap().unwrap();
        assert_eq!(run.started_at, 20, "the last passing run, not the failed one after it");
        // The commit is the run's (as `history` keys it): the list, kernel and daemon are what it found.
        assert_eq!(
            then,
            Found {
                commit: run.commit.clone(),
                ..one.clone()
            }
        );
        assert!(store.last_passed("pi-3").await.unwrap().is_none());
        let lists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM package_lists")
            .fetch_one(&store.pool_for_tests())
            .await
            .unwrap();
        assert_eq!(lists, 2);
    }

    #[test]
    fn a_run_passed_on_a_device_when_nothing_there_failed_and_one_passed() {
        let mut r = RunReport {
            target: "t".into(),
            duration_s: 0.0,
            scenarios: Vec::new(),
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
            changes: Vec::new(),
        };
        let s = |outcome: &str, device: &str| -> crate::report::ScenarioReport {
            serde_json::from_value(serde_json::json!({
                "name": "s", "file": "s.yaml", "outcome": outcome, "duration_s": 0.0,
                "steps": [], "device": device,
            }))
            .unwrap()
        };
        r.scenarios = vec![s("passed", "a"), s("skipped", "a"), s("passed", "b"), s("failed", "b")];
        assert!(passed_on(&r, "a"));
        // One list per device stays in the report, the first; a merge finds it wherever it is.
        let info = |p: &str| crate::report::DeviceInfo {
            packages: Some(p.into()),
            ..Default::default()
        };
        r.scenarios[0].device_info = Some(crate::report::DeviceInfo::default());
        r.scenarios[1].device_info = Some(info("bash 1\n"));
        r.scenarios[2].device_info = Some(info("bash 2\n"));
        r.scenarios[3].device_info = Some(info("bash 3\n"));
        keep_one_list_per_device(&mut r);
        let lists: Vec<Option<&str>> = r
            .scenarios
            .iter()
            .map(|s| s.device_info.as_ref().and_then(|i| i.packages.as_deref()))
            .collect();
        assert_eq!(lists, [None, Some("bash 1\n"), Some("bash 2\n"), None]);
        let found = found_per_device(&r);
        assert_eq!(found["a"].packages.as_deref(), Some("bash 1\n"));
        assert_eq!(found["b"].packages.as_deref(), Some("bash 2\n"));
        assert!(!passed_on(&r, "b"));
        assert!(!passed_on(&r, "c"), "nothing ran there");
    }
}
