//! A bench's services around a real device, apart from the kinds of device themselves
//! (`crate::device`, which this room uses and which never uses it): one run at a time on a
//! device ([`lock`], a lease on the device itself), the record of a scenario's changes there and
//! their undo ([`record`]), the device's power switch ([`power`], and the [`power::Bench`]
//! lifecycle of a real device), its serial console ([`console`]), and its health before a run
//! ([`health`]).

pub mod console;
pub mod health;
pub mod lock;
pub mod power;
pub mod record;
