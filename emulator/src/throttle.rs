//! Keeping backups gentle: a read-bandwidth token bucket that can be cancelled while it waits, and
//! lowering the CPU and I/O priority of the calling thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{BackupConfig, CpuPolicy, IoClass};

/// The wait was ended by a cancel request.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// A token bucket: `rate` bytes per second, bursts of at most a quarter second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` 0 means no cap.
    pub fn new(rate: u64) -> Self {
        let capacity = rate as f64 / 4.0;
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes' worth of tokens, sleeping as long as the cap requires; a set `cancel`
    /// ends the wait within 50 ms.
    pub fn take(&mut self, n: u64, cancel: &AtomicBool) -> Result<(), Cancelled> {
        if cancel.load(Ordering::Relaxed) {
            return Err(Cancelled);
        }
        if self.rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate as f64).min(self.capacity);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            let until = now + Duration::from_secs_f64(-self.tokens / self.rate as f64);
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Cancelled);
                }
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep((until - now).min(Duration::from_millis(50)));
            }
        }
        Ok(())
    }
}

/// Lowers the calling thread's CPU policy, nice value and I/O class as configured.
/// All are per thread on Linux, so the daemon's D-Bus and HTTPS threads keep theirs.
pub fn lower_thread_priority(config: &BackupConfig) {
    let (nice, io) = (config.nice, config.io_class);
    // SAFETY: plain syscalls on the calling thread's id; `param` outlives the call.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            tracing::warn!("cannot set nice {nice}: {}", std::io::Error::last_os_error());
        }
        if config.cpu_policy == CpuPolicy::Idle {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_IDLE, &param) != 0 {
                tracing::warn!("cannot set SCHED_IDLE: {}", std::io::Error::last_os_error());
            }
        }
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        let prio = match io {
            IoClass::Idle => 3 << IOPRIO_CLASS_SHIFT,
            IoClass::BestEffort => (2 << IOPRIO_CLASS_SHIFT) | 7,
            IoClass::None => return,
        };
        if libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid as libc::c_long, prio) != 0 {
            tracing::warn!("cannot set I/O priority: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_holds_the_rate() {
        let cancel = AtomicBool::new(false);
        let mut b = TokenBucket::new(4 * 1024 * 1024);
        let start = Instant::now();
        // 1 MiB burst + 2 MiB at 4 MiB/s: at least 0.5 s.
        for _ in 0..12 {
            b.take(256 * 1024, &cancel).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(450), "{:?}", start.elapsed());
    }

    #[test]
    fn cancel_ends_a_long_wait() {
        let cancel = AtomicBool::new(false);
        let mut b = TokenBucket::new(65536);
        b.take(65536 / 4, &cancel).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                cancel.store(true, Ordering::Relaxed);
            });
            // Would wait ~16 s without the cancel.
            assert_eq!(b.take(1024 * 1024, &cancel), Err(Cancelled));
        });
    }

    #[test]
    fn priority_applies_to_this_thread() {
        std::thread::spawn(|| {
            lower_thread_priority(&BackupConfig::default());
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            let policy = unsafe { libc::sched_getscheduler(tid as libc::pid_t) };
            assert_eq!(policy, libc::SCHED_IDLE, "CPU policy");
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
            assert_eq!(fields[16], "19", "nice field of {stat}");
            let io = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
            assert_eq!(io >> 13, 3, "I/O class idle");
        })
        .join()
        .unwrap();
    }
}
