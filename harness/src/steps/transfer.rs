//! Getting files off the device as its owner would: `http.get` (HTTPS with the CA pinned,
//! resumed with Range requests when asked), `http.hold` (connections held open, idle or
//! slowloris), `scp.get` and `rsync.pull`; and putting files back on it with `scp.put`.

use std::time::{Duration, Instant};

use super::{StepEnd, StepLog};
use crate::scenario::{family, HttpGet, HttpHold, RsyncPull, ScpGet, ScpPut};
use crate::session::Session;
use crate::transport::https;
use crate::transport::ssh::{run_local, sh_quote};

/// `http.get`.
/// Does a step of the transfer family (HTTPS, scp, rsync).
pub async fn step(
    s: &mut Session<'_>,
    step: family::Transfer<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Transfer::HttpGet(g) => http_get(s, g, timeout, log).await,
        family::Transfer::HttpHold(h) => http_hold(s, h, timeout, log).await,
        family::Transfer::ScpGet(g) => scp_get(s, g, timeout, log).await,
        family::Transfer::ScpPut(p) => scp_put(s, p, timeout, log).await,
        family::Transfer::RsyncPull(r) => rsync_pull(s, r, timeout, log).await,
    }
}

pub async fn http_get(s: &mut Session<'_>, g: &HttpGet, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let path = s.subst(&g.path);
    let save = g.save.as_ref().map(|f| s.local(f));
    let method = g.method.clone().unwrap_or_else(|| "GET".into());
    let mut headers: Vec<(String, String)> = g.headers.iter().map(|(k, v)| (k.clone(), s.subst(v))).collect();
    if let Some(r) = &g.range {
        headers.push(("range".into(), s.subst(r)));
    }
    log.lines.push(format!(
        "{method} https://{}:{}{path}",
        s.dev.https.host, s.dev.https.port
    ));
    let started = Instant::now();
    let mut attempt = 0;
    let r = loop {
        // A resumed download asks for the rest with a Range request, as a careful client does.
        let have = match (&save, attempt) {
            (Some(f), n) if n > 0 => std::fs::metadata(f).map(|m| m.len()).unwrap_or(0),
            _ => 0,
        };
        let mut h = headers.clone();
        if have > 0 {
            h.push(("range".into(), format!("bytes={have}-")));
        }
        let receive = https::Receive {
            append: have > 0,
            stall: g.resume.then_some(Duration::from_secs(3)),
        };
        let left = timeout.saturating_sub(started.elapsed());
        match s
            .dev
            .https
            .send(&method, &path, &h, save.as_deref(), receive, left)
            .await
        {
            Ok(r) => break r,
            Err(e) if g.resume && started.elapsed() < timeout => {
                attempt += 1;
                let now = save
                    .as_ref()
                    .and_then(|f| std::fs::metadata(f).ok())
                    .map(|m| m.len())
                    .unwrap_or(0);
                log.lines
                    .push(format!("interrupted ({e}) after {now} bytes; asking for the rest"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let sha = match (&save, attempt) {
        (Some(f), n) if n > 0 => super::tree::sha256_file(f)?,
        _ => r.body_sha256.clone(),
    };
    log.lines.push(format!(
        "-> {} ({} bytes, sha256 {sha}){}",
        r.status,
        r.body_len,
        if attempt > 0 {
            format!(" after {attempt} resume(s)")
        } else {
            String::new()
        }
    ));
    if g.expect_interrupted {
        let cut = met_cut(s, started)?;
        if attempt == 0 {
            return Err(StepEnd::Failed(format!(
                "{cut}, but the download was never resumed: it did not meet the cut"
            )));
        }
        log.lines.push(format!("{cut}; resumed {attempt} time(s)"));
    }
    let want = g.expect_status.unwrap_or(200);
    let resumed_ok = attempt > 0 && r.status == 206 && want == 200;
    if r.status != want && !resumed_ok {
        return Err(StepEnd::Failed(format!("status {}, expected {want}", r.status)));
    }
    if let Some(expected) = &g.expect_sha256 {
        let expected = s.subst(expected);
        if sha != expected {
            return Err(StepEnd::Failed(format!(
                "the body's sha256 is {sha}, expected {expected}"
            )));
        }
    }
    Ok(())
}

/// `http.hold`: the connections run in the background until the scenario ends.
pub async fn http_hold(s: &mut Session<'_>, h: &HttpHold, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let slow = h.mode == "slow";
    log.lines.push(format!(
        "holding {} {} connection(s) to {}:{}",
        h.connections, h.mode, s.dev.https.host, s.dev.https.port
    ));
    // The CA is pinned before the crowd arrives, so the holds need no TOFU of their own.
    s.dev.https.pin_ca(timeout).await?;
    for _ in 0..h.connections {
        s.holds.push(tokio::spawn(https::hold(s.dev.https.clone(), slow)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// `scp.get`, as the vendor's download line.
pub async fn scp_get(s: &mut Session<'_>, g: &ScpGet, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let user = s.subst(&g.user);
    let remote = s.subst(&g.remote);
    let local = s.local(&g.local);
    log.lines
        .push(format!("scp {user}@{}:{remote} {}", s.dev.ssh.host, local.display()));
    let out = s.dev.ssh.scp_get(&user, &remote, &local, timeout).await?;
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!("scp failed: {}", out.stderr.trim())));
    }
    Ok(())
}

/// `scp.put`: `scp local USER@host:remote`, then the size on the device checked against the
/// local file's (a copy cut short must not pass).
pub async fn scp_put(s: &mut Session<'_>, p: &ScpPut, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let user = s.subst(&p.user);
    let remote = s.subst(&p.remote);
    let local = s.local(&p.local);
    let size = std::fs::metadata(&local)
        .map_err(|e| format!("{}: {e}", local.display()))?
        .len();
    log.lines.push(format!(
        "scp {} {user}@{}:{remote} ({size} bytes)",
        local.display(),
        s.dev.ssh.host
    ));
    let started = Instant::now();
    // The file scp will write, recorded on the device first (a folder as `remote` gets the
    // file under its own name, as scp puts it; a relative path is under the user's home).
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let whole = format!(
        "f={q}; [ -d \"$f\" ] && f=\"${{f%/}}\"/{n}; case \"$f\" in /*) ;; *) f=\"$HOME/$f\" ;; esac; printf '%s' \"$f\"",
        q = sh_quote(&remote),
        n = sh_quote(&name)
    );
    let out = s.ssh(&user, &whole, None, timeout).await?;
    if out.code != Some(0) || out.stdout.is_empty() {
        return Err(StepEnd::Failed(format!(
            "cannot tell where scp would write {remote} as {user}: {}",
            out.stderr.trim()
        )));
    }
    super::shell::record_file(s, out.stdout.trim_end_matches('\n'), None, timeout).await?;
    let ssh = &s.dev.ssh;
    let mut cmd = tokio::process::Command::new("scp");
    cmd.arg("-P").arg(ssh.port.to_string()).args(ssh.options());
    cmd.arg(&local).arg(format!("{user}@{}:{remote}", ssh.host));
    let out = run_local(cmd, None, timeout).await?;
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!("scp failed: {}", out.stderr.trim())));
    }
    let check = format!(
        "f={q}; [ -d \"$f\" ] && f=\"$f\"/{n}; stat -c %s \"$f\"",
        q = sh_quote(&remote),
        n = sh_quote(&name)
    );
    let left = timeout.saturating_sub(started.elapsed());
    let out = s.ssh(&user, &check, None, left).await?;
    let there = out.stdout.trim();
    if out.code != Some(0) || there != size.to_string() {
        return Err(StepEnd::Failed(format!(
            "after scp the device holds {there:?} bytes at {remote}, not {size}: {}",
            out.stderr.trim()
        )));
    }
    log.lines.push(format!("-> {size} bytes on the device"));
    Ok(())
}

/// `rsync.pull`, run again after a dropped connection when `resume` is set.
pub async fn rsync_pull(
    s: &mut Session<'_>,
    r: &RsyncPull,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let user = s.subst(&r.user);
    let remote = s.subst(&r.remote);
    let local = s.local(&r.local);
    std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
    log.lines.push(format!(
        "rsync -a {user}@{}:{remote} {}",
        s.dev.ssh.host,
        local.display()
    ));
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let out = s.dev.ssh.rsync_pull(&user, &remote, &local, r.sudo, left).await;
        let err = match out {
            Ok(o) if o.code == Some(0) => {
                if r.expect_interrupted {
                    log.lines.push(met_cut(s, started)?);
                }
                return Ok(());
            }
            Ok(o) => format!("rsync failed: {}", o.stderr.trim()),
            Err(e) => e.to_string(),
        };
        if !r.resume || started.elapsed() >= timeout {
            return Err(err.into());
        }
        log.lines.push(format!("interrupted ({err}); running rsync again"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Proof that a transfer that began at `started` met a network cut: the device froze after
/// it began (it cannot have finished before the thaw then). An error says what happened instead.
fn met_cut(s: &Session<'_>, started: Instant) -> Result<String, StepEnd> {
    let Some(cut) = s.cuts.last() else {
        return Err("`expect_interrupted`: no fault.cut_network came before this transfer".into());
    };
    let state = cut.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(e) = state.error {
        return Err(StepEnd::Failed(format!("the network cut failed: {e}")));
    }
    match state.frozen_at {
        Some(f) if f >= started => Ok(format!(
            "the device froze {:.2} s into the transfer",
            f.duration_since(started).as_secs_f64()
        )),
        Some(_) => Err("the network cut happened before the transfer began: it met no cut".into()),
        None => {
            Err("the transfer ended before the network cut took: it met no cut (make the cut's `after` shorter)".into())
        }
    }
}
