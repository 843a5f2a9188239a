//! Headless Chromium (Debian's) for the tests that open a page the harness wrote: nothing is
//! fetched from anywhere, the console is read from Chromium's log.

use std::process::Command;

/// Opens `page` with `action` (e.g. `--dump-dom`, `--screenshot=FILE`): what it printed on
/// standard output (the DOM with `--dump-dom`) and its log (the page's console among it).
pub fn chromium(page: &str, action: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(action)
        .arg(page)
        .output()
        .expect("chromium is not installed: ci/setup-host installs Debian's chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The page's console errors: uncaught exceptions and messages logged as warnings or errors.
pub fn console_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                && (l.contains("Uncaught") || l.contains("ERROR:CONSOLE") || l.contains("WARNING:CONSOLE"))
        })
        .map(str::to_string)
        .collect()
}
