//! A small seeded in-memory network of engines for this crate's own tests (the full
//! simulator lives in `tests/sim`). Persistence is instant; crashes keep what was persisted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    Command, CommandId, Config, Engine, Message, NodeId, Options, PersistentState, Slot, Value,
};

/// What a node has on "disk".
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub(crate) state: PersistentState,
    pub(crate) log: BTreeMap<Slot, Value>,
}

pub(crate) struct Net {
    pub(crate) rng: ChaCha8Rng,
    pub(crate) opts: Vec<Options>,
    pub(crate) nodes: Vec<Option<Engine>>,
    pub(crate) disks: Vec<Disk>,
    pub(crate) wire: VecDeque<(NodeId, NodeId, Message)>,
    pub(crate) chosen: BTreeMap<Slot, Value>,
    pub(crate) loss: f64,
    pub(crate) down: BTreeSet<usize>,
    pub(crate) cut: BTreeSet<(usize, usize)>,
    pub(crate) proposed: BTreeSet<CommandId>,
    pub(crate) seq: u64,
    pub(crate) snapshots: usize,
}

pub(crate) fn id(i: usize) -> NodeId {
    NodeId(100 + i as u128)
}

/// Config changes are commands whose data is `cfg:` followed by voter indexes.
fn config_of(value: &Value) -> Option<Config> {
    let Value::Batch(cmds) = value else {
        return None;
    };
    cmds.iter().rev().find_map(|c| {
        let rest = c.data.strip_prefix(b"cfg:")?;
        Some(Config::with_voters(rest.iter().map(|i| id(*i as usize))))
    })
}

impl Net {
    pub(crate) fn new(n: usize, voters: usize, seed: u64, tweak: impl Fn(&mut Options)) -> Net {
        let mut cfg = Config::with_voters((0..voters).map(id));
        cfg.learners = (voters..n).map(id).collect();
        let opts: Vec<Options> = (0..n)
            .map(|i| {
                let mut o = Options {
                    id: id(i),
                    alpha: 8,
                    seed: seed * 31 + i as u64,
                    ..Options::default()
                };
                tweak(&mut o);
                o
            })
            .collect();
        let disks: Vec<Disk> = (0..n)
            .map(|_| Disk {
                state: PersistentState::empty(cfg.clone()),
                log: BTreeMap::new(),
            })
            .collect();
        let nodes = (0..n)
            .map(|i| Some(Engine::new(opts[i].clone(), disks[i].state.clone())))
            .collect();
        Net {
            rng: ChaCha8Rng::seed_from_u64(seed),
            opts,
            nodes,
            disks,
            wire: VecDeque::new(),
            chosen: BTreeMap::new(),
            loss: 0.0,
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            proposed: BTreeSet::new(),
            seq: 0,
            snapshots: 0,
        }
    }

    fn index(&self, n: NodeId) -> Option<usize> {
        (0..self.nodes.len()).find(|i| id(*i) == n)
    }

    /// Drains one node's outputs into its disk and the wire.
    fn flush(&mut self, i: usize) {
        for _ in 0..16 {
            let Some(e) = self.nodes[i].as_mut() else {
                return;
            };
            let r = e.ready();
            if r.is_empty() {
                return;
            }
            let disk = &mut self.disks[i];
            for rec in r.persist {
                disk.state.record(rec);
            }
            let mut applied = Vec::new();
            for (slot, value) in r.decided {
                assert_eq!(
                    slot,
                    disk.state.applied + 1,
                    "node {i} decided out of order"
                );
                match self.chosen.get(&slot) {
                    Some(v) => assert_eq!(v, &value, "agreement violated at slot {slot}"),
                    None => {
                        self.chosen.insert(slot, value.clone());
                    }
                }
                disk.state.applied = slot;
                if let Some(c) = config_of(&value) {
                    disk.state.configs.push((slot + self.opts[i].alpha, c));
                }
                disk.log.insert(slot, value);
                applied.push(slot);
            }
            if let Some(req) = r.snapshot {
                let from = self.index(req.from).expect("known peer");
                let src = self.disks[from].clone();
                let disk = &mut self.disks[i];
                if src.state.applied > disk.state.applied {
                    self.snapshots += 1;
                    disk.log = src.log.clone();
                    disk.state.applied = src.state.applied;
                    disk.state.configs = src.state.configs.clone();
                    let e = self.nodes[i].as_mut().expect("up");
                    let slot = src.state.applied;
                    e.snapshot_installed(slot, current_configs(&src.state, slot));
                }
            }
            let e = self.nodes[i].as_mut().expect("up");
            for slot in applied {
                let cfg = current_configs(&self.disks[i].state, slot + self.opts[i].alpha);
                e.applied(slot, &cfg.last().expect("a config").1);
            }
            let me = id(i);
            for (to, msg) in r.send_now.into_iter().chain(r.send_after_persist) {
                self.wire.push_back((me, to, msg));
            }
        }
    }

    /// Delivers up to `n` messages (with loss, duplication and reordering), flushing as it goes.
    pub(crate) fn deliver(&mut self, n: usize) {
        for _ in 0..n {
            if self.wire.is_empty() {
                return;
            }
            let k = if self.loss > 0.0 && self.wire.len() > 1 && self.rng.gen_bool(0.2) {
                self.rng.gen_range(0..self.wire.len())
            } else {
                0
            };
            let (from, to, msg) = self.wire.remove(k).expect("in range");
            let (Some(fi), Some(ti)) = (self.index(from), self.index(to)) else {
                continue;
            };
            if self.down.contains(&ti) || self.cut.contains(&(fi.min(ti), fi.max(ti))) {
                continue;
            }
            if from != to && self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                continue;
            }
            if from != to && self.loss > 0.0 && self.rng.gen_bool(self.loss / 2.0) {
                self.wire.push_back((from, to, msg.clone()));
            }
            if let Some(e) = self.nodes[ti].as_mut() {
                e.step(from, msg);
            }
            self.flush(ti);
        }
    }

    pub(crate) fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(e) = self.nodes[i].as_mut() {
                e.tick();
            }
            self.flush(i);
        }
    }

    pub(crate) fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick_all();
            let n = self.wire.len();
            self.deliver(n + 64);
        }
    }

    pub(crate) fn propose(&mut self, i: usize, data: &[u8]) -> bool {
        self.seq += 1;
        let cmd = Command {
            id: CommandId {
                node: id(i),
                seq: self.seq,
            },
            data: Bytes::copy_from_slice(data),
        };
        let Some(e) = self.nodes[i].as_mut() else {
            return false;
        };
        let ok = e.propose(cmd.clone()).is_ok();
        if ok {
            self.proposed.insert(cmd.id);
        }
        self.flush(i);
        ok
    }

    /// Proposes at the current leader, waiting for one if needed.
    pub(crate) fn propose_at_leader(&mut self, data: &[u8]) {
        for _ in 0..100 {
            if let Some(l) = self.leader() {
                if self.propose(l, data) {
                    return;
                }
            }
            self.run(5);
        }
        panic!("no leader took the proposal");
    }

    pub(crate) fn crash(&mut self, i: usize) {
        // A crashed node's undecided proposals die with it (its client would retry).
        let chosen = self.chosen_ids();
        self.proposed
            .retain(|c| c.node != id(i) || chosen.contains(c));
        self.nodes[i] = None;
        self.down.insert(i);
    }

    pub(crate) fn restart(&mut self, i: usize) {
        let d = &self.disks[i];
        let mut st = d.state.clone();
        st.accepted = st.accepted.split_off(&(st.applied + 1));
        st.decided_tail = d.log.iter().map(|(s, v)| (*s, v.clone())).collect();
        st.configs = current_configs(&st, st.applied + 1);
        self.nodes[i] = Some(Engine::new(self.opts[i].clone(), st));
        self.down.remove(&i);
    }

    pub(crate) fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .as_ref()
                .is_some_and(|e| e.status().is_leader)
        })
    }

    /// Every proposed command id appears in the chosen log.
    pub(crate) fn all_chosen(&self) -> bool {
        self.proposed.is_subset(&self.chosen_ids())
    }

    pub(crate) fn chosen_ids(&self) -> BTreeSet<CommandId> {
        self.chosen
            .values()
            .flat_map(|v| match v {
                Value::Batch(c) => c.iter().map(|c| c.id).collect(),
                Value::Noop => Vec::new(),
            })
            .collect()
    }
}

/// The configs in force from `from` on, given the disk's config history.
fn current_configs(st: &PersistentState, from: Slot) -> Vec<(Slot, Config)> {
    let mut all = st.configs.clone();
    all.sort_by_key(|(s, _)| *s);
    let mut out: Vec<(Slot, Config)> = Vec::new();
    for (s, c) in all {
        if s <= from {
            out.clear();
            out.push((from, c));
        } else {
            out.push((s, c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_elect_and_decide() {
        let mut net = Net::new(3, 3, 1, |_| {});
        net.run(100);
        let l = net.leader().expect("a leader");
        for k in 0..50 {
            assert!(net.propose((l + k) % 3, format!("c{k}").as_bytes()));
        }
        net.run(50);
        assert!(net.all_chosen());
        for i in 0..3 {
            assert_eq!(
                net.nodes[i].as_ref().unwrap().status().decided,
                *net.chosen.keys().last().unwrap()
            );
        }
    }

    #[test]
    fn single_node() {
        let mut net = Net::new(1, 1, 2, |_| {});
        net.run(70);
        assert_eq!(net.leader(), Some(0));
        assert!(net.propose(0, b"x"));
        net.run(2);
        assert!(net.all_chosen());
    }

    #[test]
    fn lossy_crashes_and_partitions_stay_safe_and_live() {
        for seed in 0..40 {
            let mut net = Net::new(5, 5, seed, |_| {});
            net.loss = 0.1;
            for round in 0..30 {
                net.run(10);
                let i = net.rng.gen_range(0..5);
                let _ = net.propose(i, format!("s{seed}r{round}").as_bytes());
                match net.rng.gen_range(0..10) {
                    0 => {
                        let i = net.rng.gen_range(0..5);
                        if net.down.len() < 2 {
                            net.crash(i);
                        }
                    }
                    1 => {
                        let down: Vec<usize> = net.down.iter().copied().collect();
                        for i in down {
                            net.restart(i);
                        }
                    }
                    2 => {
                        let a = net.rng.gen_range(0..5);
                        let b = net.rng.gen_range(0..5);
                        net.cut.insert((a.min(b), a.max(b)));
                    }
                    3 => net.cut.clear(),
                    _ => {}
                }
            }
            net.loss = 0.0;
            net.cut.clear();
            let down: Vec<usize> = net.down.iter().copied().collect();
            for i in down {
                net.restart(i);
            }
            net.run(2000);
            if !net.all_chosen() {
                let chosen = net.chosen_ids();
                let missing: Vec<_> = net.proposed.difference(&chosen).collect();
                for i in 0..5 {
                    eprintln!("{i}: {:?}", net.nodes[i].as_ref().unwrap().status());
                }
                panic!("seed {seed}: not all proposals chosen: {missing:?}");
            }
            let top = *net.chosen.keys().last().unwrap_or(&0);
            eprintln!(
                "seed {seed}: {} chosen slots, {} proposals, ballot {:?}",
                top,
                net.proposed.len(),
                net.nodes[0].as_ref().unwrap().status().ballot
            );
            for i in 0..5 {
                assert_eq!(
                    net.nodes[i].as_ref().unwrap().status().decided,
                    top,
                    "seed {seed} node {i}"
                );
            }
        }
    }

    fn voters_of(net: &Net, i: usize) -> usize {
        let e = net.nodes[i].as_ref().unwrap();
        e.configs.at(e.decided + 1).voters.len()
    }

    #[test]
    fn membership_grows_from_one_to_five_and_shrinks_back() {
        let mut net = Net::new(5, 1, 7, |_| {});
        net.run(80);
        assert_eq!(net.leader(), Some(0));
        for n in 2..=5u8 {
            let cfg: Vec<u8> = b"cfg:".iter().copied().chain(0..n).collect();
            assert!(net.propose(0, &cfg));
            net.run(5);
            // The alpha rule: the new voters govern slots alpha after the change.
            for k in 0..10 {
                assert!(net.propose(0, format!("g{n}.{k}").as_bytes()));
                net.run(2);
            }
            assert_eq!(voters_of(&net, 0), n as usize, "grown to {n}");
        }
        net.run(20);
        assert!(net.all_chosen());
        // Now the old leader can be lost and the others carry on.
        net.crash(0);
        net.run(200);
        let l = net.leader().expect("new leader among the five");
        assert!(net.propose(l, b"after"));
        net.run(20);
        assert!(net.all_chosen());
        for n in (1..=4u8).rev() {
            let cfg: Vec<u8> = b"cfg:".iter().copied().chain(1..=n).collect();
            net.propose_at_leader(&cfg);
            for k in 0..10 {
                net.propose_at_leader(format!("s{n}.{k}").as_bytes());
                net.run(2);
            }
            net.run(100);
            let l = net.leader().expect("a leader");
            assert_eq!(voters_of(&net, l), n as usize, "shrunk to {n}");
        }
        assert!(net.all_chosen());
        let l = net.leader().unwrap();
        assert_eq!(l, 1, "node 1 is the only voter left");
    }

    #[test]
    fn compacted_slots_make_a_lagging_node_install_a_snapshot() {
        let mut net = Net::new(3, 3, 9, |o| o.retain_decided = 4);
        net.run(100);
        let l = net.leader().unwrap();
        let lag = (l + 1) % 3;
        net.crash(lag);
        for k in 0..40 {
            assert!(net.propose(l, format!("c{k}").as_bytes()));
            net.run(1);
        }
        net.run(10);
        net.restart(lag);
        net.run(100);
        let top = *net.chosen.keys().last().unwrap();
        assert_eq!(net.nodes[lag].as_ref().unwrap().status().decided, top);
        assert!(net.snapshots >= 1, "caught up through a snapshot");
    }

    /// Each planted bug must produce an agreement violation under some seed.
    fn fault_breaks_agreement(set: fn(&mut crate::Faults)) -> bool {
        for seed in 0..300 {
            let r = std::panic::catch_unwind(|| {
                let mut net = Net::new(3, 3, seed, |o| {
                    set(&mut o.faults);
                    o.election_ticks = (6, 12);
                });
                net.loss = 0.2;
                for round in 0..40 {
                    net.run(3);
                    let i = net.rng.gen_range(0..3);
                    let _ = net.propose(i, format!("s{seed}r{round}").as_bytes());
                    if net.rng.gen_bool(0.1) {
                        let a = net.rng.gen_range(0..3);
                        net.crash(a);
                        net.run(2);
                        net.restart(a);
                    }
                }
            });
            if r.is_err() {
                return true;
            }
        }
        false
    }

    #[test]
    fn planted_faults_break_agreement() {
        assert!(
            fault_breaks_agreement(|f| f.skip_phase1 = true),
            "skip_phase1"
        );
        assert!(
            fault_breaks_agreement(|f| f.ignore_accepted = true),
            "ignore_accepted"
        );
        assert!(
            fault_breaks_agreement(|f| f.count_across_ballots = true),
            "count_across_ballots"
        );
    }
}
