//! The linearizability checker for the `register` workload.
//!
//! The algorithm is Wing & Gong's, as improved by Lowe and used by Porcupine: the history of
//! one key becomes a list of call and return entries in time order; a depth-first search
//! repeatedly picks a pending call that comes before the first return in the list, applies
//! it to the register model, and removes ("lifts") it from the list, backtracking when it
//! meets the return of an operation it has not linearized yet. States already explored,
//! identified by (set of linearized operations, register value), are memoised, which is
//! what makes the search fast in practice.
//!
//! Keys are independent registers, so the history is split per key (P-compositionality) and
//! each key is searched on its own, on as many threads as the machine has.
//!
//! Operations whose outcome is unknown (`ok: null`) get a return time of infinity: they may
//! take effect at any point after their call, or never (linearized last, where nothing can
//! observe them). Failed operations (`ok: false`) certainly did not happen and are ignored,
//! as are reads whose answer never came. Before the search, an unknown write or CAS whose
//! value nobody ever observed (no read returned it, no CAS expected it) is dropped: if the
//! rest is linearizable it can be placed last; and it can never help a linearization, since
//! no operation depends on the register holding its value. This keeps long partitions,
//! which produce many timed-out writes, from blowing up the search.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Op, OpKind};

/// Limits of the search.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Most memoised states per key before the key's verdict becomes
    /// [`KeyVerdict::Unknown`] (memory is roughly this times the key's ops / 8 bytes).
    pub max_states: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_states: 2_000_000,
        }
    }
}

/// What the search found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable(Anomaly),
    /// The search gave up (state budget exhausted); nothing is known.
    Unknown {
        /// Why it gave up.
        reason: String,
    },
}

/// Where the search for a key got stuck, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The key.
    pub key: String,
    /// Index in the checked history of the operation that could not be linearized: at the
    /// deepest point the search reached, this operation had returned but no valid point for
    /// it remained.
    pub op_index: usize,
    /// How many of the key's operations were linearized at that deepest point.
    pub linearized: usize,
    /// The register's value at that point (`None`: missing).
    pub state: Option<String>,
    /// The key's operations that were still pending (called, not linearized) at that
    /// point, as indices in the checked history; one of them had to come first.
    pub pending: Vec<usize>,
    /// The last operations linearized before that point, most recent first (at most 5):
    /// the evidence for the register's value there.
    pub recent: Vec<usize>,
}

/// The checker's result for one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations of the key in the history.
    pub ops: usize,
    /// Operations searched (after dropping failed ops, unanswered reads and unobserved
    /// unknown writes).
    pub searched: usize,
    /// Memoised states the search visited.
    pub states: usize,
    /// The verdict.
    pub verdict: KeyVerdict,
}

/// The checker's result for a whole history.
#[derive(Debug, Clone)]
pub struct Report {
    /// One entry per key, sorted by key.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// True when every key is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .iter()
            .all(|k| k.verdict == KeyVerdict::Linearizable)
    }

    /// The anomaly whose culprit operation was called earliest, if any.
    pub fn first_anomaly<'a>(&'a self, history: &[Op]) -> Option<&'a Anomaly> {
        self.keys
            .iter()
            .filter_map(|k| match &k.verdict {
                KeyVerdict::NotLinearizable(a) => Some(a),
                _ => None,
            })
            .min_by_key(|a| history.get(a.op_index).map(|o| o.call))
    }

    /// Keys whose search gave up.
    pub fn unknown_keys(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, KeyVerdict::Unknown { .. }))
    }
}

/// Checks every key of `history` (only `read`, `write` and `cas` ops matter; the register
/// starts missing). Keys are checked in parallel.
pub fn check(history: &[Op], opts: CheckOptions) -> Report {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let jobs: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, idx)) = jobs.get(i) else { break };
                let r = check_key(key, history, idx, opts);
                results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    let mut keys = results.into_inner().unwrap_or_else(|p| p.into_inner());
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Report { keys }
}

/// A register operation, values interned (0 = missing).
#[derive(Debug, Clone, Copy)]
enum Step {
    Read(u32),
    Write(u32),
    Cas {
        expect: u32,
        value: u32,
    },
    /// A CAS of unknown outcome: succeeds if the value matches, else leaves it unchanged
    /// (which is the same as never happening).
    CasMaybe {
        expect: u32,
        value: u32,
    },
}

impl Step {
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expect, value } => (state == expect).then_some(value),
            Step::CasMaybe { expect, value } => Some(if state == expect { value } else { state }),
        }
    }
}

/// One operation ready for the search.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    /// Index in the full history.
    index: usize,
    step: Step,
    call: u64,
    /// `u64::MAX` for unknown outcomes.
    ret: u64,
}

/// The ops of one key that take part in the search, and the value table.
struct Prepped {
    ops: Vec<Prepared>,
    values: Vec<Option<String>>,
}

/// Drops what cannot constrain the search and interns values. With `prune`, unknown writes
/// and CASes whose value is never observed are dropped too (see the module docs).
fn prepare(history: &[Op], idx: &[usize], prune: bool) -> Prepped {
    let mut observed: HashSet<Option<&str>> = HashSet::new();
    for &i in idx {
        let op = &history[i];
        match (op.op, op.ok) {
            (OpKind::Read, Some(true)) => {
                observed.insert(op.value.as_deref());
            }
            (OpKind::Cas, Some(true) | None) => {
                observed.insert(op.expect.as_deref());
            }
            _ => {}
        }
    }
    let mut table: HashMap<Option<String>, u32> = HashMap::new();
    let mut values = vec![None];
    table.insert(None, 0);
    let mut intern = |v: &Option<String>| -> u32 {
        if let Some(&id) = table.get(v) {
            return id;
        }
        let id = values.len() as u32;
        values.push(v.clone());
        table.insert(v.clone(), id);
        id
    };
    let mut ops = Vec::new();
    for &i in idx {
        let op = &history[i];
        let unknown = op.ok.is_none();
        let step = match (op.op, op.ok) {
            (_, Some(false)) | (OpKind::Read, None) => continue,
            (OpKind::Write | OpKind::Cas, None)
                if prune && !observed.contains(&op.value.as_deref()) =>
            {
                continue
            }
            (OpKind::Read, Some(true)) => Step::Read(intern(&op.value)),
            (OpKind::Write, _) => Step::Write(intern(&op.value)),
            (OpKind::Cas, Some(true)) => Step::Cas {
                expect: intern(&op.expect),
                value: intern(&op.value),
            },
            (OpKind::Cas, None) => Step::CasMaybe {
                expect: intern(&op.expect),
                value: intern(&op.value),
            },
        };
        let ret = match (unknown, op.ret) {
            (false, Some(r)) => r,
            // Outcome unknown (or a return time missing): it may take effect at any time.
            _ => u64::MAX,
        };
        ops.push(Prepared {
            index: i,
            step,
            call: op.call,
            ret,
        });
    }
    Prepped { ops, values }
}

fn check_key(key: &str, history: &[Op], idx: &[usize], opts: CheckOptions) -> KeyReport {
    let prepped = prepare(history, idx, true);
    let (verdict, states) = search(key, &prepped, opts);
    KeyReport {
        key: key.to_string(),
        ops: idx.len(),
        searched: prepped.ops.len(),
        states,
        verdict,
    }
}

/// A fixed-size bit set, the "linearized" part of a memoised state.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The deepest dead end of the search, for the report.
struct Deepest {
    /// Ops linearized there.
    depth: usize,
    /// The prepared op whose return blocked.
    op: usize,
    /// The register's value there.
    state: u32,
    /// History indices of the ops pending there.
    pending: Vec<usize>,
    /// History indices of the last ops linearized, most recent first.
    recent: Vec<usize>,
}

/// The search over one key's prepared ops. Returns the verdict and the number of
/// memoised states.
fn search(key: &str, p: &Prepped, opts: CheckOptions) -> (KeyVerdict, usize) {
    let n = p.ops.len();
    if n == 0 {
        return (KeyVerdict::Linearizable, 0);
    }
    // Entries 0..n are calls, n..2n returns; node 2n is the list head.
    let head = 2 * n;
    let mut order: Vec<usize> = (0..2 * n).collect();
    let time = |e: usize| {
        if e < n {
            p.ops[e].call
        } else {
            p.ops[e - n].ret
        }
    };
    // Calls before returns at equal times: touching operations count as concurrent, which
    // only ever allows more linearizations (no false alarms from clock granularity).
    order.sort_by_key(|&e| (time(e), e >= n, e % n));
    let none = usize::MAX;
    let mut next = vec![none; 2 * n + 1];
    let mut prev = vec![none; 2 * n + 1];
    let mut last = head;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [e, e + n] {
            next[prev[x]] = next[x];
            if next[x] != none {
                prev[next[x]] = prev[x];
            }
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [e + n, e] {
            next[prev[x]] = x;
            if next[x] != none {
                prev[next[x]] = x;
            }
        }
    };

    let mut cache: HashSet<(Bits, u32)> = HashSet::new();
    let mut linearized = Bits::new(n);
    let mut state = 0u32;
    let mut stack: Vec<(usize, u32)> = Vec::new();
    // The deepest point reached, for the report: (depth, blocking op, state, pending ops).
    let mut deepest: Option<Deepest> = None;
    let mut entry = next[head];
    while next[head] != none {
        if cache.len() > opts.max_states {
            return (
                KeyVerdict::Unknown {
                    reason: format!(
                        "gave up after {} states ({} ops, {} linearized at most)",
                        cache.len(),
                        n,
                        deepest.as_ref().map_or(0, |d| d.depth)
                    ),
                },
                cache.len(),
            );
        }
        if entry < n {
            if let Some(new_state) = p.ops[entry].step.apply(state) {
                let mut lin = linearized.clone();
                lin.set(entry);
                if cache.insert((lin, new_state)) {
                    stack.push((entry, state));
                    linearized.set(entry);
                    state = new_state;
                    lift(&mut next, &mut prev, entry);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // The return of an op not yet linearized: this path is a dead end.
            if deepest.as_ref().is_none_or(|d| stack.len() > d.depth) {
                let mut pending = Vec::new();
                let mut e = next[head];
                while e != none && e != entry {
                    if e < n {
                        pending.push(p.ops[e].index);
                    }
                    e = next[e];
                }
                let recent = stack
                    .iter()
                    .rev()
                    .take(5)
                    .map(|(e, _)| p.ops[*e].index)
                    .collect();
                deepest = Some(Deepest {
                    depth: stack.len(),
                    op: entry - n,
                    state,
                    pending,
                    recent,
                });
            }
            let Some((e, s)) = stack.pop() else {
                let Deepest {
                    depth,
                    op,
                    state: st,
                    pending,
                    recent,
                } = deepest.expect("set just above");
                return (
                    KeyVerdict::NotLinearizable(Anomaly {
                        key: key.to_string(),
                        op_index: p.ops[op].index,
                        linearized: depth,
                        state: p.values[st as usize].clone(),
                        pending,
                        recent,
                    }),
                    cache.len(),
                );
            };
            state = s;
            linearized.clear(e);
            unlift(&mut next, &mut prev, e);
            entry = next[e];
        }
    }
    (KeyVerdict::Linearizable, cache.len())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A brute-force reference checker for small histories.
    use super::*;

    /// Tries every order of the prepared ops (no pruning) that respects real time.
    pub fn brute_force(history: &[Op]) -> bool {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.key.as_str()).or_default().push(i);
        }
        by_key.values().all(|idx| {
            let p = prepare(history, idx, false);
            let mut used = vec![false; p.ops.len()];
            permute(&p.ops, &mut used, 0)
        })
    }

    fn permute(ops: &[Prepared], used: &mut [bool], state: u32) -> bool {
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..ops.len() {
            if used[i] {
                continue;
            }
            // i may go next only if no unused op returned before i was called.
            let blocked = (0..ops.len()).any(|j| !used[j] && j != i && ops[j].ret < ops[i].call);
            if blocked {
                continue;
            }
            if let Some(s) = ops[i].step.apply(state) {
                used[i] = true;
                let ok = permute(ops, used, s);
                used[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::testing::brute_force;
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn op(
        client: u64,
        kind: OpKind,
        value: Option<&str>,
        expect: Option<&str>,
        ok: Option<bool>,
        call: u64,
        ret: Option<u64>,
    ) -> Op {
        Op {
            client,
            op: kind,
            key: "k".into(),
            value: value.map(String::from),
            expect: expect.map(String::from),
            ok,
            call,
            ret: if ok.is_none() { None } else { ret },
        }
    }
    fn w(c: u64, v: &str, call: u64, ret: u64) -> Op {
        op(c, OpKind::Write, Some(v), None, Some(true), call, Some(ret))
    }
    fn w_unknown(c: u64, v: &str, call: u64) -> Op {
        op(c, OpKind::Write, Some(v), None, None, call, None)
    }
    fn r(c: u64, v: Option<&str>, call: u64, ret: u64) -> Op {
        op(c, OpKind::Read, v, None, Some(true), call, Some(ret))
    }
    fn cas(c: u64, e: Option<&str>, v: &str, ok: Option<bool>, call: u64, ret: u64) -> Op {
        op(c, OpKind::Cas, Some(v), e, ok, call, Some(ret))
    }

    fn linearizable(h: &[Op]) -> bool {
        let rep = check(h, CheckOptions::default());
        assert!(rep.unknown_keys().next().is_none(), "search gave up");
        let brute = brute_force(h);
        assert_eq!(
            rep.is_linearizable(),
            brute,
            "checker and brute force disagree"
        );
        rep.is_linearizable()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            r(1, None, 0, 1),
            w(1, "a", 2, 3),
            r(2, Some("a"), 4, 5),
            cas(1, Some("a"), "b", Some(true), 6, 7),
            r(2, Some("b"), 8, 9),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn stale_read_after_write_is_caught() {
        // The write returned before the read began, yet the read saw the old value.
        let h = [w(1, "a", 0, 10), w(1, "b", 11, 20), r(2, Some("a"), 21, 30)];
        assert!(!linearizable(&h));
        let rep = check(&h, CheckOptions::default());
        let a = rep.first_anomaly(&h).expect("an anomaly");
        assert_eq!(a.op_index, 2, "the stale read is the culprit: {a:?}");
        assert_eq!(a.state.as_deref(), Some("b"));
        assert_eq!(
            a.recent,
            [1, 0],
            "the writes that explain the register's value"
        );
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        // Both reads overlap the write: one saw it, one did not, in an order that works.
        let h = [
            w(1, "a", 0, 5),
            w(1, "b", 10, 40),
            r(2, Some("b"), 15, 20),
            r(3, Some("a"), 12, 18),
        ];
        assert!(linearizable(&h));
        // But once a read returned "b", a later read cannot go back to "a".
        let h = [
            w(1, "a", 0, 5),
            w(1, "b", 10, 40),
            r(2, Some("b"), 15, 20),
            r(3, Some("a"), 21, 30),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn failed_ops_are_ignored_and_cas_needs_its_expected_value() {
        let h = [
            w(1, "a", 0, 1),
            cas(2, Some("zzz"), "c", Some(false), 2, 3),
            op(3, OpKind::Write, Some("d"), None, Some(false), 2, Some(3)),
            r(1, Some("a"), 4, 5),
        ];
        assert!(linearizable(&h));
        // A CAS that claims success although the register never held its expected value.
        let h = [
            w(1, "a", 0, 1),
            cas(2, Some("x"), "c", Some(true), 2, 3),
            r(1, Some("c"), 4, 5),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_write_may_have_happened() {
        // The write timed out, but a later read saw it: it happened.
        let h = [
            w(1, "a", 0, 1),
            w_unknown(2, "b", 2),
            r(3, Some("b"), 100, 101),
        ];
        assert!(linearizable(&h));
        // ... or it did not happen at all.
        let h = [
            w(1, "a", 0, 1),
            w_unknown(2, "b", 2),
            r(3, Some("a"), 100, 101),
        ];
        assert!(linearizable(&h));
        // It may even take effect long after its client gave up, between two reads.
        let h = [
            w(1, "a", 0, 1),
            w_unknown(2, "b", 2),
            r(3, Some("a"), 100, 101),
            r(3, Some("b"), 200, 201),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_call() {
        let h = [
            w(1, "a", 0, 1),
            r(3, Some("b"), 10, 11),
            w_unknown(2, "b", 20),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_write_takes_effect_once() {
        // After b was seen and then overwritten by c, b cannot come back.
        let h = [
            w_unknown(2, "b", 0),
            r(3, Some("b"), 10, 11),
            w(1, "c", 20, 21),
            r(3, Some("b"), 30, 31),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_cas_applies_only_on_a_match() {
        // cas(a->b) of unknown fate; the register held "x" throughout, so it cannot have
        // applied, and a read of b is an anomaly.
        let h = [
            w(1, "x", 0, 1),
            op(2, OpKind::Cas, Some("b"), Some("a"), None, 2, None),
            r(3, Some("b"), 10, 11),
        ];
        assert!(!linearizable(&h));
        // With "a" in the register at some point after its call, it may have applied.
        let h = [
            w(1, "x", 0, 1),
            op(2, OpKind::Cas, Some("b"), Some("a"), None, 2, None),
            w(1, "a", 5, 6),
            r(3, Some("b"), 10, 11),
        ];
        assert!(linearizable(&h));
        // Chains of unknown CASes: a -> b -> c, observed at the end.
        let h = [
            w(1, "a", 0, 1),
            op(2, OpKind::Cas, Some("c"), Some("b"), None, 2, None),
            op(3, OpKind::Cas, Some("b"), Some("a"), None, 3, None),
            r(4, Some("c"), 10, 11),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn pruning_keeps_unknown_writes_a_cas_depends_on() {
        // Nobody read "b", but a CAS expected it and then "c" was read: b must have
        // happened. Pruning b as "unobserved" would produce a false alarm.
        let h = [
            w(1, "a", 0, 1),
            w_unknown(2, "b", 2),
            op(3, OpKind::Cas, Some("c"), Some("b"), None, 3, None),
            r(4, Some("c"), 10, 11),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![w(1, "a", 0, 10), r(2, Some("a"), 20, 30)];
        let mut other = r(3, Some("zz"), 5, 6);
        other.key = "other".into();
        h.push(other);
        let rep = check(&h, CheckOptions::default());
        assert!(!rep.is_linearizable());
        let bad: Vec<_> = rep
            .keys
            .iter()
            .filter(|k| k.verdict != KeyVerdict::Linearizable)
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(bad, ["other"]);
        assert_eq!(rep.first_anomaly(&h).unwrap().op_index, 2);
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_a_verdict() {
        // Twenty unknown writes, each observed by one of twenty concurrent reads: many
        // interleavings to explore.
        let h: Vec<Op> = (0..20)
            .map(|i| w_unknown(i, &format!("v{i}"), 0))
            .chain((0..20).map(|i| r(100 + i, Some(&format!("v{i}")), 10, 1000)))
            .collect();
        let rep = check(&h, CheckOptions { max_states: 3 });
        assert!(matches!(rep.keys[0].verdict, KeyVerdict::Unknown { .. }));
        assert!(!rep.is_linearizable());
    }

    /// A history produced by running ops against a real sequential register at random
    /// instants between their calls and returns; some writes lose their answer.
    pub(crate) fn generate(rng: &mut ChaCha8Rng, clients: u64, ops: usize, keys: usize) -> Vec<Op> {
        // Each client's next free time; each op: call, linearization point, return.
        let mut free = vec![0u64; clients as usize];
        let mut planned = Vec::new();
        for n in 0..ops {
            let c = rng.gen_range(0..clients) as usize;
            let call = free[c] + rng.gen_range(0..20);
            let lin = call + rng.gen_range(0..30);
            let ret = lin + rng.gen_range(0..30);
            free[c] = ret + 1;
            let key = format!("k{}", rng.gen_range(0..keys));
            planned.push((lin, n, c as u64, key, call, ret));
        }
        planned.sort();
        let mut regs: HashMap<String, Option<String>> = HashMap::new();
        let mut out = Vec::new();
        for (_, n, client, key, call, ret) in planned {
            let reg = regs.entry(key.clone()).or_default();
            let lost = rng.gen_bool(0.1);
            let mut o = Op {
                client,
                op: OpKind::Read,
                key,
                value: None,
                expect: None,
                ok: Some(true),
                call,
                ret: Some(ret),
            };
            match rng.gen_range(0..3) {
                0 => {
                    o.value = reg.clone();
                    if lost {
                        o.ok = None;
                        o.ret = None;
                        o.value = None;
                    }
                }
                1 => {
                    o.op = OpKind::Write;
                    o.value = Some(format!("v{n}"));
                    // A lost write may have applied or not.
                    if !lost || rng.gen_bool(0.5) {
                        *reg = o.value.clone();
                    }
                    if lost {
                        o.ok = None;
                        o.ret = None;
                    }
                }
                _ => {
                    o.op = OpKind::Cas;
                    o.value = Some(format!("v{n}"));
                    // Mostly expect the current value, sometimes a stale guess.
                    o.expect = if rng.gen_bool(0.7) {
                        reg.clone()
                    } else {
                        Some(format!("v{}", rng.gen_range(0..n.max(1))))
                    };
                    let matches = o.expect == *reg;
                    if lost {
                        o.ok = None;
                        o.ret = None;
                        if matches && rng.gen_bool(0.5) {
                            *reg = o.value.clone();
                        }
                    } else {
                        o.ok = Some(matches);
                        if matches {
                            *reg = o.value.clone();
                        }
                    }
                }
            }
            out.push(o);
        }
        out.sort_by_key(|o| o.call);
        out
    }

    #[test]
    fn small_random_histories_agree_with_brute_force() {
        let seeds: u64 = std::env::var("JEPSEN_CHECKER_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(400);
        let (mut seen_bad, mut seen_good) = (0, 0);
        for seed in 0..seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut h = generate(&mut rng, 3, 7, 1);
            assert!(
                linearizable(&h),
                "seed {seed}: generated history must be linearizable"
            );
            // Mutate one op at random; the verdict may go either way, but the checker must
            // agree with brute force.
            let i = rng.gen_range(0..h.len());
            match rng.gen_range(0..3) {
                0 => h[i].value = Some(format!("v{}", rng.gen_range(0..7))),
                1 => h[i].value = None,
                _ => {
                    let t = rng.gen_range(0..200);
                    h[i].call = t;
                    if let Some(r) = h[i].ret.as_mut() {
                        *r = t + 1;
                    }
                }
            }
            if linearizable(&h) {
                seen_good += 1;
            } else {
                seen_bad += 1;
            }
        }
        // The mutations must exercise both outcomes, or the comparison proves little.
        assert!(
            seen_bad > seeds / 10 && seen_good > seeds / 10,
            "{seen_bad} bad, {seen_good} good"
        );
    }

    #[test]
    fn large_random_histories_are_linearizable_and_reads_from_the_future_are_not() {
        let ops: usize = std::env::var("JEPSEN_CHECKER_OPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5000);
        for seed in 0..4 {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let mut h = generate(&mut rng, 10, ops, 3);
            let rep = check(&h, CheckOptions::default());
            assert!(rep.is_linearizable(), "seed {seed}: {:?}", rep.keys);
            // Plant a read that returns a value written only after the read returned.
            let (ri, wi) = (0..h.len())
                .flat_map(|ri| (0..h.len()).map(move |wi| (ri, wi)))
                .find(|&(ri, wi)| {
                    let (r, w) = (&h[ri], &h[wi]);
                    r.op == OpKind::Read
                        && r.ok == Some(true)
                        && w.op == OpKind::Write
                        && w.ok == Some(true)
                        && w.key == r.key
                        && r.ret.is_some_and(|t| t + 50 < w.call)
                })
                .expect("a read and a later write");
            h[ri].value = h[wi].value.clone();
            let rep = check(&h, CheckOptions::default());
            assert!(
                !rep.is_linearizable(),
                "seed {seed}: planted anomaly missed"
            );
            let a = rep.first_anomaly(&h).expect("anomaly");
            assert_eq!(a.key, h[ri].key);
        }
    }
}
