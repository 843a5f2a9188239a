//! The gate's policy: which changes of a history's trends stop a merge, which a control excuses
//! (the machine slowed as much, at the same commit) and which are the host's. Plain functions
//! over [`Trend`]s; `history check` loads the trends and prints the verdicts.
//!
//! Stateless: the gate keeps nothing between checks. What it needs to know of the past (was this
//! change shown a commit earlier? was it excused then?) it learns by judging the history as it
//! stood before the newest commit, which the caller loads beside it.

use super::changepoint::Change;
use super::store::Role;
use super::Trend;

/// How the gate judges.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How many of the newest commits count as newest: a change for the worse among them gates.
    pub newest: usize,
    /// Whether a change for the worse first proven more than `newest` commits after it came in
    /// gates (once, at the commit where it is first proven).
    pub late_changes: bool,
}

/// A control's change for the worse that was as large as one of ours, at the same commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// The control series.
    pub series: String,
    /// The commit its change came in at.
    pub commit: String,
    /// Its size relative to its level before (0.15: 15 % worse).
    pub relative: f64,
}

/// What the gate makes of one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A change for the worse among the newest commits, and the code's: it gates.
    Gates,
    /// A change for the worse from before the newest commits, first proven now (the series a
    /// commit earlier did not show it): it gates, at this commit.
    GatesLate {
        /// How many commits have it, counting the one it came in at and the newest.
        commits_after: usize,
    },
    /// A change for the worse that a control moved as much with, but the control came back
    /// (at `back`, within `newest` commits) and ours stayed: the code's after all. It gates among
    /// the newest commits, and at the commit where the control's return is first proven.
    ControlBack { control: Control, back: String },
    /// A change for the worse while a control on the same device moved the same way, by at least
    /// half as much, at the same commit (±1), and is still there: not gating yet. Judged again at
    /// every later commit until the control comes back (then it gates) or both have stayed for
    /// more than `newest` commits (then it is the machine's). Also a change a control excused a
    /// commit earlier whose control's change is no longer seen, its return not proven either.
    Unconfirmed { control: Control },
    /// A change for the worse that a control matched, and that both kept for more than `newest`
    /// commits (or left together): the machine's; it never gates.
    Machine { control: Control },
    /// A change of a control series: the machine moved, not the code; it never gates.
    Host,
    /// A change for the better.
    Better,
    /// A change for the worse, the code's, that is no longer news: it gated among the newest
    /// commits or when first proven (or came in before them and late changes are off).
    Old,
}

impl Verdict {
    /// Whether it stops the merge.
    pub fn gates(&self) -> bool {
        matches!(
            self,
            Verdict::Gates | Verdict::GatesLate { .. } | Verdict::ControlBack { .. }
        )
    }
}

/// One change of one trend, judged.
#[derive(Debug, Clone)]
pub struct Judged<'a> {
    pub trend: &'a Trend,
    pub change: &'a Change,
    /// Whether it came in among the newest `Policy::newest` commits of its series.
    pub recent: bool,
    pub verdict: Verdict,
}

/// Every change of `now`'s trends, judged, in order; `before` is the same history as it stood
/// before the newest commit (its runs left out), to tell what is news.
pub fn judge<'a>(now: &'a [Trend], before: &[Trend], policy: Policy) -> Vec<Judged<'a>> {
    let mut out = Vec::new();
    for t in now {
        let n = t.commits.len();
        for (pos, c) in t.changes.iter().enumerate() {
            let recent = c.index + policy.newest >= n;
            let verdict = if t.series.role == Role::Control {
                Verdict::Host
            } else if !t.worse(c) {
                Verdict::Better
            } else {
                worse(now, before, t, pos, recent, policy)
            };
            out.push(Judged {
                trend: t,
                change: c,
                recent,
                verdict,
            });
        }
    }
    out
}

/// Whose a change for the worse is, at one commit.
#[derive(Debug, Clone, PartialEq)]
enum Blame {
    /// No control moved as much with it: the code's.
    Code,
    /// A control moved as much with it but came back while it stayed: the code's.
    Back {
        control: Control,
        back: String,
    },
    Unconfirmed(Control),
    Machine(Control),
}

/// The verdict on `t`'s change `pos`, for the worse, of a series that measures the code.
fn worse(now: &[Trend], before: &[Trend], t: &Trend, pos: usize, recent: bool, policy: Policy) -> Verdict {
    // The code's: `None`, or `Some` when a control moved with it but came back.
    let back = match blame(now, t, pos, policy.newest) {
        Blame::Unconfirmed(control) => return Verdict::Unconfirmed { control },
        Blame::Machine(control) => return Verdict::Machine { control },
        Blame::Back { control, back } => Some(Verdict::ControlBack { control, back }),
        Blame::Code => None,
    };
    if recent {
        return back.unwrap_or(Verdict::Gates);
    }
    match (back, earlier(before, t, &t.changes[pos], policy.newest)) {
        // Not shown a commit earlier: proven only now.
        (None, None) if policy.late_changes => Verdict::GatesLate {
            commits_after: t.commits.len() - t.changes[pos].index,
        },
        (Some(v), None) if policy.late_changes => v,
        (_, None) => Verdict::Old,
        (Some(_), Some(Blame::Back { .. })) => Verdict::Old,
        // The control's return is proven only now.
        (Some(v), Some(_)) => v,
        // Excused a commit earlier, and the control's change is no longer seen, though its
        // return is not proven either (one fast run of it blurs its step): wait for that.
        (None, Some(Blame::Unconfirmed(control) | Blame::Machine(control))) => Verdict::Unconfirmed { control },
        (None, Some(_)) => Verdict::Old,
    }
}

/// How the history as it stood before the newest commit blamed the same change (one for the
/// worse at the same commit, ±1), or `None` when it did not show it.
fn earlier(before: &[Trend], t: &Trend, c: &Change, newest: usize) -> Option<Blame> {
    let bt = before
        .iter()
        .find(|b| b.series.name == t.series.name && b.device == t.device)?;
    let (pos, _) = bt
        .changes
        .iter()
        .enumerate()
        .filter(|(_, b)| bt.worse(b) && b.index.abs_diff(c.index) <= 1)
        .min_by_key(|(_, b)| b.index.abs_diff(c.index))?;
    Some(blame(before, bt, pos, newest))
}

/// Whose `t`'s change `pos` (for the worse) is: a control on the same device that moved the
/// same way by at least half as much at the same commit (±1) excuses it while it stays; if the
/// control came back within `newest` commits and ours did not, it is the code's; if both stayed
/// for more than `newest` commits, or left together, the machine's.
fn blame(trends: &[Trend], t: &Trend, pos: usize, newest: usize) -> Blame {
    let c = &t.changes[pos];
    let ours_back = returned(t, pos);
    let ours_held = ours_back.unwrap_or(t.commits.len()) - c.index;
    let mut found = Vec::new();
    for u in trends
        .iter()
        .filter(|u| u.series.role == Role::Control && u.device == t.device)
    {
        for (k, kc) in u.changes.iter().enumerate() {
            let same_commit = t
                .commits
                .iter()
                .position(|(id, _)| *id == u.commits[kc.index].0)
                .is_some_and(|j| j.abs_diff(c.index) <= 1);
            if !same_commit || !u.worse(kc) || kc.relative().abs() < c.relative().abs() / 2.0 {
                continue;
            }
            let control = Control {
                series: u.series.name.clone(),
                commit: u.commits[kc.index].0.clone(),
                relative: kc.relative(),
            };
            let its_back = returned(u, k);
            let its_held = its_back.unwrap_or(u.commits.len()) - kc.index;
            found.push(if its_held > newest && ours_held > newest {
                Blame::Machine(control)
            } else if let Some(r) = its_back {
                if ours_back.is_some() && ours_held <= its_held + 1 {
                    Blame::Machine(control)
                } else {
                    Blame::Back {
                        control,
                        back: u.commits[r].0.clone(),
                    }
                }
            } else if ours_back.is_some() {
                Blame::Machine(control)
            } else {
                Blame::Unconfirmed(control)
            });
        }
    }
    // Any control that still excuses it does; else the first that came back.
    let rank = |b: &Blame| match b {
        Blame::Unconfirmed(_) => 0,
        Blame::Machine(_) => 1,
        _ => 2,
    };
    found.into_iter().min_by_key(rank).unwrap_or(Blame::Code)
}

/// Where the level `t`'s change `pos` reached was left again: the first later change after
/// which the series is nearer its level before `pos` than after it.
fn returned(t: &Trend, pos: usize) -> Option<usize> {
    let c = &t.changes[pos];
    t.changes[pos + 1..]
        .iter()
        .find(|l| (l.mean_after - c.mean_before).abs() < (l.mean_after - c.mean_after).abs())
        .map(|l| l.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::store::{Better, Series, Stat};

    /// A series of `n` commits (c00, c01, ...) that measures the code (or is a control), lower
    /// is better, with these changes: (index, level before, level after).
    fn trend(name: &str, role: Role, n: usize, steps: &[(usize, f64, f64)]) -> Trend {
        Trend {
            series: Series {
                name: name.into(),
                unit: "ns".into(),
                better: Better::Lower,
                stat: Stat::Median,
                role,
            },
            device: "host".into(),
            commits: (0..n).map(|i| (format!("c{i:02}"), 0.0)).collect(),
            runs: vec![Vec::new(); n],
            changes: steps
                .iter()
                .map(|&(index, mean_before, mean_after)| Change {
                    index,
                    mean_before,
                    mean_after,
                    p_value: 1e-6,
                })
                .collect(),
        }
    }

    const POLICY: Policy = Policy {
        newest: 3,
        late_changes: true,
    };

    /// Our series' verdict, with the history a commit earlier given.
    fn ours(now: &[Trend], before: &[Trend], policy: Policy) -> Verdict {
        judge(now, before, policy)
            .into_iter()
            .find(|j| j.trend.series.role == Role::Measure)
            .expect("a change of ours")
            .verdict
    }

    #[test]
    fn a_control_excuses_only_a_move_as_large_at_the_same_commit() {
        let ours_20 = || trend("ours", Role::Measure, 33, &[(30, 200.0, 240.0)]);
        let control = |index, after| trend("tar", Role::Control, 33, &[(index, 300.0, after)]);
        // +8 % is less than half of +20 %: the loss gates (today's gate let it through).
        let now = [ours_20(), control(30, 324.0)];
        assert_eq!(ours(&now, &now, POLICY), Verdict::Gates);
        // +12 % at the commit after ours: unconfirmed.
        let now = [ours_20(), control(31, 336.0)];
        assert!(
            matches!(&ours(&now, &now, POLICY), Verdict::Unconfirmed { control } if control.commit == "c31"),
            "{:?}",
            ours(&now, &now, POLICY)
        );
        // Two commits before ours, or for the better, or on another device: the code's.
        for other in [control(28, 336.0), control(30, 250.0)] {
            assert_eq!(ours(&[ours_20(), other.clone()], &[], POLICY), Verdict::Gates);
        }
        let mut elsewhere = control(30, 336.0);
        elsewhere.device = "bench-2".into();
        assert_eq!(ours(&[ours_20(), elsewhere], &[], POLICY), Verdict::Gates);
    }

    #[test]
    fn a_matched_loss_gates_when_the_control_comes_back_and_is_the_machines_when_both_stay() {
        let ours_12 = |n| trend("ours", Role::Measure, n, &[(30, 200.0, 224.0)]);
        // The control back at c33, proven at the 36th commit: a commit earlier it looked settled.
        let back = trend("tar", Role::Control, 36, &[(30, 300.0, 345.0), (33, 345.0, 300.0)]);
        let stayed = |n| trend("tar", Role::Control, n, &[(30, 300.0, 345.0)]);
        let now = [ours_12(36), back.clone()];
        let earlier = [ours_12(35), stayed(35)];
        assert_eq!(
            ours(&earlier, &[ours_12(34), stayed(34)], POLICY),
            Verdict::Machine {
                control: Control {
                    series: "tar".into(),
                    commit: "c30".into(),
                    relative: 0.15
                }
            }
        );
        let v = ours(&now, &earlier, POLICY);
        assert!(
            matches!(&v, Verdict::ControlBack { back, .. } if back == "c33") && v.gates(),
            "{v:?}"
        );
        // A commit later it is old news.
        assert_eq!(ours(&[ours_12(37), back.clone()], &now, POLICY), Verdict::Old);
        // One fast run of the control blurs its step, its return not proven yet: still waiting.
        let blurred = [ours_12(34), trend("tar", Role::Control, 34, &[])];
        let v = ours(&blurred, &[ours_12(33), stayed(33)], POLICY);
        assert!(matches!(&v, Verdict::Unconfirmed { .. }) && !v.gates(), "{v:?}");
        // Both came back together: the machine's.
        let ours_back = trend("ours", Role::Measure, 36, &[(30, 200.0, 224.0), (33, 224.0, 200.0)]);
        assert!(matches!(
            ours(&[ours_back, back], &earlier, POLICY),
            Verdict::Machine { .. }
        ));
        // Both stayed: unconfirmed among the newest 3, the machine's after.
        assert!(matches!(
            ours(&[ours_12(33), stayed(33)], &[], POLICY),
            Verdict::Unconfirmed { .. }
        ));
        assert!(matches!(
            ours(&[ours_12(40), stayed(40)], &[ours_12(39), stayed(39)], POLICY),
            Verdict::Machine { .. }
        ));
    }

    #[test]
    fn a_change_first_proven_late_gates_once_unless_late_changes_are_off() {
        let proven = trend("ours", Role::Measure, 35, &[(30, 200.0, 212.0)]);
        let unseen = trend("ours", Role::Measure, 34, &[]);
        assert_eq!(
            ours(std::slice::from_ref(&proven), std::slice::from_ref(&unseen), POLICY),
            Verdict::GatesLate { commits_after: 5 }
        );
        let off = Policy {
            late_changes: false,
            ..POLICY
        };
        assert_eq!(
            ours(std::slice::from_ref(&proven), std::slice::from_ref(&unseen), off),
            Verdict::Old
        );
        // Shown a commit earlier (one commit off, as a refit may place it): no news.
        let shown = trend("ours", Role::Measure, 34, &[(29, 200.0, 211.0)]);
        assert_eq!(
            ours(std::slice::from_ref(&proven), std::slice::from_ref(&shown), POLICY),
            Verdict::Old
        );
    }
}
