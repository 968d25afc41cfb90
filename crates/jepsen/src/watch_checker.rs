//! The checker of the `watch` workload: every watcher sees exactly the committed history of
//! its glob, in revision order, with no gap and no duplicate.
//!
//! The committed history is read at the end of the run, after the cluster healed, by a
//! fresh client that walks the history with WAIT from the first revision of the run to
//! the last. It is itself cross-checked against the acknowledged writes: each of them must
//! be in it, at the revision its SET returned, with its value.

use serde::{Deserialize, Serialize};

use doozer_proto::Glob;

/// One event as a watcher saw it (also a line of `watch.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEvent {
    /// The watcher (or `u64::MAX` for the reference read).
    pub watcher: u64,
    /// The revision.
    pub rev: i64,
    /// The file.
    pub path: String,
    /// Its new value (empty for a delete).
    pub value: String,
    /// `4` set, `8` del.
    pub flags: i32,
    /// When the watcher got it, in ns since the start of the run.
    pub time: u64,
}

/// What one watcher saw.
#[derive(Debug, Clone)]
pub struct WatcherLog {
    /// Its id.
    pub id: u64,
    /// The glob it watched.
    pub glob: String,
    /// The revision it started from.
    pub from_rev: i64,
    /// What it saw, in the order it saw it.
    pub events: Vec<SeenEvent>,
}

/// A write the harness knows was acknowledged: it must be in the committed history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// The revision the SET returned.
    pub rev: i64,
    /// The file.
    pub path: String,
    /// The value.
    pub value: String,
}

/// What the watch checker found.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Events in the committed history checked against.
    pub reference_events: usize,
    /// Watchers checked.
    pub watchers: usize,
    /// Events seen by all watchers together.
    pub seen_events: usize,
    /// Every problem found, most important first within each watcher, as
    /// (watcher or `None` for the reference, description).
    pub problems: Vec<(Option<u64>, String)>,
}

impl WatchReport {
    /// True when no problem was found and something was checked.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.watchers > 0
    }
}

/// Checks `watchers` against `reference`, the committed events from `from_rev` to `upto`
/// (both inclusive) of a glob that covers every watcher's glob, and the reference against
/// the acknowledged writes.
pub fn check(
    reference: &[SeenEvent],
    from_rev: i64,
    upto: i64,
    watchers: &[WatcherLog],
    acked: &[AckedWrite],
) -> WatchReport {
    let mut rep = WatchReport {
        reference_events: reference.len(),
        watchers: watchers.len(),
        seen_events: watchers.iter().map(|w| w.events.len()).sum(),
        problems: Vec::new(),
    };
    for pair in reference.windows(2) {
        if pair[1].rev <= pair[0].rev {
            rep.problems.push((
                None,
                format!(
                    "committed history out of order: rev {} after rev {}",
                    pair[1].rev, pair[0].rev
                ),
            ));
        }
    }
    for a in acked.iter().filter(|a| a.rev >= from_rev && a.rev <= upto) {
        match reference.iter().find(|e| e.rev == a.rev) {
            Some(e) if e.path == a.path && e.value == a.value => {}
            Some(e) => rep.problems.push((
                None,
                format!(
                    "acknowledged write {}={:?} at rev {} is {}={:?} in the committed history",
                    a.path, a.value, a.rev, e.path, e.value
                ),
            )),
            None => rep.problems.push((
                None,
                format!(
                    "acknowledged write {}={:?} at rev {} is missing from the committed history",
                    a.path, a.value, a.rev
                ),
            )),
        }
    }
    for w in watchers {
        let glob = match Glob::new(&w.glob) {
            Ok(g) => g,
            Err(e) => {
                rep.problems
                    .push((Some(w.id), format!("bad glob {:?}: {e}", w.glob)));
                continue;
            }
        };
        let expected: Vec<&SeenEvent> = reference
            .iter()
            .filter(|e| e.rev >= w.from_rev && e.rev <= upto && glob.matches(&e.path))
            .collect();
        if let Some(p) = first_difference(&expected, &w.events) {
            rep.problems
                .push((Some(w.id), format!("{} ({}): {p}", w.id, w.glob)));
        }
    }
    rep
}

/// How a watcher's events differ from what it should have seen, if they do.
fn first_difference(expected: &[&SeenEvent], seen: &[SeenEvent]) -> Option<String> {
    for (i, pair) in seen.windows(2).enumerate() {
        if pair[1].rev == pair[0].rev {
            return Some(format!(
                "duplicate event at rev {} (#{})",
                pair[1].rev,
                i + 1
            ));
        }
        if pair[1].rev < pair[0].rev {
            return Some(format!(
                "rev {} delivered after rev {} (#{})",
                pair[1].rev,
                pair[0].rev,
                i + 1
            ));
        }
    }
    for (i, want) in expected.iter().enumerate() {
        let Some(got) = seen.get(i) else {
            return Some(format!(
                "missed {} events from rev {} on (saw {})",
                expected.len() - i,
                want.rev,
                seen.len()
            ));
        };
        if got.rev > want.rev {
            return Some(format!(
                "gap: skipped rev {} ({}), next seen was rev {}",
                want.rev, want.path, got.rev
            ));
        }
        if got.rev < want.rev {
            return Some(format!(
                "saw rev {} ({}) which is not in the committed history of its glob",
                got.rev, got.path
            ));
        }
        if got.path != want.path || got.value != want.value || got.flags != want.flags {
            return Some(format!(
                "rev {}: saw {}={:?} (flags {}), committed {}={:?} (flags {})",
                got.rev, got.path, got.value, got.flags, want.path, want.value, want.flags
            ));
        }
    }
    if seen.len() > expected.len() {
        let extra = &seen[expected.len()];
        return Some(format!(
            "saw rev {} ({}) beyond the committed history of its glob",
            extra.rev, extra.path
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, path: &str, value: &str) -> SeenEvent {
        SeenEvent {
            watcher: 0,
            rev,
            path: path.into(),
            value: value.into(),
            flags: 4,
            time: 0,
        }
    }

    fn reference() -> Vec<SeenEvent> {
        vec![
            ev(10, "/w/a/1", "x"),
            ev(11, "/w/b/1", "y"),
            ev(12, "/w/a/2", "z"),
            ev(14, "/w/b/2", "u"),
        ]
    }

    fn watcher(id: u64, glob: &str, events: Vec<SeenEvent>) -> WatcherLog {
        WatcherLog {
            id,
            glob: glob.into(),
            from_rev: 10,
            events,
        }
    }

    #[test]
    fn exact_views_pass() {
        let r = reference();
        let ws = [
            watcher(1, "/w/**", r.clone()),
            watcher(2, "/w/a/*", vec![r[0].clone(), r[2].clone()]),
            watcher(3, "/w/*/2", vec![r[2].clone(), r[3].clone()]),
        ];
        let acked = [AckedWrite {
            rev: 11,
            path: "/w/b/1".into(),
            value: "y".into(),
        }];
        let rep = check(&r, 10, 14, &ws, &acked);
        assert!(rep.passed(), "{:?}", rep.problems);
    }

    #[test]
    fn gaps_duplicates_reordering_and_foreign_events_fail() {
        let r = reference();
        let cases = [
            (
                vec![r[0].clone(), r[2].clone(), r[3].clone()],
                "gap: skipped rev 11",
            ),
            (
                vec![r[0].clone(), r[1].clone(), r[1].clone()],
                "duplicate event at rev 11",
            ),
            (
                vec![r[1].clone(), r[0].clone()],
                "rev 10 delivered after rev 11",
            ),
            (
                vec![r[0].clone(), r[1].clone()],
                "missed 2 events from rev 12",
            ),
            (
                vec![r[0].clone(), ev(11, "/w/b/1", "other")],
                "rev 11: saw /w/b/1=\"other\"",
            ),
            (
                vec![
                    r[0].clone(),
                    r[1].clone(),
                    r[2].clone(),
                    ev(13, "/w/a/9", "q"),
                ],
                "rev 13 (/w/a/9) which is not in the committed history",
            ),
            (
                [r.clone(), vec![ev(20, "/w/a/3", "late")]].concat(),
                "beyond the committed history",
            ),
        ];
        for (seen, want) in cases {
            let rep = check(&r, 10, 14, &[watcher(7, "/w/**", seen)], &[]);
            assert!(!rep.passed());
            assert!(
                rep.problems[0].1.contains(want),
                "{want:?} not in {:?}",
                rep.problems
            );
        }
    }

    #[test]
    fn reference_must_hold_every_acknowledged_write() {
        let r = reference();
        let acked = [
            AckedWrite {
                rev: 13,
                path: "/w/a/3".into(),
                value: "v".into(),
            },
            AckedWrite {
                rev: 12,
                path: "/w/a/2".into(),
                value: "other".into(),
            },
        ];
        let rep = check(&r, 10, 14, &[watcher(1, "/w/**", r.clone())], &acked);
        assert_eq!(rep.problems.len(), 2, "{:?}", rep.problems);
        assert!(rep.problems.iter().all(|(w, _)| w.is_none()));
    }
}
