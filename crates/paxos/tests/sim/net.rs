//! The simulated network: every message gets a random delay (so messages reorder), may be
//! dropped or duplicated, and is lost at delivery time if its link is cut by a partition.

use std::collections::{BTreeMap, BTreeSet};

use doozer_paxos::{Message, NodeId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One message on the wire.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Sender.
    pub from: NodeId,
    /// Addressee.
    pub to: NodeId,
    /// The engine's message.
    pub msg: Message,
}

/// How the network misbehaves right now.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop_p: f64,
    /// Probability that a message is delivered twice.
    pub dup_p: f64,
    /// Delay in ticks, uniform in `[min, max]` (min >= 1, so a send never lands in the past).
    pub delay_ticks: (u64, u64),
    /// Probability that a message is held much longer (a stale message from an old
    /// connection or a long queue), up to `long_delay_ticks`.
    pub long_delay_p: f64,
    /// Upper bound of a long delay.
    pub long_delay_ticks: u64,
}

impl NetFaults {
    /// A network that loses nothing, with the given delays.
    pub fn reliable(delay_ticks: (u64, u64)) -> NetFaults {
        NetFaults {
            drop_p: 0.0,
            dup_p: 0.0,
            delay_ticks,
            long_delay_p: 0.0,
            long_delay_ticks: 0,
        }
    }
}

/// Counters for the run summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Lost to `drop_p`.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Lost to a partition or a down addressee.
    pub undeliverable: u64,
    /// Handed to an engine.
    pub delivered: u64,
}

/// Messages in flight, ordered by delivery tick then a random tie-breaker.
#[derive(Debug, Default)]
pub struct Net {
    queue: BTreeMap<(u64, u64, u64), Envelope>,
    seq: u64,
    /// Directed links that are cut: `(from, to)`.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Counters.
    pub stats: NetStats,
}

impl Net {
    /// Puts a message on the wire at tick `now`.
    pub fn send(&mut self, rng: &mut ChaCha8Rng, faults: &NetFaults, now: u64, env: Envelope) {
        self.stats.sent += 1;
        if faults.drop_p > 0.0 && rng.gen_bool(faults.drop_p) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if faults.dup_p > 0.0 && rng.gen_bool(faults.dup_p) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let long = faults.long_delay_p > 0.0 && rng.gen_bool(faults.long_delay_p);
            let at = if long {
                now + rng.gen_range(
                    faults.delay_ticks.1..=faults.long_delay_ticks.max(faults.delay_ticks.1),
                )
            } else {
                now + rng.gen_range(faults.delay_ticks.0..=faults.delay_ticks.1)
            };
            let tie: u64 = rng.gen();
            self.seq += 1;
            self.queue.insert((at, tie, self.seq), env.clone());
        }
    }

    /// Puts a message back to be delivered at tick `at` (its addressee is paused).
    pub fn defer(&mut self, rng: &mut ChaCha8Rng, at: u64, env: Envelope) {
        let tie: u64 = rng.gen();
        self.seq += 1;
        self.queue.insert((at, tie, self.seq), env);
    }

    /// The next message due at or before `now`, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        let (&key, _) = self.queue.first_key_value()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }

    /// Whether the link `from -> to` is cut.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked.is_empty() && self.blocked.contains(&(from, to))
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
