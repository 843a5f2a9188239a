//! `nexus-hil conform`: checks a device against the contract in `spec/nexus-backup-api.md`.
//!
//! Every item the vendor documents ([doc]) must hold, or the check fails. Every item this project
//! defined where the documentation is silent ([ours]) is reported as the same as the emulator or
//! as a deviation, never as a failure. Types are read from the device (introspection and the
//! replies' own signatures), so a device whose ids are `t` or `i` is called correctly and
//! reported with the type it has.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use zbus_xml::{ArgDirection, Node};

use crate::dbus::DeviceBus;
use crate::error::InfraError;
use crate::run::{open_device, parse_target};
use crate::runner::Device;

pub const SNAPSHOT1: &str = "tech.noreya.Snapshot1";
pub const BACKUP1: &str = "tech.noreya.Backup1";

/// Where a contract item comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Doc,
    Ours,
}

/// How an item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A [doc] item holds.
    Ok,
    /// A [doc] item does not hold.
    Fail,
    /// An [ours] item is as the emulator does it.
    Same,
    /// An [ours] item differs; reported, not failed.
    Deviates,
    /// The device gave no occasion to check it (the note says why).
    NotSeen,
}

/// One checked item of the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub source: Source,
    pub item: String,
    pub status: Status,
    pub note: String,
}

impl Check {
    fn doc(item: impl Into<String>, ok: bool, note: impl Into<String>) -> Self {
        let status = if ok { Status::Ok } else { Status::Fail };
        Self {
            source: Source::Doc,
            item: item.into(),
            status,
            note: note.into(),
        }
    }

    fn ours(item: impl Into<String>, same: bool, note: impl Into<String>) -> Self {
        let status = if same { Status::Same } else { Status::Deviates };
        Self {
            source: Source::Ours,
            item: item.into(),
            status,
            note: note.into(),
        }
    }

    fn not_seen(source: Source, item: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            source,
            item: item.into(),
            status: Status::NotSeen,
            note: note.into(),
        }
    }
}

/// Arguments of `nexus-hil conform`.
#[derive(Debug, clap::Args)]
pub struct ConformArgs {
    /// `emulator` (a fresh container) or `ssh://USER@HOST[:PORT]`, the admin user of a real device.
    #[arg(long, default_value = "emulator")]
    pub target: String,
    /// HTTPS port of a real device.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// SSH key for a real device (default: the harness key that `nexus-hil provision` installed).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Folder where real devices' HTTPS CAs are pinned on first use (default: ~/.cache/nexus-hil/pins).
    #[arg(long)]
    pub pins: Option<PathBuf>,
    /// Also write the checks as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The nexus-backupd binary for the emulator image (default: next to nexus-hil).
    #[arg(long)]
    pub backupd: Option<PathBuf>,
}

/// Runs `nexus-hil conform`. Exit status: 0 every documented item holds, 1 one does not,
/// 2 bad arguments, 3 the device could not be reached.
pub async fn command(args: ConformArgs) -> Result<ExitCode, InfraError> {
    let target = match parse_target(&args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nexus-hil: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let work = crate::image::cache_dir().join(format!("conform-{}", std::process::id()));
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nnexus-hil: interrupted; removing this run's emulator");
            let _ = crate::emulator::remove_owned(std::process::id()).await;
            std::process::exit(130);
        }
    });
    let opened = match open_device(
        &target,
        args.https_port,
        args.key,
        args.backupd,
        args.pins.as_deref(),
        &work,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    eprintln!(
        "nexus-hil: checking {} against the backup contract (spec/nexus-backup-api.md)",
        args.target
    );
    let result = check(&opened.dev).await;
    opened.close().await;
    let _ = std::fs::remove_dir_all(&work);
    let checks = result.map_err(InfraError::Unreachable)?;
    print!("{}", render(&checks));
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "target": args.target,
            "conforms": conforms(&checks),
            "checks": checks,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| InfraError::io(path.display(), e))?;
    }
    Ok(if conforms(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The whole result, as the terminal shows it.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let source = match c.source {
            Source::Doc => "[doc] ",
            Source::Ours => "[ours]",
        };
        let status = match c.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Same => "same",
            Status::Deviates => "deviates",
            Status::NotSeen => "not seen",
        };
        out.push_str(&format!("{source} {status:<8}  {}: {}\n", c.item, c.note));
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} documented item(s) hold, {} fail; {} of ours the same, {} deviate, {} not seen\n",
        count(Status::Ok),
        count(Status::Fail),
        count(Status::Same),
        count(Status::Deviates),
        count(Status::NotSeen)
    ));
    out
}

/// True when every [doc] item holds.
pub fn conforms(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// One method or signal as the device declares it: input (or signal) types and output types.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    ins: Vec<String>,
    outs: Vec<String>,
}

impl Member {
    fn show(&self, name: &str) -> String {
        if self.outs.is_empty() {
            format!("{name}({})", self.ins.join(", "))
        } else {
            format!("{name}({}) -> {}", self.ins.join(", "), self.outs.join(", "))
        }
    }
}

/// The methods and signals of one interface.
#[derive(Debug, Default)]
struct Interface {
    methods: Vec<(String, Member)>,
    signals: Vec<(String, Member)>,
}

impl Interface {
    fn method(&self, name: &str) -> Option<&Member> {
        self.methods.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    fn signal(&self, name: &str) -> Option<&Member> {
        self.signals.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }
}

fn parse_interface(xml: &str, service: &str) -> Result<Interface, String> {
    let node = Node::try_from(xml).map_err(|e| format!("the introspection data is not valid: {e}"))?;
    let iface = node
        .interfaces()
        .iter()
        .find(|i| i.name().as_str() == service)
        .ok_or_else(|| {
            let names: Vec<String> = node.interfaces().iter().map(|i| i.name().to_string()).collect();
            format!("the object has no interface {service} (it has: {})", names.join(", "))
        })?;
    let methods = iface
        .methods()
        .map(|m| {
            let dir = |d: ArgDirection| -> Vec<String> {
                m.args()
                    .iter()
                    .filter(|a| a.direction().unwrap_or(ArgDirection::In) == d)
                    .map(|a| a.ty().to_string())
                    .collect()
            };
            (
                m.name().to_string(),
                Member {
                    ins: dir(ArgDirection::In),
                    outs: dir(ArgDirection::Out),
                },
            )
        })
        .collect();
    let signals = iface
        .signals()
        .map(|s| {
            (
                s.name().to_string(),
                Member {
                    ins: s.args().iter().map(|a| a.ty().to_string()).collect(),
                    outs: Vec::new(),
                },
            )
        })
        .collect();
    Ok(Interface { methods, signals })
}

fn member(ins: &[&str], outs: &[&str]) -> Member {
    Member {
        ins: ins.iter().map(|s| s.to_string()).collect(),
        outs: outs.iter().map(|s| s.to_string()).collect(),
    }
}

const UNSIGNED: [&str; 4] = ["y", "q", "u", "t"];
const INTEGER: [&str; 8] = ["y", "q", "u", "t", "n", "i", "x", "h"];

/// Checks what introspection shows: names, methods, signatures and signals. `None` for a
/// service means it could not be introspected (the string says why).
fn check_interfaces(snapshot: Result<&str, &str>, backup: Result<&str, &str>) -> Vec<Check> {
    let mut out = Vec::new();
    let contract: [(&str, Result<&str, &str>, &[&str]); 2] = [
        (SNAPSHOT1, snapshot, &["Activate", "Create", "Delete", "GetList"]),
        (BACKUP1, backup, &["Cancel", "Create", "Delete", "GetList", "Status"]),
    ];
    for (service, xml, methods) in contract {
        let short = service.rsplit('.').next().unwrap_or(service);
        let iface = xml.map_err(str::to_string).and_then(|x| parse_interface(x, service));
        let iface = match iface {
            Ok(i) => {
                out.push(Check::doc(
                    format!("{short} names"),
                    true,
                    format!(
                        "bus name, object path /{} and interface are {service}",
                        service.replace('.', "/")
                    ),
                ));
                i
            }
            Err(e) => {
                out.push(Check::doc(format!("{short} names"), false, e));
                continue;
            }
        };
        let missing: Vec<&str> = methods.iter().copied().filter(|m| iface.method(m).is_none()).collect();
        out.push(Check::doc(
            format!("{short} methods"),
            missing.is_empty(),
            if missing.is_empty() {
                methods.join(", ")
            } else {
                format!("missing: {}", missing.join(", "))
            },
        ));
        let extra: Vec<&str> = iface
            .methods
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !methods.contains(n))
            .collect();
        out.push(Check::ours(
            format!("{short} has no other methods"),
            extra.is_empty(),
            if extra.is_empty() {
                "none".to_string()
            } else {
                format!("also has {}", extra.join(", "))
            },
        ));
        // [doc] signatures first, then ours.
        let sig = |name: &str| iface.method(name).map(|m| m.show(name));
        if service == SNAPSHOT1 {
            if let Some(m) = iface.method("Create") {
                let ok = m.ins == ["b", "b", "s"] && m.outs.len() == 1 && UNSIGNED.contains(&m.outs[0].as_str());
                out.push(Check::doc(
                    "Snapshot1.Create signature",
                    ok,
                    format!(
                        "{}; the documentation calls Create(true, true, \"...\") and takes the reply as one unsigned integer",
                        m.show("Create")
                    ),
                ));
            }
        } else {
            if let Some(m) = iface.method("Create") {
                let ok = m.ins.len() == 2 && INTEGER.contains(&m.ins[0].as_str()) && m.ins[1] == "s";
                out.push(Check::doc(
                    "Backup1.Create arguments",
                    ok,
                    format!(
                        "{}; the documentation passes a snapshot id and a password",
                        m.show("Create")
                    ),
                ));
            }
            if let Some(m) = iface.method("Status") {
                out.push(Check::doc(
                    "Backup1.Status signature",
                    m.ins.is_empty() && m.outs == ["a{sv}"],
                    format!(
                        "{}; the documentation reads status[\"id\"] and status[\"progress\"]",
                        m.show("Status")
                    ),
                ));
            }
        }
        let ours: &[(&str, Member)] = if service == SNAPSHOT1 {
            &[
                ("Create", member(&["b", "b", "s"], &["u"])),
                ("Delete", member(&["u"], &[])),
                ("Activate", member(&["u"], &[])),
                ("GetList", member(&[], &["aa{sv}"])),
            ]
        } else {
            &[
                ("Create", member(&["u", "s"], &[])),
                ("Delete", member(&["u"], &[])),
                ("Cancel", member(&[], &[])),
                ("GetList", member(&[], &["aa{sv}"])),
                ("Status", member(&[], &["a{sv}"])),
            ]
        };
        for (name, want) in ours {
            let Some(seen) = sig(name) else { continue };
            let same = iface.method(name) == Some(want);
            out.push(Check::ours(
                format!("{short}.{name} signature"),
                same,
                if same {
                    seen
                } else {
                    format!("{seen}; ours is {}", want.show(name))
                },
            ));
        }
        let signals: &[(&str, Member)] = if service == SNAPSHOT1 {
            &[("Created", member(&["u"], &[])), ("Deleted", member(&["u"], &[]))]
        } else {
            &[
                ("Progress", member(&["u", "u"], &[])),
                ("Finished", member(&["u", "s"], &[])),
            ]
        };
        for (name, want) in signals {
            let item = format!("{short}.{name} signal");
            match iface.signal(name) {
                Some(s) if s == want => out.push(Check::ours(item, true, s.show(name))),
                Some(s) => out.push(Check::ours(
                    item,
                    false,
                    format!("{}; ours is {}", s.show(name), want.show(name)),
                )),
                None => out.push(Check::ours(item, false, format!("absent; ours is {}", want.show(name)))),
            }
        }
    }
    out
}

/// Compares a reply's keys and their D-Bus types with ours.
fn check_keys(item: &str, types: &serde_json::Value, want: &[(&str, &str)]) -> Check {
    let mut diffs = Vec::new();
    for (k, t) in want {
        match types.get(k).and_then(|v| v.as_str()) {
            Some(seen) if seen == *t => {}
            Some(seen) => diffs.push(format!("{k} is {seen}, ours {t}")),
            None => diffs.push(format!("no key {k}")),
        }
    }
    let shown: Vec<String> = want.iter().map(|(k, t)| format!("{k} {t}")).collect();
    if diffs.is_empty() {
        Check::ours(item, true, shown.join(", "))
    } else {
        Check::ours(item, false, format!("{}; ours: {}", diffs.join("; "), shown.join(", ")))
    }
}

/// Runs a command as root through the admin's sudo; its stdout, or why it failed.
async fn root(dev: &Device, cmd: &str) -> Result<String, String> {
    let full = format!("sudo -n sh -c {}", crate::runner::sh_quote(cmd));
    let o = dev.ssh.run(&dev.admin, &full, None, Duration::from_secs(30)).await?;
    if o.code == Some(0) {
        Ok(o.stdout)
    } else {
        Err(format!("`{cmd}` failed: {}", o.stderr.trim()))
    }
}

/// Checks the device. Makes one snapshot (described "nexus-hil conform") and deletes it again.
/// `Err` only when the device cannot be reached at all.
pub async fn check(dev: &Device) -> Result<Vec<Check>, String> {
    let timeout = Duration::from_secs(30);
    let mut out = Vec::new();
    match root(dev, "true").await {
        Ok(_) => out.push(Check::doc(
            "admin sudo",
            true,
            format!("{} runs commands as root with sudo", dev.admin),
        )),
        Err(e) => return Err(format!("{} cannot use sudo without a password prompt: {e}", dev.admin)),
    }
    let bus = DeviceBus::connect(&dev.ssh, &dev.admin, "root", timeout).await?;
    let snap_xml = bus.introspect(SNAPSHOT1).await;
    let backup_xml = bus.introspect(BACKUP1).await;
    out.extend(check_interfaces(
        snap_xml.as_deref().map_err(String::as_str),
        backup_xml.as_deref().map_err(String::as_str),
    ));

    // Storage.
    let fs = root(dev, "stat -f -c %T /broot").await;
    out.push(Check::doc(
        "/broot is btrfs",
        fs.as_deref().map(str::trim) == Ok("btrfs"),
        match &fs {
            Ok(t) => format!("file system type {}", t.trim()),
            Err(e) => e.clone(),
        },
    ));
    for dir in ["/broot/snapshot/snapshots", "/broot/backups"] {
        let r = root(dev, &format!("test -d {dir}")).await;
        out.push(Check::doc(
            format!("{dir} exists"),
            r.is_ok(),
            if r.is_ok() { "a directory" } else { "missing" },
        ));
    }
    let subvols = root(dev, "btrfs subvolume list -o /broot").await.unwrap_or_default();
    let names: Vec<&str> = subvols.lines().filter_map(|l| l.split_whitespace().last()).collect();
    let layout = names.contains(&"system") && names.contains(&"data");
    out.push(Check::ours(
        "SD card subvolumes",
        layout,
        if layout {
            "system and data at the top of /broot".to_string()
        } else {
            format!("top-level subvolumes: {}", names.join(", "))
        },
    ));

    // polkit: one action per method.
    let actions = root(dev, "pkaction").await.unwrap_or_default();
    let want = crate::runner::ALL_ACTIONS;
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|a| !actions.lines().any(|l| l.trim() == *a))
        .collect();
    out.push(Check::doc(
        "polkit actions",
        missing.is_empty(),
        if missing.is_empty() {
            "one per method, named <interface>.<Method> (9)".to_string()
        } else {
            format!("pkaction lacks {}", missing.join(", "))
        },
    ));

    // Status, idle or not.
    match bus.call_typed(BACKUP1, "Status", &[]).await {
        Ok(reply) if !reply.is_empty() => {
            let (values, types) = &reply[0];
            let int = |k: &str| values.get(k).and_then(|v| v.as_i64());
            let ok = int("id").is_some() && int("progress").is_some_and(|p| (0..=100).contains(&p));
            out.push(Check::doc(
                "Backup1.Status id and progress",
                ok,
                format!(
                    "id {}, progress {} (0..100)",
                    types.get("id").and_then(|t| t.as_str()).unwrap_or("missing"),
                    types.get("progress").and_then(|t| t.as_str()).unwrap_or("missing")
                ),
            ));
            out.push(check_keys(
                "Backup1.Status keys",
                types,
                &[
                    ("id", "u"),
                    ("progress", "u"),
                    ("state", "s"),
                    ("bytes_done", "t"),
                    ("bytes_total", "t"),
                    ("last_id", "u"),
                    ("last_result", "s"),
                ],
            ));
            if values.get("state").and_then(|v| v.as_str()) == Some("idle") || int("progress").is_none() {
                out.push(Check::ours("Backup1.Status id when idle", int("id") == Some(0), "0"));
            } else {
                out.push(Check::not_seen(
                    Source::Ours,
                    "Backup1.Status id when idle",
                    "a backup is running",
                ));
            }
        }
        Ok(_) => out.push(Check::doc("Backup1.Status id and progress", false, "empty reply")),
        Err(e) => out.push(Check::doc("Backup1.Status id and progress", false, e.to_string())),
    }

    // A snapshot made and deleted again.
    let created = bus
        .call_typed(
            SNAPSHOT1,
            "Create",
            &["true".into(), "true".into(), "nexus-hil conform".into()],
        )
        .await;
    match created {
        Ok(reply) if reply.len() == 1 && reply[0].0.as_u64().is_some() => {
            let id = reply[0].0.as_u64().unwrap_or_default().to_string();
            let ty = reply[0].1.as_str().unwrap_or("?").to_string();
            let dir = format!("/broot/snapshot/snapshots/{id}");
            let exists = root(dev, &format!("test -d {dir}")).await.is_ok();
            out.push(Check::doc(
                "Snapshot1.Create makes /broot/snapshot/snapshots/<id>/",
                exists,
                format!(
                    "replied one {ty}; {}",
                    if exists { "its folder exists" } else { "no such folder" }
                ),
            ));
            let parts = root(dev, &format!("ls {dir}")).await.unwrap_or_default();
            let parts: Vec<&str> = parts.split_whitespace().collect();
            out.push(Check::ours(
                "snapshot folder",
                ["data", "info.json", "system"].iter().all(|p| parts.contains(p)),
                format!("holds {}", parts.join(", ")),
            ));
            match bus.call_typed(SNAPSHOT1, "GetList", &[]).await {
                Ok(list) if !list.is_empty() => {
                    let entry = list[0].0.as_array().and_then(|a| {
                        a.iter().position(|e| {
                            e.get("id").and_then(|v| v.as_u64()).map(|v| v.to_string()) == Some(id.clone())
                        })
                    });
                    match entry {
                        Some(i) => out.push(check_keys(
                            "Snapshot1.GetList keys",
                            &list[0].1[i],
                            &[
                                ("id", "u"),
                                ("description", "s"),
                                ("created", "x"),
                                ("system", "b"),
                                ("data", "b"),
                                ("active", "b"),
                            ],
                        )),
                        None => out.push(Check::ours(
                            "Snapshot1.GetList keys",
                            false,
                            "the new snapshot is not listed",
                        )),
                    }
                }
                Ok(_) => out.push(Check::ours("Snapshot1.GetList keys", false, "empty reply")),
                Err(e) => out.push(Check::ours("Snapshot1.GetList keys", false, e.to_string())),
            }
            let deleted = bus.call(SNAPSHOT1, "Delete", std::slice::from_ref(&id)).await;
            let gone = root(dev, &format!("test ! -e {dir}")).await.is_ok();
            out.push(Check::ours(
                "Snapshot1.Delete removes the folder",
                deleted.is_ok() && gone,
                match deleted {
                    Ok(_) if gone => "gone".to_string(),
                    Ok(_) => format!("{dir} is still there"),
                    Err(e) => e.to_string(),
                },
            ));
            let again = bus.call(SNAPSHOT1, "Delete", std::slice::from_ref(&id)).await;
            out.push(error_check(
                "Snapshot1.Delete of an unknown id",
                again,
                "tech.noreya.Error.NoSuchSnapshot",
            ));
            let backup = bus.call(BACKUP1, "Delete", std::slice::from_ref(&id)).await;
            out.push(error_check(
                "Backup1.Delete of an unknown id",
                backup,
                "tech.noreya.Error.NoSuchBackup",
            ));
        }
        Ok(reply) => out.push(Check::doc(
            "Snapshot1.Create makes /broot/snapshot/snapshots/<id>/",
            false,
            format!("the reply is not one unsigned integer: {reply:?}"),
        )),
        Err(e) => out.push(Check::doc(
            "Snapshot1.Create makes /broot/snapshot/snapshots/<id>/",
            false,
            e.to_string(),
        )),
    }

    match bus.call_typed(BACKUP1, "GetList", &[]).await {
        Ok(list) => match list.first().and_then(|(_, t)| t.as_array()).and_then(|a| a.first()) {
            Some(types) => out.push(check_keys(
                "Backup1.GetList keys",
                types,
                &[
                    ("id", "u"),
                    ("path", "s"),
                    ("url", "s"),
                    ("size", "t"),
                    ("created", "x"),
                    ("sha256", "s"),
                ],
            )),
            None => out.push(Check::not_seen(
                Source::Ours,
                "Backup1.GetList keys",
                "the device holds no backup",
            )),
        },
        Err(e) => out.push(Check::ours("Backup1.GetList keys", false, e.to_string())),
    }

    // HTTPS: the CA where the documentation says, and the server's certificate chains to it.
    let ca = dev.https.pin_ca(Duration::from_secs(10)).await;
    let chained = match &ca {
        Ok(_) => dev
            .https
            .get(crate::https::CA_PATH, None, None, Duration::from_secs(10))
            .await
            .map(|r| r.status),
        Err(e) => Err(e.clone()),
    };
    out.push(Check::doc(
        "HTTPS CA",
        matches!(chained, Ok(200)),
        match chained {
            Ok(200) => format!(
                "served at {} and the server's certificate chains to it",
                crate::https::CA_PATH
            ),
            Ok(s) => format!("status {s} for {}", crate::https::CA_PATH),
            Err(e) => e,
        },
    ));
    Ok(out)
}

fn error_check(item: &str, r: Result<Vec<serde_json::Value>, crate::dbus::CallError>, want: &str) -> Check {
    match r {
        Err(e) if e.name == want => Check::ours(item, true, want),
        Err(e) => Check::ours(item, false, format!("{}; ours is {want}", e.name)),
        Ok(_) => Check::ours(item, false, format!("succeeded; ours is {want}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(service: &str, body: &str) -> String {
        format!(
            r#"<node><interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect"><arg type="s" direction="out"/></method></interface><interface name="{service}">{body}</interface></node>"#
        )
    }

    const SNAP: &str = r#"<method name="Activate"><arg type="u" direction="in"/></method>
        <method name="Create"><arg type="b" direction="in"/><arg type="b" direction="in"/><arg type="s" direction="in"/><arg type="u" direction="out"/></method>
        <method name="Delete"><arg type="u" direction="in"/></method>
        <method name="GetList"><arg type="aa{sv}" direction="out"/></method>
        <signal name="Created"><arg type="u"/></signal><signal name="Deleted"><arg type="u"/></signal>"#;
    const BACKUP: &str = r#"<method name="Cancel"/>
        <method name="Create"><arg type="u" direction="in"/><arg type="s" direction="in"/></method>
        <method name="Delete"><arg type="u" direction="in"/></method>
        <method name="GetList"><arg type="aa{sv}" direction="out"/></method>
        <method name="Status"><arg type="a{sv}" direction="out"/></method>
        <signal name="Progress"><arg type="u"/><arg type="u"/></signal><signal name="Finished"><arg type="u"/><arg type="s"/></signal>"#;

    #[test]
    fn our_own_interfaces_are_all_ok_and_same() {
        let checks = check_interfaces(Ok(&xml(SNAPSHOT1, SNAP)), Ok(&xml(BACKUP1, BACKUP)));
        let odd: Vec<&Check> = checks
            .iter()
            .filter(|c| !matches!(c.status, Status::Ok | Status::Same))
            .collect();
        assert!(odd.is_empty(), "{odd:#?}");
        assert!(conforms(&checks));
    }

    #[test]
    fn other_id_types_deviate_but_conform() {
        // A device whose ids are 64-bit, and that has no signals.
        let snap = SNAP
            .replace(r#"type="u""#, r#"type="t""#)
            .replace("<signal", "<!--")
            .replace("</signal>", "-->");
        let backup = BACKUP.replace(
            r#"<arg type="u" direction="in"/><arg type="s""#,
            r#"<arg type="i" direction="in"/><arg type="s""#,
        );
        let checks = check_interfaces(Ok(&xml(SNAPSHOT1, &snap)), Ok(&xml(BACKUP1, &backup)));
        assert!(conforms(&checks), "{}", render(&checks));
        let text = render(&checks);
        assert!(
            text.contains("[ours] deviates  Snapshot1.Delete signature: Delete(t); ours is Delete(u)"),
            "{text}"
        );
        assert!(
            text.contains("[ours] deviates  Backup1.Create signature: Create(i, s); ours is Create(u, s)"),
            "{text}"
        );
        assert!(
            text.contains("[doc]  ok        Snapshot1.Create signature: Create(b, b, s) -> t"),
            "{text}"
        );
        assert!(
            text.contains("[ours] deviates  Snapshot1.Created signal: absent"),
            "{text}"
        );
    }

    #[test]
    fn missing_methods_and_wrong_documented_types_fail() {
        let snap = SNAP.replace(r#"<method name="Activate"><arg type="u" direction="in"/></method>"#, "");
        let snap = snap.replace(
            r#"<arg type="u" direction="out"/>"#,
            r#"<arg type="s" direction="out"/>"#,
        );
        let checks = check_interfaces(
            Ok(&xml(SNAPSHOT1, &snap)),
            Err("cannot introspect tech.noreya.Backup1: no such name"),
        );
        assert!(!conforms(&checks));
        let text = render(&checks);
        assert!(
            text.contains("[doc]  FAIL      Snapshot1 methods: missing: Activate"),
            "{text}"
        );
        assert!(
            text.contains("[doc]  FAIL      Snapshot1.Create signature: Create(b, b, s) -> s"),
            "{text}"
        );
        assert!(
            text.contains("[doc]  FAIL      Backup1 names: cannot introspect"),
            "{text}"
        );
        assert!(
            !text.contains("[ours] deviates  Snapshot1 has no other methods"),
            "{text}"
        );
    }

    #[test]
    fn keys_are_compared_with_their_types() {
        let types = serde_json::json!({"id": "t", "progress": "u"});
        let c = check_keys("Status keys", &types, &[("id", "u"), ("progress", "u"), ("state", "s")]);
        assert_eq!(c.status, Status::Deviates);
        assert_eq!(c.note, "id is t, ours u; no key state; ours: id u, progress u, state s");
    }
}
