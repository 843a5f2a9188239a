//! `nexus-hil flash` on a bench whose SD mux is this machine's loop device: the card (a loop
//! device over a file) "appears" at a stable path when the mux's `host` command runs and goes
//! when `dut` runs; power and mux commands write to one log, so the order is seen. The image's
//! data lands on the card and its holes leave the card's old bytes; refusals (no --erase, a card
//! of another size, a mounted card, a card that never appears) touch nothing and always give the
//! card back. Needs root (loop devices): run by ci/test.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Bench {
    dir: tempfile::TempDir,
    backing: PathBuf,
    loopdev: String,
    log: PathBuf,
}

impl Bench {
    /// A 64 MiB card filled with 0xAA, behind a loop device this test made.
    fn new() -> Bench {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test makes loop devices and must run as root: use ci/test"
        );
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("card.img");
        std::fs::write(&backing, vec![0xAAu8; 64 << 20]).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let loopdev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let log = dir.path().join("bench.log");
        std::fs::create_dir(dir.path().join("by-id")).unwrap();
        Bench {
            dir,
            backing,
            loopdev,
            log,
        }
    }

    fn card_link(&self) -> PathBuf {
        self.dir.path().join("by-id").join("usb-test-sdmux-0:0")
    }

    /// The inventory: exec power and exec mux, whose `host` makes the stable link and `dut`
    /// removes it; `card_size` and the host command can be changed per case.
    fn targets(&self, card_size: &str, host_makes_link: bool) -> PathBuf {
        let log = self.log.display();
        let link = self.card_link();
        let host = if host_makes_link {
            format!("echo host >> {log} && ln -sf {} {}", self.loopdev, link.display())
        } else {
            format!("echo host >> {log}")
        };
        let text = format!(
            "[[device]]\nname = \"bench-1\"\nhost = \"127.0.0.1\"\nssh_port = 1\n\
             [device.power]\ndriver = \"exec\"\non = \"echo on >> {log}\"\noff = \"echo off >> {log}\"\noff_time = \"10ms\"\n\
             [device.sdmux]\ndriver = \"exec\"\nhost = \"{host}\"\ndut = \"echo dut >> {log} && rm -f {}\"\n\
             card = \"{}\"\ncard_size = \"{card_size}\"\nswitch_timeout = \"2s\"\n",
            link.display(),
            link.display(),
        );
        let p = self.dir.path().join("targets.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn flash(&self, targets: &Path, image: &Path, erase: bool) -> (Option<i32>, String) {
        let _ = std::fs::remove_file(&self.log);
        let mut c = Command::new(env!("CARGO_BIN_EXE_nexus-hil"));
        c.arg("flash")
            .arg("--targets")
            .arg(targets)
            .args(["--target", "bench-1"]);
        if erase {
            c.arg("--erase");
        }
        let out = c.arg(image).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn card(&self) -> Vec<u8> {
        std::fs::read(&self.backing).unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

/// A 48 MiB sparse image with random data at three places.
fn image(dir: &Path) -> (PathBuf, Vec<(u64, Vec<u8>)>) {
    let p = dir.join("image.raw");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(48 << 20).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let parts = vec![
        (0u64, bytes(1 << 20)),
        (20 << 20, bytes(3 << 20)),
        ((48 << 20) - 4096, bytes(4096)),
    ];
    for (at, data) in &parts {
        f.write_all_at(data, *at).unwrap();
    }
    f.sync_all().unwrap();
    (p, parts)
}

#[test]
fn an_image_is_written_to_the_card_and_read_back_and_the_card_goes_back() {
    let bench = Bench::new();
    let (img, parts) = image(bench.dir.path());
    let targets = bench.targets("64MiB", true);

    // Without --erase nothing happens at all.
    let before = bench.card();
    let (code, err) = bench.flash(&targets, &img, false);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("say so with --erase"), "{err}");
    assert!(bench.log().is_empty(), "{:?}", bench.log());
    assert!(bench.card() == before);

    let (code, err) = bench.flash(&targets, &img, true);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("written and read back equal") && err.contains("MB/s"),
        "{err}"
    );
    assert_eq!(bench.log(), ["off", "host", "dut", "on"]);
    let card = bench.card();
    for (at, data) in &parts {
        assert!(
            card[*at as usize..*at as usize + data.len()] == data[..],
            "the data at {at}"
        );
    }
    // A hole of the image is not written: the card keeps what it had there.
    assert!(card[(10 << 20)..(11 << 20)].iter().all(|b| *b == 0xAA));
    assert!(!bench.card_link().exists(), "the card went back to the device");
}

#[test]
fn a_card_that_is_not_the_inventorys_is_refused_and_given_back() {
    let bench = Bench::new();
    let (img, parts) = image(bench.dir.path());
    let before = bench.card();
    let none_written = |card: &[u8]| {
        parts
            .iter()
            .all(|(at, data)| card[*at as usize..*at as usize + data.len()] != data[..])
    };

    // Another size than the inventory's.
    let (code, err) = bench.flash(&bench.targets("32MiB", true), &img, true);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refused, nothing was written") && err.contains("67108864 bytes"),
        "{err}"
    );
    assert_eq!(bench.log(), ["off", "host", "dut", "on"]);
    assert!(bench.card() == before, "a refused card is not written");

    // Mounted on this machine (mounting writes to it; the image's data must not be there).
    let mnt = bench.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&bench.loopdev)
        .status()
        .unwrap();
    assert!(mkfs.success());
    assert!(Command::new("mount")
        .arg(&bench.loopdev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let (code, err) = bench.flash(&bench.targets("64MiB", true), &img, true);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is mounted at") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(bench.log(), ["off", "host", "dut", "on"]);
    assert!(none_written(&bench.card()), "a refused card is not written");

    // A kernel name instead of a stable path is refused when the inventory is read.
    let t = bench.targets("64MiB", true);
    let text = std::fs::read_to_string(&t).unwrap();
    let bad = text.replace(
        &format!("card = \"{}\"", bench.card_link().display()),
        "card = \"/dev/sdb\"",
    );
    std::fs::write(&t, bad).unwrap();
    let (code, err) = bench.flash(&t, &img, true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stable path"), "{err}");
    assert!(bench.log().is_empty());
}

#[test]
fn a_card_that_never_appears_is_the_benchs_trouble_and_the_mux_is_switched_back() {
    let bench = Bench::new();
    let (img, _) = image(bench.dir.path());
    let before = bench.card();
    let (code, err) = bench.flash(&bench.targets("64MiB", false), &img, true);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("did not appear") && err.contains("within 2s"), "{err}");
    assert_eq!(bench.log(), ["off", "host", "dut", "on"]);
    assert!(bench.card() == before);
}
