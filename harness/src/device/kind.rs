//! The one seam for a kind of device the harness starts itself (the container emulator, the
//! arm64 stand-in): what `--target NAME` and `emulator up --arch ARCH` name, how its devices are
//! prepared once ([`Kind::prepare`]), each started fresh ([`Parts::start`]) as a [`Device`] and
//! its [`Started`] lifecycle, one kept up for people ([`Kind::up`]) and that one's power
//! ([`Kind::power`]). The runner, `conform` and `emulator up` only go through it; a new kind is
//! its own module and one line in [`super::KINDS`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use super::{Device, Error, Lifecycle};

/// A future of the seam (not `Send`: the runner's slots run within one task).
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A device just started: how to reach it, and its lifecycle.
pub type Fresh = (Device, Box<dyn Started>);

/// How a kind's devices are prepared (once for a run, a `conform` or an `emulator up`).
pub struct Prepare<'a> {
    /// The daemon binary for its image (default: the kind's own build of it).
    pub backupd: Option<PathBuf>,
    /// Bytes of home-automation content on its SD card.
    pub content: u64,
    /// Make the image again even when its inputs are unchanged.
    pub force: bool,
    /// The key the admin logs in with (default: one the kind makes in `work`; a kind whose
    /// image has its key built in uses that one).
    pub key: Option<PathBuf>,
    /// Where a key made for it is kept.
    pub work: &'a Path,
    pub say: &'a (dyn Fn(&str) + Sync),
}

/// A kind of device the harness starts.
pub trait Kind: Sync {
    /// What `--target` calls it.
    fn name(&self) -> &'static str;
    /// How a run's report names it as a target.
    fn label(&self) -> &'static str;
    /// What `emulator up --arch` calls it, and what that says it is.
    fn arch(&self) -> (&'static str, &'static str);
    /// The SD card's content a run gives it unless asked for more.
    fn run_content(&self) -> u64;
    /// The SD card's content of one device for a person or a command (`emulator up`, `conform`).
    fn device_content(&self) -> u64;
    /// What the progress line says while one of it starts.
    fn starting(&self) -> &'static str;
    /// Makes what its devices start from (the image, the SD-card template, the key).
    fn prepare<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<Box<dyn Parts>, Error>>;
    /// `emulator up`: prepares and starts one, prints how to reach it, keeps it until Ctrl-C.
    fn up<'a>(&'a self, how: Prepare<'a>) -> Pending<'a, Result<(), Error>>;
    /// `emulator power on|off` of the one [`Kind::up`] keeps: `None` when this kind has no power
    /// switch; else what its power is now, said as a sentence.
    fn power(&self, _on: bool) -> Option<Pending<'static, Result<String, Error>>> {
        None
    }
}

/// What fresh devices of a kind start from, prepared once.
pub trait Parts {
    /// Starts one, its files in `work`, ready when this returns.
    fn start<'a>(&'a self, work: &'a Path, say: &'a (dyn Fn(&str) + Sync)) -> Pending<'a, Result<Fresh, Error>>;
}

/// A device the harness started: its faults, and its end.
pub trait Started: Lifecycle {
    /// From its start until it was ready.
    fn ready_after(&self) -> Duration;
    /// Why it is gone, when it died under a scenario (the infrastructure's failure, not the
    /// scenario's); `None` while it runs.
    fn gone(&self) -> Pending<'_, Option<String>> {
        Box::pin(async { None })
    }
    /// Stops and removes it (what it kept for people, a console's log, stays).
    fn close(self: Box<Self>) -> Pending<'static, Result<(), Error>>;
}

/// The kind `--target NAME` names.
pub fn kind_named(name: &str) -> Option<&'static dyn Kind> {
    super::KINDS.iter().copied().find(|k| k.name() == name)
}

/// The kind `emulator up --arch ARCH` names.
pub fn kind_for_arch(arch: &str) -> Option<&'static dyn Kind> {
    super::KINDS.iter().copied().find(|k| k.arch().0 == arch)
}
