//! The fault steps: which [`Fault`] each asks of the device's [`crate::device::Lifecycle`]
//! (where it is injected: `device::container::faults` for the emulator, `device::standin::power`
//! for the stand-in), waiting first for a backup to reach `at_percent` or for a seeded delay
//! into another step (`during`), and afterwards for the daemon to answer again. A device with no
//! lifecycle (a real one) cannot have them: the scenario is skipped with the reason.

use std::time::{Duration, Instant};

use nexus_contract::names::BACKUP1;

use super::{StepEnd, StepLog};
use crate::device::{Applied, CutLog, Fault, IoLog, Lifecycle};
use crate::scenario::{family, FaultStep, IoError, IoKind, IoWhere, PowerCut, Step};
use crate::session::{render, Cut, Session};

/// The daemon's process id as systemd knows it (0 when it is not running).
const DAEMON_PID: &str = "systemctl show -p MainPID --value nexus-backupd";
/// Who the device is this boot: the kernel's boot id and when PID 1 started (a container's
/// restart keeps the host kernel's boot id but starts a new PID 1).
const BOOT_ID: &str = "echo \"$(cat /proc/sys/kernel/random/boot_id) pid1-start $(cut -d' ' -f22 /proc/1/stat)\"";

/// Runs a `fault.*` step.
pub async fn run(
    s: &mut Session<'_>,
    step: family::Fault<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    use family::Fault as F;
    let Some(lifecycle) = s.lifecycle else {
        return Err(StepEnd::Unsupported(match step {
            F::FaultReplaceCard(_) => "the card swap is the operator's: fault.replace_card needs a target whose SD \
                                          card the harness holds (--target standin or emulator, or a throwaway \
                                          bench device with [device.sdmux] new_card)"
                .to_string(),
            _ => format!("{} needs the emulator's lifecycle; this target has none", step.kind()),
        }));
    };
    match step {
        F::FaultKillDaemon(f) => restart(s, lifecycle, Fault::KillDaemon, when(f), timeout, log).await,
        F::FaultRestartDaemon(f) => restart(s, lifecycle, Fault::RestartDaemon, when(f), timeout, log).await,
        F::FaultReboot(f) => restart(s, lifecycle, Fault::Reboot, when(f), timeout, log).await,
        F::FaultPowerCut(p) if p.inspect => super::card_read::power_cut(s, lifecycle, p, timeout, log).await,
        F::FaultPowerCut(p) => power_cut(s, lifecycle, p, timeout, log).await,
        F::FaultReplaceCard(_) => replace_card(s, lifecycle, timeout, log).await,
        F::FaultCutNetwork(f) => {
            log.lines
                .push(format!("the network goes down in {:?} for {:?}", f.after, f.duration));
            let cut = CutLog::default();
            let (after, duration) = (f.after, f.duration);
            lifecycle
                .fault(Fault::CutNetwork {
                    after,
                    duration,
                    log: cut.clone(),
                })
                .await?;
            // Whether the freeze took is known only later: the runner checks it by the
            // scenario's end, and transfers that `expect_interrupted` check they met it.
            s.cuts.push(Cut {
                log: cut,
                ends_after: after + duration,
                started: Instant::now(),
            });
            Ok(())
        }
        F::FaultSlowIo(f) => {
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
            let (read, write) = (f.read_bytes_per_sec, f.write_bytes_per_sec);
            let applied = lifecycle.fault(Fault::SlowIo { read, write }).await?;
            log.lines.extend(applied.note);
            Ok(())
        }
        F::FaultFillDisk(f) => {
            log.lines
                .push(format!("filling /broot until {} bytes are free", f.leave_bytes));
            let applied = lifecycle.fault(Fault::FillDisk(f.leave_bytes)).await?;
            log.lines.extend(applied.note);
            Ok(())
        }
        F::FaultIoError(e) => io_error(s, lifecycle, e, timeout, log).await,
    }
}

/// When a fault comes.
enum When<'a> {
    Now,
    /// When the running backup of this snapshot has reached the percent.
    AtPercent(u8, &'a str),
    /// This long after the step starts, or after `during` (a step and its line) starts, which
    /// the fault must meet.
    After(Duration, Option<(&'a Step, usize)>),
}

/// When a daemon fault comes: at the running backup's progress, or at once.
fn when(f: &FaultStep) -> When<'_> {
    match (f.at_percent, f.id.as_deref()) {
        (Some(p), Some(id)) => When::AtPercent(p, id),
        _ => When::Now,
    }
}

/// `fault.power_cut`: when it comes (a drawn percent or delay is named with the seed), then
/// the cut and the way back.
pub(super) async fn power_cut(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    p: &PowerCut,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let seed = s.random.seed;
    // The step to cut, and its line in the file.
    let during = p
        .during
        .as_deref()
        .map(|d| (&**d, d.span().start().map(|m| m.line()).unwrap_or(0)));
    let what = during.map_or("the step".to_string(), |(d, line)| {
        format!("{} (line {line})", d.kind())
    });
    let when = match (
        p.at_percent_between,
        p.at_percent,
        p.after_between,
        p.after,
        p.id.as_deref(),
    ) {
        (Some((lo, hi)), _, _, _, Some(id)) => {
            let drawn = s.random.between(u64::from(lo), u64::from(hi)) as u8;
            log.lines.push(format!(
                "the cut comes at {drawn}%, drawn from {lo}..={hi} (scenario seed {seed})"
            ));
            When::AtPercent(drawn, id)
        }
        (None, Some(at), _, _, Some(id)) => When::AtPercent(at, id),
        (_, _, Some((lo, hi)), _, _) => {
            let ms = s.random.between(lo.as_millis() as u64, hi.as_millis() as u64);
            log.lines.push(format!(
                "the power goes {ms} ms after {what} starts, drawn from {lo:?}..={hi:?} (scenario seed {seed})"
            ));
            When::After(Duration::from_millis(ms), during)
        }
        (_, _, None, Some(after), _) => {
            log.lines.push(format!("the power goes {after:?} after {what} starts"));
            When::After(after, during)
        }
        _ => When::Now,
    };
    restart(
        s,
        lifecycle,
        Fault::PowerCut { stay_off: p.stay_off },
        when,
        timeout,
        log,
    )
    .await
}

/// `fault.replace_card`: a marker written to the old card and synced (so no power cut could
/// lose it), the card replaced, and the marker gone: proof the device came back on a new card.
async fn replace_card(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let marker = format!("/broot/.nexus-hil-old-card-{nanos}");
    let out = s
        .ssh("root", &format!("echo old card > {marker} && sync"), None, timeout)
        .await?;
    if out.code != Some(0) {
        return Err(format!("cannot mark the old card with {marker}: {}", out.stderr.trim()).into());
    }
    log.lines.push(format!("the old card is marked with {marker} (synced)"));
    restart(s, lifecycle, Fault::ReplaceCard, When::Now, timeout, log).await?;
    let check = format!(
        "test ! -e {marker} && echo \"the marker is gone; on the new card: $(ls -A /broot/backups | wc -l) file(s) in \
         /broot/backups, $(ls -A /broot/snapshot/snapshots | wc -l) snapshot(s)\""
    );
    let out = s.ssh("root", &check, None, timeout).await?;
    if out.code != Some(0) {
        return Err(
            format!("the card was not replaced: {marker}, written to the old card and synced, is still there").into(),
        );
    }
    log.lines.push(out.stdout.trim().to_string());
    Ok(())
}

/// A kill, restart, reboot, power cut or card swap, when `when` says; done when `Status`
/// answers again (or at once for a power cut that stays off).
async fn restart(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    fault: Fault,
    when: When<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    if let When::AtPercent(p, id) = when {
        let id = s.subst(id);
        wait_for_progress(s, &id, p, timeout, log).await?;
    }
    let stays_off = matches!(fault, Fault::PowerCut { stay_off: true });
    let reboot = matches!(fault, Fault::Reboot | Fault::PowerCut { .. } | Fault::ReplaceCard);
    let proof = if reboot { BOOT_ID } else { DAEMON_PID };
    let before = identity(s, proof, timeout).await?;
    log.lines.push(format!("fault: {fault:?}"));
    let Applied { ports, note } = match when {
        When::After(delay, Some((inner, line))) => cut_during(s, lifecycle, fault, delay, (inner, line), log).await?,
        When::After(delay, None) => {
            tokio::time::sleep(delay).await;
            lifecycle.fault(fault).await?
        }
        _ => lifecycle.fault(fault).await?,
    };
    log.lines.extend(note);
    // The bridge connections died with the daemon's peers or the device.
    if reboot {
        s.buses.clear();
    }
    if stays_off {
        log.lines
            .push(format!("the device stays off (boot id before: {before})"));
        return Ok(());
    }
    if let Some((ssh, https)) = ports {
        log.lines
            .push(format!("the device is back on ssh {ssh}, https {https}"));
        s.dev.ssh.port = ssh;
        s.dev.https.port = https;
    }
    // Back means: both names answer again.
    let start = Instant::now();
    loop {
        let r = async {
            let bus = s.bus("root", timeout).await.map_err(|e| e.to_string())?;
            bus.call(BACKUP1, "Status", &[]).await.map_err(|e| e.to_string())
        }
        .await;
        match r {
            Ok(_) => break,
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("nexus-backupd did not come back within {timeout:?}: {e}").into())
            }
            Err(_) => {
                s.buses.remove("root");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    log.lines.push(format!(
        "nexus-backupd answers again after {:.2} s",
        start.elapsed().as_secs_f64()
    ));
    // The fault proves it happened: a new daemon process, or a new boot.
    let after = identity(s, proof, timeout).await?;
    let what = if reboot { "boot id" } else { "daemon pid" };
    log.lines.push(format!("{what}: {before} -> {after}"));
    if after == before || after == "0" || after.is_empty() {
        return Err(format!("the fault did not take: the {what} is still {after:?}").into());
    }
    Ok(())
}

/// The device's answer to `cmd` (the daemon's pid, or the boot's identity), trimmed.
async fn identity(s: &Session<'_>, cmd: &str, timeout: Duration) -> Result<String, StepEnd> {
    let out = s.ssh("root", cmd, None, timeout).await?;
    if out.code != Some(0) {
        return Err(format!("`{cmd}` failed on the device: {}", out.stderr.trim()).into());
    }
    Ok(out.stdout.trim().to_string())
}

/// Polls `Status` until the backup of `id` has reached `percent`.
async fn wait_for_progress(
    s: &mut Session<'_>,
    id: &str,
    percent: u8,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    log.lines
        .push(format!("waiting until the backup of snapshot {id} reaches {percent}%"));
    let start = Instant::now();
    loop {
        let bus = s.bus("root", timeout).await?;
        let st = bus
            .call(BACKUP1, "Status", &[])
            .await
            .map_err(|e| format!("Status failed: {e}"))?
            .into_iter()
            .next()
            .unwrap_or_default();
        if render(&st["id"]) != id {
            return Err(format!("the backup of snapshot {id} ended before reaching {percent}%").into());
        }
        let now = st["progress"].as_u64().unwrap_or(0);
        if now >= u64::from(percent) {
            log.lines.push(format!("at {now}%"));
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("the backup stayed below {percent}% for {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `inner` and cuts the power `delay` later, while it runs: the step fails if `inner`
/// ended first (the cut would not be during it) or passed after the cut (its answer was on its
/// way: the device had finished it). Its breaking off is expected; its lines go to the
/// transcript.
async fn cut_during(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    fault: Fault,
    delay: Duration,
    (inner, line): (&Step, usize),
    log: &mut StepLog,
) -> Result<Applied, StepEnd> {
    let what = format!("{} (line {line})", inner.kind());
    let t = super::step_timeout(inner);
    let mut inner_log = StepLog::default();
    let started = Instant::now();
    let mut call = Box::pin(tokio::time::timeout(t, super::run(s, inner, t, &mut inner_log)));
    let early = tokio::select! {
        biased;
        r = &mut call => Some(r),
        () = tokio::time::sleep(delay) => None,
    };
    let (ended, applied) = match early {
        Some(r) => {
            drop(call);
            (r, None)
        }
        None => {
            let cut_at = started.elapsed();
            let (r, applied) = tokio::join!(call, lifecycle.fault(fault));
            log.lines.push(format!(
                "the power went {:.3} s into {what}, while it ran",
                cut_at.as_secs_f64()
            ));
            (r, Some(applied))
        }
    };
    let ran = started.elapsed();
    log.lines
        .extend(inner_log.lines.into_iter().map(|l| format!("  during: {l}")));
    let outcome = match &ended {
        Ok(Ok(())) => "passed".to_string(),
        Ok(Err(StepEnd::Failed(m) | StepEnd::Unsupported(m))) => format!("broke off: {m}"),
        Err(_) => format!("did not end within its timeout of {t:?}"),
    };
    let Some(applied) = applied else {
        return Err(format!(
            "{what} ended ({outcome}) {:.3} s after it started, before the power went at {delay:?}: the cut must \
             come while it runs; draw the delay from a shorter range",
            ran.as_secs_f64()
        )
        .into());
    };
    let applied = applied?;
    if matches!(ended, Ok(Ok(()))) {
        return Err(format!(
            "{what} passed though the power went while it ran: its answer was already on its way, so the device had \
             finished it; draw the delay from a shorter range"
        )
        .into());
    }
    log.lines.push(format!("{what} {outcome}, as the power went"));
    Ok(applied)
}

/// How long the card fails at most when no `during` step sets the window.
const IO_ERROR_WINDOW: Duration = Duration::from_secs(30);

/// `fault.io_error`: when the card starts failing (at once, at a backup's percent, after a
/// delay, into a `during` step), how long (until its errors are spent, the `during` step ends
/// or `for` passes), and the proof: the requests the card failed, as the host counted them,
/// with the guest kernel's own lines about them in the transcript.
async fn io_error(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    e: &IoError,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let heal = std::sync::Arc::new(tokio::sync::Notify::new());
    let io = IoLog::default();
    let fault = |area| Fault::IoError {
        write: e.what.contains(&IoKind::Write),
        flush: e.what.contains(&IoKind::Flush),
        count: e.count,
        area,
        heal: heal.clone(),
        log: io.clone(),
    };
    let what: Vec<&str> = e
        .what
        .iter()
        .map(|k| match k {
            IoKind::Write => "writes",
            IoKind::Flush => "flushes",
        })
        .collect();
    log.lines.push(match e.place {
        IoWhere::Anywhere => format!(
            "the SD card is to fail the next {} {} with EIO",
            e.count,
            what.join(" and ")
        ),
        IoWhere::BackupData => format!(
            "the SD card is to fail with EIO every write to where the backup's data goes next, until {} failed",
            e.count
        ),
    });
    let applied = match e.during.as_deref() {
        Some(inner) => {
            let line = inner.span().start().map(|m| m.line()).unwrap_or(0);
            fail_during(
                s,
                lifecycle,
                fault(Vec::new()),
                &heal,
                e.after.unwrap_or_default(),
                (inner, line),
                log,
            )
            .await?
        }
        None => {
            let mut area = Vec::new();
            if let (Some(p), Some(id)) = (e.at_percent, e.id.as_deref()) {
                let id = s.subst(id);
                wait_for_progress(s, &id, p, timeout, log).await?;
                if e.place == IoWhere::BackupData {
                    area = backup_area(s, &id, timeout, log).await?;
                }
            } else if let Some(after) = e.after {
                tokio::time::sleep(after).await;
            }
            let window = e.window.unwrap_or(IO_ERROR_WINDOW);
            let failing = lifecycle.fault(fault(area));
            tokio::pin!(failing);
            tokio::select! {
                r = &mut failing => r?,
                () = tokio::time::sleep(window) => {
                    heal.notify_one();
                    failing.await?
                }
            }
        }
    };
    log.lines.extend(applied.note);
    let done = io.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The guest's kernel saw them too (not the proof: its log may be rate-limited).
    let kernel = "dmesg | grep -E 'I/O error|BTRFS (error|warning|critical)|forced readonly' | tail -n 8";
    if let Ok(out) = s.ssh("root", kernel, None, timeout).await {
        log.lines
            .extend(out.stdout.lines().map(|l| format!("  kernel: {}", l.trim())));
    }
    if done.failed_writes + done.failed_flushes == 0 {
        return Err(format!(
            "the card failed no request while it was failing: no {} reached it; make the errors come while the \
             device writes (`during` a step that writes, or `at_percent` of a running backup)",
            what.join(" or ")
        )
        .into());
    }
    if e.what.contains(&IoKind::Flush) && done.failed_flushes == 0 {
        return Err(format!(
            "the card failed {} write(s) but no flush: none reached it while it was failing (btrfs sends no more \
             after a failed write of its metadata); to fail flushes, ask for `what: [flush]` alone",
            done.failed_writes
        )
        .into());
    }
    if e.what.contains(&IoKind::Write) && done.failed_writes == 0 {
        return Err(format!(
            "the card failed {} flush(es) but no write: none reached it while it was failing; to fail writes, ask \
             for `what: [write]` alone",
            done.failed_flushes
        )
        .into());
    }
    Ok(())
}

/// Where the running backup of `id` writes next on the card (`where: backup_data`), read in
/// the device.
async fn backup_area(
    s: &mut Session<'_>,
    id: &str,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<Vec<std::ops::Range<u64>>, StepEnd> {
    let out = s.ssh("root", &super::backup_area::command(id), None, timeout).await?;
    if out.code != Some(0) {
        return Err(format!(
            "cannot find where the backup of {id} writes on the card (exit {:?}): {}",
            out.code,
            out.stderr.trim()
        )
        .into());
    }
    let (area, line) = super::backup_area::area(&out.stdout)
        .map_err(|m| format!("cannot find where the backup of {id} writes on the card: {m}"))?;
    log.lines.push(line);
    Ok(area)
}

/// Starts `inner`, makes the card fail `delay` later while it runs, and heals it when `inner`
/// ends. `inner` must pass by its own expectations (what the user sees of the errors); the
/// step fails if it ended before the card failed.
async fn fail_during(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    fault: Fault,
    heal: &tokio::sync::Notify,
    delay: Duration,
    (inner, line): (&Step, usize),
    log: &mut StepLog,
) -> Result<Applied, StepEnd> {
    let what = format!("{} (line {line})", inner.kind());
    let t = super::step_timeout(inner);
    let mut inner_log = StepLog::default();
    let started = Instant::now();
    let mut call = Box::pin(tokio::time::timeout(t, super::run(s, inner, t, &mut inner_log)));
    let early = tokio::select! {
        biased;
        r = &mut call => Some(r),
        () = tokio::time::sleep(delay) => None,
    };
    let (ended, applied) = match early {
        Some(r) => {
            drop(call);
            (r, None)
        }
        None => {
            log.lines.push(format!(
                "the card fails from {:.3} s into {what}",
                started.elapsed().as_secs_f64()
            ));
            let ran = async {
                let r = call.await;
                heal.notify_one();
                r
            };
            let (r, applied) = tokio::join!(ran, lifecycle.fault(fault));
            (r, Some(applied))
        }
    };
    log.lines
        .extend(inner_log.lines.into_iter().map(|l| format!("  during: {l}")));
    let outcome = match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(StepEnd::Failed(m) | StepEnd::Unsupported(m))) => Err(m),
        Err(_) => Err(format!("did not end within its timeout of {t:?}")),
    };
    let Some(applied) = applied else {
        return Err(format!(
            "{what} ended ({}) {:.3} s after it started, before the card was to fail at {delay:?}: the errors must \
             come while it runs; give a shorter `after`",
            outcome.err().unwrap_or_else(|| "passed".into()),
            started.elapsed().as_secs_f64()
        )
        .into());
    };
    let applied = applied?;
    if let Err(m) = outcome {
        log.lines.extend(applied.note);
        return Err(format!("{what}, during which the card failed: {m}").into());
    }
    log.lines.push(format!("{what} passed while the card failed"));
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::device::{Device, FaultError};
    use crate::scenario::Scenario;
    use crate::session::SeededRandom;
    use crate::transport::https::HttpsTarget;
    use crate::transport::ssh::SshTarget;

    /// A lifecycle that only counts the faults it is asked for.
    #[derive(Default)]
    struct Counting(AtomicU32);

    impl Lifecycle for Counting {
        fn fault(
            &self,
            _fault: Fault,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(Applied::default()) })
        }
    }

    /// A session on a device nobody answers for (port 1 of loopback refuses at once).
    fn session<'a>(work: &Path, lifecycle: Option<&'a dyn Lifecycle>) -> Session<'a> {
        Session {
            dev: Device {
                ssh: SshTarget {
                    host: "127.0.0.1".into(),
                    port: 1,
                    key: work.join("no-key"),
                    known_hosts: work.join("known_hosts"),
                    multiplex: None,
                },
                https: HttpsTarget {
                    host: "127.0.0.1".into(),
                    port: 1,
                    pin: work.join("pinned-ca.pem"),
                    token: None,
                    ca_sha256: None,
                },
                admin: "nexus".into(),
                pubkey: String::new(),
                ui: Default::default(),
            },
            lifecycle,
            work: work.to_owned(),
            vars: Default::default(),
            buses: HashMap::new(),
            scenario_dir: work.to_owned(),
            holds: Vec::new(),
            probes: Vec::new(),
            cuts: Vec::new(),
            random: SeededRandom::for_scenario(1, "test"),
            browser: None,
            secrets: Vec::new(),
            card_before_backup: Default::default(),
        }
    }

    fn steps(yaml: &str) -> Scenario {
        Scenario::parse(&format!("name: t\nsteps:\n{yaml}"), Path::new("t.yaml")).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_card_swap_on_a_real_device_is_the_operators() {
        let work = tempfile::tempdir().unwrap();
        let mut s = session(work.path(), None);
        let sc = steps("  - fault.replace_card: {}\n");
        let r = crate::steps::run(&mut s, &sc.steps[0], Duration::from_secs(5), &mut StepLog::default()).await;
        match r {
            Err(StepEnd::Unsupported(m)) => assert!(m.contains("the card swap is the operator's"), "{m}"),
            _ => panic!("a real device cannot have its card replaced by the harness"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cut_must_meet_the_step_it_comes_during() {
        let work = tempfile::tempdir().unwrap();
        let power = Counting::default();
        let mut s = session(work.path(), Some(&power));
        let sc = steps("  - ssh.run: {as: nexus, command: 'sleep 1'}\n");
        let inner: &Step = &sc.steps[0];
        let cut = || Fault::PowerCut { stay_off: false };

        // The step ends (ssh is refused at once) long before the power would go: no cut.
        let mut log = StepLog::default();
        let r = cut_during(&mut s, &power, cut(), Duration::from_secs(20), (inner, 3), &mut log).await;
        match r {
            Err(StepEnd::Failed(m)) => assert!(m.contains("before the power went"), "{m}"),
            _ => panic!("a step that ended before the cut must fail the cut"),
        }
        assert_eq!(power.0.load(Ordering::SeqCst), 0, "no cut when the step had ended");

        // The power goes at once, while ssh is still starting: the cut meets the step.
        let mut log = StepLog::default();
        let r = cut_during(&mut s, &power, cut(), Duration::ZERO, (inner, 3), &mut log).await;
        assert!(r.is_ok(), "{:?}", log.lines);
        assert_eq!(power.0.load(Ordering::SeqCst), 1);
        assert!(log.lines.iter().any(|l| l.contains("while it ran")), "{:?}", log.lines);
        assert!(log.lines.iter().any(|l| l.contains("broke off")), "{:?}", log.lines);
    }
}
