//! Where the harness keeps what outlives a run. Two places, so that CI can start every run
//! with no keys or pins of earlier runs while keeping the images that take minutes to make:
//! [`dir`] for the harness's key, pinned CAs and `emulator up` state, [`images`] for built
//! images, the SD-card template and the stand-in (whose key is baked into its image).

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/nexus-hil` (else `~/.cache/nexus-hil`): keys, pins, state.
pub fn dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join("nexus-hil")
}

/// `$NEXUS_HIL_IMAGE_CACHE` if set, else [`dir`]: images and what is built with them.
pub fn images() -> PathBuf {
    std::env::var_os("NEXUS_HIL_IMAGE_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(dir)
}
