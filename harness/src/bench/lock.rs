//! One run per device at a time: a lease that lives on the device itself, so runs from different
//! machines (two CI pipelines) see each other. The lock file names its holder (owner, host,
//! process, start time, token) and an expiry on the device's clock; the holder refreshes the
//! expiry while it runs, and removes the file when it is done. A second run waits, bounded,
//! saying who holds the device, or fails at once. A lock is taken over only once its expiry has
//! passed, whoever wrote it (a process id means nothing across hosts, containers or pid
//! namespaces), and said so. A holder whose refresh fails past its expiry, or finds another
//! token in the file, has lost the lease: [`lost`] says so, the runner stops its scenario at the
//! next step, and it undoes nothing (the record is the next holder's to undo). A lock file that
//! cannot be written is not taken. Every read and write of the file happens under `flock` on
//! the device, so two runs cannot both take it.

use std::collections::HashMap;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::transport::ssh::sh_quote;

/// The folder and file on the device.
pub const LOCK_DIR: &str = "/var/lib/nexus-hil";
pub const LOCK_FILE: &str = "/var/lib/nexus-hil/lock";

/// How long a lock lives unless refreshed, and how often its holder refreshes it.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    pub refresh: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            refresh: Duration::from_secs(30),
        }
    }
}

/// Who holds a device, as its lock file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub started: u64,
    pub expires: u64,
    pub token: String,
}

impl Holder {
    fn parse(text: &str) -> Option<Self> {
        let mut h = Holder::default();
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "owner" => h.owner = v.to_string(),
                "host" => h.host = v.to_string(),
                "pid" => h.pid = v.parse().ok()?,
                "started" => h.started = v.parse().ok()?,
                "expires" => h.expires = v.parse().ok()?,
                "token" => h.token = v.to_string(),
                _ => {}
            }
        }
        (!h.token.is_empty()).then_some(h)
    }

    /// "OWNER on HOST (pid N) since T, expires in S s" against the device's clock `now`.
    pub fn describe(&self, now: u64) -> String {
        format!(
            "{} on {} (pid {}), holding it for {} s, its lock expires in {} s unless refreshed",
            self.owner,
            self.host,
            self.pid,
            now.saturating_sub(self.started),
            self.expires.saturating_sub(now)
        )
    }
}

/// Why a device could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{device} is in use by {holder}; wait for it, or run again without --no-wait to wait up to --lock-wait")]
    Held { device: String, holder: String },
    #[error(
        "{device} was still in use after waiting {waited:?}: held by {holder}; raise --lock-wait or free the device"
    )]
    Timeout {
        device: String,
        holder: String,
        waited: Duration,
    },
    #[error("{device}: cannot read or write its lock {LOCK_FILE}: {0}", device = .1)]
    Device(String, String),
    /// The lock could not be given back (the device did not answer, or its lock file could
    /// not be removed): it expires after its TTL.
    #[error("{0}")]
    Release(String),
}

/// A device this run holds; released by [`DeviceLock::release`] (or, when the process is
/// interrupted, [`release_all`]).
pub struct DeviceLock {
    dev: Device,
    token: String,
    refresher: tokio::task::JoinHandle<()>,
}

/// The locks this process holds, for Ctrl-C.
static HELD: Mutex<Vec<(Device, String)>> = Mutex::new(Vec::new());

/// Leases this process lost, by token: why.
static LOST: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// The token of the lease this process holds on `dev`, if it holds one.
pub fn token_for(dev: &Device) -> Option<String> {
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(d, _)| name_of(d) == name_of(dev))
        .map(|(_, t)| t.clone())
}

/// Why this process lost its lease on `dev` (its refresh found another run's token, or failed
/// until the lease had expired), if it did.
pub fn lost(dev: &Device) -> Option<String> {
    let token = token_for(dev)?;
    LOST.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&token).cloned())
}

fn mark_lost(token: &str, why: String) {
    LOST.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(token.to_string())
        .or_insert(why);
}

/// What the acquire script answered.
enum Answer {
    Taken,
    TookOver(Holder),
    Held(Holder, u64),
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn name_of(dev: &Device) -> String {
    format!("{}@{}:{}", dev.admin, dev.ssh.host, dev.ssh.port)
}

impl DeviceLock {
    /// Takes `dev` for `owner`, waiting up to `wait` (`None`: not at all) while another run
    /// holds it; `say` hears who holds it while waiting and about a stale lock taken over.
    pub async fn acquire(
        dev: &Device,
        owner: &str,
        wait: Option<Duration>,
        timing: Timing,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, LockError> {
        let host = this_host();
        let token = format!("{host}-{}-{}", std::process::id(), nanos());
        let started = Instant::now();
        let mut last_said = None::<Instant>;
        loop {
            match try_take(dev, owner, &host, &token, timing.ttl, None).await? {
                Answer::Taken => break,
                Answer::TookOver(old) => {
                    say(&format!(
                        "{}: took over a stale lock of {} on {} (pid {}): it had expired",
                        name_of(dev),
                        old.owner,
                        old.host,
                        old.pid
                    ));
                    break;
                }
                Answer::Held(h, now) => {
                    // Held until its expiry, whoever holds it: a process id seen missing here
                    // may live in another pid namespace or on a host of the same name.
                    let holder = h.describe(now);
                    let Some(wait) = wait else {
                        return Err(LockError::Held {
                            device: name_of(dev),
                            holder,
                        });
                    };
                    if started.elapsed() >= wait {
                        return Err(LockError::Timeout {
                            device: name_of(dev),
                            holder,
                            waited: wait,
                        });
                    }
                    if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        say(&format!(
                            "{} is in use by {holder}; waiting (up to {} s more)",
                            name_of(dev),
                            wait.saturating_sub(started.elapsed()).as_secs()
                        ));
                        last_said = Some(Instant::now());
                    }
                    let pause = Duration::from_secs(2).min(wait.saturating_sub(started.elapsed()));
                    tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
                }
            }
        }
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((dev.clone(), token.clone()));
        let (d, t) = (dev.clone(), token.clone());
        let refresher = tokio::spawn(async move {
            let (mut good, mut said) = (Instant::now(), false);
            loop {
                tokio::time::sleep(timing.refresh).await;
                match refresh(&d, &t, timing.ttl).await {
                    Ok(()) => {
                        if said {
                            eprintln!("nexus-hil: {}: the device's lease is refreshed again", name_of(&d));
                        }
                        (good, said) = (Instant::now(), false);
                    }
                    Err(Refresh::Lost(why)) => {
                        eprintln!("nexus-hil: {}: lost the device's lease: {why}", name_of(&d));
                        mark_lost(&t, why);
                        return;
                    }
                    Err(Refresh::Failed(e)) => {
                        // A device being cut, rebooted or flashed by the run misses a refresh
                        // or two: said once it has missed them for half the lease.
                        if !said && good.elapsed() >= timing.ttl / 2 {
                            eprintln!(
                                "nexus-hil: {}: the device's lease has not been refreshed for {} s (it lapses after {} s): {e}",
                                name_of(&d),
                                good.elapsed().as_secs(),
                                timing.ttl.as_secs()
                            );
                            said = true;
                        }
                        // Past its expiry another run may have taken it: this run holds nothing.
                        if good.elapsed() >= timing.ttl {
                            mark_lost(
                                &t,
                                format!(
                                    "no refresh reached the device for {} s, longer than the lease's {} s: {e}",
                                    good.elapsed().as_secs(),
                                    timing.ttl.as_secs()
                                ),
                            );
                            return;
                        }
                    }
                }
            }
        });
        Ok(Self {
            dev: dev.clone(),
            token,
            refresher,
        })
    }

    /// The token in the device's lock file.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Why this lease was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        LOST.lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.get(&self.token).cloned())
    }

    /// Gives the device back: the lock file goes (if it is still this run's).
    pub async fn release(self) -> Result<(), LockError> {
        self.refresher.abort();
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, t)| t != &self.token);
        release(&self.dev, &self.token).await
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs `script` as root on the device under the lock's mutex (`flock` on the device).
async fn locked(dev: &Device, script: &str) -> Result<String, String> {
    let cmd = format!(
        "mkdir -p {LOCK_DIR} && flock {LOCK_DIR}/.mutex sh -c {}",
        sh_quote(script)
    );
    let out = dev
        .ssh
        .run(
            &dev.admin,
            &format!("sudo -n sh -c {}", sh_quote(&cmd)),
            None,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| e.to_string())?;
    if out.code != Some(0) {
        return Err(format!("exit {:?}: {}", out.code, out.stderr.trim()));
    }
    Ok(out.stdout)
}

/// Takes the lock if it is free or expired (or, with `replace`, held under that token).
async fn try_take(
    dev: &Device,
    owner: &str,
    host: &str,
    token: &str,
    ttl: Duration,
    replace: Option<&str>,
) -> Result<Answer, LockError> {
    let content = format!(
        "owner={}\\nhost={}\\npid={}\\nstarted=%s\\nexpires=%s\\ntoken={}\\n",
        owner.replace(['\n', '\\', '%'], "_"),
        host.replace(['\n', '\\', '%'], "_"),
        std::process::id(),
        token
    );
    // A lock that could not be written (a full or read-only disk) is not taken: the script
    // fails, and so does the acquire.
    let script = format!(
        r#"f={LOCK_FILE}; now=$(date +%s); exp=$((now + {ttl}))
write() {{ printf {content} "$now" "$exp" > "$f.new" && sync "$f.new" && mv "$f.new" "$f" && [ -s "$f" ] ||
  {{ rm -f "$f.new"; echo "cannot write the lock file $f (full or read-only disk?)" >&2; exit 1; }}; }}
if [ ! -s "$f" ]; then write; echo "taken $now"; exit 0; fi
old_exp=$(sed -n 's/^expires=//p' "$f"); old_token=$(sed -n 's/^token=//p' "$f")
if [ -z "$old_exp" ] || [ "$old_exp" -lt "$now" ] || [ "$old_token" = {replace} ]; then
  cat "$f" > "$f.old"; write; echo "over $now"; cat "$f.old"; rm -f "$f.old"; exit 0
fi
echo "held $now"; cat "$f""#,
        ttl = ttl.as_secs().max(1),
        content = sh_quote(&content),
        replace = sh_quote(replace.unwrap_or("\u{1}none")),
    );
    let out = locked(dev, &script)
        .await
        .map_err(|e| LockError::Device(e, name_of(dev)))?;
    let (head, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let mut words = head.split_whitespace();
    let (what, now) = (
        words.next().unwrap_or(""),
        words.next().and_then(|n| n.parse().ok()).unwrap_or(0),
    );
    let holder = || Holder::parse(rest).unwrap_or_default();
    match what {
        "taken" => Ok(Answer::Taken),
        "over" => Ok(Answer::TookOver(holder())),
        "held" => Ok(Answer::Held(holder(), now)),
        _ => Err(LockError::Device(format!("unexpected answer {out:?}"), name_of(dev))),
    }
}

/// Why a refresh did not move the expiry on.
enum Refresh {
    /// The lease is gone: another token is in the file, or its expiry had passed (another
    /// run may take it from then on).
    Lost(String),
    /// The device did not answer, or could not write.
    Failed(String),
}

/// Moves the expiry on, if the lock is still this run's and has not expired.
async fn refresh(dev: &Device, token: &str, ttl: Duration) -> Result<(), Refresh> {
    let script = format!(
        r#"f={LOCK_FILE}; now=$(date +%s)
t=$(sed -n 's/^token=//p' "$f" 2>/dev/null); e=$(sed -n 's/^expires=//p' "$f" 2>/dev/null)
if [ "$t" != {token} ]; then echo "LOST the lock file now holds another run's token (${{t:-none}})"; exit 0; fi
if [ -z "$e" ] || [ "$e" -lt "$now" ]; then echo "LOST the lease expired $((now - ${{e:-0}})) s ago before it could be refreshed"; exit 0; fi
sed "s/^expires=.*/expires=$(( now + {ttl} ))/" "$f" > "$f.new" && mv "$f.new" "$f" && echo ok"#,
        token = sh_quote(token),
        ttl = ttl.as_secs().max(1),
    );
    match locked(dev, &script).await {
        Ok(out) => match out.trim().strip_prefix("LOST ") {
            Some(why) => Err(Refresh::Lost(why.to_string())),
            None if out.trim() == "ok" => Ok(()),
            None => Err(Refresh::Failed(format!("unexpected answer {out:?}"))),
        },
        Err(e) => Err(Refresh::Failed(e)),
    }
}

/// The lease as it stands on `dev` (the lock file's text and the seconds left until it
/// expires), before something erases it with the card (`fault.replace_card` on a bench); `None`
/// when no lease is there or the device does not answer.
pub(crate) async fn lease_on(dev: &Device) -> Option<(String, i64)> {
    let script = format!(
        r#"f={LOCK_FILE}; [ -e "$f" ] || exit 0; e=$(sed -n 's/^expires=//p' "$f"); echo "left=$(( ${{e:-0}} - $(date +%s) ))"; cat "$f""#
    );
    let out = locked(dev, &script).await.ok()?;
    let (first, text) = out.split_once('\n')?;
    let left = first.strip_prefix("left=")?.trim().parse().ok()?;
    Some((text.to_string(), left))
}

/// Writes a lease read by [`lease_on`] back onto `dev` when its lock file is gone (a new card),
/// with as many seconds left as it had; the holder's refreshes then go on as before.
pub(crate) async fn put_back(dev: &Device, (text, left): &(String, i64)) -> Result<(), LockError> {
    let script = format!(
        r#"f={LOCK_FILE}; [ -e "$f" ] && exit 0; printf '%s\n' {text} | sed "s/^expires=.*/expires=$(( $(date +%s) + {left} ))/" > "$f.new" && mv "$f.new" "$f""#,
        text = sh_quote(text.trim_end()),
        left = (*left).max(1),
    );
    locked(dev, &script)
        .await
        .map(drop)
        .map_err(|e| LockError::Device(e, name_of(dev)))
}

/// Removes the lock file if it is still `token`'s, and the folder if nothing else is in it.
async fn release(dev: &Device, token: &str) -> Result<(), LockError> {
    let script = format!(
        r#"f={LOCK_FILE}; if [ "$(sed -n 's/^token=//p' "$f" 2>/dev/null)" = {token} ]; then rm -f "$f"; fi"#,
        token = sh_quote(token)
    );
    locked(dev, &script).await.map_err(LockError::Release)?;
    // The folder goes with its mutex when no run holds the device.
    let out = dev
        .ssh
        .run(
            &dev.admin,
            &format!(
                "sudo -n sh -c {}",
                sh_quote(&format!(
                    "[ -e {LOCK_FILE} ] || {{ rm -f {LOCK_DIR}/.mutex; rmdir {LOCK_DIR} 2>/dev/null; }}; true"
                ))
            ),
            None,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| LockError::Release(e.to_string()))?;
    if out.code != Some(0) {
        return Err(LockError::Release(out.stderr));
    }
    Ok(())
}

/// The devices this process holds locks on.
pub fn held_devices() -> Vec<Device> {
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(d, _)| d.clone())
        .collect()
}

/// Releases every lock this process holds (on Ctrl-C, before it exits).
pub async fn release_all() {
    let held: Vec<(Device, String)> = std::mem::take(&mut *HELD.lock().unwrap_or_else(|p| p.into_inner()));
    for (dev, token) in held {
        if let Err(e) = release(&dev, &token).await {
            eprintln!("nexus-hil: {}: cannot release the device's lock: {e}", name_of(&dev));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_names_its_holder() {
        let h = Holder::parse("owner=ci-a\nhost=runner1\npid=42\nstarted=100\nexpires=220\ntoken=t1\n").unwrap();
        assert_eq!(
            (h.owner.as_str(), h.host.as_str(), h.pid, h.expires),
            ("ci-a", "runner1", 42, 220)
        );
        let d = h.describe(130);
        assert!(
            d.contains("ci-a on runner1 (pid 42)") && d.contains("for 30 s") && d.contains("in 90 s"),
            "{d}"
        );
        assert!(Holder::parse("garbage").is_none());
        assert!(Holder::parse("owner=x\n").is_none(), "no token: not a lock");
    }
}
