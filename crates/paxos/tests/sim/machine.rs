//! The replicated state machine each simulated node runs: it applies decided slots in order,
//! applies each command id at most once (as the store does), interprets membership commands,
//! and keeps a digest of everything it applied so divergent states are caught slot by slot.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, NodeId, Slot, Value};

/// A membership change carried in a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    /// Add a non-voting learner.
    Learn(NodeId),
    /// Make a node a voter.
    Add(NodeId),
    /// Remove a node from the cluster.
    Remove(NodeId),
}

impl ConfigOp {
    /// The command data that carries this change.
    pub fn encode(self) -> Bytes {
        let text = match self {
            ConfigOp::Learn(n) => format!("learn {}", n.0),
            ConfigOp::Add(n) => format!("add {}", n.0),
            ConfigOp::Remove(n) => format!("remove {}", n.0),
        };
        Bytes::from(text)
    }

    /// The change carried by `data`, if it carries one.
    pub fn parse(data: &[u8]) -> Option<ConfigOp> {
        let text = std::str::from_utf8(data).ok()?;
        let (verb, arg) = text.split_once(' ')?;
        let id = NodeId(arg.parse().ok()?);
        match verb {
            "learn" => Some(ConfigOp::Learn(id)),
            "add" => Some(ConfigOp::Add(id)),
            "remove" => Some(ConfigOp::Remove(id)),
            _ => None,
        }
    }

    /// `config` after this change. Removing the last voter is refused (the plan never asks).
    pub fn apply_to(self, config: &mut Config) {
        match self {
            ConfigOp::Learn(n) => {
                if !config.voters.contains(&n) {
                    config.learners.insert(n);
                }
            }
            ConfigOp::Add(n) => {
                config.learners.remove(&n);
                config.voters.insert(n);
            }
            ConfigOp::Remove(n) => {
                if config.voters.len() > 1 || !config.voters.contains(&n) {
                    config.voters.remove(&n);
                }
                config.learners.remove(&n);
            }
        }
    }
}

/// FNV-1a step over one 64-bit word.
pub fn mix(h: u64, word: u64) -> u64 {
    let mut h = h;
    for b in word.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a offset basis.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The durable applied state of one node.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Last applied slot.
    pub applied: Slot,
    /// Membership after `applied`.
    pub config: Config,
    /// The config in force from each slot on (the config after slot `s` governs `s + alpha`).
    pub config_history: Vec<(Slot, Config)>,
    /// Every command applied, with the slot that applied it (duplicates are skipped).
    pub applied_cmds: BTreeMap<CommandId, Slot>,
    /// Hash chain over everything applied: equal prefixes give equal digests.
    pub digest: u64,
    /// The last decided slots, handed back to a restarted engine as `decided_tail`.
    pub tail: VecDeque<(Slot, Value)>,
    alpha: u64,
    retain: usize,
}

impl Machine {
    /// The state before slot 1 of a cluster created with `genesis`.
    pub fn genesis(genesis: Config, alpha: u64, retain: usize) -> Machine {
        Machine {
            applied: 0,
            config: genesis.clone(),
            config_history: vec![(1, genesis)],
            applied_cmds: BTreeMap::new(),
            digest: FNV_BASIS,
            tail: VecDeque::new(),
            alpha,
            retain,
        }
    }

    /// Applies the next slot. Returns the membership changes it made (first application only).
    pub fn apply(&mut self, slot: Slot, value: &Value) -> Vec<ConfigOp> {
        assert_eq!(
            slot,
            self.applied + 1,
            "sim bug: machine applies slots in order"
        );
        let mut ops = Vec::new();
        self.digest = mix(self.digest, slot);
        if let Value::Batch(cmds) = value {
            for cmd in cmds {
                if self.applied_cmds.contains_key(&cmd.id) {
                    // A retried command applies once; the retry is a no-op, as in the store.
                    continue;
                }
                self.applied_cmds.insert(cmd.id, slot);
                self.digest = mix(mix(self.digest, cmd.id.node.0 as u64), cmd.id.seq);
                if let Some(op) = ConfigOp::parse(&cmd.data) {
                    op.apply_to(&mut self.config);
                    ops.push(op);
                }
            }
        }
        if !ops.is_empty() {
            let last = &self
                .config_history
                .last()
                .expect("history starts non-empty")
                .1;
            if *last != self.config {
                self.config_history
                    .push((slot + self.alpha, self.config.clone()));
            }
        }
        self.tail.push_back((slot, value.clone()));
        while self.tail.len() > self.retain {
            self.tail.pop_front();
        }
        self.applied = slot;
        ops
    }

    /// The config governing `slot` (known for slots up to `applied + alpha`).
    pub fn config_at(&self, slot: Slot) -> Config {
        self.config_history
            .iter()
            .rev()
            .find(|(start, _)| *start <= slot)
            .map(|(_, c)| c.clone())
            .expect("history starts at slot 1")
    }

    /// The configs governing `from` and every later slot: the entry in force at `from`
    /// (re-based to start at `from`) and every later one.
    pub fn configs_from(&self, from: Slot) -> Vec<(Slot, Config)> {
        let mut out: Vec<(Slot, Config)> = Vec::new();
        for (start, config) in &self.config_history {
            if *start <= from {
                out.clear();
                out.push((from, config.clone()));
            } else {
                out.push((*start, config.clone()));
            }
        }
        out
    }

    /// What a snapshot transfers: the applied state without the decided tail.
    pub fn snapshot(&self) -> Machine {
        let mut snap = self.clone();
        snap.tail.clear();
        snap
    }
}
