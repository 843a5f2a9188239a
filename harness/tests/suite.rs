//! The default suite (and the faults suite) as tests: each scenario file in `scenarios/` and
//! `scenarios/faults/` is one test case, `default/<file stem>` or `faults/<file stem>` (so a
//! filter can take one suite: `.ci/run` leaves `default/` to `ci/suite`), run on a fresh
//! emulator exactly as `nexus-hil run` runs it (like datatest-stable), on the card `nexus-hil
//! run` would give it (32 MiB of content unless the file asks for more). The failing-card
//! scenarios (`scenarios/io/`, `io/<file stem>`) run on stand-ins in `ci/standin`; here the
//! first must be skipped, naming the target it needs. Needs root, a container engine and the debug
//! `nexus-backupd` built next to the tests (`ci/test` does all).

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};
use nexus_harness::device::{kind_named, Prepare};
use nexus_harness::image::sdcard;
use nexus_harness::report::Outcome;
use nexus_harness::runner::run_fresh;
use nexus_harness::scenario::{self, Scenario};

/// What a scenario must come to on the emulator.
#[derive(Clone, Copy)]
enum Expect {
    Pass,
    /// Skipped, the reason containing this.
    Skip(&'static str),
}

fn run_one(file: &Path, expect: Expect) -> Result<(), Failed> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("the scenario suite starts privileged containers and must run as root: use ci/test".into());
    }
    let s = Scenario::load(file).map_err(|e| e.to_string())?;
    let (content, card) = sdcard::content_for(None, sdcard::FUNCTIONAL_CONTENT, std::slice::from_ref(&s))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let say = |m: &str| eprintln!("{m}");
        say(&card);
        let work = tempfile::Builder::new().prefix("nexus-suite-").tempdir()?;
        // The debug build next to the tests (target/<profile>/nexus-backupd), and a key made
        // in `work`.
        let emulator = kind_named("emulator").ok_or("no emulator kind")?;
        let parts = emulator
            .prepare(Prepare {
                backupd: None,
                content,
                force: false,
                key: None,
                work: work.path(),
                say: &say,
            })
            .await
            .map_err(|e| format!("infrastructure: {e}"))?;
        let bar = indicatif::ProgressBar::hidden();
        let r = run_fresh(&s, parts.as_ref(), &work.path().join("work"), 0, &bar).await;
        match (r.outcome, expect) {
            (Outcome::Passed, Expect::Pass) => Ok(()),
            (Outcome::Skipped, Expect::Skip(why)) if r.reason.as_deref().is_some_and(|m| m.contains(why)) => Ok(()),
            _ => Err(format!(
                "{:?}: {}\n{}\njournal:\n{}",
                r.outcome,
                r.reason.clone().unwrap_or_default(),
                nexus_harness::report::terminal::transcript(&r),
                r.journal.clone().unwrap_or_default()
            )
            .into()),
        }
    })
}

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut trials = Vec::new();
    let standin_only = Expect::Skip("needs a target whose SD card the harness serves (--target standin)");
    for (suite, folder, expect) in [
        ("default", dir.clone(), Expect::Pass),
        ("faults", dir.join("faults"), Expect::Pass),
        ("io", dir.join("io"), standin_only),
    ] {
        let mut files = scenario::discover(&[folder]).expect("scenarios/ is readable");
        if suite == "io" {
            // The emulator refuses every one of them for the same reason, before its card is
            // touched: one shows it (each costs an emulator's start).
            files.truncate(1);
        }
        trials.extend(files.into_iter().map(|f| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(format!("{suite}/{stem}"), move || run_one(&f, expect))
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
