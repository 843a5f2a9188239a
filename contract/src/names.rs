//! The D-Bus names of the contract: the two services (bus name = interface name), their object
//! paths and methods, the polkit action of each method, and the `tech.noreya.Error.*` names.

// Each interface name is typed here once; the actions are built from it so they cannot drift.
macro_rules! snapshot1 {
    () => {
        "tech.noreya.Snapshot1"
    };
}
macro_rules! backup1 {
    () => {
        "tech.noreya.Backup1"
    };
}

/// The snapshot service: its bus name and its interface name.
pub const SNAPSHOT1: &str = snapshot1!();
/// The backup service: its bus name and its interface name.
pub const BACKUP1: &str = backup1!();

/// The object [`SNAPSHOT1`] serves ([`object_path`] of its name).
pub const SNAPSHOT1_PATH: &str = "/tech/noreya/Snapshot1";
/// The object [`BACKUP1`] serves ([`object_path`] of its name).
pub const BACKUP1_PATH: &str = "/tech/noreya/Backup1";

/// The methods of [`SNAPSHOT1`], sorted.
pub const SNAPSHOT1_METHODS: [&str; 4] = ["Activate", "Create", "Delete", "GetList"];
/// The methods of [`BACKUP1`], sorted.
pub const BACKUP1_METHODS: [&str; 5] = ["Cancel", "Create", "Delete", "GetList", "Status"];

/// The polkit action of each method, named `<interface>.<Method>` as the vendor's pkla grants them.
pub mod action {
    pub const BACKUP1_CANCEL: &str = concat!(backup1!(), ".Cancel");
    pub const BACKUP1_CREATE: &str = concat!(backup1!(), ".Create");
    pub const BACKUP1_DELETE: &str = concat!(backup1!(), ".Delete");
    pub const BACKUP1_GETLIST: &str = concat!(backup1!(), ".GetList");
    pub const BACKUP1_STATUS: &str = concat!(backup1!(), ".Status");
    pub const SNAPSHOT1_ACTIVATE: &str = concat!(snapshot1!(), ".Activate");
    pub const SNAPSHOT1_CREATE: &str = concat!(snapshot1!(), ".Create");
    pub const SNAPSHOT1_DELETE: &str = concat!(snapshot1!(), ".Delete");
    pub const SNAPSHOT1_GETLIST: &str = concat!(snapshot1!(), ".GetList");
}

/// All nine polkit actions, sorted: the order of the vendor's pkla `Action=` line.
pub const ACTIONS: [&str; 9] = [
    action::BACKUP1_CANCEL,
    action::BACKUP1_CREATE,
    action::BACKUP1_DELETE,
    action::BACKUP1_GETLIST,
    action::BACKUP1_STATUS,
    action::SNAPSHOT1_ACTIVATE,
    action::SNAPSHOT1_CREATE,
    action::SNAPSHOT1_DELETE,
    action::SNAPSHOT1_GETLIST,
];

/// [ours] The actions the Control UI (user `nexus-ui`) is granted, sorted: what its page can do
/// (list, create, delete and activate snapshots; start a backup and follow it), nothing more.
pub const CONTROL_UI_ACTIONS: [&str; 7] = [
    action::BACKUP1_CREATE,
    action::BACKUP1_GETLIST,
    action::BACKUP1_STATUS,
    action::SNAPSHOT1_ACTIVATE,
    action::SNAPSHOT1_CREATE,
    action::SNAPSHOT1_DELETE,
    action::SNAPSHOT1_GETLIST,
];

/// The object path of a service: `/` and its name with dots as slashes.
pub fn object_path(service: &str) -> String {
    format!("/{}", service.replace('.', "/"))
}

macro_rules! error_name {
    ($name:literal) => {
        concat!("tech.noreya.Error.", $name)
    };
}

/// The daemon's own D-Bus error names, and the two standard ones it also answers with:
/// `org.freedesktop.DBus.Error.InvalidArgs` (malformed arguments) and `.AccessDenied` (polkit said no).
pub mod error {
    /// `org.freedesktop.DBus.Error.AccessDenied`: polkit said no.
    pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    /// `org.freedesktop.DBus.Error.InvalidArgs`: malformed arguments.
    pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
    /// A backup is already running; only one runs at a time.
    pub const BUSY: &str = error_name!("Busy");
    /// No snapshot has this id.
    pub const NO_SUCH_SNAPSHOT: &str = error_name!("NoSuchSnapshot");
    /// There is no backup of this snapshot.
    pub const NO_SUCH_BACKUP: &str = error_name!("NoSuchBackup");
    /// The snapshot or backup is being read or written, or the system runs on it.
    pub const IN_USE: &str = error_name!("InUse");
    /// Cancel was called while no backup runs.
    pub const NOT_RUNNING: &str = error_name!("NotRunning");
    /// `/broot` is full.
    pub const NO_SPACE: &str = error_name!("NoSpace");
    /// The backup of this snapshot exists already.
    pub const EXISTS: &str = error_name!("Exists");
    /// The backup password is empty, too long or not usable.
    pub const INVALID_PASSWORD: &str = error_name!("InvalidPassword");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_the_service_names_as_paths() {
        assert_eq!(object_path(SNAPSHOT1), SNAPSHOT1_PATH);
        assert_eq!(object_path(BACKUP1), BACKUP1_PATH);
    }

    #[test]
    fn actions_are_interface_dot_method_for_every_method() {
        let expected: Vec<String> = BACKUP1_METHODS
            .iter()
            .map(|m| format!("{BACKUP1}.{m}"))
            .chain(SNAPSHOT1_METHODS.iter().map(|m| format!("{SNAPSHOT1}.{m}")))
            .collect();
        assert_eq!(ACTIONS.to_vec(), expected);
    }

    /// The macros build the names; this pins the text a client or a pkla file sees, as the
    /// vendor's documentation and `spec/nexus-backup-api.md` write it.
    #[test]
    fn wire_names_are_the_documented_ones() {
        assert_eq!((SNAPSHOT1, BACKUP1), ("tech.noreya.Snapshot1", "tech.noreya.Backup1"));
        assert_eq!(
            ACTIONS,
            [
                "tech.noreya.Backup1.Cancel",
                "tech.noreya.Backup1.Create",
                "tech.noreya.Backup1.Delete",
                "tech.noreya.Backup1.GetList",
                "tech.noreya.Backup1.Status",
                "tech.noreya.Snapshot1.Activate",
                "tech.noreya.Snapshot1.Create",
                "tech.noreya.Snapshot1.Delete",
                "tech.noreya.Snapshot1.GetList",
            ]
        );
        assert_eq!(
            [
                error::BUSY,
                error::NO_SUCH_SNAPSHOT,
                error::NO_SUCH_BACKUP,
                error::IN_USE,
                error::NOT_RUNNING,
                error::NO_SPACE,
                error::EXISTS,
                error::INVALID_PASSWORD,
            ],
            [
                "tech.noreya.Error.Busy",
                "tech.noreya.Error.NoSuchSnapshot",
                "tech.noreya.Error.NoSuchBackup",
                "tech.noreya.Error.InUse",
                "tech.noreya.Error.NotRunning",
                "tech.noreya.Error.NoSpace",
                "tech.noreya.Error.Exists",
                "tech.noreya.Error.InvalidPassword",
            ]
        );
    }
}
