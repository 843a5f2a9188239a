//! Is it the bench or the product? A device's health, read in one SSH command before anything
//! runs on it: reachable, its clock against this machine's, the free space on `/broot`, btrfs's
//! error counters, the kernel's I/O and MMC/SD errors on the card since boot, the daemon owning
//! both D-Bus names, and what software it runs. A failing check is the bench's trouble: the run
//! stops with an infrastructure error naming it (exit 3) and no scenario runs; each check's
//! value also goes to the report and the history (`health/*`), so a card that starts to fail
//! shows as a trend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nexus_contract::names::{BACKUP1, SNAPSHOT1};
use nexus_contract::paths::BROOT;
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::transport::ssh::sh_quote;

/// What counts as healthy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The device's clock may differ from this machine's by at most this much (TLS, the
    /// history's timestamps and the backups' dates depend on it).
    pub max_clock_skew: Duration,
    /// `/broot` needs at least this much free space (a backup of the card needs room).
    pub min_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(60),
            min_free_bytes: 256 << 20,
        }
    }
}

/// One check: its name, whether it passed, what was measured (for the history), and what a
/// person reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// The measured number, where there is one (seconds off, free bytes, error counts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<f64>,
    pub said: String,
}

/// A device's health as read before a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub checks: Vec<Check>,
    /// What the device runs: kernel, OS, daemon (not judged; the report shows it).
    pub software: Vec<(String, String)>,
}

impl Health {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    /// One line per check, for the terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks
            .iter()
            .map(|c| format!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.said))
            .collect();
        out.extend(self.software.iter().map(|(k, v)| format!("     {k}: {v}")));
        out
    }
}

/// What marks a kernel log line about the card as an error (`grep -iE`): I/O errors, a file
/// system's errors and checksum failures, an MMC/SD controller's timeouts and CRC errors. Not the
/// file systems' info lines (a mount says "using crc32c").
const KERNEL_ERRORS: &str = r"I/O error|blk_update_request|(BTRFS|EXT4-fs) (error|critical)|csum failed|checksum error|corrupt|error -[0-9]+|timed out|timeout waiting|CRC error|card removed";

/// The one command that reads everything, as root. Each fact on a line of its own, `key=value`.
fn command() -> String {
    let broot = sh_quote(BROOT);
    let errors = sh_quote(KERNEL_ERRORS);
    format!(
        r#"echo "now=$(date +%s.%N)"
df -B1 --output=avail,size {broot} 2>/dev/null | tail -n 1 | awk '{{print "free=" $1; print "size=" $2}}'
btrfs device stats {broot} 2>&1 | sed 's/^/stat=/'
src=$(findmnt -no SOURCE {broot} 2>/dev/null | sed 's/\[.*//'); dev=${{src##*/}}
echo "card=$src"
if systemd-detect-virt -q -c 2>/dev/null; then echo "kernel_skipped=a container shares this machine's kernel log";
elif [ -n "$dev" ]; then
  disk=$(echo "$dev" | sed -E 's/(mmcblk[0-9]+|nvme[0-9]+n[0-9]+|loop[0-9]+)p[0-9]+$/\1/; s/^([a-z]+)[0-9]+$/\1/')
  (journalctl -k -b --no-pager -q 2>/dev/null || dmesg 2>/dev/null) |
    grep -E "($dev|$disk)[^0-9]" | grep -iE {errors} | tail -n 5 | sed 's/^/kernel=/'
fi
for n in {BACKUP1} {SNAPSHOT1}; do
  if busctl --system status "$n" >/dev/null 2>&1; then echo "name=$n"; fi
done
echo "software=kernel $(uname -r)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "software=os ${{PRETTY_NAME:-}}${{BUILD_ID:+ build $BUILD_ID}}"; fi
d=$(nexus-backupd --version 2>/dev/null | head -n 1); [ -z "$d" ] || echo "software=daemon $d"
"#
    )
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads `dev`'s health; a device that does not answer fails the `reachable` check alone.
pub async fn read(dev: &Device, limits: Limits) -> Health {
    let before = now_s();
    let cmd = format!("sudo -n sh -c {}", sh_quote(&command()));
    let out = dev.ssh.run(&dev.admin, &cmd, None, Duration::from_secs(60)).await;
    let after = now_s();
    match out {
        Err(e) => Health {
            checks: vec![Check {
                name: "reachable".into(),
                ok: false,
                value: None,
                said: format!("no answer over SSH as {}: {e}", dev.admin),
            }],
            software: Vec::new(),
        },
        Ok(o) if o.code != Some(0) => Health {
            checks: vec![Check {
                name: "reachable".into(),
                ok: false,
                value: None,
                said: format!(
                    "SSH answers, but the health command failed (exit {:?}): {}; the admin needs sudo without a prompt",
                    o.code,
                    o.stderr.trim()
                ),
            }],
            software: Vec::new(),
        },
        Ok(o) => judge(&o.stdout, (before + after) / 2.0, limits),
    }
}

/// What the health command printed: each fact a `key=value` line.
struct Said<'a>(&'a str);

impl<'a> Said<'a> {
    fn all(&self, key: &str) -> Vec<&'a str> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .collect()
    }

    fn first(&self, key: &str) -> Option<String> {
        self.all(key).first().map(|v| v.trim().to_string())
    }
}

fn check(name: &str, ok: bool, value: Option<f64>, said: String) -> Check {
    Check {
        name: name.into(),
        ok,
        value,
        said,
    }
}

/// The checks, from the command's output and this machine's time when the device read its
/// clock (the middle of the round trip).
pub fn judge(stdout: &str, host_now: f64, limits: Limits) -> Health {
    let said = Said(stdout);
    let checks = vec![
        check("reachable", true, None, "SSH and sudo answer".into()),
        clock(&said, host_now, limits),
        free_space(&said, limits),
        btrfs_errors(&said),
        kernel_errors(&said),
        daemon(&said),
    ];
    let software = said
        .all("software")
        .iter()
        .filter_map(|v| {
            let (k, v) = v.split_once(' ')?;
            let v = v.trim();
            (!v.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    Health { checks, software }
}

fn clock(said: &Said, host_now: f64, limits: Limits) -> Check {
    let Some(t) = said.first("now").and_then(|v| v.parse::<f64>().ok()) else {
        return check(
            "clock",
            false,
            None,
            "the device did not tell its time (`date +%s.%N`)".into(),
        );
    };
    let off = t - host_now;
    let max = limits.max_clock_skew.as_secs_f64();
    let text = if off.abs() <= max {
        format!("{off:+.1} s from this machine's")
    } else {
        format!(
            "{off:+.1} s from this machine's, more than {max} s: set the device's clock (NTP) before testing; \
             TLS, the backups' dates and the history depend on it"
        )
    };
    check("clock", off.abs() <= max, Some(off), text)
}

fn free_space(said: &Said, limits: Limits) -> Check {
    let Some(free) = said.first("free").and_then(|v| v.parse::<u64>().ok()) else {
        return check(
            "free space",
            false,
            None,
            format!("`df {BROOT}` said nothing: is the card mounted?"),
        );
    };
    let ok = free >= limits.min_free_bytes;
    let text = if ok {
        format!("{} MiB free on {BROOT}", free >> 20)
    } else {
        format!(
            "{} MiB free on {BROOT}, less than the {} MiB a run needs: delete old backups or snapshots on the device",
            free >> 20,
            limits.min_free_bytes >> 20
        )
    };
    check("free space", ok, Some(free as f64), text)
}

fn btrfs_errors(said: &Said) -> Check {
    let stats = said.all("stat");
    let counters: Vec<(String, u64)> = stats
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let n = w.next()?.parse().ok()?;
            Some((name.rsplit('.').next().unwrap_or(name).to_string(), n))
        })
        .collect();
    if counters.is_empty() {
        let text = format!(
            "`btrfs device stats {BROOT}` gave no counters: {}",
            stats.join(" ").trim()
        );
        return check("btrfs errors", false, None, text);
    }
    let errors: u64 = counters.iter().map(|(_, n)| n).sum();
    let nonzero: Vec<String> = counters
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let text = if errors == 0 {
        "every counter of `btrfs device stats` is 0".into()
    } else {
        format!(
            "`btrfs device stats {BROOT}` counts {}: the card returned errors; check or replace it \
             (`btrfs device stats -z` resets the counters once it is sorted out)",
            nonzero.join(", ")
        )
    };
    check("btrfs errors", errors == 0, Some(errors as f64), text)
}

fn kernel_errors(said: &Said) -> Check {
    let kernel = said.all("kernel");
    let card = said.first("card").unwrap_or_default();
    let skipped = said.first("kernel_skipped");
    let known = skipped.is_some() || !card.is_empty();
    let text = if let Some(why) = skipped {
        format!("not read: {why}")
    } else if !known {
        format!("the card's device is not known (`findmnt {BROOT}` said nothing)")
    } else if kernel.is_empty() {
        format!("none on the card ({card}) since boot")
    } else {
        format!(
            "the kernel logged errors on the card ({card}) since boot: {}",
            kernel.join(" | ")
        )
    };
    check(
        "kernel I/O errors",
        kernel.is_empty() && known,
        Some(kernel.len() as f64),
        text,
    )
}

fn daemon(said: &Said) -> Check {
    let names = said.all("name");
    let missing: Vec<&str> = [BACKUP1, SNAPSHOT1]
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    let text = if missing.is_empty() {
        "owns both D-Bus names".into()
    } else {
        format!(
            "{} not owned on the system bus: the backup daemon is not running (`journalctl -u nexus-backupd`)",
            missing.join(" and ")
        )
    };
    check("daemon", missing.is_empty(), None, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = "now=1000.5\nfree=1073741824\nsize=2147483648\n\
        stat=[/dev/loop3].write_io_errs    0\nstat=[/dev/loop3].read_io_errs     0\n\
        stat=[/dev/loop3].flush_io_errs    0\nstat=[/dev/loop3].corruption_errs  0\n\
        stat=[/dev/loop3].generation_errs  0\ncard=/dev/loop3\n\
        name=tech.noreya.Backup1\nname=tech.noreya.Snapshot1\n\
        software=kernel 6.1.0-arm64\nsoftware=os Debian GNU/Linux 12 (bookworm)\nsoftware=daemon nexus-backupd 0.1.0\n";

    /// The pattern as the device's grep reads it: errors on the card are kept, a mount's info
    /// lines are not (a stand-in's btrfs says "using crc32c" at every mount).
    #[test]
    fn the_kernel_log_pattern_keeps_errors_and_passes_info_lines() {
        let lines = [
            (
                "BTRFS info (device vdb2): using crc32c (crc32c-generic) checksum algorithm",
                false,
            ),
            ("BTRFS info (device mmcblk0p2): disk space caching is enabled", false),
            ("mmc0: new high speed SDHC card at address aaaa", false),
            ("I/O error, dev mmcblk0, sector 2048 op 0x1:(WRITE) flags 0x800", true),
            (
                "BTRFS error (device mmcblk0p2): bdev /dev/mmcblk0p2 errs: wr 1, rd 0",
                true,
            ),
            ("BTRFS warning (device vdb2): csum failed root 5 ino 257 off 0", true),
            ("mmc0: Timeout waiting for hardware interrupt.", true),
            ("mmcblk0: error -110 transferring data, sector 4096", true),
        ];
        for (line, error) in lines {
            let out = std::process::Command::new("grep")
                .args(["-iE", KERNEL_ERRORS])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(format!("{line}\n").as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            assert_eq!(out.status.success(), error, "{line}");
        }
    }

    #[test]
    fn a_healthy_device_passes_every_check_and_tells_its_software() {
        let h = judge(HEALTHY, 1000.0, Limits::default());
        assert!(h.failed().is_empty(), "{:?}", h.lines());
        assert_eq!(h.checks.len(), 6);
        assert_eq!(h.checks[1].value, Some(0.5));
        assert_eq!(
            h.software,
            [
                ("kernel".to_string(), "6.1.0-arm64".to_string()),
                ("os".into(), "Debian GNU/Linux 12 (bookworm)".into()),
                ("daemon".into(), "nexus-backupd 0.1.0".into())
            ]
        );
    }

    #[test]
    fn each_failing_check_is_named_with_what_it_saw_and_what_to_do() {
        let failed = |text: &str, host: f64| {
            let h = judge(text, host, Limits::default());
            h.failed()
                .iter()
                .map(|c| (c.name.clone(), c.said.clone()))
                .collect::<Vec<_>>()
        };
        let off = failed(HEALTHY, 1000.5 - 600.0);
        assert_eq!(off.len(), 1, "{off:?}");
        assert!(
            off[0].0 == "clock" && off[0].1.contains("+600.0 s") && off[0].1.contains("NTP"),
            "{off:?}"
        );
        let full = failed(&HEALTHY.replace("free=1073741824", "free=10485760"), 1000.0);
        assert!(
            full[0].0 == "free space" && full[0].1.contains("10 MiB free"),
            "{full:?}"
        );
        let errs = failed(&HEALTHY.replace("corruption_errs  0", "corruption_errs  3"), 1000.0);
        assert!(
            errs[0].0 == "btrfs errors" && errs[0].1.contains("corruption_errs 3"),
            "{errs:?}"
        );
        let kernel = failed(
            &format!("{HEALTHY}kernel=[  12.3] I/O error, dev mmcblk0, sector 2048 op 0x1:(WRITE)\n"),
            1000.0,
        );
        assert!(
            kernel[0].0 == "kernel I/O errors" && kernel[0].1.contains("sector 2048"),
            "{kernel:?}"
        );
        let daemon = failed(&HEALTHY.replace("name=tech.noreya.Backup1\n", ""), 1000.0);
        assert!(
            daemon[0].0 == "daemon" && daemon[0].1.contains("tech.noreya.Backup1 not owned"),
            "{daemon:?}"
        );
        assert_eq!(
            failed("", 1000.0).len(),
            5,
            "nothing told: every check but reachable fails"
        );
    }
}
