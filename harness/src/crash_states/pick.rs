//! Which states of a card to check: the flush points of an operation's span of the write log
//! (a flush with no write since the last one repeats its state and is checked once), all of
//! them or an even spread of `max`, and `prefixes` seeded in-order prefixes of the writes
//! between two flush points (what a card that wrote in order would hold if the power went
//! between them).

use crate::crash::log::Entry;
use crate::session::SeededRandom;

/// A state: the log's first `entries` entries applied to the base card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct State {
    pub entries: usize,
    pub flush_point: bool,
}

/// What [`pick`] found in the span and chose.
#[derive(Debug, Default)]
pub struct Picked {
    pub flush_points: usize,
    pub distinct: usize,
    pub states: Vec<State>,
}

impl Picked {
    /// Why the span from `start` to `end` proves nothing: no flush in it (nothing the operation
    /// wrote was made durable where the log saw it, so its one state is the start's).
    pub fn span_error(&self, start: usize, end: usize) -> Option<String> {
        (self.flush_points == 0).then(|| {
            format!(
                "the write log holds no flush between the operation's start and end (entries {start}..{end}): \
                 no state of it can be checked; did the card's writes reach the log?"
            )
        })
    }
}

/// The states of `entries[..end]` from `start` on (both entry counts, `start` a state itself).
pub fn pick(
    entries: &[Entry],
    start: usize,
    end: usize,
    max: usize,
    prefixes: usize,
    random: &mut SeededRandom,
) -> Picked {
    let end = end.min(entries.len());
    let start = start.min(end);
    let mut flush_points = 0;
    let mut distinct = vec![start];
    let mut written_since = false;
    for (i, e) in entries.iter().enumerate().take(end).skip(start) {
        if e.is_flush() {
            flush_points += 1;
            if written_since {
                distinct.push(i + 1);
                written_since = false;
            }
        } else {
            written_since = true;
        }
    }
    let n = distinct.len();
    let mut states: Vec<State> = if max == 0 || n <= max {
        distinct
            .iter()
            .map(|&entries| State {
                entries,
                flush_point: true,
            })
            .collect()
    } else {
        // An even spread that keeps the first and the last.
        let mut chosen: Vec<usize> = (0..max)
            .map(|i| distinct[if max == 1 { n - 1 } else { i * (n - 1) / (max - 1) }])
            .collect();
        chosen.dedup();
        chosen
            .into_iter()
            .map(|entries| State {
                entries,
                flush_point: true,
            })
            .collect()
    };
    // Gaps between consecutive distinct flush points that hold at least two writes: a prefix
    // strictly inside differs from both ends.
    let gaps: Vec<(usize, usize)> = distinct
        .windows(2)
        .map(|w| (w[0], w[1] - 1))
        .filter(|(a, b)| b - a >= 2)
        .collect();
    if !gaps.is_empty() {
        for _ in 0..prefixes {
            let (a, b) = gaps[random.between(0, gaps.len() as u64 - 1) as usize];
            let cut = random.between(a as u64 + 1, b as u64 - 1) as usize;
            states.push(State {
                entries: cut,
                flush_point: false,
            });
        }
    }
    states.sort();
    states.dedup();
    Picked {
        flush_points,
        distinct: n,
        states,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::log::FLUSH;

    fn log(kinds: &str) -> Vec<Entry> {
        kinds
            .chars()
            .map(|c| Entry::for_test(if c == 'f' { FLUSH } else { 0 }))
            .collect()
    }

    #[test]
    fn repeated_flushes_are_one_state() {
        // w f f w w f f
        let e = log("wffwwff");
        let p = pick(&e, 0, e.len(), 0, 0, &mut SeededRandom::for_scenario(1, "t"));
        assert_eq!(p.flush_points, 4);
        // the start, after the first write's flush (2), after the next two writes' flush (6)
        let at: Vec<usize> = p.states.iter().map(|s| s.entries).collect();
        assert_eq!(at, vec![0, 2, 6]);
        assert_eq!(p.distinct, 3);
    }

    #[test]
    fn a_span_without_a_flush_is_an_error_not_a_pass() {
        let e = log("wwww");
        let p = pick(&e, 0, e.len(), 3, 1, &mut SeededRandom::for_scenario(1, "t"));
        assert_eq!(p.states.len(), 1, "only the start");
        assert!(p.span_error(0, 4).unwrap().contains("no flush"));
        let none = pick(&e, 2, 2, 3, 1, &mut SeededRandom::for_scenario(1, "t"));
        assert!(none.span_error(2, 2).is_some(), "an empty span");
        let e = log("wwf");
        assert!(pick(&e, 0, 3, 3, 1, &mut SeededRandom::for_scenario(1, "t"))
            .span_error(0, 3)
            .is_none());
    }

    #[test]
    fn a_spread_keeps_the_first_and_the_last() {
        let e = log(&"wf".repeat(50));
        let p = pick(&e, 10, e.len(), 5, 0, &mut SeededRandom::for_scenario(1, "t"));
        let at: Vec<usize> = p.states.iter().map(|s| s.entries).collect();
        assert_eq!(at.len(), 5);
        assert_eq!((at[0], at[4]), (10, 100));
        assert!(at.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn prefixes_fall_strictly_between_flush_points_and_repeat_with_the_seed() {
        let e = log("wwwwfwwwwwf");
        let draw = |seed| {
            pick(&e, 0, e.len(), 0, 3, &mut SeededRandom::for_scenario(seed, "t"))
                .states
                .into_iter()
                .filter(|s| !s.flush_point)
                .map(|s| s.entries)
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert!(!a.is_empty());
        for p in &a {
            assert!(
                (1..=3).contains(p) || (6..=9).contains(p),
                "{p} is not strictly between flushes"
            );
        }
        assert_eq!(a, draw(42));
    }
}
