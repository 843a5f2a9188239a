//! D-Bus on the device, reached the way a remote user reaches it: zbus over
//! `ssh USER@host systemd-stdio-bridge`, so polkit judges that user. Methods are called with the
//! argument types the device itself declares (introspection), so a device whose ids are `i` or
//! `t` instead of the emulator's `u` is called correctly and reported as it is.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use zbus::address::transport::{Transport, Unixexec};
use zbus::{Address, Connection, Variant};

use nexus_contract::names::object_path;

use super::Error;
use crate::transport::ssh::SshTarget;

/// A D-Bus error reply: its name and message.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// A connection to the device's system bus as one user.
pub struct DeviceBus {
    conn: Connection,
    signatures: tokio::sync::Mutex<HashMap<(String, String), Vec<String>>>,
}

impl DeviceBus {
    /// Connects as `user`; `root` goes through the admin user and sudo, as the vendor's root
    /// flow does (`sudo dbus-send --system ...`).
    pub async fn connect(ssh: &SshTarget, admin: &str, user: &str, timeout: Duration) -> Result<Self, Error> {
        let (login, remote) = if user == "root" {
            (admin, "sudo -n systemd-stdio-bridge")
        } else {
            (user, "systemd-stdio-bridge")
        };
        let argv = ssh.ssh_argv(login);
        let mut args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        // Quiet: the bridge's ssh shares our stderr, and "connection closed" after a fault is expected.
        args.insert(0, "-q".into());
        args.push(remote.into());
        let address = Address::new(Transport::Unixexec(Unixexec::new(PathBuf::from(&argv[0]), None, args)));
        let conn = tokio::time::timeout(timeout, zbus::connection::Builder::address(address).build())
            .await
            .map_err(|_| {
                Error::TimedOut(format!(
                    "no D-Bus connection as {user} within {timeout:?} (ssh {login}@{}:{})",
                    ssh.host, ssh.port
                ))
            })?
            .map_err(|e| {
                Error::Bus(format!(
                    "D-Bus over ssh as {user} failed: {e}; can {login} log in and run systemd-stdio-bridge?"
                ))
            })?;
        Ok(Self {
            conn,
            signatures: Default::default(),
        })
    }

    /// The input argument types of `service.method`, as the device declares them.
    pub async fn signature(&self, service: &str, method: &str) -> Result<Vec<String>, Error> {
        let key = (service.to_string(), method.to_string());
        if let Some(s) = self.signatures.lock().await.get(&key) {
            return Ok(s.clone());
        }
        let xml = self.introspect(service).await?;
        let node = zbus_xml::Node::try_from(xml.as_str())
            .map_err(|e| Error::Introspection(format!("bad introspection of {service}: {e}")))?;
        let iface = node
            .interfaces()
            .iter()
            .find(|i| i.name().as_str() == service)
            .ok_or_else(|| Error::Introspection(format!("{service} has no interface {service}")))?;
        let m = iface
            .methods()
            .find(|m| m.name().as_str() == method)
            .ok_or_else(|| Error::Introspection(format!("{service} has no method {method}")))?;
        let sig: Vec<String> = m
            .args()
            .iter()
            .filter(|a| a.direction() != Some(zbus_xml::ArgDirection::Out))
            .map(|a| a.ty().to_string())
            .collect();
        self.signatures.lock().await.insert(key, sig.clone());
        Ok(sig)
    }

    /// The introspection XML of `service`'s object (object path = the name with dots as slashes).
    pub async fn introspect(&self, service: &str) -> Result<String, Error> {
        let path = object_path(service);
        let reply = self
            .conn
            .call_method(
                Some(service),
                path.as_str(),
                Some("org.freedesktop.DBus.Introspectable"),
                "Introspect",
                &(),
            )
            .await
            .map_err(|e| Error::Introspection(format!("cannot introspect {service}: {e}")))?;
        reply
            .body()
            .deserialize()
            .map_err(|e| Error::Introspection(e.to_string()))
    }

    /// Calls `service.method` with `args` converted to the declared types; the reply's values as JSON.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        args: &[String],
    ) -> Result<Vec<serde_json::Value>, CallError> {
        Ok(self
            .call_typed(service, method, args)
            .await?
            .iter()
            .map(|(v, _)| v.clone())
            .collect())
    }

    /// The finished backups `Backup1.GetList` lists: id and SHA-256 (an entry without an id is
    /// left out; one without a SHA-256 has an empty one).
    pub async fn finished_backups(&self) -> Result<std::collections::BTreeMap<u64, String>, CallError> {
        let reply = self.call(nexus_contract::names::BACKUP1, "GetList", &[]).await?;
        Ok(reply
            .first()
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let id = e.get("id")?.as_u64()?;
                let sha = e.get("sha256").and_then(|v| v.as_str()).unwrap_or_default();
                Some((id, sha.to_string()))
            })
            .collect())
    }

    /// Like [`DeviceBus::call`], with each reply value's types beside it ([`types_of`]).
    pub async fn call_typed(
        &self,
        service: &str,
        method: &str,
        args: &[String],
    ) -> Result<Vec<(serde_json::Value, serde_json::Value)>, CallError> {
        let bad = |m: String| CallError {
            name: "nexus-hil.BadArguments".into(),
            message: m,
        };
        let sig = self.signature(service, method).await.map_err(|e| bad(e.to_string()))?;
        if sig.len() != args.len() {
            return Err(bad(format!(
                "{service}.{method} takes {} argument(s) ({}), the step gives {}",
                sig.len(),
                sig.join(""),
                args.len()
            )));
        }
        let mut body = zbus::wire::StructureBuilder::new();
        for (t, a) in sig.iter().zip(args) {
            body = body.append_field(convert(t, a).map_err(|e| bad(e.to_string()))?);
        }
        let path = object_path(service);
        let result = if args.is_empty() {
            self.conn
                .call_method(Some(service), path.as_str(), Some(service), method, &())
                .await
        } else {
            let body = body.build().map_err(|e| bad(e.to_string()))?;
            self.conn
                .call_method(Some(service), path.as_str(), Some(service), method, &body)
                .await
        };
        let reply = result.map_err(|e| match e {
            zbus::Error::MethodError(name, msg, _) => CallError {
                name: name.to_string(),
                message: msg.unwrap_or_default(),
            },
            zbus::Error::FDO(e) => CallError {
                name: zbus::DBusError::name(&*e).to_string(),
                message: zbus::DBusError::description(&*e).unwrap_or_default().to_string(),
            },
            other => CallError {
                name: "nexus-hil.Transport".into(),
                message: other.to_string(),
            },
        })?;
        let body = reply.body();
        if body.signature().to_string().is_empty() {
            return Ok(Vec::new());
        }
        let s: zbus::wire::Structure = body.deserialize().map_err(|e| CallError {
            name: "nexus-hil.BadReply".into(),
            message: e.to_string(),
        })?;
        Ok(s.fields().iter().map(|v| (to_json(v), types_of(v))).collect())
    }
}

/// A dictionary key as a JSON object key: strings as they are, anything else rendered.
fn dict_key(k: &Variant<'_>) -> String {
    match to_json(k) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The D-Bus types inside a value, in the shape of its JSON: a dictionary's values by key
/// (`{"id": "u", ...}`), an array's items in a list, anything else as its signature.
pub fn types_of(v: &Variant<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Variant::Variant(inner) => J::from(inner.value_signature().to_string()),
        Variant::Array(a) => J::Array(a.inner().iter().map(types_of).collect()),
        Variant::Dict(d) => J::Object(d.iter().map(|(k, v)| (dict_key(k), types_of(v))).collect()),
        other => J::from(other.value_signature().to_string()),
    }
}

/// A step's text argument as a value of D-Bus type `t`.
pub fn convert(t: &str, a: &str) -> Result<Variant<'static>, Error> {
    let num = |what: &str| Error::Argument(format!("{a:?} is not a valid {what} (D-Bus type {t})"));
    Ok(match t {
        "b" => match a {
            "true" => Variant::Bool(true),
            "false" => Variant::Bool(false),
            _ => return Err(num("boolean (true or false)")),
        },
        "u" => Variant::U32(a.parse().map_err(|_| num("unsigned 32-bit number"))?),
        "i" => Variant::I32(a.parse().map_err(|_| num("32-bit number"))?),
        "t" => Variant::U64(a.parse().map_err(|_| num("unsigned 64-bit number"))?),
        "x" => Variant::I64(a.parse().map_err(|_| num("64-bit number"))?),
        "q" => Variant::U16(a.parse().map_err(|_| num("unsigned 16-bit number"))?),
        "n" => Variant::I16(a.parse().map_err(|_| num("16-bit number"))?),
        "y" => Variant::U8(a.parse().map_err(|_| num("byte"))?),
        "s" => Variant::from(a.to_string()),
        other => {
            return Err(Error::Argument(format!(
                "arguments of D-Bus type {other} cannot be given in a scenario yet"
            )))
        }
    })
}

/// A D-Bus value as JSON (dicts as objects, arrays and structs as lists).
pub fn to_json(v: &Variant<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Variant::U8(n) => J::from(*n),
        Variant::Bool(b) => J::from(*b),
        Variant::I16(n) => J::from(*n),
        Variant::U16(n) => J::from(*n),
        Variant::I32(n) => J::from(*n),
        Variant::U32(n) => J::from(*n),
        Variant::I64(n) => J::from(*n),
        Variant::U64(n) => J::from(*n),
        Variant::F64(n) => J::from(*n),
        Variant::Str(s) => J::from(s.as_str()),
        Variant::Signature(s) => J::from(s.to_string()),
        Variant::ObjectPath(p) => J::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(a) => J::Array(a.inner().iter().map(to_json).collect()),
        Variant::Dict(d) => J::Object(d.iter().map(|(k, v)| (dict_key(k), to_json(v))).collect()),
        Variant::Structure(s) => J::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_declared_types() {
        assert_eq!(convert("u", "12").unwrap(), Variant::U32(12));
        assert_eq!(convert("t", "12").unwrap(), Variant::U64(12));
        assert_eq!(convert("b", "true").unwrap(), Variant::Bool(true));
        assert!(convert("u", "-1").unwrap_err().to_string().contains("unsigned"));
        assert!(convert("b", "yes").unwrap_err().to_string().contains("true or false"));
    }
}
