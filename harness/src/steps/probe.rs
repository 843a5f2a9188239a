//! `probe.latency`: the home-automation loop's timing measured on the device by
//! `nexus-automation probe` (copied over for the step when the device lacks it), under a
//! `during` load in its own process group, optionally in windows that take turns with the same
//! probe without the load; each condition's windows pooled, and the verdict against the
//! condition compared with.

use std::time::Duration;

use super::{StepEnd, StepLog};
use crate::report::{latency::pool, Latency, Measured, Verdict};
use crate::scenario::{family, ProbeLatency};
use crate::session::Session;
use crate::transport::ssh::sh_quote;

/// Where the probe keeps its I/O on the device while it runs.
const PROBE_DIR: &str = "/broot/data/.nexus-hil-probe";

/// The time the step needs besides the usual margin: the probe's own time and its load's
/// settling (with `alternate_with`: twice the time, and a settle and the load's stop per window).
pub fn default_timeout(p: &ProbeLatency) -> Duration {
    let settle = p.settle.unwrap_or(Duration::from_secs(2));
    let turns = if p.alternate_with.is_some() { 2 } else { 1 };
    p.duration * turns + (settle * turns + Duration::from_secs(5)) * p.windows()
}

/// What the step's script needs to know.
struct Plan {
    windows: u32,
    probe_cmd: String,
    settle_s: f64,
    during: Option<String>,
    alternating: bool,
    /// The probe's copy in /tmp, removed at the end.
    copied: Option<String>,
}

/// The script run as root: every window prints one line, `with JSON` or `without JSON`. The
/// load is stopped as a whole group (SIGTERM, and SIGKILL 30 s later if it is still there).
/// Written for any POSIX `sh` (dash's `kill` takes no `--`).
fn script(p: &Plan) -> String {
    let (windows, probe_cmd, settle_s) = (p.windows, &p.probe_cmd, p.settle_s);
    let mut script = String::from("rc=0\n");
    if let Some(d) = &p.during {
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
    if p.alternating {
        // `sync` first: what the last loaded window left to write back is not the idle's.
        script.push_str(&format!(
            "sync\nsleep {settle_s}\nout=$({probe_cmd}) || {{ rc=$?; break; }}\nprintf 'without %s\\n' \"$out\"\n"
        ));
    }
    if p.during.is_some() {
        script.push_str(&format!(
            "start_load\nout=$({probe_cmd}); prc=$?\nstop_load\n[ $prc = 0 ] || {{ rc=$prc; break; }}\n[ $rc = 0 ] || break\n"
        ));
    } else {
        script.push_str(&format!("out=$({probe_cmd}) || {{ rc=$?; break; }}\n"));
    }
    script.push_str("printf 'with %s\\n' \"$out\"\ndone\n");
    script.push_str(&format!("rm -rf {PROBE_DIR}\n"));
    if let Some(c) = &p.copied {
        script.push_str(&format!("rm -f {c}\n"));
    }
    script.push_str("exit $rc\n");
    script
}

/// Runs `probe.latency`.
/// Does a step of the probe family.
pub async fn step(
    s: &mut Session<'_>,
    step: family::Probe<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Probe::ProbeLatency(p) => run(s, p, timeout, log).await,
    }
}

pub async fn run(s: &mut Session<'_>, p: &ProbeLatency, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let name = s.subst(&p.name);
    let baseline_name = p.alternate_with.as_deref().map(|b| s.subst(b));
    let windows = p.windows();
    let window = p.duration / windows;
    let period = p.period.unwrap_or(Duration::from_millis(10));
    let settle = p.settle.unwrap_or(Duration::from_secs(2));
    let during = p.during.as_deref().map(|d| s.subst(d));
    // A device without the probe (a real NEXUS) gets one copied over for this step only.
    let copied = copy_probe_if_missing(s, log).await?;
    let probe = copied.clone().unwrap_or_else(|| "nexus-automation".to_string());
    let plan = Plan {
        windows,
        probe_cmd: format!(
            "{probe} probe --for {}ms --period {}us --dir {PROBE_DIR}{}",
            window.as_millis(),
            period.as_micros(),
            if p.load { "" } else { " --no-io" }
        ),
        settle_s: settle.as_secs_f64(),
        during: during.clone(),
        alternating: baseline_name.is_some(),
        copied: copied.clone(),
    };
    log.lines.push(format!(
        "probe {name:?}: {}{:?} of {period:?} ticks{}{}",
        if windows > 1 {
            format!(
                "{windows} windows of {window:?} each, taking turns with {:?} (the same without the load); ",
                baseline_name.as_deref().unwrap_or_default()
            )
        } else {
            String::new()
        },
        p.duration,
        if p.load { " with their I/O" } else { ", timer only" },
        during.as_deref().map(|d| format!(", during: {d}")).unwrap_or_default()
    ));
    let out = s.ssh("root", &script(&plan), None, timeout).await;
    if let (Err(_), Some(c)) = (&out, &copied) {
        // The step's own removal did not run: try once more, so nothing is left behind.
        let _ = s
            .ssh("root", &format!("rm -f {c}"), None, Duration::from_secs(10))
            .await;
    }
    let out = out?;
    if out.code != Some(0) {
        return Err(format!("the probe failed (exit {:?}): {}", out.code, out.stderr.trim()).into());
    }
    let (with, without) = parse_windows(&out.stdout)?;
    let want_without = if plan.alternating { windows as usize } else { 0 };
    if with.len() != windows as usize || without.len() != want_without {
        return Err(format!(
            "the probe printed {} loaded and {} unloaded windows, not {windows} each: {}",
            with.len(),
            without.len(),
            out.stdout.trim()
        )
        .into());
    }
    record(s, p, name, during, baseline_name, (&with, &without), log)
}

/// Pools each condition's windows, gives the verdict, and writes it all to the log and to the
/// session's probes (for later `compare_to`).
fn record(
    s: &mut Session<'_>,
    p: &ProbeLatency,
    name: String,
    during: Option<String>,
    baseline_name: Option<String>,
    (with, without): (&[Measured], &[Measured]),
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let windows = with.len();
    if windows > 1 {
        for (i, (a, b)) in without.iter().zip(with).enumerate() {
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
    let measured = pooled(with)?;
    let baseline = match baseline_name {
        None => None,
        Some(b) => Some(Latency {
            name: b,
            during: None,
            window_p99_us: window_p99s(without),
            measured: pooled(without)?,
            verdict: None,
        }),
    };
    let verdict = verdict(s, p, baseline.as_ref(), &measured)?;
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
        window_p99_us: if windows > 1 { window_p99s(with) } else { Vec::new() },
        measured,
        verdict,
    };
    if let Some(b) = &baseline {
        s.probes.push(b.clone());
    }
    s.probes.push(latency.clone());
    log.baseline = baseline;
    log.latency = Some(latency);
    Ok(())
}

/// The windows pooled. The report keeps the lateness's full-precision counts (the results
/// history stores them as the probe's samples), not the I/O's.
fn pooled(windows: &[Measured]) -> Result<Measured, StepEnd> {
    let mut m = pool(windows)?;
    m.io_counts.clear();
    Ok(m)
}

/// The verdict against the paired condition (`alternate_with`) or an earlier probe (`compare_to`).
fn verdict(
    s: &Session<'_>,
    p: &ProbeLatency,
    baseline: Option<&Latency>,
    measured: &Measured,
) -> Result<Option<Verdict>, StepEnd> {
    let base = match (baseline, &p.compare_to) {
        (Some(b), _) => Some((b.name.clone(), b.measured.lateness_us.p99)),
        (None, None) => None,
        (None, Some(other)) => {
            let other = s.subst(other);
            let Some(base) = s.probes.iter().find(|l| l.name == other) else {
                let known: Vec<&str> = s.probes.iter().map(|l| l.name.as_str()).collect();
                return Err(StepEnd::Failed(format!(
                    "compare_to: no earlier probe is named {other:?} (the probes so far: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            Some((other, base.measured.lateness_us.p99))
        }
    };
    Ok(base.map(|(compare_to, base_p99)| {
        let ratio = measured.lateness_us.p99.max(1) as f64 / base_p99.max(1) as f64;
        Verdict {
            compare_to,
            ratio,
            max_ratio: p.max_p99_ratio,
            met: p.max_p99_ratio.is_none_or(|m| ratio <= m),
        }
    }))
}

/// When the device has no `nexus-automation`, copies the harness's build for the device's
/// architecture to a fresh path in /tmp and returns that path (the step removes it);
/// `Unsupported` when there is no build for that architecture.
async fn copy_probe_if_missing(s: &Session<'_>, log: &mut StepLog) -> Result<Option<String>, StepEnd> {
    let t = Duration::from_secs(30);
    let out = s
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
    let out = s
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
