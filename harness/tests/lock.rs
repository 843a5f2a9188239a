//! One run per device at a time, on a real container emulator reached over SSH as a real device
//! is: the lock lives on the device; a second run is refused at once (naming the holder) or
//! waits, bounded; a refreshed lock outlives its expiry; a released device is free and left as
//! found; an expired lock is taken over and said so. Needs root and a container engine
//! (`ci/test`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nexus_harness::bench::{DeviceLock, LockError, Timing, LOCK_DIR, LOCK_FILE};
use nexus_harness::device::{open_device, CutLog, Device, Fault, OpenSpec, Target};

async fn root(dev: &Device, cmd: &str) -> String {
    let out = dev
        .ssh
        .run(
            &dev.admin,
            &format!("sudo -n sh -c '{cmd}'"),
            None,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{cmd}: {}", out.stderr);
    out.stdout
}

#[test]
fn a_device_is_held_by_one_run_at_a_time() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "starts a privileged container: use ci/test"
    );
    let work = tempfile::Builder::new().prefix("nexus-lock-").tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opened = open_device(OpenSpec {
            target: &Target::parse("emulator").unwrap(),
            https_port: 443,
            key: None,
            backupd: None,
            pins: None,
            work: work.path(),
        })
        .await
        .expect("an emulator");
        let dev = opened.dev.clone();
        let said = Mutex::new(Vec::<String>::new());
        let say = |m: &str| said.lock().unwrap().push(m.to_string());
        let quick = Timing {
            ttl: Duration::from_secs(4),
            refresh: Duration::from_secs(1),
        };

        let a = DeviceLock::acquire(&dev, "pipeline A", None, quick, &say).await.expect("a free device");
        let on_device = root(&dev, &format!("cat {LOCK_FILE}")).await;
        assert!(on_device.contains("owner=pipeline A") && on_device.contains("expires="), "{on_device}");

        // A second run is refused at once, and told who holds the device.
        match DeviceLock::acquire(&dev, "pipeline B", None, quick, &say).await {
            Err(LockError::Held { holder, .. }) => assert!(holder.contains("pipeline A"), "{holder}"),
            other => panic!("the second run must be refused: {:?}", other.map(|_| ())),
        }
        // Or waits, bounded: past A's first expiry, which A's refreshes move on.
        let t = Instant::now();
        match DeviceLock::acquire(&dev, "pipeline B", Some(Duration::from_secs(7)), quick, &say).await {
            Err(LockError::Timeout { holder, .. }) => assert!(holder.contains("pipeline A"), "{holder}"),
            other => panic!("A still holds the device: {:?}", other.map(|_| ())),
        }
        assert!(t.elapsed() >= Duration::from_secs(7), "it waited");
        assert!(
            said.lock().unwrap().iter().any(|m| m.contains("in use by pipeline A") && m.contains("waiting")),
            "the wait names the holder: {:?}",
            said.lock().unwrap()
        );

        // Released: the device is free, and nothing of the lock is left on it.
        a.release().await.unwrap();
        let left = root(&dev, &format!("ls -d {LOCK_DIR} 2>/dev/null || echo gone")).await;
        assert_eq!(left.trim(), "gone", "the lock's folder goes with it");
        let b = DeviceLock::acquire(&dev, "pipeline B", None, quick, &say).await.expect("free again");
        b.release().await.unwrap();

        // A run that died without releasing (its lock expired, on another machine): taken over.
        root(
            &dev,
            &format!(
                "mkdir -p {LOCK_DIR} && printf \"owner=gone\\nhost=elsewhere\\npid=1\\nstarted=1\\nexpires=2\\ntoken=old\\n\" > {LOCK_FILE}"
            ),
        )
        .await;
        said.lock().unwrap().clear();
        let c = DeviceLock::acquire(&dev, "pipeline C", None, quick, &say).await.expect("a stale lock is taken over");
        assert!(
            said.lock().unwrap().iter().any(|m| m.contains("took over a stale lock of gone on elsewhere")),
            "{:?}",
            said.lock().unwrap()
        );
        c.release().await.unwrap();

        // A lock file that cannot be written (a full disk) is not taken.
        root(
            &dev,
            &format!(
                "mkdir -p {LOCK_DIR} && mount -t tmpfs -o size=64k nexus-hil-full {LOCK_DIR} && touch {LOCK_DIR}/.mutex && \
                 (dd if=/dev/zero of={LOCK_DIR}/fill bs=4k 2>/dev/null || true)"
            ),
        )
        .await;
        match DeviceLock::acquire(&dev, "pipeline D", None, quick, &say).await {
            Err(LockError::Device(e, _)) => assert!(e.contains("cannot write the lock file"), "{e}"),
            other => panic!("a lock that could not be written was taken: {:?}", other.map(|_| ())),
        }
        root(&dev, &format!("umount {LOCK_DIR} && rmdir {LOCK_DIR}")).await;

        // A holder cut off from its device past its lease's expiry has lost it: another run
        // takes the device once the lease has expired, and the first learns it at its next
        // refresh (the runner then stops its scenario and undoes nothing).
        let short = Timing {
            ttl: Duration::from_secs(2),
            refresh: Duration::from_secs(1),
        };
        let a = DeviceLock::acquire(&dev, "pipeline A", None, short, &say).await.expect("a free device");
        let cut = CutLog::default();
        let emu = opened.lifecycle().expect("the emulator");
        emu.fault(Fault::CutNetwork {
            after: Duration::ZERO,
            duration: Duration::from_secs(5),
            log: cut.clone(),
        })
        .await
        .unwrap_or_else(|_| panic!("the device could not be frozen"));
        for _ in 0..300 {
            let st = cut.lock().unwrap().clone();
            assert!(st.error.is_none(), "{:?}", st.error);
            if st.thawed_at.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cut.lock().unwrap().thawed_at.is_some(), "the device was not thawed");
        let b = DeviceLock::acquire(&dev, "pipeline B", Some(Duration::from_secs(20)), short, &say)
            .await
            .expect("the expired lease is taken over");
        let mut lost = None;
        for _ in 0..400 {
            lost = a.lost();
            if lost.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lost = lost.expect("pipeline A never learnt it had lost the device");
        assert!(lost.contains("expired") || lost.contains("another run's token"), "{lost}");
        assert!(b.lost().is_none(), "B holds the device: {:?}", b.lost());
        // A's release leaves B's lock alone.
        a.release().await.unwrap();
        let on_device = root(&dev, &format!("cat {LOCK_FILE}")).await;
        assert!(on_device.contains("owner=pipeline B"), "{on_device}");
        b.release().await.unwrap();
        opened.close().await;
    });
}
