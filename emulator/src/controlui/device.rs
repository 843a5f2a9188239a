//! What the page asks of the device: the snapshot and backup calls, made on the system bus as
//! the UI's own user (so polkit judges them like any client's), and each D-Bus error put in words.

use std::collections::HashMap;
use std::future::Future;

use nexus_contract::names::{error, BACKUP1, BACKUP1_PATH, SNAPSHOT1, SNAPSHOT1_PATH};
use zbus::OwnedVariant as OwnedValue;

/// A snapshot as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: u32,
    pub created: i64,
    pub description: String,
    pub active: bool,
}

/// A finished backup as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    pub id: u32,
    pub size: u64,
    pub created: i64,
}

/// The running backup, if any (`id` 0 when none runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupStatus {
    pub id: u32,
    pub progress: u32,
    pub state: String,
}

/// A refused or failed call: the D-Bus error name and the daemon's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub name: String,
    pub message: String,
}

impl ApiError {
    /// What the page says about this error, in words an admin understands.
    pub fn words(&self) -> String {
        error_words(&self.name).to_owned()
    }
}

/// The page's words for a D-Bus error name.
pub fn error_words(name: &str) -> &'static str {
    match name {
        error::BUSY => "a backup is already running; wait until it is finished",
        error::NO_SPACE => "there is no space left on the device; delete old backups or snapshots",
        error::ACCESS_DENIED => "refused by polkit: the Control UI is not allowed to do this",
        error::NO_SUCH_SNAPSHOT => "unknown snapshot: it does not exist (any more)",
        error::NO_SUCH_BACKUP => "unknown backup: it does not exist (any more)",
        error::IN_USE => "the snapshot is in use (being backed up, or the system runs on it)",
        error::EXISTS => "a backup of this snapshot exists already",
        error::INVALID_PASSWORD => "the backup password was not accepted",
        error::NOT_RUNNING => "no backup is running",
        error::INVALID_ARGS => "the device did not accept the request",
        _ => "the device could not do this; see the journal of nexus-backupd",
    }
}

/// The calls the page makes. Implemented on the system bus by [`DbusDevice`], in tests by a fake.
pub trait Device: Send + Sync + 'static {
    fn snapshots(&self) -> impl Future<Output = Result<Vec<SnapshotRow>, ApiError>> + Send;
    fn create_snapshot(&self, description: &str) -> impl Future<Output = Result<u32, ApiError>> + Send;
    fn delete_snapshot(&self, id: u32) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn activate_snapshot(&self, id: u32) -> impl Future<Output = Result<(), ApiError>> + Send;
    fn backups(&self) -> impl Future<Output = Result<Vec<BackupRow>, ApiError>> + Send;
    fn status(&self) -> impl Future<Output = Result<BackupStatus, ApiError>> + Send;
    /// Starts a backup encrypted with `password`; the password goes nowhere else.
    fn start_backup(&self, id: u32, password: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The device's two services on a bus connection.
#[derive(Debug, Clone)]
pub struct DbusDevice {
    pub conn: zbus::Connection,
}

fn api_error(e: zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(name, message, _) => ApiError {
            name: name.to_string(),
            message: message.unwrap_or_default(),
        },
        zbus::Error::FDO(e) => ApiError {
            name: zbus::DBusError::name(&*e).to_string(),
            message: zbus::DBusError::description(&*e).unwrap_or_default().to_owned(),
        },
        other => ApiError {
            name: "org.freedesktop.DBus.Error.Failed".into(),
            message: other.to_string(),
        },
    }
}

type Dict = HashMap<String, OwnedValue>;

fn field<'a, T>(d: &'a Dict, key: &str) -> Option<T>
where
    T: TryFrom<&'a zbus::Variant<'a>>,
    <T as TryFrom<&'a zbus::Variant<'a>>>::Error: Into<zbus::Error>,
{
    d.get(key).and_then(|v| v.downcast_ref::<T>().ok())
}

impl DbusDevice {
    async fn call<B, R>(&self, service: &str, path: &str, method: &str, body: &B) -> Result<R, ApiError>
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::Type,
    {
        let reply = self
            .conn
            .call_method(Some(service), path, Some(service), method, body)
            .await
            .map_err(api_error)?;
        reply.body().deserialize().map_err(api_error)
    }
}

impl Device for DbusDevice {
    async fn snapshots(&self) -> Result<Vec<SnapshotRow>, ApiError> {
        let list: Vec<Dict> = self.call(SNAPSHOT1, SNAPSHOT1_PATH, "GetList", &()).await?;
        Ok(list
            .iter()
            .map(|d| SnapshotRow {
                id: field(d, "id").unwrap_or(0),
                created: field(d, "created").unwrap_or(0),
                description: field::<&str>(d, "description").unwrap_or("").to_owned(),
                active: field(d, "active").unwrap_or(false),
            })
            .collect())
    }

    async fn create_snapshot(&self, description: &str) -> Result<u32, ApiError> {
        self.call(SNAPSHOT1, SNAPSHOT1_PATH, "Create", &(true, true, description))
            .await
    }

    async fn delete_snapshot(&self, id: u32) -> Result<(), ApiError> {
        self.call(SNAPSHOT1, SNAPSHOT1_PATH, "Delete", &(id,)).await
    }

    async fn activate_snapshot(&self, id: u32) -> Result<(), ApiError> {
        self.call(SNAPSHOT1, SNAPSHOT1_PATH, "Activate", &(id,)).await
    }

    async fn backups(&self) -> Result<Vec<BackupRow>, ApiError> {
        let list: Vec<Dict> = self.call(BACKUP1, BACKUP1_PATH, "GetList", &()).await?;
        Ok(list
            .iter()
            .map(|d| BackupRow {
                id: field(d, "id").unwrap_or(0),
                size: field(d, "size").unwrap_or(0),
                created: field(d, "created").unwrap_or(0),
            })
            .collect())
    }

    async fn status(&self) -> Result<BackupStatus, ApiError> {
        let d: Dict = self.call(BACKUP1, BACKUP1_PATH, "Status", &()).await?;
        Ok(BackupStatus {
            id: field(&d, "id").unwrap_or(0),
            progress: field(&d, "progress").unwrap_or(0),
            state: field::<&str>(&d, "state").unwrap_or("idle").to_owned(),
        })
    }

    async fn start_backup(&self, id: u32, password: &str) -> Result<(), ApiError> {
        self.call(BACKUP1, BACKUP1_PATH, "Create", &(id, password)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_of_the_contract_has_its_own_words() {
        let cases = [
            (error::BUSY, "a backup is already running"),
            (error::NO_SPACE, "no space"),
            (error::ACCESS_DENIED, "refused by polkit"),
            (error::NO_SUCH_SNAPSHOT, "unknown snapshot"),
            (error::IN_USE, "in use"),
            (error::EXISTS, "exists already"),
            ("org.example.Odd", "could not do this"),
        ];
        for (name, words) in cases {
            assert!(error_words(name).contains(words), "{name}: {}", error_words(name));
        }
    }
}
