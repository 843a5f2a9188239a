//! The Control UI's configuration, `/etc/nexus/controlui.toml`: the admin account, how long the
//! backup password stays on screen and how long an idle session lives.

use std::path::{Path, PathBuf};

use nexus_contract::paths::{BACKUPS_DIR, CONTROL_UI_ADMIN_PASSWORD_FILE, CONTROL_UI_CONFIG, CONTROL_UI_SOCKET};
use serde::Deserialize;

/// Where the configuration lives on the device.
pub const DEFAULT_CONFIG_PATH: &str = CONTROL_UI_CONFIG;

/// Errors reading or checking the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; create it or pass --config PATH")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}; fix the file (see images/etc/nexus/controlui.toml for every key and its default)")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key} = {value} is not allowed: {why}")]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The daemon's reading and parsing, each error named for this file (its own sample file).
impl From<crate::config::ConfigError> for ConfigError {
    fn from(e: crate::config::ConfigError) -> Self {
        use crate::config::ConfigError as E;
        match e {
            E::Read { path, source } => Self::Read { path, source },
            E::Parse { path, message } => Self::Parse { path, message },
            E::Value { path, key, value, why } => Self::Value { path, key, value, why },
        }
    }
}

/// The whole configuration (every key optional).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlUiConfig {
    /// The unix socket to listen on; nexus-backupd's HTTPS server forwards `/control/` to it.
    pub socket: PathBuf,
    /// The admin's user name on the login page.
    pub admin_user: String,
    /// The file holding the admin's password (first line); read at each login.
    pub admin_password_file: PathBuf,
    /// Seconds the backup password stays on the page before the page removes it.
    pub password_box_secs: u64,
    /// Seconds without a request after which a session ends.
    pub session_idle_secs: u64,
    /// Where the finished backups are, served at `/control/download/N`.
    pub backups_dir: PathBuf,
}

impl Default for ControlUiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(CONTROL_UI_SOCKET),
            admin_user: "admin".into(),
            admin_password_file: PathBuf::from(CONTROL_UI_ADMIN_PASSWORD_FILE),
            password_box_secs: 20,
            session_idle_secs: 900,
            backups_dir: PathBuf::from(BACKUPS_DIR),
        }
    }
}

impl ControlUiConfig {
    /// Reads and checks a configuration file. A missing file at the default path means defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match crate::config::read_file(path, DEFAULT_CONFIG_PATH)? {
            Some(text) => Self::parse(&text, path),
            None => Ok(Self::default()),
        }
    }

    /// Parses and checks configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = crate::config::from_toml(text, path)?;
        let bad = |key, value: String, why| ConfigError::Value {
            path: path.to_owned(),
            key,
            value,
            why,
        };
        if config.admin_user.is_empty() || config.admin_user.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(
                "admin_user",
                config.admin_user.clone(),
                "must be non-empty printable text without spaces",
            ));
        }
        if !(5..=600).contains(&config.password_box_secs) {
            return Err(bad(
                "password_box_secs",
                config.password_box_secs.to_string(),
                "use 5..600: long enough to copy the password, short enough that it vanishes",
            ));
        }
        if !(60..=86_400).contains(&config.session_idle_secs) {
            return Err(bad(
                "session_idle_secs",
                config.session_idle_secs.to_string(),
                "use 60..86400",
            ));
        }
        Ok(config)
    }

    /// The admin password: the first line of [`Self::admin_password_file`], without its newline.
    pub fn admin_password(&self) -> std::io::Result<zeroize::Zeroizing<String>> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&self.admin_password_file)?);
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} is empty; write the admin password into it",
                self.admin_password_file.display()
            )));
        }
        Ok(zeroize::Zeroizing::new(first.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ControlUiConfig, ConfigError> {
        ControlUiConfig::parse(text, Path::new("controlui.toml"))
    }

    #[test]
    fn the_shipped_file_holds_the_defaults() {
        let shipped = include_str!("../../../images/etc/nexus/controlui.toml");
        let c = parse(shipped).unwrap();
        assert_eq!(c, ControlUiConfig::default());
        assert_eq!(c.admin_user, "admin");
        assert_eq!(c.password_box_secs, 20);
        assert_eq!(c.admin_password_file, Path::new("/etc/nexus/controlui-admin.password"));
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = parse("admin_usr = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("admin_usr"), "{err}");
        let err = parse("password_box_secs = 0\n").unwrap_err().to_string();
        assert!(err.contains("password_box_secs"), "{err}");
        let err = parse("admin_user = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("admin_user"), "{err}");
    }
}
