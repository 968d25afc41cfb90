//! The simulated world: nodes, network, disks, clients and faults, advanced tick by tick from
//! one seeded RNG. Nothing here reads a clock or iterates a hash map, so a seed is a replay.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use doozer_paxos::{
    Command, Config, Engine, Message, NodeId, Options, PersistentState, Ready, Slot,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::check::{Checker, Violation};
use super::machine::{mix, ConfigOp, Machine, FNV_BASIS};
use super::net::{Envelope, Net, NetFaults};
use super::node::{Batch, Life, SimNode};
use super::profile::{Planted, Profile, Shape};
use super::workload::{Active, Client, Outstanding, Plan, PlanStep};

/// How to run one seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Bugs to plant.
    pub planted: Planted,
    /// Hash every message's contents into the trace (slower; for the determinism test).
    pub trace_messages: bool,
    /// Keep the last this many events as text, printed with a violation.
    pub keep_log: usize,
    /// Report only these kinds of violation (to prove one checker on its own).
    pub only: Option<&'static [&'static str]>,
}

/// Counters of one run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Ticks simulated.
    pub ticks: u64,
    /// Ticks from healing until everything was decided everywhere.
    pub heal_ticks_used: u64,
    /// Highest decided slot.
    pub slots: Slot,
    /// Commands created by clients (and the membership plan).
    pub commands: usize,
    /// Crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Snapshots installed.
    pub snapshots: u64,
    /// Messages delivered to engines.
    pub delivered: u64,
    /// Messages lost (dropped, cut or to a down node).
    pub lost: u64,
    /// Read indexes given / refused.
    pub reads: (u64, u64),
    /// Commands decided twice though proposed once / after a retry.
    pub dup_cmds: (u64, u64),
    /// Membership steps completed.
    pub plan_steps: usize,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The run's parameters.
    pub profile: String,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Hash of every event, for the determinism check.
    pub trace_hash: u64,
    /// Counters.
    pub stats: Stats,
    /// The last events, if asked for.
    pub log: Vec<String>,
}

/// Runs one seed to completion (or to its first violation).
pub fn run_seed(seed: u64, opts: RunOptions) -> Outcome {
    let mut world = World::new(seed, opts);
    world.run();
    world.outcome()
}

/// Upper bound on ready() calls per drain: an engine that never runs dry is a bug.
const MAX_READY_LOOPS: usize = 100_000;

struct World {
    seed: u64,
    profile: Profile,
    rng: ChaCha8Rng,
    now: u64,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    net: Net,
    net_faults: NetFaults,
    check: Checker,
    clients: Vec<Client>,
    admin: Client,
    plan: Option<Plan>,
    partition_until: Option<u64>,
    healing: bool,
    next_ctx: u64,
    trace: u64,
    opts: RunOptions,
    log: VecDeque<String>,
    stats: Stats,
}

impl World {
    fn new(seed: u64, opts: RunOptions) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let profile = Profile::random(&mut rng, opts.planted);
        let total = match profile.shape {
            Shape::Static(n) => n,
            Shape::Membership { .. } => 5,
        };
        let ids: Vec<NodeId> = {
            let mut set = BTreeSet::new();
            while set.len() < total {
                set.insert(NodeId::random(&mut rng));
            }
            let mut v: Vec<NodeId> = set.into_iter().collect();
            v.shuffle(&mut rng);
            v
        };
        let genesis = match profile.shape {
            Shape::Static(_) => Config::with_voters(ids.iter().copied()),
            Shape::Membership { .. } => Config::with_voters([ids[0]]),
        };
        let retain = profile.retain_decided as usize;
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let life = if genesis.voters.contains(id) {
                Life::Up
            } else {
                Life::NotStarted
            };
            let machine = Machine::genesis(genesis.clone(), profile.alpha, retain);
            let _ = i;
            nodes.push(SimNode::new(*id, machine, genesis.clone(), life));
        }
        if profile.tick_skew {
            for node in nodes.iter_mut() {
                node.tick_p = rng.gen_range(0.5..=1.0);
            }
        }
        if profile.slow_disks {
            for node in nodes.iter_mut() {
                node.disk_speed = *[1.0, 0.5, 0.1].choose(&mut rng).expect("non-empty");
            }
        }
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let clients = (0..profile.clients)
            .map(|_| Client::new(NodeId::random(&mut rng)))
            .collect();
        let admin = Client::new(NodeId::random(&mut rng));
        let plan = match profile.shape {
            Shape::Static(_) => None,
            Shape::Membership { shrink_to } => {
                let mut steps = VecDeque::new();
                for i in 1..total {
                    steps.push_back(PlanStep::Learn(i));
                    steps.push_back(PlanStep::Add(i));
                }
                for _ in shrink_to..total {
                    steps.push_back(PlanStep::RemoveAny);
                }
                Some(Plan {
                    steps,
                    learn_slot: vec![None; total],
                    ..Plan::default()
                })
            }
        };
        let net_faults = profile.net;
        let mut world = World {
            seed,
            profile,
            rng,
            now: 0,
            nodes,
            index,
            net: Net::default(),
            net_faults,
            check: Checker::reporting_only(opts.only),
            clients,
            admin,
            plan,
            partition_until: None,
            healing: false,
            next_ctx: 0,
            trace: FNV_BASIS,
            opts,
            log: VecDeque::new(),
            stats: Stats::default(),
        };
        for i in 0..world.nodes.len() {
            if world.nodes[i].is_up() {
                world.start_engine(i, PersistentState::empty(genesis.clone()));
            }
        }
        world
    }

    fn failed(&self) -> bool {
        self.check.violation.is_some()
    }

    fn note(&mut self, words: &[u64], text: impl FnOnce() -> String) {
        for w in words {
            self.trace = mix(self.trace, *w);
        }
        if self.opts.keep_log > 0 {
            if self.log.len() == self.opts.keep_log {
                self.log.pop_front();
            }
            let line = format!("t{} {}", self.now, text());
            self.log.push_back(line);
        }
    }

    fn short(id: NodeId) -> String {
        format!("{:04x}", id.0 & 0xffff)
    }

    fn options(&mut self, id: NodeId) -> Options {
        Options {
            id,
            // Planted: the engine believes in a larger alpha than the state machine applies.
            alpha: self.profile.alpha + u64::from(self.profile.planted.engine_alpha_too_big),
            heartbeat_ticks: self.profile.heartbeat_ticks,
            election_ticks: self.profile.election_ticks,
            max_batch_cmds: self.profile.max_batch_cmds,
            max_inflight: self.profile.max_inflight,
            pre_vote: self.profile.pre_vote,
            max_batch_bytes: 1 << 20,
            max_pending: self.profile.max_pending,
            retain_decided: self.profile.retain_decided,
            seed: self.rng.gen(),
            faults: self.profile.planted.engine,
        }
    }

    fn start_engine(&mut self, i: usize, state: PersistentState) {
        let id = self.nodes[i].id;
        let opts = self.options(id);
        let node = &mut self.nodes[i];
        node.emitted = state.applied;
        node.engine = Some(Engine::new(opts, state));
        node.life = Life::Up;
        node.incarnation += 1;
        let inc = node.incarnation;
        self.note(&[1, id.0 as u64, u64::from(inc)], || {
            format!("start {} #{inc}", Self::short(id))
        });
        self.drain(i);
    }

    // ---------------------------------------------------------------- the main loop

    fn run(&mut self) {
        while self.now < self.profile.chaos_ticks && !self.failed() {
            self.step_tick();
        }
        if self.failed() {
            return;
        }
        self.heal();
        let healed_at = self.now;
        let deadline = self.now + self.profile.heal_ticks;
        while !self.failed() {
            self.step_tick();
            if self.settled() {
                self.stats.heal_ticks_used = self.now - healed_at;
                return;
            }
            if self.now >= deadline {
                let detail = self.liveness_report();
                self.check.report(self.now, "liveness", detail);
                // Stop even when liveness is not being reported (`RunOptions::only`).
                return;
            }
        }
    }

    fn step_tick(&mut self) {
        self.now += 1;
        self.stats.ticks = self.now;
        if !self.healing {
            self.inject_faults();
        }
        self.restart_due();
        self.deliver_due();
        self.fsync_some();
        self.tick_engines();
        self.fetch_snapshots();
        self.run_clients();
        self.run_reads();
        self.run_plan();
    }

    fn heal(&mut self) {
        self.healing = true;
        self.net.blocked.clear();
        self.partition_until = None;
        self.net_faults = NetFaults::reliable(self.profile.net.delay_ticks);
        // Liveness needs the usual timing assumption (Raft's broadcastTime << electionTimeout):
        // after healing, every disk's mean fsync latency is at most a quarter of the shortest
        // election timeout. Before that, disks may be arbitrarily slow: safety must not care.
        let min_fsync_p = (4.0 / f64::from(self.profile.election_ticks.0.max(1))).min(1.0);
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            node.disk_speed = node.disk_speed.max(min_fsync_p / self.profile.fsync_p);
            node.paused_until = node.paused_until.min(self.now);
            if matches!(self.nodes[i].life, Life::Down { .. }) {
                self.restart(i);
            }
        }
        if self.profile.planted.never_heal && self.nodes.len() > 1 {
            // Planted: the first node stays cut off, so it can never catch up.
            let lone = self.nodes[0].id;
            for n in &self.nodes[1..] {
                self.net.blocked.insert((lone, n.id));
                self.net.blocked.insert((n.id, lone));
            }
        }
        self.note(&[2], || "heal".to_string());
    }

    /// Everything proposed is decided and applied on every running node.
    fn settled(&self) -> bool {
        if self.plan.as_ref().is_some_and(|p| !p.is_complete()) {
            return false;
        }
        if !self.admin.outstanding.is_empty()
            || self.clients.iter().any(|c| !c.outstanding.is_empty())
        {
            return false;
        }
        let total = self.check.proposed.len();
        self.nodes
            .iter()
            .filter(|n| n.life != Life::NotStarted && n.life != Life::Retired)
            .all(|n| n.is_up() && n.machine.applied_cmds.len() == total)
    }

    fn liveness_report(&self) -> String {
        let mut parts = vec![format!(
            "not settled {} ticks after healing: {} commands created, {} outstanding, max decided slot {}",
            self.profile.heal_ticks,
            self.check.proposed.len(),
            self.clients.iter().map(|c| c.outstanding.len()).sum::<usize>() + self.admin.outstanding.len(),
            self.check.max_decided
        )];
        if let Some(plan) = &self.plan {
            parts.push(format!(
                "plan: {} done, active {:?}, left {:?}",
                plan.done, plan.active, plan.steps
            ));
        }
        for n in &self.nodes {
            let status = n.engine.as_ref().map(|e| {
                let st = e.status();
                format!(
                    "leader {:?} ballot {} decided {} applied {} is_leader {}",
                    st.leader.map(Self::short),
                    st.ballot,
                    st.decided,
                    st.applied,
                    st.is_leader
                )
            });
            parts.push(format!(
                "node {} {:?}: applied slot {} ({} cmds), pending batches {}, engine: {}",
                Self::short(n.id),
                n.life,
                n.machine.applied,
                n.machine.applied_cmds.len(),
                n.pending.len(),
                status.unwrap_or_else(|| "none".to_string())
            ));
        }
        parts.join("\n    ")
    }

    // ---------------------------------------------------------------- faults

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up())
            .collect()
    }

    fn inject_faults(&mut self) {
        let p = &self.profile;
        if p.crash_p > 0.0 && self.rng.gen_bool(p.crash_p) {
            let up = self.up_nodes();
            if let Some(&i) = up.choose(&mut self.rng) {
                let down = self
                    .rng
                    .gen_range(self.profile.down_ticks.0..=self.profile.down_ticks.1);
                let id = self.nodes[i].id;
                self.nodes[i].crash(self.now + down);
                self.check.on_crash(id);
                self.stats.crashes += 1;
                self.note(&[3, id.0 as u64], || format!("crash {}", Self::short(id)));
            }
        }
        if self.profile.power_loss_p > 0.0 && self.rng.gen_bool(self.profile.power_loss_p) {
            for i in self.up_nodes() {
                let down = self
                    .rng
                    .gen_range(self.profile.down_ticks.0..=self.profile.down_ticks.1);
                let id = self.nodes[i].id;
                self.nodes[i].crash(self.now + down);
                self.check.on_crash(id);
                self.stats.crashes += 1;
            }
            self.note(&[15], || "power loss".to_string());
        }
        if self.profile.pause_p > 0.0 && self.rng.gen_bool(self.profile.pause_p) {
            let up = self.up_nodes();
            if let Some(&i) = up.choose(&mut self.rng) {
                let len = self
                    .rng
                    .gen_range(self.profile.pause_ticks.0..=self.profile.pause_ticks.1);
                let until = self.now + len;
                self.nodes[i].paused_until = self.nodes[i].paused_until.max(until);
                let id = self.nodes[i].id;
                self.note(&[16, id.0 as u64, len], || {
                    format!("pause {} for {len}", Self::short(id))
                });
            }
        }
        if let Some(until) = self.partition_until {
            if self.now >= until {
                self.net.blocked.clear();
                self.partition_until = None;
                self.note(&[4], || "partition healed".to_string());
            }
        } else if self.profile.partition_p > 0.0 && self.rng.gen_bool(self.profile.partition_p) {
            self.start_partition();
        }
    }

    fn start_partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        if ids.len() < 2 {
            return;
        }
        let mut side: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
        if side.iter().all(|s| *s) || side.iter().all(|s| !*s) {
            let k = self.rng.gen_range(0..ids.len());
            side[k] = !side[k];
        }
        // 0: cut both ways; 1: only a -> b; 2: only b -> a; 3: each link cut at random, so
        // reachability is not transitive (A hears B, B hears C, A does not hear C).
        let mode = self.rng.gen_range(0..4);
        if mode == 3 {
            for a in &ids {
                for b in &ids {
                    if a != b && self.rng.gen_bool(0.35) {
                        self.net.blocked.insert((*a, *b));
                    }
                }
            }
        }
        for (i, a) in ids.iter().enumerate() {
            for (j, b) in ids.iter().enumerate() {
                if mode < 3 && side[i] && !side[j] {
                    if mode != 2 {
                        self.net.blocked.insert((*a, *b));
                    }
                    if mode != 1 {
                        self.net.blocked.insert((*b, *a));
                    }
                }
            }
        }
        let len = self
            .rng
            .gen_range(self.profile.partition_ticks.0..=self.profile.partition_ticks.1);
        self.partition_until = Some(self.now + len);
        self.stats.partitions += 1;
        let cut = self.net.blocked.len() as u64;
        self.note(&[5, mode, cut], || {
            format!("partition mode {mode} sides {side:?} for {len}")
        });
    }

    fn restart_due(&mut self) {
        for i in 0..self.nodes.len() {
            if let Life::Down { restart_at } = self.nodes[i].life {
                if restart_at <= self.now {
                    self.restart(i);
                }
            }
        }
    }

    fn restart(&mut self, i: usize) {
        if self.profile.planted.forget_promise {
            // Planted bug: the acceptor's promise does not survive the restart.
            self.nodes[i].promised = doozer_paxos::Ballot::ZERO;
        }
        let state = self.nodes[i].persistent_state();
        self.start_engine(i, state);
    }

    // ---------------------------------------------------------------- network and disk

    /// Persist before send: a promise or an accept may leave a node only once the record it
    /// reports is durable there (what a crash cannot take back).
    fn check_outgoing(&mut self, i: usize, msg: &Message) {
        let node = &self.nodes[i];
        match msg {
            // An accept at b also binds a restarted engine to b (it restores max(promised,
            // accepted ballots)), so either record makes a promise of b safe to send.
            Message::Promise { ballot, .. }
                if node.promised < *ballot && node.accepted.values().all(|(b, _)| b < ballot) =>
            {
                let detail = format!(
                    "{} sent a promise of {ballot} while its durable promise is {}",
                    node.id, node.promised
                );
                self.check.report(self.now, "durability", detail);
            }
            Message::Accepted { ballot, slot } if *slot > node.machine.applied => {
                let durable = node.accepted.get(slot).map(|(b, _)| *b);
                if durable.is_none_or(|b| b < *ballot) {
                    let detail = format!(
                        "{} sent accepted({slot}, {ballot}) while its durable accept of slot {slot} is {durable:?}",
                        node.id
                    );
                    self.check.report(self.now, "durability", detail);
                }
            }
            // The alpha rule: a slot's voters are known only once slot - alpha is applied, so
            // no leader may propose beyond applied + alpha.
            Message::Accept { slot, .. } if *slot > node.machine.applied + self.profile.alpha => {
                let detail = format!(
                    "{} proposed slot {slot} with only {} applied (alpha {})",
                    node.id, node.machine.applied, self.profile.alpha
                );
                self.check.report(self.now, "alpha", detail);
            }
            Message::Accept { ballot, slot, .. } => {
                let config = node.machine.config_at(*slot);
                if !self.check.promised_by_quorum(*ballot, &config) {
                    let detail = format!(
                        "{} proposed slot {slot} at {ballot} without promises for it from a majority of that slot's voters {:?}",
                        node.id,
                        config.voters.iter().map(|v| Self::short(*v)).collect::<Vec<_>>()
                    );
                    self.check.report(self.now, "phase1", detail);
                }
            }
            _ => {}
        }
    }

    /// A message leaves node `i`: to itself through its queue, to others over the network.
    fn emit(&mut self, i: usize, to: NodeId, msg: Message) {
        self.check_outgoing(i, &msg);
        let from = self.nodes[i].id;
        if to == from {
            self.nodes[i].self_queue.push_back(msg);
        } else {
            self.send(from, to, msg);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        let faults = self.net_faults;
        self.net
            .send(&mut self.rng, &faults, self.now, Envelope { from, to, msg });
    }

    fn deliver_due(&mut self) {
        while let Some(env) = self.net.pop_due(self.now) {
            if self.failed() {
                return;
            }
            let Some(&i) = self.index.get(&env.to) else {
                continue;
            };
            if !self.nodes[i].is_up() || self.net.is_blocked(env.from, env.to) {
                self.stats.lost += 1;
                continue;
            }
            if !self.nodes[i].is_active(self.now) {
                // A stalled process reads its socket later.
                let at = self.nodes[i].paused_until;
                self.net.defer(&mut self.rng, at, env);
                continue;
            }
            self.stats.delivered += 1;
            let msg_hash = if self.opts.trace_messages {
                hash_debug(&env.msg)
            } else {
                0
            };
            let keep = self.opts.keep_log > 0;
            let text = if keep {
                format!("{:?}", env.msg)
            } else {
                String::new()
            };
            let (from, to) = (env.from, env.to);
            self.note(&[6, from.0 as u64, to.0 as u64, msg_hash], || {
                format!("{} -> {}: {text}", Self::short(from), Self::short(to))
            });
            if let Some(engine) = self.nodes[i].engine.as_mut() {
                engine.step(env.from, env.msg);
            }
            self.drain(i);
        }
    }

    /// Feeds a node's engine its own messages and collects its outputs until it has none.
    fn drain(&mut self, i: usize) {
        for _ in 0..MAX_READY_LOOPS {
            if self.failed() {
                return;
            }
            let node = &mut self.nodes[i];
            let id = node.id;
            let Some(engine) = node.engine.as_mut() else {
                return;
            };
            if let Some(msg) = node.self_queue.pop_front() {
                engine.step(id, msg);
                continue;
            }
            let ready = engine.ready();
            if ready.is_empty() {
                return;
            }
            self.handle_ready(i, ready);
        }
        let id = self.nodes[i].id;
        self.check.report(
            self.now,
            "contract",
            format!("{id}'s ready() never ran dry"),
        );
    }

    fn handle_ready(&mut self, i: usize, ready: Ready) {
        let id = self.nodes[i].id;
        let now = self.now;
        for (slot, value) in &ready.decided {
            let expect = self.nodes[i].emitted + 1;
            if *slot != expect {
                self.check.report(
                    now,
                    "contract",
                    format!("{id} reported slot {slot} decided, expected slot {expect} next"),
                );
                return;
            }
            self.nodes[i].emitted = *slot;
            self.check.on_decided(now, id, *slot, value);
            let desc = super::check::describe(value);
            self.note(
                &[7, id.0 as u64, *slot, super::check::value_hash(value)],
                || format!("{} decided {slot} = {desc}", Self::short(id)),
            );
        }
        self.check.on_persist(now, id, &ready.persist);
        for (ctx, answer) in &ready.reads {
            self.check.on_read_answer(now, id, *ctx, answer);
            self.note(&[8, *ctx, answer.is_ok() as u64], || {
                format!("{} read {ctx} -> {answer:?}", Self::short(id))
            });
        }
        for (to, msg) in ready.send_now {
            self.emit(i, to, msg);
        }
        if let Some(req) = ready.snapshot {
            self.note(&[9, req.from.0 as u64, req.slot], || {
                format!("{} wants snapshot {req:?}", Self::short(id))
            });
            self.nodes[i].want_snapshot = Some(req);
        }
        let batch = Batch {
            records: ready.persist,
            decided: ready.decided,
            after: ready.send_after_persist,
            snapshot: None,
        };
        if !batch.is_empty() {
            self.nodes[i].pending.push_back(batch);
            if self.profile.fsync_now_p > 0.0 && self.rng.gen_bool(self.profile.fsync_now_p) {
                // Not fsync(): the drain loop this runs in picks up what the batch releases.
                let n = self.nodes[i].pending.len();
                self.write_batches(i, n);
            }
        }
    }

    fn fsync_some(&mut self) {
        for i in 0..self.nodes.len() {
            if self.failed() {
                return;
            }
            let n = self.nodes[i].pending.len();
            let p = (self.profile.fsync_p * self.nodes[i].disk_speed).min(1.0);
            if n > 0 && self.nodes[i].is_active(self.now) && self.rng.gen_bool(p) {
                let k = self.rng.gen_range(1..=n);
                self.fsync(i, k);
            }
        }
    }

    /// Makes the `k` oldest pending batches of node `i` durable, applies their decided slots
    /// and lets their held-back messages go.
    fn fsync(&mut self, i: usize, k: usize) {
        self.write_batches(i, k);
        self.drain(i);
    }

    fn write_batches(&mut self, i: usize, k: usize) {
        for _ in 0..k {
            if self.failed() || !self.nodes[i].is_up() {
                return;
            }
            let Some(batch) = self.nodes[i].pending.pop_front() else {
                break;
            };
            let id = self.nodes[i].id;
            self.nodes[i].write_records(&batch.records);
            self.check.on_durable(self.now, id, &batch.records);
            if let Some(snap) = batch.snapshot {
                self.install_snapshot(i, snap);
            }
            for (slot, value) in &batch.decided {
                self.apply(i, *slot, value);
            }
            self.nodes[i].prune_accepted();
            for (to, msg) in batch.after {
                self.emit(i, to, msg);
            }
        }
    }

    fn apply(&mut self, i: usize, slot: Slot, value: &doozer_paxos::Value) {
        let id = self.nodes[i].id;
        let applied = self.nodes[i].machine.applied;
        if slot <= applied {
            // Covered by a snapshot installed since it was decided.
            return;
        }
        if slot != applied + 1 {
            self.check.report(
                self.now,
                "contract",
                format!("{id} must apply slot {slot} but has applied only up to {applied}"),
            );
            return;
        }
        let governing = self.nodes[i].machine.config_at(slot);
        let ops = self.nodes[i].machine.apply(slot, value);
        if self.profile.planted.diverge_state && i == 0 && slot == 3 {
            // Planted: one node's state machine misapplies a slot.
            self.nodes[i].machine.digest ^= 1;
        }
        let digest = self.nodes[i].machine.digest;
        self.check
            .on_applied(self.now, id, slot, &governing, digest);
        let config = self.nodes[i].machine.config.clone();
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            engine.applied(slot, &config);
        }
        for op in ops {
            if let ConfigOp::Learn(new) = op {
                self.on_learner_registered(new, slot, &config);
            }
        }
    }

    fn install_snapshot(&mut self, i: usize, snap: Machine) {
        let id = self.nodes[i].id;
        if snap.applied <= self.nodes[i].machine.applied {
            return;
        }
        self.check
            .on_snapshot(self.now, id, snap.applied, snap.digest);
        let slot = snap.applied;
        let configs = snap.configs_from(slot + 1);
        self.nodes[i].machine = snap;
        self.nodes[i].prune_accepted();
        self.nodes[i].emitted = self.nodes[i].emitted.max(slot);
        self.stats.snapshots += 1;
        self.note(&[10, id.0 as u64, slot], || {
            format!("{} installed snapshot at {slot}", Self::short(id))
        });
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            engine.snapshot_installed(slot, configs);
        }
    }

    /// Serves snapshot requests from another running node's durable applied state.
    fn fetch_snapshots(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_active(self.now) {
                continue;
            }
            let Some(req) = self.nodes[i].want_snapshot.clone() else {
                continue;
            };
            let usable = |j: usize| {
                j != i && self.nodes[j].is_up() && self.nodes[j].machine.applied >= req.slot
            };
            let preferred = self.index.get(&req.from).copied().filter(|&j| usable(j));
            let source = preferred.or_else(|| (0..self.nodes.len()).find(|&j| usable(j)));
            let Some(j) = source else { continue };
            let snap = self.nodes[j].machine.snapshot();
            self.nodes[i].want_snapshot = None;
            self.nodes[i].pending.push_back(Batch {
                snapshot: Some(snap),
                ..Batch::default()
            });
        }
    }

    fn tick_engines(&mut self) {
        for i in 0..self.nodes.len() {
            if self.failed() {
                return;
            }
            if !self.nodes[i].is_active(self.now) {
                continue;
            }
            let tick_p = self.nodes[i].tick_p;
            if tick_p < 1.0 && !self.rng.gen_bool(tick_p) {
                continue;
            }
            if let Some(engine) = self.nodes[i].engine.as_mut() {
                engine.tick();
                self.drain(i);
            }
        }
    }

    // ---------------------------------------------------------------- clients and reads

    fn random_active_node(&mut self) -> Option<usize> {
        let now = self.now;
        let active: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_active(now))
            .collect();
        active.choose(&mut self.rng).copied()
    }

    /// Proposes `cmd` at a random running node; returns the tick to try again at.
    fn propose(&mut self, cmd: &Command) -> u64 {
        let Some(i) = self.random_active_node() else {
            return self.now + 1;
        };
        let id = self.nodes[i].id;
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return self.now + 1;
        };
        let mut cmd = cmd.clone();
        if self.profile.planted.corrupt_proposals {
            // Planted: what reaches the engine is not what the client registered.
            let mut data = cmd.data.to_vec();
            data.push(b'!');
            cmd.data = Bytes::from(data);
        }
        let result = engine.propose(cmd.clone());
        let cid = cmd.id;
        self.note(&[11, id.0 as u64, cid.seq, result.is_ok() as u64], || {
            format!(
                "propose {:x}.{} at {} -> {result:?}",
                cid.node.0 & 0xffff,
                cid.seq,
                Self::short(id)
            )
        });
        let next = match result {
            Ok(()) => {
                self.check.on_proposed(cmd.id);
                self.now + self.profile.retry_ticks
            }
            Err(_) => self.now + self.rng.gen_range(1..=4),
        };
        self.drain(i);
        next
    }

    fn run_client(&mut self, client: &mut Client, may_create: bool) {
        client
            .outstanding
            .retain(|o| !self.check.cmd_slot.contains_key(&o.cmd.id));
        if may_create
            && client.outstanding.len() < self.profile.max_outstanding
            && self.rng.gen_bool(self.profile.new_cmd_p)
        {
            let id = client.next_id();
            let data = Bytes::from(format!("c{:x}.{}", id.node.0 & 0xffff, id.seq));
            self.check.on_created(id, data.clone());
            self.stats.commands += 1;
            client.outstanding.push(Outstanding {
                cmd: Command { id, data },
                next_try: self.now,
            });
        }
        for k in 0..client.outstanding.len() {
            if self.failed() {
                return;
            }
            if client.outstanding[k].next_try <= self.now {
                let cmd = client.outstanding[k].cmd.clone();
                client.outstanding[k].next_try = self.propose(&cmd);
            }
        }
    }

    fn run_clients(&mut self) {
        let mut clients = std::mem::take(&mut self.clients);
        let may_create = !self.healing;
        for c in clients.iter_mut() {
            self.run_client(c, may_create);
        }
        self.clients = clients;
        let mut admin = std::mem::replace(&mut self.admin, Client::new(NodeId(0)));
        self.run_client(&mut admin, false);
        self.admin = admin;
    }

    fn run_reads(&mut self) {
        if self.profile.read_p == 0.0 || !self.rng.gen_bool(self.profile.read_p) {
            return;
        }
        let Some(i) = self.random_active_node() else {
            return;
        };
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        let id = self.nodes[i].id;
        self.check.on_read_call(ctx, id);
        self.note(&[12, ctx, id.0 as u64], || {
            format!("read {ctx} at {}", Self::short(id))
        });
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            engine.read_index(ctx);
        }
        self.drain(i);
    }

    // ---------------------------------------------------------------- membership

    fn admin_propose(&mut self, data: Bytes) -> doozer_paxos::CommandId {
        let id = self.admin.next_id();
        self.check.on_created(id, data.clone());
        self.stats.commands += 1;
        self.admin.outstanding.push(Outstanding {
            cmd: Command { id, data },
            next_try: self.now,
        });
        id
    }

    /// The newest membership any running node has applied.
    fn latest_config(&self) -> Config {
        self.nodes
            .iter()
            .filter(|n| n.life != Life::NotStarted)
            .max_by_key(|n| n.machine.applied)
            .map(|n| n.machine.config.clone())
            .unwrap_or_default()
    }

    fn on_learner_registered(&mut self, new: NodeId, slot: Slot, config: &Config) {
        let Some(&j) = self.index.get(&new) else {
            return;
        };
        if let Some(plan) = self.plan.as_mut() {
            if plan.learn_slot[j].is_none() {
                plan.learn_slot[j] = Some(slot);
            }
        }
        if self.nodes[j].life == Life::NotStarted {
            self.nodes[j].join_config = config.clone();
            self.start_engine(j, PersistentState::empty(config.clone()));
        }
    }

    fn run_plan(&mut self) {
        let Some(mut plan) = self.plan.take() else {
            return;
        };
        self.advance_plan(&mut plan);
        self.stats.plan_steps = plan.done;
        self.plan = Some(plan);
    }

    fn advance_plan(&mut self, plan: &mut Plan) {
        if let Some(active) = plan.active.as_mut() {
            if active.slot.is_none() {
                active.slot = self.check.cmd_slot.get(&active.id).copied();
            }
            let Some(slot) = active.slot else { return };
            let max_applied = self
                .nodes
                .iter()
                .map(|n| n.machine.applied)
                .max()
                .unwrap_or(0);
            if max_applied < slot + self.profile.alpha {
                // The change governs slot + alpha: keep slots coming until it is in force.
                if self.admin.outstanding.is_empty() {
                    self.admin_propose(Bytes::from_static(b"fill"));
                }
                return;
            }
            if let ConfigOp::Remove(gone) = active.op {
                // The removed node may hold the only record of which slots before the change
                // were decided (as leader, say): it stops only once every remaining member has
                // learned them, as an operator would wait before switching a machine off.
                let target = slot + self.profile.alpha;
                let behind = self.nodes.iter().any(|n| {
                    n.id != gone
                        && !matches!(n.life, Life::NotStarted | Life::Retired)
                        && n.machine.applied < target
                });
                if behind {
                    return;
                }
                if let Some(&j) = self.index.get(&gone) {
                    self.nodes[j].crash(u64::MAX);
                    self.nodes[j].life = Life::Retired;
                    self.check.on_crash(gone);
                    self.note(&[13, gone.0 as u64], || {
                        format!("retired {}", Self::short(gone))
                    });
                }
            }
            plan.active = None;
            plan.done += 1;
            plan.waiting_since = None;
            return;
        }
        let Some(&step) = plan.steps.front() else {
            return;
        };
        let since = *plan.waiting_since.get_or_insert(self.now);
        let op = match step {
            PlanStep::Learn(j) => ConfigOp::Learn(self.nodes[j].id),
            PlanStep::Add(j) => {
                // A learner is promoted once it has caught up to its registration (or after a
                // while regardless: promotion must be safe either way).
                let caught_up =
                    plan.learn_slot[j].is_some_and(|s| self.nodes[j].machine.applied >= s);
                if !caught_up && self.now < since + 400 {
                    return;
                }
                ConfigOp::Add(self.nodes[j].id)
            }
            PlanStep::RemoveAny => {
                let voters: Vec<NodeId> = self.latest_config().voters.into_iter().collect();
                if voters.len() <= 1 {
                    plan.steps.pop_front();
                    return;
                }
                ConfigOp::Remove(*voters.choose(&mut self.rng).expect("voters non-empty"))
            }
        };
        plan.steps.pop_front();
        let id = self.admin_propose(op.encode());
        self.note(&[14, id.seq], || format!("plan: {op:?}"));
        plan.active = Some(Active { op, id, slot: None });
    }

    fn outcome(&mut self) -> Outcome {
        self.stats.slots = self.check.max_decided;
        self.stats.lost += self.net.stats.dropped;
        self.stats.reads = (self.check.notes.reads_ok, self.check.notes.reads_err);
        self.stats.dup_cmds = (
            self.check.notes.engine_dup_cmds,
            self.check.notes.retried_dup_cmds,
        );
        Outcome {
            seed: self.seed,
            profile: self.profile.describe(),
            violation: self.check.violation.clone(),
            trace_hash: self.trace,
            stats: self.stats.clone(),
            log: self.log.iter().cloned().collect(),
        }
    }
}

/// FNV-1a of a value's `Debug` text.
fn hash_debug<T: std::fmt::Debug>(value: &T) -> u64 {
    format!("{value:?}")
        .bytes()
        .fold(FNV_BASIS, |h, b| mix(h, u64::from(b)))
}
