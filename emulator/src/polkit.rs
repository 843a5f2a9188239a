//! Who may call what: every D-Bus call asks an [`Authorizer`] about the action
//! `<interface>.<Method>` before anything changes. On the device that is polkitd; in unit tests a
//! fixed set of allowed actions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use nexus_contract::paths::{PKLA_DIR, VENDOR_PKLA};
use zbus::Connection;
use zbus::Variant as Value;

use crate::error::{NexusError, NexusResult};

/// The nine polkit actions the daemon checks, one per method.
pub use nexus_contract::names::ACTIONS;

/// Decides whether the sender of a call may perform an action.
#[derive(Debug, Clone)]
pub enum Authorizer {
    /// Ask polkitd on the system bus (`CheckAuthorization`, subject = the caller's bus name).
    Polkit(Connection),
    /// Allow exactly these actions, whoever calls (for tests over peer-to-peer connections).
    Fixed(Arc<Mutex<HashSet<String>>>),
}

impl Authorizer {
    /// A fixed authorizer allowing `actions`; change it later through [`Authorizer::set_allowed`].
    pub fn fixed<'a>(actions: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Fixed(Arc::new(Mutex::new(actions.into_iter().map(str::to_owned).collect())))
    }

    /// Replaces the allowed actions of a fixed authorizer.
    pub fn set_allowed<'a>(&self, actions: impl IntoIterator<Item = &'a str>) {
        if let Self::Fixed(set) = self {
            *set.lock().unwrap_or_else(|p| p.into_inner()) = actions.into_iter().map(str::to_owned).collect();
        }
    }

    /// Ok when `sender` may perform `action`; `AccessDenied` naming the action otherwise.
    pub async fn check(&self, sender: Option<&str>, action: &str) -> NexusResult<()> {
        let denied = || {
            NexusError::AccessDenied(format!(
                "not authorized for {action}; an administrator can grant it in a polkit rule or in {PKLA_DIR}/{VENDOR_PKLA}"
            ))
        };
        match self {
            Self::Fixed(set) => {
                if set.lock().unwrap_or_else(|p| p.into_inner()).contains(action) {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
            Self::Polkit(conn) => {
                let Some(sender) = sender else {
                    return Err(denied());
                };
                let mut subject_details: HashMap<&str, Value<'_>> = HashMap::new();
                subject_details.insert("name", Value::from(sender));
                let subject = ("system-bus-name", subject_details);
                let details: HashMap<&str, &str> = HashMap::new();
                let reply = conn
                    .call_method(
                        Some("org.freedesktop.PolicyKit1"),
                        "/org/freedesktop/PolicyKit1/Authority",
                        Some("org.freedesktop.PolicyKit1.Authority"),
                        "CheckAuthorization",
                        &(subject, action, details, 0u32, ""),
                    )
                    .await
                    .map_err(|e| {
                        tracing::error!(action, "polkit check failed: {e}");
                        NexusError::AccessDenied(format!(
                            "cannot check authorization for {action} with polkit ({e}); make sure polkitd is running"
                        ))
                    })?;
                let (allowed, _challenge, _details): (bool, bool, HashMap<String, String>) =
                    reply.body().deserialize().map_err(|e| {
                        NexusError::AccessDenied(format!("polkit gave an unreadable answer for {action}: {e}"))
                    })?;
                if allowed {
                    Ok(())
                } else {
                    tracing::info!(action, sender, "refused by polkit");
                    Err(denied())
                }
            }
        }
    }
}
