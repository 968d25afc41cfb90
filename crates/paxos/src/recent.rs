//! The recently decided command ids, so that a retried command is not decided twice.
//!
//! A command id is its node and a sequence number that increases per node, and a node's
//! commands are decided roughly in that order. So instead of one hash set of every recent
//! id (a random cache-missing probe to insert, another to evict the oldest: 1.5% of the
//! machine in `perf` at 64 clients), each node that proposes gets a window of bits over
//! its last sequence numbers (the engine's `max_pending`, at least 1024, rounded up to a
//! power of two: 65,536 in doozerd). An id is remembered exactly while its node's highest
//! decided sequence number is less than a window ahead of it: no false
//! positives (that would drop a new command), and an id forgotten is only proposed again,
//! which the state machine answers as a duplicate.

use crate::id::{CommandId, NodeId};

/// Nodes tracked at most; the one that decided nothing for longest makes room for a new
/// one. A cluster has a handful, but callers of the engine may give each client an id.
const MAX_NODES: usize = 64;

/// The sequence numbers of one node: bit `seq % window` of `bits` for `seq` in
/// `end - window .. end`.
#[derive(Debug)]
struct Window {
    node: NodeId,
    /// One past the highest sequence number inserted.
    end: u64,
    bits: Box<[u64]>,
    /// When it last took an id (a count of inserts), for eviction.
    used: u64,
}

/// Recently decided command ids, by node. Deterministic: nothing is iterated into output.
#[derive(Debug)]
pub(crate) struct RecentIds {
    nodes: Vec<Window>,
    /// Bits per node: a power of two, at least 64.
    window: u64,
    inserts: u64,
}

impl RecentIds {
    /// Remembers the last `per_node` sequence numbers (rounded up to a power of two) of each
    /// node.
    pub fn new(per_node: usize) -> RecentIds {
        RecentIds {
            nodes: Vec::new(),
            window: (per_node.max(64) as u64).next_power_of_two(),
            inserts: 0,
        }
    }

    /// Whether `id` was inserted and is still within its node's window.
    pub fn contains(&self, id: &CommandId) -> bool {
        let Some(w) = self.nodes.iter().find(|w| w.node == id.node) else {
            return false;
        };
        id.seq < w.end && w.end - id.seq <= self.window && w.get(id.seq, self.window)
    }

    /// Remembers `id`. An id already a window behind its node's newest is not kept.
    pub fn insert(&mut self, id: CommandId) {
        // The largest sequence number would make `end` overflow: it is simply not kept.
        let Some(next) = id.seq.checked_add(1) else {
            return;
        };
        self.inserts += 1;
        let window = self.window;
        let i = match self.nodes.iter().position(|w| w.node == id.node) {
            Some(i) => i,
            None => self.make_room(id.node),
        };
        let w = &mut self.nodes[i];
        w.used = self.inserts;
        if id.seq >= w.end {
            w.clear(w.end, id.seq, window);
            w.end = next;
        } else if w.end - id.seq > window {
            return;
        }
        w.set(id.seq, window);
    }

    /// Adds an empty window for `node` (evicting the least recently used one if full) and
    /// returns its index.
    fn make_room(&mut self, node: NodeId) -> usize {
        let fresh = Window {
            node,
            end: 0,
            bits: vec![0u64; (self.window / 64) as usize].into_boxed_slice(),
            used: 0,
        };
        if self.nodes.len() < MAX_NODES {
            self.nodes.push(fresh);
            return self.nodes.len() - 1;
        }
        let (i, _) = self
            .nodes
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.used)
            .expect("MAX_NODES > 0");
        self.nodes[i] = fresh;
        i
    }
}

impl Window {
    fn pos(seq: u64, window: u64) -> (usize, u64) {
        let bit = seq & (window - 1);
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn get(&self, seq: u64, window: u64) -> bool {
        let (word, mask) = Self::pos(seq, window);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, seq: u64, window: u64) {
        let (word, mask) = Self::pos(seq, window);
        self.bits[word] |= mask;
    }

    /// Clears the bits of `from..=to`, which are about to enter the window (they hold the
    /// sequence numbers a window earlier).
    fn clear(&mut self, from: u64, to: u64, window: u64) {
        if to - from >= window {
            self.bits.fill(0);
            return;
        }
        let mut s = from;
        while s <= to {
            let (word, mask) = Self::pos(s, window);
            if mask == 1 && to - s >= 63 {
                self.bits[word] = 0;
                s += 64;
            } else {
                self.bits[word] &= !mask;
                s += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(node: u128, seq: u64) -> CommandId {
        CommandId {
            node: NodeId(node),
            seq,
        }
    }

    #[test]
    fn ids_are_remembered_per_node_until_a_window_behind() {
        let mut r = RecentIds::new(100); // rounded up to 128
        assert!(!r.contains(&id(1, 5)));
        r.insert(id(1, 5));
        r.insert(id(2, 5));
        assert!(r.contains(&id(1, 5)) && r.contains(&id(2, 5)));
        assert!(!r.contains(&id(1, 4)) && !r.contains(&id(1, 6)) && !r.contains(&id(3, 5)));
        // Out of order within the window.
        r.insert(id(1, 9));
        r.insert(id(1, 7));
        assert!(r.contains(&id(1, 7)) && !r.contains(&id(1, 8)));
        // 5 stays until the newest is a whole window ahead of it.
        r.insert(id(1, 5 + 128));
        assert!(r.contains(&id(1, 133)));
        assert!(
            !r.contains(&id(1, 5)),
            "5 and 133 share a bit; 5 is out of the window"
        );
        assert!(r.contains(&id(1, 7)) && r.contains(&id(1, 9)));
        // Too old to keep: not remembered, and it does not disturb the window.
        r.insert(id(1, 2));
        assert!(!r.contains(&id(1, 2)) && r.contains(&id(1, 133)));
        // A jump beyond a window forgets everything before it.
        r.insert(id(1, 10_000));
        assert!(!r.contains(&id(1, 133)) && !r.contains(&id(1, 9_999 - 127)));
        assert!(r.contains(&id(1, 10_000)) && r.contains(&id(2, 5)));
        // The largest sequence number cannot be kept (it would overflow `end`).
        r.insert(id(1, u64::MAX));
        assert!(!r.contains(&id(1, u64::MAX)) && r.contains(&id(1, 10_000)));
    }

    #[test]
    fn it_never_claims_an_id_it_was_not_given() {
        // Against a model that remembers everything: whatever the window says it has, it was
        // given, and every id given within the window of the newest is there.
        let mut r = RecentIds::new(64);
        let mut given = BTreeSet::new();
        let mut x: u64 = 12345;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut newest = [0u64; 3];
        for _ in 0..20_000 {
            let node = (next() % 3) as usize;
            // Mostly small steps forward, some back, some jumps.
            let seq = match next() % 10 {
                0 => newest[node].saturating_sub(next() % 100),
                1 => newest[node] + next() % 200,
                _ => newest[node] + next() % 3,
            };
            r.insert(id(node as u128, seq));
            given.insert((node, seq));
            newest[node] = newest[node].max(seq);
            for _ in 0..4 {
                let probe = newest[node].saturating_sub(next() % 80) + next() % 2;
                let have = r.contains(&id(node as u128, probe));
                if have {
                    assert!(given.contains(&(node, probe)), "false positive {probe}");
                }
                let in_window = probe <= newest[node] && newest[node] - probe < 64;
                if in_window && given.contains(&(node, probe)) {
                    assert!(have, "lost {probe} (newest {})", newest[node]);
                }
            }
        }
    }

    #[test]
    fn the_least_recently_used_node_makes_room() {
        let mut r = RecentIds::new(64);
        for n in 0..MAX_NODES as u128 {
            r.insert(id(n, 1));
        }
        r.insert(id(0, 2)); // node 0 is used again: node 1 is now the oldest
        r.insert(id(1000, 1));
        assert!(r.contains(&id(1000, 1)) && r.contains(&id(0, 1)) && r.contains(&id(2, 1)));
        assert!(!r.contains(&id(1, 1)));
        assert_eq!(r.nodes.len(), MAX_NODES);
    }
}
