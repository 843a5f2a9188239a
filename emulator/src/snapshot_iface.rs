//! `tech.noreya.Snapshot1` on D-Bus: authorizes each call with polkit, then hands it to
//! [`SnapshotStore`] on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_contract::names::{self, action};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant as OwnedValue, Variant as Value};

use crate::error::{NexusError, NexusResult};
use crate::polkit::Authorizer;
use crate::snapshot::SnapshotStore;

pub const NAME: &str = names::SNAPSHOT1;
pub const PATH: &str = names::SNAPSHOT1_PATH;

/// The object at `/tech/noreya/Snapshot1`.
#[derive(Debug)]
pub struct SnapshotService {
    pub store: Arc<SnapshotStore>,
    pub auth: Authorizer,
}

/// Runs blocking storage work off the D-Bus executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> NexusResult<T> + Send + 'static,
) -> Result<T, NexusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NexusError::Failed(format!("internal task failed: {e}; see the nexus-backupd journal")))?
}

pub(crate) fn sender<'a>(hdr: &'a Header<'_>) -> Option<&'a str> {
    hdr.sender().map(|s| s.as_str())
}

fn value(v: impl Into<Value<'static>>) -> OwnedValue {
    v.into().try_into_owned().expect("plain values convert")
}

// zbus checks the name at compile time, so it stays a literal; a test holds it to NAME.
#[zbus::interface(name = "tech.noreya.Snapshot1")]
impl SnapshotService {
    /// Creates a read-only snapshot of the system state and/or the automation data; at least one
    /// of the two must be true. Returns the new snapshot's id, found at
    /// /broot/snapshot/snapshots/<id>/.
    #[zbus(out_args("id"))]
    async fn create(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        system: bool,
        data: bool,
        description: String,
    ) -> Result<u32, NexusError> {
        self.auth.check(sender(&hdr), action::SNAPSHOT1_CREATE).await?;
        let store = self.store.clone();
        let info = blocking(move || store.create(system, data, &description)).await?;
        if let Err(e) = Self::created(&emitter, info.id).await {
            tracing::warn!("cannot emit Created: {e}");
        }
        Ok(info.id)
    }

    /// Deletes a snapshot. Refused (InUse) while a backup reads it or the system runs on it.
    async fn delete(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        id: u32,
    ) -> Result<(), NexusError> {
        self.auth.check(sender(&hdr), action::SNAPSHOT1_DELETE).await?;
        let store = self.store.clone();
        blocking(move || store.delete(id)).await?;
        if let Err(e) = Self::deleted(&emitter, id).await {
            tracing::warn!("cannot emit Deleted: {e}");
        }
        Ok(())
    }

    /// Lists the snapshots: id (u), description (s), created (x, unix seconds), system (b),
    /// data (b), active (b: the state the system runs on).
    #[zbus(out_args("snapshots"))]
    async fn get_list(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<HashMap<String, OwnedValue>>, NexusError> {
        self.auth.check(sender(&hdr), action::SNAPSHOT1_GETLIST).await?;
        let store = self.store.clone();
        let (list, active) = blocking(move || Ok((store.list()?, store.state().get().active))).await?;
        Ok(list
            .into_iter()
            .map(|i| {
                HashMap::from([
                    ("id".to_string(), value(i.id)),
                    ("description".to_string(), value(i.description)),
                    ("created".to_string(), value(i.created)),
                    ("system".to_string(), value(i.system)),
                    ("data".to_string(), value(i.data)),
                    ("active".to_string(), value(i.id == active)),
                ])
            })
            .collect())
    }

    /// Switches the system to a snapshot at the next start, after taking an automatic snapshot
    /// of the state being left.
    async fn activate(&self, #[zbus(header)] hdr: Header<'_>, id: u32) -> Result<(), NexusError> {
        self.auth.check(sender(&hdr), action::SNAPSHOT1_ACTIVATE).await?;
        let store = self.store.clone();
        blocking(move || store.activate(id)).await
    }

    /// A snapshot was created.
    #[zbus(signal)]
    async fn created(emitter: &SignalEmitter<'_>, id: u32) -> zbus::Result<()>;

    /// A snapshot was deleted.
    #[zbus(signal)]
    async fn deleted(emitter: &SignalEmitter<'_>, id: u32) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_serves_the_contracts_interface() {
        assert_eq!(
            <SnapshotService as zbus::object_server::Interface>::name().as_str(),
            names::SNAPSHOT1
        );
    }
}
