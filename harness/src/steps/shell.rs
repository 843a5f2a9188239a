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

/// `ssh.put`: the text (or the `source` file's) through `cat`, then `chmod`, then its size on
/// the device checked against what was sent.
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
    // A file that was there is kept aside first, to be put back when the scenario ends (a real
    // device is left as found). The size read back on the device: a write cut short there (full
    // disk, dropped link) can still leave `cat` with exit 0.
    let saved = sh_quote(&format!("{path}.nexus-hil-saved"));
    let out = s
        .ssh(
            &user,
            &format!(
                "if [ -e {q} ] && [ ! -e {saved} ]; then cp -p {q} {saved} && echo existed; fi; \
                 cat > {q} && chmod {mode} {q} && wc -c < {q}"
            ),
            Some(content.as_bytes()),
            timeout,
        )
        .await?;
    if out.code != Some(0) {
        return Err(format!("cannot write {path}: {}", out.stderr.trim()));
    }
    if !s.made.files.iter().any(|(p, _)| *p == path) {
        let existed = out.stdout.lines().any(|l| l == "existed");
        s.made.files.push((path.clone(), existed));
    }
    check_written_size(&path, content.len(), &out.stdout)
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
