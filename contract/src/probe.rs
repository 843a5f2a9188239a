//! The report of the latency probe (`nexus-automation probe`): what the simulated home-automation
//! loop measured, as the emulator's probe writes it and the harness reads it back.

use serde::{Deserialize, Serialize};

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// What a probe measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeResult {
    pub period_us: u64,
    pub io: bool,
    pub samples: u64,
    /// Ticks that started a whole period or more after their deadline.
    pub missed: u64,
    pub lateness_us: Percentiles,
    pub io_us: Option<Percentiles>,
    /// Lateness histogram for plots: (upper bound of a log2 bucket in µs, ticks in it).
    pub lateness_buckets: Vec<(u64, u64)>,
    /// Every recorded lateness at the histogram's precision (3 significant digits): (highest
    /// value of its bucket in µs, ticks in it), ascending. Several probes' counts add up to
    /// one histogram with the same percentiles as if it had been recorded at once.
    // Left out when empty: the harness drops the counts once it has merged them, and its report
    // should not carry empty lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lateness_counts: Vec<(u64, u64)>,
    /// The tick's I/O times, the same way (empty with `io` off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_counts: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(counts: Vec<(u64, u64)>) -> ProbeResult {
        let p = Percentiles {
            p50: 5,
            p99: 9,
            p999: 9,
            max: 9,
            mean: 7.0,
        };
        ProbeResult {
            period_us: 10_000,
            io: true,
            samples: 2,
            missed: 0,
            lateness_us: p.clone(),
            io_us: Some(p),
            lateness_buckets: vec![(8, 1), (16, 1)],
            lateness_counts: counts.clone(),
            io_counts: counts,
        }
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let r = result(vec![(5, 1), (9, 1)]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"lateness_counts\":[[5,1],[9,1]]"), "{json}");
        assert_eq!(serde_json::from_str::<ProbeResult>(&json).unwrap(), r);
    }

    #[test]
    fn empty_counts_are_left_out_and_read_back_as_empty() {
        let r = result(vec![]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("counts"), "{json}");
        assert_eq!(serde_json::from_str::<ProbeResult>(&json).unwrap(), r);
    }
}
