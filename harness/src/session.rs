//! One scenario's hold on a device while it runs: the device and its lifecycle, the scenario's
//! variables (and the secret ones hidden in reports), a D-Bus connection per user, the browser
//! of the browser steps, commands over SSH as a user, (what the scenario
//! changes on a device is recorded there: `crate::bench::record`). Steps act through it; the runner owns it.
//! Reaching the device fails with `transport::Error`; a record that cannot be written with [`Error`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bench::record::{self, Made};
use crate::browser::Browser;
use crate::device::{CutLog, Device, Lifecycle};
use crate::report::Latency;
use crate::scenario;
use crate::transport::dbus::DeviceBus;
use crate::transport::ssh::{sh_quote, Output};
use crate::transport::Error as TransportError;

/// What the session itself could not do; reaching the device fails with the transport's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the run made could not be recorded on the device, so the undo would not delete it:
    /// the step that made it fails.
    #[error("{0}")]
    Record(String),
}

/// The state of one scenario's run on its device.
pub struct Session<'a> {
    pub dev: Device,
    pub lifecycle: Option<&'a dyn Lifecycle>,
    /// The scenario's local folder (downloads, decrypted archives).
    pub work: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub buses: HashMap<String, DeviceBus>,
    /// The scenario file's folder, where `source` files are found.
    pub scenario_dir: PathBuf,
    /// Connections `http.hold` keeps open until the scenario ends.
    pub holds: Vec<tokio::task::JoinHandle<Result<Duration, TransportError>>>,
    /// The `probe.latency` results so far, for `compare_to`.
    pub probes: Vec<Latency>,
    /// The network cuts of `fault.cut_network`, in order: checked by transfers that expect to
    /// meet one, and by the runner at the scenario's end.
    pub cuts: Vec<Cut>,
    /// The scenario's random draws (seeded from the run's seed and the scenario's name).
    pub random: SeededRandom,
    /// The browser of the browser steps, started by the first; the runner closes it.
    pub browser: Option<Browser>,
    /// Values no report may show (a `secret` typed or read by a browser step).
    pub secrets: Vec<String>,
    /// What the card had been sent just before each `Backup1.Create` call, by the snapshot's id:
    /// `backup.wait` weighs the backup's writes from there (the daemon starts writing before the
    /// call returns).
    pub card_before_backup: HashMap<String, CardCount>,
}

/// The card's written bytes as a backup starts: its disk, the bytes and when, read on the device
/// (`/sys/class/block`); and the card's write log where the harness serves one (power-on, bytes).
pub type CardCount = ((String, u64, Instant), Option<(u32, u64)>);

/// A small deterministic generator (splitmix64): the same seed gives the same draws.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    pub seed: u64,
    state: u64,
}

impl SeededRandom {
    /// The generator of one scenario in a run with `run_seed`.
    pub fn for_scenario(run_seed: u64, scenario: &str) -> Self {
        let mut seed = run_seed;
        for b in scenario.bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Self { seed, state: seed }
    }

    /// The next draw in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        lo + z % (hi - lo + 1)
    }
}

/// One network cut the scenario asked for.
pub struct Cut {
    pub log: CutLog,
    /// When the device answers again at the latest, counted from `started`.
    pub ends_after: Duration,
    pub started: Instant,
}

impl Session<'_> {
    /// Replaces `${name}` with the variable's value.
    pub fn subst(&self, text: &str) -> String {
        // Escaped `$${` first, so a value or a name can never be mistaken for it.
        let mut out = text.replace("$${", "\u{0}{");
        for name in scenario::references(text) {
            if let Some(v) = self.vars.get(name) {
                out = out.replace(&format!("${{{name}}}"), v);
            }
        }
        out.replace("\u{0}{", "${")
    }

    /// Hides the values of variables named like passwords, and the secrets, in transcripts.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.password_values() {
            out = out.replace(v, "<password>");
        }
        for v in self.secrets.iter().filter(|v| !v.is_empty()) {
            out = out.replace(v.as_str(), "<secret>");
        }
        out
    }

    /// The values of variables named like passwords.
    fn password_values(&self) -> impl Iterator<Item = &str> {
        self.vars
            .iter()
            .filter(|(k, v)| k.to_lowercase().contains("password") && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value a report or picture must not show: the secrets and the password variables.
    pub fn secret_values(&self) -> Vec<String> {
        let mut all: Vec<String> = self.secrets.clone();
        all.extend(self.password_values().map(String::from));
        all.retain(|v| !v.is_empty());
        all
    }

    /// A file of the scenario's work folder (its name may hold variables).
    pub fn local(&self, name: &str) -> PathBuf {
        self.work.join(self.subst(name))
    }

    /// The device's system bus as `user`, connected on first use.
    pub async fn bus(&mut self, user: &str, timeout: Duration) -> Result<&DeviceBus, TransportError> {
        if !self.buses.contains_key(user) {
            let bus = DeviceBus::connect(&self.dev.ssh, &self.dev.admin, user, timeout).await?;
            self.buses.insert(user.to_string(), bus);
        }
        Ok(&self.buses[user])
    }

    /// A device that is not throwaway (a real one, or one whose lifecycle says it is kept):
    /// what a scenario changes on it is recorded and undone.
    pub fn real(&self) -> bool {
        self.lifecycle.is_none_or(|l| !l.throwaway())
    }

    /// Records on a real device that the run made this snapshot or backup (its id read from the
    /// reply that made it), so that the undo deletes it; nothing else is ever deleted. A record
    /// that cannot be written fails the step: the run cannot own what it made.
    pub async fn record_made(&self, what: Made, id: u64, log: &mut Vec<String>) -> Result<(), Error> {
        if !self.real() {
            return Ok(());
        }
        let out = self
            .ssh("root", &record::made_command(what, id), None, Duration::from_secs(30))
            .await
            .map_err(|e| Error::Record(format!("cannot record the {} {id} the run made: {e}", what.name())))?;
        if out.code != Some(0) {
            return Err(Error::Record(format!(
                "cannot record the {} {id} the run made in {} (it stays on the device; delete it by hand): {}",
                what.name(),
                record::DIR,
                out.stderr.trim()
            )));
        }
        log.push(format!(
            "recorded: the run made {} {id} (undone at the end)",
            what.name()
        ));
        Ok(())
    }

    /// Runs a command as `user`; `root` runs it through the admin user's sudo.
    pub async fn ssh(
        &self,
        user: &str,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        if user == "root" {
            let cmd = format!("sudo -n sh -c {}", sh_quote(command));
            self.dev.ssh.run(&self.dev.admin, &cmd, stdin, timeout).await
        } else {
            self.dev.ssh.run(user, command, stdin, timeout).await
        }
    }
}

/// The first value of a reply as a step compares and captures it.
pub fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::SeededRandom;

    #[test]
    fn draws_repeat_with_the_seed_and_stay_in_range() {
        let draw = |seed| {
            let mut r = SeededRandom::for_scenario(seed, "cut");
            (0..50).map(|_| r.between(10, 80)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).iter().all(|p| (10..=80).contains(p)));
        assert!(draw(7).iter().collect::<std::collections::BTreeSet<_>>().len() > 10);
    }
}
