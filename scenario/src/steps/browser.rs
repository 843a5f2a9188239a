//! Steps that drive the device's web page in a real browser: open a page, click, fill, read a
//! text into a variable, wait for an element, download through the page, screenshot.
//!
//! A selector is a CSS selector, or `@key`: the target's selector of that name (the emulator's
//! built-in set, or `[device.ui.selectors]` in targets.toml for a real device).

use std::time::Duration;

use serde::Deserialize;

use super::{opt, StepSpec};
use crate::duration;

/// Open a page: `path` is relative to the target's web address (`https://HOST:PORT`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserOpen {
    pub path: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserOpen {
    fn texts(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn check(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!(
                "path {:?}: give the path on the target, starting with `/`",
                self.path
            ));
        }
        Ok(())
    }
}

/// Click an element (waits for it to be there, up to the step's timeout).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserClick {
    pub selector: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserClick {
    fn texts(&self) -> Vec<&str> {
        vec![&self.selector]
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)
    }
}

/// Type a value into a field (cleared first); a `secret` value never reaches a report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserFill {
    pub selector: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserFill {
    fn texts(&self) -> Vec<&str> {
        vec![&self.selector, &self.value]
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)
    }
}

/// Read an element's text (or one of its attributes) into a variable; a `secret` one (a
/// password shown on the page) is hidden in every report from then on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserRead {
    pub selector: String,
    pub capture: String,
    pub attribute: Option<String>,
    #[serde(default)]
    pub secret: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserRead {
    fn texts(&self) -> Vec<&str> {
        let mut t = vec![self.selector.as_str()];
        t.extend(opt(&self.attribute));
        t
    }

    fn captures(&self) -> Option<&str> {
        Some(&self.capture)
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)?;
        check_variable(&self.capture)
    }
}

/// Wait until an element is shown, or with `gone: true` until none is shown, up to the
/// step's timeout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserWaitFor {
    pub selector: String,
    #[serde(default)]
    pub gone: bool,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserWaitFor {
    fn texts(&self) -> Vec<&str> {
        vec![&self.selector]
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)
    }
}

/// Click a link or button that downloads a file, as a user would, and save the file in the
/// scenario's work folder as `save` once the browser has finished it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserDownload {
    pub selector: String,
    pub save: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserDownload {
    fn texts(&self) -> Vec<&str> {
        vec![&self.selector, &self.save]
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)?;
        check_file_name("save", &self.save)
    }
}

/// Save a PNG of the page as `NAME.png` in the work folder; the report shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserScreenshot {
    pub name: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserScreenshot {
    fn texts(&self) -> Vec<&str> {
        vec![&self.name]
    }

    fn check(&self) -> Result<(), String> {
        check_file_name("name", &self.name)
    }
}

/// Log in to the page with the target's admin account: fills `@username` and `@password`,
/// clicks `@login`. The account is the target's: the inventory's `[device.ui] user` and
/// `password_file` (a file on the harness's machine) for a real device, the emulator's own admin
/// (its password read from the device) for the emulator and the stand-in. The password is
/// never shown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserLogin {
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserLogin {}

/// `value` must be nowhere the browser keeps things: the page's source and address, its
/// cookies (HttpOnly ones too), localStorage, sessionStorage, or any file of its profile.
/// For a password read from the page earlier (`${backup_password}`): shown once, kept nowhere.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserExpectAbsent {
    pub value: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserExpectAbsent {
    fn texts(&self) -> Vec<&str> {
        vec![&self.value]
    }
}

/// An element's text must contain `contains` (waits for it up to the step's timeout).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserExpectText {
    pub selector: String,
    pub contains: String,
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
}

impl StepSpec for BrowserExpectText {
    fn texts(&self) -> Vec<&str> {
        vec![&self.selector, &self.contains]
    }

    fn check(&self) -> Result<(), String> {
        check_selector(&self.selector)
    }
}

/// A selector is a CSS selector or `@key` of the target's selector set.
fn check_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("`selector` is empty: give a CSS selector or `@key` of the target's selector set".into());
    }
    if let Some(key) = selector.strip_prefix('@') {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "selector {selector:?}: a key of the target's selector set is `@` and letters, digits or `_`, e.g. `@login`"
            ));
        }
    }
    Ok(())
}

/// A captured variable's name, as later steps write it in `${...}`.
fn check_variable(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "capture {name:?}: name the variable with letters, digits or `_` (used as `${{name}}`)"
        ));
    }
    Ok(())
}

/// A file of the work folder: a plain name or a relative path that stays inside it.
fn check_file_name(key: &str, name: &str) -> Result<(), String> {
    let escapes = name.starts_with('/') || name.split('/').any(|p| p == "..");
    if name.is_empty() || escapes {
        return Err(format!(
            "`{key}` {name:?}: name a file inside the scenario's work folder (relative, no `..`)"
        ));
    }
    Ok(())
}
