//! What introspection shows of both services: names, methods, signatures and signals, the
//! vendor's documented ones ([doc]) and ours ([ours]).

use nexus_contract::names::{object_path, BACKUP1, BACKUP1_METHODS, SNAPSHOT1, SNAPSHOT1_METHODS};
use zbus_xml::{ArgDirection, Node};

use super::Check;

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

/// Checks what introspection shows: names, methods, signatures and signals. `Err` for a
/// service means it could not be introspected (the string says why).
pub(crate) fn check_interfaces(snapshot: Result<&str, &str>, backup: Result<&str, &str>) -> Vec<Check> {
    let mut out = Vec::new();
    let contract: [(&str, Result<&str, &str>, &[&str]); 2] = [
        (SNAPSHOT1, snapshot, &SNAPSHOT1_METHODS),
        (BACKUP1, backup, &BACKUP1_METHODS),
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
                        "bus name, object path {} and interface are {service}",
                        object_path(service)
                    ),
                ));
                i
            }
            Err(e) => {
                out.push(Check::doc(format!("{short} names"), false, e));
                continue;
            }
        };
        out.extend(methods_of(short, &iface, methods));
        out.extend(documented_signatures(service, &iface));
        out.extend(our_signatures(service, short, &iface));
        out.extend(signals(service, short, &iface));
    }
    out
}

/// The documented methods are there ([doc]); no others are ([ours]).
fn methods_of(short: &str, iface: &Interface, methods: &[&str]) -> Vec<Check> {
    let missing: Vec<&str> = methods.iter().copied().filter(|m| iface.method(m).is_none()).collect();
    let extra: Vec<&str> = iface
        .methods
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !methods.contains(n))
        .collect();
    vec![
        Check::doc(
            format!("{short} methods"),
            missing.is_empty(),
            if missing.is_empty() {
                methods.join(", ")
            } else {
                format!("missing: {}", missing.join(", "))
            },
        ),
        Check::ours(
            format!("{short} has no other methods"),
            extra.is_empty(),
            if extra.is_empty() {
                "none".to_string()
            } else {
                format!("also has {}", extra.join(", "))
            },
        ),
    ]
}

/// The signatures the vendor's page implies by how it calls the methods.
fn documented_signatures(service: &str, iface: &Interface) -> Vec<Check> {
    let mut out = Vec::new();
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
        return out;
    }
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
    out
}

/// Our signatures: the same, or how the device's differ.
fn our_signatures(service: &str, short: &str, iface: &Interface) -> Vec<Check> {
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
    let mut out = Vec::new();
    for (name, want) in ours {
        let Some(seen) = iface.method(name).map(|m| m.show(name)) else {
            continue;
        };
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
    out
}

/// Our signals: present with our types, or how they differ.
fn signals(service: &str, short: &str, iface: &Interface) -> Vec<Check> {
    let signals: &[(&str, Member)] = if service == SNAPSHOT1 {
        &[("Created", member(&["u"], &[])), ("Deleted", member(&["u"], &[]))]
    } else {
        &[
            ("Progress", member(&["u", "u"], &[])),
            ("Finished", member(&["u", "s"], &[])),
        ]
    };
    let mut out = Vec::new();
    for (name, want) in signals {
        let item = format!("{short}.{name} signal");
        out.push(match iface.signal(name) {
            Some(s) if s == want => Check::ours(item, true, s.show(name)),
            Some(s) => Check::ours(item, false, format!("{}; ours is {}", s.show(name), want.show(name))),
            None => Check::ours(item, false, format!("absent; ours is {}", want.show(name))),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conform::{conforms, render, Status};

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
}
