//! `nexus-hil report`: a run as one self-contained HTML page. The summary and each scenario's
//! steps; for `probe.latency` steps the percentile table of every condition with its verdict,
//! the lateness distributions of all conditions on one chart and each condition's histogram
//! side by side; for `backup.wait` steps the backup's progress over time and its throughput.
//! Charts are inline SVG drawn with plotters: no script, no font, nothing fetched.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{Latency, Outcome, ProgressSample, RunReport, ScenarioReport, StepReport};

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
        Outcome::InfraError => "infrastructure error",
    }
}

/// Renders the whole page.
pub fn render(report: &RunReport) -> String {
    let t = report.totals();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nexus-hil: {}</title>\n<style>{CSS}</style></head><body>\n\
         <h1>nexus-hil run against {}</h1>\n<p class=\"totals\">{} passed, {} failed, {} skipped, {} infrastructure errors, in {:.1} s</p>\n",
        esc(&report.target),
        esc(&report.target),
        t.passed,
        t.failed,
        t.skipped,
        t.errors,
        report.duration_s
    );
    if let Some(e) = &report.infra_error {
        let _ = writeln!(h, "<p class=\"infra_error\">Infrastructure error: {}</p>", esc(e));
    }
    for w in &report.changes {
        let lines = super::terminal::what_changed(w);
        let _ = write!(h, "<div class=\"what_changed\"><p>{}</p>", esc(&lines[0]));
        if lines.len() > 1 {
            h.push_str("<ul>");
            for l in &lines[1..] {
                let _ = write!(h, "<li>{}</li>", esc(l.trim()));
            }
            h.push_str("</ul>");
        }
        h.push_str("</div>\n");
    }
    if t.flaky > 0 {
        let names: Vec<String> = report.flaky().iter().map(|s| esc(&s.label())).collect();
        let _ = writeln!(
            h,
            "<p class=\"flaky\">FLAKY (passed only on a retry): {}</p>",
            names.join("; ")
        );
    }
    repeated_section(&mut h, report);
    h.push_str("<table><tr><th>scenario</th><th>result</th><th>time</th><th>why</th></tr>\n");
    for s in &report.scenarios {
        let (class, result) = result(s);
        let why = if s.attempt.tries.is_empty() {
            s.reason.clone().unwrap_or_default()
        } else {
            super::terminal::tries_line(s)
        };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\"><td><a href=\"#{}\">{}</a></td><td>{result}</td><td>{:.1} s</td><td>{}</td></tr>",
            super::slug(&s.label()),
            esc(&s.label()),
            s.duration_s,
            esc(&why)
        );
    }
    h.push_str("</table>\n");
    for s in &report.scenarios {
        let _ = writeln!(
            h,
            "<section id=\"{}\"><h2>{}</h2><p class=\"file\">{} &middot; {}{}{}{}</p>",
            super::slug(&s.label()),
            esc(&s.label()),
            esc(&s.file),
            result(s).1,
            s.attempt
                .seed
                .map(|n| format!(" &middot; seed {n}"))
                .unwrap_or_default(),
            s.ready_s
                .map(|r| format!(" &middot; emulator ready in {r:.2} s"))
                .unwrap_or_default(),
            s.steps
                .iter()
                .find_map(|st| st.browser.as_ref()?.started_s)
                .map(|b| format!(" &middot; browser started in {b:.2} s"))
                .unwrap_or_default()
        );
        let probes: Vec<&Latency> = s
            .steps
            .iter()
            .flat_map(|st| st.baseline.iter().chain(st.latency.iter()))
            .collect();
        if !probes.is_empty() {
            latency_section(&mut h, &probes);
        }
        let waits: Vec<&StepReport> = s.steps.iter().filter(|st| running(st).len() >= 2).collect();
        if !waits.is_empty() {
            progress_section(&mut h, &waits);
        }
        h.push_str("<details><summary>steps</summary><table><tr><th>#</th><th>step</th><th>line</th><th>result</th><th>time</th><th>message</th></tr>\n");
        for st in &s.steps {
            let _ = writeln!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} s</td><td>{}</td></tr>",
                outcome(st.outcome).replace(' ', "_"),
                st.index,
                esc(&st.kind),
                st.line,
                outcome(st.outcome),
                st.duration_s,
                esc(st.message.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table></details>\n");
        for c in s.steps.iter().filter_map(|st| st.card.as_ref()) {
            h.push_str(&c.html());
        }
        browser_section(&mut h, s);
        if !s.cleanup.is_empty() {
            // A failed undo is open and red: the device is not as its owner had it.
            let (open, summary) = if s.undo_failed {
                (" open class=\"failed\"", "the undo failed: changes stay on the device")
            } else {
                ("", "removed from the device afterwards")
            };
            let _ = writeln!(
                h,
                "<details{open}><summary>{summary}</summary><pre>{}</pre></details>",
                esc(&s.cleanup.join("\n"))
            );
        }
        if let Some(d) = &s.device_state {
            let _ = writeln!(
                h,
                "<details><summary>device state</summary><pre>{}</pre></details>",
                esc(d)
            );
        }
        if let Some(c) = &s.console {
            // The scenario's work folder, relative to this page (written in the report folder).
            let work = s.work_dir();
            let _ = writeln!(
                h,
                "<details open><summary>Console (last {} lines; whole log: <a href=\"{work}/console.log\">{work}/console.log</a>)</summary><pre>{}</pre></details>",
                super::CONSOLE_LINES,
                esc(c),
                work = esc(&work),
            );
        }
        if let Some(j) = &s.journal {
            let _ = writeln!(
                h,
                "<details><summary>device journal</summary><pre>{}</pre></details>",
                esc(j)
            );
        }
        tries_section(&mut h, s);
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// A scenario's class and result as the page shows them: FLAKY for one that passed only on a
/// retry, never a plain pass.
fn result(s: &ScenarioReport) -> (&'static str, String) {
    if s.flaky() {
        return (
            "flaky",
            format!("FLAKY: passed on try {} of {}", s.try_count(), s.try_count()),
        );
    }
    let o = outcome(s.outcome);
    let shown = if s.attempt.tries.is_empty() {
        o.to_string()
    } else {
        format!("{o} on every try ({})", s.try_count())
    };
    (
        if s.outcome == Outcome::InfraError {
            "infrastructure_error"
        } else {
            o
        },
        shown,
    )
}

/// The repeated scenarios (`run --repeat N`): passes of N and the failure ratio with its
/// interval.
fn repeated_section(h: &mut String, report: &RunReport) {
    let repeated = report.repeated();
    if repeated.is_empty() {
        return;
    }
    h.push_str("<h3>Repeated: flaky or real?</h3>\n<table><tr><th>scenario</th><th>device</th><th>passed</th><th>failure ratio</th><th>95 % interval (Wilson)</th><th>not counted</th></tr>\n");
    for r in repeated {
        let (lo, hi) = r.interval();
        let _ = writeln!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}/{}</td><td>{:.1} %</td><td>{:.1}-{:.1} %</td><td>{}</td></tr>",
            if r.passes == r.runs { "passed" } else { "failed" },
            esc(&r.name),
            esc(r.device.as_deref().unwrap_or("")),
            r.passes,
            r.runs,
            r.failure_ratio() * 100.0,
            lo * 100.0,
            hi * 100.0,
            r.other
        );
    }
    h.push_str("</table>\n");
}

/// Each earlier try of a retried scenario, open, with its seed, why it failed, its steps'
/// transcript, its work folder and its journal.
fn tries_section(h: &mut String, s: &ScenarioReport) {
    let n = s.try_count();
    for (i, t) in s.attempt.tries.iter().enumerate() {
        let _ = writeln!(
            h,
            "<details open class=\"try\"><summary>try {} of {n}: {}{}: {}</summary>\
             <p class=\"file\">work folder: <a href=\"{work}\">{work}</a></p><pre>{}</pre>{}</details>",
            i + 1,
            outcome(t.outcome),
            t.attempt.seed.map(|n| format!(" (seed {n})")).unwrap_or_default(),
            esc(t.reason.as_deref().unwrap_or("")),
            esc(&super::terminal::transcript(t)),
            t.journal
                .as_ref()
                .map(|j| format!(
                    "<details><summary>device journal of try {}</summary><pre>{}</pre></details>",
                    i + 1,
                    esc(j)
                ))
                .unwrap_or_default(),
            work = esc(&t.work_dir()),
        );
    }
}

/// The browser steps' pictures: a failed step's page inline (the report stays one file) with
/// its console, the screenshots asked for as links into the work folder.
fn browser_section(h: &mut String, s: &super::ScenarioReport) {
    let work = s.work_dir();
    for st in &s.steps {
        let Some(b) = &st.browser else { continue };
        let failed = b.failure_png.is_some() || !b.console.is_empty();
        if !failed && b.screenshots.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<details{}><summary>step {} {}: {}</summary>",
            if failed { " open" } else { "" },
            st.index,
            esc(&st.kind),
            if failed {
                "the page when it failed"
            } else {
                "screenshot"
            }
        );
        if let Some(png) = &b.failure_png {
            let _ = write!(
                h,
                "<img style=\"max-width:100%;border:1px solid #ccc\" alt=\"the page when step {} failed\" src=\"data:image/png;base64,{}\">",
                st.index,
                esc(png)
            );
        }
        for f in &b.screenshots {
            let _ = write!(h, "<p><a href=\"{0}/{1}\">{0}/{1}</a></p>", esc(&work), esc(f));
        }
        if !b.console.is_empty() {
            let _ = write!(h, "<p>The page's console:</p><pre>{}</pre>", esc(&b.console.join("\n")));
        }
        h.push_str("</details>\n");
    }
}

fn latency_section(h: &mut String, probes: &[&Latency]) {
    h.push_str("<h3>Home-automation loop: lateness against its schedule</h3>\n<table><tr><th>condition</th><th>ticks</th><th>p50 &micro;s</th><th>p99 &micro;s</th><th>p99.9 &micro;s</th><th>max &micro;s</th><th>missed periods</th><th>tick I/O p99 &micro;s</th><th>p99 vs</th><th>verdict</th></tr>\n");
    for p in probes {
        let m = &p.measured;
        let l = &m.lateness_us;
        let (vs, verdict, class) = match &p.verdict {
            None => (String::new(), String::new(), ""),
            Some(v) => (
                format!("{:.2}x {}", v.ratio, esc(&v.compare_to)),
                match v.max_ratio {
                    Some(max) if v.met => format!("met (at most {max}x)"),
                    Some(max) => format!("missed (at most {max}x)"),
                    None => "reported".into(),
                },
                match v.max_ratio {
                    Some(_) if v.met => "passed",
                    Some(_) => "failed",
                    None => "",
                },
            ),
        };
        let _ = writeln!(
            h,
            "<tr><td title=\"{}\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{vs}</td><td class=\"{class}\">{verdict}</td></tr>",
            esc(p.during.as_deref().unwrap_or("no load")),
            esc(&p.name),
            if p.window_p99_us.is_empty() {
                String::new()
            } else {
                format!(
                    " <small>({} windows, taking turns; p99 per window: {})</small>",
                    p.window_p99_us.len(),
                    p.window_p99_us.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )
            },
            m.samples,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            m.missed,
            m.io_us.as_ref().map(|io| io.p99.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    h.push_str("</table>\n<div class=\"charts\">");
    h.push_str(&exceedance_chart(probes));
    for (i, p) in probes.iter().enumerate() {
        h.push_str(&histogram_chart(p, COLORS[i % COLORS.len()]));
    }
    h.push_str("</div>\n");
}

/// The share of ticks later than x, per condition, on log-log axes: the tail is what matters.
fn exceedance_chart(probes: &[&Latency]) -> String {
    let max_us = probes
        .iter()
        .map(|p| p.measured.lateness_us.max)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let min_share = probes
        .iter()
        .map(|p| 1.0 / p.measured.samples.max(1) as f64)
        .fold(1.0, f64::min);
    svg((560, 360), |root| draw_exceedance(root, probes, max_us, min_share))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One chart of `size` pixels as inline SVG, drawn by `draw`. A chart that cannot be drawn
/// (no data to scale) is left empty rather than failing the page.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<(), Box<dyn std::error::Error>>) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let _ = draw(&root);
        let _ = root.present();
    }
    out
}

fn draw_exceedance(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    probes: &[&Latency],
    max_us: f64,
    min_share: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption("ticks later than x (share)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((1.0..max_us * 2.0).log_scale(), (min_share / 2.0..1.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("lateness, µs")
        .y_desc("share of ticks")
        .x_label_formatter(&|v| format!("{}", *v as u64))
        .draw()?;
    for (i, p) in probes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let total = p.measured.samples.max(1) as f64;
        let mut later = total;
        let mut points = vec![(1.0, 1.0)];
        for &(upper, count) in &p.measured.lateness_buckets {
            later -= count as f64;
            if later <= 0.0 {
                break;
            }
            points.push((upper.max(1) as f64, later / total));
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(p.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One condition's lateness histogram (log2 buckets of µs).
fn histogram_chart(p: &Latency, color: RGBColor) -> String {
    svg((360, 260), |root| draw_histogram(root, p, color))
}

fn draw_histogram(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    p: &Latency,
    color: RGBColor,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let buckets = &p.measured.lateness_buckets;
    let top = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let right = buckets.last().map(|b| b.0).unwrap_or(2).max(2) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{} (p99 {} µs)", p.name, p.measured.lateness_us.p99),
            ("sans-serif", 14),
        )
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(48)
        .build_cartesian_2d((0.5..right * 1.5).log_scale(), (0.5..top * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("lateness, µs")
        .y_desc("ticks")
        .x_label_formatter(&|v| format!("{}", *v as u64))
        .y_label_formatter(&|v| format!("{}", *v as u64))
        .draw()?;
    // Bucket i holds the ticks above bucket i-1's bound up to its own.
    let bars = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| b.1 > 0)
        .map(|(i, &(upper, count))| {
            let from = if i == 0 { 0.5 } else { buckets[i - 1].0 as f64 };
            Rectangle::new(
                [(from.max(0.5), 0.5), (upper as f64, count as f64)],
                color.mix(0.7).filled(),
            )
        });
    chart.draw_series(bars)?;
    Ok(())
}

/// The samples taken while the backup ran (once it ends, Status reports no totals).
fn running(w: &StepReport) -> Vec<&ProgressSample> {
    w.progress.iter().filter(|p| p.bytes_total > 0).collect()
}

fn progress_section(h: &mut String, waits: &[&StepReport]) {
    h.push_str("<h3>Backups: progress over time</h3>\n<table><tr><th>step</th><th>line</th><th>bytes</th><th>time</th><th>throughput</th></tr>\n");
    for w in waits {
        let samples = running(w);
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let secs = (last.at_s - first.at_s).max(0.001);
        let _ = writeln!(
            h,
            "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{secs:.1} s</td><td>{:.1} MiB/s</td></tr>",
            w.index,
            esc(&w.kind),
            w.line,
            last.bytes_total,
            (last.bytes_done.saturating_sub(first.bytes_done)) as f64 / secs / 1048576.0
        );
    }
    h.push_str("</table>\n");
    h.push_str("<div class=\"charts\">");
    h.push_str(&svg((560, 300), |root| draw_progress(root, waits)));
    h.push_str("</div>\n");
}

fn draw_progress(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    waits: &[&StepReport],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let longest = waits
        .iter()
        .map(|w| {
            let r = running(w);
            r.last().map(|l| l.at_s - r[0].at_s).unwrap_or(0.0)
        })
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption("backup progress", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..longest * 1.05, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the wait began")
        .y_desc("%")
        .draw()?;
    for (i, w) in waits.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let samples = running(w);
        let t0 = samples[0].at_s;
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|p| (p.at_s - t0, p.percent as f64)),
                color.stroke_width(2),
            ))?
            .label(format!("step {} (line {})", w.index, w.line))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

pub(crate) const CSS: &str = "body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:90%}\
th{background:#f2f2f2}.passed{color:#1a7f37}.failed{color:#c62828;font-weight:bold}.infrastructure_error{color:#b26a00}\
.skipped{color:#777}.flaky{color:#8e24aa;font-weight:bold}.try{border-left:3px solid #8e24aa;padding-left:8px}.infra_error{color:#b26a00;font-weight:bold}.file{color:#666;font-size:85%}\
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts svg{border:1px solid #eee}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:80%}\
section{border-top:2px solid #ddd;margin-top:1.5em}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Measured, Percentiles, ScenarioReport, Verdict};

    fn probe(name: &str, p99: u64, verdict: Option<Verdict>) -> Latency {
        Latency {
            name: name.into(),
            during: Some("load".into()),
            window_p99_us: vec![],
            measured: Measured {
                period_us: 10_000,
                io: true,
                samples: 1000,
                missed: 3,
                lateness_us: Percentiles {
                    p50: 80,
                    p99,
                    p999: p99 * 2,
                    max: p99 * 3,
                    mean: 100.0,
                },
                io_us: None,
                lateness_buckets: vec![(64, 10), (128, 900), (256, 80), (p99.next_power_of_two(), 10)],
                lateness_counts: vec![],
                io_counts: vec![],
            },
            verdict,
        }
    }

    fn step(i: usize, kind: &str) -> StepReport {
        StepReport {
            index: i,
            kind: kind.into(),
            line: i * 3,
            outcome: Outcome::Passed,
            duration_s: 1.0,
            message: None,
            transcript: vec![],
            progress: vec![],
            latency: None,
            baseline: None,
            browser: None,
            wear: None,
            card: None,
        }
    }

    #[test]
    fn the_page_holds_every_condition_its_verdict_and_charts() {
        let mut idle = step(1, "probe.latency");
        idle.latency = Some(probe("idle", 900, None));
        // A probe that took turns with its own unloaded windows shows both conditions.
        let mut turns = step(4, "probe.latency");
        turns.baseline = Some(Latency {
            window_p99_us: vec![700, 650, 690, 710, 680, 900],
            ..probe("between windows", 700, None)
        });
        turns.latency = Some(Latency {
            window_p99_us: vec![800, 780, 820, 790, 800, 810],
            ..probe("backup, in turns", 800, None)
        });
        let mut busy = step(2, "probe.latency");
        busy.latency = Some(probe(
            "backup <capped>",
            1500,
            Some(Verdict {
                compare_to: "idle".into(),
                ratio: 1.67,
                max_ratio: Some(1.2),
                met: false,
            }),
        ));
        let mut wait = step(3, "backup.wait");
        wait.progress = (0..5)
            .map(|i| ProgressSample {
                at_s: i as f64,
                percent: i * 25,
                bytes_done: (i * 25) << 20,
                bytes_total: 100 << 20,
            })
            .collect();
        // After the end Status has no totals; that sample is no part of the throughput.
        wait.progress.push(ProgressSample {
            at_s: 4.5,
            percent: 0,
            bytes_done: 0,
            bytes_total: 0,
        });
        let report = RunReport {
            target: "emulator".into(),
            duration_s: 12.0,
            scenarios: vec![ScenarioReport {
                name: "Latency".into(),
                file: "perf.yaml".into(),
                outcome: Outcome::Passed,
                reason: None,
                duration_s: 10.0,
                ready_s: Some(0.6),
                steps: vec![idle, busy, wait, turns],
                journal: None,
                console: None,
                device_state: None,
                cleanup: Vec::new(),
                undo_failed: false,
                device: None,
                device_info: None,
                required: false,
                attempt: Default::default(),
            }],
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
            changes: Vec::new(),
        };
        let page = render(&report);
        assert!(page.contains("<td title=\"load\">idle</td>"), "{page}");
        assert!(page.contains("backup &lt;capped&gt;"), "names are escaped");
        assert!(page.contains("1.67x idle") && page.contains("missed (at most 1.2x)"));
        let between = page.find(
            "between windows <small>(6 windows, taking turns; p99 per window: 700, 650, 690, 710, 680, 900)</small>",
        );
        let in_turns = page.find("backup, in turns <small>(6 windows");
        assert!(
            between.is_some() && between < in_turns,
            "the unloaded windows come first: {page}"
        );
        // One exceedance chart, one histogram per condition (4), one progress chart.
        assert_eq!(page.matches("<svg").count(), 6, "{page}");
        assert!(page.contains("25.0 MiB/s"), "throughput of 100 MiB in 4 s");
        // Self-contained: nothing loaded from anywhere, no script.
        assert!(!page.contains("src=") && !page.contains("href=\"http") && !page.contains("<link"));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn a_failed_scenario_shows_its_console_tail_escaped_with_the_whole_log_linked() {
        let scenario = |name: &str, outcome, console: Option<&str>| ScenarioReport {
            name: name.into(),
            file: "s.yaml".into(),
            outcome,
            reason: None,
            duration_s: 1.0,
            ready_s: None,
            steps: vec![],
            journal: Some("journal".into()),
            console: console.map(String::from),
            device_state: None,
            cleanup: Vec::new(),
            undo_failed: false,
            device: Some("pi-1".into()),
            device_info: None,
            required: false,
            attempt: Default::default(),
        };
        let report = RunReport {
            target: "fleet".into(),
            duration_s: 2.0,
            scenarios: vec![
                scenario(
                    "Power cut",
                    Outcome::Failed,
                    Some("Kernel panic <not syncing>\nnexus login: "),
                ),
                scenario("Download", Outcome::Passed, None),
            ],
            infra_error: None,
            seed: None,
            partition: None,
            health: Default::default(),
            changes: Vec::new(),
        };
        let page = render(&report);
        let console = page
            .find("<summary>Console (last 40 lines; whole log: <a href=\"pi-1/power-cut/console.log\">")
            .expect(&page);
        assert!(page[console..].starts_with(
            "<summary>Console (last 40 lines; whole log: <a href=\"pi-1/power-cut/console.log\">pi-1/power-cut/console.log</a>)</summary><pre>Kernel panic &lt;not syncing&gt;\nnexus login: </pre>"
        ));
        assert!(console < page.find("device journal").unwrap(), "next to the journal");
        assert_eq!(page.matches("<summary>Console").count(), 1, "only where there is one");
    }
}
