//! `nexus-hil flash`: a bench device's SD card brought to a known state. The device is switched
//! off, its card switched to this machine by its `[device.sdmux]`, awaited at its stable path,
//! checked (the inventory's card, not mounted, its size), the image's mapped blocks written and
//! read back; then the card goes back to the device and the power comes on, whatever happened
//! (Ctrl-C too). Exit status: 0 written and verified, 1 the card did not hold what was written,
//! 2 bad arguments or a refusal (nothing was touched), 3 the bench failed (power, mux, card
//! missing).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bench::power;
use crate::bench::sdmux::{self, MuxError, Side};
use crate::device::inventory::Inventory;
use crate::error::InfraError;
use crate::exit::Exit;

/// Arguments of `nexus-hil flash`.
#[derive(Debug, clap::Args)]
pub struct FlashArgs {
    /// The device, by its name in the inventory; it needs [device.sdmux] and [device.power].
    #[arg(long)]
    pub target: String,
    /// The inventory that describes the device.
    #[arg(long, default_value = "targets.toml")]
    pub targets: PathBuf,
    /// Say that the card's whole content may go: everything on it is replaced by the image
    /// (without it, nothing is done).
    #[arg(long)]
    pub erase: bool,
    /// Leave the device off afterwards (the card is still switched back to it).
    #[arg(long)]
    pub stay_off: bool,
    /// A raw disk image (e.g. the SD-card image `nexus-hil image` builds); its holes are not
    /// written.
    pub image: PathBuf,
}

/// Runs `nexus-hil flash`.
pub async fn command(args: FlashArgs) -> Result<ExitCode, InfraError> {
    let usage = |m: String| {
        super::say(&m);
        Ok(ExitCode::from(Exit::Usage))
    };
    let inv = match Inventory::load(&args.targets) {
        Ok(inv) => inv,
        Err(e) => return usage(e.to_string()),
    };
    let Some(entry) = inv.devices.iter().find(|d| d.name == args.target) else {
        let names: Vec<&str> = inv.devices.iter().map(|d| d.name.as_str()).collect();
        return usage(format!(
            "{}: no device named {:?}; it names {}",
            args.targets.display(),
            args.target,
            names.join(", ")
        ));
    };
    let Some(mux) = entry.sdmux.clone() else {
        return usage(format!(
            "{}: {} has no [device.sdmux]: the harness cannot reach its card (see docs/real-hardware.md)",
            args.targets.display(),
            entry.name
        ));
    };
    let Some(plug) = entry.power.clone() else {
        return usage(format!(
            "{}: {} has no [device.power]: its card is switched away only while it is off",
            args.targets.display(),
            entry.name
        ));
    };
    if let Err(e) = std::fs::File::open(&args.image) {
        return usage(format!("the image {}: {e}", args.image.display()));
    }
    if !args.erase {
        return usage(format!(
            "flashing replaces everything on {}'s SD card ({}) with {}: say so with --erase",
            entry.name,
            mux.card.display(),
            args.image.display()
        ));
    }
    crate::runner::interrupt::guard("switching the SD card back to its device");
    let say = |m: &str| eprintln!("nexus-hil flash: {}: {m}", entry.name);

    match power::switch(&plug, false).await {
        Ok(done) => say(&format!("power off: {done}")),
        Err(e) => {
            say(&format!("the power did not go off ({e}); the card was not touched"));
            return Ok(ExitCode::from(Exit::Infra));
        }
    }
    tokio::time::sleep(plug.off_time).await;
    let written = sdmux::write_image(&mux, &args.image, &say).await;
    // Back to the device in every outcome.
    let back = sdmux::switch(&mux, Side::Dut).await;
    match &back {
        Ok(done) => say(&format!("the card is back on the device: {done}")),
        Err(e) => say(&format!("THE CARD STAYS ON THIS MACHINE: {e}")),
    }
    if !args.stay_off {
        match power::switch_on(&plug).await {
            Ok(done) => say(&format!(
                "power on: {done}; `nexus-hil health --target {}` tells when it is up",
                entry.target()
            )),
            Err(e) => say(&e.to_string()),
        }
    }
    Ok(match (written, back) {
        (Ok(f), Ok(_)) => {
            say(&format!(
                "{} written and read back equal ({} of {} bytes in {} ranges: {:.1} MB/s, verified in {:.1} s)",
                args.image.display(),
                f.written,
                f.image_bytes,
                f.ranges,
                f.write_mb_s(),
                f.verify_s
            ));
            ExitCode::SUCCESS
        }
        (Err(e @ MuxError::Verify { .. }), _) => {
            say(&e.to_string());
            ExitCode::from(Exit::Failed)
        }
        (
            Err(
                e @ (MuxError::NotTheCard { .. }
                | MuxError::InUse { .. }
                | MuxError::Size { .. }
                | MuxError::TooLarge { .. }),
            ),
            _,
        ) => {
            say(&format!("refused, nothing was written: {e}"));
            ExitCode::from(Exit::Usage)
        }
        (Err(e), _) => {
            say(&e.to_string());
            ExitCode::from(Exit::Infra)
        }
        (Ok(_), Err(_)) => ExitCode::from(Exit::Infra),
    })
}
