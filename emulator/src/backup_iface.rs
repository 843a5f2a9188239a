//! `tech.noreya.Backup1` on D-Bus: authorizes each call with polkit, then hands it to
//! [`BackupManager`]; forwards the job's events as `Progress` and `Finished` signals.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_contract::names::{self, action};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant as OwnedValue, Variant as Value};
use zeroize::Zeroizing;

use crate::backup::{BackupEvent, BackupManager};
use crate::error::NexusError;
use crate::polkit::Authorizer;
use crate::snapshot_iface::{blocking, sender};

pub const NAME: &str = names::BACKUP1;
pub const PATH: &str = names::BACKUP1_PATH;

/// The object at `/tech/noreya/Backup1`.
#[derive(Debug)]
pub struct BackupService {
    pub backups: Arc<BackupManager>,
    pub auth: Authorizer,
}

fn value(v: impl Into<Value<'static>>) -> OwnedValue {
    v.into().try_into_owned().expect("plain values convert")
}

// zbus checks the name at compile time, so it stays a literal; a test holds it to NAME.
#[zbus::interface(name = "tech.noreya.Backup1")]
impl BackupService {
    /// Starts an encrypted backup of a snapshot and returns once Status shows it. The backup runs
    /// on when the caller disconnects. The password is used for the encryption and stored nowhere.
    async fn create(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        snapshot_id: u32,
        password: String,
    ) -> Result<(), NexusError> {
        let password = Zeroizing::new(password);
        self.auth.check(sender(&hdr), action::BACKUP1_CREATE).await?;
        let backups = self.backups.clone();
        blocking(move || backups.start(snapshot_id, password)).await
    }

    /// Stops the running backup and removes its partial file.
    async fn cancel(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), NexusError> {
        self.auth.check(sender(&hdr), action::BACKUP1_CANCEL).await?;
        let backups = self.backups.clone();
        blocking(move || backups.cancel().map(|_| ())).await
    }

    /// Deletes the backup file of a snapshot.
    async fn delete(&self, #[zbus(header)] hdr: Header<'_>, snapshot_id: u32) -> Result<(), NexusError> {
        self.auth.check(sender(&hdr), action::BACKUP1_DELETE).await?;
        let backups = self.backups.clone();
        blocking(move || backups.delete(snapshot_id)).await
    }

    /// Lists the backups: id (u), path (s), url (s), size (t), created (x), sha256 (s).
    #[zbus(out_args("backups"))]
    async fn get_list(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<HashMap<String, OwnedValue>>, NexusError> {
        self.auth.check(sender(&hdr), action::BACKUP1_GETLIST).await?;
        let backups = self.backups.clone();
        let list = blocking(move || backups.list()).await?;
        Ok(list
            .into_iter()
            .map(|b| {
                HashMap::from([
                    ("id".to_string(), value(b.id)),
                    ("path".to_string(), value(b.path)),
                    ("url".to_string(), value(b.url)),
                    ("size".to_string(), value(b.size)),
                    ("created".to_string(), value(b.created)),
                    ("sha256".to_string(), value(b.sha256)),
                ])
            })
            .collect())
    }

    /// The running backup: id (u, 0 when none runs), progress (u, percent), state (s: idle,
    /// running, cancelling), bytes_done (t), bytes_total (t), last_id (u), last_result (s: ok,
    /// cancelled, failed: <reason>).
    #[zbus(out_args("status"))]
    async fn status(&self, #[zbus(header)] hdr: Header<'_>) -> Result<HashMap<String, OwnedValue>, NexusError> {
        self.auth.check(sender(&hdr), action::BACKUP1_STATUS).await?;
        let s = self.backups.status();
        Ok(HashMap::from([
            ("id".to_string(), value(s.id)),
            ("progress".to_string(), value(s.progress)),
            ("state".to_string(), value(s.state)),
            ("bytes_done".to_string(), value(s.bytes_done)),
            ("bytes_total".to_string(), value(s.bytes_total)),
            ("last_id".to_string(), value(s.last_id)),
            ("last_result".to_string(), value(s.last_result)),
        ]))
    }

    /// Progress of the running backup, at most a few times a second.
    #[zbus(signal)]
    async fn progress(emitter: &SignalEmitter<'_>, id: u32, percent: u32) -> zbus::Result<()>;

    /// A backup ended; result is ok, cancelled or failed: <reason>.
    #[zbus(signal)]
    async fn finished(emitter: &SignalEmitter<'_>, id: u32, result: String) -> zbus::Result<()>;
}

/// Sends the job's events as signals on `conn` until the sender side is dropped.
pub async fn forward_events(conn: zbus::Connection, mut rx: tokio::sync::mpsc::UnboundedReceiver<BackupEvent>) {
    let Ok(emitter) = SignalEmitter::new(&conn, PATH) else {
        return;
    };
    while let Some(event) = rx.recv().await {
        let r = match event {
            BackupEvent::Progress { id, percent } => BackupService::progress(&emitter, id, percent).await,
            BackupEvent::Finished { id, result } => BackupService::finished(&emitter, id, result).await,
        };
        if let Err(e) = r {
            tracing::warn!("cannot emit a backup signal: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_serves_the_contracts_interface() {
        assert_eq!(
            <BackupService as zbus::object_server::Interface>::name().as_str(),
            names::BACKUP1
        );
    }
}
