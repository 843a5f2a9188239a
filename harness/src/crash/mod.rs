//! What a power cut leaves on a card: [`log`] reads the write log QEMU keeps of a guest's disk
//! (`blklogwrites`) and rebuilds the disk as it was at any point of it, e.g. at the last flush.

pub mod log;
