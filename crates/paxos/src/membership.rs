//! Which config governs which slot (the alpha rule), as the engine learns it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::id::{NodeId, Slot};

/// Governs slots below the first known entry: nobody votes there.
static EMPTY: Config = Config {
    voters: BTreeSet::new(),
    learners: BTreeSet::new(),
};

/// The configs in force from each slot on. The entry for slot `s + alpha` is known once slot
/// `s` is applied, so the engine only ever looks up slots up to `applied + alpha`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Configs {
    by_slot: BTreeMap<Slot, Config>,
}

impl Configs {
    pub(crate) fn new(list: Vec<(Slot, Config)>) -> Configs {
        Configs {
            by_slot: list.into_iter().collect(),
        }
    }

    /// The config governing `slot`.
    pub(crate) fn at(&self, slot: Slot) -> &Config {
        self.by_slot
            .range(..=slot)
            .next_back()
            .map(|(_, c)| c)
            .unwrap_or(&EMPTY)
    }

    /// Every config governing some slot of `from..=to`, in slot order.
    pub(crate) fn in_range(&self, from: Slot, to: Slot) -> Vec<&Config> {
        let mut out = vec![self.at(from)];
        if to > from {
            out.extend(self.by_slot.range(from + 1..=to).map(|(_, c)| c));
        }
        out
    }

    /// Voters of any config governing `from..=to`.
    pub(crate) fn voters_in(&self, from: Slot, to: Slot) -> BTreeSet<NodeId> {
        self.in_range(from, to)
            .into_iter()
            .flat_map(|c| c.voters.iter().copied())
            .collect()
    }

    /// Voters and learners of any config governing `from..=to`.
    pub(crate) fn members_in(&self, from: Slot, to: Slot) -> BTreeSet<NodeId> {
        self.in_range(from, to)
            .into_iter()
            .flat_map(|c| c.members())
            .collect()
    }

    /// The first slot of `from..=to` whose voters are not a majority-covered by `votes`.
    pub(crate) fn first_uncovered(
        &self,
        votes: &BTreeSet<NodeId>,
        from: Slot,
        to: Slot,
    ) -> Option<Slot> {
        if !self.at(from).is_quorum(votes) {
            return Some(from);
        }
        if to <= from {
            return None;
        }
        self.by_slot
            .range(from + 1..=to)
            .find(|(_, c)| !c.is_quorum(votes))
            .map(|(s, _)| *s)
    }

    /// `cfg` governs slots from `slot` on (replacing anything known above it).
    pub(crate) fn set_from(&mut self, slot: Slot, cfg: &Config) {
        let _ = self.by_slot.split_off(&slot.saturating_add(1));
        if self.at(slot) != cfg {
            self.by_slot.insert(slot, cfg.clone());
        }
    }

    /// Forgets entries that no longer govern any slot from `slot` on.
    pub(crate) fn compact_below(&mut self, slot: Slot) {
        let Some(keep) = self.by_slot.range(..=slot).next_back().map(|(s, _)| *s) else {
            return;
        };
        self.by_slot = self.by_slot.split_off(&keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ids: &[u128]) -> Config {
        Config::with_voters(ids.iter().map(|i| NodeId(*i)))
    }

    #[test]
    fn lookup_range_and_truncate() {
        let mut c = Configs::new(vec![(1, cfg(&[1]))]);
        c.set_from(11, &cfg(&[1, 2, 3]));
        assert_eq!(c.at(10), &cfg(&[1]));
        assert_eq!(c.at(11), &cfg(&[1, 2, 3]));
        assert_eq!(c.in_range(5, 20).len(), 2);
        assert_eq!(c.voters_in(5, 10).len(), 1);
        let votes: BTreeSet<NodeId> = [NodeId(1)].into();
        assert_eq!(c.first_uncovered(&votes, 5, 20), Some(11));
        assert_eq!(c.first_uncovered(&votes, 5, 10), None);
        // Same config again adds nothing; a change below truncates what was above.
        c.set_from(12, &cfg(&[1, 2, 3]));
        assert_eq!(c.by_slot.len(), 2);
        c.set_from(8, &cfg(&[1, 2]));
        assert_eq!(c.at(20), &cfg(&[1, 2]));
        c.compact_below(9);
        assert_eq!(c.by_slot.keys().copied().collect::<Vec<_>>(), vec![8]);
        assert_eq!(c.at(0), &EMPTY);
    }
}
