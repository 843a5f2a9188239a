//! Scenario files: the `Scenario` model, reading one from text or a file (YAML errors turned
//! into `file:line:column` messages, then the checks), and finding the files of a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::{FromNodeError, LoadError, Node, Spanned};
use serde::Deserialize;

use crate::check::Checker;
use crate::vars::SEED;
use crate::{duration, size, ScenarioError, Step};

/// The known tags and what they mean to the runner.
pub const PORTABLE: &str = "portable";
pub const EMULATOR_ONLY: &str = "emulator-only";

/// What a scenario needs of its target, beyond a device that answers: it is skipped before its
/// first step, with the reason, on a target that lacks any of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// The harness can cut the device's power (a stand-in, a bench with `[device.power]`).
    Power,
    /// The device is the harness's own and thrown away after the scenario (the emulator, the
    /// stand-in): the scenario changes it in ways no record can put back.
    Throwaway,
}

impl Need {
    pub fn name(self) -> &'static str {
        match self {
            Need::Power => "power",
            Need::Throwaway => "throwaway",
        }
    }
}

/// One scenario: a named flow of steps against one device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `portable` (runs on real devices too) or `emulator-only`, plus any of the user's own.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Variables, used in steps as `${name}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Time limit of the whole scenario; `time_limit()` gives it with its default.
    #[serde(default, deserialize_with = "duration::optional")]
    pub timeout: Option<Duration>,
    /// The scenario must run: a skip (a step the target cannot do) fails the run.
    #[serde(default)]
    pub must_run: bool,
    /// What the target must offer (`needs: [power, throwaway]`); see [`Need`].
    #[serde(default)]
    pub needs: Vec<Need>,
    /// Bytes of home-automation content the scenario needs on the SD card of an emulator or
    /// stand-in (`card_content: 256MiB`); a run's card is the largest its scenarios and
    /// `--card-content` ask for. Unset: the run's default (32 MiB on the emulator).
    #[serde(default, deserialize_with = "size::optional")]
    pub card_content: Option<u64>,
    pub steps: Vec<Spanned<Step>>,
    #[serde(skip)]
    pub file: PathBuf,
}

impl Scenario {
    /// Loads and checks one file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let err = |(line, column): (usize, usize), message: String| ScenarioError {
            file: file.clone(),
            line,
            column,
            message,
        };
        let root =
            marked_yaml::parse_yaml(0, text).map_err(|e| err(load_error_mark(&e), format!("not valid YAML: {e}")))?;
        let mut s: Scenario = marked_yaml::from_node(&root).map_err(|e| {
            let (at, message) = field_error(&root, &e);
            err(at, message)
        })?;
        s.file = path.to_owned();
        if s.steps.is_empty() {
            return Err(err(
                (1, 1),
                "the scenario has no steps; add at least one under `steps:`".into(),
            ));
        }
        if s.vars.contains_key(SEED) {
            let trail = follow(&root, &format!("vars.{SEED}"));
            return Err(err(
                position(&trail, true).unwrap_or((1, 1)),
                format!("`vars:` defines `{SEED}`, which is the run's: ${{{SEED}}} is the try's seed (nexus-hil run --seed); name the variable otherwise"),
            ));
        }
        let mut defined: BTreeSet<String> = s.vars.keys().cloned().collect();
        defined.insert(SEED.to_string());
        let checker = Checker {
            file: &file,
            dir: path.parent().unwrap_or(Path::new(".")),
        };
        checker.steps(&s.steps, &mut defined)?;
        if !s.needs.contains(&Need::Throwaway) {
            throwaway_only(&s.steps).map_err(|(at, m)| err(at, m))?;
        }
        Ok(s)
    }

    /// The scenario needs this of its target.
    pub fn needs(&self, need: Need) -> bool {
        self.needs.contains(&need)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The scenario's `timeout`, 10 minutes if it gives none.
    pub fn time_limit(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(600))
    }
}

/// The first `ssh.run` (inside `repeat`s too) whose command changes a device in a way no record
/// can put back, in a scenario that did not say it needs a throwaway device.
fn throwaway_only(steps: &[Spanned<Step>]) -> Result<(), ((usize, usize), String)> {
    for step in steps {
        let at = step.span().start().map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        match &**step {
            Step::SshRun(r) => {
                if let Some(what) = crate::throwaway_change(&r.command) {
                    return Err((
                        at,
                        format!(
                            "ssh.run: the command {what}, which no record can put back on someone's device: \
                             change files with ssh.put or ssh.edit, snapshots and backups through dbus.call, \
                             or declare `needs: [throwaway]` so the scenario runs only on a device the harness \
                             throws away (the emulator, the stand-in)"
                        ),
                    ));
                }
            }
            Step::DbusCall(c) if c.method == "Activate" && c.expect_error.is_none() => {
                return Err((
                    at,
                    "dbus.call: Activate switches the device to another state at its next boot, which no record \
                     puts back: declare `needs: [throwaway]` so the scenario runs only on the emulator or the stand-in"
                        .into(),
                ));
            }
            Step::Repeat(r) => throwaway_only(&r.steps)?,
            _ => {}
        }
    }
    Ok(())
}

/// Where a value did not fit the model and what is wrong, naming the step and the key, as in
/// ssh.run: \`timeout\`: "soon" is not a duration.
fn field_error(root: &Node, e: &FromNodeError) -> ((usize, usize), String) {
    let inner: &marked_yaml::Error = e;
    let unknown_field = matches!(inner, marked_yaml::Error::UnknownFieldError(..));
    let trail = follow(root, e.path().unwrap_or(""));
    let at = position(&trail, unknown_field).or_else(|| e.start_mark().map(|m| (m.line(), m.column())));
    let message = inner.to_string();
    if let Some(steps) = unknown_step(&message) {
        return (at.unwrap_or((1, 1)), steps);
    }
    let mut keys: Vec<&str> = trail.iter().filter_map(|(k, _)| k.map(|k| k.as_str())).collect();
    if unknown_field {
        keys.pop();
    }
    let (kind, fields) = match keys.iter().rposition(|k| Step::NAMES.contains(k)) {
        Some(i) => (Some(keys[i]), &keys[i + 1..]),
        None => (None, &keys[..]),
    };
    let mut prefix = String::new();
    if let Some(kind) = kind {
        prefix = format!("{kind}: ");
    }
    if !fields.is_empty() {
        prefix.push_str(&format!("`{}`: ", fields.join(".")));
    }
    (at.unwrap_or((1, 1)), format!("{prefix}{message}"))
}

/// Where to show a mistake at the end of `trail`: a value where it is written; a map or list
/// (a step missing a key, an unknown step, an unknown key) at the key that names it.
fn position(trail: &[(Option<&MarkedScalarNode>, &Node)], unknown_field: bool) -> Option<(usize, usize)> {
    let mark = |span: &marked_yaml::Span| span.start().map(|m| (m.line(), m.column()));
    let &(key, node) = trail.last()?;
    match (key, node) {
        (Some(key), _) if unknown_field => mark(key.span()),
        (_, Node::Scalar(_)) => mark(node.span()),
        (Some(key), _) => mark(key.span()),
        (None, Node::Mapping(m)) => m.keys().next().and_then(|k| mark(k.span())),
        (None, Node::Sequence(_)) => mark(node.span()),
    }
}

/// The nodes a serde path (`steps[0].ssh.run.timeout`, as marked_yaml renders it) leads
/// through, each with the key it was reached by (`None` for the root and list items); stops
/// where the YAML does not go on.
fn follow<'n>(root: &'n Node, path: &str) -> Vec<(Option<&'n MarkedScalarNode>, &'n Node)> {
    let mut trail = vec![(None, root)];
    let mut rest = path;
    while let Some(&(_, node)) = trail.last() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            break;
        }
        let next = if let Some(after) = rest.strip_prefix('[') {
            let Some((index, after)) = after.split_once(']') else {
                break;
            };
            let item = index.parse().ok().and_then(|i: usize| node.as_sequence()?.get(i));
            item.map(|item| ((None, item), after))
        } else {
            // Step names hold dots (`ssh.run`): take the longest key the path goes on with.
            let ends_key = |k: &str| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
            };
            let found = node.as_mapping().and_then(|m| {
                m.iter()
                    .filter(|(k, _)| ends_key(k.as_str()))
                    .max_by_key(|(k, _)| k.as_str().len())
            });
            found.map(|(k, v)| ((Some(k), v), &rest[k.as_str().len()..]))
        };
        let Some((step, after)) = next else { break };
        trail.push(step);
        rest = after;
    }
    trail
}

/// Serde's wording about an unknown variant of `Step`, said as "step" with the list of steps.
fn unknown_step(msg: &str) -> Option<String> {
    if !msg.contains("unknown variant") {
        return None;
    }
    let start = msg.find('`')? + 1;
    let name = &msg[start..start + msg[start..].find('`')?];
    Some(explain(name))
}

/// The message for a step name the table does not have.
fn explain(name: &str) -> String {
    format!(
        "unknown step `{name}`; the steps are {} (see scenarios/README.md)",
        Step::NAMES.join(", ")
    )
}

fn load_error_mark(e: &LoadError) -> (usize, usize) {
    use marked_yaml::LoadError as L;
    let m = match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => Some(*m),
        _ => None,
    };
    m.map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

/// Finds scenario files: each path is a file, or a folder whose `*.yaml` files are taken in name order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(format!("{}: no such scenario file or folder", p.display()));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> ScenarioError {
        Scenario::parse(text, Path::new("t.yaml")).unwrap_err()
    }

    #[test]
    fn the_seed_is_known_in_every_step_and_no_scenario_s_own() {
        let ok = Scenario::parse(
            "name: x\nsteps:\n  - ssh.run: {as: nexus, command: 'test $(( ${seed} % 3 )) -ne 0'}\n",
            Path::new("t.yaml"),
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        let e = error_of("name: x\nvars:\n  seed: 7\nsteps:\n  - ssh.run: {as: nexus, command: id}\n");
        assert_eq!((e.line, e.column), (3, 3), "at the variable: {e}");
        assert!(e.message.contains("`seed`, which is the run's"), "{e}");
    }

    #[test]
    fn unknown_step_lists_the_table() {
        let e = error_of("name: x\nsteps:\n  - nope: {}\n");
        let list = e
            .message
            .split_once("the steps are ")
            .and_then(|(_, l)| l.split_once(" (see"));
        let names: Vec<&str> = list.map_or(vec![], |(l, _)| l.split(", ").collect());
        assert_eq!(names, Step::NAMES, "{e}");
        assert_eq!((e.line, e.column), (3, 5), "at the step's name: {e}");
    }

    #[test]
    fn duration_mistakes_name_step_and_key_at_the_value() {
        let e = error_of("name: x\nsteps:\n  - repeat:\n      times: 2\n      steps:\n        - fault.cut_network:\n            after: 1s\n            for: soon\n");
        assert_eq!((e.line, e.column), (8, 18), "{e}");
        assert!(
            e.message
                .starts_with("fault.cut_network: `for`: \"soon\" is not a duration"),
            "{e}"
        );
        let e = error_of("name: x\ntimeout: 10\nsteps:\n  - ssh.run: {as: root, command: id}\n");
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.starts_with("`timeout`: \"10\" has no unit"), "{e}");
        let e = error_of("name: x\nsteps:\n  - probe.latency:\n      name: a\n      settle: 1s\n");
        assert_eq!((e.line, e.column), (3, 5), "{e}");
        assert_eq!(e.message, "probe.latency: missing field `for`");
    }

    #[test]
    fn time_limit_is_the_timeout_or_ten_minutes() {
        let with = "name: x\ntimeout: 90s\nsteps:\n  - ssh.run: {as: root, command: id, timeout: 2m}\n";
        let s = Scenario::parse(with, Path::new("t.yaml")).unwrap();
        assert_eq!(s.time_limit(), Duration::from_secs(90));
        assert_eq!(s.steps[0].timeout(), Some(Duration::from_secs(120)));
        let s = Scenario::parse(
            "name: x\nsteps:\n  - ssh.run: {as: root, command: id}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(s.time_limit(), Duration::from_secs(600));
    }

    #[test]
    fn a_change_no_record_puts_back_needs_a_throwaway_device() {
        let write = "name: x\nsteps:\n  - ssh.run: {as: root, command: id}\n  - ssh.run: {as: root, command: 'echo x > /broot/data/x'}\n";
        let e = error_of(write);
        assert_eq!((e.line, e.column), (4, 12), "{e}");
        assert!(
            e.message.contains("writes /broot/data/x") && e.message.contains("needs: [throwaway]"),
            "{e}"
        );
        let s = Scenario::parse(
            &write.replace("name: x\n", "name: x\nneeds: [throwaway]\n"),
            Path::new("t.yaml"),
        )
        .unwrap();
        assert!(s.needs(Need::Throwaway) && !s.needs(Need::Power));
        // Inside a repeat too, and an Activate that is to succeed.
        let e = error_of("name: x\nsteps:\n  - repeat:\n      times: 2\n      steps:\n        - ssh.run: {as: root, command: 'systemctl stop nexus-automation'}\n");
        assert_eq!(e.line, 6, "{e}");
        let activate = "name: x\nsteps:\n  - dbus.call: {as: root, service: tech.noreya.Snapshot1, method: Activate, args: ['1']}\n";
        assert!(error_of(activate).message.contains("Activate switches the device"));
        let denied = activate.replace(
            "args: ['1']",
            "args: ['1'], expect_error: org.freedesktop.DBus.Error.AccessDenied",
        );
        Scenario::parse(&denied, Path::new("t.yaml")).unwrap();
        let e = error_of("name: x\nneeds: [wings]\nsteps:\n  - ssh.run: {as: root, command: id}\n");
        assert!(e.message.contains("wings"), "{e}");
    }

    #[test]
    fn card_content_is_a_size_and_its_mistakes_point_at_the_value() {
        let s = Scenario::parse(
            "name: x\ncard_content: 256MiB\nsteps:\n  - ssh.run: {as: root, command: id}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(s.card_content, Some(256 << 20));
        let s = Scenario::parse(
            "name: x\nsteps:\n  - ssh.run: {as: root, command: id}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(s.card_content, None);
        let e = error_of("name: x\ncard_content: 256MB\nsteps:\n  - ssh.run: {as: root, command: id}\n");
        assert_eq!((e.line, e.column), (2, 15), "{e}");
        assert!(e.message.starts_with("`card_content`: \"256MB\": unknown unit"), "{e}");
    }

    #[test]
    fn browser_step_mistakes_point_at_the_step_or_the_value() {
        let e =
            error_of("name: x\nsteps:\n  - browser.open: {path: /}\n  - browser.click:\n      selector: '@log in'\n");
        assert_eq!(e.line, 4, "at the step: {e}");
        assert!(e.message.starts_with("browser.click: selector \"@log in\""), "{e}");
        let e = error_of("name: x\nsteps:\n  - browser.wait_for:\n      selector: '#p'\n      gone: maybe\n");
        assert_eq!((e.line, e.column), (5, 13), "{e}");
        assert!(e.message.starts_with("browser.wait_for: `gone`: "), "{e}");
        let e = error_of("name: x\nsteps:\n  - browser.read:\n      selector: '#p'\n");
        assert_eq!(e.message, "browser.read: missing field `capture`", "{e}");
        let e = error_of("name: x\nsteps:\n  - browser.fill: {selector: '#u', value: '${who}'}\n");
        assert!(e.message.contains("unknown variable ${who}"), "{e}");
        let e = error_of("name: x\nsteps:\n  - browser.click: {selector: '#u', text: a}\n");
        assert_eq!((e.line, e.column), (3, 37), "at the key: {e}");
        assert!(e.message.starts_with("browser.click: Unknown field `text`"), "{e}");
        let ok = "name: x\nsteps:\n  - browser.read: {selector: '@backup_password', capture: pw, secret: true}\n  - gpg.decrypt: {file: b.gpg, password: '${pw}', output: b.tar}\n";
        assert!(Scenario::parse(ok, Path::new("t.yaml")).is_ok());
    }

    #[test]
    fn follow_takes_keys_with_dots_whole() {
        let root = marked_yaml::parse_yaml(0, "steps:\n  - ssh.run: {as: root}\n  - ssh: {run.x: 1}\n").unwrap();
        let keys = |path| -> Vec<String> {
            follow(&root, path)
                .iter()
                .filter_map(|(k, _)| k.map(|k| k.as_str().to_string()))
                .collect()
        };
        assert_eq!(keys("steps[0].ssh.run.as"), ["steps", "ssh.run", "as"]);
        assert_eq!(keys("steps[1].ssh.run.x"), ["steps", "ssh", "run.x"]);
        assert_eq!(keys("steps[7].ssh.run"), ["steps"], "stops where the YAML does");
        assert_eq!(follow(&root, "").len(), 1);
    }
}
