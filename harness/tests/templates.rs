//! The CI templates in ci/templates: each parses as YAML, has the shape its system needs (a
//! matrix or `parallel:` or an Indexed Job mapped to --partition, reports kept, a merge), and
//! every nexus-hil command it calls exists with the flags it passes (checked against the
//! built binary's --help), as does every ci/ script it runs. The checker is shown catching a
//! flag that does not exist.

use std::path::Path;
use std::process::Command;

use marked_yaml::Node;

fn template(name: &str) -> (String, Node) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/templates").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let node = marked_yaml::parse_yaml(0, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (text, node)
}

/// The node at a path of mapping keys and sequence indexes ("jobs.suite.steps.0").
fn at<'a>(node: &'a Node, path: &str) -> &'a Node {
    path.split('.').fold(node, |n, key| {
        match key.parse::<usize>() {
            Ok(i) => n.as_sequence().and_then(|s| s.get_node(i)),
            Err(_) => n.as_mapping().and_then(|m| m.get_node(key)),
        }
        .unwrap_or_else(|| panic!("no {key} in {path}"))
    })
}

fn scalar<'a>(node: &'a Node, path: &str) -> &'a str {
    at(node, path).as_scalar().map(|s| s.as_str()).unwrap_or_default()
}

/// Every scalar in the tree (the shell lines are among them).
fn scalars(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Scalar(s) => out.push(s.as_str().to_string()),
        Node::Sequence(s) => s.iter().for_each(|n| scalars(n, out)),
        Node::Mapping(m) => m.iter().for_each(|(_, n)| scalars(n, out)),
    }
}

/// Each `nexus-hil` command line in `shell` (continuations joined): the words after it and
/// its flags.
fn invocations(shell: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let joined = shell.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut words = line.split_whitespace().skip_while(|w| !w.ends_with("nexus-hil"));
        if words.next().is_none() {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        let args: Vec<String> = rest
            .iter()
            .take_while(|w| !w.starts_with('-'))
            .map(|w| w.to_string())
            .collect();
        let flags: Vec<String> = rest
            .iter()
            .filter(|w| w.starts_with("--"))
            .map(|w| w.split('=').next().unwrap().trim_end_matches(';').to_string())
            .collect();
        out.push((args, flags));
    }
    out
}

/// `nexus-hil PATH --help`: its text, the subcommands it lists, and whether one is required.
fn help(path: &[String]) -> (String, Vec<String>, bool) {
    let o = Command::new(env!("CARGO_BIN_EXE_nexus-hil"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let commands = text
        .split("Commands:\n")
        .nth(1)
        .map(|c| {
            c.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| *w != "help")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let usage = text.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
    let required = usage.contains("<COMMAND>");
    (text, commands, required)
}

/// What is wrong with the nexus-hil commands and ci/ scripts of `shells`, if anything.
fn problems(shells: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut calls = 0;
    for shell in shells {
        for (args, flags) in invocations(shell) {
            calls += 1;
            // Down the subcommands as far as the words name them.
            let mut path: Vec<String> = Vec::new();
            let (mut text, mut commands, mut required) = help(&path);
            let mut missing = None;
            for w in &args {
                if commands.contains(w) {
                    path.push(w.clone());
                    (text, commands, required) = help(&path);
                } else {
                    if required {
                        missing = Some(w.clone());
                    }
                    break;
                }
            }
            if let Some(w) = missing.or_else(|| (required && path.len() < 2).then(|| "(none)".into())) {
                out.push(format!("nexus-hil {} {w} does not exist", path.join(" ")));
                continue;
            }
            for f in flags {
                if !text.contains(&format!("{f} ")) && !text.contains(&format!("{f}\n")) {
                    out.push(format!("nexus-hil {} has no {f}", path.join(" ")));
                }
            }
        }
        for script in shell
            .split_whitespace()
            .filter(|w| w.starts_with("ci/") || w.starts_with("\"$(ci/"))
        {
            let name = script.trim_start_matches("\"$(").trim_end_matches(")\"");
            if !Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).exists() {
                out.push(format!("{name} does not exist"));
            }
        }
    }
    if calls == 0 {
        out.push("no nexus-hil command at all".into());
    }
    out
}

fn shells(node: &Node) -> Vec<String> {
    let mut all = Vec::new();
    scalars(node, &mut all);
    all.retain(|s| s.contains("nexus-hil ") || s.contains("ci/"));
    all
}

#[test]
fn github_actions_runs_a_matrix_of_shards_merges_them_and_checks_the_history() {
    let (text, y) = template("github-actions.yml");
    assert_eq!(problems(&shells(&y)), Vec::<String>::new());
    let parts = at(&y, "jobs.suite.strategy.matrix.part").as_sequence().unwrap().len();
    assert_eq!(
        scalar(&y, "jobs.suite.env.PARTS"),
        parts.to_string(),
        "the matrix and PARTS disagree"
    );
    assert!(text.contains("--partition ${{ matrix.part }}/${{ env.PARTS }}"));
    assert!(text.contains("actions/upload-artifact") && text.contains("nexus-hil report merge"));
    assert_eq!(scalar(&y, "jobs.merge.needs"), "suite");
    assert!(text.contains("actions/cache/save") && text.contains("history check --fail-on-regression"));
}

#[test]
fn gitlab_ci_maps_its_parallel_jobs_to_partitions_with_junit_reports() {
    let (text, y) = template("gitlab-ci.yml");
    assert_eq!(problems(&shells(&y)), Vec::<String>::new());
    assert_eq!(scalar(&y, "nexus-hil-suite.parallel"), "3");
    assert!(text.contains("--partition \"$CI_NODE_INDEX/$CI_NODE_TOTAL\""));
    assert_eq!(
        scalar(&y, "nexus-hil-suite.artifacts.reports.junit"),
        "target/nexus-hil/shard-*/junit.xml"
    );
    assert_eq!(
        scalar(&y, "nexus-hil-report.artifacts.reports.junit"),
        "target/nexus-hil/merged/junit.xml"
    );
}

#[test]
fn the_kubernetes_indexed_job_maps_its_index_to_a_partition_on_the_nodes_dev() {
    let (text, y) = template("kubernetes-indexed-job.yaml");
    assert_eq!(problems(&shells(&y)), Vec::<String>::new());
    assert_eq!(scalar(&y, "spec.completionMode"), "Indexed");
    assert_eq!(
        scalar(&y, "spec.completions"),
        scalar(&y, "spec.template.spec.containers.0.env.0.value")
    );
    assert_eq!(
        scalar(&y, "spec.template.spec.containers.0.securityContext.privileged"),
        "true"
    );
    assert_eq!(scalar(&y, "spec.template.spec.volumes.0.hostPath.path"), "/dev");
    assert!(text.contains("part=$((JOB_COMPLETION_INDEX + 1))") && text.contains("--partition \"$part/$PARTS\""));
}

#[test]
fn the_checker_catches_a_flag_or_command_that_does_not_exist() {
    let bad = vec![
        "target/release/nexus-hil run scenarios --partition 1/2 --no-such-flag".to_string(),
        "nexus-hil history forecast".to_string(),
        "eval \"$(ci/no-such-script)\"".to_string(),
    ];
    assert_eq!(
        problems(&bad),
        [
            "nexus-hil run has no --no-such-flag",
            "nexus-hil history forecast does not exist",
            "ci/no-such-script does not exist"
        ]
    );
}
