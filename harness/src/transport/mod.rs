//! How the harness reaches a device, and nothing else: [`ssh`] (OpenSSH as the device's users
//! use it), [`dbus`] (zbus over `ssh ... systemd-stdio-bridge`, so polkit judges the scenario's
//! user) and [`https`] (rustls with the device's CA pinned on first use). Leaf modules: they know
//! no scenario, step or target.

pub mod dbus;
pub mod https;
pub mod ssh;
