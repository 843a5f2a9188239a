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
//! throwaway = false               # true only for a bench's own device that holds nothing of anyone's:
//!                                 # its changes are not recorded and undone, and the scenarios that
//!                                 # need a throwaway device run on it (default false)
//!
//! [device.power]                  # optional: the device's power switch (fault.power_cut, fault.reboot)
//! driver = "shelly"               # shelly (Gen2 RPC Switch.Set), tasmota (cm?cmnd=Power), or exec
//! plug = "192.168.1.50"           # shelly, tasmota: the plug's address, HOST[:PORT] (HTTP)
//! switch = 0                      # shelly: the switch id; default 0
//! off = "labgrid-client -p lab-1 power off"   # exec: the command lines (run with sh -c)
//! on = "labgrid-client -p lab-1 power on"
//! off_time = "2s"                 # how long the power stays off; default 2s
//! boot_timeout = "5m"             # how long the device may take to answer again; default 5m
//!
//! [device.sdmux]                  # optional: the card's mux (nexus-hil flash: ERASES the card)
//! driver = "usbsdmux"             # usbsdmux (USB-SD-Mux), sdwire (sd-mux-ctrl), or exec
//! control = "/dev/sg1"            # usbsdmux: its control device; sdwire: its serial
//! card = "/dev/disk/by-id/usb-LinuxAut_sdmux_HS-SD_MMC_000000000012-0:0"   # the card on this machine: a stable path
//! card_size = "15931539456"       # the card's size (bytes, or 14.8GiB); a card of another size is refused
//! size_tolerance = "0"            # how far the size may differ; default 0
//! host = "..."                    # exec: the command lines switching the card here and back
//! dut = "..."
//! switch_timeout = "30s"          # how long the card may take to appear here; default 30s
//! new_card = "/srv/nexus/card.img"  # optional, on a throwaway device only: what fault.replace_card
//!                                 # writes onto the card (a new card after a total failure)
//!
//! [device.console]                # optional: the serial console, read for every scenario's run
//! tcp = "ser2net-host:3001"       # a raw TCP port (ser2net), or
//! serial = "/dev/ttyUSB0"         # a local serial device,
//! baud = 115200                   #   at this rate; default 115200
//!
//! [device.ui]                     # optional: the device's web page, for the browser.* steps
//! base = "https://noreya-nexus.local:443"   # default: the device's HTTPS server
//!
//! user = "admin"                  # the page's admin account, for browser.login,
//! password_file = "/root/.config/nexus-hil/pi-1-ui.password"   # its password: a file here
//!
//! [device.ui.selectors]           # what `@key` means in a browser step's selector, on this device
//! login = "#login"
//! backup_password = "span.password"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

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
    /// A bench's own device, holding nothing of anyone's: the run does not record and undo its
    /// changes, and scenarios that need a throwaway device (`needs: [throwaway]`) run on it.
    /// Never on a device that belongs to someone.
    #[serde(default)]
    pub throwaway: bool,
    pub power: Option<PowerEntry>,
    pub console: Option<ConsoleEntry>,
    pub sdmux: Option<SdMuxEntry>,
    #[serde(default)]
    pub ui: WebUi,
}

/// `[device.ui]`: the device's web page as the browser steps see it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebUi {
    /// The page's base URL, when it is not the device's HTTPS server (`https://HOST:HTTPS_PORT`).
    pub base: Option<String>,
    /// What `@key` stands for in a browser step's selector (may hold `${variables}`).
    #[serde(default)]
    pub selectors: BTreeMap<String, String>,
    /// The page's admin account for `browser.login`: its user name.
    pub user: Option<String>,
    /// A file on this machine whose first line is that account's password (never the password
    /// itself in targets.toml).
    pub password_file: Option<PathBuf>,
    /// The emulator's own: the file on the device that holds the admin's password.
    #[serde(skip)]
    pub password_on_device: Option<String>,
}

/// The emulator's page: its elements by key (issue 18).
const EMULATOR_SELECTORS: &[(&str, &str)] = &[
    ("username", "input#username"),
    ("password", "input#password"),
    ("login", "button#login"),
    ("create_snapshot", "button#create-snapshot"),
    ("snapshot_row", "tr[data-snapshot-id=\"${id}\"]"),
    (
        "newest_snapshot",
        "table#snapshots tbody tr[data-snapshot-id]:last-child",
    ),
    ("start_backup", "tr[data-snapshot-id=\"${id}\"] button.backup"),
    ("password_box", "div#password-box"),
    ("backup_password", "span#backup-password"),
    ("progress", "#progress"),
    ("state", "#state"),
    ("download", "a#download"),
    ("error", "div#error"),
    ("snapshots", "table#snapshots"),
];

impl WebUi {
    /// The emulator's (and the stand-in's, which runs the same daemon and page) selector set.
    pub fn emulator() -> Self {
        WebUi {
            base: None,
            user: Some("admin".into()),
            password_file: None,
            password_on_device: Some(nexus_contract::paths::CONTROL_UI_ADMIN_PASSWORD_FILE.into()),
            selectors: EMULATOR_SELECTORS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// `[device.power]`: how the harness switches the device's power.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerEntry {
    pub driver: PowerDriverName,
    /// shelly, tasmota: the plug's HOST[:PORT].
    pub plug: Option<String>,
    /// shelly: the switch id.
    #[serde(default)]
    pub switch: u32,
    /// exec: the command lines.
    pub on: Option<String>,
    pub off: Option<String>,
    #[serde(default = "off_time", deserialize_with = "duration")]
    pub off_time: std::time::Duration,
    #[serde(default = "boot_timeout", deserialize_with = "duration")]
    pub boot_timeout: std::time::Duration,
}

/// The power drivers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PowerDriverName {
    Shelly,
    Tasmota,
    Exec,
}

/// `[device.sdmux]`: the mux that switches the device's SD card to this machine and back.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SdMuxEntry {
    pub driver: SdMuxDriverName,
    /// usbsdmux: its control device (`/dev/sg*`); sdwire: its serial (`sd-mux-ctrl -l`).
    #[serde(default)]
    pub control: String,
    /// The card as this machine sees it, by a path that names this card whatever order the
    /// kernel found the disks in (`/dev/disk/by-id/...`), never a kernel name (`/dev/sdb`).
    pub card: PathBuf,
    /// The card's size in bytes; another card in the mux is refused.
    #[serde(deserialize_with = "size")]
    pub card_size: u64,
    #[serde(default, deserialize_with = "size")]
    pub size_tolerance: u64,
    /// exec: the command lines switching the card to this machine and back to the device.
    pub host: Option<String>,
    pub dut: Option<String>,
    #[serde(default = "switch_timeout", deserialize_with = "duration")]
    pub switch_timeout: std::time::Duration,
    /// A raw card image that `fault.replace_card` writes onto the card (as `flash` does): the
    /// new card of the vendor's total-failure advice. Only on a `throwaway` device.
    pub new_card: Option<PathBuf>,
}

/// The SD mux drivers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum SdMuxDriverName {
    Usbsdmux,
    Sdwire,
    Exec,
}

/// Kernel names of disks, which change with the order the kernel finds them in.
const KERNEL_DISK_NAMES: &[&str] = &["sd", "mmcblk", "loop", "nvme", "vd", "hd", "sr", "nbd"];

/// `[device.console]`: where the device's serial console is read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleEntry {
    /// A raw TCP console (ser2net), HOST:PORT.
    pub tcp: Option<String>,
    /// A local serial device.
    pub serial: Option<PathBuf>,
    #[serde(default = "baud")]
    pub baud: u32,
}

fn off_time() -> std::time::Duration {
    std::time::Duration::from_secs(2)
}
fn boot_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
fn switch_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    nexus_scenario::parse_size(&s).map_err(serde::de::Error::custom)
}
fn baud() -> u32 {
    115_200
}
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    nexus_scenario::parse_duration(&s).map_err(serde::de::Error::custom)
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
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Inventory {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Checks an inventory's text; errors name `path` and what to fix.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        Self::check(text).map_err(|why| Error::Inventory {
            path: path.to_owned(),
            why,
        })
    }

    fn check(text: &str) -> Result<Self, String> {
        let inv: Inventory = toml::from_str(text).map_err(|e| e.to_string())?;
        if inv.devices.is_empty() {
            return Err("no devices; add a [[device]] table with name and host".into());
        }
        for (i, d) in inv.devices.iter().enumerate() {
            if d.name.trim().is_empty() || d.host.trim().is_empty() {
                return Err(format!("device {} needs a name and a host", i + 1));
            }
            if d.name.contains('/') || d.name.starts_with('.') {
                return Err(format!(
                    "device name {:?} is used as a folder name: no '/', no leading '.'",
                    d.name
                ));
            }
            if inv.devices[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("the name {:?} is used twice", d.name));
            }
            if let Some(p) = &d.power {
                let (what, ok) = match p.driver {
                    PowerDriverName::Shelly | PowerDriverName::Tasmota => {
                        ("`plug` (the plug's HOST[:PORT])", p.plug.is_some())
                    }
                    PowerDriverName::Exec => ("`on` and `off` (command lines)", p.on.is_some() && p.off.is_some()),
                };
                if !ok {
                    return Err(format!("{}: [device.power] driver {:?} needs {what}", d.name, p.driver));
                }
            }
            if let Some(m) = &d.sdmux {
                let bad = |what: String| format!("{}: [device.sdmux] {what}", d.name);
                let (what, ok) = match m.driver {
                    SdMuxDriverName::Usbsdmux => ("`control` (its /dev/sg* device)", !m.control.is_empty()),
                    SdMuxDriverName::Sdwire => ("`control` (its serial, from sd-mux-ctrl -l)", !m.control.is_empty()),
                    SdMuxDriverName::Exec => ("`host` and `dut` (command lines)", m.host.is_some() && m.dut.is_some()),
                };
                if !ok {
                    return Err(bad(format!("driver {:?} needs {what}", m.driver)));
                }
                let name = m.card.strip_prefix("/dev").ok().and_then(|n| n.to_str()).unwrap_or("");
                if !m.card.is_absolute()
                    || KERNEL_DISK_NAMES
                        .iter()
                        .any(|k| name.trim_start_matches('/').starts_with(k) && !name.contains("/disk/"))
                {
                    return Err(bad(format!(
                        "card {:?}: give the card's stable path (/dev/disk/by-id/..., see ls -l /dev/disk/by-id/), \
                         not a kernel name that another disk may get after the next switch",
                        m.card
                    )));
                }
                if m.card_size == 0 {
                    return Err(bad(
                        "card_size must be the card's size in bytes (blockdev --getsize64 CARD)".into(),
                    ));
                }
                if m.new_card.is_some() && !d.throwaway {
                    return Err(bad(
                        "new_card erases the card on fault.replace_card: only on a device marked `throwaway = true` \
                         (a bench's own, holding nothing of anyone's)"
                            .into(),
                    ));
                }
            }
            if let Some(c) = &d.console {
                if c.tcp.is_some() == c.serial.is_some() {
                    return Err(format!(
                        "{}: [device.console] needs exactly one of `tcp` (HOST:PORT of a raw TCP console) or `serial` (a device path)", d.name
                    ));
                }
            }
            if let Some(b) = &d.ui.base {
                if !(b.starts_with("https://") || b.starts_with("http://")) {
                    return Err(format!(
                        "{}: [device.ui] base {b:?}: give the page's address as https://HOST[:PORT]",
                        d.name
                    ));
                }
            }
            if let Some((k, _)) = d.ui.selectors.iter().find(|(_, v)| v.trim().is_empty()) {
                return Err(format!(
                    "{}: [device.ui.selectors] {k} is empty: give a CSS selector",
                    d.name
                ));
            }
            if let Some(f) = &d.ca_sha256 {
                let hex = f.chars().filter(char::is_ascii_hexdigit).count();
                if hex != 64 || f.chars().any(|c| !c.is_ascii_hexdigit() && c != ':') {
                    return Err(format!(
                        "{}: ca_sha256 {f:?} is not a SHA-256 fingerprint (64 hex digits, ':' allowed; `openssl x509 -noout -fingerprint -sha256 -in ca.pem`)", d.name
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
        Inventory::parse(t, Path::new("targets.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let inv = parse("[[device]]\nname = \"lab-1\"\nhost = \"noreya-nexus.local\"\n").unwrap();
        let d = &inv.devices[0];
        assert_eq!((d.ssh_port, d.admin.as_str(), d.https_port), (22, "nexus", 443));
        assert_eq!(d.target(), "ssh://nexus@noreya-nexus.local:22");
        let inv = parse(
            "[[device]]\nname = \"a\"\nhost = \"x\"\n[device.power]\ndriver = \"shelly\"\nplug = \"127.0.0.1:8080\"\n[device.console]\ntcp = \"127.0.0.1:3001\"\n",
        )
        .unwrap();
        let p = inv.devices[0].power.as_ref().unwrap();
        assert_eq!(
            (p.switch, p.off_time, p.boot_timeout),
            (
                0,
                std::time::Duration::from_secs(2),
                std::time::Duration::from_secs(300)
            )
        );
        assert_eq!(inv.devices[0].console.as_ref().unwrap().baud, 115_200);
        assert_eq!(inv.devices[0].ui, WebUi::default(), "no selectors unless given");
    }

    #[test]
    fn a_device_names_its_own_selectors() {
        let inv = parse(
            "[[device]]\nname = \"a\"\nhost = \"x\"\n[device.ui.selectors]\nlogin = \"#login\"\nbackup_password = \"span.pw\"\n",
        )
        .unwrap();
        let ui = &inv.devices[0].ui;
        assert_eq!(ui.base, None);
        assert_eq!(ui.selectors["backup_password"], "span.pw");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[device.ui]\nbase = \"x:443\"\n").unwrap_err();
        assert!(e.contains("https://HOST"), "{e}");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[device.ui.selectors]\nlogin = \" \"\n").unwrap_err();
        assert!(e.contains("login is empty"), "{e}");
        let emu = WebUi::emulator();
        assert_eq!(emu.selectors["download"], "a#download");
        assert_eq!(emu.selectors["snapshot_row"], "tr[data-snapshot-id=\"${id}\"]");
        assert_eq!(emu.selectors.len(), 14);
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
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[device.power]\ndriver = \"exec\"\non = \"x\"\n")
            .unwrap_err();
        assert!(e.contains("needs `on` and `off`"), "{e}");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[device.power]\ndriver = \"plug\"\n").unwrap_err();
        assert!(e.contains("unknown variant") && e.contains("shelly"), "{e}");
        let e = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n[device.console]\nbaud = 9600\n").unwrap_err();
        assert!(e.contains("exactly one of `tcp`"), "{e}");
    }

    #[test]
    fn a_mux_names_its_card_by_a_stable_path() {
        let mux = |body: &str| {
            parse(&format!(
                "[[device]]\nname = \"a\"\nhost = \"x\"\n[device.sdmux]\n{body}"
            ))
        };
        let inv = mux("driver = \"usbsdmux\"\ncontrol = \"/dev/sg1\"\ncard = \"/dev/disk/by-id/usb-sdmux-0:0\"\ncard_size = \"16MiB\"\n")
            .unwrap();
        let m = inv.devices[0].sdmux.as_ref().unwrap();
        assert_eq!(
            (m.card_size, m.size_tolerance, m.switch_timeout.as_secs()),
            (16 << 20, 0, 30)
        );
        let e = mux("driver = \"usbsdmux\"\ncontrol = \"/dev/sg1\"\ncard = \"/dev/sdb\"\ncard_size = \"16MiB\"\n")
            .unwrap_err();
        assert!(e.contains("stable path") && e.contains("/dev/sdb"), "{e}");
        let e = mux("driver = \"sdwire\"\ncard = \"/dev/disk/by-id/x\"\ncard_size = \"1GiB\"\n").unwrap_err();
        assert!(e.contains("needs `control`"), "{e}");
        let e =
            mux("driver = \"exec\"\nhost = \"x\"\ncard = \"/dev/disk/by-id/x\"\ncard_size = \"1GiB\"\n").unwrap_err();
        assert!(e.contains("`host` and `dut`"), "{e}");
        let e = mux("driver = \"exec\"\nhost = \"x\"\ndut = \"y\"\ncard = \"/dev/mmcblk0\"\ncard_size = \"1GiB\"\n")
            .unwrap_err();
        assert!(e.contains("stable path"), "{e}");
    }

    #[test]
    fn only_a_throwaway_device_has_its_card_replaced() {
        let card = "[device.sdmux]\ndriver = \"usbsdmux\"\ncontrol = \"/dev/sg1\"\ncard = \"/dev/disk/by-id/x\"\n\
                    card_size = \"1GiB\"\nnew_card = \"/srv/card.img\"\n";
        let e = parse(&format!("[[device]]\nname = \"a\"\nhost = \"x\"\n{card}")).unwrap_err();
        assert!(e.contains("new_card") && e.contains("throwaway = true"), "{e}");
        let inv = parse(&format!(
            "[[device]]\nname = \"a\"\nhost = \"x\"\nthrowaway = true\n{card}"
        ))
        .unwrap();
        let d = &inv.devices[0];
        assert!(d.throwaway);
        assert_eq!(
            d.sdmux.as_ref().unwrap().new_card.as_deref(),
            Some(Path::new("/srv/card.img"))
        );
        let kept = parse("[[device]]\nname = \"a\"\nhost = \"x\"\n").unwrap();
        assert!(
            !kept.devices[0].throwaway,
            "a device is the owner's unless its entry says otherwise"
        );
    }
}
