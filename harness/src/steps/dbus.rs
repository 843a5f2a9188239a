//! `dbus.call` (a method of the device's services as a user, its reply or error checked and
//! captured) and `backup.wait` (polling `Status` as the vendor's client does).

use std::time::{Duration, Instant};

use nexus_contract::names::{BACKUP1, SNAPSHOT1};
use nexus_contract::paths::{backup_file_name, BACKUPS_DIR, BROOT};
use serde_json::Value;

use super::{StepEnd, StepLog};
use crate::bench::record::Made;
use crate::report::{ProgressSample, Wear};
use crate::scenario::{family, BackupWait, DbusCall};
use crate::session::{render, Session};

/// `dbus.call`.
/// Does a step of the D-Bus family.
pub async fn step(
    s: &mut Session<'_>,
    step: family::Dbus<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Dbus::DbusCall(c) => call(s, c, timeout, log).await,
        family::Dbus::BackupWait(w) => wait(s, w, timeout, log).await,
    }
}

pub async fn call(s: &mut Session<'_>, c: &DbusCall, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let user = s.subst(&c.user);
    let args: Vec<String> = c.args.iter().map(|a| s.subst(a)).collect();
    let shown = s.mask(&format!("{}.{}({})", c.service, c.method, args.join(", ")));
    log.lines.push(format!("dbus as {user}: {shown}"));
    let (service, method) = (s.subst(&c.service), s.subst(&c.method));
    // A backup's cost to the card counts from before its Create: the daemon writes before it
    // answers (its folder, the file's first chunks), and `backup.wait` comes after.
    if (service.as_str(), method.as_str(), &c.expect_error) == (BACKUP1, "Create", &None) {
        if let (Some(id), (Ok(counted), logged)) = (args.first(), count_card(s, timeout).await) {
            s.card_before_backup.insert(id.trim().to_string(), (counted, logged));
        }
    }
    let bus = s.bus(&user, timeout).await?;
    let result = tokio::time::timeout(timeout, bus.call(&service, &method, &args))
        .await
        .map_err(|_| format!("no reply within {timeout:?}"))?;
    match (result, &c.expect_error) {
        (Ok(values), None) => {
            log.lines
                .push(format!("-> {}", s.mask(&Value::Array(values.clone()).to_string())));
            // What the call made is the run's own from here on: recorded before anything else.
            if let Some((what, id)) = made_by(&service, &method, &args, &values) {
                s.record_made(what, id, &mut log.lines).await?;
            }
            check_reply(s, c, &values)?;
            if let Some(v) = &c.capture {
                let value = match &c.capture_pointer {
                    Some(p) => values
                        .first()
                        .and_then(|f| f.pointer(p))
                        .map(render)
                        .ok_or_else(|| format!("the reply has nothing at {p}"))?,
                    None => values.first().map(render).unwrap_or_default(),
                };
                s.vars.insert(v.clone(), value);
            }
            Ok(())
        }
        (Ok(values), Some(name)) => {
            // It was to be refused, yet it made something: still the run's own to undo.
            if let Some((what, id)) = made_by(&service, &method, &args, &values) {
                s.record_made(what, id, &mut log.lines).await?;
            }
            Err(StepEnd::Failed(format!(
                "the call succeeded ({}) but {name} was expected",
                Value::Array(values)
            )))
        }
        (Err(e), None) => Err(StepEnd::Failed(format!("the call failed: {e}"))),
        (Err(e), Some(name)) => {
            log.lines.push(format!("-> error {e}"));
            if &e.name != name {
                return Err(StepEnd::Failed(format!(
                    "failed with {}, expected {name}: {}",
                    e.name, e.message
                )));
            }
            if let Some(c) = &c.expect_error_contains {
                if !e.message.contains(c.as_str()) {
                    return Err(StepEnd::Failed(format!(
                        "the error message {:?} does not mention {c:?}",
                        e.message
                    )));
                }
            }
            Ok(())
        }
    }
}

/// What a call that succeeded made on the device, by the id the reply gave (a snapshot) or
/// the argument the daemon accepted (the backup of that snapshot).
fn made_by(service: &str, method: &str, args: &[String], reply: &[Value]) -> Option<(Made, u64)> {
    match (service, method) {
        (SNAPSHOT1, "Create") => Some((Made::Snapshot, reply.first()?.as_u64()?)),
        (BACKUP1, "Create") => Some((Made::Backup, args.first()?.trim().parse().ok()?)),
        _ => None,
    }
}

/// The `expect*` keys of a call that succeeded.
fn check_reply(s: &Session<'_>, c: &DbusCall, values: &[Value]) -> Result<(), StepEnd> {
    let first = values.first().map(render).unwrap_or_default();
    if let Some(e) = &c.expect {
        let e = s.subst(e);
        if first != e {
            return Err(StepEnd::Failed(format!("reply {first:?}, expected {e:?}")));
        }
    }
    for (k, want) in &c.expect_fields {
        let want = s.subst(want);
        let got = values.first().and_then(|v| v.get(k)).map(render);
        if got.as_deref() != Some(want.as_str()) {
            return Err(StepEnd::Failed(format!("{k} is {got:?}, expected {want:?}")));
        }
    }
    for (k, want) in &c.expect_fields_contain {
        let want = s.subst(want);
        let got = values.first().and_then(|v| v.get(k)).map(render).unwrap_or_default();
        if !got.contains(&want) {
            return Err(StepEnd::Failed(format!(
                "{k} is {got:?}, which does not contain {want:?}"
            )));
        }
    }
    let whole = Value::Array(values.to_vec()).to_string();
    for text in &c.expect_not_contains {
        let text = s.subst(text);
        if whole.contains(&text) {
            return Err(StepEnd::Failed(format!(
                "the reply contains {text:?}, which it must not"
            )));
        }
    }
    Ok(())
}

/// `backup.wait`: polls `Status` every half second while the backup of `id` runs, keeping the
/// progress for the report; then checks `last_result`.
pub async fn wait(s: &mut Session<'_>, w: &BackupWait, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let user = s.subst(&w.user);
    let id = s.subst(&w.id);
    let start = Instant::now();
    // What the card had been sent when the backup was asked for (read just before its Create
    // call), to weigh the backup's writes against its file; else so far. And what the card
    // itself has seen, where the harness serves it (the stand-in's write log).
    let (card_before, logged_before) = match s.card_before_backup.remove(&id) {
        Some((counted, logged)) => (Ok(counted), logged),
        None => count_card(s, timeout).await,
    };
    log.lines
        .push(format!("polling {BACKUP1}.Status as {user} while id == {id}"));
    let status = loop {
        let bus = s.bus(&user, timeout).await?;
        let st = bus
            .call(BACKUP1, "Status", &[])
            .await
            .map_err(|e| format!("Status failed: {e}"))?;
        let st = st.into_iter().next().unwrap_or_default();
        let num = |k: &str| st.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        log.progress.push(ProgressSample {
            at_s: start.elapsed().as_secs_f64(),
            percent: num("progress"),
            bytes_done: num("bytes_done"),
            bytes_total: num("bytes_total"),
        });
        if render(st.get("id").unwrap_or(&Value::Null)) != id {
            break st;
        }
        if start.elapsed() > timeout {
            return Err(StepEnd::Failed(format!(
                "the backup of snapshot {id} was still running after {timeout:?} ({}%)",
                num("progress")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let result = status
        .get("last_result")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    log.lines.push(format!(
        "finished: last_id={} last_result={result:?}",
        render(&status["last_id"])
    ));
    let want = w.expect_result.clone().unwrap_or_else(|| "ok".into());
    if want != "any" && result != want {
        return Err(StepEnd::Failed(format!(
            "the backup ended with {result:?}, expected {want:?}"
        )));
    }
    if result == "ok" {
        wear(s, w, &id, (card_before, logged_before), timeout, log).await?;
    }
    Ok(())
}

/// The card's block device (the one under `/broot`) and the bytes it has been sent since boot:
/// `/sys/class/block/DEV/stat`'s sectors written (512 bytes each, whatever the card's sectors).
const CARD_WRITES: &str = "src=$(findmnt -no SOURCE /broot | sed 's/\\[.*//') && \
     dev=$(basename \"$(readlink -f \"$src\")\") && echo \"$dev $(awk '{print $7}' /sys/class/block/$dev/stat)\"";

/// Reads [`CARD_WRITES`]: the device's name and bytes written, or why not.
async fn card_writes(s: &Session<'_>, timeout: Duration) -> Result<(String, u64), StepEnd> {
    let out = s.ssh("root", CARD_WRITES, None, timeout).await?;
    parse_card_writes(&out.stdout).ok_or_else(|| {
        StepEnd::Failed(format!(
            "the card's writes could not be read (exit {:?}: {} {})",
            out.code,
            out.stdout.trim(),
            out.stderr.trim()
        ))
    })
}

fn parse_card_writes(out: &str) -> Option<(String, u64)> {
    let mut w = out.split_whitespace();
    let (dev, sectors) = (w.next()?, w.next()?.parse::<u64>().ok()?);
    Some((dev.to_string(), sectors * 512))
}

/// How long the card's own writes (the automation's records, the system's) are sampled after a
/// backup whose cost is judged, so that they are not counted as the backup's.
const BACKGROUND_SAMPLE: Duration = Duration::from_secs(3);

/// How far the card's write log and the guest's count of what the card was sent may differ
/// (relative) before a judged wear is not trusted.
const LOG_AGREEMENT: f64 = 0.01;

/// The guest's count of the card's written bytes as a backup starts: its disk, the bytes, when.
type Counted = Result<(String, u64, Instant), StepEnd>;

/// The card's count now: the guest's ([`card_writes`], with the time it was read) and the card's
/// write log's, where the harness serves one (the stand-in's).
async fn count_card(s: &Session<'_>, timeout: Duration) -> (Counted, Option<(u32, u64)>) {
    let counted = card_writes(s, timeout)
        .await
        .map(|(dev, bytes)| (dev, bytes, Instant::now()));
    (counted, s.lifecycle.and_then(|l| l.card_bytes_logged()))
}

/// After an `ok` backup: syncs `/broot` (so that btrfs's metadata for it is counted), reads the
/// card's writes again and the backup file's size, says the ratio in the transcript and keeps it
/// for the report and the history. With `max_write_ratio` the card's writes without a backup are
/// then sampled for [`BACKGROUND_SAMPLE`] and taken off at that rate for the backup's time (the
/// card's other users write meanwhile: the automation's `fdatasync` every 100 ms costs btrfs a
/// log commit each), and the step fails above the limit. Where the card's write log is there
/// (the stand-in), the bytes it saw are compared with the guest's count: with
/// `max_write_ratio` they must agree within [`LOG_AGREEMENT`].
async fn wear(
    s: &Session<'_>,
    w: &BackupWait,
    id: &str,
    (before, logged_before): (Counted, Option<(u32, u64)>),
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let measured = async {
        let (dev, before, started) = before?;
        let snapshot: u64 = id
            .parse()
            .map_err(|_| format!("the backup's id {id:?} is not a number"))?;
        let file = format!("{BACKUPS_DIR}/{}", backup_file_name(snapshot));
        let out = s
            .ssh("root", &format!("sync -f {BROOT} && stat -c %s {file}"), None, timeout)
            .await?;
        let backup_bytes: u64 = out
            .stdout
            .trim()
            .parse()
            .map_err(|_| format!("the size of {file}: {} {}", out.stdout.trim(), out.stderr.trim()))?;
        let (dev_after, after) = card_writes(s, timeout).await?;
        // The same power-on's log (a cut or reboot between starts a new one).
        let logged_bytes = match (logged_before, s.lifecycle.and_then(|l| l.card_bytes_logged())) {
            (Some((boot, from)), Some((boot_after, to))) if boot == boot_after => Some(to.saturating_sub(from)),
            _ => None,
        };
        let backup_s = started.elapsed().as_secs_f64();
        if dev_after != dev {
            return Err(StepEnd::Failed(format!(
                "/broot moved from {dev} to {dev_after} during the backup"
            )));
        }
        let mut background_bytes = None;
        if w.max_write_ratio.is_some() {
            let t = Instant::now();
            tokio::time::sleep(BACKGROUND_SAMPLE).await;
            let (_, idle) = card_writes(s, timeout).await?;
            let rate = idle.saturating_sub(after) as f64 / t.elapsed().as_secs_f64();
            background_bytes = Some((rate * backup_s) as u64);
        }
        Ok::<_, StepEnd>(Wear {
            device: dev,
            bytes_written: after.saturating_sub(before),
            background_bytes,
            backup_bytes,
            logged_bytes,
        })
    }
    .await;
    match measured {
        Ok(wear) => {
            let background = match wear.background_bytes {
                Some(b) => format!(", {b} of them at the rate the card is written without a backup"),
                None => String::new(),
            };
            log.lines.push(format!(
                "the card ({}) received {} bytes during the backup{background}: {:.3} per byte of the {}-byte backup file",
                wear.device,
                wear.bytes_written,
                wear.ratio(),
                wear.backup_bytes
            ));
            let ratio = wear.ratio();
            let disagreement = wear.log_disagreement();
            if let (Some(logged), Some(d)) = (wear.logged_bytes, disagreement) {
                log.lines.push(format!(
                    "the card's write log saw {logged} bytes over the same span: {:.2} % from the guest's count",
                    d * 100.0
                ));
            }
            log.wear = Some(wear);
            match (w.max_write_ratio, disagreement) {
                (Some(max), _) if ratio > max => Err(StepEnd::Failed(format!(
                    "the card received {ratio:.3} bytes per byte of the backup file, more than max_write_ratio {max}"
                ))),
                (Some(_), Some(d)) if d > LOG_AGREEMENT => Err(StepEnd::Failed(format!(
                    "the card's write log and the guest's /sys/block count differ by {:.2} %, more than {:.0} %: \
                     the wear is not measured right",
                    d * 100.0,
                    LOG_AGREEMENT * 100.0
                ))),
                _ => Ok(()),
            }
        }
        Err(why) if w.max_write_ratio.is_some() => Err(StepEnd::Failed(format!("max_write_ratio: {why}"))),
        Err(why) => {
            log.lines.push(format!("the card's writes were not measured: {why}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_cards_writes_are_read_in_bytes() {
        assert_eq!(parse_card_writes("loop3 68720\n"), Some(("loop3".into(), 68720 * 512)));
        assert_eq!(parse_card_writes("mmcblk0p2 0"), Some(("mmcblk0p2".into(), 0)));
        assert_eq!(parse_card_writes("vda"), None);
        assert_eq!(parse_card_writes(""), None);
    }

    #[test]
    fn a_create_that_succeeded_is_the_runs_own_and_nothing_else_is() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            made_by(SNAPSHOT1, "Create", &args(&["true", "true", "x"]), &[json!(12)]),
            Some((Made::Snapshot, 12))
        );
        assert_eq!(
            made_by(BACKUP1, "Create", &args(&["12", "pw"]), &[]),
            Some((Made::Backup, 12))
        );
        assert_eq!(made_by(SNAPSHOT1, "Delete", &args(&["12"]), &[]), None);
        assert_eq!(made_by(SNAPSHOT1, "GetList", &[], &[json!([])]), None);
        assert_eq!(made_by(BACKUP1, "Create", &args(&["${id}", "pw"]), &[]), None);
    }
}
