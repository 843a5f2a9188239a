//! The steps a scenario can take: one table (`steps!`) names them all, and each step's struct
//! sits with its `StepSpec` (its texts, captures and rules) in the module of its kind.

mod archive;
mod browser;
mod dbus;
mod fault;
mod http;
mod probe;
mod repeat;
mod ssh;

use std::time::Duration;

use serde::Deserialize;

pub use archive::{ArchiveMatchesSnapshot, GpgDecrypt};
pub use browser::{
    BrowserClick, BrowserDownload, BrowserExpectAbsent, BrowserExpectText, BrowserFill, BrowserLogin, BrowserOpen,
    BrowserRead, BrowserScreenshot, BrowserWaitFor,
};
pub use dbus::{BackupWait, DbusCall};
pub use fault::{CutNetwork, FaultStep, FillDisk, PowerCut, ReplaceCard, SlowIo};
pub use http::{HttpGet, HttpHold};
pub use probe::ProbeLatency;
pub use repeat::Repeat;
pub use ssh::{
    throwaway_change, unrecorded_write, RsyncPull, ScpGet, ScpPut, SetupUser, SshEdit, SshPut, SshRestore, SshRun,
};

/// What the loader asks of every step; the defaults fit a step without variables or rules.
pub(crate) trait StepSpec {
    /// Every text of the step that may use `${variables}`.
    fn texts(&self) -> Vec<&str> {
        Vec::new()
    }

    /// The variable the step defines, if any.
    fn captures(&self) -> Option<&str> {
        None
    }

    /// The step's own rules, on its fields alone; the message names the key to change.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// A file next to the scenario that the step reads, which must exist.
    fn source(&self) -> Option<&str> {
        None
    }
}

/// Declares every step once: `Variant(Struct) = "name in files"`. Each struct has a
/// `timeout: Option<Duration>` field and a `StepSpec` impl.
macro_rules! steps {
    ($($variant:ident($ty:ty) = $name:literal,)+) => {
        /// The steps a scenario can take.
        #[derive(Debug, Deserialize)]
        pub enum Step {
            $(#[serde(rename = $name)] $variant($ty),)+
        }

        impl Step {
            /// Every step's name as written in files, in the order of the table.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The step's kind as written in files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Step::$variant(_) => $name,)+
                }
            }

            /// The step's own time limit; `None`: the runner's default for its kind.
            pub fn timeout(&self) -> Option<Duration> {
                match self {
                    $(Step::$variant(s) => s.timeout,)+
                }
            }

            fn spec(&self) -> &dyn StepSpec {
                match self {
                    $(Step::$variant(s) => s,)+
                }
            }
        }
    };
}

steps! {
    DbusCall(DbusCall) = "dbus.call",
    BackupWait(BackupWait) = "backup.wait",
    SshRun(SshRun) = "ssh.run",
    SshPut(SshPut) = "ssh.put",
    SshEdit(SshEdit) = "ssh.edit",
    SshRestore(SshRestore) = "ssh.restore",
    HttpGet(HttpGet) = "http.get",
    HttpHold(HttpHold) = "http.hold",
    ScpGet(ScpGet) = "scp.get",
    ScpPut(ScpPut) = "scp.put",
    RsyncPull(RsyncPull) = "rsync.pull",
    GpgDecrypt(GpgDecrypt) = "gpg.decrypt",
    ArchiveMatchesSnapshot(ArchiveMatchesSnapshot) = "archive.matches_snapshot",
    SetupUser(SetupUser) = "setup.user",
    FaultKillDaemon(FaultStep) = "fault.kill_daemon",
    FaultRestartDaemon(FaultStep) = "fault.restart_daemon",
    FaultReboot(FaultStep) = "fault.reboot",
    FaultFillDisk(FillDisk) = "fault.fill_disk",
    FaultCutNetwork(CutNetwork) = "fault.cut_network",
    FaultSlowIo(SlowIo) = "fault.slow_io",
    FaultPowerCut(PowerCut) = "fault.power_cut",
    FaultReplaceCard(ReplaceCard) = "fault.replace_card",
    ProbeLatency(ProbeLatency) = "probe.latency",
    BrowserOpen(BrowserOpen) = "browser.open",
    BrowserClick(BrowserClick) = "browser.click",
    BrowserFill(BrowserFill) = "browser.fill",
    BrowserRead(BrowserRead) = "browser.read",
    BrowserWaitFor(BrowserWaitFor) = "browser.wait_for",
    BrowserDownload(BrowserDownload) = "browser.download",
    BrowserScreenshot(BrowserScreenshot) = "browser.screenshot",
    BrowserExpectText(BrowserExpectText) = "browser.expect_text",
    BrowserLogin(BrowserLogin) = "browser.login",
    BrowserExpectAbsent(BrowserExpectAbsent) = "browser.expect_absent",
    Repeat(Repeat) = "repeat",
}

impl Step {
    /// Every text of the step that may use `${variables}`.
    pub fn texts(&self) -> Vec<&str> {
        self.spec().texts()
    }

    /// The variable the step defines, if any.
    pub fn captures(&self) -> Option<&str> {
        self.spec().captures()
    }

    /// The step's own rules; the message names the key to change.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.spec().check()
    }

    /// A file next to the scenario that the step reads.
    pub(crate) fn source(&self) -> Option<&str> {
        self.spec().source()
    }
}

/// `texts()` helper: the text of an optional field, if given.
fn opt(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

#[cfg(test)]
mod tests;
