//! Runs scenarios against a device: steps in order, variables, per-step timeouts, a transcript
//! of everything done, and the device's journal attached when a scenario does not pass.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::dbus::DeviceBus;
use crate::https::HttpsTarget;
use crate::report::{Latency, Measured, Outcome, ProgressSample, ScenarioReport, StepReport, Verdict};
use crate::scenario::{self, Scenario, Step};
use crate::ssh::SshTarget;

/// The nine actions of the vendor's pkla file.
pub const ALL_ACTIONS: [&str; 9] = [
    "tech.noreya.Backup1.Cancel",
    "tech.noreya.Backup1.Create",
    "tech.noreya.Backup1.Delete",
    "tech.noreya.Backup1.GetList",
    "tech.noreya.Backup1.Status",
    "tech.noreya.Snapshot1.Activate",
    "tech.noreya.Snapshot1.Create",
    "tech.noreya.Snapshot1.Delete",
    "tech.noreya.Snapshot1.GetList",
];

/// A device as the runner sees it: only what a real device offers.
#[derive(Debug, Clone)]
pub struct Device {
    pub ssh: SshTarget,
    pub https: HttpsTarget,
    /// The admin user (sudo), `nexus` on the device.
    pub admin: String,
    /// The harness's public key, installed for users that `setup.user` makes.
    pub pubkey: String,
}

const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a scenario added to a real device (an emulator is thrown away instead).
#[derive(Debug, Default)]
struct Made {
    /// Snapshot ids that were on the device before the scenario (`None`: not known).
    snapshots_before: Option<Vec<u64>>,
    /// Users that `setup.user` created, and the polkit files it wrote that were not there before.
    users: Vec<String>,
    pkla: Vec<String>,
}

/// The windows a probe step's script printed, one per line: `with JSON` (the condition under
/// the load, or the only one) and `without JSON` (the alternating unloaded one).
fn parse_windows(stdout: &str) -> Result<(Vec<Measured>, Vec<Measured>), String> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let (list, json) = if let Some(j) = line.strip_prefix("with ") {
            (&mut with, j)
        } else if let Some(j) = line.strip_prefix("without ") {
            (&mut without, j)
        } else {
            return Err(format!(
                "the probe printed a line that is not one of its windows: {line}"
            ));
        };
        list.push(
            serde_json::from_str(json.trim())
                .map_err(|e| format!("the probe's output is not its JSON ({e}): {}", json.trim()))?,
        );
    }
    Ok((with, without))
}

/// Each window's own p99 lateness.
fn window_p99s(windows: &[Measured]) -> Vec<u64> {
    windows.iter().map(|w| w.lateness_us.p99).collect()
}

/// The ids in a `GetList` reply.
fn listed_ids(reply: &[serde_json::Value]) -> Vec<u64> {
    reply
        .first()
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|e| e.get("id").and_then(|v| v.as_u64())).collect())
        .unwrap_or_default()
}

/// The state of one scenario's run.
struct Run<'a> {
    dev: Device,
    lifecycle: Option<&'a dyn Lifecycle>,
    work: PathBuf,
    vars: BTreeMap<String, String>,
    buses: HashMap<String, DeviceBus>,
    started: Instant,
    /// The scenario file's folder, where `source` files are found.
    scenario_dir: PathBuf,
    /// Connections `http.hold` keeps open until the scenario ends.
    holds: Vec<tokio::task::JoinHandle<Result<Duration, String>>>,
    /// The `probe.latency` results so far, for `compare_to`.
    probes: Vec<Latency>,
    /// On a real device: what this scenario added, to be removed when it ends.
    made: Made,
}

/// How a step can end other than passing.
pub enum StepEnd {
    Failed(String),
    /// The target cannot do this (a fault on a real device): the scenario is skipped.
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

/// The faults the runner can ask a device's lifecycle for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL `nexus-backupd` (systemd starts it again, as on the device).
    KillDaemon,
    /// `systemctl restart nexus-backupd`.
    RestartDaemon,
    /// Restart the whole device; the SD card keeps its state. New published ports follow.
    Reboot,
    /// Fill /broot until this many bytes are free.
    FillDisk(u64),
    /// After the first duration, stop answering on the published ports for the second.
    CutNetwork(Duration, Duration),
    /// Limit reads and writes of /broot's device to these bytes per second (0: no limit).
    SlowIo { read: u64, write: u64 },
}

/// Ports of a device after a fault changed them.
pub type Ports = Option<(u16, u16)>;

/// What only the emulator's lifecycle can do; a real device has none of it.
pub trait Lifecycle {
    /// Applies `fault`; [`StepEnd::Unsupported`] when this device cannot have it.
    fn fault(&self, fault: Fault) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ports, StepEnd>> + '_>>;
}

/// What a step did: its transcript, progress samples, and its failure, if any.
#[derive(Default)]
struct StepLog {
    lines: Vec<String>,
    progress: Vec<ProgressSample>,
    latency: Option<Latency>,
    baseline: Option<Latency>,
}

impl Run<'_> {
    /// Replaces `${name}` with the variable's value.
    fn subst(&self, text: &str) -> String {
        // Escaped `$${` first, so a value or a name can never be mistaken for it.
        let mut out = text.replace("$${", "\u{0}{");
        for name in scenario::references(text) {
            if let Some(v) = self.vars.get(name) {
                out = out.replace(&format!("${{{name}}}"), v);
            }
        }
        out.replace("\u{0}{", "${")
    }

    /// Hides the values of variables named like passwords in transcripts.
    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.vars {
            if k.to_lowercase().contains("password") && !v.is_empty() {
                out = out.replace(v.as_str(), "<password>");
            }
        }
        out
    }

    fn local(&self, name: &str) -> PathBuf {
        self.work.join(self.subst(name))
    }

    async fn bus(&mut self, user: &str, timeout: Duration) -> Result<&DeviceBus, String> {
        if !self.buses.contains_key(user) {
            let bus = DeviceBus::connect(&self.dev.ssh, &self.dev.admin, user, timeout).await?;
            self.buses.insert(user.to_string(), bus);
        }
        Ok(&self.buses[user])
    }

    /// Runs a command as `user`; `root` runs it through the admin user's sudo.
    async fn ssh(
        &self,
        user: &str,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<crate::ssh::Output, String> {
        if user == "root" {
            let cmd = format!("sudo -n sh -c {}", sh_quote(command));
            self.dev.ssh.run(&self.dev.admin, &cmd, stdin, timeout).await
        } else {
            self.dev.ssh.run(user, command, stdin, timeout).await
        }
    }

    async fn step(&mut self, step: &Step, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
        match step {
            Step::FaultKillDaemon(f) | Step::FaultRestartDaemon(f) | Step::FaultReboot(f) => {
                self.fault(step, f, timeout, log).await
            }
            Step::FaultCutNetwork(f) => {
                let Some(lifecycle) = self.lifecycle else {
                    return Err(StepEnd::Unsupported(
                        "fault.cut_network needs the emulator's lifecycle; this target has none".into(),
                    ));
                };
                let after = scenario::parse_duration(&f.after)?;
                let duration = scenario::parse_duration(&f.duration)?;
                log.lines
                    .push(format!("the network goes down in {after:?} for {duration:?}"));
                lifecycle.fault(Fault::CutNetwork(after, duration)).await?;
                Ok(())
            }
            Step::FaultSlowIo(f) => {
                let Some(lifecycle) = self.lifecycle else {
                    return Err(StepEnd::Unsupported(
                        "fault.slow_io needs the emulator's lifecycle; this target has none".into(),
                    ));
                };
                let limit = |n: u64| {
                    if n == 0 {
                        "no limit".to_string()
                    } else {
                        format!("{n} B/s")
                    }
                };
                log.lines.push(format!(
                    "the SD card now reads at {}, writes at {}",
                    limit(f.read_bytes_per_sec),
                    limit(f.write_bytes_per_sec)
                ));
                lifecycle
                    .fault(Fault::SlowIo {
                        read: f.read_bytes_per_sec,
                        write: f.write_bytes_per_sec,
                    })
                    .await?;
                Ok(())
            }
            Step::ProbeLatency(p) => self.probe_latency(p, timeout, log).await,
            Step::FaultFillDisk(f) => {
                let Some(lifecycle) = self.lifecycle else {
                    return Err(StepEnd::Unsupported(
                        "fault.fill_disk needs the emulator's lifecycle; this target has none".into(),
                    ));
                };
                log.lines
                    .push(format!("filling /broot until {} bytes are free", f.leave_bytes));
                lifecycle.fault(Fault::FillDisk(f.leave_bytes)).await?;
                Ok(())
            }
            Step::Repeat(r) => {
                let started = Instant::now();
                for round in 1..=r.times {
                    self.vars.insert(scenario::ITERATION.to_string(), round.to_string());
                    for inner in &r.steps {
                        let t = step_timeout(inner);
                        let line = inner.span().start().map(|m| m.line()).unwrap_or(0);
                        let kind = inner.kind();
                        // Each inner step logs apart; only a failing one's lines reach the transcript.
                        let mut inner_log = StepLog::default();
                        let result = match tokio::time::timeout(
                            t + Duration::from_secs(5),
                            Box::pin(self.step(inner, t, &mut inner_log)),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(StepEnd::Failed(format!("did not finish within its timeout of {t:?}"))),
                        };
                        if let Err(e) = result {
                            log.lines.append(&mut inner_log.lines);
                            self.vars.remove(scenario::ITERATION);
                            return Err(match e {
                                StepEnd::Failed(m) => {
                                    StepEnd::Failed(format!("round {round}, {kind} (line {line}): {m}"))
                                }
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
                self.vars.remove(scenario::ITERATION);
                Ok(())
            }
            _ => self.basic_step(step, timeout, log).await.map_err(StepEnd::Failed),
        }
    }

    async fn fault(
        &mut self,
        step: &Step,
        f: &crate::scenario::FaultStep,
        timeout: Duration,
        log: &mut StepLog,
    ) -> Result<(), StepEnd> {
        let fault = match step {
            Step::FaultKillDaemon(_) => Fault::KillDaemon,
            Step::FaultRestartDaemon(_) => Fault::RestartDaemon,
            _ => Fault::Reboot,
        };
        let Some(lifecycle) = self.lifecycle else {
            return Err(StepEnd::Unsupported(format!(
                "{} needs the emulator's lifecycle; this target has none",
                step.kind()
            )));
        };
        if let (Some(p), Some(id)) = (f.at_percent, &f.id) {
            let id = self.subst(id);
            log.lines
                .push(format!("waiting until the backup of snapshot {id} reaches {p}%"));
            let start = Instant::now();
            loop {
                let bus = self.bus("root", timeout).await?;
                let st = bus
                    .call("tech.noreya.Backup1", "Status", &[])
                    .await
                    .map_err(|e| format!("Status failed: {e}"))?
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if render(&st["id"]) != id {
                    return Err(format!("the backup of snapshot {id} ended before reaching {p}%").into());
                }
                let now = st["progress"].as_u64().unwrap_or(0);
                if now >= u64::from(p) {
                    log.lines.push(format!("at {now}%"));
                    break;
                }
                if start.elapsed() > timeout {
                    return Err(format!("the backup stayed below {p}% for {timeout:?}").into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        log.lines.push(format!("fault: {fault:?}"));
        let ports = lifecycle.fault(fault).await?;
        // The bridge connections died with the daemon's peers or the device.
        if fault == Fault::Reboot {
            self.buses.clear();
        }
        if let Some((ssh, https)) = ports {
            log.lines
                .push(format!("the device is back on ssh {ssh}, https {https}"));
            self.dev.ssh.port = ssh;
            self.dev.https.port = https;
        }
        // Back means: both names answer again.
        let start = Instant::now();
        loop {
            let r = async {
                let bus = self.bus("root", timeout).await?;
                bus.call("tech.noreya.Backup1", "Status", &[])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match r {
                Ok(_) => break,
                Err(e) if start.elapsed() > timeout => {
                    return Err(format!("nexus-backupd did not come back within {timeout:?}: {e}").into())
                }
                Err(_) => {
                    self.buses.remove("root");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        log.lines.push(format!(
            "nexus-backupd answers again after {:.2} s",
            log_elapsed(&start)
        ));
        Ok(())
    }

    /// When the device has no `nexus-automation`, copies the harness's build for the device's
    /// architecture to a fresh path in /tmp and returns that path (the step removes it);
    /// `Unsupported` when there is no build for that architecture.
    async fn copy_probe_if_missing(&mut self, log: &mut StepLog) -> Result<Option<String>, StepEnd> {
        let t = Duration::from_secs(30);
        let out = self
            .ssh(
                "root",
                "command -v nexus-automation >/dev/null && echo present; uname -m",
                None,
                t,
            )
            .await?;
        if out.stdout.lines().any(|l| l == "present") {
            return Ok(None);
        }
        let arch = out.stdout.lines().last().unwrap_or_default().trim().to_string();
        let Some(local) = crate::image::automation_for_arch(&arch) else {
            return Err(StepEnd::Unsupported(format!(
                "this device has no nexus-automation (the probe), and there is no build of it for {arch}: \
                 cargo build --release -p nexus-emulator --target {arch}-unknown-linux-gnu, or set NEXUS_HIL_AUTOMATION"
            )));
        };
        let bytes = std::fs::read(&local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
        let out = self
            .ssh(
                "root",
                "f=$(mktemp /tmp/nexus-hil-probe.XXXXXX) && cat > \"$f\" && chmod 755 \"$f\" && echo \"$f\"",
                Some(&bytes),
                t,
            )
            .await?;
        let path = out.stdout.trim().to_string();
        if out.code != Some(0) || !path.starts_with("/tmp/nexus-hil-probe.") {
            return Err(format!("copying the probe to the device failed: {}", out.stderr.trim()).into());
        }
        log.lines.push(format!(
            "the device has no nexus-automation: copied {} ({arch}, {} bytes) to {path} for this step",
            local.display(),
            bytes.len()
        ));
        Ok(Some(path))
    }

    /// `probe.latency`: runs `nexus-automation probe` on the device as root, with the `during`
    /// load in its own process group in the background, stopped (the whole group: SIGTERM, and
    /// SIGKILL 30 s later if it is still there) afterwards. With `alternate_with`, windows
    /// without and with the load take turns, each after `settle`, and each condition's ticks
    /// are pooled. Written for any POSIX `sh` (dash's `kill` takes no `--`).
    async fn probe_latency(
        &mut self,
        p: &scenario::ProbeLatency,
        timeout: Duration,
        log: &mut StepLog,
    ) -> Result<(), StepEnd> {
        let name = self.subst(&p.name);
        let baseline_name = p.alternate_with.as_deref().map(|b| self.subst(b));
        let duration = scenario::parse_duration(&p.duration)?;
        let windows = p.windows();
        let window = duration / windows;
        let period = p
            .period
            .as_deref()
            .map(scenario::parse_duration)
            .transpose()?
            .unwrap_or(Duration::from_millis(10));
        let settle = p
            .settle
            .as_deref()
            .map(scenario::parse_duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(2));
        let during = p.during.as_deref().map(|d| self.subst(d));
        let dir = "/broot/data/.nexus-hil-probe";
        // A device without the probe (a real NEXUS) gets one copied over for this step only.
        let copied = self.copy_probe_if_missing(log).await?;
        let probe = copied.clone().unwrap_or_else(|| "nexus-automation".to_string());
        let probe_cmd = format!(
            "{probe} probe --for {}ms --period {}us --dir {dir}{}",
            window.as_millis(),
            period.as_micros(),
            if p.load { "" } else { " --no-io" }
        );
        let settle_s = settle.as_secs_f64();
        // Every window prints one line: `with JSON` or `without JSON`.
        let mut script = String::from("rc=0\n");
        if let Some(d) = &during {
            script.push_str(&format!(
                "start_load() {{\n\
                 setsid sh -c {} </dev/null >/tmp/nexus-hil-during.log 2>&1 &\nbg=$!\nsleep {settle_s}\n}}\n\
                 stop_load() {{\n\
                 state=$(sed 's/^.*) //' /proc/$bg/stat 2>/dev/null | cut -c1)\n\
                 if [ -z \"$state\" ] || [ \"$state\" = Z ]; then echo \"the load (during) ended before the probe did: $(tail -n 5 /tmp/nexus-hil-during.log)\" >&2; rc=3; fi\n\
                 kill -TERM -$bg 2>/dev/null\n\
                 ( sleep 30; kill -KILL -$bg 2>/dev/null ) </dev/null >/dev/null 2>&1 & watchdog=$!\n\
                 wait $bg 2>/dev/null; kill $watchdog 2>/dev/null\n}}\n",
                sh_quote(d)
            ));
        }
        script.push_str(&format!(
            "i=0\nwhile [ $i -lt {windows} ] && [ $rc = 0 ]; do\ni=$((i+1))\n"
        ));
        if baseline_name.is_some() {
            // `sync` first: what the last loaded window left to write back is not the idle's.
            script.push_str(&format!(
                "sync\nsleep {settle_s}\nout=$({probe_cmd}) || {{ rc=$?; break; }}\nprintf 'without %s\\n' \"$out\"\n"
            ));
        }
        if during.is_some() {
            script.push_str(&format!(
                "start_load\nout=$({probe_cmd}); prc=$?\nstop_load\n[ $prc = 0 ] || {{ rc=$prc; break; }}\n[ $rc = 0 ] || break\n"
            ));
        } else {
            script.push_str(&format!("out=$({probe_cmd}) || {{ rc=$?; break; }}\n"));
        }
        script.push_str("printf 'with %s\\n' \"$out\"\ndone\n");
        script.push_str(&format!("rm -rf {dir}\n"));
        if let Some(c) = &copied {
            script.push_str(&format!("rm -f {c}\n"));
        }
        script.push_str("exit $rc\n");
        log.lines.push(format!(
            "probe {name:?}: {}{duration:?} of {period:?} ticks{}{}",
            if windows > 1 {
                format!(
                    "{windows} windows of {window:?} each, taking turns with {:?} (the same without the load); ",
                    baseline_name.as_deref().unwrap_or_default()
                )
            } else {
                String::new()
            },
            if p.load { " with their I/O" } else { ", timer only" },
            during.as_deref().map(|d| format!(", during: {d}")).unwrap_or_default()
        ));
        let out = self.ssh("root", &script, None, timeout).await;
        if let (Err(_), Some(c)) = (&out, &copied) {
            // The step's own removal did not run: try once more, so nothing is left behind.
            let _ = self
                .ssh("root", &format!("rm -f {c}"), None, Duration::from_secs(10))
                .await;
        }
        let out = out?;
        match out.code {
            Some(0) => {}
            code => {
                return Err(format!("the probe failed (exit {code:?}): {}", out.stderr.trim()).into());
            }
        }
        let (with, without) = parse_windows(&out.stdout)?;
        if with.len() != windows as usize || without.len() != if baseline_name.is_some() { windows as usize } else { 0 }
        {
            return Err(format!(
                "the probe printed {} loaded and {} unloaded windows, not {windows} each: {}",
                with.len(),
                without.len(),
                out.stdout.trim()
            )
            .into());
        }
        if windows > 1 {
            for (i, (a, b)) in without.iter().zip(&with).enumerate() {
                log.lines.push(format!(
                    "window {}: p99 {} us without the load, {} us with it; missed {} and {}",
                    i + 1,
                    a.lateness_us.p99,
                    b.lateness_us.p99,
                    a.missed,
                    b.missed
                ));
            }
        }
        let measured = Measured::pool(&with)?;
        let baseline = match &baseline_name {
            None => None,
            Some(b) => Some(Latency {
                name: b.clone(),
                during: None,
                window_p99_us: window_p99s(&without),
                measured: Measured::pool(&without)?,
                verdict: None,
            }),
        };
        // The condition compared with: its name and p99.
        let base = match (&baseline, &p.compare_to) {
            (Some(b), _) => Some((b.name.clone(), b.measured.lateness_us.p99)),
            (None, None) => None,
            (None, Some(other)) => {
                let other = self.subst(other);
                let Some(base) = self.probes.iter().find(|l| l.name == other) else {
                    let known: Vec<&str> = self.probes.iter().map(|l| l.name.as_str()).collect();
                    return Err(format!(
                        "compare_to: no earlier probe is named {other:?} (the probes so far: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )
                    .into());
                };
                Some((other, base.measured.lateness_us.p99))
            }
        };
        let verdict = base.map(|(compare_to, base_p99)| {
            let ratio = measured.lateness_us.p99.max(1) as f64 / base_p99.max(1) as f64;
            Verdict {
                compare_to,
                ratio,
                max_ratio: p.max_p99_ratio,
                met: p.max_p99_ratio.is_none_or(|m| ratio <= m),
            }
        });
        for (cond, m) in baseline
            .as_ref()
            .map(|b| (b.name.as_str(), &b.measured))
            .into_iter()
            .chain([(name.as_str(), &measured)])
        {
            let l = &m.lateness_us;
            log.lines.push(format!(
                "{cond}: {} ticks: lateness p50 {} us, p99 {} us, p99.9 {} us, max {} us; {} missed periods",
                m.samples, l.p50, l.p99, l.p999, l.max, m.missed
            ));
            if let Some(io) = &m.io_us {
                log.lines.push(format!(
                    "{cond}: tick I/O: p50 {} us, p99 {} us, max {} us",
                    io.p50, io.p99, io.max
                ));
            }
        }
        if let Some(v) = &verdict {
            log.lines.push(format!(
                "p99 {:.2}x that of {:?}{}",
                v.ratio,
                v.compare_to,
                match v.max_ratio {
                    Some(m) if v.met => format!(" (at most {m}: met)"),
                    Some(m) => format!(" (at most {m}: MISSED)"),
                    None => String::new(),
                }
            ));
        }
        let latency = Latency {
            name,
            during,
            window_p99_us: if windows > 1 { window_p99s(&with) } else { Vec::new() },
            measured,
            verdict,
        };
        if let Some(b) = &baseline {
            self.probes.push(b.clone());
        }
        self.probes.push(latency.clone());
        log.baseline = baseline;
        log.latency = Some(latency);
        Ok(())
    }

    async fn basic_step(&mut self, step: &Step, timeout: Duration, log: &mut StepLog) -> Result<(), String> {
        match step {
            Step::DbusCall(s) => {
                let user = self.subst(&s.user);
                let args: Vec<String> = s.args.iter().map(|a| self.subst(a)).collect();
                let shown = self.mask(&format!("{}.{}({})", s.service, s.method, args.join(", ")));
                log.lines.push(format!("dbus as {user}: {shown}"));
                let (service, method) = (self.subst(&s.service), self.subst(&s.method));
                let bus = self.bus(&user, timeout).await?;
                let result = tokio::time::timeout(timeout, bus.call(&service, &method, &args))
                    .await
                    .map_err(|_| format!("no reply within {timeout:?}"))?;
                match (result, &s.expect_error) {
                    (Ok(values), None) => {
                        let first = values.first().map(render).unwrap_or_default();
                        log.lines.push(format!(
                            "-> {}",
                            self.mask(&serde_json::Value::Array(values.clone()).to_string())
                        ));
                        if let Some(e) = &s.expect {
                            let e = self.subst(e);
                            if first != e {
                                return Err(format!("reply {first:?}, expected {e:?}"));
                            }
                        }
                        for (k, want) in &s.expect_fields {
                            let want = self.subst(want);
                            let got = values.first().and_then(|v| v.get(k)).map(render);
                            if got.as_deref() != Some(want.as_str()) {
                                return Err(format!("{k} is {got:?}, expected {want:?}"));
                            }
                        }
                        for (k, want) in &s.expect_fields_contain {
                            let want = self.subst(want);
                            let got = values.first().and_then(|v| v.get(k)).map(render).unwrap_or_default();
                            if !got.contains(&want) {
                                return Err(format!("{k} is {got:?}, which does not contain {want:?}"));
                            }
                        }
                        let whole = serde_json::Value::Array(values.clone()).to_string();
                        for text in &s.expect_not_contains {
                            let text = self.subst(text);
                            if whole.contains(&text) {
                                return Err(format!("the reply contains {text:?}, which it must not"));
                            }
                        }
                        if let Some(v) = &s.capture {
                            let value = match &s.capture_pointer {
                                Some(p) => values
                                    .first()
                                    .and_then(|f| f.pointer(p))
                                    .map(render)
                                    .ok_or_else(|| format!("the reply has nothing at {p}"))?,
                                None => first,
                            };
                            self.vars.insert(v.clone(), value);
                        }
                        Ok(())
                    }
                    (Ok(values), Some(name)) => Err(format!(
                        "the call succeeded ({}) but {name} was expected",
                        serde_json::Value::Array(values)
                    )),
                    (Err(e), None) => Err(format!("the call failed: {e}")),
                    (Err(e), Some(name)) => {
                        log.lines.push(format!("-> error {e}"));
                        if &e.name != name {
                            return Err(format!("failed with {}, expected {name}: {}", e.name, e.message));
                        }
                        if let Some(c) = &s.expect_error_contains {
                            if !e.message.contains(c.as_str()) {
                                return Err(format!("the error message {:?} does not mention {c:?}", e.message));
                            }
                        }
                        Ok(())
                    }
                }
            }
            Step::BackupWait(s) => {
                let user = self.subst(&s.user);
                let id = self.subst(&s.id);
                let start = Instant::now();
                log.lines
                    .push(format!("polling tech.noreya.Backup1.Status as {user} while id == {id}"));
                let status = loop {
                    let bus = self.bus(&user, timeout).await?;
                    let st = bus
                        .call("tech.noreya.Backup1", "Status", &[])
                        .await
                        .map_err(|e| format!("Status failed: {e}"))?;
                    let st = st.into_iter().next().unwrap_or_default();
                    let num = |k: &str| st.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                    log.progress.push(ProgressSample {
                        at_s: start.elapsed().as_secs_f64(),
                        percent: num("progress"),
                        bytes_done: num("bytes_done"),
                        bytes_total: num("bytes_total"),
                    });
                    if render(st.get("id").unwrap_or(&serde_json::Value::Null)) != id {
                        break st;
                    }
                    if start.elapsed() > timeout {
                        return Err(format!(
                            "the backup of snapshot {id} was still running after {timeout:?} ({}%)",
                            num("progress")
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                };
                let result = status
                    .get("last_result")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                log.lines.push(format!(
                    "finished: last_id={} last_result={result:?}",
                    render(&status["last_id"])
                ));
                let want = s.expect_result.clone().unwrap_or_else(|| "ok".into());
                if want != "any" && result != want {
                    return Err(format!("the backup ended with {result:?}, expected {want:?}"));
                }
                Ok(())
            }
            Step::SshRun(s) => {
                let user = self.subst(&s.user);
                let command = self.subst(&s.command);
                log.lines.push(self.mask(&format!("ssh {user}: {command}")));
                let stdin = s.stdin.as_ref().map(|t| self.subst(t));
                let out = self
                    .ssh(&user, &command, stdin.as_deref().map(str::as_bytes), timeout)
                    .await?;
                log.lines.push(self.mask(&format!(
                    "-> exit {:?}; stdout: {}; stderr: {}",
                    out.code,
                    out.stdout.trim(),
                    out.stderr.trim()
                )));
                let want = s.expect_exit.unwrap_or(0);
                if out.code != Some(want) {
                    return Err(format!(
                        "exit status {:?}, expected {want}: {}",
                        out.code,
                        out.stderr.trim()
                    ));
                }
                for e in &s.expect_stdout {
                    let e = self.subst(e);
                    if !out.stdout.contains(&e) {
                        return Err(format!("standard output does not contain {e:?}"));
                    }
                }
                if let Some(v) = &s.capture {
                    let value = match s.capture_word {
                        Some(n) => out
                            .stdout
                            .split_whitespace()
                            .nth(n.saturating_sub(1))
                            .ok_or_else(|| format!("the output has fewer than {n} words"))?
                            .to_string(),
                        None => out.stdout.trim().to_string(),
                    };
                    self.vars.insert(v.clone(), value);
                }
                Ok(())
            }
            Step::SshPut(s) => {
                let user = self.subst(&s.user);
                let path = self.subst(&s.path);
                let content = match (&s.content, &s.source) {
                    (Some(c), _) => self.subst(c),
                    (None, Some(src)) => {
                        let f = self.scenario_dir.join(src);
                        std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?
                    }
                    (None, None) => unreachable!("checked at load"),
                };
                let mode = s.mode.clone().unwrap_or_else(|| "0644".into());
                let q = sh_quote(&path);
                log.lines.push(format!(
                    "ssh {user}: write {path} ({} bytes, mode {mode})",
                    content.len()
                ));
                let out = self
                    .ssh(
                        &user,
                        &format!("cat > {q} && chmod {mode} {q}"),
                        Some(content.as_bytes()),
                        timeout,
                    )
                    .await?;
                if out.code != Some(0) {
                    return Err(format!("cannot write {path}: {}", out.stderr.trim()));
                }
                Ok(())
            }
            Step::HttpHold(s) => {
                let slow = s.mode == "slow";
                log.lines.push(format!(
                    "holding {} {} connection(s) to {}:{}",
                    s.connections, s.mode, self.dev.https.host, self.dev.https.port
                ));
                // The CA is pinned before the crowd arrives, so the holds need no TOFU of their own.
                self.dev.https.pin_ca(timeout).await?;
                for _ in 0..s.connections {
                    self.holds
                        .push(tokio::spawn(crate::https::hold(self.dev.https.clone(), slow)));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            }
            Step::HttpGet(s) => {
                let path = self.subst(&s.path);
                let save = s.save.as_ref().map(|f| self.local(f));
                let method = s.method.clone().unwrap_or_else(|| "GET".into());
                let mut headers: Vec<(String, String)> =
                    s.headers.iter().map(|(k, v)| (k.clone(), self.subst(v))).collect();
                if let Some(r) = &s.range {
                    headers.push(("range".into(), self.subst(r)));
                }
                log.lines.push(format!(
                    "{method} https://{}:{}{path}",
                    self.dev.https.host, self.dev.https.port
                ));
                let started = Instant::now();
                let mut attempt = 0;
                let r = loop {
                    // A resumed download asks for the rest with a Range request, as a careful client does.
                    let have = match (&save, attempt) {
                        (Some(f), n) if n > 0 => std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
                        _ => 0,
                    };
                    let mut h = headers.clone();
                    if have > 0 {
                        h.push(("range".into(), format!("bytes={have}-")));
                    }
                    let receive = crate::https::Receive {
                        append: have > 0,
                        stall: s.resume.then_some(Duration::from_secs(3)),
                    };
                    let left = timeout.saturating_sub(started.elapsed());
                    match self
                        .dev
                        .https
                        .send(&method, &path, &h, save.as_deref(), receive, left)
                        .await
                    {
                        Ok(r) => break r,
                        Err(e) if s.resume && started.elapsed() < timeout => {
                            attempt += 1;
                            let now = save
                                .as_ref()
                                .and_then(|f| std::fs::metadata(f).ok())
                                .map(|m| m.len())
                                .unwrap_or(0);
                            log.lines
                                .push(format!("interrupted ({e}) after {now} bytes; asking for the rest"));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                let sha = match (&save, attempt) {
                    (Some(f), n) if n > 0 => crate::tree::sha256_file(f)?,
                    _ => r.body_sha256.clone(),
                };
                log.lines.push(format!(
                    "-> {} ({} bytes, sha256 {sha}){}",
                    r.status,
                    r.body_len,
                    if attempt > 0 {
                        format!(" after {attempt} resume(s)")
                    } else {
                        String::new()
                    }
                ));
                let want = s.expect_status.unwrap_or(200);
                let resumed_ok = attempt > 0 && r.status == 206 && want == 200;
                if r.status != want && !resumed_ok {
                    return Err(format!("status {}, expected {want}", r.status));
                }
                if let Some(expected) = &s.expect_sha256 {
                    let expected = self.subst(expected);
                    if sha != expected {
                        return Err(format!("the body's sha256 is {sha}, expected {expected}"));
                    }
                }
                Ok(())
            }
            Step::ScpGet(s) => {
                let user = self.subst(&s.user);
                let remote = self.subst(&s.remote);
                let local = self.local(&s.local);
                log.lines
                    .push(format!("scp {user}@{}:{remote} {}", self.dev.ssh.host, local.display()));
                let out = self.dev.ssh.scp_get(&user, &remote, &local, timeout).await?;
                if out.code != Some(0) {
                    return Err(format!("scp failed: {}", out.stderr.trim()));
                }
                Ok(())
            }
            Step::RsyncPull(s) => {
                let user = self.subst(&s.user);
                let remote = self.subst(&s.remote);
                let local = self.local(&s.local);
                std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
                log.lines.push(format!(
                    "rsync -a {user}@{}:{remote} {}",
                    self.dev.ssh.host,
                    local.display()
                ));
                let started = Instant::now();
                loop {
                    let left = timeout.saturating_sub(started.elapsed());
                    let out = self.dev.ssh.rsync_pull(&user, &remote, &local, s.sudo, left).await;
                    let err = match out {
                        Ok(o) if o.code == Some(0) => return Ok(()),
                        Ok(o) => format!("rsync failed: {}", o.stderr.trim()),
                        Err(e) => e,
                    };
                    if !s.resume || started.elapsed() >= timeout {
                        return Err(err);
                    }
                    log.lines.push(format!("interrupted ({err}); running rsync again"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            Step::GpgDecrypt(s) => {
                let file = self.local(&s.file);
                let output = self.local(&s.output);
                let password = self.subst(&s.password);
                log.lines.push(format!(
                    "gpg --batch --pinentry-mode loopback --passphrase-fd 0 --decrypt {} > {}",
                    file.display(),
                    output.display()
                ));
                let r = gpg_decrypt(&file, &password, &output, timeout).await;
                match (r, s.expect_failure) {
                    (Ok(()), false) => Ok(()),
                    (Err(e), true) => {
                        log.lines
                            .push(format!("-> refused as expected: {}", e.lines().last().unwrap_or("")));
                        let _ = std::fs::remove_file(&output);
                        Ok(())
                    }
                    (Ok(()), true) => Err("gpg decrypted the file, but it was expected to fail".into()),
                    (Err(e), false) => Err(format!("gpg could not decrypt {}: {e}", file.display())),
                }
            }
            Step::ArchiveMatchesSnapshot(s) => {
                let snapshot = self.subst(&s.snapshot);
                let remote_dir = format!("/broot/snapshot/snapshots/{snapshot}");
                let (local, what) = match (&s.archive, &s.dir) {
                    (Some(a), _) => (crate::tree::from_tar(&self.local(a))?, self.local(a)),
                    (_, Some(d)) => (crate::tree::from_dir(&self.local(d))?, self.local(d)),
                    _ => unreachable!("checked at load"),
                };
                log.lines
                    .push(format!("comparing {} with {remote_dir} on the device", what.display()));
                let cmd = crate::tree::remote_listing_command(&remote_dir);
                let out = self.ssh("root", &cmd, None, timeout).await?;
                if out.code != Some(0) {
                    return Err(format!("cannot list {remote_dir}: {}", out.stderr.trim()));
                }
                let remote = crate::tree::parse_remote_listing(&out.stdout)?;
                let diffs = crate::tree::compare(&remote, &local);
                log.lines.push(format!(
                    "{} entries on the device, {} in the copy",
                    remote.len(),
                    local.len()
                ));
                if !diffs.is_empty() {
                    let shown: Vec<String> = diffs.iter().take(20).cloned().collect();
                    return Err(format!("{} difference(s): {}", diffs.len(), shown.join("; ")));
                }
                Ok(())
            }
            Step::SetupUser(s) => {
                let name = self.subst(&s.name);
                let actions: Vec<&str> = if s.grant.iter().any(|g| g == "all") {
                    ALL_ACTIONS.to_vec()
                } else {
                    s.grant.iter().map(String::as_str).collect()
                };
                let file = if name == "remotebackup" {
                    "10-backup.pkla".to_string()
                } else {
                    format!("10-{name}.pkla")
                };
                // The vendor's steps; --disabled-password because no one is there to type one.
                // "made ..." lines tell the harness what to remove from a real device afterwards.
                let mut script = format!(
                    "id -u {n} >/dev/null 2>&1 || {{ adduser --disabled-password {n} --gecos 'Backup' >/dev/null && echo made user; }}\n",
                    n = sh_quote(&name)
                );
                if !actions.is_empty() {
                    script.push_str(&format!(
                        "test -e /etc/polkit-1/localauthority/50-local.d/{file} || echo made pkla\n"
                    ));
                    script.push_str(&format!(
                        "bash -c 'echo -e \"[Backup permissions]\\nIdentity=unix-user:{name}\\nAction={};\\nResultActive=yes\\nResultInactive=yes\\nResultAny=yes\\n\" > /etc/polkit-1/localauthority/50-local.d/{file}'\n",
                        actions.join(";")
                    ));
                }
                // What ssh-copy-id does for the user.
                script.push_str(&format!(
                    "home=$(getent passwd {n} | cut -d: -f6)\ninstall -d -m 700 -o {n} -g {n} \"$home/.ssh\"\ncat > \"$home/.ssh/authorized_keys\"\nchown {n}: \"$home/.ssh/authorized_keys\"\nchmod 600 \"$home/.ssh/authorized_keys\"\n",
                    n = sh_quote(&name)
                ));
                log.lines.push(format!(
                    "as {} with sudo: adduser {name}; pkla {file} granting {} action(s); install the harness key",
                    self.dev.admin,
                    actions.len()
                ));
                let out = self
                    .ssh("root", &script, Some(self.dev.pubkey.as_bytes()), timeout)
                    .await?;
                if out.code != Some(0) {
                    return Err(format!("setting up {name} failed: {}", out.stderr.trim()));
                }
                if out.stdout.lines().any(|l| l == "made user") {
                    self.made.users.push(name.clone());
                }
                if out.stdout.lines().any(|l| l == "made pkla") {
                    self.made.pkla.push(file);
                }
                Ok(())
            }
            Step::FaultKillDaemon(_)
            | Step::FaultRestartDaemon(_)
            | Step::FaultReboot(_)
            | Step::FaultFillDisk(_)
            | Step::FaultCutNetwork(_)
            | Step::FaultSlowIo(_)
            | Step::ProbeLatency(_)
            | Step::Repeat(_) => {
                unreachable!("faults and repeat are run by Run::step")
            }
        }
    }
}

/// A step's time limit: its own `timeout`, or the default for its kind.
fn step_timeout(step: &Step) -> Duration {
    step.timeout()
        .and_then(|t| scenario::parse_duration(t).ok())
        .unwrap_or(match step {
            Step::BackupWait(_) => DEFAULT_WAIT_TIMEOUT,
            Step::Repeat(_) => Duration::from_secs(30 * 60),
            // The probe's own time and its load's settling, plus the usual margin.
            Step::ProbeLatency(p) => {
                let d = |v: Option<&str>| v.and_then(|v| scenario::parse_duration(v).ok()).unwrap_or_default();
                let settle = p.settle.as_deref().map_or(Duration::from_secs(2), |s| d(Some(s)));
                // With `alternate_with`: twice the time, and a settle and the load's stop per window.
                let turns = if p.alternate_with.is_some() { 2 } else { 1 };
                d(Some(&p.duration)) * turns
                    + (settle * turns + Duration::from_secs(5)) * p.windows()
                    + DEFAULT_STEP_TIMEOUT
            }
            _ => DEFAULT_STEP_TIMEOUT,
        })
}

fn log_elapsed(start: &Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The first value of a reply as a step compares and captures it.
pub fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn gpg_decrypt(file: &Path, password: &str, output: &Path, timeout: Duration) -> Result<(), String> {
    let home = tempdir_in(file.parent().unwrap_or(Path::new(".")))?;
    let mut cmd = tokio::process::Command::new("gpg");
    cmd.args([
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        "0",
        "--output",
    ])
    .arg(output)
    .arg("--decrypt")
    .arg(file)
    .env("GNUPGHOME", &home);
    let out = crate::ssh::run_local(cmd, Some(password.as_bytes()), timeout).await;
    let _ = std::fs::remove_dir_all(&home);
    let out = out?;
    if out.code == Some(0) {
        Ok(())
    } else {
        Err(out.stderr.trim().to_string())
    }
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join(format!(
        ".gnupg-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    Ok(d)
}

/// Runs one scenario's steps against `dev`, with `work` as its local folder. `on_step` hears of
/// each step as it starts.
pub async fn run_scenario(
    s: &Scenario,
    dev: &Device,
    lifecycle: Option<&dyn Lifecycle>,
    work: &Path,
    on_step: &(dyn Fn(&str) + Sync),
) -> ScenarioReport {
    let started = Instant::now();
    let _ = std::fs::create_dir_all(work);
    let mut run = Run {
        dev: dev.clone(),
        lifecycle,
        work: work.to_owned(),
        vars: s.vars.clone(),
        buses: HashMap::new(),
        started,
        scenario_dir: s.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        holds: Vec::new(),
        probes: Vec::new(),
        made: Made::default(),
    };
    if lifecycle.is_none() {
        // A real device is left as it was found: note its snapshots now.
        if let Ok(bus) = run.bus("root", Duration::from_secs(20)).await {
            if let Ok(reply) = bus.call(crate::conform::SNAPSHOT1, "GetList", &[]).await {
                run.made.snapshots_before = Some(listed_ids(&reply));
            }
        }
    }
    let mut steps = Vec::new();
    let mut outcome = Outcome::Passed;
    let mut reason = None;
    let limit = s.time_limit();
    for (i, step) in s.steps.iter().enumerate() {
        let line = step.span().start().map(|m| m.line()).unwrap_or(0);
        let kind = step.kind();
        if run.started.elapsed() > limit {
            outcome = Outcome::Failed;
            reason = Some(format!(
                "the scenario's time limit of {limit:?} was reached before step {} ({kind})",
                i + 1
            ));
            break;
        }
        on_step(&format!("step {}/{}: {kind}", i + 1, s.steps.len()));
        let timeout = step_timeout(step);
        let t = Instant::now();
        let mut log = StepLog::default();
        // The step's own timeout, with a margin for the work around it.
        let r = match tokio::time::timeout(timeout + Duration::from_secs(5), run.step(step, timeout, &mut log)).await {
            Ok(r) => r,
            Err(_) => Err(StepEnd::Failed(format!(
                "the step did not finish within its timeout of {timeout:?}"
            ))),
        };
        if let Err(StepEnd::Unsupported(why)) = &r {
            outcome = Outcome::Skipped;
            reason = Some(format!("step {} {kind} (line {line}): {why}", i + 1));
            steps.push(StepReport {
                index: i + 1,
                kind: kind.to_string(),
                line,
                outcome: Outcome::Skipped,
                duration_s: t.elapsed().as_secs_f64(),
                message: Some(why.clone()),
                transcript: log.lines,
                progress: log.progress,
                latency: log.latency,
                baseline: log.baseline,
            });
            break;
        }
        let failed = r.is_err();
        let message = r.err().map(|e| match e {
            StepEnd::Failed(m) | StepEnd::Unsupported(m) => run.mask(&m),
        });
        steps.push(StepReport {
            index: i + 1,
            kind: kind.to_string(),
            line,
            outcome: if failed { Outcome::Failed } else { Outcome::Passed },
            duration_s: t.elapsed().as_secs_f64(),
            message: message.clone(),
            transcript: log.lines,
            progress: log.progress,
            latency: log.latency,
            baseline: log.baseline,
        });
        if failed {
            outcome = Outcome::Failed;
            reason = Some(format!(
                "step {} {kind} (line {line}): {}",
                i + 1,
                message.unwrap_or_default()
            ));
            break;
        }
    }
    for h in run.holds.drain(..) {
        h.abort();
    }
    let (journal, device_state) = if outcome != Outcome::Failed {
        (None, None)
    } else {
        let fetch = |cmd: &'static str, what: &'static str| {
            let run = &run;
            async move {
                match run.ssh("root", cmd, None, Duration::from_secs(20)).await {
                    Ok(o) => o.stdout + &o.stderr,
                    Err(e) => format!("({what} could not be fetched: {e})"),
                }
            }
        };
        let journal = fetch("journalctl -u nexus-backupd --no-pager -n 200", "the journal").await;
        let state = fetch(DEVICE_STATE, "the device's state").await;
        (Some(journal), Some(state))
    };
    let cleanup = if lifecycle.is_none() {
        run.tidy().await
    } else {
        Vec::new()
    };
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
        cleanup,
        device: None,
    }
}

impl Run<'_> {
    /// Removes what the scenario added to a real device: its snapshots and their backups (a
    /// backup still running is cancelled first), and the users and polkit files `setup.user`
    /// made. Returns what it did, for the report.
    async fn tidy(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        let timeout = Duration::from_secs(30);
        if let Some(before) = self.made.snapshots_before.clone() {
            // A fresh connection: the scenario's own may have been cut by a fault.
            self.buses.clear();
            match self.bus("root", timeout).await {
                Ok(bus) => {
                    let now = bus
                        .call(crate::conform::SNAPSHOT1, "GetList", &[])
                        .await
                        .map(|r| listed_ids(&r))
                        .unwrap_or_default();
                    let status = bus
                        .call(crate::conform::BACKUP1, "Status", &[])
                        .await
                        .unwrap_or_default();
                    let running = status.first().and_then(|s| s.get("id")).and_then(|v| v.as_u64());
                    for id in now.iter().filter(|id| !before.contains(id)) {
                        let arg = [id.to_string()];
                        if running == Some(*id) {
                            let _ = bus.call(crate::conform::BACKUP1, "Cancel", &[]).await;
                            for _ in 0..100 {
                                let s = bus
                                    .call(crate::conform::BACKUP1, "Status", &[])
                                    .await
                                    .unwrap_or_default();
                                if s.first().and_then(|s| s.get("id")).and_then(|v| v.as_u64()) != Some(*id) {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        let backup = bus.call(crate::conform::BACKUP1, "Delete", &arg).await;
                        let snapshot = bus.call(crate::conform::SNAPSHOT1, "Delete", &arg).await;
                        done.push(match (backup, snapshot) {
                            (_, Err(e)) => format!("snapshot {id} made by the scenario could not be deleted: {e}"),
                            (Ok(_), Ok(_)) => format!("deleted snapshot {id} and its backup"),
                            (Err(_), Ok(_)) => format!("deleted snapshot {id}"),
                        });
                    }
                }
                Err(e) => done.push(format!(
                    "cannot reach the device to remove the scenario's snapshots: {e}"
                )),
            }
        }
        // The scenario's own D-Bus bridges run as its users: close them first.
        self.buses.clear();
        for u in self.made.users.clone() {
            let script = format!("{}remove_user {}", crate::provision::REMOVE_USER, sh_quote(&u));
            done.push(match self.ssh("root", &script, None, timeout).await {
                Ok(o) if o.code == Some(0) => format!("removed user {u}"),
                Ok(o) => format!(
                    "user {u} made by the scenario could not be removed: {}",
                    o.stderr.trim()
                ),
                Err(e) => format!("user {u} made by the scenario could not be removed: {e}"),
            });
        }
        for f in self.made.pkla.clone() {
            let path = format!("/etc/polkit-1/localauthority/50-local.d/{f}");
            done.push(match self.ssh("root", &format!("rm -f {path}"), None, timeout).await {
                Ok(o) if o.code == Some(0) => format!("removed {path}"),
                Ok(o) => format!("{path} could not be removed: {}", o.stderr.trim()),
                Err(e) => format!("{path} could not be removed: {e}"),
            });
        }
        done
    }
}

/// What is pulled from a device whose scenario failed, besides the journal: the file system's
/// usage and the snapshots and backups as its own services list them.
const DEVICE_STATE: &str = "echo '== btrfs filesystem usage /broot'; btrfs filesystem usage /broot 2>&1; \
     echo '== Snapshot1.GetList'; busctl --system --json=short call tech.noreya.Snapshot1 /tech/noreya/Snapshot1 tech.noreya.Snapshot1 GetList 2>&1; \
     echo '== Backup1.GetList'; busctl --system --json=short call tech.noreya.Backup1 /tech/noreya/Backup1 tech.noreya.Backup1 GetList 2>&1; \
     echo '== ls -la /broot/backups'; ls -la /broot/backups 2>&1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_scripts_windows_are_read_by_condition() {
        let j = r#"{"period_us":10000,"io":false,"samples":2,"missed":0,"lateness_us":{"p50":5,"p99":9,"p999":9,"max":9,"mean":7.0},"io_us":null,"lateness_buckets":[[8,1],[16,1]],"lateness_counts":[[5,1],[9,1]]}"#;
        let (with, without) = parse_windows(&format!("without {j}\nwith {j}\n\nwithout {j}\n")).unwrap();
        assert_eq!((with.len(), without.len()), (1, 2));
        assert_eq!(with[0].lateness_counts, vec![(5, 1), (9, 1)]);
        let e = parse_windows(&format!("with {j}\nWelcome to the NEXUS\n")).unwrap_err();
        assert!(e.contains("not one of its windows") && e.contains("Welcome"), "{e}");
        let e = parse_windows("with {\"period_us\":").unwrap_err();
        assert!(e.contains("not its JSON"), "{e}");
    }
}
