//! The faults a container emulator can have, injected from outside the device as a power
//! strip, a cable or a full card would: the daemon killed or restarted, the container stopped
//! and started (reboot), frozen (network cut), its card filled, throttled or replaced by a new
//! one. Each says what it measured to show it took (the freeze's times, the throttled read rate).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{port, Emulator};
use crate::device::{Applied, CutLog, Fault, FaultError, Lifecycle};

impl Lifecycle for Emulator {
    fn fault(
        &self,
        fault: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>> {
        Box::pin(async move {
            match fault {
                Fault::KillDaemon => self.daemon(true).await,
                Fault::RestartDaemon => self.daemon(false).await,
                Fault::CutNetwork { after, duration, log } => self.cut_network(after, duration, log).await,
                Fault::FillDisk(leave) => self.fill_disk(leave).await,
                Fault::SlowIo { read, write } => self.slow_io(read, write).await,
                Fault::Reboot => self.reboot().await,
                Fault::ReplaceCard => self.replace_card().await,
                Fault::PowerCut { .. } => Err(FaultError::Unsupported(
                    "fault.power_cut needs a target with its own kernel (--target standin): the container \
                     emulator's SD card lives in the host's kernel, which keeps every write a power cut would lose"
                        .into(),
                )),
                Fault::IoError { .. } => Err(FaultError::Unsupported(
                    "fault.io_error needs a target whose SD card the harness serves (--target standin): the container \
                     emulator's card is a loop device of the host's kernel, which has no way to make it fail a request"
                        .into(),
                )),
            }
        })
    }

    fn ways_in(&self) -> Vec<String> {
        // The engine the container runs on (`crate::engine` set DOCKER_HOST when it started).
        let engine = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.contains("podman") => "docker",
            _ => "podman",
        };
        vec![format!(
            "shell:     {engine} exec -it {} bash   (root, inside the container)",
            self.id
        )]
    }
}

impl Emulator {
    /// SIGKILL of the daemon (`kill`) or its restart; systemd starts it again, as on the device.
    async fn daemon(&self, kill: bool) -> Result<Applied, FaultError> {
        let cmd: &[&str] = if kill {
            &["systemctl", "kill", "--signal=SIGKILL", "nexus-backupd.service"]
        } else {
            &["systemctl", "restart", "nexus-backupd.service"]
        };
        let (code, out) = self.exec(cmd).await.map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("{cmd:?} failed: {out}").into());
        }
        Ok(Applied::default())
    }

    /// After `after`, the container is frozen for `duration`: open connections stall. In the
    /// background, so the steps after this one meet the cut mid-transfer; `log` gets the times
    /// the freeze took and ended (checked by the engine, not assumed), or why it did not.
    async fn cut_network(&self, after: Duration, duration: Duration, log: CutLog) -> Result<Applied, FaultError> {
        let docker = crate::engine::client().await.map_err(|e| e.to_string())?;
        let id = self.id.clone();
        let note = |log: &CutLog, f: &dyn Fn(&mut crate::device::CutState)| {
            f(&mut log.lock().unwrap_or_else(|p| p.into_inner()));
        };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = docker.pause_container(&id).await {
                note(&log, &|s| s.error = Some(format!("cannot freeze the emulator: {e}")));
                return;
            }
            let frozen = Instant::now();
            match paused(&docker, &id).await {
                Ok(true) => note(&log, &|s| s.frozen_at = Some(frozen)),
                Ok(false) => note(&log, &|s| {
                    s.error = Some("the engine accepted the freeze but the container is not paused".into())
                }),
                Err(e) => note(&log, &|s| s.error = Some(e.clone())),
            }
            tokio::time::sleep(duration).await;
            match docker.unpause_container(&id).await {
                Ok(()) => note(&log, &|s| s.thawed_at = Some(Instant::now())),
                Err(e) => note(&log, &|s| s.error = Some(format!("cannot thaw the emulator: {e}"))),
            }
        });
        Ok(Applied::default())
    }

    async fn fill_disk(&self, leave: u64) -> Result<Applied, FaultError> {
        let script = format!(
            "sync; avail=$(df -B1 --output=avail /broot | tail -n 1); n=$((avail - {leave})); \
                 if [ $n -gt 0 ]; then fallocate -l $n /broot/.nexus-hil-ballast; fi; sync; \
                 df -B1 --output=avail /broot | tail -n 1"
        );
        let (code, out) = self.exec(&["sh", "-c", &script]).await.map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("cannot fill /broot: {out}").into());
        }
        Ok(Applied {
            ports: None,
            note: Some(format!("{} bytes free on /broot", out.trim())),
        })
    }

    async fn slow_io(&self, read: u64, write: u64) -> Result<Applied, FaultError> {
        // The container sees its own cgroup at /sys/fs/cgroup: every process of the
        // emulator, the daemon's threads included, is throttled on the SD card's device.
        let script = format!(
            r#"set -e
src=$(findmnt -no SOURCE /broot | sed 's/\[.*//')
dev=$(lsblk -dno MAJ:MIN "$src" | tr -d ' ')
v1=/sys/fs/cgroup/blkio
if [ -w $v1/blkio.throttle.read_bps_device ]; then
  echo "$dev {read}" > $v1/blkio.throttle.read_bps_device
  echo "$dev {write}" > $v1/blkio.throttle.write_bps_device
  echo "blkio $dev: $(cat $v1/blkio.throttle.read_bps_device | tr '\n' ' ')"
elif [ -w /sys/fs/cgroup/io.max ]; then
  r={read}; w={write}; [ "$r" = 0 ] && r=max; [ "$w" = 0 ] && w=max
  echo "$dev rbps=$r wbps=$w" > /sys/fs/cgroup/io.max
  echo "io.max $dev: $(cat /sys/fs/cgroup/io.max)"
else
  echo "this host's cgroups offer neither blkio throttling (v1) nor io.max (v2) to the container" >&2
  exit 3
fi"#
        );
        let (code, out) = self.exec(&["sh", "-c", &script]).await.map_err(|e| e.to_string())?;
        match code {
            0 => {
                tracing::debug!("slow_io: {}", out.trim());
                self.measure_read(read).await
            }
            3 => Err(FaultError::Unsupported(out.trim().to_string())),
            _ => Err(format!("cannot throttle the SD card: {}", out.trim()).into()),
        }
    }

    /// Stopped and started again; the SD card keeps its state, the ports change.
    async fn reboot(&self) -> Result<Applied, FaultError> {
        self.stop().await?;
        Ok(Applied {
            ports: Some(self.start_again().await?),
            note: None,
        })
    }

    async fn stop(&self) -> Result<(), FaultError> {
        self.container()
            .stop_with_timeout(Some(10))
            .await
            .map_err(|e| format!("cannot stop the emulator: {e}").into())
    }

    /// Started again after [`Self::stop`]; once ready, its new SSH and HTTPS ports.
    async fn start_again(&self) -> Result<(u16, u16), FaultError> {
        let c = self.container();
        c.start()
            .await
            .map_err(|e| format!("cannot start the emulator again: {e}"))?;
        self.wait_ready().await.map_err(|e| e.to_string())?;
        Ok((
            port(c, 22).await.map_err(|e| e.to_string())?,
            port(c, 443).await.map_err(|e| e.to_string())?,
        ))
    }

    /// A new card: the container stopped, its card replaced by a fresh copy of the card
    /// template, started again (the container's own file system, the system, stays).
    async fn replace_card(&self) -> Result<Applied, FaultError> {
        if !self.owns_card {
            return Err(FaultError::Unsupported(
                "this emulator boots from a card image it does not own (a card state being checked); it cannot have \
                 its card replaced"
                    .into(),
            ));
        }
        let template = template_of(&self.sdcard)?;
        self.stop().await?;
        let card = self.sdcard.clone();
        let fresh = template.clone();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&card);
            crate::image::sdcard::copy_for(&fresh, &card)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Applied {
            ports: Some(self.start_again().await?),
            note: Some(format!("the card replaced by a fresh copy of {}", template.display())),
        })
    }

    /// Reads about two seconds' worth of `limit` from the SD card's device, past every cache,
    /// and fails unless the rate is throttled (at most twice the limit, for the engine's burst).
    async fn measure_read(&self, limit: u64) -> Result<Applied, FaultError> {
        if limit == 0 {
            return Ok(Applied {
                ports: None,
                note: Some("the SD card's limit is lifted".into()),
            });
        }
        let blocks = (2 * limit).div_ceil(65536).max(1);
        let script = format!(
            "src=$(findmnt -no SOURCE /broot | sed 's/\\[.*//'); s=$(date +%s%N); \
             dd if=\"$src\" of=/dev/null bs=65536 count={blocks} iflag=direct 2>/dev/null || exit 4; \
             echo $(( $(date +%s%N) - s ))"
        );
        let (code, out) = self.exec(&["sh", "-c", &script]).await.map_err(|e| e.to_string())?;
        let nanos: u64 = match (code, out.trim().parse()) {
            (0, Ok(n)) => n,
            _ => return Err(format!("cannot measure the SD card's read rate: {}", out.trim()).into()),
        };
        let rate = (blocks * 65536) as f64 / (nanos.max(1) as f64 / 1e9);
        let note = format!("reads measured at {rate:.0} B/s (limit {limit} B/s)");
        if rate > 2.0 * limit as f64 {
            return Err(format!("the throttle did not take: {note}").into());
        }
        Ok(Applied {
            ports: None,
            note: Some(note),
        })
    }
}

/// Whether the engine lists the container as paused.
async fn paused(docker: &testcontainers::bollard::Docker, id: &str) -> Result<bool, String> {
    use testcontainers::bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([
        ("id".to_string(), vec![id.to_string()]),
        ("status".to_string(), vec!["paused".to_string()]),
    ]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await
        .map(|l| !l.is_empty())
        .map_err(|e| format!("cannot ask the engine whether the emulator is frozen: {e}"))
}

/// The card template a card was copied from. The emulator keeps only its copy's path, so the
/// template is found in the image cache by its length (each content size makes a card of its
/// own length); the newest one if there are several.
fn template_of(card: &Path) -> Result<PathBuf, String> {
    template_in(&crate::cache::images(), card)
}

fn template_in(dir: &Path, card: &Path) -> Result<PathBuf, String> {
    let len = std::fs::metadata(card)
        .map_err(|e| format!("{}: {e}", card.display()))?
        .len();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("sdcard-v") && name.ends_with(".img")
        })
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.len() == len)?;
            Some((m.modified().ok()?, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        format!(
            "no card template of {len} bytes (the emulator's card) in {}: the emulator cannot have a new card",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::template_in;

    #[test]
    fn a_new_card_is_a_copy_of_the_template_of_the_cards_size() {
        let cache = tempfile::tempdir().unwrap();
        let file = |name: &str, len: u64| {
            let p = cache.path().join(name);
            std::fs::File::create(&p).unwrap().set_len(len).unwrap();
            p
        };
        file("sdcard-v1-64MiB.img", 1000);
        let big = file("sdcard-v1-256MiB.img", 3000);
        file("root.img", 3000);
        let work = tempfile::tempdir().unwrap();
        let card = work.path().join("sdcard.img");
        std::fs::File::create(&card).unwrap().set_len(3000).unwrap();
        assert_eq!(template_in(cache.path(), &card), Ok(big));
        std::fs::File::create(&card).unwrap().set_len(2000).unwrap();
        let e = template_in(cache.path(), &card).unwrap_err();
        assert!(e.contains("no card template of 2000 bytes"), "{e}");
    }
}
