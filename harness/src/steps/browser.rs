//! The browser steps: the device's web page in headless Chromium (`crate::browser`), started by
//! the scenario's first browser step and closed by the runner. Selectors are CSS, or `@key` of
//! the device's selector set; a failed step keeps the page's picture and console.

use std::time::{Duration, Instant};

use base64::Engine;

use super::{StepEnd, StepLog};
use crate::browser::{Browser, Config};
use crate::report::{BrowserEvidence, INLINE_SCREENSHOT_BYTES};
use crate::scenario::{self, family};
use crate::session::Session;

/// How long the evidence of a failure may take (the runner gives a step 5 s over its timeout).
const EVIDENCE_TIME: Duration = Duration::from_secs(4);

/// Runs one browser step; the browser is started first if the scenario has none yet.
pub async fn run(
    s: &mut Session<'_>,
    step: family::Browser<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    let began = Instant::now();
    let mut evidence = BrowserEvidence::default();
    if s.browser.is_none() {
        let b = start(s, timeout, log).await?;
        evidence.started_s = Some(b.started_in.as_secs_f64());
        s.browser = Some(b);
    }
    let left = timeout.saturating_sub(began.elapsed());
    let mut r = act(s, step, left, log, &mut evidence).await;
    if let Err(why) = &mut r {
        log.lines.push(format!("failed: {}", s.mask(&why.to_string())));
        // What was there instead, in the failure's own words (the terminal and JUnit show it).
        if let (Some(page), StepEnd::Failed(m)) = (failure_evidence(s, log, &mut evidence).await, why) {
            *m = format!("{m}; the page: {page}");
        }
    }
    if evidence != BrowserEvidence::default() {
        log.browser = Some(evidence);
    }
    // A secret may sit in any line (a selector built from a variable, the page's address).
    for l in &mut log.lines {
        *l = s.mask(l);
    }
    r
}

/// Starts the scenario's browser on the device's page. Over HTTPS the harness first checks
/// the page's server against the device's pinned CA (fetched and pinned on first use, or the
/// inventory's `ca_sha256`), as `http.get` does, and then lets Chromium accept that server's
/// key and no other (Chromium could not check a chain against a CA of the harness's own). A
/// plain `http://` base (a page of the harness's tests) has nothing to check.
async fn start(s: &Session<'_>, timeout: Duration, log: &mut StepLog) -> Result<Browser, StepEnd> {
    let base = s
        .dev
        .ui
        .base
        .clone()
        .unwrap_or_else(|| format!("https://{}:{}", s.dev.https.host, s.dev.https.port));
    let mut server_spki = None;
    if base.starts_with("https://") {
        let url = url::Url::parse(&base).map_err(|e| format!("the page's address {base:?}: {e}"))?;
        let mut page = s.dev.https.clone();
        page.host = url.host_str().unwrap_or(&page.host).to_string();
        page.port = url.port_or_known_default().unwrap_or(page.port);
        let spki = page
            .server_spki_sha256(timeout)
            .await
            .map_err(|e| format!("the device's web page at {base}: {e}"))?;
        log.lines.push(format!(
            "{base} has a certificate chained to the device's pinned CA ({}); Chromium accepts its key (SPKI SHA-256 {spki}) and no other",
            page.pin.display()
        ));
        server_spki = Some(spki);
    }
    let cfg = Config {
        base,
        downloads: s.work.join(".browser-downloads"),
        server_spki,
    };
    let b = Browser::start(&cfg, timeout).await?;
    log.lines.push(format!(
        "browser started in {:.2} s (chromedriver to session), reaching only {}",
        b.started_in.as_secs_f64(),
        crate::browser::authority(&cfg.base)?
    ));
    Ok(b)
}

/// A step's selector as CSS: `@key` looked up in the device's set, then `${variables}`.
pub fn selector(s: &Session<'_>, given: &str) -> Result<String, StepEnd> {
    let raw = match given.strip_prefix('@') {
        Some(key) => s.dev.ui.selectors.get(key).cloned().ok_or_else(|| {
            let known: Vec<&str> = s.dev.ui.selectors.keys().map(String::as_str).collect();
            format!(
                "this target has no selector `{key}` (it has: {}); name it under [device.ui.selectors] in targets.toml, or give a CSS selector",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })?,
        None => given.to_string(),
    };
    let css = s.subst(&raw);
    if let Some(name) = scenario::references(&css).first() {
        return Err(StepEnd::Failed(format!(
            "selector {given} ({raw}) uses ${{{name}}}, which no earlier step defined"
        )));
    }
    Ok(css)
}

/// What the step does in the page.
async fn act(
    s: &mut Session<'_>,
    step: family::Browser<'_>,
    timeout: Duration,
    log: &mut StepLog,
    evidence: &mut BrowserEvidence,
) -> Result<(), StepEnd> {
    let Some(b) = s.browser.as_ref() else {
        return Err("the browser is not running".into());
    };
    match step {
        family::Browser::BrowserOpen(o) => {
            let path = s.subst(&o.path);
            let at = b.open(&path).await?;
            log.lines.push(format!("opened {}", s.mask(&at)));
        }
        family::Browser::BrowserClick(c) => {
            let css = selector(s, &c.selector)?;
            b.click(&css, timeout).await?;
            log.lines.push(format!("clicked {css}"));
        }
        family::Browser::BrowserFill(f) => {
            let css = selector(s, &f.selector)?;
            let value = s.subst(&f.value);
            b.fill(&css, &value, timeout).await?;
            let shown = if f.secret {
                format!("<secret, {} characters>", value.chars().count())
            } else {
                s.mask(&value)
            };
            log.lines.push(format!("filled {css} with {shown}"));
            if f.secret {
                s.secrets.push(value);
            }
        }
        family::Browser::BrowserRead(r) => {
            let css = selector(s, &r.selector)?;
            let attribute = r.attribute.as_ref().map(|a| s.subst(a));
            let value = b.read(&css, attribute.as_deref(), timeout).await?;
            let value = value.trim().to_string();
            let shown = if r.secret {
                format!("<secret, {} characters>", value.chars().count())
            } else {
                s.mask(&format!("{value:?}"))
            };
            log.lines.push(format!("read {css} into ${{{}}}: {shown}", r.capture));
            if r.secret {
                s.secrets.push(value.clone());
            }
            s.vars.insert(r.capture.clone(), value);
        }
        family::Browser::BrowserWaitFor(w) => {
            let css = selector(s, &w.selector)?;
            let t = Instant::now();
            b.wait_for(&css, w.gone, timeout).await?;
            let what = if w.gone { "gone" } else { "shown" };
            log.lines
                .push(format!("{css} {what} after {:.1} s", t.elapsed().as_secs_f64()));
        }
        family::Browser::BrowserDownload(d) => {
            let css = selector(s, &d.selector)?;
            let save = s.local(&d.save);
            let (name, size) = b.download(&css, &save, timeout).await?;
            log.lines.push(format!(
                "clicked {css}; the browser downloaded {name} ({size} bytes), saved as {}",
                save.display()
            ));
        }
        family::Browser::BrowserScreenshot(sh) => {
            let mut name = s.subst(&sh.name);
            if !name.ends_with(".png") {
                name.push_str(".png");
            }
            let (png, covered) = b.screenshot(&s.secret_values()).await?;
            let file = s.work.join(&name);
            std::fs::write(&file, &png).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            log.lines.push(format!(
                "screenshot {} ({} bytes; {covered} text(s) holding a secret covered in it)",
                file.display(),
                png.len()
            ));
            evidence.screenshots.push(name);
        }
        family::Browser::BrowserExpectText(e) => {
            let css = selector(s, &e.selector)?;
            let want = s.subst(&e.contains);
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let text = b.read(&css, None, left).await?;
                if text.contains(&want) {
                    log.lines.push(s.mask(&format!("{css} shows {text:?}")));
                    break;
                }
                if Instant::now() > deadline {
                    return Err(s
                        .mask(&format!(
                            "{css} shows {text:?}, which does not contain {want:?} (waited {timeout:?})"
                        ))
                        .into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        family::Browser::BrowserExpectAbsent(a) => {
            let value = s.subst(&a.value);
            if value.is_empty() {
                return Err("the value to look for is empty".into());
            }
            let (found, searched) = b.hunt(&value).await?;
            if !found.is_empty() {
                return Err(s
                    .mask(&format!("{value:?} is kept by the browser: in {}", found.join(", ")))
                    .into());
            }
            log.lines.push(s.mask(&format!("{value:?} is in none of {searched}")));
        }
        family::Browser::BrowserLogin(_) => {
            let (user, password, from) = credentials(s).await?;
            let (u, p, l) = (
                selector(s, "@username")?,
                selector(s, "@password")?,
                selector(s, "@login")?,
            );
            b.fill(&u, &user, timeout).await?;
            b.fill(&p, &password, timeout).await?;
            b.click(&l, timeout).await?;
            log.lines.push(format!(
                "logged in as {user} (its password from {from}, {} characters): filled {u} and {p}, clicked {l}",
                password.chars().count()
            ));
            s.secrets.push(password);
        }
    }
    Ok(())
}

/// The target's admin account for its page: the user, the password, and where it came from.
async fn credentials(s: &Session<'_>) -> Result<(String, String, String), StepEnd> {
    let ui = &s.dev.ui;
    let user = ui.user.clone().ok_or_else(|| {
        "this target names no admin account for its web page: give [device.ui] user and password_file in targets.toml".to_string()
    })?;
    let (password, from) = if let Some(f) = &ui.password_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("the web page's password file {}: {e}", f.display()))?;
        (text.lines().next().unwrap_or("").to_string(), f.display().to_string())
    } else if let Some(f) = &ui.password_on_device {
        let out = s
            .ssh("root", &format!("cat {f}"), None, Duration::from_secs(20))
            .await
            .map_err(|e| format!("cannot read the web page's admin password from the device's {f}: {e}"))?;
        (
            out.stdout.lines().next().unwrap_or("").to_string(),
            format!("the device's {f}"),
        )
    } else {
        return Err(StepEnd::Failed(format!(
            "this target names no password for its web page's user {user}: give [device.ui] password_file in targets.toml"
        )));
    };
    let password = password.trim().to_string();
    if password.is_empty() {
        return Err(StepEnd::Failed(format!(
            "the web page's password for {user} (from {from}) is empty"
        )));
    }
    Ok((user, password, from))
}

/// The page as the failed step left it: a screenshot (a file of the work folder, and inline
/// in the report when small enough), the page's console, and a glance at what it shows
/// ([`Browser::glance`]) for the failure's message.
async fn failure_evidence(s: &Session<'_>, log: &mut StepLog, evidence: &mut BrowserEvidence) -> Option<String> {
    let b = s.browser.as_ref()?;
    let got = tokio::time::timeout(EVIDENCE_TIME, async {
        (
            b.screenshot(&s.secret_values()).await,
            b.console().await,
            b.glance().await,
        )
    })
    .await;
    let Ok((png, console, glance)) = got else {
        log.lines
            .push("the page's screenshot, console and text could not be fetched in time".into());
        return None;
    };
    match png {
        Ok((png, _)) => {
            let n = (1..)
                .find(|n| !s.work.join(format!("browser-failure-{n}.png")).exists())
                .unwrap_or(1);
            let name = format!("browser-failure-{n}.png");
            match std::fs::write(s.work.join(&name), &png) {
                Ok(()) => evidence.screenshots.push(name.clone()),
                Err(e) => log.lines.push(format!("cannot save {name}: {e}")),
            }
            if png.len() <= INLINE_SCREENSHOT_BYTES {
                evidence.failure_png = Some(base64::engine::general_purpose::STANDARD.encode(&png));
            }
            log.lines.push(format!("the page at the failure: {name}"));
        }
        Err(e) => log.lines.push(e.to_string()),
    }
    match console {
        Ok(lines) => evidence.console = lines.iter().map(|l| s.mask(l)).collect(),
        Err(e) => log.lines.push(e.to_string()),
    }
    glance
        .map(|g| s.mask(&g))
        .map_err(|e| log.lines.push(e.to_string()))
        .ok()
}
