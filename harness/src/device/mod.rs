//! The devices a run can target and how each is opened: [`Target`] parses `--target`,
//! [`Device`] is what every scenario reaches (SSH and HTTPS only), [`keys`] holds the harness's
//! key and the pinned CAs, [`open_device`] brings one device up or reaches it for a command.
//! Each kind of device the harness starts is one module behind the one seam of [`kind`]
//! ([`Kind`]: prepare, start, up, power), registered once in [`KINDS`]: [`container`] (the
//! emulator in a privileged container) and [`standin`] (the arm64 stand-in in qemu). Real
//! devices are reached ([`remote`]), listed in an [`inventory`]. A kind that can do more than a
//! real device (kill the daemon, reboot, cut the network) offers it through the one
//! [`Lifecycle`] trait; a real device on a bench (`crate::bench::power`) offers what its power
//! switch and SSH allow. The bench's services (lease, record and undo, power, console, health)
//! live in `crate::bench`, above this room.

pub(crate) mod container;
mod error;
pub(crate) mod inventory;
pub(crate) mod keys;
mod kind;
mod open;
pub(crate) mod ready;
pub(crate) mod remote;
pub(crate) mod standin;

pub use error::Error;
pub use inventory::WebUi;
pub use kind::{kind_for_arch, kind_named, Fresh, Kind, Parts, Pending, Prepare, Started};
pub use open::{open_device, OpenSpec, Opened};

/// Every kind of device the harness starts, by `--target` name: a new kind is its module and
/// one line here.
pub static KINDS: &[&dyn Kind] = &[&container::ContainerKind, &standin::StandinKind];

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::https::HttpsTarget;
use crate::transport::ssh::SshTarget;

/// A device as the runner sees it: only what a real device offers.
#[derive(Debug, Clone)]
pub struct Device {
    pub ssh: SshTarget,
    pub https: HttpsTarget,
    /// The admin user (sudo), `nexus` on the device.
    pub admin: String,
    /// The harness's public key, installed for users that `setup.user` makes.
    pub pubkey: String,
    /// Its web page for the browser steps: the selector set, and where the page is.
    pub ui: inventory::WebUi,
}

/// A parsed `--target` (or `--targets`).
#[derive(Debug, PartialEq)]
pub enum Target {
    /// A fresh device of a kind the harness starts (one of [`KINDS`]) per scenario.
    Fresh(&'static dyn Kind),
    Remote {
        user: String,
        host: String,
        port: u16,
    },
    /// The devices of a `--targets` inventory.
    Fleet(Vec<inventory::DeviceEntry>),
}

impl Target {
    /// Parses `--target`: a kind's name (`emulator`, `standin`) or `ssh://USER@HOST[:PORT]`.
    pub fn parse(t: &str) -> Result<Target, Error> {
        if let Some(k) = kind_named(t) {
            return Ok(Target::Fresh(k));
        }
        let bad = |why: String| Error::BadTarget {
            target: t.to_string(),
            why,
        };
        let rest = t.strip_prefix("ssh://").ok_or_else(|| {
            let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.name())).collect();
            bad(format!("use {} or `ssh://USER@HOST[:PORT]`", kinds.join(", ")))
        })?;
        let (user, hostport) = rest
            .split_once('@')
            .ok_or_else(|| bad("name the admin user, e.g. ssh://nexus@noreya-nexus.local".into()))?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad(format!("bad port {p:?}")))?),
            None => (hostport, 22),
        };
        if user.is_empty() || host.is_empty() {
            return Err(bad("user and host must not be empty".into()));
        }
        Ok(Target::Remote {
            user: user.into(),
            host: host.into(),
            port,
        })
    }

    /// The devices an inventory (targets.toml) lists.
    pub fn fleet(path: &std::path::Path) -> Result<Target, Error> {
        Ok(Target::Fleet(inventory::Inventory::load(path)?.devices))
    }
}

impl PartialEq for dyn Kind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl std::fmt::Debug for dyn Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The faults the runner can ask a device's lifecycle for.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL `nexus-backupd` (systemd starts it again, as on the device).
    KillDaemon,
    /// `systemctl restart nexus-backupd`.
    RestartDaemon,
    /// Restart the whole device; the SD card keeps its state. New published ports follow.
    Reboot,
    /// Cut the power: every write the device had not flushed is lost; powered on again unless
    /// `stay_off`. Only a device whose power the harness owns (a guest with its own kernel).
    PowerCut { stay_off: bool },
    /// The SD card dies and a new one is set up: off (unflushed writes lost with the old card),
    /// a fresh copy of the card image the device was first given in its place, on again. The
    /// system (users, keys) is not on the card on the targets that can have this, so it stays.
    ReplaceCard,
    /// Fill /broot until this many bytes are free.
    FillDisk(u64),
    /// After `after`, stop answering on the published ports for `duration`; runs in the
    /// background and writes what happened, and when, to `log`.
    CutNetwork {
        after: Duration,
        duration: Duration,
        log: CutLog,
    },
    /// Limit reads and writes of /broot's device to these bytes per second (0: no limit).
    SlowIo { read: u64, write: u64 },
    /// The SD card fails requests with EIO: the next `count` writes (with `write`) and the next
    /// `count` flushes (with `flush`) the guest sends it; then, or when `heal` is notified, it
    /// works again. Done when healed; what failed is written to `log`. With `area`, only the
    /// writes that touch those sectors of the card (512 bytes, from the start of the disk) fail,
    /// every one of them until healed. Only a device whose card the harness serves (the
    /// stand-in's qemu).
    IoError {
        write: bool,
        flush: bool,
        count: u32,
        area: Vec<std::ops::Range<u64>>,
        heal: Arc<tokio::sync::Notify>,
        log: IoLog,
    },
}

/// What a [`Fault::IoError`] did: the card's failed requests while it was failing, counted by
/// the host side (qemu's block statistics of the guest's disk), and when it failed and healed.
#[derive(Debug, Default, Clone)]
pub struct IoState {
    pub failed_writes: u64,
    pub failed_flushes: u64,
    pub armed_at: Option<Instant>,
    pub healed_at: Option<Instant>,
}

/// An I/O error fault's state, written by the device, read by the step.
pub type IoLog = Arc<Mutex<IoState>>;

/// Ports of a device after a fault changed them.
pub type Ports = Option<(u16, u16)>;

/// What a fault did: new ports, and what the device measured to show it took.
#[derive(Debug, Default)]
pub struct Applied {
    pub ports: Ports,
    pub note: Option<String>,
}

/// How a network cut went, written by the device as it happens.
#[derive(Debug, Default, Clone)]
pub struct CutState {
    /// When the device stopped answering.
    pub frozen_at: Option<Instant>,
    /// When it answered again.
    pub thawed_at: Option<Instant>,
    /// Why it could not be cut or brought back.
    pub error: Option<String>,
}

/// A network cut's state, shared between the device that cuts and the steps that meet it.
pub type CutLog = Arc<Mutex<CutState>>;

/// The daemon killed (`kill`) or restarted by systemd, over SSH as `admin` with sudo: how the
/// stand-in and a real device on a bench take those faults.
pub async fn daemon_over_ssh(ssh: &SshTarget, admin: &str, kill: bool) -> Result<Applied, FaultError> {
    let cmd = if kill {
        "systemctl kill --signal=SIGKILL nexus-backupd.service"
    } else {
        "systemctl restart nexus-backupd.service"
    };
    let out = ssh
        .run(admin, &format!("sudo -n {cmd}"), None, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    if out.code != Some(0) {
        return Err(format!("`{cmd}` failed: {}", out.stderr.trim()).into());
    }
    Ok(Applied::default())
}

/// Why a fault was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("{0}")]
    Failed(String),
    /// This device cannot have the fault (the scenario is skipped with the reason).
    #[error("{0}")]
    Unsupported(String),
}

impl From<String> for FaultError {
    fn from(s: String) -> Self {
        FaultError::Failed(s)
    }
}

/// What checks a card read after a power cut (the image of its btrfs partition, described by
/// the read): its checks' table, filled in, or why it could not be checked (the machine's
/// trouble, not the card's).
pub type ReadCard = dyn Fn(
        crate::report::card::CardRead,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::report::card::CardRead, String>>>>
    + Sync;

/// What only a device the harness controls can do; a real device has none of it.
pub trait Lifecycle {
    /// Applies `fault`; [`FaultError::Unsupported`] when this device cannot have it.
    fn fault(
        &self,
        fault: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>>;

    /// The bytes of data the device's SD card has received since its last power-on as the card
    /// itself saw them (the stand-in's write log; discards and flushes carry none), with that
    /// power-on's number: what the guest's `/sys/block` counts are checked against. `None`
    /// where the harness does not serve the card.
    fn card_bytes_logged(&self) -> Option<(u32, u64)> {
        None
    }

    /// The device is the harness's own and thrown away after the scenario (a container, a
    /// stand-in it booted); false for someone's real device, which is left as found.
    fn throwaway(&self) -> bool {
        true
    }

    /// The harness can cut the device's power (and switch it on again).
    fn power_switch(&self) -> bool {
        false
    }

    /// A power cut whose card is read before the power comes back: off, the card's btrfs
    /// partition imaged to `image` on this machine, the card given back, then `read` (which
    /// checks the image) while the power comes on, and the wait for the device. Only a bench
    /// whose card an SD mux switches here (`crate::bench::card_read`);
    /// [`FaultError::Unsupported`] elsewhere.
    fn power_cut_read<'a>(
        &'a self,
        image: &'a std::path::Path,
        read: &'a ReadCard,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + 'a>> {
        let _ = (image, read);
        Box::pin(async {
            Err(FaultError::Unsupported(
                "fault.power_cut with `inspect` reads the card through a bench's SD mux: a real device with \
                 [device.power] and [device.sdmux] in its inventory entry"
                    .into(),
            ))
        })
    }

    /// Ways into the device besides ssh, for a person (`run --hold-on-failure`): a
    /// container's shell, a console's port. One line each, `what: how`.
    fn ways_in(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_what_is_wrong() {
        let parse = |t: &str| Target::parse(t).map_err(|e| e.to_string());
        assert_eq!(parse("emulator"), Ok(Target::Fresh(&container::ContainerKind)));
        assert_eq!(parse("standin"), Ok(Target::Fresh(&standin::StandinKind)));
        assert_eq!(
            parse("ssh://nexus@noreya-nexus.local"),
            Ok(Target::Remote {
                user: "nexus".into(),
                host: "noreya-nexus.local".into(),
                port: 22
            })
        );
        assert_eq!(
            parse("ssh://nexus@127.0.0.1:2222").map(|t| match t {
                Target::Remote { port, .. } => port,
                _ => 0,
            }),
            Ok(2222)
        );
        assert!(parse("nexus@host").unwrap_err().contains("ssh://USER@HOST"));
        assert!(parse("ssh://host").unwrap_err().contains("admin user"));
        assert!(matches!(Target::parse("nexus@host"), Err(e) if e.exit() == crate::exit::Exit::Usage));
    }

    #[test]
    fn every_kind_is_registered_once_and_found_by_its_names() {
        let unique = |mut v: Vec<&str>| {
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        assert_eq!(
            unique(KINDS.iter().map(|k| k.name()).collect()),
            KINDS.len(),
            "two kinds answer to one --target name"
        );
        assert_eq!(
            unique(KINDS.iter().map(|k| k.arch().0).collect()),
            KINDS.len(),
            "two kinds answer to one --arch name"
        );
        let refusal = Target::parse("nexus@host").unwrap_err().to_string();
        for k in KINDS {
            assert_eq!(Target::parse(k.name()).ok(), Some(Target::Fresh(*k)));
            assert_eq!(kind_for_arch(k.arch().0).map(|f| f.name()), Some(k.name()));
            assert!(refusal.contains(&format!("`{}`", k.name())), "{refusal}");
        }
    }
}
