//! A bench's services around a real device, apart from the kinds of device themselves
//! (`crate::device`, which this room uses and which never uses it): one run at a time on a
//! device ([`lock`], a lease on the device itself), the record of a scenario's changes there and
//! their undo ([`record`]), the device's power switch ([`power`], and the [`power::Bench`]
//! lifecycle of a real device), its serial console ([`console`]), its health before a run
//! ([`health`]), and its SD-card mux ([`sdmux`]: the card switched here, checked, flashed;
//! [`card_read`]: read after a power cut, before the power comes back; [`new_card`]: a new card
//! written for `fault.replace_card` on a throwaway device).
//! Each service fails with its own enum (`LockError`, `PowerError`, `MuxError`); the lock's
//! names are re-exported here.

pub(crate) mod card_read;
pub(crate) mod console;
pub(crate) mod health;
pub(crate) mod lock;
pub(crate) mod new_card;
pub(crate) mod power;
pub(crate) mod record;
pub(crate) mod sdmux;

pub use lock::{DeviceLock, LockError, Timing, LOCK_DIR, LOCK_FILE};
