//! One condition's ticks pooled over the windows it was measured in, so its percentiles are
//! those of all its ticks together, not an average of each window's.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::{Error, Measured, Percentiles};

/// One measurement out of several windows of the same condition: their ticks pooled into
/// one histogram, so the percentiles are those of all the ticks together (not an average of
/// percentiles). Needs each window's full-precision counts.
pub fn pool(windows: &[Measured]) -> Result<Measured, Error> {
    let Some(first) = windows.first() else {
        return Err(Error::Pool("no window was measured".into()));
    };
    if windows.len() == 1 {
        return Ok(first.clone());
    }
    let io = first.io;
    let mut late = histogram();
    let mut io_time = histogram();
    for (i, w) in windows.iter().enumerate() {
        if w.samples == 0 {
            continue;
        }
        late.add(window_histogram(i, "lateness_counts", &w.lateness_counts)?)
            .map_err(|e| Error::Pool(format!("cannot add window {}'s lateness: {e}", i + 1)))?;
        if io {
            io_time
                .add(window_histogram(i, "io_counts", &w.io_counts)?)
                .map_err(|e| Error::Pool(format!("cannot add window {}'s I/O times: {e}", i + 1)))?;
        }
    }
    let samples = windows.iter().map(|w| w.samples).sum();
    let mean = |f: &dyn Fn(&Measured) -> f64| {
        windows.iter().map(|w| f(w) * w.samples as f64).sum::<f64>() / (samples as f64).max(1.0)
    };
    let lateness_us = Percentiles {
        mean: mean(&|w| w.lateness_us.mean),
        ..percentiles(&late)
    };
    let io_us = io.then(|| Percentiles {
        mean: mean(&|w| w.io_us.as_ref().map_or(0.0, |p| p.mean)),
        ..percentiles(&io_time)
    });
    Ok(Measured {
        period_us: first.period_us,
        io,
        samples,
        missed: windows.iter().map(|w| w.missed).sum(),
        lateness_us,
        io_us,
        lateness_buckets: add_counts(windows.iter().map(|w| &w.lateness_buckets)),
        lateness_counts: counts(&late),
        io_counts: counts(&io_time),
    })
}

/// An empty histogram with the probe's bounds and precision (see nexus-automation), so its
/// buckets are the ones the counts were recorded in.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// Window `i`'s (highest equivalent value, count) pairs of `field` read back into a histogram.
fn window_histogram(i: usize, field: &str, counts: &[(u64, u64)]) -> Result<Histogram<u64>, Error> {
    if counts.is_empty() {
        return Err(Error::Pool(format!(
            "window {} has samples but no `{field}`: the probe on the device does not print its full \
             histogram (an older nexus-automation); update nexus-automation (rebuild the emulator \
             image) to pool windows",
            i + 1
        )));
    }
    let mut h = histogram();
    for &(v, n) in counts {
        h.record_n(v, n).map_err(|e| {
            Error::Pool(format!(
                "window {}'s `{field}` holds {v} µs, beyond the probe's range: {e:?}",
                i + 1
            ))
        })?;
    }
    Ok(h)
}

/// (highest equivalent value, count) of every bucket that holds a value, as the probe prints them.
fn counts(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// The percentiles of a histogram; `mean` is left 0 (the windows' means are weighted instead).
fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: 0.0,
    }
}

/// (value, count) lists added up, ascending by value (the log2 plot buckets).
fn add_counts<'a>(lists: impl Iterator<Item = &'a Vec<(u64, u64)>>) -> Vec<(u64, u64)> {
    let mut sum = BTreeMap::new();
    for &(v, n) in lists.flatten() {
        *sum.entry(v).or_insert(0) += n;
    }
    sum.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(counts: Vec<(u64, u64)>, missed: u64) -> Measured {
        let lateness_us = Percentiles {
            mean: counts.iter().map(|c| (c.0 * c.1) as f64).sum::<f64>()
                / counts.iter().map(|c| c.1).sum::<u64>() as f64,
            ..percentiles(&window_histogram(0, "lateness_counts", &counts).unwrap())
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
        // At 3 significant digits, 3000 µs lies in the bucket 3000..=3001 and 12 000 µs in
        // 12 000..=12 007; a histogram reports a bucket by its highest value.
        let a = window(vec![(100, 980), (3000, 20)], 0);
        let b = window(vec![(90, 500), (100, 500)], 0);
        assert_eq!((a.lateness_us.p99, b.lateness_us.p99), (3001, 100));
        let p = pool(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(p.samples, 2000);
        assert_eq!(
            (
                p.lateness_us.p50,
                p.lateness_us.p99,
                p.lateness_us.p999,
                p.lateness_us.max
            ),
            (100, 100, 3001, 3001)
        );
        assert_eq!(p.io_us.as_ref().map(|io| io.p999), Some(3001));
        assert!(
            (p.lateness_us.mean - (100.0 * 980.0 + 3000.0 * 20.0 + 90.0 * 500.0 + 100.0 * 500.0) / 2000.0).abs() < 1e-9
        );
        assert_eq!(p.lateness_buckets, vec![(128, 1980), (4096, 20)]);
        // Missed periods add up: three windows with two ticks over the period each.
        let late = window(vec![(100, 998), (12_000, 2)], 2);
        let p = pool(&[late.clone(), late.clone(), late]).unwrap();
        assert_eq!((p.missed, p.lateness_us.p999, p.lateness_us.max), (6, 12_007, 12_007));
    }

    #[test]
    fn windows_without_their_full_histogram_are_not_pooled() {
        let mut old = window(vec![(100, 1000)], 0);
        old.lateness_counts.clear();
        let e = pool(&[old.clone(), old.clone()]).unwrap_err().to_string();
        assert!(e.contains("older") && e.contains("rebuild"), "{e}");
        // One window alone needs no pooling.
        assert_eq!(pool(std::slice::from_ref(&old)).unwrap(), old);
    }

    #[test]
    fn windows_that_measured_io_without_its_full_histogram_are_not_pooled() {
        // Once taken as no I/O at all, which made the pooled I/O percentiles those of the
        // other windows alone.
        let new = window(vec![(100, 1000)], 0);
        let mut old = new.clone();
        old.io_counts.clear();
        let e = pool(&[new.clone(), old]).unwrap_err().to_string();
        assert!(
            e.contains("window 2")
                && e.contains("`io_counts`")
                && e.contains("nexus-automation")
                && e.contains("rebuild"),
            "{e}"
        );
        // Without I/O measured, there are no I/O counts to miss.
        let mut timer_only = new;
        timer_only.io = false;
        timer_only.io_us = None;
        timer_only.io_counts.clear();
        let p = pool(&[timer_only.clone(), timer_only]).unwrap();
        assert_eq!((p.samples, p.io_us), (2000, None));
    }
}
