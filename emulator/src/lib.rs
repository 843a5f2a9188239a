//! `nexus-emulator`: our implementation of the NOREYA NEXUS backup daemon, `nexus-backupd`.
//!
//! The contract is `spec/nexus-backup-api.md`, its names (D-Bus names, polkit actions, error names,
//! paths) taken from `nexus_contract`. The logic lives in plain Rust types that know
//! nothing of D-Bus: [`snapshot::SnapshotStore`] (btrfs snapshots through [`subvolume`], ids and
//! the pending switch in [`state`]) and [`backup::BackupManager`] (a snapshot streamed by
//! [`archive`] into [`openpgp`] encryption by [`pipeline`], kept gentle by [`throttle`]). [`snapshot_iface`] and
//! [`backup_iface`] put them on the bus, each call first authorized by [`polkit`]; every error is a
//! [`error::NexusError`] with its D-Bus name. [`https`] serves the finished files with the
//! certificates of [`tls`] (who gets a connection, and for how long: [`admission`]) and forwards
//! `/control/` to [`controlui`], the Control UI (binary `nexus-controlui`, its own user, a D-Bus
//! client like any other). [`service`] wires the daemon together from a [`config::Config`]; the
//! paths come from [`layout`].

pub mod admission;
pub mod archive;
pub mod automation;
pub mod backup;
pub mod backup_iface;
pub mod cli;
pub mod config;
pub mod controlui;
pub mod error;
pub mod https;
pub mod layout;
pub mod openpgp;
pub mod pipeline;
pub mod polkit;
pub mod service;
pub mod snapshot;
pub mod snapshot_iface;
pub mod state;
pub mod subvolume;
pub mod throttle;
pub mod tls;
