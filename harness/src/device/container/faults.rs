//! The faults a container emulator can have, injected from outside the device as a power
//! strip, a cable or a full card would: the daemon killed or restarted, the container stopped
//! and started (reboot), frozen (network cut), its card filled or throttled.

use super::{port, Emulator};
use crate::device::{Fault, FaultError, Lifecycle, Ports};

impl Lifecycle for Emulator {
    fn fault(
        &self,
        fault: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Ports, FaultError>> + '_>> {
        Box::pin(async move {
            match fault {
                Fault::KillDaemon | Fault::RestartDaemon => self.daemon(fault == Fault::KillDaemon).await,
                Fault::CutNetwork(after, duration) => self.cut_network(after, duration).await,
                Fault::FillDisk(leave) => self.fill_disk(leave).await,
                Fault::SlowIo { read, write } => self.slow_io(read, write).await,
                Fault::Reboot => self.reboot().await,
            }
        })
    }
}

impl Emulator {
    /// SIGKILL of the daemon (`kill`) or its restart; systemd starts it again, as on the device.
    async fn daemon(&self, kill: bool) -> Result<Ports, FaultError> {
        let cmd: &[&str] = if kill {
            &["systemctl", "kill", "--signal=SIGKILL", "nexus-backupd.service"]
        } else {
            &["systemctl", "restart", "nexus-backupd.service"]
        };
        let (code, out) = self.exec(cmd).await.map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("{cmd:?} failed: {out}").into());
        }
        Ok(None)
    }

    /// After `after`, the container is frozen for `duration`: open connections stall.
    async fn cut_network(
        &self,
        after: std::time::Duration,
        duration: std::time::Duration,
    ) -> Result<Ports, FaultError> {
        let docker = crate::engine::client().await.map_err(|e| e.to_string())?;
        let id = self.id.clone();
        // In the background: the steps after this one meet the cut mid-transfer.
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = docker.pause_container(&id).await {
                tracing::warn!("cannot freeze the emulator: {e}");
                return;
            }
            tokio::time::sleep(duration).await;
            if let Err(e) = docker.unpause_container(&id).await {
                tracing::warn!("cannot thaw the emulator: {e}");
            }
        });
        Ok(None)
    }

    async fn fill_disk(&self, leave: u64) -> Result<Ports, FaultError> {
        let script = format!(
            "sync; avail=$(df -B1 --output=avail /broot | tail -n 1); n=$((avail - {leave})); \
                 if [ $n -gt 0 ]; then fallocate -l $n /broot/.nexus-hil-ballast; fi; sync; \
                 df -B1 --output=avail /broot | tail -n 1"
        );
        let (code, out) = self.exec(&["sh", "-c", &script]).await.map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("cannot fill /broot: {out}").into());
        }
        Ok(None)
    }

    async fn slow_io(&self, read: u64, write: u64) -> Result<Ports, FaultError> {
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
                Ok(None)
            }
            3 => Err(FaultError::Unsupported(out.trim().to_string())),
            _ => Err(format!("cannot throttle the SD card: {}", out.trim()).into()),
        }
    }

    /// Stopped and started again; the SD card keeps its state, the ports change.
    async fn reboot(&self) -> Result<Ports, FaultError> {
        let c = self.container();
        c.stop_with_timeout(Some(10))
            .await
            .map_err(|e| format!("cannot stop the emulator: {e}"))?;
        c.start()
            .await
            .map_err(|e| format!("cannot start the emulator again: {e}"))?;
        self.wait_ready().await.map_err(|e| e.to_string())?;
        Ok(Some((
            port(c, 22).await.map_err(|e| e.to_string())?,
            port(c, 443).await.map_err(|e| e.to_string())?,
        )))
    }
}
