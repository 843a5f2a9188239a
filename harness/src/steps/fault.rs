//! The fault steps: which [`Fault`] each asks of the device's [`crate::device::Lifecycle`]
//! (where it is injected: `device::container::faults` for the emulator), waiting first for a
//! backup to reach `at_percent`, and afterwards for the daemon to answer again. A device with no
//! lifecycle (a real one) cannot have them: the scenario is skipped with the reason.

use std::time::{Duration, Instant};

use nexus_contract::names::BACKUP1;

use super::{StepEnd, StepLog};
use crate::device::{Fault, Lifecycle};
use crate::scenario::{FaultStep, Step};
use crate::session::{render, Session};

/// Runs a `fault.*` step.
pub async fn run(s: &mut Session<'_>, step: &Step, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let Some(lifecycle) = s.lifecycle else {
        return Err(StepEnd::Unsupported(format!(
            "{} needs the emulator's lifecycle; this target has none",
            step.kind()
        )));
    };
    match step {
        Step::FaultKillDaemon(f) => restart(s, lifecycle, Fault::KillDaemon, f, timeout, log).await,
        Step::FaultRestartDaemon(f) => restart(s, lifecycle, Fault::RestartDaemon, f, timeout, log).await,
        Step::FaultReboot(f) => restart(s, lifecycle, Fault::Reboot, f, timeout, log).await,
        Step::FaultCutNetwork(f) => {
            log.lines
                .push(format!("the network goes down in {:?} for {:?}", f.after, f.duration));
            lifecycle.fault(Fault::CutNetwork(f.after, f.duration)).await?;
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
            lifecycle.fault(Fault::SlowIo { read, write }).await?;
            Ok(())
        }
        Step::FaultFillDisk(f) => {
            log.lines
                .push(format!("filling /broot until {} bytes are free", f.leave_bytes));
            lifecycle.fault(Fault::FillDisk(f.leave_bytes)).await?;
            Ok(())
        }
        other => Err(format!("{} is not a fault", other.kind()).into()),
    }
}

/// A kill, restart or reboot, at a backup's `at_percent` if given; done when `Status` answers.
async fn restart(
    s: &mut Session<'_>,
    lifecycle: &dyn Lifecycle,
    fault: Fault,
    f: &FaultStep,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    if let (Some(p), Some(id)) = (f.at_percent, &f.id) {
        let id = s.subst(id);
        wait_for_progress(s, &id, p, timeout, log).await?;
    }
    log.lines.push(format!("fault: {fault:?}"));
    let ports = lifecycle.fault(fault).await?;
    // The bridge connections died with the daemon's peers or the device.
    if fault == Fault::Reboot {
        s.buses.clear();
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
    Ok(())
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
