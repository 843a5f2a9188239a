//! The steps a scenario can take: one table (`steps!`) names them all, and each step's struct
//! sits with its `StepSpec` (its texts, captures and rules) in the module of its kind.

mod archive;
mod browser;
mod dbus;
mod fault;
mod http;
mod keys;
mod probe;
mod repeat;
mod ssh;

use std::time::Duration;

use serde::Deserialize;

// Each family's module holds its steps' structs and nothing else public, so a new step needs no
// line here.
pub use archive::*;
pub use browser::*;
pub use dbus::*;
pub use fault::*;
pub use http::*;
pub use probe::*;
pub use repeat::*;
pub use ssh::*;

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

/// Declares every step once: `Variant(Struct) = "name in files",` in the block of its family
/// (the harness module that does its steps). Each struct has a `timeout: Option<Duration>` field
/// and a `StepSpec` impl.
macro_rules! steps {
    ($($family:ident { $($variant:ident($ty:ty) = $name:literal,)+ })+) => {
        /// The steps a scenario can take.
        #[derive(Debug, Deserialize)]
        pub enum Step {
            $($(#[serde(rename = $name)] $variant($ty),)+)+
        }

        /// Each family's steps as one enum, for the harness module that does them: its match
        /// lists every step of the family, so a step added to the table cannot go unhandled.
        pub mod family {
            use super::*;
            $(
                #[doc = concat!("The ", stringify!($family), " family's steps.")]
                #[derive(Debug, Clone, Copy)]
                pub enum $family<'a> {
                    $($variant(&'a $ty),)+
                }

                impl $family<'_> {
                    /// The step's kind as written in files.
                    pub fn kind(&self) -> &'static str {
                        match self {
                            $(Self::$variant(_) => $name,)+
                        }
                    }
                }
            )+
        }

        /// A step by its family (see [`Step::family`]).
        #[derive(Debug, Clone, Copy)]
        pub enum Family<'a> {
            $($family(family::$family<'a>),)+
        }

        impl Step {
            /// Every step's name as written in files, in the order of the table.
            pub const NAMES: &'static [&'static str] = &[$($($name),+),+];

            /// The step's kind as written in files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($(Step::$variant(_) => $name,)+)+
                }
            }

            /// The step as one of its family's.
            pub fn family(&self) -> Family<'_> {
                match self {
                    $($(Step::$variant(s) => Family::$family(family::$family::$variant(s)),)+)+
                }
            }

            /// The step's own time limit; `None`: the runner's default for its kind.
            pub fn timeout(&self) -> Option<Duration> {
                match self {
                    $($(Step::$variant(s) => s.timeout,)+)+
                }
            }

            /// The keys a step of this name takes in files (its struct's fields, as serde reads
            /// them), `timeout` included; `None` for a name that is no step.
            pub fn keys(name: &str) -> Option<&'static [&'static str]> {
                match name {
                    $($($name => Some(keys::of::<$ty>()),)+)+
                    _ => None,
                }
            }

            fn spec(&self) -> &dyn StepSpec {
                match self {
                    $($(Step::$variant(s) => s,)+)+
                }
            }
        }
    };
}

steps! {
    Dbus {
        DbusCall(DbusCall) = "dbus.call",
        BackupWait(BackupWait) = "backup.wait",
    }
    Shell {
        SshRun(SshRun) = "ssh.run",
        SshPut(SshPut) = "ssh.put",
        SshEdit(SshEdit) = "ssh.edit",
        SshRestore(SshRestore) = "ssh.restore",
    }
    Transfer {
        HttpGet(HttpGet) = "http.get",
        HttpHold(HttpHold) = "http.hold",
        ScpGet(ScpGet) = "scp.get",
        ScpPut(ScpPut) = "scp.put",
        RsyncPull(RsyncPull) = "rsync.pull",
    }
    Verify {
        GpgDecrypt(GpgDecrypt) = "gpg.decrypt",
        ArchiveMatchesSnapshot(ArchiveMatchesSnapshot) = "archive.matches_snapshot",
    }
    Setup {
        SetupUser(SetupUser) = "setup.user",
    }
    Fault {
        FaultKillDaemon(FaultStep) = "fault.kill_daemon",
        FaultRestartDaemon(FaultStep) = "fault.restart_daemon",
        FaultReboot(FaultStep) = "fault.reboot",
        FaultFillDisk(FillDisk) = "fault.fill_disk",
        FaultCutNetwork(CutNetwork) = "fault.cut_network",
        FaultSlowIo(SlowIo) = "fault.slow_io",
        FaultPowerCut(PowerCut) = "fault.power_cut",
        FaultReplaceCard(ReplaceCard) = "fault.replace_card",
        FaultIoError(IoError) = "fault.io_error",
    }
    Probe {
        ProbeLatency(ProbeLatency) = "probe.latency",
    }
    Browser {
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
    }
    Control {
        Repeat(Repeat) = "repeat",
    }
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
