//! Cluster membership: who votes, who only learns.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// The membership in force for a range of slots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Config {
    /// Acceptors; a slot is decided by a majority of its config's voters.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members that receive decided values.
    pub learners: BTreeSet<NodeId>,
}

impl Config {
    /// A config of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Config {
        Config {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `votes` (any set of node ids) contains a majority of the voters.
    pub fn is_quorum<'a>(&self, votes: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let n = votes
            .into_iter()
            .filter(|v| self.voters.contains(v))
            .count();
        !self.voters.is_empty() && n >= self.quorum()
    }

    /// Voters then learners, each once.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.learners).copied().collect()
    }
}
