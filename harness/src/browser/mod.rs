//! A real browser for the `browser.*` steps: Debian's chromedriver started on a free loopback
//! port, headless Chromium with a fresh profile under it, driven over WebDriver (fantoccini).
//! [`Browser`] is one scenario's browser; [`driver`] owns the chromedriver process (and so
//! Chromium, in its process group), killed when the browser is closed or dropped, and by
//! [`kill_all`] on Ctrl-C. Both fail with [`Error`].

pub mod driver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub use driver::kill_all;
use driver::Driver;

/// What went wrong with the browser or the page; the variants say which kind, the messages
/// name the page, the element or the program, and what to install or look at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// chromedriver or Chromium did not start (not installed, no free port, too slow).
    #[error("{0}")]
    Start(String),
    /// The scenario's base URL is not one the browser can be confined to.
    #[error("{0}")]
    Url(String),
    /// The browser refused or failed an action on the page (open, click, type, read, a script).
    #[error("{0}")]
    Page(String),
    /// Chromium refused the server's certificate: its key is not the one checked against the
    /// device's pinned CA.
    #[error("{0}")]
    Certificate(String),
    /// What the step waits for on the page (an element, its disappearance, a download) did
    /// not come within the step's time.
    #[error("{0}")]
    NotShown(String),
    /// A local folder (downloads, the profile) could not be made, listed or written.
    #[error("{0}")]
    Files(String),
}

/// How one scenario's browser is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The page's base URL, e.g. `https://127.0.0.1:8443`; `browser.open` paths are under it.
    pub base: String,
    /// Where Chromium saves downloads before `browser.download` moves each to its name.
    pub downloads: PathBuf,
    /// Over HTTPS: the SHA-256 (base64) of the server's public key, which the harness has
    /// checked against the device's pinned CA just before. Chromium accepts a certificate
    /// whose chain holds this key and no other (`--ignore-certificate-errors-spki-list`; it
    /// cannot be given a CA of its own without a system NSS database, and the device's
    /// certificate names the device, not 127.0.0.1).
    pub server_spki: Option<String>,
}

/// Covers each of `arguments[0]` (the secrets) in the page's texts and fields; what it changed
/// is kept for [`SHOW_SECRETS`].
const HIDE_SECRETS: &str = "var secrets = arguments[0], changed = [];\
 function cover(t) { secrets.forEach(function (s) { t = t.split(s).join('*** secret ***'); }); return t; }\
 var walk = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT);\
 for (var n = walk.nextNode(); n; n = walk.nextNode()) { var c = cover(n.nodeValue); if (c !== n.nodeValue) { changed.push([n, 'nodeValue', n.nodeValue]); n.nodeValue = c; } }\
 document.querySelectorAll('input, textarea').forEach(function (f) { var c = cover(f.value); if (c !== f.value) { changed.push([f, 'value', f.value]); f.value = c; } });\
 window.__nexusHilCovered = changed; return changed.length;";

/// Puts back what [`HIDE_SECRETS`] covered.
const SHOW_SECRETS: &str = "(window.__nexusHilCovered || []).forEach(function (c) { c[0][c[1]] = c[2]; });\
 delete window.__nexusHilCovered; return true;";

/// One scenario's browser: a WebDriver session, its chromedriver, its throwaway profile.
pub struct Browser {
    client: Client,
    driver: Driver,
    profile: PathBuf,
    base: String,
    downloads: PathBuf,
    /// From chromedriver's spawn to the WebDriver session being ready.
    pub started_in: Duration,
}

/// The flags Chromium runs with (known to work as root in a container); the proxy flags are
/// added by [`Browser::start`].
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// The Chromium binary: `$NEXUS_HIL_CHROMIUM`, or Debian's.
fn chromium_binary() -> String {
    std::env::var("NEXUS_HIL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// `HOST:PORT` of a base URL, the one place the browser may reach.
pub fn authority(base: &str) -> Result<String, Error> {
    let url = url::Url::parse(base).map_err(|e| Error::Url(format!("the browser's base URL {base:?}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| Error::Url(format!("the browser's base URL {base:?} has no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Error::Url(format!("the browser's base URL {base:?} has no port")))?;
    Ok(format!("{host}:{port}"))
}

/// Chromium's arguments: the fixed flags, the profile, and a proxy that leads nowhere (the
/// discard port of loopback) for everything but the target, so the page can reach nothing else;
/// `<-loopback>` takes away Chromium's implicit bypass for loopback, so even the host's other
/// local services are out of reach.
pub fn chromium_args(profile: &Path, target: &str, server_spki: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    if let Some(spki) = server_spki {
        args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    args.push("--proxy-server=http://127.0.0.1:9".into());
    args.push(format!("--proxy-bypass-list=<-loopback>;{target}"));
    args
}

/// The session's capabilities: Chromium with its arguments, the page's console kept
/// (`goog:loggingPrefs`), downloads into `downloads` without asking.
fn capabilities(args: &[String], downloads: &Path) -> Capabilities {
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": false,
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": chromium_binary(),
            "args": args,
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            },
        },
    });
    match caps {
        Value::Object(m) => m,
        _ => Capabilities::new(),
    }
}

/// A WebDriver command fantoccini has no helper for: chromedriver's CDP passthrough and its
/// log endpoint.
#[derive(Debug)]
struct SessionCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/{}", session.unwrap_or_default(), self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (hyper::Method, Option<String>) {
        (hyper::Method::POST, Some(self.body.to_string()))
    }
}

/// A short reason from a WebDriver error (its first line; the stack traces are of no use).
fn why(e: fantoccini::error::CmdError) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_string()
}

/// WebDriver's failure of a command on the page, its first line.
fn page(e: fantoccini::error::CmdError) -> Error {
    Error::Page(why(e))
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium under it, with a
    /// fresh profile, downloads into `cfg.downloads`.
    pub async fn start(cfg: &Config, timeout: Duration) -> Result<Browser, Error> {
        let started = Instant::now();
        let target = authority(&cfg.base)?;
        std::fs::create_dir_all(&cfg.downloads).map_err(|e| {
            Error::Files(format!(
                "cannot make the download folder {}: {e}",
                cfg.downloads.display()
            ))
        })?;
        let profile = std::env::temp_dir().join(format!(
            "nexus-hil-chromium-{}-{}",
            std::process::id(),
            driver::next_id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| {
            Error::Files(format!(
                "cannot make Chromium's profile folder {}: {e}",
                profile.display()
            ))
        })?;
        let driver = match Driver::spawn(timeout).await {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(e);
            }
        };
        let caps = capabilities(
            &chromium_args(&profile, &target, cfg.server_spki.as_deref()),
            &cfg.downloads,
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let left = timeout.saturating_sub(started.elapsed());
        let connect = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await;
        let client = match tokio::time::timeout(left, async { connect }).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(Error::Start(format!(
                    "chromedriver could not start Chromium ({}): {e}; is Debian's chromium installed? (ci/setup-host)",
                    chromium_binary()
                )));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(Error::Start(format!("Chromium did not start within {timeout:?}")));
            }
        };
        let b = Browser {
            client,
            driver,
            profile,
            base: cfg.base.trim_end_matches('/').to_string(),
            downloads: cfg.downloads.clone(),
            started_in: started.elapsed(),
        };
        // The prefs alone do not reach a headless browser's downloads: allow them by CDP too.
        b.cdp(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": b.downloads}),
        )
        .await?;
        Ok(b)
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Result<Value, Error> {
        let c = SessionCommand {
            path: "goog/cdp/execute",
            body: json!({"cmd": cmd, "params": params}),
        };
        self.client
            .issue_cmd(c)
            .await
            .map_err(|e| Error::Page(format!("Chromium refused {cmd}: {}", why(e))))
    }

    /// The address of the page the browser is on, when it answers.
    pub async fn page_url(&self) -> Option<String> {
        self.client.current_url().await.ok().map(|u| u.to_string())
    }

    /// Where the browser holds `needle`: the page's source, its address, a cookie (any,
    /// HttpOnly ones too), localStorage or sessionStorage, or a file of its profile on disk
    /// (its cookie and storage databases, its cache). An empty list: nowhere. Also what was
    /// searched, in words.
    pub async fn hunt(&self, needle: &str) -> Result<(Vec<String>, String), Error> {
        let mut found = Vec::new();
        let source = self.client.source().await.map_err(page)?;
        if source.contains(needle) {
            found.push("the page's source".to_string());
        }
        let url = self.client.current_url().await.map_err(page)?;
        if url.as_str().contains(needle) {
            found.push("the page's address".to_string());
        }
        let cookies = self.client.get_all_cookies().await.map_err(page)?;
        for c in &cookies {
            if c.name().contains(needle) || c.value().contains(needle) {
                found.push(format!("the cookie {}", c.name()));
            }
        }
        let storage = self
            .client
            .execute(
                "var out = {}; ['localStorage', 'sessionStorage'].forEach(function (k) { \
                   var s = window[k], all = []; \
                   for (var i = 0; i < s.length; i++) { all.push(s.key(i)); all.push(s.getItem(s.key(i))); } \
                   out[k] = all; }); return out;",
                Vec::new(),
            )
            .await
            .map_err(page)?;
        let mut keys = Vec::new();
        for kind in ["localStorage", "sessionStorage"] {
            let all: Vec<&str> = storage[kind]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if all.iter().any(|v| v.contains(needle)) {
                found.push(kind.to_string());
            }
            keys.push(format!("{kind} ({} keys)", all.len() / 2));
        }
        let mut files = 0;
        let mut stack = vec![self.profile.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(t) if t.is_file() => {
                        files += 1;
                        if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                            found.push(format!("the profile's file {}", path.display()));
                        }
                    }
                    _ => {}
                }
            }
        }
        let searched = format!(
            "the page's source and address, {} cookie(s), {}, and {files} file(s) of the browser's profile",
            cookies.len(),
            keys.join(" and ")
        );
        Ok((found, searched))
    }

    /// The full URL of `path` on the target.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens `path` on the target; the page's address afterwards.
    pub async fn open(&self, path: &str) -> Result<String, Error> {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .map_err(|e| Error::Page(format!("cannot open {url}: {}", why(e))))?;
        let now = self.client.current_url().await.map_err(page)?;
        if now.as_str().starts_with("chrome-error:") {
            return Err(Error::Page(format!(
                "cannot open {url}: the browser shows an error page"
            )));
        }
        // A certificate Chromium refuses gets its warning page at the same address.
        if let Ok(warning) = self.client.find(Locator::Css(".interstitial-wrapper")).await {
            let text = warning.text().await.unwrap_or_default();
            let code = text
                .lines()
                .find(|l| l.starts_with("NET::"))
                .unwrap_or("a certificate warning");
            return Err(Error::Certificate(format!(
                "cannot open {url}: Chromium refused the server's certificate ({code}): its key is not the one the harness checked against the device's pinned CA"
            )));
        }
        Ok(now.to_string())
    }

    /// The first element `css` matches, waiting up to `timeout` for one.
    pub async fn find(&self, css: &str, timeout: Duration) -> Result<Element, Error> {
        self.client
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| match e {
                fantoccini::error::CmdError::WaitTimeout => {
                    Error::NotShown(format!("no element matches {css:?} (waited {timeout:?})"))
                }
                other => Error::Page(format!("cannot look for {css:?}: {}", why(other))),
            })
    }

    /// Clicks the first element `css` matches.
    pub async fn click(&self, css: &str, timeout: Duration) -> Result<(), Error> {
        let e = self.find(css, timeout).await?;
        e.click()
            .await
            .map_err(|e| Error::Page(format!("cannot click {css:?}: {}", why(e))))
    }

    /// Clears the field `css` matches and types `value` into it.
    pub async fn fill(&self, css: &str, value: &str, timeout: Duration) -> Result<(), Error> {
        let e = self.find(css, timeout).await?;
        e.clear()
            .await
            .map_err(|e| Error::Page(format!("cannot clear {css:?}: {}", why(e))))?;
        e.send_keys(value)
            .await
            .map_err(|e| Error::Page(format!("cannot type into {css:?}: {}", why(e))))
    }

    /// The text the element shows, or one of its attributes.
    pub async fn read(&self, css: &str, attribute: Option<&str>, timeout: Duration) -> Result<String, Error> {
        let e = self.find(css, timeout).await?;
        match attribute {
            Some(a) => e
                .attr(a)
                .await
                .map_err(|e| Error::Page(format!("cannot read {css:?}: {}", why(e))))?
                .ok_or_else(|| Error::Page(format!("{css:?} has no attribute {a:?}"))),
            None => e
                .text()
                .await
                .map_err(|e| Error::Page(format!("cannot read {css:?}: {}", why(e)))),
        }
    }

    /// Whether an element `css` matches is shown.
    async fn shown(&self, css: &str) -> Result<bool, Error> {
        let all = self
            .client
            .find_all(Locator::Css(css))
            .await
            .map_err(|e| Error::Page(format!("cannot look for {css:?}: {}", why(e))))?;
        for e in all {
            // An element replaced meanwhile is not shown any more.
            if e.is_displayed().await.unwrap_or(false) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until an element `css` matches is shown, or (`gone`) until none is.
    pub async fn wait_for(&self, css: &str, gone: bool, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shown(css).await? != gone {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotShown(if gone {
                    format!("{css:?} was still shown after {timeout:?}")
                } else {
                    format!("nothing matching {css:?} was shown within {timeout:?}")
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css` and waits for the download it starts to finish; moves the file to `save`.
    /// Chromium saves it under its temporary `.crdownload` name until it is complete, so a
    /// finished download is the one file of the download folder without that name.
    pub async fn download(&self, css: &str, save: &Path, timeout: Duration) -> Result<(String, u64), Error> {
        let deadline = Instant::now() + timeout;
        empty_folder(&self.downloads)?;
        self.click(css, timeout).await?;
        loop {
            let files = folder_files(&self.downloads)?;
            let partial = files
                .iter()
                .any(|(n, _)| n.ends_with(".crdownload") || n.starts_with(".com.google"));
            if let [(name, size)] = files.as_slice() {
                if !partial {
                    if let Some(dir) = save.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| Error::Files(format!("cannot make {}: {e}", dir.display())))?;
                    }
                    std::fs::rename(self.downloads.join(name), save)
                        .map_err(|e| Error::Files(format!("cannot move the download to {}: {e}", save.display())))?;
                    return Ok((name.clone(), *size));
                }
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = files.iter().map(|(n, s)| format!("{n} ({s} bytes)")).collect();
                return Err(Error::NotShown(format!(
                    "no download finished within {timeout:?} after clicking {css:?} (download folder: {})",
                    if seen.is_empty() {
                        "empty".to_string()
                    } else {
                        seen.join(", ")
                    }
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&self, secrets: &[String]) -> Result<(Vec<u8>, u64), Error> {
        let secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
        if secrets.is_empty() {
            let png = self.client.screenshot().await;
            return png
                .map(|p| (p, 0))
                .map_err(|e| Error::Page(format!("cannot take a screenshot: {}", why(e))));
        }
        // A secret on the page (a password in its message box) is covered in the picture: each
        // text and field holding one shows a mark instead while the picture is taken, then
        // its own text again.
        let covered = self
            .client
            .execute(HIDE_SECRETS, vec![json!(secrets)])
            .await
            .map_err(|e| Error::Page(format!("cannot cover the secrets before a screenshot: {}", why(e))))?
            .as_u64()
            .unwrap_or(0);
        let png = self.client.screenshot().await;
        let restored = self.client.execute(SHOW_SECRETS, Vec::new()).await;
        let png = png.map_err(|e| Error::Page(format!("cannot take a screenshot: {}", why(e))))?;
        restored.map_err(|e| Error::Page(format!("cannot put the page back after a screenshot: {}", why(e))))?;
        Ok((png, covered))
    }

    /// The page's console since the last call (chromedriver hands each line out once), as
    /// `LEVEL message` lines.
    pub async fn console(&self) -> Result<Vec<String>, Error> {
        let c = SessionCommand {
            path: "se/log",
            body: json!({"type": "browser"}),
        };
        let v = self
            .client
            .issue_cmd(c)
            .await
            .map_err(|e| Error::Page(format!("cannot read the page's console: {}", why(e))))?;
        Ok(console_lines(&v))
    }

    /// What the page shows at a glance, in one line for a failure's message: its address, its
    /// title, and the text of its alerts (`[role=alert]`, where pages put errors), else the
    /// start of its visible text. A selector that never matched is then read against what was
    /// there instead (an error box, a login form, a server's error page).
    pub async fn glance(&self) -> Result<String, Error> {
        let v = self
            .client
            .execute(GLANCE, Vec::new())
            .await
            .map_err(|e| Error::Page(format!("cannot read the page: {}", why(e))))?;
        Ok(glance_line(&v))
    }

    /// Ends the WebDriver session (Chromium quits), stops chromedriver and removes the profile.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.close()).await;
        self.driver.stop().await;
        let _ = std::fs::remove_dir_all(&self.profile);
        // Only if empty: a download nobody moved stays for the reader.
        let _ = std::fs::remove_dir(&self.downloads);
    }
}

/// The page's address, title, alerts' texts and the start of its visible text.
const GLANCE: &str = "var alerts = Array.prototype.map.call(document.querySelectorAll('[role=alert]'), \
 function (e) { return (e.innerText || '').trim(); }).filter(function (t) { return t; });\
 var body = document.body ? (document.body.innerText || '') : '';\
 return { url: location.href, title: document.title, alerts: alerts, text: body };";

/// Longest a glance's text gets, in characters.
const GLANCE_CHARS: usize = 240;

/// A word of the page as a glance shows it: one that could be a password the page shows once
/// (12 or more characters mixing cases or letters and digits, with no `.`, `/` or `:` of a
/// name, path or address) only by its length, since a failure's message goes into reports
/// and it may not be a secret the scenario knows of yet (one it never managed to read).
fn password_like(word: &str) -> String {
    let n = word.chars().count();
    let has = |f: fn(&char) -> bool| word.chars().any(|c| f(&c));
    let classes = [
        has(char::is_ascii_lowercase),
        has(char::is_ascii_uppercase),
        has(char::is_ascii_digit),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    if n >= 12 && classes >= 2 && !word.contains(['.', '/', ':']) {
        format!("<{n} characters>")
    } else {
        word.to_string()
    }
}

/// [`Browser::glance`]'s reply in words.
pub fn glance_line(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let squeeze = |t: &str| {
        let one: String = t.split_whitespace().map(password_like).collect::<Vec<_>>().join(" ");
        match one.char_indices().nth(GLANCE_CHARS) {
            Some((i, _)) => format!("{}...", &one[..i]),
            None => one,
        }
    };
    let alerts: Vec<String> = v
        .get("alerts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|t| format!("{:?}", squeeze(t)))
                .collect()
        })
        .unwrap_or_default();
    let shows = if !alerts.is_empty() {
        format!("its alert(s): {}", alerts.join(", "))
    } else {
        let text = squeeze(s("text"));
        if text.is_empty() {
            "no text".to_string()
        } else {
            format!("no alert; its text begins {text:?}")
        }
    };
    format!("{} ({:?}), {shows}", s("url"), s("title"))
}

/// The entries of chromedriver's log reply as `LEVEL message` lines.
pub fn console_lines(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let level = e.get("level").and_then(Value::as_str).unwrap_or("?");
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or_default();
                    format!("{level} {msg}")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The files of a folder with their sizes, in name order.
fn folder_files(dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map_err(|e| Error::Files(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
        .collect();
    out.sort();
    Ok(out)
}

/// Removes what an earlier download left in the download folder.
fn empty_folder(dir: &Path) -> Result<(), Error> {
    for (name, _) in folder_files(dir)? {
        let p = dir.join(&name);
        let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
