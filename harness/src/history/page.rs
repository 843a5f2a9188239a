//! The trend page: one self-contained HTML file (inline SVG and a few lines of script, nothing
//! fetched), a chart per series and device over commits: each run a dot (the spread), the
//! commits' medians a line, each change point a dashed line between its two commits (red for
//! worse, green for better, grey on a control series: the machine moved) with its size and
//! p-value, and a device filter (also set by the address: `history.html#device=NAME`).

use std::fmt::Write;

use super::store::Role;
use super::{changepoint::Change, Trend};
use crate::report::html::{esc, CSS};

const W: f64 = 760.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// The page for `trends`, titled with where they came from.
pub fn render(trends: &[Trend], source: &str) -> String {
    let mut devices: Vec<&str> = trends.iter().map(|t| t.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nexus-hil history</title><style>{CSS}\
         .worse{{color:#c62828}}.better{{color:#1a7f37}}.host{{color:#666}}</style></head><body>\
         <h1>Performance history</h1><p class=\"file\">{} &middot; {} series on {} device(s)</p>\
         <p><label>Device: <select id=\"device\"><option value=\"\">all</option>{}</select></label> \
         <span id=\"shown\"></span></p>",
        esc(source),
        trends.len(),
        devices.len(),
        devices
            .iter()
            .map(|d| format!("<option>{}</option>", esc(d)))
            .collect::<String>()
    );
    for t in trends {
        let _ = write!(
            out,
            "<section class=\"trend\" data-device=\"{}\"><h3>{} <span class=\"file\">on {} ({}, {} is better{})</span></h3>{}{}</section>",
            esc(&t.device),
            esc(&t.series.name),
            esc(&t.device),
            esc(&t.series.unit),
            match t.series.better {
                super::store::Better::Lower => "lower",
                super::store::Better::Higher => "higher",
            },
            if t.series.role == Role::Control {
                "; a control: it follows the machine, not the code, and gates nothing"
            } else {
                ""
            },
            chart(t),
            changes_table(t)
        );
    }
    out.push_str(
        "<script>\
         (function(){\
         var sel=document.getElementById('device');\
         var all=document.querySelectorAll('section.trend');\
         function show(){var n=0;for(var i=0;i<all.length;i++){var on=!sel.value||all[i].getAttribute('data-device')===sel.value;\
         all[i].style.display=on?'':'none';if(on)n++;}\
         document.getElementById('shown').textContent=n+' of '+all.length+' charts shown';}\
         var h=location.hash;if(h.indexOf('#device=')===0){sel.value=decodeURIComponent(h.slice(8));}\
         sel.addEventListener('change',function(){location.hash=sel.value?'device='+encodeURIComponent(sel.value):'';show();});\
         show();})();\
         </script></body></html>",
    );
    out
}

/// One series' chart.
fn chart(t: &Trend) -> String {
    let n = t.commits.len();
    let values: Vec<f64> = t.runs.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    if n == 0 || values.is_empty() {
        return "<p>no values</p>".into();
    }
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if hi - lo < 1e-12 {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |i: f64| LEFT + (W - LEFT - 12.0) * if n > 1 { i / (n - 1) as f64 } else { 0.5 };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ddd\"/>",
        W - LEFT - 12.0,
        H - TOP - BOTTOM
    );
    for v in [lo + pad, (lo + hi) / 2.0, hi - pad] {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y(v) + 3.0,
            short_number(v)
        );
    }
    for c in &t.changes {
        let cx = (x(c.index as f64 - 1.0) + x(c.index as f64)) / 2.0;
        let (class, colour) = kind(t, c);
        let _ = write!(
            s,
            "<line class=\"change\" x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"{}\" stroke-dasharray=\"4 3\" stroke-width=\"2\">\
             <title>{} {:+.1} % between {} and {} (p = {:.1e})</title></line>",
            H - BOTTOM,
            colour,
            class,
            c.relative() * 100.0,
            esc(&t.commits[c.index - 1].0),
            esc(&t.commits[c.index].0),
            c.p_value
        );
    }
    for (i, runs) in t.runs.iter().enumerate() {
        for v in runs.iter().filter(|v| v.is_finite()) {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#9bb7d4\"/>",
                x(i as f64),
                y(*v)
            );
        }
    }
    let line: Vec<String> = t
        .commits
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1.is_finite())
        .map(|(i, c)| format!("{:.1},{:.1}", x(i as f64), y(c.1)))
        .collect();
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f4e79\" stroke-width=\"1.5\"/>",
        line.join(" ")
    );
    let short = |c: &str| c.chars().take(7).collect::<String>();
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text></svg>",
        H - 8.0,
        esc(&short(&t.commits[0].0)),
        W - 12.0,
        H - 8.0,
        esc(&short(&t.commits[n - 1].0))
    );
    s
}

/// The table of a series' changes.
fn changes_table(t: &Trend) -> String {
    if t.changes.is_empty() {
        return format!("<p class=\"file\">{} commits, no change point</p>", t.commits.len());
    }
    let mut s = String::from("<table><tr><th>between</th><th>change</th><th>before</th><th>after</th><th>p</th></tr>");
    for c in &t.changes {
        let (class, _) = kind(t, c);
        let _ = write!(
            s,
            "<tr><td>{} .. {}</td><td class=\"{}\">{:+.1} % ({})</td><td>{}</td><td>{}</td><td>{:.1e}</td></tr>",
            esc(&t.commits[c.index - 1].0),
            esc(&t.commits[c.index].0),
            class,
            c.relative() * 100.0,
            class,
            short_number(c.mean_before),
            short_number(c.mean_after),
            c.p_value
        );
    }
    s.push_str("</table>");
    s
}

/// A change's word and colour: worse, better, or host (a control series' change).
fn kind(t: &Trend, c: &Change) -> (&'static str, &'static str) {
    if t.series.role == Role::Control {
        ("host", "#666")
    } else if t.worse(c) {
        ("worse", "#c62828")
    } else {
        ("better", "#1a7f37")
    }
}

fn short_number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
