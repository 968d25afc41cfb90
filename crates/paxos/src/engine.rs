//! The engine: proposer, acceptor and learner of one node, and its public API.
//!
//! The handlers live in modules named for the role they play (`acceptor`, `proposer`,
//! `learner`, `reads`, `proposals`); this module holds the state they share, the dispatch of
//! inputs and the assembly of [`Ready`].

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::id::{Ballot, CommandId, IdSet, NodeId, Slot};
use crate::membership::Configs;
use crate::message::Message;
use crate::options::Options;
use crate::prevote::PreVote;
use crate::proposer::{Candidate, Leader};
use crate::ready::{ProposeError, Ready, Status};
use crate::recent::RecentIds;
use crate::state::{PersistentState, Record};
use crate::value::{Command, Value};

/// Cap of the campaign backoff: the extra wait is at most `max_election_ticks << 3`.
const MAX_BACKOFF_SHIFT: u32 = 3;

/// What this node is doing about leadership.
#[derive(Debug)]
pub(crate) enum Role {
    /// Following `Engine::leader` (if known).
    Follower,
    /// Running phase 1.
    Candidate(Candidate),
    /// Phase 1 done; running phase 2 per slot.
    Leader(Box<Leader>),
}

/// One node's Multi-Paxos engine. Pure: inputs are method calls, outputs come from
/// [`Engine::ready`]. See the crate docs for the driver's obligations.
#[derive(Debug)]
pub struct Engine {
    pub(crate) opts: Options,
    pub(crate) rng: ChaCha8Rng,
    /// Ticks since creation: the engine's only clock.
    pub(crate) now: u64,

    // Acceptor: durable (through `Ready::persist`).
    pub(crate) promised: Ballot,
    pub(crate) accepted: BTreeMap<Slot, (Ballot, Value)>,

    // Learner.
    /// Decided values: every slot of `[first key, decided]`, plus any decided above it.
    pub(crate) log: BTreeMap<Slot, Value>,
    /// Every slot up to this one is decided and has been handed to the driver.
    pub(crate) decided: Slot,
    /// Highest slot some leader or peer told us is decided.
    pub(crate) known_commit: Slot,
    /// A follower's durable votes (`Accepted`) per undecided slot it accepted: (ballot,
    /// voters at it). See `on_vote`.
    pub(crate) votes: BTreeMap<Slot, (Ballot, Vec<NodeId>)>,
    pub(crate) applied: Slot,
    pub(crate) configs: Configs,
    /// Outstanding catch-up request: (asked, tick sent).
    pub(crate) catchup: Option<(NodeId, u64)>,
    /// A snapshot was requested at this tick and not installed yet.
    pub(crate) snapshot_asked: Option<u64>,

    // Leadership.
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) max_round_seen: u64,
    pub(crate) election_elapsed: u32,
    pub(crate) election_timeout: u32,
    /// Campaigns since a leader was last seen: each one doubles the next timeout (capped),
    /// so duelling candidates spread out instead of pre-empting each other in lockstep.
    pub(crate) failed_campaigns: u32,
    /// A pre-vote under way (role `Follower`).
    pub(crate) pre_vote: Option<PreVote>,
    /// The driver asks to hold new batches back (its storage is busy).
    pub(crate) hold_batches: bool,
    /// The driver asks a follower to keep its queue a while before forwarding it.
    pub(crate) hold_forwards: bool,

    // Proposals.
    /// Commands waiting for a slot (leader) or to be forwarded (follower).
    pub(crate) queue: VecDeque<Command>,
    pub(crate) queued_ids: IdSet,
    /// Commands proposed on this node and not yet seen decided: (command, tick last sent).
    pub(crate) own: BTreeMap<CommandId, (Command, u64)>,
    /// Recently decided command ids, so retries are not decided twice (bounded).
    pub(crate) recent_ids: RecentIds,

    // Reads forwarded to the leader: ctx -> (leader asked, tick sent).
    pub(crate) fwd_reads: BTreeMap<u64, (NodeId, u64)>,

    pub(crate) out: Ready,
}

impl Engine {
    /// Resumes from `state` (a fresh node passes [`PersistentState::empty`]). The engine
    /// starts as a follower that knows no leader.
    pub fn new(opts: Options, state: PersistentState) -> Engine {
        let rng = ChaCha8Rng::seed_from_u64(opts.seed);
        // Accepting at a ballot implies promising it: never go below what was accepted.
        let max_accepted = state
            .accepted
            .values()
            .map(|(b, _)| *b)
            .max()
            .unwrap_or(Ballot::ZERO);
        let promised = state.promised.max(max_accepted);
        let applied = state.applied;
        let accepted = state
            .accepted
            .into_iter()
            .filter(|(s, _)| *s > applied)
            .collect();
        let log = state
            .decided_tail
            .into_iter()
            .filter(|(s, _)| *s <= applied)
            .collect();
        let mut e = Engine {
            rng,
            now: 0,
            promised,
            accepted,
            log,
            decided: applied,
            known_commit: applied,
            votes: BTreeMap::new(),
            applied,
            configs: Configs::new(state.configs),
            catchup: None,
            snapshot_asked: None,
            role: Role::Follower,
            leader: None,
            max_round_seen: promised.round,
            election_elapsed: 0,
            election_timeout: 0,
            failed_campaigns: 0,
            pre_vote: None,
            hold_batches: false,
            hold_forwards: false,
            queue: VecDeque::new(),
            queued_ids: IdSet::default(),
            own: BTreeMap::new(),
            recent_ids: RecentIds::new(opts.max_pending.max(1024)),
            fwd_reads: BTreeMap::new(),
            out: Ready::default(),
            opts,
        };
        e.reset_election_timer();
        e
    }

    /// Queues `cmd` for a slot (leader) or for forwarding to the leader (follower). The
    /// engine keeps the command until it sees it decided and re-sends it if it seems lost,
    /// so a command may be decided twice; the state machine applies a [`CommandId`] once.
    pub fn propose(&mut self, cmd: Command) -> Result<(), ProposeError> {
        self.propose_cmd(cmd)
    }

    /// Handles a message from `from` (this node itself for fed-back messages). Messages that
    /// are stale, duplicated, or make no sense are ignored.
    pub fn step(&mut self, from: NodeId, msg: Message) {
        match msg {
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot),
            Message::Promise {
                ballot,
                from_slot,
                accepted,
                decided,
            } => self.on_promise(from, ballot, from_slot, accepted, decided),
            Message::Reject { ballot, promised } => self.on_reject(ballot, promised),
            Message::Behind { ballot, decided } => self.on_behind(from, ballot, decided),
            Message::Accept {
                ballot,
                slot,
                value,
                commit,
            } => self.on_accept(from, ballot, slot, value, commit),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Heartbeat {
                ballot,
                commit,
                read_seq,
            } => self.on_heartbeat(from, ballot, commit, read_seq),
            Message::HeartbeatAck {
                ballot,
                read_seq,
                decided,
            } => self.on_heartbeat_ack(from, ballot, read_seq, decided),
            Message::Commit { ballot, commit } => {
                if self.observe_leader(from, ballot) {
                    self.learn_commit(from, ballot, commit);
                }
            }
            Message::CatchUp { from: lo, to } => self.on_catchup(from, lo, to),
            Message::Decided { entries } => self.on_decided(from, entries),
            Message::Compacted { applied } => self.on_compacted(from, applied),
            Message::Forward { cmds } => self.on_forward(cmds),
            Message::ReadIndex { ctx } => self.on_read_index_request(from, ctx),
            Message::ReadIndexResp { ctx, result } => {
                self.on_read_index_response(from, ctx, result)
            }
            Message::PreVote { round } => self.on_pre_vote(from, round),
            Message::PreVoteResp {
                round,
                granted,
                promised,
            } => self.on_pre_vote_resp(from, round, granted, promised),
        }
    }

    /// Advances time by one tick: heartbeats, election timeouts, retries.
    pub fn tick(&mut self) {
        self.now += 1;
        if matches!(self.role, Role::Leader(_)) {
            self.leader_tick();
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.election_elapsed >= self.election_timeout {
                if !self.is_voter() {
                    // A learner can't elect anyone; it just stops trusting a silent leader.
                    self.set_leader(None);
                    self.reset_election_timer();
                } else if self.opts.pre_vote {
                    self.start_pre_vote();
                } else {
                    self.campaign();
                }
            }
        }
        if self
            .now
            .is_multiple_of(u64::from(self.opts.heartbeat_ticks.max(1)))
        {
            self.retry_own();
            self.expire_forwarded_reads();
            self.retry_catchup();
        }
    }

    /// Asks for a read index; the answer comes in [`Ready::reads`] under `ctx`.
    pub fn read_index(&mut self, ctx: u64) {
        self.start_read(ctx);
    }

    /// The driver applied every slot up to `slot`; `config_after` is the membership after it,
    /// which governs slot `slot + alpha` on.
    pub fn applied(&mut self, slot: Slot, config_after: &Config) {
        if slot < self.applied {
            return;
        }
        self.applied = slot;
        self.configs
            .set_from(slot.saturating_add(self.opts.alpha), config_after);
        self.compact();
    }

    /// The driver installed a snapshot covering every slot up to `slot`; `configs` are the
    /// configs in force from `slot + 1` on (covering `slot + 1 ..= slot + alpha`). Acceptor
    /// state above `slot` is kept.
    pub fn snapshot_installed(&mut self, slot: Slot, configs: Vec<(Slot, Config)>) {
        self.snapshot_asked = None;
        self.catchup = None;
        if slot <= self.applied {
            return;
        }
        self.applied = slot;
        if !configs.is_empty() {
            self.configs = Configs::new(configs);
        }
        if self.decided < slot {
            // The log below the snapshot has a gap now; what the snapshot covers is gone.
            self.log = self.log.split_off(&(slot + 1));
            self.decided = slot;
            self.known_commit = self.known_commit.max(slot);
            self.advance_decided();
        }
        // Decided slots the driver has not drained yet are covered by the snapshot.
        self.out.decided.retain(|(s, _)| *s > slot);
        if let Role::Leader(l) = &mut self.role {
            // What the snapshot covers is decided: stop asking for votes there, and go on
            // from the first slot above it (whose config we know).
            let above = l.proposals.split_off(&(slot + 1));
            for p in std::mem::replace(&mut l.proposals, above).into_values() {
                l.forget_inflight(&p.value);
            }
            l.recovery = l.recovery.split_off(&(slot + 1));
            l.next_slot = l.next_slot.max(slot + 1);
        }
        self.compact();
    }

    /// Drains the outputs accumulated since the last call. A leader closes batches here: the
    /// commands queued since the last call share slots, as many as the pipeline has room for.
    /// While `hold` is set, a leader proposes no new batch of commands: they wait in the
    /// queue and go together in one slot later. A driver whose storage is still flushing can
    /// set it, since the accept could not be persisted any sooner.
    pub fn hold_batches(&mut self, hold: bool) {
        self.hold_batches = hold;
    }

    /// While `hold` is set, a follower keeps the commands proposed to it queued instead of
    /// forwarding them to the leader in `ready()`. Clients answered together send their next
    /// commands together: a driver that holds them for a moment sends them to the leader in
    /// one message rather than one per wake-up. The driver bounds the hold; retries and a
    /// change of leader are unaffected (they only queue).
    pub fn hold_forwards(&mut self, hold: bool) {
        self.hold_forwards = hold;
    }

    /// Commands waiting for a slot (leader) or to be forwarded (follower).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn ready(&mut self) -> Ready {
        match self.role {
            Role::Leader(_) => self.leader_ready(),
            _ if self.hold_forwards => {}
            _ => self.forward_queue(),
        }
        std::mem::take(&mut self.out)
    }

    /// This engine's view.
    pub fn status(&self) -> Status {
        Status {
            id: self.opts.id,
            leader: self.leader,
            ballot: self.promised,
            decided: self.decided,
            applied: self.applied,
            is_leader: matches!(self.role, Role::Leader(_)),
        }
    }

    // ---- shared helpers ----

    pub(crate) fn id(&self) -> NodeId {
        self.opts.id
    }

    /// Last slot whose config is known (the alpha rule).
    pub(crate) fn window_end(&self) -> Slot {
        self.applied.saturating_add(self.opts.alpha)
    }

    /// Whether this node votes for the next slot it does not know decided.
    pub(crate) fn is_voter(&self) -> bool {
        self.configs
            .at(self.decided + 1)
            .voters
            .contains(&self.id())
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let (lo, hi) = self.opts.election_ticks;
        let lo = lo.max(1);
        let base = if hi > lo {
            self.rng.gen_range(lo..hi)
        } else {
            lo
        };
        let backoff = self.failed_campaigns.min(MAX_BACKOFF_SHIFT);
        // The extra wait is random too: a fixed multiple would keep two duelling
        // candidates in step.
        let extra = if backoff > 0 {
            self.rng.gen_range(0..(hi.max(lo + 1) << backoff))
        } else {
            0
        };
        self.election_timeout = base.saturating_add(extra);
        self.election_elapsed = 0;
    }

    /// Changes the believed leader; reads waiting on the old one fail.
    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            tracing::debug!(node = %self.id(), ?leader, "leader changed");
            self.leader = leader;
            self.fail_forwarded_reads();
            if leader.is_some() {
                self.hurry_own_retries();
            }
        }
    }

    pub(crate) fn persist(&mut self, record: Record) {
        self.out.persist.push(record);
    }

    pub(crate) fn send_now(&mut self, to: NodeId, msg: Message) {
        self.out.send_now.push((to, msg));
    }

    /// A reply that reports durable acceptor state: after persist, unless the planted fault
    /// sends it early.
    pub(crate) fn send_durable(&mut self, to: NodeId, msg: Message) {
        if self.opts.faults.send_before_persist {
            self.out.send_now.push((to, msg));
        } else {
            self.out.send_after_persist.push((to, msg));
        }
    }

    /// Drops what the applied prefix made useless: acceptor records at or below it, decided
    /// values beyond the retention, configs no slot above it uses.
    fn compact(&mut self) {
        let keep_accepted = self.applied + 1;
        self.accepted = self.accepted.split_off(&keep_accepted);
        let keep_log = self.applied.saturating_sub(self.opts.retain_decided) + 1;
        if self
            .log
            .first_key_value()
            .is_some_and(|(s, _)| *s < keep_log)
        {
            self.log = self.log.split_off(&keep_log);
        }
        self.configs
            .compact_below(self.applied.min(self.decided) + 1);
    }
}
