//! A real device on a bench: its power switched through `[device.power]` (a Shelly Gen2 plug's
//! RPC `Switch.Set`, a Tasmota plug's `cm?cmnd=Power`, or the bench's own command lines, so that
//! `labgrid-client power`, `pduclient` or `uhubctl` plug in), and the faults that needs, as
//! [`Bench`], the lifecycle of a device the harness does not own. The daemon's kill and restart
//! go over SSH and work on any real device; a power cut or a reboot needs the switch (a device
//! that did not come back is powered off and on again); the rest is not for real devices.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::device::inventory::{PowerDriverName, PowerEntry};
use crate::device::ready::{both_names_owned, LIST_NAMES};
use crate::device::{daemon_over_ssh, Applied, Device, Fault, FaultError, Lifecycle};

/// Why the power could not be switched, or the device did not come back; the message names
/// the plug or the command line and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// "On" failed every try: the device is left off (the loudest failure a bench has).
    #[error("{0}")]
    StaysOff(String),
    /// A plug could not be reached, or did not switch as asked.
    #[error("{0}")]
    Plug(String),
    /// The bench's command line failed or did not finish.
    #[error("{0}")]
    Command(String),
    /// The device did not answer (SSH and both D-Bus names) within its boot time.
    #[error("{0}")]
    NotReady(String),
}

impl From<PowerError> for FaultError {
    fn from(e: PowerError) -> Self {
        FaultError::Failed(e.to_string())
    }
}

/// The kernel's id of the running boot.
const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";

/// How long a plug or a command line may take to switch.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often "on" is tried before the device is said to stay off, and the pause between tries.
const ON_TRIES: u32 = 3;
const ON_PAUSE: Duration = Duration::from_secs(2);

/// Switches a device's power on, trying again (bounded) when the plug or the command fails:
/// a device left off after a cut is the worst outcome a bench can have, so a last failure says
/// so loudly, naming the plug.
pub async fn switch_on(p: &PowerEntry) -> Result<String, PowerError> {
    let mut errors = Vec::new();
    for attempt in 1..=ON_TRIES {
        match switch(p, true).await {
            Ok(done) if attempt == 1 => return Ok(done),
            Ok(done) => {
                return Ok(format!(
                    "{done} (on try {attempt} of {ON_TRIES}; before: {})",
                    errors.join("; ")
                ))
            }
            Err(e) => errors.push(e.to_string()),
        }
        if attempt < ON_TRIES {
            tokio::time::sleep(ON_PAUSE).await;
        }
    }
    Err(PowerError::StaysOff(format!(
        "THE DEVICE STAYS OFF: its power could not be switched on again in {ON_TRIES} tries ({}); \
         switch it on by hand, and check {}",
        errors.join("; "),
        plug_name(p)
    )))
}

/// The switch as a person finds it on the bench.
fn plug_name(p: &PowerEntry) -> String {
    match p.driver {
        PowerDriverName::Shelly => format!(
            "the Shelly plug at {} (switch {})",
            p.plug.as_deref().unwrap_or("?"),
            p.switch
        ),
        PowerDriverName::Tasmota => format!("the Tasmota plug at {}", p.plug.as_deref().unwrap_or("?")),
        PowerDriverName::Exec => format!("the bench's power-on command `{}`", p.on.as_deref().unwrap_or("")),
    }
}

/// Switches a device's power on or off with the driver of `p`.
pub async fn switch(p: &PowerEntry, on: bool) -> Result<String, PowerError> {
    switch_within(p, on, SWITCH_TIMEOUT).await
}

async fn switch_within(p: &PowerEntry, on: bool, timeout: Duration) -> Result<String, PowerError> {
    match p.driver {
        PowerDriverName::Shelly => {
            let plug = p.plug.as_deref().unwrap_or_default();
            let set = format!("/rpc/Switch.Set?id={}&on={on}", p.switch);
            let (status, body) = http_get(plug, &set).await?;
            if status != 200 || !body.contains("was_on") {
                return Err(PowerError::Plug(format!(
                    "the Shelly plug at {plug} answered {status} to {set}: {body}"
                )));
            }
            // Read back: the switch's output is what was asked.
            let get = format!("/rpc/Switch.GetStatus?id={}", p.switch);
            let (status, body) = http_get(plug, &get).await?;
            let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status != 200 || state["output"].as_bool() != Some(on) {
                return Err(PowerError::Plug(format!(
                    "the Shelly plug at {plug} did not switch {}: {get} answered {status}: {body}",
                    if on { "on" } else { "off" }
                )));
            }
            Ok(format!(
                "Shelly {plug} switch {} {}",
                p.switch,
                if on { "on" } else { "off" }
            ))
        }
        PowerDriverName::Tasmota => {
            let plug = p.plug.as_deref().unwrap_or_default();
            let want = if on { "ON" } else { "OFF" };
            let path = format!("/cm?cmnd=Power%20{}", if on { "On" } else { "Off" });
            let (status, body) = http_get(plug, &path).await?;
            let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status != 200 || state["POWER"].as_str() != Some(want) {
                return Err(PowerError::Plug(format!(
                    "the Tasmota plug at {plug} answered {status} to {path}: {body}"
                )));
            }
            Ok(format!("Tasmota {plug} power {want}"))
        }
        PowerDriverName::Exec => {
            let line = if on { &p.on } else { &p.off }.as_deref().unwrap_or_default();
            let out = exec_in_group(line, timeout).await?;
            if out.code != Some(0) {
                return Err(PowerError::Command(format!(
                    "the power {} command `{line}` exited {:?}: {}",
                    if on { "on" } else { "off" },
                    out.code,
                    out.stderr.trim()
                )));
            }
            Ok(format!("ran `{line}`"))
        }
    }
}

/// Runs a bench command line in a process group of its own; past `timeout` the whole group is
/// killed (a relay tool's helpers with it), not only the shell.
pub(crate) async fn exec_in_group(line: &str, timeout: Duration) -> Result<crate::transport::ssh::Output, PowerError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(line)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| PowerError::Command(format!("`{line}`: cannot run sh: {e}")))?;
    let group = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.map_err(|e| PowerError::Command(format!("`{line}`: {e}")))?;
            Ok(crate::transport::ssh::Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        Err(_) => {
            if let Some(pgid) = group.and_then(|g| i32::try_from(g).ok()) {
                // SAFETY: a signal to the process group this function started.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            Err(PowerError::Command(format!(
                "`{line}` did not finish within {timeout:?}: its process group was killed"
            )))
        }
    }
}

/// A plain HTTP GET (plugs speak HTTP on the bench's network): status and body.
async fn http_get(plug: &str, path: &str) -> Result<(u16, String), PowerError> {
    let addr = if plug.contains(':') {
        plug.to_string()
    } else {
        format!("{plug}:80")
    };
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| PowerError::Plug(format!("cannot reach the plug at {addr}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| PowerError::Plug(format!("plug {addr}: {e}")))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, &addr)
            .body(Empty::<Bytes>::new())
            .map_err(|e| PowerError::Plug(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| PowerError::Plug(format!("plug {addr}: {e}")))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| PowerError::Plug(format!("plug {addr}: {e}")))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(SWITCH_TIMEOUT, fetch).await.map_err(|_| {
        PowerError::Plug(format!(
            "the plug at {addr} did not answer {path} within {SWITCH_TIMEOUT:?}"
        ))
    })?
}

/// A real device's lifecycle: the daemon's faults over SSH, power through its switch.
pub struct Bench {
    pub dev: Device,
    pub power: Option<PowerEntry>,
    /// Its SD mux: the card read on this machine after a power cut (`super::card_read`).
    pub sdmux: Option<crate::device::inventory::SdMuxEntry>,
    /// The inventory marks it `throwaway`: a bench's own device, holding nothing of anyone's.
    pub throwaway: bool,
}

impl Lifecycle for Bench {
    fn fault(
        &self,
        fault: Fault,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + '_>> {
        Box::pin(async move {
            match fault {
                Fault::KillDaemon => daemon_over_ssh(&self.dev.ssh, &self.dev.admin, true).await,
                Fault::RestartDaemon => daemon_over_ssh(&self.dev.ssh, &self.dev.admin, false).await,
                Fault::PowerCut { stay_off } => self.power_cut(stay_off).await,
                Fault::Reboot => self.reboot().await,
                Fault::ReplaceCard => self.replace_card().await,
                Fault::FillDisk(_) | Fault::SlowIo { .. } | Fault::CutNetwork { .. } => Err(FaultError::Unsupported(
                    "a real device's disk and network are not the harness's to fill, throttle or cut; use the emulator"
                        .into(),
                )),
                Fault::IoError { .. } => Err(FaultError::Unsupported(
                    "a real device's SD card is not the harness's to make fail; fault.io_error needs --target standin"
                        .into(),
                )),
            }
        })
    }

    fn throwaway(&self) -> bool {
        self.throwaway
    }

    fn power_switch(&self) -> bool {
        self.power.is_some()
    }

    fn power_cut_read<'a>(
        &'a self,
        image: &'a std::path::Path,
        read: &'a crate::device::ReadCard,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, FaultError>> + 'a>> {
        Box::pin(self.power_cut_and_read(image, read))
    }
}

impl Bench {
    pub(super) fn power(&self) -> Result<&PowerEntry, FaultError> {
        self.power.as_ref().ok_or_else(|| {
            FaultError::Unsupported(
                "this device has no power switch: add [device.power] to its entry in targets.toml".into(),
            )
        })
    }

    /// Off through the switch, `off_time` later on again (unless `stay_off`), then the wait for
    /// SSH and both D-Bus names.
    async fn power_cut(&self, stay_off: bool) -> Result<Applied, FaultError> {
        let p = self.power()?;
        let before = self.boot_id().await;
        let off = switch(p, false).await?;
        if stay_off {
            return Ok(Applied {
                ports: None,
                note: Some(format!("power off: {off}")),
            });
        }
        tokio::time::sleep(p.off_time).await;
        let on = switch_on(p).await?;
        let back = self.wait_ready(p.boot_timeout, before.as_deref()).await?;
        Ok(Applied {
            ports: None,
            note: Some(format!(
                "power off: {off}; {:?} later on: {on}; ready {:.1} s after",
                p.off_time,
                back.as_secs_f64()
            )),
        })
    }

    /// `systemctl reboot`, then the wait; a device that does not come back in time is powered
    /// off and on, and the fault fails saying so.
    async fn reboot(&self) -> Result<Applied, FaultError> {
        let p = self.power()?;
        let before = self.boot_id().await;
        // The connection drops as the device goes down: its result says nothing.
        let _ = self
            .dev
            .ssh
            .run(
                &self.dev.admin,
                "sudo -n systemctl reboot",
                None,
                Duration::from_secs(20),
            )
            .await;
        match self.wait_ready(p.boot_timeout, before.as_deref()).await {
            Ok(back) => Ok(Applied {
                ports: None,
                note: Some(format!("rebooted; ready {:.1} s after", back.as_secs_f64())),
            }),
            Err(e) => {
                let _ = switch(p, false).await;
                tokio::time::sleep(p.off_time).await;
                if let Err(off) = switch_on(p).await {
                    return Err(FaultError::Failed(format!("after `systemctl reboot`: {e}; {off}")));
                }
                let again = self.wait_ready(p.boot_timeout, before.as_deref()).await;
                Err(FaultError::Failed(format!(
                    "after `systemctl reboot`: {e}; powered off and on to bring it back ({})",
                    match again {
                        Ok(d) => format!("ready {:.1} s after", d.as_secs_f64()),
                        Err(e) => format!("it did not come back either: {e}"),
                    }
                )))
            }
        }
    }

    /// The kernel's boot id, when the device answers.
    pub(super) async fn boot_id(&self) -> Option<String> {
        let out = self
            .dev
            .ssh
            .run(&self.dev.admin, BOOT_ID, None, Duration::from_secs(20))
            .await
            .ok()?;
        (out.code == Some(0)).then(|| out.stdout.trim().to_string())
    }

    /// Waits, bounded, until SSH answers from a boot other than `old_boot` and both of the
    /// daemon's D-Bus names are owned.
    pub(super) async fn wait_ready(&self, limit: Duration, old_boot: Option<&str>) -> Result<Duration, PowerError> {
        let start = Instant::now();
        let cmd = format!("{BOOT_ID}; {LIST_NAMES}");
        let mut seen = "no answer on SSH";
        while start.elapsed() < limit {
            if let Ok(o) = self
                .dev
                .ssh
                .run(&self.dev.admin, &cmd, None, Duration::from_secs(10))
                .await
            {
                let boot = o.stdout.lines().next().unwrap_or("").trim();
                if old_boot.is_some_and(|b| b == boot) {
                    seen = "the same boot as before (it did not go down)";
                } else if both_names_owned(&o.stdout) {
                    return Ok(start.elapsed());
                } else {
                    seen = "SSH answers, but the daemon does not own both D-Bus names";
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Err(PowerError::NotReady(format!(
            "the device was not ready within {limit:?} (boot_timeout in [device.power]): last seen {seen}; \
             its console, if [device.console] is set, is in the work files"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A plug on 127.0.0.1 that answers the Shelly Gen2 and Tasmota requests and remembers its
    /// state; every request line it got is kept.
    async fn plug() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut on = true;
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = req.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                let body = if line.contains("Switch.Set") {
                    let was = on;
                    on = line.contains("on=true");
                    format!("{{\"was_on\":{was}}}")
                } else if line.contains("Switch.GetStatus") {
                    format!("{{\"id\":0,\"output\":{on}}}")
                } else if line.contains("cmnd=Power%20") {
                    on = line.contains("Power%20On");
                    format!("{{\"POWER\":\"{}\"}}", if on { "ON" } else { "OFF" })
                } else {
                    String::new()
                };
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        (addr, seen)
    }

    fn entry(driver: PowerDriverName, plug: Option<String>) -> PowerEntry {
        PowerEntry {
            driver,
            plug,
            switch: 0,
            on: None,
            off: None,
            off_time: Duration::from_millis(10),
            boot_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn shelly_and_tasmota_plugs_are_switched_and_read_back() {
        let (addr, seen) = plug().await;
        let shelly = entry(PowerDriverName::Shelly, Some(addr.clone()));
        assert_eq!(
            switch(&shelly, false).await.unwrap(),
            format!("Shelly {addr} switch 0 off")
        );
        assert_eq!(
            switch(&shelly, true).await.unwrap(),
            format!("Shelly {addr} switch 0 on")
        );
        let tasmota = entry(PowerDriverName::Tasmota, Some(addr.clone()));
        assert_eq!(
            switch(&tasmota, false).await.unwrap(),
            format!("Tasmota {addr} power OFF")
        );
        let lines = seen.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                "GET /rpc/Switch.Set?id=0&on=false HTTP/1.1",
                "GET /rpc/Switch.GetStatus?id=0 HTTP/1.1",
                "GET /rpc/Switch.Set?id=0&on=true HTTP/1.1",
                "GET /rpc/Switch.GetStatus?id=0 HTTP/1.1",
                "GET /cm?cmnd=Power%20Off HTTP/1.1",
            ]
        );
    }

    #[tokio::test]
    async fn a_plug_that_does_not_switch_or_cannot_be_reached_is_named() {
        // A "plug" that answers everything with an empty body: the read-back catches it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let body = "{\"was_on\":true}";
                let _ = c
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            }
        });
        let e = switch(&entry(PowerDriverName::Shelly, Some(addr.clone())), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not switch off") && e.contains(&addr), "{e}");
        let e = switch(&entry(PowerDriverName::Tasmota, Some("127.0.0.1:1".into())), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot reach the plug at 127.0.0.1:1"), "{e}");
    }

    #[tokio::test]
    async fn exec_runs_the_benchs_command_lines_and_names_a_failing_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state");
        let mut p = entry(PowerDriverName::Exec, None);
        p.off = Some(format!("echo off >> {}", f.display()));
        p.on = Some("echo no relay >&2; exit 3".into());
        switch(&p, false).await.unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "off\n");
        let e = switch(&p, true).await.unwrap_err().to_string();
        assert!(e.contains("exited Some(3)") && e.contains("no relay"), "{e}");
    }

    #[tokio::test]
    async fn on_is_tried_again_and_a_device_left_off_is_said_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let n = dir.path().join("tries");
        let mut p = entry(PowerDriverName::Exec, None);
        // A relay that fails twice, then switches.
        p.on = Some(format!(
            "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] || {{ echo relay busy >&2; exit 1; }}",
            n.display()
        ));
        let done = switch_on(&p).await.unwrap();
        assert!(done.contains("on try 3 of 3") && done.contains("relay busy"), "{done}");
        p.on = Some("echo relay dead >&2; exit 1".into());
        let e = switch_on(&p).await.unwrap_err().to_string();
        assert!(
            e.starts_with("THE DEVICE STAYS OFF") && e.contains("relay dead") && e.contains("echo relay dead"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_bench_command_that_hangs_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut p = entry(PowerDriverName::Exec, None);
        p.off = Some(format!("sleep 300 & echo $! > {}; wait", pid_file.display()));
        let e = switch_within(&p, false, Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("its process group was killed"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The sleep this test started went with its group (reaped by init, so give it a moment).
        let mut gone = false;
        for _ in 0..50 {
            // SAFETY: signal 0 only asks whether the process this test started still exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                gone = true;
                break;
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the command's child {pid} outlived the timeout");
    }
}
