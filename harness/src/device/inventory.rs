//! `targets.toml`: the real devices a run may use (`nexus-hil run --targets targets.toml -j N`).
//!
//! ```toml
//! [[device]]
//! name = "lab-1"                  # names the device in reports
//! host = "noreya-nexus.local"
//! ssh_port = 22                   # default 22
//! admin = "nexus"                 # the admin user (sudo); default nexus
//! key = "/home/qa/.cache/nexus-hil/harness-key/id_ed25519"   # default: the harness key
//! https_port = 443                # default 443
//! ca_sha256 = "AB:CD:..."         # optional: the CA's fingerprint, checked instead of trusting on first use
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(rename = "device", default)]
    pub devices: Vec<DeviceEntry>,
}

/// One device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    pub name: String,
    pub host: String,
    #[serde(default = "ssh_port")]
    pub ssh_port: u16,
    #[serde(default = "admin")]
    pub admin: String,
    pub key: Option<PathBuf>,
    #[serde(default = "https_port")]
    pub https_port: u16,
    pub ca_sha256: Option<String>,
}

fn ssh_port() -> u16 {
    22
}
fn admin() -> String {
    "nexus".into()
}
fn https_port() -> u16 {
    443
}

impl DeviceEntry {
    /// The device as `--target` would name it.
    pub fn target(&self) -> String {
        format!("ssh://{}@{}:{}", self.admin, self.host, self.ssh_port)
    }
}

impl Inventory {
    /// Reads and checks an inventory; errors name the file and what to fix.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let inv: Inventory = toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        if inv.devices.is_empty() {
            return Err(format!(
                "{}: no devices; add a [[device]] table with name and host",
                path.display()
            ));
        }
        for (i, d) in inv.devices.iter().enumerate() {
            if d.name.trim().is_empty() || d.host.trim().is_empty() {
                return Err(format!("{}: device {} needs a name and a host", path.display(), i + 1));
            }
            if d.name.contains('/') || d.name.starts_with('.') {
                return Err(format!(
                    "{}: device name {:?} is used as a folder name: no '/', no leading '.'",
                    path.display(),
                    d.name
                ));
            }
            if inv.devices[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("{}: the name {:?} is used twice", path.display(), d.name));
            }
            if let Some(f) = &d.ca_sha256 {
                let hex = f.chars().filter(char::is_ascii_hexdigit).count();
                if hex != 64 || f.chars().any(|c| !c.is_ascii_hexdigit() && c != ':') {
                    return Err(format!(
                        "{}: {}: ca_sha256 {f:?} is not a SHA-256 fingerprint (64 hex digits, ':' allowed; `openssl x509 -noout -fingerprint -sha256 -in ca.pem`)",
                        path.display(),
                        d.name
                    ));
                }
            }
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Inventory, String> {
        Inventory::parse(t, Path::new("targets.toml"))
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let inv = parse("[[device]]\nname = \"lab-1\"\nhost = \"noreya-nexus.local\"\n").unwrap();
        let d = &inv.devices[0];
        assert_eq!((d.ssh_port, d.admin.as_str(), d.https_port), (22, "nexus", 443));
        assert_eq!(d.target(), "ssh://nexus@noreya-nexus.local:22");
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[[device]]\nname = \"a\"\nhots = \"x\"\n").unwrap_err();
        assert!(e.starts_with("targets.toml:") && e.contains("hots"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.contains("no devices"), "{e}");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[[device]]\nname = \"a\"\nhost = \"y\"\n").unwrap_err();
        assert!(e.contains("used twice"), "{e}");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\nca_sha256 = \"12:34\"\n").unwrap_err();
        assert!(e.contains("not a SHA-256 fingerprint"), "{e}");
        let e = parse("[[device]]\nname = \"../a\"\nhost = \"x\"\n").unwrap_err();
        assert!(e.contains("folder name"), "{e}");
    }
}
