//! The safety checkers. The world calls them at every event that can break an invariant
//! (every decision, application, persisted record, durable record, snapshot and read answer),
//! so a violation is reported at the step that caused it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use doozer_paxos::{Ballot, CommandId, Config, NodeId, ReadError, Record, Slot, Value};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time it was found at.
    pub tick: u64,
    /// Which invariant: `agreement`, `validity`, `stability`, `durability`, `quorum`,
    /// `ballot`, `phase1`, `alpha`, `read-index`, `state`, `contract`, `liveness`,
    /// `duplicate` (or `panic`, when the engine panicked).
    pub kind: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at tick {}: {}", self.kind, self.tick, self.detail)
    }
}

/// Things worth counting that are not violations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notes {
    /// A command decided in a second slot although its client proposed it only once.
    pub engine_dup_cmds: u64,
    /// A command decided in a second slot after its client retried it (the state machine
    /// applies it once).
    pub retried_dup_cmds: u64,
    /// Read indexes given.
    pub reads_ok: u64,
    /// Read-index requests refused (no leader, leader changed, busy).
    pub reads_err: u64,
}

/// Short text of a value for reports.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Noop => "noop".to_string(),
        Value::Batch(cmds) => {
            let ids: Vec<String> = cmds
                .iter()
                .take(6)
                .map(|c| format!("{:x}.{}", c.id.node.0 & 0xffff, c.id.seq))
                .collect();
            let more = if cmds.len() > 6 {
                format!(" +{}", cmds.len() - 6)
            } else {
                String::new()
            };
            format!("batch[{}{}]", ids.join(","), more)
        }
    }
}

/// A hash of a value's command ids (equal values hash equal).
pub fn value_hash(value: &Value) -> u64 {
    match value {
        Value::Noop => 0,
        Value::Batch(cmds) => cmds.iter().fold(super::machine::FNV_BASIS, |h, c| {
            super::machine::mix(super::machine::mix(h, c.id.node.0 as u64), c.id.seq)
        }),
    }
}

/// Durable accepts of one slot: ballot -> (hash of the value, acceptors).
pub type Votes = BTreeMap<Ballot, (u64, BTreeSet<NodeId>)>;

/// Global knowledge the invariants are checked against.
#[derive(Debug, Default)]
pub struct Checker {
    /// The first value any node decided for each slot, and who decided it.
    pub decided: BTreeMap<Slot, (Value, NodeId)>,
    /// Highest slot any node has decided.
    pub max_decided: Slot,
    /// What each node decided for each slot (hash of the value), across its restarts.
    by_node: BTreeMap<(NodeId, Slot), u64>,
    /// The first slot each command was decided in.
    pub cmd_slot: BTreeMap<CommandId, Slot>,
    /// Every command a client created, with its data and how often it was proposed.
    pub proposed: BTreeMap<CommandId, (Bytes, u32)>,
    /// The state digest after each slot, from the first node that applied it.
    pub digests: BTreeMap<Slot, u64>,
    /// Highest promise each node has made durable (and so may have told someone).
    promised: BTreeMap<NodeId, Ballot>,
    /// Highest ballot each node has durably accepted in each slot.
    accepted: BTreeMap<(NodeId, Slot), Ballot>,
    /// Who durably promised each ballot.
    promised_by: BTreeMap<Ballot, BTreeSet<NodeId>>,
    /// Durable accepts of each slot: ballot -> (value hash, acceptors). Kept after the slot is
    /// applied: a lagging node may still decide it (and must decide a chosen value).
    votes: BTreeMap<Slot, Votes>,
    /// Decisions whose quorum is not checked yet because their slot's config is known only
    /// once the slot is first applied: the first decision of each slot, and any later one of
    /// another value, each with the durable accepts as they stood when it was made.
    unchecked: BTreeMap<Slot, Vec<(NodeId, Value, Votes)>>,
    /// The config governing each slot applied anywhere, listed where it changes.
    slot_configs: BTreeMap<Slot, Config>,
    /// Highest slot applied anywhere (every slot up to it has its config in `slot_configs`).
    max_applied: Slot,
    /// Outstanding read-index requests: ctx -> (asked node, highest decided slot at the call).
    reads: BTreeMap<u64, (NodeId, Slot)>,
    /// The first violation found, if any.
    pub violation: Option<Violation>,
    /// Counters.
    pub notes: Notes,
    /// Whether a command decided in two slots, proposed once, is a violation (engine dedupes).
    pub strict_dedupe: bool,
    /// When set, only these kinds are reported (to prove one checker on its own).
    pub only: Option<&'static [&'static str]>,
}

impl Checker {
    /// A checker reporting every kind of violation (`None`) or only those in `only`.
    pub fn reporting_only(only: Option<&'static [&'static str]>) -> Checker {
        Checker {
            only,
            ..Checker::default()
        }
    }

    fn fail(&mut self, tick: u64, kind: &'static str, detail: String) {
        if self.only.is_some_and(|only| !only.contains(&kind)) {
            return;
        }
        if self.violation.is_none() {
            self.violation = Some(Violation { tick, kind, detail });
        }
    }

    /// A client created `id`; `proposals` counts its (re)proposals.
    pub fn on_created(&mut self, id: CommandId, data: Bytes) {
        self.proposed.insert(id, (data, 0));
    }

    /// A client handed `id` to an engine (again).
    pub fn on_proposed(&mut self, id: CommandId) {
        if let Some(entry) = self.proposed.get_mut(&id) {
            entry.1 += 1;
        }
    }

    /// `node`'s engine reported `slot` decided with `value`.
    pub fn on_decided(&mut self, tick: u64, node: NodeId, slot: Slot, value: &Value) {
        if let Value::Batch(cmds) = value {
            if cmds.is_empty() {
                self.fail(
                    tick,
                    "contract",
                    format!("{node} decided an empty batch in slot {slot}"),
                );
            }
            for (i, cmd) in cmds.iter().enumerate() {
                match self.proposed.get(&cmd.id) {
                    None => self.fail(
                        tick,
                        "validity",
                        format!(
                            "{node} decided slot {slot} with command {:?} nobody proposed",
                            cmd.id
                        ),
                    ),
                    Some((data, _)) if *data != cmd.data => self.fail(
                        tick,
                        "validity",
                        format!(
                            "{node} decided slot {slot} with command {:?} whose data changed",
                            cmd.id
                        ),
                    ),
                    Some(_) => {}
                }
                if cmds[..i].iter().any(|c| c.id == cmd.id) {
                    self.fail(
                        tick,
                        "duplicate",
                        format!("slot {slot} holds command {:?} twice", cmd.id),
                    );
                }
            }
        }
        let hash = value_hash(value);
        match self.by_node.insert((node, slot), hash) {
            Some(before) if before != hash => self.fail(
                tick,
                "stability",
                format!(
                    "{node} decided slot {slot} again with a different value: {}",
                    describe(value)
                ),
            ),
            _ => {}
        }
        match self.decided.get(&slot) {
            Some((first, by)) => {
                if first != value {
                    let detail = format!(
                        "slot {slot}: {by} decided {} but {node} decided {}",
                        describe(first),
                        describe(value)
                    );
                    self.fail(tick, "agreement", detail);
                    // A second value: its learner must have seen it chosen too. (A repeat of
                    // the first value needs no check: durable accepts only grow.)
                    self.check_decision(tick, node, slot, value);
                }
            }
            None => {
                self.check_decision(tick, node, slot, value);
                self.decided.insert(slot, (value.clone(), node));
                self.max_decided = self.max_decided.max(slot);
                if let Value::Batch(cmds) = value {
                    for cmd in cmds {
                        self.note_cmd_slot(tick, cmd.id, slot);
                    }
                }
            }
        }
    }

    fn note_cmd_slot(&mut self, tick: u64, id: CommandId, slot: Slot) {
        match self.cmd_slot.get(&id) {
            None => {
                self.cmd_slot.insert(id, slot);
            }
            Some(&first) if first != slot => {
                let proposals = self.proposed.get(&id).map_or(0, |p| p.1);
                if proposals <= 1 {
                    self.notes.engine_dup_cmds += 1;
                    if self.strict_dedupe {
                        self.fail(
                            tick,
                            "duplicate",
                            format!("command {id:?} proposed once was decided in slots {first} and {slot}"),
                        );
                    }
                } else {
                    self.notes.retried_dup_cmds += 1;
                }
            }
            Some(_) => {}
        }
    }

    /// `node`'s state machine applied `slot` (governed by `config`) and now has `digest`.
    pub fn on_applied(
        &mut self,
        tick: u64,
        node: NodeId,
        slot: Slot,
        config: &Config,
        digest: u64,
    ) {
        match self.digests.get(&slot) {
            Some(&d) if d != digest => self.fail(
                tick,
                "state",
                format!("{node}'s state after slot {slot} differs from the first node's"),
            ),
            Some(_) => {}
            None => {
                self.digests.insert(slot, digest);
                // Slots are first applied in order (whoever applies slot s applied s - 1).
                self.max_applied = self.max_applied.max(slot);
                let known = self.slot_configs.values().next_back();
                if known != Some(config) {
                    self.slot_configs.insert(slot, config.clone());
                }
                for (learner, decided, votes) in self.unchecked.remove(&slot).unwrap_or_default() {
                    self.check_quorum(tick, learner, slot, &decided, &votes, config);
                }
            }
        }
    }

    /// `node` installed a snapshot taken after `slot` with `digest`.
    pub fn on_snapshot(&mut self, tick: u64, node: NodeId, slot: Slot, digest: u64) {
        match self.digests.get(&slot) {
            Some(&d) if d != digest => self.fail(
                tick,
                "state",
                format!("{node} installed a snapshot of slot {slot} unlike the first node's state"),
            ),
            Some(_) => {}
            None => self.fail(
                tick,
                "state",
                format!("{node} installed a snapshot of slot {slot} nobody applied"),
            ),
        }
    }

    /// `node` decided `value` in `slot`: check its quorum now if the slot's config is known,
    /// else once it is.
    fn check_decision(&mut self, tick: u64, node: NodeId, slot: Slot, value: &Value) {
        let votes = self.votes.get(&slot).cloned().unwrap_or_default();
        if slot <= self.max_applied {
            let config = self
                .slot_configs
                .range(..=slot)
                .next_back()
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            self.check_quorum(tick, node, slot, value, &votes, &config);
        } else {
            self.unchecked
                .entry(slot)
                .or_default()
                .push((node, value.clone(), votes));
        }
    }

    /// What "decided" means: when `node` decided `value` in `slot`, a majority of the voters
    /// governing the slot had durably accepted that value at one ballot (`votes`, as they
    /// stood then). Votes from different ballots do not add up, and an accept that a crash
    /// could still take back does not count. Every learner is held to it, not just the first.
    fn check_quorum(
        &mut self,
        tick: u64,
        node: NodeId,
        slot: Slot,
        value: &Value,
        votes: &Votes,
        config: &Config,
    ) {
        let hash = value_hash(value);
        let ok = votes
            .values()
            .any(|(h, nodes)| *h == hash && config.is_quorum(nodes.iter()));
        if !ok {
            let seen: Vec<String> = votes
                .iter()
                .map(|(b, (h, nodes))| {
                    let same = if *h == hash {
                        "same value"
                    } else {
                        "other value"
                    };
                    format!("{b}: {} nodes, {same}", nodes.len())
                })
                .collect();
            let detail = format!(
                "{node} decided slot {slot} ({}) without a majority of its {} voters durably accepting it at one ballot; durable accepts then: [{}]",
                describe(value),
                config.voters.len(),
                seen.join("; ")
            );
            self.fail(tick, "quorum", detail);
        }
    }

    /// `node` is about to persist `records` (not yet durable).
    pub fn on_persist(&mut self, tick: u64, node: NodeId, records: &[Record]) {
        let told = self.promised.get(&node).copied().unwrap_or(Ballot::ZERO);
        for rec in records {
            match rec {
                Record::Promise(b) if *b < told => self.fail(
                    tick,
                    "durability",
                    format!("{node} promised {b} after durably promising {told}"),
                ),
                Record::Accept { slot, ballot, .. } => {
                    if *ballot < told {
                        self.fail(
                            tick,
                            "durability",
                            format!("{node} accepted slot {slot} at {ballot} after durably promising {told}"),
                        );
                    }
                    if let Some(prev) = self.accepted.get(&(node, *slot)) {
                        if ballot < prev {
                            let detail = format!(
                                "{node} accepted slot {slot} at {ballot} after durably accepting it at {prev}"
                            );
                            self.fail(tick, "durability", detail);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `records` of `node` are now durable.
    pub fn on_durable(&mut self, tick: u64, node: NodeId, records: &[Record]) {
        for rec in records {
            match rec {
                Record::Promise(b) => {
                    let p = self.promised.entry(node).or_insert(Ballot::ZERO);
                    *p = (*p).max(*b);
                    self.promised_by.entry(*b).or_default().insert(node);
                }
                Record::Accept {
                    slot,
                    ballot,
                    value,
                } => {
                    let a = self.accepted.entry((node, *slot)).or_insert(*ballot);
                    *a = (*a).max(*ballot);
                    let hash = value_hash(value);
                    let entry = self
                        .votes
                        .entry(*slot)
                        .or_default()
                        .entry(*ballot)
                        .or_insert_with(|| (hash, BTreeSet::new()));
                    let clash = entry.0 != hash;
                    entry.1.insert(node);
                    if clash {
                        let detail =
                            format!("slot {slot} got two different values at ballot {ballot}");
                        self.fail(tick, "ballot", detail);
                    }
                }
            }
        }
    }

    /// Whether a majority of `config`'s voters durably promised `ballot`: what a leader needs
    /// before proposing at `ballot` in a slot `config` governs (phase 1 must cover every
    /// config in the range it claims, not just the one it started under).
    pub fn promised_by_quorum(&self, ballot: Ballot, config: &Config) -> bool {
        self.promised_by
            .get(&ballot)
            .is_some_and(|nodes| config.is_quorum(nodes.iter()))
    }

    /// Forgets per-slot acceptor facts at or below `slot` (every node has applied it).
    pub fn compact(&mut self, slot: Slot) {
        self.accepted.retain(|(_, s), _| *s > slot);
        self.votes = self.votes.split_off(&(slot + 1));
    }

    /// A read-index request `ctx` was made at `node`.
    pub fn on_read_call(&mut self, ctx: u64, node: NodeId) {
        self.reads.insert(ctx, (node, self.max_decided));
    }

    /// `node` answered read-index request `ctx`.
    pub fn on_read_answer(
        &mut self,
        tick: u64,
        node: NodeId,
        ctx: u64,
        answer: &Result<Slot, ReadError>,
    ) {
        let Some((asked, floor)) = self.reads.remove(&ctx) else {
            self.fail(
                tick,
                "contract",
                format!("{node} answered read {ctx} which is not outstanding"),
            );
            return;
        };
        if asked != node {
            self.fail(
                tick,
                "contract",
                format!("read {ctx} asked at {asked} was answered at {node}"),
            );
        }
        match answer {
            Ok(index) => {
                self.notes.reads_ok += 1;
                if *index < floor {
                    self.fail(
                        tick,
                        "read-index",
                        format!("read {ctx} at {node} got index {index} but slot {floor} was decided before it was asked"),
                    );
                }
            }
            Err(_) => self.notes.reads_err += 1,
        }
    }

    /// `node` crashed: its outstanding reads will never be answered.
    pub fn on_crash(&mut self, node: NodeId) {
        self.reads.retain(|_, (asked, _)| *asked != node);
    }

    /// Records a violation found by the world itself.
    pub fn report(&mut self, tick: u64, kind: &'static str, detail: String) {
        self.fail(tick, kind, detail);
    }
}
