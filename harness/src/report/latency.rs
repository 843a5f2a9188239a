//! One condition's ticks pooled over the windows it was measured in, so its percentiles are
//! those of all its ticks together, not an average of each window's.

use std::collections::BTreeMap;

use super::{Measured, Percentiles};

/// One measurement out of several windows of the same condition: their ticks pooled into
/// one histogram, so the percentiles are those of all the ticks together (not an average of
/// percentiles). Needs each window's full-precision counts.
pub fn pool(windows: &[Measured]) -> Result<Measured, String> {
    let Some(first) = windows.first() else {
        return Err("no window was measured".into());
    };
    if windows.len() == 1 {
        return Ok(first.clone());
    }
    if windows.iter().any(|w| w.samples > 0 && w.lateness_counts.is_empty()) {
        return Err("the probe on the device does not print its full histogram (an older \
                    nexus-automation): update it (rebuild the emulator image) to pool windows"
            .into());
    }
    let samples = windows.iter().map(|w| w.samples).sum();
    let lateness_counts = add_counts(windows.iter().map(|w| &w.lateness_counts));
    let io = first.io;
    let io_counts = add_counts(windows.iter().map(|w| &w.io_counts));
    let mean = |f: &dyn Fn(&Measured) -> f64| {
        windows.iter().map(|w| f(w) * w.samples as f64).sum::<f64>() / (samples as f64).max(1.0)
    };
    let lateness_us = Percentiles {
        mean: mean(&|w| w.lateness_us.mean),
        ..percentiles_of(&lateness_counts)
    };
    let io_us = io.then(|| Percentiles {
        mean: mean(&|w| w.io_us.as_ref().map_or(0.0, |p| p.mean)),
        ..percentiles_of(&io_counts)
    });
    Ok(Measured {
        period_us: first.period_us,
        io,
        samples,
        missed: windows.iter().map(|w| w.missed).sum(),
        lateness_us,
        io_us,
        lateness_buckets: add_counts(windows.iter().map(|w| &w.lateness_buckets)),
        lateness_counts,
        io_counts,
    })
}

/// (value, count) lists added up, ascending by value.
fn add_counts<'a>(lists: impl Iterator<Item = &'a Vec<(u64, u64)>>) -> Vec<(u64, u64)> {
    let mut sum = BTreeMap::new();
    for &(v, n) in lists.flatten() {
        *sum.entry(v).or_insert(0) += n;
    }
    sum.into_iter().collect()
}

/// Percentiles of ascending (value, count) pairs, as `hdrhistogram`'s `value_at_quantile`
/// computes them (the value at which the count reaches ceil(q x total)); `mean` is left 0.
fn percentiles_of(counts: &[(u64, u64)]) -> Percentiles {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let at = |q: f64| {
        let target = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts
            .iter()
            .find(|c| {
                seen += c.1;
                seen >= target
            })
            .map_or(0, |c| c.0)
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: counts.last().map_or(0, |c| c.0),
        mean: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(counts: Vec<(u64, u64)>, missed: u64) -> Measured {
        let lateness_us = Percentiles {
            mean: counts.iter().map(|c| (c.0 * c.1) as f64).sum::<f64>()
                / counts.iter().map(|c| c.1).sum::<u64>() as f64,
            ..percentiles_of(&counts)
        };
        Measured {
            period_us: 10_000,
            io: true,
            samples: counts.iter().map(|c| c.1).sum(),
            missed,
            lateness_us: lateness_us.clone(),
            io_us: Some(lateness_us),
            lateness_buckets: counts.iter().map(|&(v, n)| (v.next_power_of_two(), n)).collect(),
            io_counts: counts.clone(),
            lateness_counts: counts,
        }
    }

    #[test]
    fn pooled_windows_have_the_percentiles_of_all_their_ticks() {
        // One window with 2 % of its ticks at 3 ms (its p99 is 3 ms), one without: over all
        // 2000 ticks only 1 % is that late, so the pooled p99 is 100 µs, not an average of p99s.
        let a = window(vec![(100, 980), (3000, 20)], 0);
        let b = window(vec![(90, 500), (100, 500)], 0);
        assert_eq!((a.lateness_us.p99, b.lateness_us.p99), (3000, 100));
        let p = pool(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(p.samples, 2000);
        assert_eq!(
            (
                p.lateness_us.p50,
                p.lateness_us.p99,
                p.lateness_us.p999,
                p.lateness_us.max
            ),
            (100, 100, 3000, 3000)
        );
        assert_eq!(p.io_us.as_ref().map(|io| io.p999), Some(3000));
        assert!(
            (p.lateness_us.mean - (100.0 * 980.0 + 3000.0 * 20.0 + 90.0 * 500.0 + 100.0 * 500.0) / 2000.0).abs() < 1e-9
        );
        assert_eq!(p.lateness_buckets, vec![(128, 1980), (4096, 20)]);
        // Missed periods add up: three windows with two ticks over the period each.
        let late = window(vec![(100, 998), (12_000, 2)], 2);
        let p = pool(&[late.clone(), late.clone(), late]).unwrap();
        assert_eq!((p.missed, p.lateness_us.p999, p.lateness_us.max), (6, 12_000, 12_000));
    }

    #[test]
    fn windows_without_their_full_histogram_are_not_pooled() {
        let mut old = window(vec![(100, 1000)], 0);
        old.lateness_counts.clear();
        let e = pool(&[old.clone(), old.clone()]).unwrap_err();
        assert!(e.contains("older") && e.contains("rebuild"), "{e}");
        // One window alone needs no pooling.
        assert_eq!(pool(std::slice::from_ref(&old)).unwrap(), old);
    }
}
