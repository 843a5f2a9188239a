//! The stand-in's lifecycle: the faults a bench with a power switch can have, done to the
//! guest the harness owns. A power cut is SIGKILL of qemu (never a shutdown, which would flush),
//! then, with the card's writes logged, the card rebuilt as it was at the last flush the guest
//! asked for (`crash::log`), and power on again from it. A dead card is the power gone and a
//! fresh copy of the card template in its place. The daemon's faults go over SSH.

use std::time::Duration;

use super::Standin;
use crate::crash::log::{sparse_copy, Replayer, WriteLog};
use crate::device::{daemon_over_ssh, Applied, CutLog, Fault, FaultError, Lifecycle};
use crate::error::InfraError;

impl Lifecycle for Standin {
    fn fault(
        &self,
        fault: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>> {
        Box::pin(async move {
            match fault {
                Fault::KillDaemon => daemon_over_ssh(&self.ssh(), "nexus", true).await,
                Fault::RestartDaemon => daemon_over_ssh(&self.ssh(), "nexus", false).await,
                Fault::PowerCut { stay_off } => self.power_cut(stay_off).await,
                Fault::ReplaceCard => self.replace_card().await,
                Fault::Reboot => self.reboot().await,
                Fault::CutNetwork { after, duration, log } => self.freeze(after, duration, log),
                Fault::IoError {
                    write,
                    flush,
                    count,
                    area,
                    heal,
                    log,
                } => {
                    self.io_error(
                        super::io_error::Failing {
                            write,
                            flush,
                            count,
                            area,
                        },
                        heal,
                        log,
                    )
                    .await
                }
                Fault::FillDisk(_) | Fault::SlowIo { .. } => Err(FaultError::Unsupported(
                    "the arm64 stand-in cannot fill or throttle its card yet; use the container emulator".into(),
                )),
            }
        })
    }

    fn power_switch(&self) -> bool {
        true
    }

    fn card_bytes_logged(&self) -> Option<(u32, u64)> {
        if !self.log_writes {
            return None;
        }
        let n = self.power_ons.load(std::sync::atomic::Ordering::SeqCst);
        let log = WriteLog::open(&self.boot_dir.join("sdcard.log")).ok()?;
        Some((
            n,
            log.entries
                .iter()
                .filter(|e| e.is_write() && !e.is_discard())
                .map(|e| e.bytes())
                .sum(),
        ))
    }

    fn ways_in(&self) -> Vec<String> {
        vec![format!(
            "console:   nc 127.0.0.1 {}   (the serial console; its log: {})",
            self.console_port,
            self.console.display()
        )]
    }
}

impl Standin {
    /// SIGKILL of qemu; the card then holds what the guest had flushed; powered on again unless
    /// `stay_off`.
    pub async fn power_cut(&self, stay_off: bool) -> Result<Applied, FaultError> {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut note = String::from("qemu killed");
        if self.log_writes {
            let (entries, kept) =
                tokio::task::block_in_place(|| self.keep_flushed()).map_err(|e| FaultError::Failed(e.to_string()))?;
            note = format!("qemu killed; the card kept {kept} of {entries} logged writes (to its last flush)");
        }
        if !stay_off {
            self.power_on(&|m| eprintln!("nexus-hil: {m}"))
                .await
                .map_err(|e| FaultError::Failed(e.to_string()))?;
        }
        Ok(Applied {
            ports: None,
            note: Some(note),
        })
    }

    /// Rebuilds the card as the power cut leaves it: the card this boot started from, with the
    /// logged writes up to the last flush. The boot's log is kept as `sdcard-N.log`.
    fn keep_flushed(&self) -> Result<(usize, usize), InfraError> {
        let dir = &self.boot_dir;
        let (log_path, base, card) = (dir.join("sdcard.log"), dir.join("sdcard.base"), self.sdcard());
        let log = WriteLog::open(&log_path).map_err(|e| InfraError::Emulator(e.to_string()))?;
        let _ = std::fs::remove_file(&card);
        sparse_copy(&base, &card).map_err(|e| InfraError::io(card.display(), e))?;
        let upto = log.last_flush();
        Replayer::new(&log, &card)
            .and_then(|mut r| r.advance_to(upto))
            .map_err(|e| InfraError::Emulator(e.to_string()))?;
        let n = self.power_ons.load(std::sync::atomic::Ordering::SeqCst);
        let _ = std::fs::rename(&log_path, dir.join(format!("sdcard-{n}.log")));
        Ok((log.entries.len(), upto))
    }

    /// The card dies: the power goes (SIGKILL of qemu), the card and its write log are thrown
    /// away, a fresh copy of the card template takes its place, and the power comes back (with
    /// logged writes, `power_on` takes the new card as the log's base).
    pub async fn replace_card(&self) -> Result<Applied, FaultError> {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = &self.boot_dir;
        for f in ["sdcard.img", "sdcard.base", "sdcard.log"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        tokio::task::block_in_place(|| crate::image::sdcard::copy_for(&self.template, &self.sdcard()))
            .map_err(|e| FaultError::Failed(e.to_string()))?;
        self.power_on(&|m| eprintln!("nexus-hil: {m}"))
            .await
            .map_err(|e| FaultError::Failed(e.to_string()))?;
        Ok(Applied {
            ports: None,
            note: Some(format!(
                "qemu killed; the card replaced by a fresh copy of {}",
                self.template.display()
            )),
        })
    }

    /// A clean reboot: the guest shuts down (qemu runs with -no-reboot, so it exits), and is
    /// powered on again from the same disks.
    async fn reboot(&self) -> Result<Applied, FaultError> {
        // The connection drops as the guest goes down: its result says nothing.
        let _ = self
            .ssh()
            .run("nexus", "sudo -n systemctl reboot", None, Duration::from_secs(20))
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while self.exited().is_none() {
            if std::time::Instant::now() > deadline {
                return Err("the stand-in did not shut down within 180 s of `systemctl reboot`"
                    .to_string()
                    .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.child().take();
        self.power_on(&|m| eprintln!("nexus-hil: {m}"))
            .await
            .map_err(|e| FaultError::Failed(e.to_string()))?;
        Ok(Applied::default())
    }

    /// A network cut as a frozen guest: qemu stopped (SIGSTOP) for `duration` after `after`.
    fn freeze(&self, after: Duration, duration: Duration, log: CutLog) -> Result<Applied, FaultError> {
        let pid = self.qemu_pid() as libc::pid_t;
        if pid == 0 {
            return Err("the stand-in is powered off".to_string().into());
        }
        let signal = move |sig| {
            // SAFETY: kill on the pid of our own child, with a plain signal number.
            unsafe { libc::kill(pid, sig) == 0 }
        };
        tokio::spawn(async move {
            let note = |f: &dyn Fn(&mut crate::device::CutState)| f(&mut log.lock().unwrap_or_else(|p| p.into_inner()));
            tokio::time::sleep(after).await;
            if !signal(libc::SIGSTOP) {
                note(&|s| s.error = Some("cannot stop qemu".into()));
                return;
            }
            note(&|s| s.frozen_at = Some(std::time::Instant::now()));
            tokio::time::sleep(duration).await;
            if signal(libc::SIGCONT) {
                note(&|s| s.thawed_at = Some(std::time::Instant::now()));
            } else {
                note(&|s| s.error = Some("cannot continue qemu".into()));
            }
        });
        Ok(Applied::default())
    }
}
