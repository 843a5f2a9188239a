//! `nexus-contract`: every name of the NOREYA NEXUS backup contract (`spec/nexus-backup-api.md`),
//! written once, for the emulator that serves it and the harness that checks it on the emulator
//! and on a real device. It holds names and the few functions that build or parse them, no I/O,
//! so both sides can depend on it without pulling in D-Bus, TLS or tokio.
//!
//! [`names`] has what travels on D-Bus (services, object paths, methods, polkit actions, error
//! names); [`paths`] has where things are on the device (the storage layout, the HTTPS paths,
//! the polkit grant file, the backup user); [`probe`] has the report the latency probe
//! (`nexus-automation probe`) prints and the harness reads.

pub mod names;
pub mod paths;
pub mod probe;
