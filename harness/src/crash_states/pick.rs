//! Which states of a card to check: the flush points of an operation's span of the write log
//! (a flush with no write since the last one repeats its state and is checked once), all of
//! them or an even spread of `max`, and `prefixes` seeded in-order prefixes of the writes
//! between two flush points (what a card that wrote in order would hold if the power went
//! between them). Beyond prefixes, what a card without power-loss protection may keep of a
//! flush epoch (the writes after one flush point, up to the next flush): every write but a
//! subset of up to `reorder` of them (reordered), or every write with one cut at a 512-byte
//! sector (torn). A FUA write is never dropped or cut: the card acknowledged it whole. Each
//! kind is bounded by `max` per operation, drawn with the seed.

use std::collections::BTreeSet;

use crate::crash::log::{Entry, Variant};
use crate::session::SeededRandom;

/// What a state is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The log up to a flush: what the card promised to keep.
    FlushPoint,
    /// An in-order prefix of the writes between two flush points.
    Prefix,
    /// A flush epoch's writes but some (`Variant::dropped`).
    Reordered,
    /// A flush epoch's writes, one of them cut at a sector (`Variant::torn`).
    Torn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FlushPoint => "flush point",
            Kind::Prefix => "prefix",
            Kind::Reordered => "reordered",
            Kind::Torn => "torn",
        }
    }
}

/// A state: the log's first `entries` entries applied to the base card, from the flush point
/// `epoch` on as `variant` says (dropped writes, a torn one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct State {
    /// Where the replay of the in-order log stops before the variant is applied: `entries`
    /// for a flush point or a prefix, the epoch's start for the others (states are checked in
    /// this order, so the in-order replay only moves forward).
    pub epoch: usize,
    pub entries: usize,
    pub kind: Kind,
    pub variant: Variant,
}

impl State {
    fn at(entries: usize, kind: Kind) -> Self {
        Self {
            epoch: entries,
            entries,
            kind,
            variant: Variant::default(),
        }
    }

    pub fn flush_point(&self) -> bool {
        self.kind == Kind::FlushPoint
    }

    /// The state's name in the report, enough to rebuild it from the same log: e.g.
    /// `reordered at entry 431 (epoch from 412), entries 415,420 dropped`.
    pub fn name(&self) -> String {
        match self.kind {
            Kind::FlushPoint | Kind::Prefix => format!("{} at entry {}", self.kind.name(), self.entries),
            Kind::Reordered | Kind::Torn => {
                let mut n = format!(
                    "{} at entry {} (epoch from {})",
                    self.kind.name(),
                    self.entries,
                    self.epoch
                );
                if !self.variant.dropped.is_empty() {
                    let d: Vec<String> = self.variant.dropped.iter().map(|i| i.to_string()).collect();
                    n.push_str(&format!(
                        ", entr{} {} dropped",
                        if d.len() == 1 { "y" } else { "ies" },
                        d.join(",")
                    ));
                }
                if let Some((w, s)) = self.variant.torn {
                    n.push_str(&format!(", entry {w} cut after {s} sector(s)"));
                }
                n
            }
        }
    }

    /// A file name for the state's kept image.
    pub fn file_stem(&self) -> String {
        let mut n = format!("state-{}", self.entries);
        if !self.variant.dropped.is_empty() {
            let d: Vec<String> = self.variant.dropped.iter().map(|i| i.to_string()).collect();
            n.push_str(&format!("-drop-{}", d.join("-")));
        }
        if let Some((w, s)) = self.variant.torn {
            n.push_str(&format!("-torn-{w}x{s}"));
        }
        if self.kind == Kind::Prefix {
            n.push_str("-prefix");
        }
        n
    }
}

/// The states beyond in-order prefixes asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beyond {
    /// Subsets of up to this many writes of an epoch dropped (0: no reordered states).
    pub reorder: usize,
    pub torn: bool,
}

/// Reordered states drawn at most per epoch: an epoch of many writes has more subsets than
/// could ever be checked; a seeded sample of them is.
pub const EPOCH_SUBSETS: usize = 16;

/// What [`pick`] found in the span and chose.
#[derive(Debug, Default)]
pub struct Picked {
    pub flush_points: usize,
    pub distinct: usize,
    /// Candidates of each kind beyond prefixes (before the draw of `max`).
    pub reordered_candidates: usize,
    pub torn_candidates: usize,
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

    #[cfg(test)]
    pub fn count(&self, kind: Kind) -> usize {
        self.states.iter().filter(|s| s.kind == kind).count()
    }
}

/// The states of `entries[..end]` from `start` on (both entry counts, `start` a state itself).
pub fn pick(
    entries: &[Entry],
    start: usize,
    end: usize,
    max: usize,
    prefixes: usize,
    beyond: Beyond,
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
        distinct.iter().map(|&e| State::at(e, Kind::FlushPoint)).collect()
    } else {
        // An even spread that keeps the first and the last.
        let mut chosen: Vec<usize> = (0..max)
            .map(|i| distinct[if max == 1 { n - 1 } else { i * (n - 1) / (max - 1) }])
            .collect();
        chosen.dedup();
        chosen.into_iter().map(|e| State::at(e, Kind::FlushPoint)).collect()
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
            states.push(State::at(cut, Kind::Prefix));
        }
    }
    // The epochs: from a distinct flush point to the flush that ends the next one (the state
    // just before that flush completed: every write of the epoch acknowledged, none promised).
    let epochs: Vec<Epoch> = distinct
        .windows(2)
        .map(|w| Epoch {
            start: w[0],
            end: w[1] - 1,
            writes: (w[0]..w[1] - 1)
                .filter(|&i| entries[i].is_write() && !entries[i].is_fua())
                .collect(),
        })
        .collect();
    let mut reordered = Vec::new();
    if beyond.reorder > 0 {
        for ep in &epochs {
            for dropped in ep.subsets(beyond.reorder, random) {
                reordered.push(State {
                    epoch: ep.start,
                    entries: ep.end,
                    kind: Kind::Reordered,
                    variant: Variant { dropped, torn: None },
                });
            }
        }
    }
    let mut torn = Vec::new();
    if beyond.torn {
        for ep in &epochs {
            for &w in &ep.writes {
                let sectors = entries[w].nr_sectors;
                if sectors >= 2 && !entries[w].is_discard() {
                    torn.push(State {
                        epoch: ep.start,
                        entries: ep.end,
                        kind: Kind::Torn,
                        variant: Variant {
                            dropped: Vec::new(),
                            torn: Some((w, random.between(1, sectors - 1))),
                        },
                    });
                }
            }
        }
    }
    let (reordered_candidates, torn_candidates) = (reordered.len(), torn.len());
    states.extend(sample(reordered, max, random));
    states.extend(sample(torn, max, random));
    states.sort();
    states.dedup();
    Picked {
        flush_points,
        distinct: n,
        reordered_candidates,
        torn_candidates,
        states,
    }
}

/// A flush epoch: entries `start..end` (`end` the flush that closes it), the writes among them
/// the card may have left out (not FUA).
struct Epoch {
    start: usize,
    end: usize,
    writes: Vec<usize>,
}

impl Epoch {
    /// The subsets of up to `k` writes to drop that make a state of their own: never all the
    /// writes (the epoch's start) nor the last ones alone (an in-order prefix). Every one when
    /// there are at most [`EPOCH_SUBSETS`], else a seeded sample of that many.
    fn subsets(&self, k: usize, random: &mut SeededRandom) -> Vec<Vec<usize>> {
        let n = self.writes.len();
        let k = k.min(n.saturating_sub(1));
        if k == 0 {
            return Vec::new();
        }
        let is_suffix = |s: &[usize]| s.iter().enumerate().all(|(j, &p)| p == n - s.len() + j);
        let total: u128 = (1..=k).map(|j| binomial(n, j)).sum();
        let mut chosen: BTreeSet<Vec<usize>> = BTreeSet::new();
        if total <= EPOCH_SUBSETS as u128 * 2 {
            for j in 1..=k {
                combinations(n, j, &mut |c| {
                    if !is_suffix(c) {
                        chosen.insert(c.to_vec());
                    }
                });
            }
            if chosen.len() > EPOCH_SUBSETS {
                let all: Vec<Vec<usize>> = chosen.into_iter().collect();
                chosen = sample(all, EPOCH_SUBSETS, random).into_iter().collect();
            }
        } else {
            // Too many to list: distinct draws, a size then that many positions.
            let mut tries = 0;
            while chosen.len() < EPOCH_SUBSETS && tries < EPOCH_SUBSETS * 8 {
                tries += 1;
                let size = random.between(1, k as u64) as usize;
                let mut c: BTreeSet<usize> = BTreeSet::new();
                while c.len() < size {
                    c.insert(random.between(0, n as u64 - 1) as usize);
                }
                let c: Vec<usize> = c.into_iter().collect();
                if !is_suffix(&c) {
                    chosen.insert(c);
                }
            }
        }
        chosen
            .into_iter()
            .map(|c| c.into_iter().map(|p| self.writes[p]).collect())
            .collect()
    }
}

fn binomial(n: usize, k: usize) -> u128 {
    let mut r: u128 = 1;
    for i in 0..k as u128 {
        r = r.saturating_mul(n as u128 - i) / (i + 1);
    }
    r
}

/// Calls `f` with every `k`-subset of `0..n`, in order.
fn combinations(n: usize, k: usize, f: &mut dyn FnMut(&[usize])) {
    let mut c: Vec<usize> = (0..k).collect();
    loop {
        f(&c);
        let Some(i) = (0..k).rev().find(|&i| c[i] < n - k + i) else {
            return;
        };
        c[i] += 1;
        for j in i + 1..k {
            c[j] = c[j - 1] + 1;
        }
    }
}

/// `max` of `items` drawn with `random`, in their order (all of them if `max` is 0 or more).
fn sample<T>(mut items: Vec<T>, max: usize, random: &mut SeededRandom) -> Vec<T> {
    if max == 0 || items.len() <= max {
        return items;
    }
    let mut keep: Vec<usize> = (0..items.len()).collect();
    for i in 0..max {
        let j = random.between(i as u64, keep.len() as u64 - 1) as usize;
        keep.swap(i, j);
    }
    let mut keep: Vec<usize> = keep[..max].to_vec();
    keep.sort_unstable();
    let mut out = Vec::with_capacity(max);
    for (i, item) in items.drain(..).enumerate() {
        if keep.binary_search(&i).is_ok() {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::log::{FLUSH, FUA};

    const NONE: Beyond = Beyond {
        reorder: 0,
        torn: false,
    };

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
        let p = pick(&e, 0, e.len(), 0, 0, NONE, &mut SeededRandom::for_scenario(1, "t"));
        assert_eq!(p.flush_points, 4);
        // the start, after the first write's flush (2), after the next two writes' flush (6)
        let at: Vec<usize> = p.states.iter().map(|s| s.entries).collect();
        assert_eq!(at, vec![0, 2, 6]);
        assert_eq!(p.distinct, 3);
    }

    #[test]
    fn a_span_without_a_flush_is_an_error_not_a_pass() {
        let e = log("wwww");
        let p = pick(&e, 0, e.len(), 3, 1, NONE, &mut SeededRandom::for_scenario(1, "t"));
        assert_eq!(p.states.len(), 1, "only the start");
        assert!(p.span_error(0, 4).unwrap().contains("no flush"));
        let none = pick(&e, 2, 2, 3, 1, NONE, &mut SeededRandom::for_scenario(1, "t"));
        assert!(none.span_error(2, 2).is_some(), "an empty span");
        let e = log("wwf");
        assert!(pick(&e, 0, 3, 3, 1, NONE, &mut SeededRandom::for_scenario(1, "t"))
            .span_error(0, 3)
            .is_none());
    }

    #[test]
    fn a_spread_keeps_the_first_and_the_last() {
        let e = log(&"wf".repeat(50));
        let p = pick(&e, 10, e.len(), 5, 0, NONE, &mut SeededRandom::for_scenario(1, "t"));
        let at: Vec<usize> = p.states.iter().map(|s| s.entries).collect();
        assert_eq!(at.len(), 5);
        assert_eq!((at[0], at[4]), (10, 100));
        assert!(at.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn prefixes_fall_strictly_between_flush_points_and_repeat_with_the_seed() {
        let e = log("wwwwfwwwwwf");
        let draw = |seed| {
            pick(&e, 0, e.len(), 0, 3, NONE, &mut SeededRandom::for_scenario(seed, "t"))
                .states
                .into_iter()
                .filter(|s| !s.flush_point())
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

    /// `w` a write, `W` a FUA write, `f` a flush, each `sectors` long.
    fn sized(kinds: &str, sectors: u64) -> Vec<Entry> {
        kinds
            .chars()
            .map(|c| match c {
                'f' => Entry::for_test(FLUSH),
                'W' => Entry::for_test_sized(FUA, sectors),
                _ => Entry::for_test_sized(0, sectors),
            })
            .collect()
    }

    fn dropped(p: &Picked) -> Vec<Vec<usize>> {
        p.states
            .iter()
            .filter(|s| s.kind == Kind::Reordered)
            .map(|s| s.variant.dropped.clone())
            .collect()
    }

    #[test]
    fn reordered_states_drop_up_to_k_writes_never_a_fua_one_nor_only_the_last_ones() {
        // Entries 1, 2 and 4 may be left out; 3 is FUA; 5 closes the epoch.
        let e = log("fwwwwf");
        let mut e = e;
        e[3] = Entry::for_test(FUA);
        let r = &mut SeededRandom::for_scenario(1, "t");
        let one = pick(
            &e,
            0,
            e.len(),
            0,
            0,
            Beyond {
                reorder: 1,
                torn: false,
            },
            r,
        );
        // {4} alone is the prefix of entries 1-3: not a reordered state.
        assert_eq!(dropped(&one), vec![vec![1], vec![2]]);
        assert_eq!(one.reordered_candidates, 2);
        for s in one.states.iter().filter(|s| s.kind == Kind::Reordered) {
            assert_eq!(
                (s.epoch, s.entries),
                (0, 5),
                "from the epoch's start to just before its flush"
            );
        }
        let two = pick(
            &e,
            0,
            e.len(),
            0,
            0,
            Beyond {
                reorder: 2,
                torn: false,
            },
            r,
        );
        // Pairs: {1,2}, {1,4}; {2,4} is the prefix of entry 1 (and FUA 3), all three the start.
        assert_eq!(dropped(&two), vec![vec![1], vec![1, 2], vec![1, 4], vec![2]]);
        assert!(dropped(&two).iter().flatten().all(|&i| i != 3), "the FUA write is kept");
        assert_eq!(two.count(Kind::FlushPoint), 2);
        // An epoch of one write has nothing to reorder.
        let e = log("wfwf");
        assert_eq!(
            pick(
                &e,
                0,
                4,
                0,
                0,
                Beyond {
                    reorder: 3,
                    torn: false
                },
                r
            )
            .count(Kind::Reordered),
            0
        );
    }

    #[test]
    fn reordered_states_are_a_bounded_sample_that_repeats_with_the_seed() {
        // 30 epochs of four writes: 3 states each with K=1, 90 candidates.
        let e = log(&"wwwwf".repeat(30));
        let draw = |seed, max| {
            pick(
                &e,
                0,
                e.len(),
                max,
                0,
                Beyond {
                    reorder: 1,
                    torn: false,
                },
                &mut SeededRandom::for_scenario(seed, "t"),
            )
        };
        let all = draw(1, 0);
        assert_eq!((all.reordered_candidates, all.count(Kind::Reordered)), (90, 90));
        let some = draw(1, 8);
        assert_eq!((some.reordered_candidates, some.count(Kind::Reordered)), (90, 8));
        assert_eq!(dropped(&some), dropped(&draw(1, 8)), "the same seed, the same states");
        assert_ne!(dropped(&some), dropped(&draw(2, 8)), "another seed, others");
        // The states are in replay order: the in-order replay point never goes back.
        let all = draw(1, 8).states;
        assert!(all.windows(2).all(|w| w[0].epoch <= w[1].epoch && w[0] < w[1]));
        // A large epoch: a seeded sample of EPOCH_SUBSETS subsets, none too large, none a suffix.
        let e = log(&format!("{}f", "w".repeat(200)));
        let p = pick(
            &e,
            0,
            e.len(),
            0,
            0,
            Beyond {
                reorder: 2,
                torn: false,
            },
            &mut SeededRandom::for_scenario(1, "t"),
        );
        let d = dropped(&p);
        assert_eq!(d.len(), EPOCH_SUBSETS);
        assert!(d
            .iter()
            .all(|s| (1..=2).contains(&s.len()) && *s != vec![199] && *s != vec![198, 199]));
    }

    #[test]
    fn torn_states_cut_a_write_of_two_sectors_or_more_between_its_sectors_never_a_fua_one() {
        let mut e = sized("fwwwf", 8);
        e[2] = Entry::for_test_sized(0, 1);
        e[3] = Entry::for_test_sized(FUA, 8);
        let draw = |seed| {
            pick(
                &e,
                0,
                e.len(),
                0,
                0,
                Beyond { reorder: 0, torn: true },
                &mut SeededRandom::for_scenario(seed, "t"),
            )
        };
        let p = draw(5);
        let torn: Vec<&State> = p.states.iter().filter(|s| s.kind == Kind::Torn).collect();
        assert_eq!(torn.len(), 1, "one sector cannot tear, FUA does not: {torn:?}");
        let (w, n) = torn[0].variant.torn.unwrap();
        assert_eq!(w, 1);
        assert!((1..=7).contains(&n), "cut between two of its 8 sectors: {n}");
        assert!(torn[0].variant.dropped.is_empty());
        assert_eq!(draw(5).states, p.states, "the same seed, the same cut");
        assert!(torn[0].name().contains("entry 1 cut after"), "{}", torn[0].name());
        assert!(torn[0].file_stem().contains("-torn-1x"), "{}", torn[0].file_stem());
    }
}
