//! Putting the daemon together: open the SD-card layout, recover from an interrupted run, serve
//! both D-Bus objects and the HTTPS file server, and stop cleanly on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::backup::{BackupEvent, BackupManager};
use crate::backup_iface::{self, BackupService};
use crate::config::{Config, TestFault, THROWAWAY_MARKER};
use crate::layout::{Layout, Part};
use crate::polkit::Authorizer;
use crate::snapshot::SnapshotStore;
use crate::snapshot_iface::{self, SnapshotService};
use crate::state::SharedState;
use crate::subvolume::Subvolumes;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    TestFaults(#[from] crate::config::TestFaultsError),
    #[error("{path} is not usable: {why}")]
    Layout { path: PathBuf, why: String },
    #[error("cannot recover from the last run: {0}")]
    Recover(String),
    #[error("cannot set up HTTPS: {0}")]
    Tls(std::io::Error),
    #[error("cannot listen for HTTPS on {addr}: {source}; free the port or change https.listen")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve on the system bus: {0}; is dbus running, and is the policy file tech.noreya.Backup1.conf installed?")]
    Bus(#[from] zbus::Error),
}

/// The daemon's parts, before they are put on a bus.
pub struct Daemon {
    pub store: Arc<SnapshotStore>,
    pub backups: Arc<BackupManager>,
}

impl Daemon {
    /// Opens the layout under `config.paths.broot`; returns the daemon and its backup events.
    pub fn open(
        config: &Config,
        subvols: Subvolumes,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BackupEvent>), StartError> {
        Self::open_with_marker(config, subvols, std::path::Path::new(THROWAWAY_MARKER))
    }

    /// [`Daemon::open`], test faults allowed only when `marker` exists.
    pub fn open_with_marker(
        config: &Config,
        subvols: Subvolumes,
        marker: &std::path::Path,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BackupEvent>), StartError> {
        let layout = Layout::new(&config.paths.broot, &config.state_dir());
        let bad = |path: PathBuf, why: String| StartError::Layout { path, why };
        if !layout.broot().is_dir() {
            return Err(bad(
                layout.broot().to_owned(),
                "it does not exist; mount the SD card's btrfs partition there (broot.mount)".into(),
            ));
        }
        for part in Part::ALL {
            if !layout.live(part).is_dir() {
                return Err(bad(
                    layout.live(part),
                    format!(
                        "the live subvolume '{}' is missing; the SD-card image is not laid out as the device's",
                        part.name()
                    ),
                ));
            }
        }
        for dir in [layout.snapshots_dir(), layout.backups_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| bad(dir.clone(), e.to_string()))?;
        }
        let faults = config.test_faults(layout.state_dir(), marker)?;
        if !faults.is_empty() {
            tracing::warn!(
                ?faults,
                "TEST FAULTS: this daemon is broken on purpose (a throwaway test device)"
            );
        }
        let mut backup = config.backup.clone();
        if faults.has(TestFault::PublishBeforeSync) {
            backup.writer = crate::config::Writer::InPlace;
        }
        let state =
            SharedState::open(layout.state_dir()).map_err(|e| bad(layout.state_dir().to_owned(), e.to_string()))?;
        let store = Arc::new(SnapshotStore::new(layout, subvols, Arc::new(state)).with_test_faults(faults));
        let (tx, rx) = mpsc::unbounded_channel();
        let backups = BackupManager::new(
            store.clone(),
            backup,
            Arc::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        Ok((Self { store, backups }, rx))
    }

    /// Start-up recovery: partial backups, interrupted runs, half-made snapshots, pending switch.
    pub fn recover(&self) -> Result<(), StartError> {
        if self.store.test_faults().has(TestFault::TruncateAutomation) {
            let file = self
                .store
                .layout()
                .live(Part::Data)
                .join("automation")
                .join("state.log");
            if file.exists() {
                tracing::warn!("TEST FAULT truncate-automation: truncating {}", file.display());
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_len(0))
                    .map_err(|e| StartError::Recover(format!("{}: {e}", file.display())))?;
            }
        }
        self.backups.recover().map_err(|e| StartError::Recover(e.to_string()))?;
        self.store.recover().map_err(|e| StartError::Recover(e.to_string()))?;
        Ok(())
    }

    /// Serves both objects on `conn`, authorizing with `auth`; events become signals on `conn`.
    pub async fn serve(
        &self,
        conn: &zbus::Connection,
        auth: Authorizer,
        events: mpsc::UnboundedReceiver<BackupEvent>,
    ) -> zbus::Result<()> {
        let server = conn.object_server();
        server
            .at(
                snapshot_iface::PATH,
                SnapshotService {
                    store: self.store.clone(),
                    auth: auth.clone(),
                },
            )
            .await?;
        server
            .at(
                backup_iface::PATH,
                BackupService {
                    backups: self.backups.clone(),
                    auth,
                },
            )
            .await?;
        tokio::spawn(backup_iface::forward_events(conn.clone(), events));
        Ok(())
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartError> {
    let broot = &config.paths.broot;
    if !broot.is_dir() {
        return Err(StartError::Layout {
            path: broot.clone(),
            why: "it does not exist; mount the SD card's btrfs partition there (broot.mount)".into(),
        });
    }
    let subvols = match Subvolumes::is_btrfs(broot) {
        Ok(true) => Subvolumes::Btrfs,
        Ok(false) => {
            return Err(StartError::Layout {
                path: broot.clone(),
                why: "it is not a btrfs file system; mount the SD card's btrfs partition there".into(),
            })
        }
        Err(e) => {
            return Err(StartError::Layout {
                path: broot.clone(),
                why: e.to_string(),
            })
        }
    };
    let (daemon, events) = Daemon::open(&config, subvols)?;
    daemon.recover()?;

    if !config.https.listen.is_empty() {
        let tls = crate::tls::load_or_make(&config.paths.tls_dir, &config.https.names).map_err(StartError::Tls)?;
        let mut files = crate::https::FileServer::new(
            daemon.store.layout().backups_dir(),
            tls.ca_pem.clone(),
            config.https.token.as_deref(),
        );
        if !config.https.control_ui_socket.as_os_str().is_empty() {
            files = files.with_control_ui(config.https.control_ui_socket.clone());
        }
        let files = Arc::new(files);
        for addr in &config.https.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr: *addr, source })?;
            tracing::info!(%addr, "serving backups over HTTPS");
            let limits = crate::https::Limits {
                write_timeout: std::time::Duration::from_secs(config.https.write_timeout_secs),
                ..Default::default()
            };
            tokio::spawn(crate::https::serve_with_limits(
                listener,
                tls.server.clone(),
                files.clone(),
                limits,
            ));
        }
    }

    let conn = zbus::connection::Builder::system().build().await?;
    daemon.serve(&conn, Authorizer::Polkit(conn.clone()), events).await?;
    conn.request_name(snapshot_iface::NAME).await?;
    conn.request_name(backup_iface::NAME).await?;
    tracing::info!(
        "nexus-backupd ready: {} and {} on the system bus",
        snapshot_iface::NAME,
        backup_iface::NAME
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| StartError::Recover(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    let backups = daemon.backups.clone();
    let _ = tokio::task::spawn_blocking(move || backups.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_daemon_does_not_start_on_a_device_that_is_not_a_throwaway_one() {
        let dir = tempfile::tempdir().unwrap();
        let broot = dir.path().join("broot");
        for part in Part::ALL {
            std::fs::create_dir_all(broot.join(part.name())).unwrap();
        }
        let config = Config::parse(
            &format!(
                "[paths]\nbroot = \"{}\"\n[test_faults]\nfaults = [\"delete-earlier-backup\"]\n",
                broot.display()
            ),
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let marker = dir.path().join("nexus-hil-throwaway");
        let err = Daemon::open_with_marker(&config, Subvolumes::PlainCopy, &marker)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("not a throwaway test device"), "{err}");
        std::fs::write(&marker, "").unwrap();
        let (daemon, _events) = Daemon::open_with_marker(&config, Subvolumes::PlainCopy, &marker).unwrap();
        assert!(daemon.store.test_faults().has(TestFault::DeleteEarlierBackup));
    }
}
