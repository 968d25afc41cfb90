//! The engine driver: the one task that owns the Paxos engine.
//!
//! It turns a tokio interval into `tick()`, feeds peer messages to `step()`, proposals to
//! `propose()`, and after each burst of input drains `ready()`:
//! - `send_now` leaves at once (messages to this node are stepped back in);
//! - `persist` and `decided` go to the storage thread as one [`Batch`]; the driver does not
//!   wait for it (pipelining), but keeps `send_after_persist` in a FIFO next to the batch and
//!   releases it only when that batch, and every one before it, is durable;
//! - when a commit completes: `applied()` tells the engine how far the state machine got and
//!   under which membership, events are published, read-index waiters learn the applied
//!   slot. Waiting writes got their results earlier, from the storage thread, as soon as
//!   their slot was applied in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doozer_paxos::{Command, Config, Engine, Message, NodeId, Ready, Slot, Value};
use doozer_store::{Batch, Commit, SnapshotMeta};
use tokio::sync::{mpsc, oneshot};

use crate::core::{Applied, Core, WriteOutcome};
use crate::storage::{Completion, Job};

/// Inputs of the driver task.
pub(crate) enum Input {
    /// A client command. Only a refusal is answered, through the command's waiter in
    /// `Core::writes`: a reply to every proposal cost a task wake-up per write.
    Propose(Command),
    /// Asks for a read index; the answer goes to `Core::reads[ctx]`.
    ReadIndex(u64),
    /// A message from a peer.
    Peer(NodeId, Message),
    /// A snapshot fetch ended (installed, or failed).
    Snapshot(Result<SnapshotMeta, String>),
    /// Fetch a snapshot from this peer (a node that finds it was removed while cut off).
    FetchSnapshot(NodeId),
}

/// Inputs handled per wake-up before `ready()` is drained (bounds latency of a burst).
const MAX_BURST: usize = 1024;

/// How long a leader waits, at most, for as many commands as the recent slots carried (see
/// [`Recent`]): [`GATHER_PER_CMD`] per command, within [`GATHER_MIN`]..=[`GATHER_MAX`].
/// Clients answered together send their next commands together, but spread over a
/// millisecond or more under load (followers answer later and forward them): proposing the
/// first few splits the clients into two groups sharing the slots, and each slot costs the
/// cluster ~700 us of CPU (three commits and fsyncs, its messages) against ~30 us per
/// command (`scripts/bench.sh` at 32/64/128 clients, 2026-11-30). A queue that reaches the
/// target goes at once, so a steady stream is not delayed. Small slots wait
/// little: at low load the wait would only add latency (a 2 ms cap for every slot raised
/// the p99 of `doozer bench mixed` from ~3.0 to ~3.6 ms).
const GATHER_PER_CMD: Duration = Duration::from_micros(32);
const GATHER_MIN: Duration = Duration::from_micros(300);
const GATHER_MAX: Duration = Duration::from_millis(2);

/// The leader's gathering target: the largest of the last [`Recent::SLOTS`] decided slots.
/// With the last slot alone, one slot cut short (its gathering ran out) lowered the target
/// for the next, and the clients stayed split into groups with a slot each: 36-52 commands
/// per slot at 64 clients, against 57-61 with the largest of 8, which cost ~4% less CPU
/// per set (alternating `scripts/bench.sh` runs, 2026-11-30). When the load drops, the
/// target follows after 8 slots, each waiting at most [`GATHER_MAX`].
#[derive(Debug, Default)]
struct Recent(VecDeque<usize>);

impl Recent {
    const SLOTS: usize = 8;

    /// Notes a decided slot of `n` commands.
    fn push(&mut self, n: usize) {
        if self.0.len() == Self::SLOTS {
            self.0.pop_front();
        }
        self.0.push_back(n);
    }

    /// The target: the largest recent slot (0 before any).
    fn target(&self) -> usize {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

/// How long a follower keeps its clients' commands at most before forwarding them to the
/// leader, while fewer have come than it had in the last slot. Its clients are answered
/// together and send their next commands within a few hundred microseconds; forwarded as
/// they come, that was ~9 messages per slot from each follower.
const FORWARD_GATHER: Duration = Duration::from_micros(300);

/// Whether a follower with `queued` commands, having forwarded `forwarded` since it learned
/// the last decided slot, which carried `last_own` of its commands, waits for more.
fn forward_wants_more(queued: usize, forwarded: usize, last_own: usize) -> bool {
    queued > 0 && queued + forwarded < last_own
}

/// Whether a wait of `limit`, started when `deadline` was first set (now, if unset), is
/// still on; a wait that ended clears the deadline.
fn wait_until(deadline: &mut Option<tokio::time::Instant>, limit: Duration) -> bool {
    let now = tokio::time::Instant::now();
    if now < *deadline.get_or_insert(now + limit) {
        true
    } else {
        *deadline = None;
        false
    }
}

/// The longest gathering wait for a target of `target` commands.
fn gather_limit(target: usize) -> Duration {
    (GATHER_PER_CMD * target.min(1 << 16) as u32).clamp(GATHER_MIN, GATHER_MAX)
}

pub(crate) struct Driver {
    core: Arc<Core>,
    engine: Engine,
    inputs: mpsc::Receiver<Input>,
    jobs: mpsc::Sender<Job>,
    done: mpsc::UnboundedReceiver<Completion>,
    /// `send_after_persist` of each submitted commit job, oldest first.
    inflight: VecDeque<Vec<(NodeId, Message)>>,
    /// The membership after the last applied slot (governs slot applied + alpha).
    config: Config,
    /// The config governing each slot from the key on (the alpha rule), as far as known.
    in_force: BTreeMap<Slot, Config>,
    applied: Applied,
    leader: Option<NodeId>,
    snapshot_busy: bool,
    /// When the last tick was handled (stall detection).
    last_tick: Instant,
    /// The sizes of the recent decided slots (the gathering target), and until when a
    /// smaller queue waits for more.
    recent: Recent,
    gather_until: Option<tokio::time::Instant>,
    /// A follower's commands in the last decided slot, how many it forwarded since it
    /// learned that slot, and until when a small queue waits for more.
    last_own: usize,
    forwarded: usize,
    forward_until: Option<tokio::time::Instant>,
}

impl Driver {
    pub fn new(
        core: Arc<Core>,
        engine: Engine,
        inputs: mpsc::Receiver<Input>,
        jobs: mpsc::Sender<Job>,
        done: mpsc::UnboundedReceiver<Completion>,
        applied: Applied,
        configs: Vec<(Slot, Config)>,
    ) -> Driver {
        let config = configs.last().map(|(_, c)| c.clone()).unwrap_or_default();
        Driver {
            in_force: configs.into_iter().collect(),
            core,
            engine,
            inputs,
            jobs,
            done,
            inflight: VecDeque::new(),
            config,
            applied,
            leader: None,
            snapshot_busy: false,
            last_tick: Instant::now(),
            recent: Recent::default(),
            gather_until: None,
            last_own: 0,
            forwarded: 0,
            forward_until: None,
        }
    }

    /// Runs until the node stops or storage fails.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.core.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        self.refresh_peers();
        tracing::info!(
            voters = %ids(&self.config.voters),
            learners = %ids(&self.config.learners),
            "membership"
        );
        self.publish_in_force();
        loop {
            let gather = match (self.gather_until, self.forward_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = self.core.stop.cancelled() => break,
                _ = tokio::time::sleep_until(gather.unwrap_or_else(tokio::time::Instant::now)),
                    if gather.is_some() => {}
                c = self.done.recv() => match c {
                    Some(c) => if !self.on_completion(c) { break },
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
                i = self.inputs.recv() => match i {
                    Some(i) => {
                        self.on_input(i);
                        for _ in 0..MAX_BURST {
                            match self.inputs.try_recv() {
                                Ok(i) => self.on_input(i),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
            }
            // Completions may have queued behind a long burst: take them first.
            while let Ok(c) = self.done.try_recv() {
                if !self.on_completion(c) {
                    self.fail_all();
                    return;
                }
            }
            if !self.flush().await {
                break;
            }
        }
        self.fail_all();
    }

    /// Whether the leader should hold new batches back now: while its storage is flushing
    /// (the accept could not be persisted sooner), or for up to [`gather_limit`] while fewer
    /// commands are queued than the last slot carried.
    fn should_hold_batches(&mut self) -> bool {
        if !self.inflight.is_empty() {
            return true;
        }
        let queued = self.engine.queued();
        let target = self.recent.target();
        if queued == 0 || queued >= target || self.leader != Some(self.core.id) {
            self.gather_until = None;
            return false;
        }
        wait_until(&mut self.gather_until, gather_limit(target))
    }

    /// Whether a follower should keep its queue a little longer: for up to
    /// [`FORWARD_GATHER`] while it has fewer commands, with those forwarded since the last
    /// decided slot, than it had in that slot.
    fn should_hold_forwards(&mut self) -> bool {
        let following = self.leader.is_some_and(|l| l != self.core.id);
        let queued = self.engine.queued();
        if !following || !forward_wants_more(queued, self.forwarded, self.last_own) {
            self.forward_until = None;
            return false;
        }
        wait_until(&mut self.forward_until, FORWARD_GATHER)
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let gap = now.duration_since(self.last_tick);
        self.last_tick = now;
        // Missed ticks are skipped, so a frozen node's engine sees no time pass; the failure
        // detector (wall clock) must not count it either.
        if gap > self.core.stall_threshold() {
            self.core.note_stall(gap);
        }
        self.engine.tick();
    }

    fn on_input(&mut self, i: Input) {
        match i {
            Input::Propose(cmd) => {
                let id = cmd.id;
                if let Err(e) = self.engine.propose(cmd) {
                    let waiter = self.core.writes.lock().expect("writes lock").remove(&id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(WriteOutcome::Refused(e));
                    }
                }
            }
            Input::ReadIndex(ctx) => self.engine.read_index(ctx),
            Input::Peer(from, msg) => self.engine.step(from, msg),
            Input::FetchSnapshot(from) => self.start_snapshot(from, 0),
            Input::Snapshot(res) => {
                self.snapshot_busy = false;
                match res {
                    Ok(meta) => {
                        tracing::info!(slot = meta.slot, rev = meta.rev, "snapshot installed");
                        self.config = keep_voters(&self.core.store.config(), &self.config);
                        let configs = match self.core.store.load_engine_state(self.core.cfg.alpha) {
                            Ok(st) => patch_configs(st.configs, &self.core.config0),
                            Err(e) => {
                                tracing::error!(error = %e, "reading configs after snapshot");
                                vec![(meta.slot + 1, self.config.clone())]
                            }
                        };
                        self.in_force = configs.iter().cloned().collect();
                        self.engine.snapshot_installed(meta.slot, configs);
                        self.set_applied(Applied {
                            slot: meta.slot,
                            rev: meta.rev,
                        });
                        self.refresh_peers();
                        self.core.ctl_changes.send_modify(|n| *n += 1);
                    }
                    Err(e) => tracing::warn!(error = %e, "snapshot fetch failed; will retry"),
                }
            }
        }
    }

    /// Drains the engine. Returns false if the storage thread is gone.
    async fn flush(&mut self) -> bool {
        // Self-addressed messages produce more output; bound the rounds defensively.
        for _ in 0..64 {
            let hold = self.should_hold_batches();
            self.engine.hold_batches(hold);
            let hold_fwd = self.should_hold_forwards();
            self.engine.hold_forwards(hold_fwd);
            if !hold_fwd && self.leader != Some(self.core.id) {
                self.forwarded += self.engine.queued();
            }
            let r: Ready = self.engine.ready();
            if let Some((_, Value::Batch(cmds))) = r.decided.last() {
                self.recent.push(cmds.len());
                self.last_own = cmds.iter().filter(|c| c.id.node == self.core.id).count();
                self.forwarded = 0;
            }
            let idle = r.persist.is_empty()
                && r.send_now.is_empty()
                && r.send_after_persist.is_empty()
                && r.decided.is_empty()
                && r.reads.is_empty()
                && r.snapshot.is_none();
            if idle {
                break;
            }
            let mut local = Vec::new();
            for (to, msg) in r.send_now {
                if to == self.core.id {
                    local.push(msg);
                } else {
                    self.core.peers.send(to, msg);
                }
            }
            for (ctx, res) in r.reads {
                if let Some(tx) = self.core.reads.lock().expect("reads lock").remove(&ctx) {
                    let _ = tx.send(res.map_err(|e| format!("{e:?}")));
                }
            }
            if let Some(req) = r.snapshot {
                self.start_snapshot(req.from, req.slot);
            }
            if !r.persist.is_empty() || !r.decided.is_empty() {
                self.inflight.push_back(r.send_after_persist);
                let batch = Batch {
                    records: r.persist,
                    decided: r.decided,
                };
                if self.jobs.send(Job::Commit(batch)).await.is_err() {
                    return false;
                }
            } else if let Some(last) = self.inflight.back_mut() {
                // Keep persist order: these may report state still being written.
                last.extend(r.send_after_persist);
            } else {
                for (to, msg) in r.send_after_persist {
                    if to == self.core.id {
                        local.push(msg);
                    } else {
                        self.core.peers.send(to, msg);
                    }
                }
            }
            for msg in local {
                self.engine.step(self.core.id, msg);
            }
        }
        self.publish_status();
        true
    }

    fn publish_status(&mut self) {
        let st = self.engine.status();
        if st.leader != self.leader {
            match st.leader {
                Some(l) if l == self.core.id => {
                    tracing::info!(ballot = %st.ballot, "became leader")
                }
                Some(l) => tracing::info!(leader = %l, "leader changed"),
                None => tracing::info!("no leader"),
            }
            self.leader = st.leader;
            self.core.consensus.send_modify(|c| {
                c.leader = st.leader;
                c.is_leader = st.is_leader;
            });
        } else if self.core.consensus.borrow().is_leader != st.is_leader {
            self.core
                .consensus
                .send_modify(|c| c.is_leader = st.is_leader);
        }
    }

    /// Handles a finished transaction. Returns false if storage failed.
    fn on_completion(&mut self, c: Completion) -> bool {
        let commit: Commit = match c.result {
            Ok(commit) => commit,
            Err(e) => {
                tracing::error!(error = %e, "storage commit failed; stopping the node");
                *self.core.failed.lock().expect("failed lock") = Some(e);
                self.core.stop.cancel();
                return false;
            }
        };
        for _ in 0..c.batches {
            let msgs = self
                .inflight
                .pop_front()
                .expect("a completion per submitted batch");
            for (to, msg) in msgs {
                if to == self.core.id {
                    self.engine.step(to, msg);
                } else {
                    self.core.peers.send(to, msg);
                }
            }
        }
        let mut membership_changed = false;
        for (slot, cfg) in &commit.configs {
            let cfg = keep_voters(cfg, &self.config);
            self.engine.applied(*slot, &cfg);
            self.config_governs(*slot + self.core.cfg.alpha, &cfg);
            if cfg != self.config {
                membership_changed = true;
                self.config = cfg;
            }
        }
        if commit.applied > self.applied.slot {
            self.engine.applied(commit.applied, &self.config);
        }
        if commit.applied >= self.applied.slot {
            self.set_applied(Applied {
                slot: commit.applied,
                rev: commit.rev,
            });
        }
        let mut ctl_changed = membership_changed;
        for ev in commit.events {
            if ev.path.starts_with("/ctl/") {
                ctl_changed = true;
            }
            let _ = self.core.events.send(ev);
        }
        if membership_changed {
            tracing::info!(
                voters = %ids(&self.config.voters),
                learners = %ids(&self.config.learners),
                "membership changed (in force after alpha slots)"
            );
        }
        if ctl_changed {
            self.refresh_peers();
            self.core.ctl_changes.send_modify(|n| *n += 1);
        }
        true
    }

    fn set_applied(&mut self, a: Applied) {
        self.applied = a;
        self.core.applied.send_replace(a);
        self.publish_in_force();
    }

    /// Notes that `cfg` governs slots from `slot` on (replacing what was known above).
    fn config_governs(&mut self, slot: Slot, cfg: &Config) {
        let _ = self.in_force.split_off(&(slot + 1));
        if self.in_force.range(..=slot).next_back().map(|(_, c)| c) != Some(cfg) {
            self.in_force.insert(slot, cfg.clone());
        }
    }

    /// Publishes the config governing the next slot to decide, and logs when it changes.
    fn publish_in_force(&mut self) {
        let next = self.applied.slot + 1;
        let Some(cfg) = self
            .in_force
            .range(..=next)
            .next_back()
            .map(|(_, c)| c.clone())
        else {
            return;
        };
        // Entries below the one in force govern nothing any more.
        let keep = self.in_force.split_off(&next);
        self.in_force = keep;
        self.in_force.insert(next, cfg.clone());
        if self.core.consensus.borrow().in_force != cfg {
            tracing::info!(
                voters = %ids(&cfg.voters),
                n = cfg.voters.len(),
                slot = next,
                "voters in force"
            );
            self.spread_checkpoints(&cfg);
            self.core.consensus.send_modify(|c| c.in_force = cfg);
            self.refresh_peers();
        }
    }

    /// Gives this node's checkpoints its own place in each interval, by its rank among the
    /// members: nodes apply the same revisions, and all writing a checkpoint at once slowed
    /// every follower together (see [`doozer_store::Store::set_checkpoint_phase`]).
    fn spread_checkpoints(&self, cfg: &Config) {
        let (place, of) = checkpoint_place(cfg, self.core.id);
        self.core.store.set_checkpoint_phase(place, of);
    }

    /// Re-reads peer addresses from `/ctl/node/<id>/addr`.
    fn refresh_peers(&mut self) {
        let addrs = crate::cluster::node_addrs(&self.core.store);
        let mut book: BTreeMap<NodeId, String> = addrs;
        // A removed voter still votes until its removal is in force (the alpha rule), and
        // must hear the slots up to it: keep its link until then.
        for cfg in self.in_force.values() {
            for v in &cfg.voters {
                if !book.contains_key(v) {
                    if let Some(addr) = self.core.peers.addr_of(*v) {
                        book.insert(*v, addr);
                    }
                }
            }
        }
        book.remove(&self.core.id);
        self.core.peers.set_all(&book);
    }

    fn start_snapshot(&mut self, from: NodeId, slot: Slot) {
        if self.snapshot_busy {
            return;
        }
        let Some(addr) = self.core.peers.addr_of(from) else {
            tracing::warn!(%from, "snapshot requested from a peer with no known address");
            return;
        };
        self.snapshot_busy = true;
        tracing::info!(%from, %addr, slot, "fetching snapshot");
        let core = self.core.clone();
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            let res = async {
                let path = crate::peer::fetch_snapshot(&addr, &core.cluster, &core.cfg.data_dir)
                    .await
                    .map_err(|e| e.to_string())?;
                let (tx, rx) = oneshot::channel();
                jobs.send(Job::Install(path, tx))
                    .await
                    .map_err(|_| "storage stopped".to_string())?;
                rx.await.map_err(|_| "storage stopped".to_string())?
            }
            .await;
            let _ = core.driver.send(Input::Snapshot(res)).await;
        });
    }

    /// Wakes every waiter with an error: the node is stopping.
    fn fail_all(&mut self) {
        self.core.writes.lock().expect("writes lock").clear();
        self.core.reads.lock().expect("reads lock").clear();
    }
}

/// `me`'s rank among the members of `cfg` (voters and learners, with `me`), and how many
/// they are.
fn checkpoint_place(cfg: &Config, me: NodeId) -> (u64, u64) {
    let mut members: std::collections::BTreeSet<NodeId> =
        cfg.voters.union(&cfg.learners).copied().collect();
    members.insert(me);
    let place = members.iter().take_while(|m| **m != me).count();
    (place as u64, members.len() as u64)
}

/// Node ids for logs: `A,B,C` in their text form.
pub(crate) fn ids(set: &std::collections::BTreeSet<NodeId>) -> String {
    set.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// [`keep_voters`] along a list of configs in slot order, starting from `base` (the config a
/// node started with: the store's history does not know it).
pub(crate) fn patch_configs(configs: Vec<(Slot, Config)>, base: &Config) -> Vec<(Slot, Config)> {
    let mut prev = base.clone();
    configs
        .into_iter()
        .map(|(slot, cfg)| {
            let cfg = keep_voters(&cfg, &prev);
            prev = cfg.clone();
            (slot, cfg)
        })
        .collect()
}

/// A membership with no voter keeps the previous voters: the tree can say "nobody" (before a
/// first node's `/ctl/cal/0` is applied, or after an operator emptied every slot), and a
/// slot governed by nobody could never be decided. The original Doozer has the same rule.
pub(crate) fn keep_voters(cfg: &Config, prev: &Config) -> Config {
    if !cfg.voters.is_empty() || prev.voters.is_empty() {
        return cfg.clone();
    }
    Config {
        voters: prev.voters.clone(),
        learners: cfg
            .learners
            .iter()
            .filter(|l| !prev.voters.contains(l))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_waits_only_while_its_group_is_incomplete() {
        // Nothing queued, or nothing to wait for (one client, or a first command).
        assert!(!forward_wants_more(0, 0, 5));
        assert!(!forward_wants_more(1, 0, 0));
        assert!(!forward_wants_more(1, 0, 1));
        // Part of the last slot's group has come: wait for the rest.
        assert!(forward_wants_more(3, 0, 5));
        // With what was forwarded since the decision, the group is complete: go.
        assert!(!forward_wants_more(3, 2, 5));
        assert!(!forward_wants_more(5, 0, 5));
        assert!(!forward_wants_more(7, 0, 5));
    }

    #[test]
    fn each_member_has_its_own_checkpoint_place() {
        let cfg = Config {
            voters: [NodeId(30), NodeId(10)].into(),
            learners: [NodeId(20)].into(),
        };
        assert_eq!(checkpoint_place(&cfg, NodeId(10)), (0, 3));
        assert_eq!(checkpoint_place(&cfg, NodeId(20)), (1, 3));
        assert_eq!(checkpoint_place(&cfg, NodeId(30)), (2, 3));
        // Not (yet) a member: placed among them.
        assert_eq!(checkpoint_place(&cfg, NodeId(25)), (2, 4));
        assert_eq!(checkpoint_place(&Config::default(), NodeId(5)), (0, 1));
    }

    #[test]
    fn the_gathering_target_is_the_largest_recent_slot() {
        let mut r = Recent::default();
        let mut push = |n| {
            r.push(n);
            r.target()
        };
        assert_eq!(push(64), 64);
        // One slot cut short does not lower the target.
        assert_eq!(push(20), 64);
        assert_eq!(push(44), 64);
        for _ in 0..5 {
            assert_eq!(push(10), 64);
        }
        // The 64 has left the window: the target follows the load down.
        assert_eq!(push(10), 44);
        assert_eq!(push(10), 44);
        assert_eq!(push(10), 10);
        assert_eq!(push(30), 30);
        assert_eq!(Recent::default().target(), 0);
    }

    #[test]
    fn small_slots_wait_little_and_large_ones_at_most_the_cap() {
        assert_eq!(gather_limit(0), GATHER_MIN);
        assert_eq!(gather_limit(3), GATHER_MIN);
        assert_eq!(gather_limit(20), Duration::from_micros(640));
        assert_eq!(gather_limit(64), GATHER_MAX);
        assert_eq!(gather_limit(usize::MAX), GATHER_MAX);
    }
}
