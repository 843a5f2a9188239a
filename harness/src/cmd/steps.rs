//! `nexus-hil steps`: every step a scenario can take, with the keys it takes and its default
//! time limit, read from the code (the step table and each step's struct); what each does is in
//! `scenarios/README.md`, which a test holds to the same facts.

use std::process::ExitCode;
use std::time::Duration;

use crate::scenario::Step;
use crate::steps::default_timeout;

/// Prints the table: step, default time limit, keys (`timeout` left out: every step takes it).
pub fn command() -> ExitCode {
    let width = Step::NAMES.iter().map(|n| n.len()).max().unwrap_or(0);
    println!(
        "{:width$}  {:>7}  keys (every step also takes `timeout`)",
        "step", "timeout"
    );
    for name in Step::NAMES {
        let keys: Vec<&str> = Step::keys(name)
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|k| *k != "timeout")
            .collect();
        let limit = default_timeout(name).map_or_else(|| "for+60s".to_string(), show);
        let keys = if keys.is_empty() {
            "-".to_string()
        } else {
            keys.join(", ")
        };
        println!("{name:width$}  {limit:>7}  {keys}");
    }
    println!("\nWhat each step does: scenarios/README.md.");
    ExitCode::SUCCESS
}

/// A whole number of minutes or seconds, as scenario files write them.
fn show(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 120 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
