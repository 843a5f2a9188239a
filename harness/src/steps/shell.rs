//! `ssh.run` (a command on the device as a user, its exit status and output checked and
//! captured) and `ssh.put` (a file written on the device as a user).

use std::time::Duration;

use super::StepLog;
use crate::scenario::{SshPut, SshRun};
use crate::session::Session;
use crate::transport::ssh::sh_quote;

/// `ssh.run`.
pub async fn run(s: &mut Session<'_>, r: &SshRun, timeout: Duration, log: &mut StepLog) -> Result<(), String> {
    let user = s.subst(&r.user);
    let command = s.subst(&r.command);
    log.lines.push(s.mask(&format!("ssh {user}: {command}")));
    let stdin = r.stdin.as_ref().map(|t| s.subst(t));
    let out = s
        .ssh(&user, &command, stdin.as_deref().map(str::as_bytes), timeout)
        .await?;
    log.lines.push(s.mask(&format!(
        "-> exit {:?}; stdout: {}; stderr: {}",
        out.code,
        out.stdout.trim(),
        out.stderr.trim()
    )));
    let want = r.expect_exit.unwrap_or(0);
    if out.code != Some(want) {
        return Err(format!(
            "exit status {:?}, expected {want}: {}",
            out.code,
            out.stderr.trim()
        ));
    }
    for e in &r.expect_stdout {
        let e = s.subst(e);
        if !out.stdout.contains(&e) {
            return Err(format!("standard output does not contain {e:?}"));
        }
    }
    if let Some(v) = &r.capture {
        let value = match r.capture_word {
            Some(n) => out
                .stdout
                .split_whitespace()
                .nth(n.saturating_sub(1))
                .ok_or_else(|| format!("the output has fewer than {n} words"))?
                .to_string(),
            None => out.stdout.trim().to_string(),
        };
        s.vars.insert(v.clone(), value);
    }
    Ok(())
}

/// `ssh.put`: the text (or the `source` file's) through `cat`, then `chmod`.
pub async fn put(s: &mut Session<'_>, p: &SshPut, timeout: Duration, log: &mut StepLog) -> Result<(), String> {
    let user = s.subst(&p.user);
    let path = s.subst(&p.path);
    let content = match (&p.content, &p.source) {
        (Some(c), _) => s.subst(c),
        (None, Some(src)) => {
            let f = s.scenario_dir.join(src);
            std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?
        }
        (None, None) => return Err("ssh.put has neither `content` nor `source`".into()),
    };
    let mode = p.mode.clone().unwrap_or_else(|| "0644".into());
    let q = sh_quote(&path);
    log.lines.push(format!(
        "ssh {user}: write {path} ({} bytes, mode {mode})",
        content.len()
    ));
    let out = s
        .ssh(
            &user,
            &format!("cat > {q} && chmod {mode} {q}"),
            Some(content.as_bytes()),
            timeout,
        )
        .await?;
    if out.code != Some(0) {
        return Err(format!("cannot write {path}: {}", out.stderr.trim()));
    }
    Ok(())
}
