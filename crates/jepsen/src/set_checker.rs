//! The checker of the `set` workload: no acknowledged add is lost, nothing appears that was
//! never attempted.
//!
//! In the history, an add is a `write` op whose `value` is the element; a final read is a
//! `read` op on [`FINAL_READ_KEY`] whose `value` is the elements read, separated by spaces.
//! Every node is read at the end, and every read is checked.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Op, OpKind};

/// The key of the final-read ops of the set workload.
pub const FINAL_READ_KEY: &str = "set-final-read";

/// What the set checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Adds attempted.
    pub attempted: usize,
    /// Adds acknowledged.
    pub acked: usize,
    /// Adds of unknown outcome.
    pub unknown: usize,
    /// Unknown adds that the final reads show did happen.
    pub unknown_present: usize,
    /// Final reads checked.
    pub reads: usize,
    /// Acknowledged adds missing from a final read (element, reader client).
    pub lost: Vec<(String, u64)>,
    /// Elements in a final read that no client ever tried to add.
    pub unexpected: Vec<(String, u64)>,
    /// Adds that certainly failed (`ok: false`) yet are in a final read.
    pub failed_present: Vec<(String, u64)>,
    /// Final reads that differ from the first one (reader clients).
    pub disagreeing_reads: Vec<u64>,
}

impl SetReport {
    /// True when nothing was lost, invented or resurrected, the reads agree, and there was
    /// at least one final read (no read means nothing was checked).
    pub fn passed(&self) -> bool {
        self.reads > 0
            && self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.failed_present.is_empty()
            && self.disagreeing_reads.is_empty()
    }
}

/// Checks a set-workload history.
pub fn check(history: &[Op]) -> SetReport {
    // element -> best known outcome (true beats unknown beats false).
    let mut adds: BTreeMap<&str, Option<bool>> = BTreeMap::new();
    let mut reads: Vec<(u64, BTreeSet<&str>)> = Vec::new();
    let mut rep = SetReport::default();
    for op in history {
        match op.op {
            OpKind::Write | OpKind::Cas => {
                let Some(v) = op.value.as_deref() else {
                    continue;
                };
                rep.attempted += 1;
                let e = adds.entry(v).or_insert(Some(false));
                *e = match (*e, op.ok) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (None, _) | (_, None) => None,
                    _ => Some(false),
                };
            }
            OpKind::Read if op.key == FINAL_READ_KEY && op.ok == Some(true) => {
                let set = op
                    .value
                    .as_deref()
                    .unwrap_or("")
                    .split_ascii_whitespace()
                    .collect();
                reads.push((op.client, set));
            }
            OpKind::Read => {}
        }
    }
    rep.acked = adds.values().filter(|o| **o == Some(true)).count();
    rep.unknown = adds.values().filter(|o| o.is_none()).count();
    rep.reads = reads.len();
    for (client, set) in &reads {
        for (el, outcome) in &adds {
            let present = set.contains(el);
            match (outcome, present) {
                (Some(true), false) => rep.lost.push((el.to_string(), *client)),
                (Some(false), true) => rep.failed_present.push((el.to_string(), *client)),
                _ => {}
            }
        }
        for el in set {
            if !adds.contains_key(el) {
                rep.unexpected.push((el.to_string(), *client));
            }
        }
    }
    if let Some((_, first)) = reads.first() {
        rep.unknown_present = adds
            .iter()
            .filter(|(el, o)| o.is_none() && first.contains(*el))
            .count();
        rep.disagreeing_reads = reads
            .iter()
            .filter(|(_, s)| s != first)
            .map(|(c, _)| *c)
            .collect();
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(client: u64, el: &str, ok: Option<bool>) -> Op {
        Op {
            client,
            op: OpKind::Write,
            key: format!("/jepsen/set/{el}"),
            value: Some(el.into()),
            expect: None,
            ok,
            call: 0,
            ret: ok.map(|_| 1),
        }
    }
    fn read(client: u64, els: &str) -> Op {
        Op {
            client,
            op: OpKind::Read,
            key: FINAL_READ_KEY.into(),
            value: Some(els.into()),
            expect: None,
            ok: Some(true),
            call: 2,
            ret: Some(3),
        }
    }

    #[test]
    fn complete_read_passes_and_unknown_adds_may_go_either_way() {
        let h = [
            add(1, "a", Some(true)),
            add(2, "b", None),
            add(2, "c", None),
            add(3, "d", Some(false)),
            read(100, "a b"),
            read(101, "b a"),
        ];
        let r = check(&h);
        assert!(r.passed(), "{r:?}");
        assert_eq!(
            (r.attempted, r.acked, r.unknown, r.unknown_present),
            (4, 1, 2, 1)
        );
    }

    #[test]
    fn lost_invented_and_resurrected_elements_fail() {
        let h = [
            add(1, "a", Some(true)),
            add(1, "b", Some(true)),
            add(3, "d", Some(false)),
            read(100, "a d zz"),
        ];
        let r = check(&h);
        assert!(!r.passed());
        assert_eq!(r.lost, vec![("b".to_string(), 100)]);
        assert_eq!(r.unexpected, vec![("zz".to_string(), 100)]);
        assert_eq!(r.failed_present, vec![("d".to_string(), 100)]);
    }

    #[test]
    fn reads_must_agree_and_must_exist() {
        let h = [add(1, "a", None), read(100, "a"), read(101, "")];
        let r = check(&h);
        assert_eq!(r.disagreeing_reads, vec![101]);
        assert!(!r.passed());
        assert!(!check(&[add(1, "a", Some(true))]).passed(), "no final read");
    }
}
