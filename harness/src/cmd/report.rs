//! `nexus-hil report`: a run's report.json rendered again as its HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use super::say;
use crate::error::InfraError;
use crate::report::RunReport;

/// Arguments of `nexus-hil report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's report folder or its report.json.
    #[arg(default_value = "target/nexus-hil/suite")]
    pub report: PathBuf,
    /// Where to write the page (default: report.html next to report.json).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Runs `nexus-hil report`. Exit status: 0 written, 2 no such report.
pub fn command(args: ReportArgs) -> Result<ExitCode, InfraError> {
    let json = if args.report.is_dir() {
        args.report.join("report.json")
    } else {
        args.report
    };
    let text = match std::fs::read_to_string(&json) {
        Ok(t) => t,
        Err(e) => {
            say(&format!(
                "{}: {e}; give a run's report folder (--report-dir of `nexus-hil run`) or its report.json",
                json.display()
            ));
            return Ok(ExitCode::from(2));
        }
    };
    let parsed: RunReport = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            say(&format!("{} is not a nexus-hil report: {e}", json.display()));
            return Ok(ExitCode::from(2));
        }
    };
    let out = args.output.unwrap_or_else(|| json.with_file_name("report.html"));
    std::fs::write(&out, crate::report::html::render(&parsed)).map_err(|e| InfraError::io(out.display(), e))?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
