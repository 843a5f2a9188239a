//! The default suite (and the faults suite) as tests: each scenario file in `scenarios/` and
//! `scenarios/faults/` is one test case, run on a
//! fresh emulator exactly as `nexus-hil run` runs it (like datatest-stable). Needs root, a
//! container engine and the debug `nexus-backupd` built next to the tests (`ci/test` does all).

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};
use nexus_harness::report::Outcome;
use nexus_harness::runner::schedule::{run_on_emulator, EmulatorSlot};
use nexus_harness::scenario::{self, Scenario};

fn run_one(file: &Path) -> Result<(), Failed> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("the scenario suite starts privileged containers and must run as root: use ci/test".into());
    }
    let s = Scenario::load(file).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let say = |m: &str| eprintln!("{m}");
        let (image, template) = nexus_harness::device::open::prepare_emulator(
            // The debug build next to the tests (target/<profile>/nexus-backupd).
            None,
            false,
            nexus_harness::image::sdcard::DEFAULT_CONTENT,
            &say,
        )
        .await
        .map_err(|e| format!("infrastructure: {e}"))?;
        let work = tempfile::Builder::new().prefix("nexus-suite-").tempdir()?;
        let key = nexus_harness::transport::ssh::make_key(work.path())
            .await
            .map_err(|e| e.to_string())?;
        let pubkey = std::fs::read_to_string(key.with_extension("pub"))?;
        let bar = indicatif::ProgressBar::hidden();
        let slot = EmulatorSlot {
            image,
            template,
            key,
            pubkey,
        };
        let r = run_on_emulator(&s, &slot, &work.path().join("work"), 0, &bar).await;
        match r.outcome {
            Outcome::Passed => Ok(()),
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
    let files = scenario::discover(&[dir.clone(), dir.join("faults")]).expect("scenarios/ is readable");
    let trials = files
        .into_iter()
        .map(|f| {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(name, move || run_one(&f))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
