//! `fault.replace_card` on a bench: the vendor's "setup a new SDCard", done by the harness. The
//! power off, the card switched to this machine by the bench's SD mux, the inventory's
//! `new_card` image written onto it and read back (as `nexus-hil flash` writes), the card given
//! back, the power on, and the wait for SSH and both D-Bus names. Only on a device the inventory
//! marks `throwaway`: the card's whole content goes. The card goes back and the power comes on
//! in every outcome (a step dropped at its timeout too; Ctrl-C gives the card back through
//! `sdmux::give_back_all`).

use super::card_read::GiveBack;
use super::power::{switch, switch_on, Bench};
use super::sdmux::{self, Side};
use crate::device::{Applied, FaultError};

impl Bench {
    /// Writes `[device.sdmux] new_card` onto the powered-off device's card, then powers it on
    /// and waits for it.
    pub(super) async fn replace_card(&self) -> Result<Applied, FaultError> {
        let unsupported = |why: &str| Err(FaultError::Unsupported(why.into()));
        let Some(m) = self.sdmux.as_ref() else {
            return unsupported(
                "fault.replace_card writes a new card through the bench's SD mux: add [device.sdmux] with \
                 `new_card` to this device's entry in targets.toml (docs/real-hardware.md)",
            );
        };
        let Some(image) = m.new_card.as_ref() else {
            return unsupported(
                "fault.replace_card writes the image [device.sdmux] `new_card` names onto the card: name one in \
                 this device's entry (a device marked `throwaway = true`; docs/real-hardware.md)",
            );
        };
        if !self.throwaway {
            return unsupported(
                "fault.replace_card erases the card: only on a device its entry marks `throwaway = true`",
            );
        }
        if let Err(e) = std::fs::File::open(image) {
            return Err(FaultError::Failed(format!(
                "the new card's image {}: {e} (targets.toml, [device.sdmux] new_card); the card was not touched",
                image.display()
            )));
        }
        let p = self.power()?;
        let before = self.boot_id().await;
        // This run's lease lives on the device's card: read now, written again on the new one.
        let lease = super::lock::lease_on(&self.dev).await;
        let off = switch(p, false).await?;
        let mut back = GiveBack {
            mux: Some(m.clone()),
            power: Some(p.clone()),
        };
        tokio::time::sleep(p.off_time).await;
        let say = |l: &str| eprintln!("nexus-hil: {l}");
        let written = sdmux::write_image(m, image, &say).await;
        let returned = sdmux::switch(m, Side::Dut).await;
        back.mux = None;
        let on = switch_on(p).await;
        back.power = None;
        let mut said = vec![format!("power off: {off}")];
        match &written {
            Ok(f) => said.push(format!(
                "{} written onto the card and read back equal ({} of {} bytes in {} ranges: {:.1} MB/s, verified \
                 in {:.1} s)",
                image.display(),
                f.written,
                f.image_bytes,
                f.ranges,
                f.write_mb_s(),
                f.verify_s
            )),
            Err(e) => said.push(format!("the new card was not written: {e}")),
        }
        match &returned {
            Ok(done) => said.push(format!("the card is back on the device: {done}")),
            Err(e) => said.push(format!("THE CARD STAYS ON THIS MACHINE: {e}")),
        }
        match &on {
            Ok(done) => said.push(format!("power on: {done}")),
            Err(e) => said.push(e.to_string()),
        }
        if written.is_err() || returned.is_err() || on.is_err() {
            return Err(FaultError::Failed(said.join("; ")));
        }
        match self.wait_ready(p.boot_timeout, before.as_deref()).await {
            Ok(t) => said.push(format!("ready {:.1} s after", t.as_secs_f64())),
            Err(e) => {
                said.push(e.to_string());
                return Err(FaultError::Failed(said.join("; ")));
            }
        }
        if let Some(lease) = &lease {
            super::lock::put_back(&self.dev, lease).await.map_err(|e| {
                FaultError::Failed(format!("{}; this run's lease on the new card: {e}", said.join("; ")))
            })?;
        }
        Ok(Applied {
            ports: None,
            note: Some(said.join("; ")),
        })
    }
}
