//! `nexus-scenario`: scenario files of nexus-hil, the model and loading with checks whose errors
//! point at `file:line:column`. The format is documented in `scenarios/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Spanned;
use serde::Deserialize;

/// A scenario file that could not be loaded, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One scenario: a named flow of steps against one device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `portable` (runs on real devices too) or `emulator-only`, plus any of the user's own.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Variables, used in steps as `${name}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Time limit of the whole scenario (default 10m).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    pub steps: Vec<Spanned<Step>>,
    #[serde(skip)]
    pub file: PathBuf,
}

/// The steps a scenario can take.
#[derive(Debug, Deserialize)]
pub enum Step {
    #[serde(rename = "dbus.call")]
    DbusCall(DbusCall),
    #[serde(rename = "backup.wait")]
    BackupWait(BackupWait),
    #[serde(rename = "ssh.run")]
    SshRun(SshRun),
    #[serde(rename = "ssh.put")]
    SshPut(SshPut),
    #[serde(rename = "http.get")]
    HttpGet(HttpGet),
    #[serde(rename = "http.hold")]
    HttpHold(HttpHold),
    #[serde(rename = "scp.get")]
    ScpGet(ScpGet),
    #[serde(rename = "rsync.pull")]
    RsyncPull(RsyncPull),
    #[serde(rename = "gpg.decrypt")]
    GpgDecrypt(GpgDecrypt),
    #[serde(rename = "archive.matches_snapshot")]
    ArchiveMatchesSnapshot(ArchiveMatchesSnapshot),
    #[serde(rename = "setup.user")]
    SetupUser(SetupUser),
    #[serde(rename = "fault.kill_daemon")]
    FaultKillDaemon(FaultStep),
    #[serde(rename = "fault.restart_daemon")]
    FaultRestartDaemon(FaultStep),
    #[serde(rename = "fault.reboot")]
    FaultReboot(FaultStep),
    #[serde(rename = "fault.fill_disk")]
    FaultFillDisk(FillDisk),
    #[serde(rename = "fault.cut_network")]
    FaultCutNetwork(CutNetwork),
    #[serde(rename = "fault.slow_io")]
    FaultSlowIo(SlowIo),
    #[serde(rename = "probe.latency")]
    ProbeLatency(ProbeLatency),
    #[serde(rename = "repeat")]
    Repeat(Repeat),
}

/// Runs `steps` `times` times in a row; inside them `${iteration}` is the round (1-based).
/// Fails at the first step that fails, naming the round.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub times: u32,
    pub steps: Vec<Spanned<Step>>,
    pub timeout: Option<String>,
}

/// After `after`, the device stops answering on its published ports for `for` (the emulator is
/// frozen, so open connections stall rather than close); runs in the background, so the next
/// steps meet the cut mid-transfer. Emulator only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutNetwork {
    pub after: String,
    #[serde(rename = "for")]
    pub duration: String,
    pub timeout: Option<String>,
}

/// Measures the home-automation loop's timing on the device for a while (`nexus-automation
/// probe`): lateness against its absolute schedule and each tick's I/O, as percentiles, missed
/// periods and a histogram, under the name of the condition it was taken in. With `during`, a
/// shell command (as root) runs in the background for the probe's time, after `settle`: the load
/// whose effect is measured. With `compare_to` (an earlier probe's name) and `max_p99_ratio`, the
/// report gives the verdict of this p99 against that one's; a verdict is reported, it does not
/// fail the scenario (timings are not pass/fail). With `alternate_with`, the step measures two
/// conditions in turns, `windows` windows each: without the load (recorded under
/// `alternate_with`, measured first) and with it (under `name`), `for / windows` per window;
/// each condition's ticks are pooled over its windows, and the verdict compares the two. Both
/// conditions then meet the same background noise of the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeLatency {
    pub name: String,
    #[serde(rename = "for")]
    pub duration: String,
    /// Tick period (default 10ms).
    pub period: Option<String>,
    /// The tick's I/O (sensor reads, state appends, fdatasync); `false`: the timer alone.
    #[serde(default = "yes")]
    pub load: bool,
    pub during: Option<String>,
    /// Time the `during` load runs before measuring starts (default 2s).
    pub settle: Option<String>,
    pub compare_to: Option<String>,
    pub max_p99_ratio: Option<f64>,
    /// The name of the condition without the load, measured in windows that alternate with
    /// the loaded ones (needs `during`; this probe's verdict compares to it).
    pub alternate_with: Option<String>,
    /// Windows per condition with `alternate_with` (default 6).
    pub windows: Option<u32>,
    pub timeout: Option<String>,
}

impl ProbeLatency {
    /// Windows per condition: 1 without `alternate_with`.
    pub fn windows(&self) -> u32 {
        match (&self.alternate_with, self.windows) {
            (None, _) => 1,
            (Some(_), w) => w.unwrap_or(6),
        }
    }
}

fn yes() -> bool {
    true
}

/// Throttles the SD card: reads (and synchronous writes) of the device that holds /broot are
/// limited to these many bytes per second, through the blkio controller (cgroup v1) or `io.max`
/// (cgroup v2) of the emulator's container; 0 lifts the limit. Emulator only; where the host
/// has neither controller the scenario is skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowIo {
    pub read_bytes_per_sec: u64,
    #[serde(default)]
    pub write_bytes_per_sec: u64,
    pub timeout: Option<String>,
}

/// Fills /broot until only `leave_bytes` are free, with the ballast file
/// `/broot/.nexus-hil-ballast` (outside every subvolume; remove it to free the space). Emulator only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillDisk {
    pub leave_bytes: u64,
    pub timeout: Option<String>,
}

/// A fault: kill or restart `nexus-backupd`, or reboot the device. With `at_percent` the fault
/// waits until the running backup of snapshot `id` has reached that progress. Emulator only; on
/// a real device the scenario is skipped with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    pub at_percent: Option<u8>,
    pub id: Option<String>,
    pub timeout: Option<String>,
}

/// Call a method of `tech.noreya.*` on the device's system bus as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbusCall {
    #[serde(rename = "as")]
    pub user: String,
    pub service: String,
    pub method: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The reply's first value must render as this.
    pub expect: Option<String>,
    /// For a dictionary reply (like Status): these keys must have these values.
    #[serde(default)]
    pub expect_fields: BTreeMap<String, String>,
    /// For a dictionary reply: these keys' values must contain these texts.
    #[serde(default)]
    pub expect_fields_contain: BTreeMap<String, String>,
    /// The whole reply must not contain any of these texts (e.g. a description that a refused
    /// call would have made); works on a device that holds other data too.
    #[serde(default)]
    pub expect_not_contains: Vec<String>,
    /// The call must fail with this D-Bus error name.
    pub expect_error: Option<String>,
    /// ...and its message must contain this.
    pub expect_error_contains: Option<String>,
    /// Store the reply's first value in this variable...
    pub capture: Option<String>,
    /// ...or the part of it this JSON pointer names (e.g. `/0/sha256` of a GetList reply).
    pub capture_pointer: Option<String>,
    pub timeout: Option<String>,
}

/// Poll `Backup1.Status` like the vendor's client until the backup of `id` is over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupWait {
    #[serde(rename = "as")]
    pub user: String,
    pub id: String,
    /// `last_result` must then be this (default `ok`); `any` accepts every result.
    pub expect_result: Option<String>,
    pub timeout: Option<String>,
}

/// Run a shell command on the device over ssh as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRun {
    #[serde(rename = "as")]
    pub user: String,
    pub command: String,
    pub stdin: Option<String>,
    /// Expected exit status (default 0).
    pub expect_exit: Option<i32>,
    /// Texts standard output must contain.
    #[serde(default)]
    pub expect_stdout: Vec<String>,
    /// Store standard output (trimmed), or its `capture_word`-th word (1-based), in this variable.
    pub capture: Option<String>,
    pub capture_word: Option<usize>,
    pub timeout: Option<String>,
}

/// Write a file on the device as a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshPut {
    #[serde(rename = "as")]
    pub user: String,
    pub path: String,
    /// The file's text, or `source`: a file next to the scenario whose text is sent.
    pub content: Option<String>,
    pub source: Option<String>,
    pub mode: Option<String>,
    pub timeout: Option<String>,
}

/// GET a path over HTTPS, the device's CA pinned on first use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    pub path: String,
    /// `GET` (default), `HEAD`, or any other method to see it refused.
    pub method: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Local file (in the scenario's work folder) to save the body in.
    pub save: Option<String>,
    pub range: Option<String>,
    /// Expected status (default 200).
    pub expect_status: Option<u16>,
    /// The body's SHA-256 must be this.
    pub expect_sha256: Option<String>,
    /// When the transfer breaks off or stalls (3 s without data), reconnect and ask for the
    /// rest with a Range request, until the step's timeout (needs `save`).
    #[serde(default)]
    pub resume: bool,
    pub timeout: Option<String>,
}

/// Opens `connections` connections to the HTTPS port and holds them in the background until
/// the scenario ends: `idle` ones send nothing, `slow` ones finish TLS and then dribble a
/// request header a byte a second (slowloris). Later steps show whether others are still served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHold {
    pub connections: u32,
    pub mode: String,
    pub timeout: Option<String>,
}

/// `scp USER@host:remote local`, as the vendor's download line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpGet {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    pub timeout: Option<String>,
}

/// `rsync -a` of a device directory over ssh (`sudo: true` reads it as root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsyncPull {
    #[serde(rename = "as")]
    pub user: String,
    pub remote: String,
    pub local: String,
    #[serde(default)]
    pub sudo: bool,
    /// When rsync fails (a dropped connection), run it again with --partial until the timeout.
    #[serde(default)]
    pub resume: bool,
    pub timeout: Option<String>,
}

/// Decrypt a local file with the real GnuPG, as the vendor documents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpgDecrypt {
    pub file: String,
    pub password: String,
    pub output: String,
    /// The decryption must fail (wrong password).
    #[serde(default)]
    pub expect_failure: bool,
    pub timeout: Option<String>,
}

/// A local tar archive (or a pulled directory) must hold exactly the snapshot's files, with
/// content, mode, owner, mtime and symlink targets; the snapshot is read over ssh.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMatchesSnapshot {
    pub archive: Option<String>,
    pub dir: Option<String>,
    pub snapshot: String,
    pub timeout: Option<String>,
}

/// The vendor's setup of a backup user: `adduser`, the pkla grant, and the harness's key
/// (as `ssh-copy-id` would), run over ssh by the admin user with sudo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupUser {
    pub name: String,
    /// Actions to grant (`all` for the nine of the vendor's file; empty: none).
    #[serde(default)]
    pub grant: Vec<String>,
    pub timeout: Option<String>,
}

impl Step {
    /// The step's kind as written in files.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::DbusCall(_) => "dbus.call",
            Step::BackupWait(_) => "backup.wait",
            Step::SshRun(_) => "ssh.run",
            Step::SshPut(_) => "ssh.put",
            Step::HttpGet(_) => "http.get",
            Step::HttpHold(_) => "http.hold",
            Step::ScpGet(_) => "scp.get",
            Step::RsyncPull(_) => "rsync.pull",
            Step::GpgDecrypt(_) => "gpg.decrypt",
            Step::ArchiveMatchesSnapshot(_) => "archive.matches_snapshot",
            Step::SetupUser(_) => "setup.user",
            Step::FaultKillDaemon(_) => "fault.kill_daemon",
            Step::FaultRestartDaemon(_) => "fault.restart_daemon",
            Step::FaultReboot(_) => "fault.reboot",
            Step::FaultFillDisk(_) => "fault.fill_disk",
            Step::FaultCutNetwork(_) => "fault.cut_network",
            Step::FaultSlowIo(_) => "fault.slow_io",
            Step::ProbeLatency(_) => "probe.latency",
            Step::Repeat(_) => "repeat",
        }
    }

    /// Every text of the step that may use `${variables}`.
    pub fn texts(&self) -> Vec<&str> {
        fn o(v: &Option<String>) -> Option<&str> {
            v.as_deref()
        }
        let mut t: Vec<&str> = Vec::new();
        match self {
            Step::DbusCall(s) => {
                t.extend([s.user.as_str(), &s.service, &s.method]);
                t.extend(s.args.iter().map(String::as_str));
                t.extend(o(&s.expect));
                t.extend(s.expect_fields.values().map(String::as_str));
                t.extend(s.expect_fields_contain.values().map(String::as_str));
                t.extend(s.expect_not_contains.iter().map(String::as_str));
            }
            Step::BackupWait(s) => t.extend([s.user.as_str(), &s.id]),
            Step::SshRun(s) => {
                t.extend([s.user.as_str(), &s.command]);
                t.extend(o(&s.stdin));
                t.extend(s.expect_stdout.iter().map(String::as_str));
            }
            Step::SshPut(s) => {
                t.extend([s.user.as_str(), &s.path]);
                t.extend(o(&s.content));
            }
            Step::HttpGet(s) => {
                t.push(&s.path);
                t.extend(o(&s.save));
                t.extend(o(&s.expect_sha256));
                t.extend(o(&s.range));
                t.extend(s.headers.values().map(String::as_str));
            }
            Step::ScpGet(s) => t.extend([s.user.as_str(), &s.remote, &s.local]),
            Step::RsyncPull(s) => t.extend([s.user.as_str(), &s.remote, &s.local]),
            Step::GpgDecrypt(s) => t.extend([s.file.as_str(), &s.password, &s.output]),
            Step::ArchiveMatchesSnapshot(s) => {
                t.push(&s.snapshot);
                t.extend(o(&s.archive));
                t.extend(o(&s.dir));
            }
            Step::SetupUser(s) => t.push(&s.name),
            Step::ProbeLatency(s) => {
                t.push(&s.name);
                t.extend(o(&s.during));
                t.extend(o(&s.compare_to));
                t.extend(o(&s.alternate_with));
            }
            Step::HttpHold(_)
            | Step::FaultFillDisk(_)
            | Step::FaultCutNetwork(_)
            | Step::FaultSlowIo(_)
            | Step::Repeat(_) => {}
            Step::FaultKillDaemon(s) | Step::FaultRestartDaemon(s) | Step::FaultReboot(s) => t.extend(o(&s.id)),
        }
        t
    }

    /// The variable the step defines, if any.
    pub fn captures(&self) -> Option<&str> {
        match self {
            Step::DbusCall(s) => s.capture.as_deref(),
            Step::SshRun(s) => s.capture.as_deref(),
            _ => None,
        }
    }

    pub fn timeout(&self) -> Option<&str> {
        match self {
            Step::DbusCall(s) => s.timeout.as_deref(),
            Step::BackupWait(s) => s.timeout.as_deref(),
            Step::SshRun(s) => s.timeout.as_deref(),
            Step::SshPut(s) => s.timeout.as_deref(),
            Step::HttpGet(s) => s.timeout.as_deref(),
            Step::HttpHold(s) => s.timeout.as_deref(),
            Step::ScpGet(s) => s.timeout.as_deref(),
            Step::RsyncPull(s) => s.timeout.as_deref(),
            Step::GpgDecrypt(s) => s.timeout.as_deref(),
            Step::ArchiveMatchesSnapshot(s) => s.timeout.as_deref(),
            Step::SetupUser(s) => s.timeout.as_deref(),
            Step::FaultKillDaemon(s) | Step::FaultRestartDaemon(s) | Step::FaultReboot(s) => s.timeout.as_deref(),
            Step::FaultFillDisk(s) => s.timeout.as_deref(),
            Step::FaultCutNetwork(s) => s.timeout.as_deref(),
            Step::FaultSlowIo(s) => s.timeout.as_deref(),
            Step::ProbeLatency(s) => s.timeout.as_deref(),
            Step::Repeat(s) => s.timeout.as_deref(),
        }
    }
}

/// Parses `30s`, `2m`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30s, 2m, 500ms"))?;
    let secs_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?} has no unit; write e.g. 30s, 2m, 500ms")),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is longer than any run can be; write e.g. 30s, 2m, 500ms"))
}

/// The `${name}` references in a text; `$${` is a literal `${` (for shell variables).
pub fn references(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// The known tags and what they mean to the runner.
pub const PORTABLE: &str = "portable";
pub const EMULATOR_ONLY: &str = "emulator-only";

impl Scenario {
    /// Loads and checks one file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let err = |line: usize, column: usize, message: String| ScenarioError {
            file: file.clone(),
            line,
            column,
            message,
        };
        let mut s: Scenario = marked_yaml::from_yaml(0, text).map_err(|e| match e {
            marked_yaml::FromYamlError::ParseYaml(le) => {
                let msg = le.to_string();
                let (line, col) = load_error_mark(&le);
                err(line, col, format!("not valid YAML: {msg}"))
            }
            marked_yaml::FromYamlError::FromNode(ne) => {
                let msg = ne.to_string();
                let (line, col) = ne
                    .start_mark()
                    .map(|m| (m.line(), m.column()))
                    .or_else(|| locate_key(text, &msg))
                    .unwrap_or((1, 1));
                err(line, col, explain(&msg))
            }
        })?;
        s.file = path.to_owned();
        let at = |sp: &marked_yaml::Span| sp.start().map(|m| (m.line(), m.column())).unwrap_or((0, 0));
        if let Some(t) = &s.timeout {
            let (l, c) = at(t.span());
            parse_duration(t).map_err(|m| err(l, c, format!("timeout: {m}")))?;
        }
        if s.steps.is_empty() {
            return Err(err(
                1,
                1,
                "the scenario has no steps; add at least one under `steps:`".into(),
            ));
        }
        let mut defined: BTreeSet<String> = s.vars.keys().cloned().collect();
        check_steps(&s.steps, &mut defined, path, &err)?;
        Ok(s)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn time_limit(&self) -> Duration {
        self.timeout
            .as_ref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(600))
    }
}

/// Checks steps in order: timeouts, variables known where used, each step's own rules, files
/// named by `source`; `defined` grows with every capture.
fn check_steps(
    steps: &[Spanned<Step>],
    defined: &mut BTreeSet<String>,
    path: &Path,
    err: &dyn Fn(usize, usize, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    let at = |sp: &marked_yaml::Span| sp.start().map(|m| (m.line(), m.column())).unwrap_or((0, 0));
    for step in steps {
        let (l, c) = at(step.span());
        let kind = step.kind();
        if let Some(t) = step.timeout() {
            parse_duration(t).map_err(|m| err(l, c, format!("{kind}: timeout: {m}")))?;
        }
        for text in step.texts() {
            for name in references(text) {
                if !defined.contains(name) {
                    let known: Vec<&str> = defined.iter().map(String::as_str).collect();
                    return Err(err(
                        l,
                        c,
                        format!(
                            "{kind}: unknown variable ${{{name}}}; define it under `vars:` or capture it in an earlier step (known here: {})",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    ));
                }
            }
        }
        check_step(step).map_err(|m| err(l, c, format!("{kind}: {m}")))?;
        match &**step {
            Step::SshPut(p) => {
                if let Some(src) = &p.source {
                    let full = path.parent().unwrap_or(Path::new(".")).join(src);
                    if !full.is_file() {
                        return Err(err(l, c, format!("{kind}: source {} does not exist", full.display())));
                    }
                }
            }
            Step::Repeat(r) => {
                if r.times == 0 || r.steps.is_empty() {
                    return Err(err(l, c, "repeat: give `times` (at least 1) and some `steps`".into()));
                }
                let fresh = defined.insert(ITERATION.to_string());
                check_steps(&r.steps, defined, path, err)?;
                if fresh {
                    defined.remove(ITERATION);
                }
            }
            _ => {}
        }
        if let Some(v) = step.captures() {
            defined.insert(v.to_string());
        }
    }
    Ok(())
}

/// The variable that holds the round inside `repeat`.
pub const ITERATION: &str = "iteration";

fn check_step(step: &Step) -> Result<(), String> {
    match step {
        Step::DbusCall(s) => {
            if (s.expect.is_some() || !s.expect_fields.is_empty()) && s.expect_error.is_some() {
                return Err("give `expect`/`expect_fields` or `expect_error`, not both".into());
            }
            if s.capture_pointer.is_some() && s.capture.is_none() {
                return Err("`capture_pointer` needs `capture` (the variable to store the value in)".into());
            }
            if !s.service.starts_with("tech.noreya.") {
                return Err(format!(
                    "service {:?} is not one of the device's (tech.noreya.*)",
                    s.service
                ));
            }
        }
        Step::ArchiveMatchesSnapshot(s) if s.archive.is_some() == s.dir.is_some() => {
            return Err("give exactly one of `archive` (a tar file) or `dir` (a pulled directory)".into());
        }
        Step::FaultKillDaemon(s) | Step::FaultRestartDaemon(s) | Step::FaultReboot(s)
            if s.at_percent.is_some() != s.id.is_some() =>
        {
            return Err("`at_percent` and `id` (the snapshot being backed up) go together".into());
        }
        Step::FaultCutNetwork(s) if parse_duration(&s.after).is_err() || parse_duration(&s.duration).is_err() => {
            return Err(format!(
                "`after` and `for` are durations like 2s or 500ms, not {:?} and {:?}",
                s.after, s.duration
            ));
        }
        Step::ProbeLatency(s) => {
            for (key, v) in [
                ("for", Some(&s.duration)),
                ("period", s.period.as_ref()),
                ("settle", s.settle.as_ref()),
            ] {
                if let Some(v) = v {
                    match parse_duration(v) {
                        Ok(d) if d.is_zero() && key != "settle" => {
                            return Err(format!("`{key}` must be more than zero"))
                        }
                        Ok(_) => {}
                        Err(m) => return Err(format!("`{key}`: {m}")),
                    }
                }
            }
            if s.max_p99_ratio.is_some() && s.compare_to.is_none() && s.alternate_with.is_none() {
                return Err(
                    "`max_p99_ratio` needs `compare_to` (the name of an earlier probe) or `alternate_with`".into(),
                );
            }
            if s.windows.is_some() && s.alternate_with.is_none() {
                return Err("`windows` splits a probe that alternates with its unloaded condition; give `alternate_with` (its name) too".into());
            }
            if let Some(a) = &s.alternate_with {
                if s.during.is_none() {
                    return Err(
                        "`alternate_with` names the condition without the `during` load; give `during` too".into(),
                    );
                }
                if s.compare_to.is_some() {
                    return Err("`alternate_with` is what this probe compares to; drop `compare_to`".into());
                }
                if a == &s.name {
                    return Err(format!(
                        "`alternate_with` needs a name of its own, not this probe's {a:?}"
                    ));
                }
                let n = s.windows();
                if !(2..=100).contains(&n) {
                    return Err(format!("`windows`: use 2..100, not {n}"));
                }
                if let Ok(d) = parse_duration(&s.duration) {
                    if d / n < Duration::from_secs(1) {
                        return Err(format!(
                            "`for` {} in {n} windows leaves under 1s per window; use fewer windows or a longer `for`",
                            s.duration
                        ));
                    }
                }
            }
            if s.max_p99_ratio.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err("`max_p99_ratio` is a ratio above 0, like 1.2".into());
            }
            if s.settle.is_some() && s.during.is_none() {
                return Err("`settle` is the time the `during` load runs first; give `during` too".into());
            }
        }
        Step::HttpGet(s) if s.resume && s.save.is_none() => {
            return Err("`resume` needs `save` (the file the rest is appended to)".into());
        }
        Step::HttpHold(s) if s.mode != "idle" && s.mode != "slow" => {
            return Err(format!(
                "mode {:?}: use `idle` (connect, send nothing) or `slow` (slowloris)",
                s.mode
            ));
        }
        Step::HttpHold(s) if s.connections == 0 || s.connections > 1000 => {
            return Err("connections: use 1..1000".into());
        }
        Step::SshRun(s) if s.capture_word.is_some() && s.capture.is_none() => {
            return Err("`capture_word` needs `capture` (the variable to store the word in)".into());
        }
        Step::SshPut(s) => {
            if s.content.is_some() == s.source.is_some() {
                return Err(
                    "give exactly one of `content` (the text) or `source` (a file next to the scenario)".into(),
                );
            }
            if let Some(m) = &s.mode {
                if u32::from_str_radix(m, 8).is_err() {
                    return Err(format!("mode {m:?} is not an octal mode like 0755"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The first `quoted` name in a message.
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Where the key a message names (an unknown field or step) first appears, when the parser
/// gave no position: the line holding `name:` as a key.
fn locate_key(text: &str, msg: &str) -> Option<(usize, usize)> {
    let name = quoted(msg)?;
    text.lines().enumerate().find_map(|(i, line)| {
        let col = line.find(&format!("{name}:"))?;
        let before = line[..col].trim_start_matches(' ').trim_end();
        (before.is_empty() || before == "-" || before.ends_with('{') || before.ends_with(','))
            .then_some((i + 1, col + 1))
    })
}

/// Makes serde's wording about enums say "step".
fn explain(msg: &str) -> String {
    match (msg.contains("unknown variant"), quoted(msg)) {
        (true, Some(name)) => format!(
            "unknown step `{name}`; the steps are dbus.call, backup.wait, ssh.run, ssh.put, http.get, http.hold, scp.get, rsync.pull, gpg.decrypt, archive.matches_snapshot, setup.user, fault.kill_daemon, fault.restart_daemon, fault.reboot, fault.fill_disk, fault.cut_network, fault.slow_io, probe.latency, repeat (see scenarios/README.md)"
        ),
        _ => msg.to_string(),
    }
}

fn load_error_mark(e: &marked_yaml::LoadError) -> (usize, usize) {
    use marked_yaml::LoadError as L;
    let m = match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => Some(*m),
        _ => None,
    };
    m.map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

/// Finds scenario files: each path is a file, or a folder whose `*.yaml` files are taken in name order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!("{}: no such scenario file or folder", p.display()));
        }
    }
    Ok(files)
}
