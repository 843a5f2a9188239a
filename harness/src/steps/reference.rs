//! The step reference of `scenarios/README.md` held to the code: every step of the table
//! (`Step::NAMES`) has one row, each row's keys are the step's keys (`Step::keys`, read from its
//! struct), and the default time limits are `default_timeout`'s. A step added, a key renamed or
//! a default changed without its line fails here, naming the line to write. `nexus-hil steps`
//! prints the same facts from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::default_timeout;
use crate::scenario::{parse_duration, Step};

const README: &str = include_str!("../../../scenarios/README.md");

/// The rows of the README's step tables (`| step | keys | ...`): the step's name and its keys
/// cell.
fn rows(readme: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut in_steps = false;
    for line in readme.lines() {
        if line.starts_with("| step | keys |") {
            in_steps = true;
            continue;
        }
        if !line.starts_with('|') {
            in_steps = false;
            continue;
        }
        if !in_steps || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        if cells.len() >= 2 {
            rows.push((cells[0].trim_matches('`').to_string(), cells[1].to_string()));
        }
    }
    rows
}

/// The keys a keys cell names: each backticked word (`key` or `key: ...`), with whether it
/// stands outside parentheses (a key of its own) or inside (a note, such as a value or an
/// alternative key).
fn keys_in(cell: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let (mut depth, mut rest) = (0usize, cell);
    while let Some(c) = rest.chars().next() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '`' => {
                let end = rest[1..].find('`').map(|e| e + 1).unwrap_or(rest.len() - 1);
                let word = rest[1..end].split(':').next().unwrap_or("").trim();
                if !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                {
                    out.push((word.to_string(), depth == 0));
                }
                rest = &rest[end + 1..];
                continue;
            }
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The README's default time limits: `Every step takes `timeout` (default `60s`; `5m` for `a`,
/// `b` and `c`; ...; for `probe.latency` ...)`. `None`: the README says it depends (on the step).
fn documented_timeouts(readme: &str) -> (Duration, BTreeMap<String, Option<Duration>>) {
    let start = readme
        .find("Every step takes `timeout` (")
        .expect("the sentence on default time limits");
    let text = &readme[start + "Every step takes `timeout` (".len()..];
    let text = &text[..text.find(')').expect("the sentence's closing parenthesis")];
    let words = |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let mut default = None;
    let mut each = BTreeMap::new();
    for part in text.split(';').map(str::trim) {
        let w = words(part);
        if part.starts_with("default") {
            default = Some(parse_duration(&w[0]).unwrap());
        } else if part.starts_with("for ") {
            // `for `a` its ... plus `60s``: the step's own rule, in words.
            each.insert(w[0].clone(), None);
        } else {
            let d = parse_duration(&w[0]).unwrap_or_else(|e| panic!("{part:?}: {e}"));
            for name in &w[1..] {
                each.insert(name.clone(), Some(d));
            }
        }
    }
    (default.expect("`default` in the sentence on time limits"), each)
}

/// What the README's step tables get wrong: a step without exactly one row, a key not named, a
/// key named that the step does not take.
fn row_problems(readme: &str) -> Vec<String> {
    let rows = rows(readme);
    let mut problems = Vec::new();
    for name in Step::NAMES {
        let n = rows.iter().filter(|(r, _)| r == name).count();
        if n != 1 {
            problems.push(format!(
                "`{name}` has {n} rows in a step table of scenarios/README.md (one wanted)"
            ));
        }
    }
    for (name, cell) in &rows {
        let Some(keys) = Step::keys(name) else {
            problems.push(format!("scenarios/README.md has a row for `{name}`, which is no step"));
            continue;
        };
        let keys: BTreeSet<&str> = keys.iter().copied().filter(|k| *k != "timeout").collect();
        let named = keys_in(cell);
        let all: BTreeSet<&str> = named.iter().map(|(k, _)| k.as_str()).collect();
        for k in &keys {
            if !all.contains(k) {
                problems.push(format!(
                    "`{name}` takes `{k}`, which its row in scenarios/README.md does not name"
                ));
            }
        }
        for (k, own) in &named {
            if *own && !keys.contains(k.as_str()) && k != "timeout" {
                problems.push(format!(
                    "`{name}`'s row in scenarios/README.md names `{k}`, which the step does not take"
                ));
            }
        }
    }
    problems
}

/// Where the README's default time limits differ from `default_timeout`.
fn timeout_problems(readme: &str) -> Vec<String> {
    let (default, each) = documented_timeouts(readme);
    let mut problems = Vec::new();
    for name in Step::NAMES {
        let said = each.get(*name).copied().unwrap_or(Some(default));
        if said != default_timeout(name) {
            problems.push(format!(
                "`{name}`: scenarios/README.md says its default time limit is {said:?}, the code {:?}",
                default_timeout(name)
            ));
        }
    }
    for name in each.keys() {
        if !Step::NAMES.contains(&name.as_str()) {
            problems.push(format!(
                "the time limits in scenarios/README.md name `{name}`, which is no step"
            ));
        }
    }
    problems
}

#[test]
fn every_step_has_one_row_with_its_keys() {
    let problems = row_problems(README);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_default_time_limits_are_the_code_s() {
    let problems = timeout_problems(README);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The checks catch what they are for, each on the README changed the way it drifts.
#[test]
fn the_checks_fail_on_a_drifted_readme() {
    let one = |readme: &str, from: &str, to: &str| -> String {
        assert!(readme.contains(from), "{from:?}");
        readme.replace(from, to)
    };
    let missing_key = one(
        README,
        "| `scp.get` | `as`, `remote`, `local` |",
        "| `scp.get` | `as`, `remote` |",
    );
    assert_eq!(
        row_problems(&missing_key),
        ["`scp.get` takes `local`, which its row in scenarios/README.md does not name"]
    );
    let extra_key = one(
        README,
        "| `http.hold` | `connections`, ",
        "| `http.hold` | `connections`, `linger`, ",
    );
    assert_eq!(
        row_problems(&extra_key),
        ["`http.hold`'s row in scenarios/README.md names `linger`, which the step does not take"]
    );
    let no_row = README
        .lines()
        .filter(|l| !l.starts_with("| `scp.put` |"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        row_problems(&no_row),
        ["`scp.put` has 0 rows in a step table of scenarios/README.md (one wanted)"]
    );
    let wrong_default = one(README, "`30m` for `repeat`", "`20m` for `repeat`");
    assert_eq!(
        timeout_problems(&wrong_default).len(),
        1,
        "{:?}",
        timeout_problems(&wrong_default)
    );
    let forgotten = one(
        README,
        "`fault.power_cut` and `fault.replace_card`",
        "`fault.power_cut`",
    );
    assert_eq!(
        timeout_problems(&forgotten),
        ["`fault.replace_card`: scenarios/README.md says its default time limit is Some(60s), the code Some(300s)"]
    );
}
