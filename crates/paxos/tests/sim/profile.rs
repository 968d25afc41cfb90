//! The shape of one run, drawn from its seed: cluster, fault rates, workload, engine options.

use doozer_paxos::Faults;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::net::NetFaults;

/// Which cluster the run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A fixed cluster of this many voters.
    Static(usize),
    /// Starts with one voter, grows to five, then shrinks to `shrink_to` voters.
    Membership {
        /// Voters at the end (3 or 1).
        shrink_to: usize,
    },
}

/// Planted bugs, to prove the checkers catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// Engine-level faults.
    pub engine: Faults,
    /// The simulated disk drops Promise records when a node restarts.
    pub forget_promise: bool,
    /// Proves the liveness checker: one node stays cut off after healing.
    pub never_heal: bool,
    /// Proves the validity checker: clients hand engines other data than they registered.
    pub corrupt_proposals: bool,
    /// Proves the alpha checker: engines are configured with alpha one larger than the state
    /// machine's (a misconfiguration that lets a leader run past the known configs).
    pub engine_alpha_too_big: bool,
    /// Proves the state checker: the first node's state machine misapplies slot 3.
    pub diverge_state: bool,
}

impl Planted {
    /// Whether any bug is planted.
    pub fn any(&self) -> bool {
        *self != Planted::default()
    }
}

/// Everything that varies between runs.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The cluster.
    pub shape: Shape,
    /// Network faults while chaos lasts.
    pub net: NetFaults,
    /// Probability per tick that a running node crashes (one draw for the cluster).
    pub crash_p: f64,
    /// How long a crashed node stays down.
    pub down_ticks: (u64, u64),
    /// Probability per tick that every running node crashes at once (power loss).
    pub power_loss_p: f64,
    /// Probability per tick that a running node pauses (a stalled process).
    pub pause_p: f64,
    /// How long a pause lasts.
    pub pause_ticks: (u64, u64),
    /// Whether nodes' clocks run at different rates (each gets a tick rate in [0.5, 1]).
    pub tick_skew: bool,
    /// Whether some nodes' disks are slower than others (fsync rate x1, x0.5 or x0.1).
    pub slow_disks: bool,
    /// Probability per tick that a partition starts (when none is active).
    pub partition_p: f64,
    /// How long a partition lasts.
    pub partition_ticks: (u64, u64),
    /// Probability per tick and node that pending batches are fsynced.
    pub fsync_p: f64,
    /// Probability that a batch is fsynced right after the ready that made it.
    pub fsync_now_p: f64,
    /// Clients proposing commands.
    pub clients: usize,
    /// Commands each client keeps in flight.
    pub max_outstanding: usize,
    /// Probability per tick and client of a new command.
    pub new_cmd_p: f64,
    /// Probability per tick of a read-index request.
    pub read_p: f64,
    /// A client re-proposes a command not decided after this many ticks.
    pub retry_ticks: u64,
    /// Ticks of faults.
    pub chaos_ticks: u64,
    /// Liveness bound: ticks after healing by which everything must be decided everywhere.
    pub heal_ticks: u64,
    /// Engine option.
    pub alpha: u64,
    /// Engine option.
    pub heartbeat_ticks: u32,
    /// Engine option.
    pub election_ticks: (u32, u32),
    /// Engine option.
    pub max_batch_cmds: usize,
    /// The leader's bound on slots of new commands in flight.
    pub max_inflight: u64,
    /// Engine option: ask before campaigning.
    pub pre_vote: bool,
    /// Engine option.
    pub max_pending: usize,
    /// Engine option.
    pub retain_decided: u64,
    /// Bugs planted in this run.
    pub planted: Planted,
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    *items.choose(rng).expect("non-empty choice")
}

impl Profile {
    /// A profile drawn from `rng`.
    pub fn random(rng: &mut ChaCha8Rng, planted: Planted) -> Profile {
        let shape = match rng.gen_range(0..8) {
            0 => Shape::Static(1),
            1..=3 => Shape::Static(3),
            4..=5 => Shape::Static(5),
            _ => Shape::Membership {
                shrink_to: pick(rng, &[3, 1]),
            },
        };
        let membership = matches!(shape, Shape::Membership { .. });
        let max_delay = pick(rng, &[1u64, 2, 4, 8]);
        let heartbeat_ticks = rng.gen_range(1..=4u32);
        let election_min = heartbeat_ticks * 4 + rng.gen_range(0..8);
        let election_ticks = (election_min, election_min + rng.gen_range(5..20));
        Profile {
            shape,
            net: NetFaults {
                drop_p: pick(rng, &[0.0, 0.01, 0.05, 0.15]),
                dup_p: pick(rng, &[0.0, 0.01, 0.05]),
                delay_ticks: (1, max_delay),
                long_delay_p: pick(rng, &[0.0, 0.0, 0.005, 0.03]),
                long_delay_ticks: pick(rng, &[50, 300]),
            },
            crash_p: pick(rng, &[0.0, 0.003, 0.01, 0.03]),
            down_ticks: (5, pick(rng, &[30u64, 100, 300])),
            power_loss_p: pick(rng, &[0.0, 0.0, 0.0005, 0.002]),
            pause_p: pick(rng, &[0.0, 0.005, 0.02]),
            pause_ticks: (5, pick(rng, &[20u64, 60, 200])),
            tick_skew: rng.gen_bool(0.3),
            slow_disks: rng.gen_bool(0.3),
            partition_p: pick(rng, &[0.0, 0.005, 0.02]),
            partition_ticks: (10, pick(rng, &[50u64, 150, 400])),
            fsync_p: pick(rng, &[1.0, 0.5, 0.2]),
            fsync_now_p: pick(rng, &[0.0, 0.3, 0.8]),
            clients: rng.gen_range(1..=4),
            max_outstanding: rng.gen_range(1..=4),
            new_cmd_p: pick(rng, &[0.05, 0.2, 0.6]),
            read_p: pick(rng, &[0.0, 0.05, 0.2]),
            retry_ticks: u64::from(election_ticks.1) * 2 + max_delay * 4,
            chaos_ticks: if membership {
                4000
            } else {
                rng.gen_range(2000..4000)
            },
            heal_ticks: 3000,
            alpha: if membership {
                pick(rng, &[2, 4, 8])
            } else {
                pick(rng, &[1, 3, 10, 50])
            },
            heartbeat_ticks,
            election_ticks,
            max_batch_cmds: pick(rng, &[1, 3, 64]),
            max_pending: pick(rng, &[4, 64, 1024]),
            retain_decided: pick(rng, &[4, 16, 1000]),
            max_inflight: pick(rng, &[1, 2, 4, u64::MAX]),
            pre_vote: rng.gen_bool(0.75),
            planted,
        }
    }

    /// A one-line description for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "{:?} drop={} dup={} delay={:?} long={}/{} crash={} down={:?} power={} pause={}/{:?} skew={} slow_disks={} part={} part_len={:?} fsync={}/{} \
             clients={}x{} new={} read={} alpha={} hb={} elect={:?} batch={} inflight={} prevote={} pending={} retain={} planted={:?}",
            self.shape,
            self.net.drop_p,
            self.net.dup_p,
                        self.net.delay_ticks,
            self.net.long_delay_p,
            self.net.long_delay_ticks,
            self.crash_p,
            self.down_ticks,
            self.power_loss_p,
            self.pause_p,
            self.pause_ticks,
            self.tick_skew,
            self.slow_disks,
            self.partition_p,
            self.partition_ticks,
            self.fsync_p,
            self.fsync_now_p,
            self.clients,
            self.max_outstanding,
            self.new_cmd_p,
            self.read_p,
            self.alpha,
            self.heartbeat_ticks,
            self.election_ticks,
            self.max_batch_cmds,
            self.max_inflight,
            self.pre_vote,
            self.max_pending,
            self.retain_decided,
            self.planted,
        )
    }
}
