//! What people read in the terminal: a line per finished scenario, the closing summary, and a
//! scenario's steps as text (also JUnit's system-out).

use super::{Outcome, RunReport, ScenarioReport};

/// The mark of an outcome in the terminal.
fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "PASS ",
        Outcome::Failed => "FAIL ",
        Outcome::Skipped => "SKIP ",
        Outcome::InfraError => "ERROR",
    }
}

/// The line printed when a scenario finishes.
pub fn result_line(r: &ScenarioReport) -> String {
    match &r.device {
        Some(d) => format!("{} {} ({:.1} s on {d})", mark(r.outcome), r.name, r.duration_s),
        None => format!("{} {} ({:.1} s)", mark(r.outcome), r.name, r.duration_s),
    }
}

impl RunReport {
    /// The closing summary for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            out.push_str(&format!(
                "{} {} ({:.1} s) [{}]\n",
                mark(s.outcome),
                s.name,
                s.duration_s,
                s.file
            ));
            if let Some(r) = &s.reason {
                out.push_str(&format!("      {r}\n"));
            }
        }
        if let Some(e) = &self.infra_error {
            out.push_str(&format!("ERROR infrastructure: {e}\n"));
        }
        let t = self.totals();
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped, {} infrastructure errors ({:.1} s)\n",
            t.passed, t.failed, t.skipped, t.errors, self.duration_s
        ));
        out
    }
}

/// The steps of a scenario as text, for reports.
pub fn transcript(s: &ScenarioReport) -> String {
    let mut out = String::new();
    for st in &s.steps {
        out.push_str(&format!(
            "step {} {} (line {}): {:?} in {:.2} s\n",
            st.index, st.kind, st.line, st.outcome, st.duration_s
        ));
        for l in &st.transcript {
            out.push_str(&format!("  {l}\n"));
        }
        if let Some(m) = &st.message {
            out.push_str(&format!("  => {m}\n"));
        }
    }
    out
}
