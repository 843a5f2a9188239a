//! Where the contract's things are on the device: the storage layout below `/broot`, the backup
//! file names, the HTTPS paths, the polkit grant file and the user the vendor's automation uses.

use std::fmt::Display;

// `/broot` is typed once; the directories below it are built from it.
macro_rules! broot {
    () => {
        "/broot"
    };
}

/// The root of the btrfs file system on the SD card.
pub const BROOT: &str = broot!();
/// Snapshot N is the directory `SNAPSHOTS_DIR/N/`.
pub const SNAPSHOTS_DIR: &str = concat!(broot!(), "/snapshot/snapshots");
/// The published backups, readable by [`BACKUP_USER`] over SSH and rsync-able as a share.
pub const BACKUPS_DIR: &str = concat!(broot!(), "/backups");

/// The directory of snapshot `id`, without a trailing slash (rsync it with one).
pub fn snapshot_dir(id: impl Display) -> String {
    format!("{SNAPSHOTS_DIR}/{id}")
}

/// What every backup file name starts with, before the snapshot id.
pub const BACKUP_FILE_PREFIX: &str = "nexus_backup_";
/// What every backup file name ends with: a TAR archive encrypted with GnuPG.
pub const BACKUP_FILE_SUFFIX: &str = ".tar.gpg";

/// The file name of the backup of snapshot `id`, in [`BACKUPS_DIR`] and below [`BACKUPS_URL_PREFIX`].
pub fn backup_file_name(id: u64) -> String {
    format!("{BACKUP_FILE_PREFIX}{id}{BACKUP_FILE_SUFFIX}")
}

/// The snapshot id of a backup file name, only if the name is exactly one [`backup_file_name`]
/// makes: no leading zeros, no id 0, nothing before or after. The HTTPS server matches request
/// paths with it, so anything looser would serve names that were never published.
pub fn parse_backup_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(BACKUP_FILE_PREFIX)?
        .strip_suffix(BACKUP_FILE_SUFFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

/// The HTTPS path below which the backups are served, one per [`backup_file_name`].
pub const BACKUPS_URL_PREFIX: &str = "/nexus-backups/";

/// The HTTPS path of the backup of snapshot `id` (what `Backup1.GetList` reports as `url`).
pub fn backup_url(id: u64) -> String {
    format!("{BACKUPS_URL_PREFIX}{}", backup_file_name(id))
}

/// The HTTPS path of the device's CA certificate.
pub const CA_PATH: &str = "/noreya-nexus/certificates/ca.pem";

/// The polkit local-authority directory the vendor's grant goes into.
pub const PKLA_DIR: &str = "/etc/polkit-1/localauthority/50-local.d";
/// The file name of the vendor's grant in [`PKLA_DIR`].
pub const VENDOR_PKLA: &str = "10-backup.pkla";

/// The plain user the vendor's rootless automation creates and grants the actions to.
pub const BACKUP_USER: &str = "remotebackup";

// `/control/` is typed once; the UI's own paths are built from it.
macro_rules! control {
    () => {
        "/control/"
    };
}

/// [ours] The HTTPS path below which the Control UI is served (the HTTPS server forwards every
/// request below it to [`CONTROL_UI_SOCKET`], as nginx does on the device).
pub const CONTROL_UI_PREFIX: &str = control!();
/// [ours] The Control UI's login page.
pub const CONTROL_UI_LOGIN: &str = concat!(control!(), "login");
/// [ours] The Control UI's server-sent-events stream (backup progress).
pub const CONTROL_UI_EVENTS: &str = concat!(control!(), "events");
/// [ours] Below this the Control UI serves finished backups to a logged-in admin.
pub const CONTROL_UI_DOWNLOAD_PREFIX: &str = concat!(control!(), "download/");
/// [ours] The system user the Control UI runs as (no login shell); polkit judges its calls.
pub const CONTROL_UI_USER: &str = "nexus-ui";
/// [ours] The unix socket the Control UI listens on (made by systemd's RuntimeDirectory).
pub const CONTROL_UI_SOCKET: &str = "/run/nexus-controlui/http.sock";
/// [ours] The Control UI's configuration file.
pub const CONTROL_UI_CONFIG: &str = "/etc/nexus/controlui.toml";
/// [ours] The Control UI admin's password (made at first boot, mode 0640 root:nexus-ui).
pub const CONTROL_UI_ADMIN_PASSWORD_FILE: &str = "/etc/nexus/controlui-admin.password";
/// [ours] The file name in [`PKLA_DIR`] of the grant for [`CONTROL_UI_USER`].
pub const CONTROL_UI_PKLA: &str = "20-nexus-ui.pkla";

/// [ours] The Control UI's download path of the backup of snapshot `id`.
pub fn control_ui_download(id: u64) -> String {
    format!("{CONTROL_UI_DOWNLOAD_PREFIX}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_ones() {
        assert_eq!(snapshot_dir(7), "/broot/snapshot/snapshots/7");
        assert_eq!(
            format!("{BACKUPS_DIR}/{}", backup_file_name(12)),
            "/broot/backups/nexus_backup_12.tar.gpg"
        );
        assert_eq!(backup_url(12), "/nexus-backups/nexus_backup_12.tar.gpg");
        assert_eq!(
            (CONTROL_UI_LOGIN, CONTROL_UI_EVENTS, control_ui_download(3).as_str()),
            ("/control/login", "/control/events", "/control/download/3")
        );
        assert_eq!(
            format!("{PKLA_DIR}/{VENDOR_PKLA}"),
            "/etc/polkit-1/localauthority/50-local.d/10-backup.pkla"
        );
    }

    #[test]
    fn backup_names_parse_only_when_exact() {
        assert_eq!(parse_backup_file_name("nexus_backup_12.tar.gpg"), Some(12));
        assert_eq!(parse_backup_file_name(&backup_file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "nexus_backup_.tar.gpg",
            "nexus_backup_012.tar.gpg",
            "nexus_backup_0.tar.gpg",
            "nexus_backup_1.tar.gpg.partial",
            "nexus_backup_1x.tar.gpg",
            "nexus_backup_+1.tar.gpg",
            "nexus_backup_99999999999999999999.tar.gpg",
            "../nexus_backup_1.tar.gpg",
        ] {
            assert_eq!(parse_backup_file_name(bad), None, "{bad}");
        }
    }
}
