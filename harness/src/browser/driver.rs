//! The chromedriver process: started on a free loopback port in a process group of its own, so
//! that stopping the group stops the Chromium it started too; every live group is known here
//! for [`kill_all`] (Ctrl-C ends the harness with `exit`, which runs no destructors).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The process groups of the chromedrivers still running.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A number unique in this process, for folder names.
pub fn next_id() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The chromedriver binary: `$NEXUS_HIL_CHROMEDRIVER`, or Debian's.
fn chromedriver_binary() -> String {
    std::env::var("NEXUS_HIL_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// A running chromedriver.
pub struct Driver {
    child: tokio::process::Child,
    pgid: i32,
    port: u16,
}

/// How many chromedrivers of this process are running.
pub fn live() -> usize {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// Kills every chromedriver this process started, with its browser.
pub fn kill_all() {
    let groups = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
    for g in groups {
        kill_group(g);
    }
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals only the group this process made.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Driver {
    /// Starts chromedriver on a free port of 127.0.0.1 and waits until it answers.
    pub async fn spawn(timeout: Duration) -> Result<Driver, super::Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| super::Error::Start(format!("no free loopback port for chromedriver: {e}")))?
            .port();
        let bin = chromedriver_binary();
        let child = tokio::process::Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                super::Error::Start(format!("cannot start {bin}: {e}; install Debian's chromium-driver (ci/setup-host) or set NEXUS_HIL_CHROMEDRIVER"))
            })?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
        let mut d = Driver { child, pgid, port };
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                d.stop().await;
                return Err(super::Error::Start(format!("{bin} exited at start ({status})")));
            }
            if started.elapsed() > timeout {
                d.stop().await;
                return Err(super::Error::Start(format!(
                    "{bin} did not listen on 127.0.0.1:{port} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// chromedriver's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Stops chromedriver and whatever it started, and reaps it.
    pub async fn stop(mut self) {
        self.forget();
        kill_group(self.pgid);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    fn forget(&self) {
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.pgid);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A scenario dropped mid-step (its future cancelled) still takes its browser down.
        if LIVE.lock().unwrap_or_else(|p| p.into_inner()).contains(&self.pgid) {
            self.forget();
            kill_group(self.pgid);
        }
    }
}
