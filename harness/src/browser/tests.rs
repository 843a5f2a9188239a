use std::path::Path;

use serde_json::json;

use super::*;

#[test]
fn the_browser_reaches_only_its_target() {
    let args = chromium_args(Path::new("/tmp/p"), "127.0.0.1:8443", None);
    for flag in CHROMIUM_FLAGS {
        assert!(args.iter().any(|a| a == flag), "{flag}");
    }
    assert!(args.contains(&"--user-data-dir=/tmp/p".to_string()));
    assert!(args.contains(&"--proxy-server=http://127.0.0.1:9".to_string()));
    assert!(
        args.contains(&"--proxy-bypass-list=<-loopback>;127.0.0.1:8443".to_string()),
        "only the target bypasses the dead proxy, loopback included: {args:?}"
    );
    assert!(!args.iter().any(|a| a.contains("ignore-certificate")), "{args:?}");
    // Over HTTPS, the one key the harness checked, and no other.
    let pinned = chromium_args(Path::new("/tmp/p"), "127.0.0.1:8443", Some("q83vEjRWeJA="));
    let spki: Vec<&String> = pinned.iter().filter(|a| a.contains("ignore-certificate")).collect();
    assert_eq!(
        spki,
        ["--ignore-certificate-errors-spki-list=q83vEjRWeJA="],
        "{pinned:?}"
    );
    assert_eq!(authority("https://127.0.0.1:8443").unwrap(), "127.0.0.1:8443");
    assert_eq!(authority("https://nexus.local/").unwrap(), "nexus.local:443");
    assert_eq!(authority("http://127.0.0.1:3000/x").unwrap(), "127.0.0.1:3000");
    assert!(authority("nexus.local").is_err());
}

#[test]
fn the_console_reads_as_level_and_message() {
    let v = json!([
        {"level": "SEVERE", "message": "http://x/ 12:9 \"boom\"", "source": "console-api", "timestamp": 1},
        {"level": "INFO", "message": "hello", "timestamp": 2}
    ]);
    assert_eq!(console_lines(&v), ["SEVERE http://x/ 12:9 \"boom\"", "INFO hello"]);
    assert!(console_lines(&json!(null)).is_empty());
}

#[test]
fn a_glance_names_the_page_and_its_alerts_but_no_password_it_shows() {
    let err = json!({
        "url": "https://127.0.0.1:8443/control/snapshots/1/backup",
        "title": "Backups",
        "alerts": ["cannot start the backup: refused by polkit", "Copy it now: Zq3_x9ArT0-bbLmQ1c2d3e4f5g6h7i8j"],
        "text": "ignored when there are alerts",
    });
    let line = glance_line(&err);
    assert_eq!(
        line,
        "https://127.0.0.1:8443/control/snapshots/1/backup (\"Backups\"), its alert(s): \
         \"cannot start the backup: refused by polkit\", \"Copy it now: <32 characters>\""
    );
    let plain = json!({"url": "https://x/control/", "title": "", "alerts": [], "text": "Forbidden:\n  bad   token tech.noreya.Backup1.Error.Busy"});
    assert_eq!(
        glance_line(&plain),
        "https://x/control/ (\"\"), no alert; its text begins \"Forbidden: bad token tech.noreya.Backup1.Error.Busy\""
    );
    let long = json!({"url": "u", "title": "t", "alerts": [], "text": "word ".repeat(100)});
    let cut = glance_line(&long);
    assert!(cut.ends_with("...\"") && cut.len() < 300, "{cut}");
    assert!(glance_line(&json!({"url": "u", "title": "t"})).ends_with("no text"));
}

#[test]
fn the_session_asks_for_the_console_and_downloads_without_prompt() {
    let caps = capabilities(&["--headless".into()], Path::new("/w/dl"));
    assert_eq!(caps["acceptInsecureCerts"], json!(false));
    assert_eq!(caps["goog:loggingPrefs"], json!({"browser": "ALL"}));
    let opts = &caps["goog:chromeOptions"];
    assert_eq!(opts["args"], json!(["--headless"]));
    assert_eq!(opts["prefs"]["download.default_directory"], json!("/w/dl"));
    assert_eq!(opts["prefs"]["download.prompt_for_download"], json!(false));
}
