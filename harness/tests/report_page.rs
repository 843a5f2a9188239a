//! The run's HTML report opened in headless Chromium (Debian's): its charts render (each SVG
//! has a size on the page), the picture a failed browser step kept decodes, nothing is fetched
//! and the console is quiet; a screenshot is kept with the test output. The same checks are
//! shown failing on copies broken on purpose.

use std::path::Path;

use nexus_harness::report::{
    html, BrowserEvidence, Latency, Measured, Outcome, Percentiles, ProgressSample, RunReport, ScenarioReport,
    StepReport, Verdict,
};

#[path = "common/chromium.rs"]
mod chromium;
use chromium::{chromium, console_errors};

fn step(index: usize, kind: &str, outcome: Outcome) -> StepReport {
    StepReport {
        index,
        kind: kind.into(),
        line: 5 + index * 4,
        outcome,
        duration_s: 1.5,
        message: None,
        transcript: vec![format!("{kind} ran")],
        progress: Vec::new(),
        latency: None,
        baseline: None,
        browser: None,
        wear: None,
        card: None,
    }
}

fn probe(name: &str, p99: u64, verdict: Option<Verdict>) -> Latency {
    Latency {
        name: name.into(),
        during: Some("nexus-hil-backup-loop 3".into()),
        window_p99_us: vec![p99 - 20, p99, p99 + 15],
        measured: Measured {
            period_us: 10_000,
            io: true,
            samples: 6000,
            missed: 1,
            lateness_us: Percentiles {
                p50: 90,
                p99,
                p999: p99 * 2,
                max: p99 * 4,
                mean: 120.0,
            },
            io_us: None,
            lateness_buckets: vec![(64, 400), (128, 5000), (256, 500), (p99.next_power_of_two(), 100)],
            lateness_counts: vec![],
            io_counts: vec![],
        },
        verdict,
    }
}

/// A run as the suite writes it: a perf scenario (probes, a backup's progress) and the UI
/// scenario whose browser step failed with the page's picture (a real PNG Chromium took).
fn run(png: &[u8]) -> RunReport {
    use base64::Engine;
    let mut idle = step(1, "probe.latency", Outcome::Passed);
    idle.latency = Some(probe("idle", 400, None));
    let mut busy = step(2, "probe.latency", Outcome::Passed);
    busy.latency = Some(probe(
        "backup, default cap",
        450,
        Some(Verdict {
            compare_to: "idle".into(),
            ratio: 1.12,
            max_ratio: Some(1.2),
            met: true,
        }),
    ));
    let mut wait = step(3, "backup.wait", Outcome::Passed);
    wait.progress = (0..=8u32)
        .map(|i| ProgressSample {
            at_s: f64::from(i),
            percent: (i * 12) as _,
            bytes_done: u64::from(i) * (32 << 20),
            bytes_total: 256 << 20,
        })
        .collect();
    let mut click = step(4, "browser.click", Outcome::Failed);
    click.message = Some("no element matches \"a#download\" (waited 5m)".into());
    click.browser = Some(BrowserEvidence {
        started_s: None,
        screenshots: vec!["browser-failure-4.png".into()],
        failure_png: Some(base64::engine::general_purpose::STANDARD.encode(png)),
        console: vec!["SEVERE https://127.0.0.1:8443/control/ - Failed to load resource".into()],
    });
    let scenario = |name: &str, outcome, steps| ScenarioReport {
        name: name.into(),
        file: format!("{name}.yaml"),
        outcome,
        reason: None,
        duration_s: 42.0,
        ready_s: Some(0.8),
        steps,
        journal: None,
        console: None,
        device_state: None,
        cleanup: Vec::new(),
        undo_failed: false,
        device: None,
        device_info: None,
        required: false,
        attempt: Default::default(),
    };
    RunReport {
        target: "emulator".into(),
        duration_s: 90.0,
        scenarios: vec![
            scenario(
                "Home-automation latency during backups",
                Outcome::Passed,
                vec![idle, busy, wait],
            ),
            scenario("Control-UI flow", Outcome::Failed, vec![click]),
        ],
        infra_error: None,
        seed: Some(7),
        partition: None,
        health: Default::default(),
        changes: Vec::new(),
    }
}

/// What the page looks like once Chromium laid it out: a script added to a copy writes, into
/// the page's title, each SVG's size and each image's decoded width.
const MEASURE: &str = "<script>window.addEventListener('load', function () {\
 var svg = Array.prototype.map.call(document.querySelectorAll('svg'), function (s) {\
 var r = s.getBoundingClientRect(); return Math.round(r.width) + 'x' + Math.round(r.height); });\
 var img = Array.prototype.map.call(document.images, function (i) { return i.naturalWidth; });\
 document.title = 'measured svg=' + svg.join(',') + ' img=' + img.join(','); });</script>";

/// The measured title of `page` (a file), and the console's errors.
fn measure(page: &Path, dir: &Path) -> (String, Vec<String>) {
    let html = std::fs::read_to_string(page).unwrap();
    let copy = dir.join("measured.html");
    std::fs::write(&copy, html.replace("</body>", &format!("{MEASURE}</body>"))).unwrap();
    let (dom, stderr) = chromium(&format!("file://{}", copy.display()), &["--dump-dom"]);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or("")
        .to_string();
    (title, console_errors(&stderr))
}

#[test]
fn the_run_report_renders_in_chromium_with_its_charts_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    // A real picture of a page, as a failed browser step keeps it.
    let shot = dir.path().join("shot.png");
    std::fs::write(dir.path().join("p.html"), "<h1>the page as it was</h1>").unwrap();
    chromium(
        &format!("file://{}", dir.path().join("p.html").display()),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "Chromium took no screenshot");

    // Through JSON, as `report merge` reads it back.
    let report: RunReport = serde_json::from_str(&serde_json::to_string(&run(&png)).unwrap()).unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, html::render(&report)).unwrap();
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(
        !text.contains("src=\"http") && !text.contains("href=\"http") && !text.contains("<link"),
        "the report fetches something"
    );
    let charts = text.matches("<svg").count();
    assert!(charts >= 4, "{charts} charts");

    let (title, errors) = measure(&page, dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let (svg, img) = title
        .strip_prefix("measured svg=")
        .and_then(|t| t.split_once(" img="))
        .unwrap_or_else(|| panic!("the measuring script did not run: {title:?}"));
    let sizes: Vec<&str> = svg.split(',').collect();
    assert_eq!(sizes.len(), charts, "{svg}");
    for s in &sizes {
        let (w, h) = s.split_once('x').unwrap();
        assert!(
            w.parse::<u32>().unwrap() >= 200 && h.parse::<u32>().unwrap() >= 150,
            "a chart laid out at {s}"
        );
    }
    assert_eq!(img.split(',').collect::<Vec<_>>().len(), 1, "{img}");
    assert!(
        img.parse::<u32>().unwrap() > 100,
        "the failure picture did not decode: {img}"
    );

    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-report.png");
    let _ = std::fs::remove_file(&kept);
    let (_, stderr) = chromium(
        &format!("file://{}", page.display()),
        &[&format!("--screenshot={}", kept.display())],
    );
    assert!(console_errors(&stderr).is_empty(), "{stderr}");
    assert!(
        std::fs::read(&kept).unwrap_or_default().len() > 10_000,
        "no screenshot at {}",
        kept.display()
    );
    eprintln!("screenshot: {}", kept.display());

    // The checks can fail: a picture that is not one, a chart with no room, a script error.
    let broken = dir.path().join("broken.html");
    let b64 = report.scenarios[1].steps[0]
        .browser
        .as_ref()
        .unwrap()
        .failure_png
        .clone()
        .unwrap();
    std::fs::write(
        &broken,
        text.replacen(&b64, "bm90IGEgcGljdHVyZQ==", 1)
            .replacen("<svg ", "<svg style=\"display:none\" ", 1)
            .replace("</body>", "<script>nosuch();</script></body>"),
    )
    .unwrap();
    let (title, errors) = measure(&broken, dir.path());
    assert!(title.contains("svg=0x0,"), "the hidden chart is seen: {title}");
    assert!(title.ends_with("img=0"), "the broken picture is seen: {title}");
    assert!(
        errors.len() == 1 && errors[0].contains("nosuch is not defined"),
        "{errors:?}"
    );
}
