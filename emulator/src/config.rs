//! The daemon's configuration, `/etc/nexus/backupd.toml`: every key, its default, and the checks
//! that turn a typo into an error at start instead of a surprise later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the configuration lives on the device.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/nexus/backupd.toml";

/// Errors reading or checking the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; create it or pass --config PATH")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}; fix the file (see images/etc/nexus/backupd.toml for every key and its default)")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key} = {value} is not allowed: {why}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Why test faults cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TestFaultsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} is asked for, but {marker} is missing: this is not a throwaway test device, and test faults break backups on purpose; remove it")]
    NotThrowaway { what: String, marker: PathBuf },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: Paths,
    pub backup: BackupConfig,
    pub https: HttpsConfig,
    /// FOR TESTS ONLY: see [`TestFaults`]; empty on every device.
    pub test_faults: TestFaults,
}

/// File-system locations.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Root of the btrfs file system on the SD card.
    pub broot: PathBuf,
    /// Daemon state kept on the SD card (next snapshot id, pending switch, last backup result).
    /// Relative paths are taken below `broot`.
    pub state_dir: PathBuf,
    /// Where the HTTPS CA and server certificate are made on first start and kept.
    pub tls_dir: PathBuf,
}

/// How backups are made, and how gently.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// CPU scheduling policy of the backup threads: "idle" (SCHED_IDLE) or "normal" (at `nice`).
    pub cpu_policy: CpuPolicy,
    /// CPU nice value of the backup threads (-20..19); used by the "normal" policy.
    pub nice: i32,
    /// I/O scheduling class of the backup threads: "idle", "best-effort" or "none".
    pub io_class: IoClass,
    /// Read-bandwidth cap in bytes per second; 0 turns the cap off.
    pub read_bytes_per_sec: u64,
    /// Bytes read (and encrypted) per step; the threads yield the CPU between steps.
    pub chunk_bytes: usize,
    /// Flush-behind: every this many bytes written, the backup file's new part is written out
    /// and dropped from the page cache, so dirty data never piles up into a burst of writeback
    /// that stalls everyone else's fsync; 0 leaves writeback to the kernel.
    pub write_flush_bytes: u64,
    /// OpenPGP S2K iteration count byte (RFC 4880 3.7.1.3); 0x60..=0xff.
    pub s2k_count: u8,
    /// Least time between two `Progress` signals, in milliseconds.
    pub progress_interval_ms: u64,
    /// How the backup file reaches its final name; only `safe` belongs on a device.
    pub writer: Writer,
}

/// The order in which a backup file is written and named.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Writer {
    /// A hidden partial file, fsync, rename to the final name, fsync of the folder: a power cut
    /// leaves a whole backup or none.
    Safe,
    /// FOR TESTS ONLY: the file gets its final name before its data (it is written in place,
    /// each part synced as it goes). A power cut leaves a truncated backup under the final
    /// name. This is the broken writer that `nexus-hil crash-states --broken-writer` must be
    /// seen to catch; never set it on a device.
    InPlace,
}

/// FOR TESTS ONLY: a broken daemon, one fault per crash-state check, that
/// `nexus-hil crash-states --broken-daemon NAME` must be seen to catch. Asked for in a
/// `[test_faults]` table (`faults = ["NAME"]`), in the configuration file or in
/// `test-faults.toml` in the state folder on the card (so that the daemon started on each
/// crash state of that card is broken the same way). The daemon refuses to start with any of
/// them, or with the in-place writer, unless [`THROWAWAY_MARKER`] says the device is a
/// throwaway test device (only the harness's emulator and stand-in images have it).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestFaults {
    pub faults: Vec<TestFault>,
}

/// One fault of a broken daemon.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TestFault {
    /// The in-place writer: a backup gets its final name before its data is synced.
    PublishBeforeSync,
    /// At start, the backup with the lowest id is deleted (and no longer listed).
    DeleteEarlierBackup,
    /// A pending Activate switches `data` only, and leaves `system` as it was.
    HalfActivate,
    /// At start, the automation's state file is truncated.
    TruncateAutomation,
    /// Ids come from the complete snapshots alone: the next id is not above a deleted one, nor
    /// above the backups on the card.
    ReuseId,
    /// Delete leaves the backup's record, and GetList lists every record, file or not.
    ListPhantom,
}

impl TestFaults {
    pub fn has(&self, f: TestFault) -> bool {
        self.faults.contains(&f)
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }
}

/// The file that says this device is a throwaway test device, where test faults are allowed.
pub const THROWAWAY_MARKER: &str = "/etc/nexus-hil-throwaway";

/// The test faults file in the state folder on the card.
pub const TEST_FAULTS_FILE: &str = "test-faults.toml";

/// CPU scheduling policy for the backup threads (sched_setscheduler).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CpuPolicy {
    /// SCHED_IDLE: the backup gets only CPU time nobody else wants, and any other task that
    /// wakes up preempts it at once. With a nice value alone, the kernel's scheduler (EEVDF) may
    /// let the backup finish its time slice first, which the automation loop sees as lateness.
    Idle,
    /// SCHED_OTHER at `nice`.
    Normal,
}

/// I/O priority class for the backup threads (ioprio_set).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IoClass {
    Idle,
    BestEffort,
    None,
}

/// The HTTPS file server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    /// Addresses to listen on; empty turns the server off.
    pub listen: Vec<SocketAddr>,
    /// Extra host names or IP addresses for the server certificate.
    pub names: Vec<String>,
    /// When set, requests need HTTP Basic auth with user `token` and this password.
    pub token: Option<String>,
    /// A send to a client that takes nothing for this many seconds closes the connection and
    /// frees its slot (a client that stopped reading cannot hold the server).
    pub write_timeout_secs: u64,
    /// [ours] The Control UI's unix socket: requests below `/control/` are forwarded there; an
    /// empty path turns the forwarding off (404).
    pub control_ui_socket: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            broot: PathBuf::from(nexus_contract::paths::BROOT),
            state_dir: PathBuf::from(".nexus-backupd"),
            tls_dir: PathBuf::from("/etc/nexus/tls"),
        }
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            cpu_policy: CpuPolicy::Idle,
            nice: 19,
            io_class: IoClass::Idle,
            read_bytes_per_sec: 32 * 1024 * 1024,
            chunk_bytes: 1024 * 1024,
            write_flush_bytes: 1024 * 1024,
            s2k_count: 0xe0,
            progress_interval_ms: 250,
            writer: Writer::Safe,
        }
    }
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:443".parse().expect("static address")],
            names: Vec::new(),
            token: None,
            write_timeout_secs: 30,
            control_ui_socket: PathBuf::from(nexus_contract::paths::CONTROL_UI_SOCKET),
        }
    }
}

/// A configuration file's text; `None` when it is missing at its `default` path (which then
/// means the defaults).
pub fn read_file(path: &Path, default: &str) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(default) => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Configuration text as TOML, unchecked; `path` only names the file in errors.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

impl Config {
    /// Reads and checks a configuration file. A missing file at the default path means defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match read_file(path, DEFAULT_CONFIG_PATH)? {
            Some(text) => Self::parse(&text, path),
            None => Ok(Self::default()),
        }
    }

    /// Parses and checks configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = from_toml(text, path)?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, value: String, why| ConfigError::Value {
            path: path.to_owned(),
            key,
            value,
            why,
        };
        let b = &self.backup;
        if !(-20..=19).contains(&b.nice) {
            return Err(bad(
                "backup.nice",
                b.nice.to_string(),
                "use -20..19 (19 is the gentlest)",
            ));
        }
        if !(4096..=64 * 1024 * 1024).contains(&b.chunk_bytes) {
            return Err(bad(
                "backup.chunk_bytes",
                b.chunk_bytes.to_string(),
                "use 4096..67108864",
            ));
        }
        if b.read_bytes_per_sec != 0 && b.read_bytes_per_sec < 64 * 1024 {
            return Err(bad(
                "backup.read_bytes_per_sec",
                b.read_bytes_per_sec.to_string(),
                "use 0 (no cap) or at least 65536",
            ));
        }
        if b.write_flush_bytes != 0 && b.write_flush_bytes < 64 * 1024 {
            return Err(bad(
                "backup.write_flush_bytes",
                b.write_flush_bytes.to_string(),
                "use 0 (kernel writeback) or at least 65536",
            ));
        }
        if b.s2k_count < 0x60 {
            return Err(bad(
                "backup.s2k_count",
                b.s2k_count.to_string(),
                "use 96..255 (0x60..0xff); lower is too weak",
            ));
        }
        if !(50..=60_000).contains(&b.progress_interval_ms) {
            return Err(bad(
                "backup.progress_interval_ms",
                b.progress_interval_ms.to_string(),
                "use 50..60000",
            ));
        }
        if !self.paths.broot.is_absolute() {
            return Err(bad(
                "paths.broot",
                self.paths.broot.display().to_string(),
                "must be an absolute path",
            ));
        }
        if let Some(token) = &self.https.token {
            if token.is_empty() || token.chars().any(|c| c.is_control()) {
                return Err(bad(
                    "https.token",
                    "(hidden)".into(),
                    "must be non-empty printable text",
                ));
            }
        }
        if !(1..=3600).contains(&self.https.write_timeout_secs) {
            return Err(bad(
                "https.write_timeout_secs",
                self.https.write_timeout_secs.to_string(),
                "use 1..3600",
            ));
        }
        Ok(())
    }

    /// The test faults asked for, by this configuration and by the card's
    /// [`TEST_FAULTS_FILE`] in `state_dir`, the in-place writer among them
    /// ([`TestFault::PublishBeforeSync`]); any of them is refused unless `marker` exists.
    pub fn test_faults(&self, state_dir: &Path, marker: &Path) -> Result<TestFaults, TestFaultsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct OnCard {
            test_faults: TestFaults,
        }
        let mut faults = self.test_faults.clone();
        let mut asked = Vec::new();
        if !faults.is_empty() {
            asked.push("[test_faults] in the configuration".to_string());
        }
        if self.backup.writer == Writer::InPlace {
            asked.push("backup.writer = \"in-place\"".to_string());
            faults.faults.push(TestFault::PublishBeforeSync);
        }
        let file = state_dir.join(TEST_FAULTS_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                faults
                    .faults
                    .extend(from_toml::<OnCard>(&text, &file)?.test_faults.faults);
                asked.push(file.display().to_string());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path: file, source }.into()),
        }
        if !asked.is_empty() && !marker.exists() {
            return Err(TestFaultsError::NotThrowaway {
                what: format!("a test fault ({})", asked.join(", ")),
                marker: marker.to_owned(),
            });
        }
        faults.faults.dedup();
        Ok(faults)
    }

    /// The state directory, resolved below `broot` when relative.
    pub fn state_dir(&self) -> PathBuf {
        self.paths.broot.join(&self.paths.state_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("backupd.toml"))
    }

    #[test]
    fn the_test_only_in_place_writer_is_asked_for_by_name() {
        assert_eq!(Config::default().backup.writer, Writer::Safe);
        let c = parse("[backup]\nwriter = \"in-place\"\n").unwrap();
        assert_eq!(c.backup.writer, Writer::InPlace);
        let err = parse("[backup]\nwriter = \"fast\"\n").unwrap_err().to_string();
        assert!(err.contains("fast") && err.contains("safe"), "{err}");
    }

    #[test]
    fn test_faults_are_refused_unless_the_device_is_a_throwaway_one() {
        let dir = tempfile::tempdir().unwrap();
        let (state, marker) = (dir.path().join("state"), dir.path().join("throwaway"));
        std::fs::create_dir_all(&state).unwrap();
        let none = Config::default();
        assert!(none.test_faults(&state, &marker).unwrap().is_empty());
        // In the configuration, as the in-place writer, and on the card: each refused.
        let table = parse("[test_faults]\nfaults = [\"reuse-id\"]\n").unwrap();
        let writer = parse("[backup]\nwriter = \"in-place\"\n").unwrap();
        for c in [&table, &writer] {
            let err = c.test_faults(&state, &marker).unwrap_err().to_string();
            assert!(
                err.contains("throwaway") && err.contains(&marker.display().to_string()),
                "{err}"
            );
        }
        std::fs::write(
            state.join(TEST_FAULTS_FILE),
            "[test_faults]\nfaults = [\"half-activate\"]\n",
        )
        .unwrap();
        let err = none.test_faults(&state, &marker).unwrap_err().to_string();
        assert!(err.contains(TEST_FAULTS_FILE), "{err}");
        // Allowed on a throwaway device, merged.
        std::fs::write(&marker, "").unwrap();
        let f = writer.test_faults(&state, &marker).unwrap();
        assert!(
            f.has(TestFault::HalfActivate) && f.has(TestFault::PublishBeforeSync),
            "{f:?}"
        );
        let err = parse("[test_faults]\nfaults = [\"fast\"]\n").unwrap_err().to_string();
        assert!(err.contains("fast"), "{err}");
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.backup.nice, 19);
        assert_eq!(c.backup.cpu_policy, CpuPolicy::Idle);
        assert_eq!(c.backup.io_class, IoClass::Idle);
        assert_eq!(c.state_dir(), PathBuf::from("/broot/.nexus-backupd"));
    }

    #[test]
    fn typo_in_key_is_named() {
        let err = parse("[backup]\nnicee = 5\n").unwrap_err().to_string();
        assert!(err.contains("nicee"), "{err}");
        assert!(err.contains("backupd.toml"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = parse("[backup]\nnice = 40\n").unwrap_err().to_string();
        assert!(err.contains("backup.nice") && err.contains("-20..19"), "{err}");
        let err = parse("[backup]\nio_class = \"fast\"\n").unwrap_err().to_string();
        assert!(err.contains("fast"), "{err}");
        let err = parse("[backup]\ncpu_policy = \"fifo\"\n").unwrap_err().to_string();
        assert!(err.contains("fifo"), "{err}");
        let err = parse("[backup]\nread_bytes_per_sec = 10\n").unwrap_err().to_string();
        assert!(err.contains("read_bytes_per_sec"), "{err}");
        let err = parse("[backup]\nwrite_flush_bytes = 100\n").unwrap_err().to_string();
        assert!(
            err.contains("backup.write_flush_bytes") && err.contains("65536"),
            "{err}"
        );
        let err = parse("[https]\nwrite_timeout_secs = 0\n").unwrap_err().to_string();
        assert!(err.contains("https.write_timeout_secs"), "{err}");
    }

    #[test]
    fn the_shipped_file_holds_the_defaults() {
        let shipped = include_str!("../../images/etc/nexus/backupd.toml");
        assert_eq!(parse(shipped).unwrap(), Config::default());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Path::new("/nonexistent/backupd.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/backupd.toml"), "{err}");
    }
}
