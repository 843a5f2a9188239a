//! Backup progress for the page: the daemon's `Progress` and `Finished` signals (sent by the
//! daemon's own bus name, no other), read from the system bus, fanned out to every open
//! `/control/events` stream as server-sent events.

use futures_util::StreamExt;
use nexus_contract::names::{BACKUP1, BACKUP1_PATH};
use nexus_contract::paths::control_ui_download;
use serde_json::json;
use tokio::sync::broadcast;
use zbus::names::BusName;

/// One thing the page is told about a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiEvent {
    /// A backup runs and is `percent` done.
    Progress { id: u32, percent: u32 },
    /// A backup ended: `result` is ok, cancelled or failed: <reason>.
    Finished { id: u32, result: String },
}

/// The event's `data-state` on the page: running, finished, cancelled or failed.
pub fn state_of(event: &UiEvent) -> &'static str {
    match event {
        UiEvent::Progress { .. } => "running",
        UiEvent::Finished { result, .. } if result == "ok" => "finished",
        UiEvent::Finished { result, .. } if result == "cancelled" => "cancelled",
        UiEvent::Finished { .. } => "failed",
    }
}

/// One server-sent event: `event: progress|finished`, one `data:` line of JSON, a blank line.
pub fn sse_frame(event: &UiEvent) -> String {
    let (name, data) = match event {
        UiEvent::Progress { id, percent } => (
            "progress",
            json!({"id": id, "percent": percent, "state": state_of(event)}),
        ),
        UiEvent::Finished { id, result } => {
            let mut data = json!({"id": id, "state": state_of(event), "result": result});
            if result == "ok" {
                data["download"] = json!(control_ui_download(u64::from(*id)));
            }
            ("finished", data)
        }
    };
    // serde_json never writes a raw newline, so the data stays one line.
    format!("event: {name}\ndata: {data}\n\n")
}

/// Reads the daemon's backup signals from `conn` and sends them to `tx` until the bus closes.
///
/// Only the daemon's own signals count: anyone on the system bus may emit a signal that looks
/// like `Backup1.Finished`, and the page would tell the admin a backup is done that is not. So
/// the stream matches the sender, the unique name that owns `tech.noreya.Backup1`, looked up
/// again whenever the name changes hands (a restarted daemon gets a new one). On a peer-to-peer
/// connection (no bus, no names) the one peer is the daemon itself.
pub async fn feed_from_bus(conn: zbus::Connection, tx: broadcast::Sender<UiEvent>) -> zbus::Result<()> {
    if conn.unique_name().is_none() {
        let mut stream = zbus::MessageStream::for_match_rule(backup_signals().build()?, &conn, None).await?;
        while let Some(msg) = stream.next().await {
            relay(&msg?, &tx);
        }
        return Ok(());
    }
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    // Subscribed before the look-up, so a change in between is not missed.
    let mut owner_changes = dbus.receive_name_owner_changed_with_args(&[(0, BACKUP1)]).await?;
    loop {
        let owner = match dbus.get_name_owner(BusName::try_from(BACKUP1)?).await {
            Ok(owner) => owner,
            Err(zbus::fdo::Error::NameHasNoOwner(_)) => {
                tracing::info!("{BACKUP1} has no owner; backup progress shows once nexus-backupd runs");
                match owner_changes.next().await {
                    Some(_) => continue,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(%owner, "following the backup signals of {BACKUP1}");
        let rule = backup_signals().sender(owner.as_str()).build()?;
        let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None).await?;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let msg = msg?;
                        // The bus filters by the rule; checked here too, as the rule is only a
                        // request to the bus.
                        if msg.header().sender().map(|s| s.as_str()) == Some(owner.as_str()) {
                            relay(&msg, &tx);
                        }
                    }
                    None => return Ok(()),
                },
                // The daemon stopped or was replaced: look its name up again.
                _ = owner_changes.next() => break,
            }
        }
    }
}

/// Signals of the backup object, from whichever sender.
fn backup_signals() -> zbus::match_rule::Builder<'static> {
    zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(BACKUP1)
        .path(BACKUP1_PATH)
}

/// Passes a `Progress` or `Finished` signal on to the open pages; other members are ignored.
fn relay(msg: &zbus::Message, tx: &broadcast::Sender<UiEvent>) {
    let header = msg.header();
    let event = match header.member().map(|m| m.as_str()) {
        Some("Progress") => msg
            .body()
            .deserialize::<(u32, u32)>()
            .ok()
            .map(|(id, percent)| UiEvent::Progress { id, percent }),
        Some("Finished") => msg
            .body()
            .deserialize::<(u32, String)>()
            .ok()
            .map(|(id, result)| UiEvent::Finished { id, result }),
        _ => None,
    };
    if let Some(event) = event {
        // No page open is fine.
        let _ = tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_update_is_one_event_of_one_data_line() {
        let frame = sse_frame(&UiEvent::Progress { id: 3, percent: 42 });
        assert_eq!(
            frame,
            "event: progress\ndata: {\"id\":3,\"percent\":42,\"state\":\"running\"}\n\n"
        );
    }

    #[test]
    fn a_finished_backup_names_its_download_and_a_failed_one_does_not() {
        let ok = sse_frame(&UiEvent::Finished {
            id: 3,
            result: "ok".into(),
        });
        assert!(ok.starts_with("event: finished\ndata: {"), "{ok}");
        assert!(ok.contains("\"state\":\"finished\"") && ok.contains("\"download\":\"/control/download/3\""));
        let failed = sse_frame(&UiEvent::Finished {
            id: 3,
            result: "failed: disk\nfull".into(),
        });
        assert!(failed.contains("\"state\":\"failed\"") && !failed.contains("download"));
        assert_eq!(failed.matches('\n').count(), 3, "{failed}");
    }
}
