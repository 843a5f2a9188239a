//! The fault steps: which [`Fault`] each asks of the device's [`crate::device::Lifecycle`]
//! (where it is injected: `device::container::faults` for the emulator), waiting first for a
//! backup to reach `at_percent`, and afterwards for the daemon to answer again. A device with no
//! lifecycle (a real one) cannot have them: the scenario is skipped with the reason.

use std::time::{Duration, Instant};

use nexus_contract::names::BACKUP1;

use super::{StepEnd, StepLog};
use crate::device::{Applied, CutLog, Fault, Lifecycle};
use crate::scenario::{FaultStep, Step};
use crate::session::{render, Cut, Session};

/// The daemon's process id as systemd knows it (0 when it is not running).
const DAEMON_PID: &str = "systemctl show -p MainPID --value nexus-backupd";
/// Who the device is this boot: the kernel's boot id and when PID 1 started (a container's
/// restart keeps the host kernel's boot id but starts a new PID 1).
const BOOT_ID: &str = "echo \"$(cat /proc/sys/kernel/random/boot_id) pid1-start $(cut -d' ' -f22 /proc/1/stat)\"";

/// Runs a `fault.*` step.
pub async fn run(s: &mut Session<'_>, step: &Step, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let Some(lifecycle) = s.lifecycle else {
        return Err(StepEnd::Unsupported(format!(
            "{} needs the emulator's lifecycle; this target has none",
            step.kind()
        )));
    };
    match step {
        Step::FaultKillDaemon(f) => restart(s, lifecycle, Fault::KillDaemon, when(f), timeout, log).await,
        Step::FaultRestartDaemon(f) => restart(s, lifecycle, Fault::RestartDaemon, when(f), timeout, log).await,
        Step::FaultReboot(f) => restart(s, lifecycle, Fault::Reboot, when(f), timeout, log).await,
        Step::FaultPowerCut(p) => {
            let fault = Fault::PowerCut { stay_off: p.stay_off };
            let at = match p.at_percent_between {
                Some((lo, hi)) => {
                    let drawn = s.random.between(u64::from(lo), u64::from(hi)) as u8;
                    log.lines.push(format!(
                        "the cut comes at {drawn}%, drawn from {lo}..={hi} (scenario seed {})",
                        s.random.seed
                    ));
                    Some(drawn)
                }
                None => p.at_percent,
            };
            restart(s, lifecycle, fault, (at, p.id.as_deref()), timeout, log).await
        }
        Step::FaultCutNetwork(f) => {
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
        Step::FaultSlowIo(f) => {
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
        Step::FaultFillDisk(f) => {
            log.lines
                .push(format!("filling /broot until {} bytes are free", f.leave_bytes));
            let applied = lifecycle.fault(Fault::FillDisk(f.leave_bytes)).await?;
            log.lines.extend(applied.note);
            Ok(())
        }
        other => Err(format!("{} is not a fault", other.kind()).into()),
    }
}

/// When a fault comes: at the running backup's progress, or at once.
fn when(f: &FaultStep) -> (Option<u8>, Option<&str>) {
    (f.at_percent, f.id.as_deref())
}

/// A kill, restart, reboot or power cut, at a backup's `at_percent` if given; done when
/// `Status` answers again (or at once for a power cut that stays off).
async fn restart(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    fault: Fault,
    (at_percent, id): (Option<u8>, Option<&str>),
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    if let (Some(p), Some(id)) = (at_percent, id) {
        let id = s.subst(id);
        wait_for_progress(s, &id, p, timeout, log).await?;
    }
    let stays_off = matches!(fault, Fault::PowerCut { stay_off: true });
    let reboot = matches!(fault, Fault::Reboot | Fault::PowerCut { .. });
    let proof = if reboot { BOOT_ID } else { DAEMON_PID };
    let before = identity(s, proof, timeout).await?;
    log.lines.push(format!("fault: {fault:?}"));
    let Applied { ports, note } = lifecycle.fault(fault).await?;
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
            let bus = s.bus("root", timeout).await?;
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
