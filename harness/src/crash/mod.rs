//! What a power cut leaves on a card: [`log`] reads the write log QEMU keeps of a disk
//! (`blklogwrites`) and rebuilds the disk as it was at any point of it, e.g. at the last flush;
//! [`card`] logs the writes of a card the host's kernel mounts (the container emulator's).

pub(crate) mod card;
pub(crate) mod log;
