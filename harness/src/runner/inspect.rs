//! `run --hold-on-failure DURATION`: at a scenario's first failed step its device is kept as it
//! is (nothing closed, cleaned up or undone yet) while a person looks at it: the terminal says
//! how to get in (the ssh command with the harness's key, the container's shell, the console,
//! the browser's page) and the scenario's variables, secrets masked. Enter, the duration or
//! Ctrl-C ends the hold; then the scenario's clean-up and undo run as always. A device's lease
//! is refreshed in the background meanwhile (`crate::bench::lock`), so the hold keeps it.

use std::io::IsTerminal;
use std::time::Duration;

use crate::session::Session;
use crate::transport::ssh::sh_quote;

/// The hold of this process's run, when `run --hold-on-failure` asked for one.
static HOLD: std::sync::OnceLock<HoldOnFailure> = std::sync::OnceLock::new();

/// Holds every failed scenario of this process's run for up to `duration`, its text printed
/// above `bar` (on stderr where there is no terminal).
pub fn enable(duration: Duration, bar: indicatif::ProgressBar) {
    let _ = HOLD.set(HoldOnFailure::new(duration, bar));
}

/// The run's hold, if it asked for one.
pub fn active() -> Option<&'static HoldOnFailure> {
    HOLD.get()
}

/// How a run holds its failed scenarios.
pub struct HoldOnFailure {
    /// How long a hold lasts at most.
    pub duration: Duration,
    /// Enter ends a hold (standard input is a terminal); otherwise (CI) only the duration.
    pub interactive: bool,
    /// One scenario holds at a time: with `-j 2` a second failure waits for the first hold to
    /// end, its own device kept as it is meanwhile, then holds in turn.
    turn: tokio::sync::Mutex<()>,
    bar: indicatif::ProgressBar,
    /// Each Enter pressed on the terminal, read by one thread for the whole run (a thread per
    /// hold would leave one behind that eats the next hold's Enter).
    enter: std::sync::OnceLock<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>>,
}

impl HoldOnFailure {
    fn new(duration: Duration, bar: indicatif::ProgressBar) -> Self {
        Self {
            duration,
            interactive: std::io::stdin().is_terminal(),
            turn: tokio::sync::Mutex::new(()),
            bar,
            enter: std::sync::OnceLock::new(),
        }
    }

    /// Holds `session`'s device after `scenario` failed (`why`); `ways_in` are the target's
    /// own ways besides ssh (a container's shell, a console).
    pub async fn hold(&self, scenario: &str, why: &str, session: &Session<'_>, ways_in: &[String]) {
        let say = |text: String| super::schedule::line(&self.bar, text);
        let turn = match self.turn.try_lock() {
            Ok(t) => t,
            Err(_) => {
                say(format!(
                    "HOLD  {scenario} failed too; its device is kept as it is and held after the hold under way ends"
                ));
                self.turn.lock().await
            }
        };
        let page = match &session.browser {
            Some(b) => b.page_url().await,
            None => None,
        };
        say(self.text(scenario, why, session, ways_in, page.as_deref()));
        self.bar.set_message(format!(
            "{scenario}: held{}",
            if self.interactive { " (Enter ends the hold)" } else { "" }
        ));
        let ended = self.wait().await;
        say(format!("HOLD  {scenario}: {ended}; cleaning up"));
        drop(turn);
    }

    /// What is printed when a hold starts.
    fn text(&self, scenario: &str, why: &str, session: &Session<'_>, ways_in: &[String], page: Option<&str>) -> String {
        let d = humantime(self.duration);
        let mut t = format!(
            "HOLD  {scenario} failed: {}\n  its device is kept as it is for up to {d}: nothing is cleaned up or undone until the hold ends \
             (a real device's lease is kept and refreshed)\n",
            session.mask(why)
        );
        t.push_str(&format!("  ssh:       {}\n", ssh_command(session)));
        t.push_str(&format!("            (as {}; `sudo -i` for root)\n", session.dev.admin));
        for w in ways_in {
            t.push_str(&format!("  {w}\n"));
        }
        if let Some(url) = page {
            t.push_str(&format!(
                "  browser:   the scenario's browser (headless, kept open) is on {url}\n"
            ));
        }
        t.push_str(&format!("  files:     {}\n", session.work.display()));
        if session.vars.is_empty() {
            t.push_str("  variables: none\n");
        } else {
            t.push_str("  variables:\n");
            for (name, value) in &session.vars {
                t.push_str(&format!("    {name} = {}\n", session.mask(value)));
            }
        }
        if self.interactive {
            t.push_str(&format!(
                "  press Enter to end the hold and clean up (it ends by itself after {d}; Ctrl-C ends it and cleans up too)"
            ));
        } else {
            t.push_str(&format!(
                "  standard input is not a terminal: the hold ends after {d} (Ctrl-C ends it sooner and cleans up too)"
            ));
        }
        t
    }

    /// Until Enter (on a terminal) or the duration; says which.
    async fn wait(&self) -> String {
        let d = humantime(self.duration);
        if !self.interactive {
            tokio::time::sleep(self.duration).await;
            return format!("{d} passed");
        }
        // Read on a thread of its own: the runtime goes on refreshing leases meanwhile.
        let enter = self.enter.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.send(()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
            tokio::sync::Mutex::new(rx)
        });
        let mut enter = enter.lock().await;
        // An Enter pressed before this hold began is not this hold's.
        while enter.try_recv().is_ok() {}
        tokio::select! {
            Some(()) = enter.recv() => "Enter pressed".to_string(),
            () = tokio::time::sleep(self.duration) => format!("{d} passed"),
        }
    }
}

/// The ssh command that logs in as the device's admin, pasted as printed: the harness's key
/// and the known-hosts file the run pinned the device's host key in.
pub fn ssh_command(session: &Session<'_>) -> String {
    let ssh = &session.dev.ssh;
    let path = |p: &std::path::Path| {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        quote_if_needed(&abs.display().to_string())
    };
    format!(
        "ssh -p {} -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new {}@{}",
        ssh.port,
        path(&ssh.key),
        path(&ssh.known_hosts),
        session.dev.admin,
        ssh.host
    )
}

fn quote_if_needed(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c))
    {
        word.to_string()
    } else {
        sh_quote(word)
    }
}

/// A duration as people write it: `90s`, `5m`, `1h 30m`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_odd_paths_are_quoted() {
        assert_eq!(humantime(Duration::from_secs(5)), "5s");
        assert_eq!(humantime(Duration::from_secs(300)), "5m");
        assert_eq!(humantime(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humantime(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(quote_if_needed("/tmp/run-1/id_ed25519"), "/tmp/run-1/id_ed25519");
        assert_eq!(quote_if_needed("/tmp/my run/key"), "'/tmp/my run/key'");
    }
}
