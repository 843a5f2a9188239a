//! `nexus-hil report`: a run's report.json rendered again as its HTML page; `report merge`: the
//! reports of a suite's shards (`run --partition K/N`) merged into one JUnit, JSON and HTML.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::say;
use crate::error::InfraError;
use crate::exit::Exit;
use crate::report::merge::{link_work_files, Shard};
use crate::report::{Error as ReportError, RunReport};

/// Arguments of `nexus-hil report`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCmd>,
    /// The run's report folder or its report.json.
    #[arg(default_value = "target/nexus-hil/suite")]
    pub report: PathBuf,
    /// Where to write the page (default: report.html next to report.json).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `nexus-hil report ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ReportCmd {
    /// Merge the reports of a suite's shards (`run --partition K/N` jobs) into one.
    ///
    /// junit.xml, report.json and report.html in --output, every scenario once in the files'
    /// order, the shards' work files linked in. Each K of N must be there exactly once.
    /// Exit status: 0 the merged run passed, 1 a scenario failed (or none passed), 2 the
    /// reports do not fit together or cannot be read, 3 a shard had an infrastructure error.
    Merge {
        /// The shards' report folders (each job's --report-dir).
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where the merged report goes.
        #[arg(long, short, default_value = "target/nexus-hil/merged")]
        output: PathBuf,
        /// Append the merged run's measurements to this history (a SQLite file or a
        /// postgres:// URL): one append for the whole suite, when its shards ran with
        /// --no-history.
        #[arg(long, value_name = "FILE|URL")]
        history: Option<String>,
    },
}

/// Reads a run's report.json from its folder (or the file itself); the error says what to give.
fn read(path: &Path) -> Result<RunReport, ReportError> {
    let json = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&json).map_err(|e| {
        ReportError::Read(format!(
            "{}: {e}; give a run's report folder (--report-dir of `nexus-hil run`) or its report.json",
            json.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ReportError::Read(format!("{} is not a nexus-hil report: {e}", json.display())))
}

/// Runs `nexus-hil report`. Exit status: 0 written, 2 no such report.
pub async fn command(args: ReportArgs) -> Result<ExitCode, InfraError> {
    if let Some(ReportCmd::Merge { dirs, output, history }) = args.command {
        return merge(&dirs, &output, history.as_deref()).await;
    }
    let json = if args.report.is_dir() {
        args.report.join("report.json")
    } else {
        args.report.clone()
    };
    let parsed = match read(&args.report) {
        Ok(r) => r,
        Err(e) => {
            say(&e.to_string());
            return Ok(ExitCode::from(Exit::Usage));
        }
    };
    let out = args.output.unwrap_or_else(|| json.with_file_name("report.html"));
    std::fs::write(&out, crate::report::html::render(&parsed)).map_err(|e| InfraError::io(out.display(), e))?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `report merge`.
async fn merge(dirs: &[PathBuf], output: &Path, history: Option<&str>) -> Result<ExitCode, InfraError> {
    let mut shards = Vec::new();
    for d in dirs {
        match read(d) {
            Ok(report) => shards.push(Shard { dir: d.clone(), report }),
            Err(e) => {
                say(&e.to_string());
                return Ok(ExitCode::from(Exit::Usage));
            }
        }
    }
    let (mut merged, notes) = match crate::report::merge::merge(&shards) {
        Ok(m) => m,
        Err(e) => {
            say(&e.to_string());
            return Ok(ExitCode::from(Exit::Usage));
        }
    };
    for n in notes {
        say(&n);
    }
    std::fs::create_dir_all(output).map_err(|e| InfraError::io(output.display(), e))?;
    for d in dirs.iter().filter(|d| d.is_dir()) {
        link_work_files(d, output)
            .map_err(|e| InfraError::io(format!("linking {} into {}", d.display(), output.display()), e))?;
    }
    let write = |name: &str, text: String| {
        let p = output.join(name);
        std::fs::write(&p, text).map_err(|e| InfraError::io(p.display(), e))
    };
    // What changed since the last passing run: the shards ran without the history.
    if let Some(spec) = history {
        match crate::history::what_changed(spec, &merged).await {
            Ok(changes) => merged.changes = changes,
            Err(e) => say(&format!("what changed since the last passing run: {e}")),
        }
    }
    write("report.json", merged.to_json())?;
    write("junit.xml", merged.to_junit())?;
    write("report.html", crate::report::html::render(&merged))?;
    print!("{}", merged.summary());
    println!("merged {} reports into {}", dirs.len(), output.display());
    if let Some(spec) = history {
        match crate::history::append_run(spec, &merged, crate::history::record::now(), "run").await {
            Ok(n) => println!("history: {n} series appended to {spec}"),
            Err(e) => {
                say(&e.to_string());
                return Ok(ExitCode::from(Exit::Usage));
            }
        }
    }
    let t = merged.totals();
    Ok(if t.errors > 0 {
        ExitCode::from(Exit::Infra)
    } else if merged.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Failed)
    })
}
