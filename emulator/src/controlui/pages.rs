//! The Control UI's HTML: the login page and the backup page, rendered on the server with a
//! little inline JavaScript (password box timer, live progress). Nothing is fetched from outside.
//! The element ids and classes are a contract with the harness's browser steps (see README.md,
//! "[ours] Control UI"); change them only together.

use std::fmt::Write;

use nexus_contract::paths::{control_ui_download, CONTROL_UI_EVENTS, CONTROL_UI_LOGIN, CONTROL_UI_PREFIX};

use super::device::{BackupRow, BackupStatus, SnapshotRow};
use super::session::CSRF_FIELD;

/// Text made safe for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

const STYLE: &str =
    "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #999;padding:.3em .6em;text-align:left}form{display:inline}\
#error{color:#a00;font-weight:bold}#password-box{border:2px solid #c80;padding:1em;margin:1em 0;background:#ffe}\
#backup-password{font-family:monospace;font-size:1.3em;user-select:all}";

fn page(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{title} - NOREYA NEXUS Control UI</title>\
<style>{STYLE}</style></head>\n<body>\n{body}\n<script>{script}</script>\n</body></html>\n"
    )
}

/// The login form; `error` in `div#error` after a wrong login.
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<div id=\"error\" role=\"alert\">{}</div>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>NOREYA NEXUS Control UI</h1>\n{error}<form id=\"login-form\" method=\"post\" action=\"{CONTROL_UI_LOGIN}\">\
<p><label>User name <input id=\"username\" name=\"username\" autocomplete=\"username\" required></label></p>\
<p><label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
<p><button id=\"login\" type=\"submit\">Log in</button></p></form>"
    );
    page("Log in", &body, "")
}

/// Everything the backup page shows.
#[derive(Debug, Default)]
pub struct MainView<'a> {
    pub csrf: &'a str,
    pub snapshots: &'a [SnapshotRow],
    pub backups: &'a [BackupRow],
    pub status: BackupStatus,
    pub error: Option<String>,
    pub notice: Option<String>,
    /// The new backup's password and seconds until the page removes it: shown once, in the
    /// answer to Start backup only.
    pub password: Option<(&'a str, u64)>,
}

fn post_button(csrf: &str, action: &str, class: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
<button class=\"{class}\" type=\"submit\">{label}</button></form>",
        escape(csrf)
    )
}

/// The backup page: snapshots, backups, the running backup's progress, errors in words.
pub fn main(view: &MainView<'_>) -> String {
    let csrf = view.csrf;
    let mut b = String::new();
    b.push_str("<h1>NOREYA NEXUS Control UI: snapshots and backups</h1>\n");
    let _ = writeln!(
        b,
        "<form id=\"logout-form\" method=\"post\" action=\"{CONTROL_UI_PREFIX}logout\"><input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\"><button id=\"logout\" type=\"submit\">Log out</button></form>",
        escape(csrf)
    );
    if let Some(e) = &view.error {
        let _ = writeln!(b, "<div id=\"error\" role=\"alert\">{}</div>", escape(e));
    }
    if let Some(n) = &view.notice {
        let _ = writeln!(b, "<div id=\"notice\">{}</div>", escape(n));
    }
    if let Some((password, secs)) = view.password {
        let _ = writeln!(
            b,
            "<div id=\"password-box\" role=\"alert\" data-close-after=\"{secs}\"><p>The backup is encrypted with this password. \
Copy it now and keep it safe: it vanishes in {secs} seconds and is stored nowhere.</p>\
<p><span id=\"backup-password\">{}</span></p></div>",
            escape(password)
        );
    }
    // The running (or just started) backup; the script keeps it current.
    let s = &view.status;
    let (pid, pstate, ptext) = if s.id != 0 {
        (s.id.to_string(), "running", format!("{} %", s.progress))
    } else {
        (String::new(), "idle", String::new())
    };
    let _ = writeln!(
        b,
        "<p>Backup: <span id=\"progress\" data-backup-id=\"{pid}\" data-state=\"{pstate}\">{ptext}</span> \
<span id=\"state\">{pstate}</span> <span id=\"download-slot\"></span></p>"
    );

    b.push_str("<h2>Snapshots</h2>\n");
    let _ = writeln!(
        b,
        "<form id=\"create-form\" method=\"post\" action=\"{CONTROL_UI_PREFIX}snapshots\"><input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
<label>Description <input id=\"snapshot-description\" name=\"description\" maxlength=\"200\"></label> \
<button id=\"create-snapshot\" type=\"submit\">Create snapshot</button></form>",
        escape(csrf)
    );
    b.push_str("<table id=\"snapshots\"><thead><tr><th>Id</th><th>Date</th><th>Description</th><th>Active</th><th></th></tr></thead><tbody>\n");
    for snap in view.snapshots {
        let base = format!("{CONTROL_UI_PREFIX}snapshots/{}", snap.id);
        let _ = writeln!(
            b,
            "<tr data-snapshot-id=\"{id}\" data-active=\"{active}\"><td class=\"id\">{id}</td><td class=\"date\">{date}</td>\
<td class=\"description\">{desc}</td><td class=\"active\">{active_text}</td><td>{backup} {delete} {activate}</td></tr>",
            id = snap.id,
            active = snap.active,
            date = date(snap.created),
            desc = escape(&snap.description),
            active_text = if snap.active { "active" } else { "" },
            backup = post_button(csrf, &format!("{base}/backup"), "backup", "Start backup"),
            delete = post_button(csrf, &format!("{base}/delete"), "delete", "Delete"),
            activate = post_button(csrf, &format!("{base}/activate"), "activate", "Activate"),
        );
    }
    b.push_str("</tbody></table>\n<h2>Backups</h2>\n");
    b.push_str("<table id=\"backups\"><thead><tr><th>Snapshot</th><th>Date</th><th>Size</th><th>State</th><th></th></tr></thead><tbody>\n");
    for backup in view.backups {
        let _ = writeln!(
            b,
            "<tr data-backup-id=\"{id}\" data-state=\"finished\"><td class=\"id\">{id}</td><td class=\"date\">{date}</td>\
<td class=\"size\">{size}</td><td class=\"state\">finished</td><td><a class=\"download\" href=\"{href}\">Download</a></td></tr>",
            id = backup.id,
            date = date(backup.created),
            size = backup.size,
            href = control_ui_download(u64::from(backup.id)),
        );
    }
    if s.id != 0 && !view.backups.iter().any(|x| x.id == s.id) {
        let _ = writeln!(
            b,
            "<tr data-backup-id=\"{id}\" data-state=\"running\"><td class=\"id\">{id}</td><td class=\"date\"></td>\
<td class=\"size\"></td><td class=\"state\">running</td><td></td></tr>",
            id = s.id
        );
    }
    b.push_str("</tbody></table>\n");
    page("Backups", &b, &script())
}

fn script() -> String {
    format!(
        r#"
(function () {{
  var box = document.getElementById('password-box');
  if (box) {{
    var secs = parseInt(box.getAttribute('data-close-after'), 10) || 20;
    setTimeout(function () {{ box.remove(); }}, secs * 1000);
  }}
  var progress = document.getElementById('progress');
  var state = document.getElementById('state');
  var slot = document.getElementById('download-slot');
  if (!window.EventSource) return;
  var events = new EventSource('{CONTROL_UI_EVENTS}');
  events.addEventListener('progress', function (e) {{
    var d = JSON.parse(e.data);
    progress.setAttribute('data-backup-id', String(d.id));
    progress.setAttribute('data-state', d.state);
    progress.textContent = d.percent + ' %';
    state.textContent = d.state;
  }});
  events.addEventListener('finished', function (e) {{
    var d = JSON.parse(e.data);
    progress.setAttribute('data-backup-id', String(d.id));
    progress.setAttribute('data-state', d.state);
    if (d.state === 'finished') progress.textContent = '100 %';
    state.textContent = d.state;
    var old = document.getElementById('download');
    if (old) old.remove();
    if (d.download) {{
      var a = document.createElement('a');
      a.id = 'download';
      a.href = d.download;
      a.textContent = 'Download backup ' + d.id;
      slot.appendChild(a);
    }}
  }});
}})();
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escaping() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(1_764_646_200), "2025-12-02 03:30:00 UTC");
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_page_has_the_selectors_the_browser_steps_use() {
        let snapshots = [SnapshotRow {
            id: 4,
            created: 0,
            description: "<b>".into(),
            active: true,
        }];
        let backups = [BackupRow {
            id: 4,
            size: 10,
            created: 0,
        }];
        let html = main(&MainView {
            csrf: "tok",
            snapshots: &snapshots,
            backups: &backups,
            password: Some(("pw", 20)),
            ..Default::default()
        });
        for needle in [
            "<table id=\"snapshots\"",
            "<tr data-snapshot-id=\"4\"",
            "class=\"backup\"",
            "class=\"delete\"",
            "class=\"activate\"",
            "id=\"create-snapshot\"",
            "id=\"snapshot-description\"",
            "<table id=\"backups\"",
            "<tr data-backup-id=\"4\"",
            "<a class=\"download\" href=\"/control/download/4\"",
            "id=\"password-box\"",
            "data-close-after=\"20\"",
            "<span id=\"backup-password\">pw</span>",
            "id=\"progress\"",
            "id=\"state\"",
            "&lt;b&gt;",
        ] {
            assert!(html.contains(needle), "{needle} missing");
        }
        let login = login(Some("wrong user name or password"));
        for needle in [
            "id=\"username\"",
            "id=\"password\"",
            "id=\"login\"",
            "<div id=\"error\"",
        ] {
            assert!(login.contains(needle), "{needle} missing");
        }
    }
}
