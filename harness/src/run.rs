//! `nexus-hil run`: load scenarios, bring up a device for each (a fresh emulator, or the real
//! device named by `--target ssh://...`), run them with a progress display, and write the
//! reports. Exit status: 0 all passed, 1 a scenario failed, 2 bad scenario files or arguments,
//! 3 infrastructure error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::emulator::{Emulator, EmulatorSpec};
use crate::error::InfraError;
use crate::https::HttpsTarget;
use crate::report::{Outcome, RunReport, ScenarioReport};
use crate::runner::{run_scenario, Device};
use crate::scenario::{self, Scenario};
use crate::ssh::SshTarget;

/// Arguments of `nexus-hil run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders of them.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// `emulator` (a fresh container per scenario) or `ssh://USER@HOST[:PORT]` for a real device.
    #[arg(long, default_value = "emulator")]
    pub target: String,
    /// HTTPS port of a real device.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// SSH key for a real device (default: a key made for the run).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Only scenarios with this tag.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Folder for this run's work files and reports (default: target/nexus-hil/run-<time>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// The nexus-backupd binary for the emulator image (default: next to nexus-hil).
    #[arg(long)]
    pub backupd: Option<PathBuf>,
    /// Bytes of home-automation content on the emulator's SD card.
    #[arg(long, default_value_t = crate::sdcard::DEFAULT_CONTENT)]
    pub content_bytes: u64,
    /// Run only part K of N of the (filtered) scenarios, e.g. 2/3: CI jobs that share a suite
    /// each take one part; the split is deterministic (round robin in file order).
    #[arg(long, value_name = "K/N", value_parser = parse_partition)]
    pub partition: Option<(usize, usize)>,
    /// Print the scenarios that would run (after --filter and --partition) and start nothing.
    #[arg(long)]
    pub list: bool,
    /// Folder where real devices' HTTPS CAs are pinned on first use (default: ~/.cache/nexus-hil/pins).
    #[arg(long)]
    pub pins: Option<PathBuf>,
    /// An inventory of real devices (targets.toml: name, host, ssh_port, admin, key, https_port,
    /// ca_sha256 per [[device]]); the scenarios are shared out among them, one combined report.
    #[arg(long, conflicts_with = "target")]
    pub targets: Option<PathBuf>,
    /// How many scenarios run at once: emulators side by side (default 1; each scenario still
    /// gets its own fresh container), or devices of --targets (default: all of them).
    #[arg(long, short = 'j', overrides_with = "jobs")]
    pub jobs: Option<usize>,
}

/// A real device of this run: its name in an inventory (none for `--target`) and how to reach it.
#[derive(Clone)]
struct FleetMember {
    name: Option<String>,
    dev: Device,
}

/// Parses `K/N` with 1 <= K <= N.
pub fn parse_partition(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: write K/N, e.g. 2/3 for the second of three parts"))?;
    let (k, n): (usize, usize) = match (k.trim().parse(), n.trim().parse()) {
        (Ok(k), Ok(n)) => (k, n),
        _ => return Err(format!("{s:?}: K and N are whole numbers, e.g. 2/3")),
    };
    if n == 0 || k == 0 || k > n {
        return Err(format!("{s:?}: need 1 <= K <= N, e.g. 1/{}", n.max(1)));
    }
    Ok((k, n))
}

/// Part `k` of `n` of `items`: every n-th one from the k-th on, in their order.
pub fn partition<T>(items: Vec<T>, (k, n): (usize, usize)) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == k - 1)
        .map(|(_, t)| t)
        .collect()
}

/// Makes sure the emulator image and the SD-card template exist; returns the image reference.
pub async fn prepare_emulator(
    backupd: Option<PathBuf>,
    force: bool,
    content: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(String, PathBuf), InfraError> {
    let backupd = backupd.unwrap_or_else(crate::image::default_backupd);
    let inputs = crate::image::ImageInputs::collect(&backupd)?;
    let lock = tokio::task::spawn_blocking(crate::image::BuildLock::take)
        .await
        .map_err(|e| InfraError::Image(e.to_string()))??;
    let built = crate::image::ensure(&inputs, force, say).await?;
    match built.build_time {
        Some(t) => say(&format!("built {} in {:.1} s", built.reference, t.as_secs_f64())),
        None => say(&format!("{} is up to date", built.reference)),
    }
    let template =
        tokio::task::spawn_blocking(move || crate::sdcard::template(content, |m| eprintln!("nexus-hil: {m}")))
            .await
            .map_err(|e| InfraError::SdCard(e.to_string()))??;
    drop(lock);
    Ok((built.reference, template))
}

/// The key the harness logs in with on real devices: made once, installed by `nexus-hil provision`.
pub fn harness_key() -> PathBuf {
    crate::image::cache_dir().join("harness-key").join("id_ed25519")
}

/// The key for a real device: `--key`, or the harness key that `provision` installed.
pub fn remote_key(key: Option<PathBuf>, target: &str) -> Result<PathBuf, InfraError> {
    if let Some(k) = key {
        return Ok(k);
    }
    let k = harness_key();
    if k.exists() {
        Ok(k)
    } else {
        Err(InfraError::Unreachable(format!(
            "no key for {target}: run `nexus-hil provision --target {target}` once (it installs the harness's key), or pass --key"
        )))
    }
}

/// A device opened for one command (`conform`, `provision`): a fresh emulator, or a real one.
pub struct Opened {
    pub dev: Device,
    pub emu: Option<Emulator>,
}

impl Opened {
    /// Removes the emulator, if one was started.
    pub async fn close(self) {
        if let Some(e) = self.emu {
            let _ = e.remove().await;
        }
    }
}

/// Opens `target`: starts an emulator (image built when needed) or reaches a real device over ssh.
pub async fn open_device(
    target: &Target,
    https_port: u16,
    key: Option<PathBuf>,
    backupd: Option<PathBuf>,
    pins: Option<&Path>,
    work: &Path,
) -> Result<Opened, InfraError> {
    std::fs::create_dir_all(work).map_err(|e| InfraError::io(work.display(), e))?;
    match target {
        Target::Emulator => {
            let say = |m: &str| eprintln!("nexus-hil: {m}");
            let (image, template) = prepare_emulator(backupd, false, crate::sdcard::DEFAULT_CONTENT, &say).await?;
            let key = crate::ssh::make_key(work).await?;
            let emu = Emulator::start(EmulatorSpec {
                image: &image,
                sdcard_template: &template,
                admin_pubkey: &key.with_extension("pub"),
                work_dir: work,
            })
            .await?;
            let pubkey = std::fs::read_to_string(key.with_extension("pub"))
                .map_err(|e| InfraError::io(key.with_extension("pub").display(), e))?;
            let dev = emulator_device(&emu, &key, &pubkey, work);
            Ok(Opened { dev, emu: Some(emu) })
        }
        Target::Fleet(_) => Err(InfraError::Unreachable(
            "name one device with --target ssh://USER@HOST[:PORT]".into(),
        )),
        Target::Remote { user, host, port } => {
            let key = remote_key(key, &format!("ssh://{user}@{host}:{port}"))?;
            let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();
            let dev = Device {
                ssh: SshTarget {
                    host: host.clone(),
                    port: *port,
                    key,
                    known_hosts: work.join("known_hosts"),
                },
                https: HttpsTarget {
                    host: host.clone(),
                    port: https_port,
                    pin: pin_path(pins, host, https_port),
                    token: std::env::var("NEXUS_HIL_HTTPS_TOKEN").ok(),
                    ca_sha256: None,
                },
                admin: user.clone(),
                pubkey,
            };
            match dev.ssh.run(user, "true", None, Duration::from_secs(20)).await {
                Ok(o) if o.code == Some(0) => Ok(Opened { dev, emu: None }),
                Ok(o) => Err(InfraError::Unreachable(format!(
                    "ssh {user}@{host}:{port} refused the key {}: {}; install it with `nexus-hil provision` or pass --key",
                    dev.ssh.key.display(),
                    o.stderr.trim()
                ))),
                Err(e) => Err(InfraError::Unreachable(format!("ssh {user}@{host}:{port}: {e}"))),
            }
        }
    }
}

/// The device an emulator container is, reached through its published ports.
fn emulator_device(emu: &Emulator, key: &Path, pubkey: &str, work: &Path) -> Device {
    Device {
        ssh: SshTarget {
            host: "127.0.0.1".into(),
            port: emu.ssh_port,
            key: key.to_owned(),
            known_hosts: work.join("known_hosts"),
        },
        https: HttpsTarget {
            host: "127.0.0.1".into(),
            port: emu.https_port,
            pin: work.join("pinned-ca.pem"),
            token: None,
            ca_sha256: None,
        },
        admin: "nexus".into(),
        pubkey: pubkey.to_string(),
    }
}

/// A parsed `--target`.
#[derive(Debug, PartialEq)]
pub enum Target {
    Emulator,
    Remote {
        user: String,
        host: String,
        port: u16,
    },
    /// The devices of a `--targets` inventory.
    Fleet(Vec<crate::inventory::DeviceEntry>),
}

pub fn parse_target(t: &str) -> Result<Target, String> {
    if t == "emulator" {
        return Ok(Target::Emulator);
    }
    let rest = t
        .strip_prefix("ssh://")
        .ok_or_else(|| format!("--target {t:?}: use `emulator` or `ssh://USER@HOST[:PORT]`"))?;
    let (user, hostport) = rest
        .split_once('@')
        .ok_or_else(|| format!("--target {t:?}: name the admin user, e.g. ssh://nexus@noreya-nexus.local"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("--target {t:?}: bad port {p:?}"))?),
        None => (hostport, 22),
    };
    if user.is_empty() || host.is_empty() {
        return Err(format!("--target {t:?}: user and host must not be empty"));
    }
    Ok(Target::Remote {
        user: user.into(),
        host: host.into(),
        port,
    })
}

/// A scenario name as a folder or anchor name: lower-case alphanumerics joined by `-`.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Runs `nexus-hil run`.
pub async fn run(args: RunArgs) -> Result<ExitCode, InfraError> {
    let started = Instant::now();
    let target = match &args.targets {
        Some(path) => match crate::inventory::Inventory::load(path) {
            Ok(inv) => Target::Fleet(inv.devices),
            Err(e) => {
                eprintln!("nexus-hil: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => match parse_target(&args.target) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("nexus-hil: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let files = match scenario::discover(&args.paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("nexus-hil: no scenario files (*.yaml) in {:?}", args.paths);
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("nexus-hil: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut scenarios = Vec::new();
    let mut bad = 0;
    for f in &files {
        match Scenario::load(f) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("nexus-hil: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!("nexus-hil: {bad} scenario file(s) have mistakes; nothing was run");
        return Ok(ExitCode::from(2));
    }
    if let Some(tag) = &args.filter {
        scenarios.retain(|s| s.has_tag(tag));
    }
    if let Some(part) = args.partition {
        let all = scenarios.len();
        scenarios = partition(scenarios, part);
        eprintln!(
            "nexus-hil: partition {}/{}: {} of {all} scenarios",
            part.0,
            part.1,
            scenarios.len()
        );
    }
    if args.list {
        for s in &scenarios {
            println!("{}\t{}\t[{}]", s.file.display(), s.name, s.tags.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let report_dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/nexus-hil/run-{stamp}")));
    std::fs::create_dir_all(&report_dir).map_err(|e| InfraError::io(report_dir.display(), e))?;
    let report_dir = report_dir
        .canonicalize()
        .map_err(|e| InfraError::io(report_dir.display(), e))?;
    let key = match (&target, &args.key) {
        (_, Some(k)) => k.clone(),
        (Target::Emulator, None) => crate::ssh::make_key(&report_dir).await?,
        (Target::Remote { .. }, None) => remote_key(None, &args.target)?,
        // Each device names its own key (or uses the harness key); this one is only for setup.user.
        (Target::Fleet(_), None) => harness_key(),
    };
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();

    let target_name = match &target {
        Target::Emulator => "emulator".to_string(),
        Target::Remote { user, host, port } => format!("ssh://{user}@{host}:{port}"),
        Target::Fleet(devices) => {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            format!(
                "{} ({})",
                args.targets.as_deref().unwrap_or(Path::new("")).display(),
                names.join(", ")
            )
        }
    };
    let mut report = RunReport {
        target: target_name,
        duration_s: 0.0,
        scenarios: Vec::new(),
        infra_error: None,
    };
    let say = |m: &str| eprintln!("nexus-hil: {m}");
    let prepared = match &target {
        Target::Emulator => match prepare_emulator(args.backupd.clone(), false, args.content_bytes, &say).await {
            Ok(p) => Some(p),
            Err(e) => {
                report.infra_error = Some(e.to_string());
                None
            }
        },
        Target::Remote { .. } | Target::Fleet(_) => None,
    };
    // The real devices: one for --target, the inventory's for --targets.
    let fleet: Vec<FleetMember> = match &target {
        Target::Emulator => Vec::new(),
        Target::Remote { user, host, port } => vec![FleetMember {
            name: None,
            dev: Device {
                ssh: SshTarget {
                    host: host.clone(),
                    port: *port,
                    key: key.clone(),
                    known_hosts: report_dir.join("known_hosts"),
                },
                https: HttpsTarget {
                    host: host.clone(),
                    port: args.https_port,
                    pin: pin_path(args.pins.as_deref(), host, args.https_port),
                    token: std::env::var("NEXUS_HIL_HTTPS_TOKEN").ok(),
                    ca_sha256: None,
                },
                admin: user.clone(),
                pubkey: pubkey.clone(),
            },
        }],
        Target::Fleet(devices) => {
            let mut v = Vec::new();
            for d in devices {
                let key = match remote_key(d.key.clone(), &d.target()) {
                    Ok(k) => k,
                    Err(e) => {
                        report.infra_error = Some(format!("{}: {e}", d.name));
                        break;
                    }
                };
                let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();
                v.push(FleetMember {
                    name: Some(d.name.clone()),
                    dev: Device {
                        ssh: SshTarget {
                            host: d.host.clone(),
                            port: d.ssh_port,
                            key,
                            known_hosts: report_dir.join("known_hosts"),
                        },
                        https: HttpsTarget {
                            host: d.host.clone(),
                            port: d.https_port,
                            pin: pin_path(args.pins.as_deref(), &d.host, d.https_port),
                            token: std::env::var("NEXUS_HIL_HTTPS_TOKEN").ok(),
                            ca_sha256: d.ca_sha256.clone(),
                        },
                        admin: d.admin.clone(),
                        pubkey,
                    },
                });
            }
            v
        }
    };
    // An unreachable device, or one whose CA is not the inventory's, is an infrastructure
    // error before anything runs, not a failing scenario.
    for m in &fleet {
        if report.infra_error.is_some() {
            break;
        }
        let (ssh, user) = (&m.dev.ssh, &m.dev.admin);
        let who = m.name.as_ref().map(|n| format!("{n}: ")).unwrap_or_default();
        match ssh.run(user, "true", None, Duration::from_secs(20)).await {
            Ok(o) if o.code == Some(0) => {}
            Ok(o) => {
                report.infra_error = Some(
                    InfraError::Unreachable(format!(
                        "{who}ssh {user}@{}:{} refused the harness: {}; install the key with `nexus-hil provision` or pass --key",
                        ssh.host,
                        ssh.port,
                        o.stderr.trim()
                    ))
                    .to_string(),
                )
            }
            Err(e) => {
                report.infra_error =
                    Some(InfraError::Unreachable(format!("{who}ssh {user}@{}:{}: {e}", ssh.host, ssh.port)).to_string())
            }
        }
        if report.infra_error.is_none() && m.dev.https.ca_sha256.is_some() {
            if let Err(e) = m.dev.https.pin_ca(Duration::from_secs(20)).await {
                report.infra_error = Some(InfraError::Unreachable(format!("{who}{e}")).to_string());
            }
        }
    }

    // Ctrl-C: remove this run's containers, then stop.
    let current: Arc<Mutex<Option<String>>> = Arc::default();
    let watch = current.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nnexus-hil: interrupted; removing this run's emulator");
            let _ = crate::emulator::remove_owned(std::process::id()).await;
            drop(watch);
            std::process::exit(130);
        }
    });

    let bar = ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    if report.infra_error.is_none() {
        // Slots that take the next scenario when free: `-j` emulators side by side (a fresh
        // container per scenario), or the real devices. Results keep the files' order.
        let slots: Vec<Option<FleetMember>> = match &target {
            Target::Emulator => vec![None; args.jobs.unwrap_or(1).max(1)],
            _ => {
                let jobs = args.jobs.unwrap_or(fleet.len()).clamp(1, fleet.len().max(1));
                fleet.into_iter().take(jobs).map(Some).collect()
            }
        };
        let next = Mutex::new(0usize);
        let done: Mutex<Vec<(usize, ScenarioReport)>> = Mutex::default();
        let (scenarios, bar, report_dir, key, pubkey, current, prepared) =
            (&scenarios, &bar, &report_dir, &key, &pubkey, &current, &prepared);
        let (next, done_ref) = (&next, &done);
        // The slots run concurrently within this task (the runner's futures are not Send).
        let workers = slots.into_iter().map(|slot| async move {
            loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    *n += 1;
                    *n - 1
                };
                let Some(s) = scenarios.get(i) else { break };
                let r = match &slot {
                    None => {
                        let work = report_dir.join(slug(&s.name));
                        bar.set_message(format!("{}: starting", s.name));
                        let (image, template) = prepared.as_ref().expect("prepared above");
                        run_on_emulator(s, image, template, key, pubkey, &work, bar, current).await
                    }
                    Some(m) if s.has_tag(scenario::EMULATOR_ONLY) => {
                        let mut r = skipped(s, "emulator-only: needs the emulator's lifecycle");
                        r.device = m.name.clone();
                        r
                    }
                    Some(m) => {
                        let dir = match &m.name {
                            Some(n) => report_dir.join(n),
                            None => report_dir.clone(),
                        };
                        let label = match &m.name {
                            Some(n) => format!("{n}: {}", s.name),
                            None => s.name.clone(),
                        };
                        let b = bar.clone();
                        let mut r = run_scenario(s, &m.dev, None, &dir.join(slug(&s.name)), &move |msg| {
                            b.set_message(format!("{label}: {msg}"))
                        })
                        .await;
                        r.device = m.name.clone();
                        r
                    }
                };
                bar.println(result_line(&r));
                bar.inc(1);
                done_ref.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            }
        });
        futures_util::future::join_all(workers).await;
        let mut done = std::mem::take(&mut *done.lock().unwrap_or_else(|p| p.into_inner()));
        done.sort_by_key(|(i, _)| *i);
        report.scenarios = done.into_iter().map(|(_, r)| r).collect();
    }
    bar.finish_and_clear();
    report.duration_s = started.elapsed().as_secs_f64();

    let json_path = args.json.clone().unwrap_or_else(|| report_dir.join("report.json"));
    write(&json_path, &report.to_json())?;
    write(&report_dir.join("report.json"), &report.to_json())?;
    if let Some(j) = &args.junit {
        write(j, &report.to_junit())?;
    }
    write(&report_dir.join("report.html"), &crate::html::render(&report))?;
    print!("{}", report.summary());
    let ready: Vec<f64> = report.scenarios.iter().filter_map(|s| s.ready_s).collect();
    if !ready.is_empty() {
        println!(
            "emulator start-to-ready: {:.2} s on average, {:.2} s at most",
            ready.iter().sum::<f64>() / ready.len() as f64,
            ready.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!("reports: {}", report_dir.display());
    if let Some(j) = &args.junit {
        println!("junit: {}", j.display());
    }
    let t = report.totals();
    Ok(if t.errors > 0 {
        ExitCode::from(3)
    } else if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn write(path: &Path, text: &str) -> Result<(), InfraError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| InfraError::io(d.display(), e))?;
    }
    std::fs::write(path, text).map_err(|e| InfraError::io(path.display(), e))
}

/// The terminal's line for a finished scenario.
fn result_line(r: &ScenarioReport) -> String {
    let mark = match r.outcome {
        Outcome::Passed => "PASS ",
        Outcome::Failed => "FAIL ",
        Outcome::Skipped => "SKIP ",
        Outcome::InfraError => "ERROR",
    };
    match &r.device {
        Some(d) => format!("{mark} {} ({:.1} s on {d})", r.name, r.duration_s),
        None => format!("{mark} {} ({:.1} s)", r.name, r.duration_s),
    }
}

/// Where the CA of the device at `host:port` is pinned.
pub fn pin_path(pins: Option<&Path>, host: &str, port: u16) -> PathBuf {
    pins.map(Path::to_path_buf)
        .unwrap_or_else(|| crate::image::cache_dir().join("pins"))
        .join(format!("{host}_{port}.pem"))
}

fn skipped(s: &Scenario, why: &str) -> ScenarioReport {
    ScenarioReport {
        name: s.name.clone(),
        file: s.file.display().to_string(),
        outcome: Outcome::Skipped,
        reason: Some(why.to_string()),
        duration_s: 0.0,
        ready_s: None,
        steps: Vec::new(),
        journal: None,
        device_state: None,
        cleanup: Vec::new(),
        device: None,
    }
}

/// Runs one scenario on a fresh emulator, removed afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn run_on_emulator(
    s: &Scenario,
    image: &str,
    template: &Path,
    key: &Path,
    pubkey: &str,
    work: &Path,
    bar: &ProgressBar,
    current: &Mutex<Option<String>>,
) -> ScenarioReport {
    let started = Instant::now();
    let emu = Emulator::start(EmulatorSpec {
        image,
        sdcard_template: template,
        admin_pubkey: &key.with_extension("pub"),
        work_dir: work,
    })
    .await;
    let emu = match emu {
        Ok(e) => e,
        Err(e) => {
            let mut r = skipped(s, "");
            r.outcome = Outcome::InfraError;
            r.reason = Some(e.to_string());
            r.duration_s = started.elapsed().as_secs_f64();
            return r;
        }
    };
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(emu.id.clone());
    let dev = emulator_device(&emu, key, pubkey, work);
    let name = s.name.clone();
    let b = bar.clone();
    let mut r = run_scenario(s, &dev, Some(&emu), work, &move |m| {
        b.set_message(format!("{name}: {m}"))
    })
    .await;
    r.ready_s = Some(emu.ready_after.as_secs_f64());
    r.duration_s = started.elapsed().as_secs_f64();
    // A step that failed because the emulator died is the infrastructure's failure, not the
    // scenario's: say so, with the step it happened in.
    if r.outcome == Outcome::Failed {
        if let Some(why) = emu.gone().await {
            r.outcome = Outcome::InfraError;
            r.reason = Some(format!(
                "{why}; {}",
                r.reason.as_deref().unwrap_or("no step had failed yet")
            ));
        }
    }
    if let Err(e) = emu.remove().await {
        eprintln!("nexus-hil: {e}");
    }
    *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_what_is_wrong() {
        assert_eq!(parse_target("emulator"), Ok(Target::Emulator));
        assert_eq!(
            parse_target("ssh://nexus@noreya-nexus.local"),
            Ok(Target::Remote {
                user: "nexus".into(),
                host: "noreya-nexus.local".into(),
                port: 22
            })
        );
        assert_eq!(
            parse_target("ssh://nexus@127.0.0.1:2222").map(|t| match t {
                Target::Remote { port, .. } => port,
                _ => 0,
            }),
            Ok(2222)
        );
        assert!(parse_target("nexus@host").unwrap_err().contains("ssh://USER@HOST"));
        assert!(parse_target("ssh://host").unwrap_err().contains("admin user"));
    }

    #[test]
    fn partitions_parse_and_cover_the_suite_once() {
        assert_eq!(parse_partition("2/3"), Ok((2, 3)));
        for bad in ["3", "0/2", "3/2", "a/b", "1/0"] {
            let e = parse_partition(bad).unwrap_err();
            assert!(
                e.contains("K/N") || e.contains("K <= N") || e.contains("whole numbers"),
                "{bad}: {e}"
            );
        }
        let items: Vec<u32> = (0..11).collect();
        let parts: Vec<Vec<u32>> = (1..=3).map(|k| partition(items.clone(), (k, 3))).collect();
        let mut all: Vec<u32> = parts.concat();
        all.sort();
        assert_eq!(all, items, "every scenario in exactly one part");
        assert!(
            parts.iter().all(|p| p.len() == 3 || p.len() == 4),
            "balanced: {parts:?}"
        );
        assert_eq!(
            partition(items.clone(), (2, 3)),
            partition(items, (2, 3)),
            "deterministic"
        );
    }
}
