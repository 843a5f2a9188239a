//! `ssh.run` (a command on the device as a user, its exit status and output checked and
//! captured) and `ssh.put` (a file written on the device as a user).

use std::time::Duration;

use super::{StepEnd, StepLog};
use crate::bench::record;
use crate::scenario::{family, SshEdit, SshPut, SshRestore, SshRun};
use crate::session::Session;
use crate::transport::ssh::sh_quote;

/// `ssh.run`.
/// Does a step of the shell family (commands and files over SSH).
pub async fn step(
    s: &mut Session<'_>,
    step: family::Shell<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Shell::SshRun(r) => run(s, r, timeout, log).await,
        family::Shell::SshPut(p) => put(s, p, timeout, log).await,
        family::Shell::SshEdit(e) => edit(s, e, timeout, log).await,
        family::Shell::SshRestore(r) => restore(s, r, timeout, log).await,
    }
}

pub async fn run(s: &mut Session<'_>, r: &SshRun, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
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
    // What the command made is the run's own, recorded before its output is judged: by the
    // lines it printed (`made snapshot ID`), and by the captured id when the step says `made`.
    let mut made = record::made_lines(&out.stdout);
    if !r.made.is_empty() {
        let id = captured(r, &out.stdout).ok().and_then(|v| v.parse::<u64>().ok());
        let Some(id) = id else {
            return Err(StepEnd::Failed(format!(
                "the step says the command made a {}, but its output has no id where `capture` reads it",
                r.made.join(" and a ")
            )));
        };
        made.extend(r.made.iter().filter_map(|m| record::Made::parse(m)).map(|m| (m, id)));
    }
    for (what, id) in made {
        s.record_made(what, id, &mut log.lines).await?;
    }
    let want = r.expect_exit.unwrap_or(0);
    if out.code != Some(want) {
        return Err(StepEnd::Failed(format!(
            "exit status {:?}, expected {want}: {}",
            out.code,
            out.stderr.trim()
        )));
    }
    for e in &r.expect_stdout {
        let e = s.subst(e);
        if !out.stdout.contains(&e) {
            return Err(StepEnd::Failed(format!("standard output does not contain {e:?}")));
        }
    }
    if let Some(v) = &r.capture {
        let value = captured(r, &out.stdout)?;
        s.vars.insert(v.clone(), value);
    }
    Ok(())
}

/// The value `capture` takes: standard output trimmed, or its `capture_word`-th word.
fn captured(r: &SshRun, stdout: &str) -> Result<String, StepEnd> {
    Ok(match r.capture_word {
        Some(n) => stdout
            .split_whitespace()
            .nth(n.saturating_sub(1))
            .ok_or_else(|| format!("the output has fewer than {n} words"))?
            .to_string(),
        None => stdout.trim().to_string(),
    })
}

/// `ssh.put`: the text (or the `source` file's) through `cat`, then `chmod`, then its size on
/// the device checked against what was sent.
pub async fn put(s: &mut Session<'_>, p: &SshPut, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
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
    // The file as it was (or its absence) is recorded on the device first, to be put back when
    // the scenario ends (a real device is left as found). The size read back on the device: a
    // write cut short there (full disk, dropped link) can still leave `cat` with exit 0.
    let write = format!("cat > {q} && chmod {mode} {q} && wc -c < {q}");
    let out = if user == "root" {
        let script = format!(
            "{}nh_file {q} || {{ echo 'cannot record the change first' >&2; exit 1; }}\n{write}",
            record::functions()
        );
        s.ssh("root", &script, Some(content.as_bytes()), timeout).await?
    } else {
        record_file(s, &path, None, timeout).await?;
        s.ssh(&user, &write, Some(content.as_bytes()), timeout).await?
    };
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!("cannot write {path}: {}", out.stderr.trim())));
    }
    Ok(check_written_size(&path, content.len(), &out.stdout)?)
}

/// Records `path` as it is now on the device (as root), before a step changes it; `restart`:
/// a unit restarted after the file is put back.
pub async fn record_file(s: &Session<'_>, path: &str, restart: Option<&str>, timeout: Duration) -> Result<(), StepEnd> {
    let script = format!(
        "{}nh_file {} {}",
        record::functions(),
        sh_quote(path),
        sh_quote(restart.unwrap_or(""))
    );
    let out = s.ssh("root", &script, None, timeout).await?;
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!(
            "cannot record {path} on the device before changing it ({}), so it was not changed: \
             is {} writable and the disk not full?",
            out.stderr.trim(),
            record::DIR
        )));
    }
    Ok(())
}

/// `ssh.edit`: the file recorded, then `sed -i` as root, then the unit restarted.
pub async fn edit(s: &mut Session<'_>, e: &SshEdit, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let path = s.subst(&e.path);
    let sed = s.subst(&e.sed);
    let restart = e.restart.as_ref().map(|u| s.subst(u));
    let q = sh_quote(&path);
    let exists = s.ssh("root", &format!("test -e {q}"), None, timeout).await?;
    if exists.code != Some(0) {
        if e.if_exists {
            log.lines
                .push(format!("no {path} on this device: nothing edited (if_exists)"));
            return Ok(());
        }
        return Err(StepEnd::Failed(format!(
            "{path} does not exist on the device (if_exists: true lets a device without it go on)"
        )));
    }
    record_file(s, &path, restart.as_deref(), timeout).await?;
    let mut cmd = format!("sed -i -e {} {q}", sh_quote(&sed));
    if let Some(u) = &restart {
        cmd.push_str(&format!(" && systemctl restart {}", sh_quote(u)));
    }
    log.lines.push(format!("recorded {path}, then as root: {cmd}"));
    let out = s.ssh("root", &cmd, None, timeout).await?;
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!("editing {path} failed: {}", out.stderr.trim())));
    }
    Ok(())
}

/// `ssh.restore`: the file put back as the record holds it, before the scenario ends.
pub async fn restore(s: &mut Session<'_>, r: &SshRestore, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let path = s.subst(&r.path);
    let out = s.ssh("root", &record::undo_script(Some(&path)), None, timeout).await?;
    log.lines.extend(out.stdout.lines().map(str::to_string));
    match out.code {
        Some(0) => Ok(()),
        Some(2) if r.if_exists => {
            log.lines
                .push(format!("nothing recorded for {path}: nothing to put back (if_exists)"));
            Ok(())
        }
        Some(2) => Err(StepEnd::Failed(format!(
            "nothing recorded for {path}: only a file that ssh.put or ssh.edit changed in this scenario can be restored"
        ))),
        _ => Err(StepEnd::Failed(format!(
            "{path} could not be put back: {}{}",
            out.stdout.trim(),
            out.stderr.trim()
        ))),
    }
}

/// Compares what `wc -c` printed last with the size that was sent.
fn check_written_size(path: &str, sent: usize, wc_stdout: &str) -> Result<(), String> {
    let last = wc_stdout.lines().last().unwrap_or("").trim();
    match last.parse::<u64>() {
        Ok(n) if n == sent as u64 => Ok(()),
        Ok(n) => Err(format!(
            "{path} holds {n} bytes on the device but {sent} were sent: the write was cut short \
             (is the device's disk full? see `df`) and the file there is incomplete"
        )),
        Err(_) => Err(format!(
            "cannot tell how much of {path} was written: `wc -c` printed {last:?}, expected a byte count \
             ({sent} bytes were sent)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_written_size;

    #[test]
    fn a_file_shorter_on_the_device_than_sent_is_an_error_with_both_sizes() {
        assert_eq!(check_written_size("/etc/x", 120, "120\n"), Ok(()));
        // BSD and busybox `wc` pad the count; a login banner may come first.
        assert_eq!(check_written_size("/etc/x", 120, "welcome\n     120\n"), Ok(()));
        let e = check_written_size("/etc/x", 120, "64\n").unwrap_err();
        assert!(
            e.contains("/etc/x") && e.contains("64 bytes") && e.contains("120 were sent"),
            "{e}"
        );
        let e = check_written_size("/etc/x", 120, "").unwrap_err();
        assert!(e.contains("120 bytes were sent"), "{e}");
    }
}
