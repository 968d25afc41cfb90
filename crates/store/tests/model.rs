//! Randomized comparison of the store against a plain in-memory model of Doozer's data model:
//! every commit's results and events, and reads (GET, GETDIR, STAT, WALK, WAIT) at random
//! retained revisions, across reopens. `SEED=n` replays one seed; `MODEL_SLOTS` sets the length.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use common::open;
use doozer_paxos::{Command, CommandId, NodeId, Value};
use doozer_proto::{path, ErrCode, Glob, ToErrCode};
use doozer_store::codec::encode_op;
use doozer_store::{ApplyResult, Batch, Event, Op, Store, FLAG_DEL, FLAG_NOP, FLAG_SET};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Tree = BTreeMap<String, (i64, Bytes)>;

#[derive(Default)]
struct Model {
    tree: Tree,
    rev: i64,
    /// The tree after each revision (index = rev).
    states: Vec<Tree>,
    events: Vec<Event>,
    done: HashMap<CommandId, ApplyResult>,
}

fn ancestors(p: &str) -> Vec<&str> {
    p.match_indices('/').skip(1).map(|(i, _)| &p[..i]).collect()
}

fn is_dir(t: &Tree, p: &str) -> bool {
    p == "/" || t.keys().any(|k| k.starts_with(&format!("{p}/")))
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![Tree::new()],
            ..Model::default()
        }
    }

    fn mutate(
        &mut self,
        p: &str,
        cas: i64,
        value: Option<Bytes>,
    ) -> Result<(), (ErrCode, &'static str)> {
        if path::validate(p).is_err() {
            return Err((ErrCode::BadPath, "bad path"));
        }
        let cur = match self.tree.get(p) {
            Some((r, _)) => *r,
            None if is_dir(&self.tree, p) => return Err((ErrCode::IsDir, "is a directory")),
            None if ancestors(p).iter().any(|a| self.tree.contains_key(*a)) => {
                return Err((ErrCode::NotDir, "not a directory"))
            }
            None => 0,
        };
        if !(cas == -1 || (cas >= 0 && cas >= cur)) {
            return Err((ErrCode::RevMismatch, "rev mismatch"));
        }
        match value {
            Some(v) => self.tree.insert(p.to_string(), (self.rev, v)),
            None => self.tree.remove(p),
        };
        Ok(())
    }

    fn apply(&mut self, c: &Command, op: &Op) -> (ApplyResult, Option<Event>) {
        if let Some(r) = self.done.get(&c.id) {
            return (*r, None);
        }
        self.rev += 1;
        let rev = self.rev;
        let (res, ev) = match op {
            Op::Nop => (
                Ok(()),
                Event {
                    rev,
                    path: "/".into(),
                    value: Bytes::new(),
                    flags: FLAG_NOP,
                },
            ),
            Op::Set {
                path,
                rev: cas,
                value,
            } => (
                self.mutate(path, *cas, Some(value.clone())),
                Event {
                    rev,
                    path: path.clone(),
                    value: value.clone(),
                    flags: FLAG_SET,
                },
            ),
            Op::Del { path, rev: cas } => (
                self.mutate(path, *cas, None),
                Event {
                    rev,
                    path: path.clone(),
                    value: Bytes::new(),
                    flags: FLAG_DEL,
                },
            ),
        };
        let (result, ev) = match res {
            Ok(()) => (ApplyResult::Ok { rev }, ev),
            Err((code, text)) => {
                let text = Bytes::from_static(text.as_bytes());
                self.tree.insert("/ctl/err".into(), (rev, text.clone()));
                let ev = Event {
                    rev,
                    path: "/ctl/err".into(),
                    value: text,
                    flags: FLAG_SET,
                };
                (ApplyResult::Err { rev, code }, ev)
            }
        };
        self.done.insert(c.id, result);
        self.states.push(self.tree.clone());
        self.events.push(ev.clone());
        (result, Some(ev))
    }

    fn get(&self, rev: i64, p: &str) -> Result<(Bytes, i64), ErrCode> {
        let t = &self.states[rev as usize];
        path::validate(p).map_err(|_| ErrCode::BadPath)?;
        match t.get(p) {
            Some((r, v)) => Ok((v.clone(), *r)),
            None if is_dir(t, p) => Err(ErrCode::IsDir),
            None => Ok((Bytes::new(), 0)),
        }
    }

    fn names(t: &Tree, p: &str) -> BTreeSet<String> {
        let pre = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        t.keys()
            .filter_map(|k| k.strip_prefix(&pre))
            .map(|rest| rest.split('/').next().unwrap().to_string())
            .collect()
    }

    fn getdir(&self, rev: i64, p: &str, off: i32) -> Result<String, ErrCode> {
        let t = &self.states[rev as usize];
        path::validate(p).map_err(|_| ErrCode::BadPath)?;
        if t.contains_key(p) {
            return Err(ErrCode::NotDir);
        }
        let names = Model::names(t, p);
        if names.is_empty() && p != "/" {
            return Err(ErrCode::NoEnt);
        }
        names.into_iter().nth(off as usize).ok_or(ErrCode::Range)
    }

    fn stat(&self, rev: i64, p: &str) -> (i64, i32) {
        let t = &self.states[rev as usize];
        if path::validate(p).is_err() {
            return (0, 0);
        }
        match t.get(p) {
            Some((r, v)) => (*r, v.len() as i32),
            None if is_dir(t, p) => (-2, Model::names(t, p).len() as i32),
            None => (0, 0),
        }
    }

    fn walk(&self, rev: i64, g: &Glob, off: i32) -> Result<(String, Bytes, i64), ErrCode> {
        let t = &self.states[rev as usize];
        let mut files: Vec<(&String, &(i64, Bytes))> =
            t.iter().filter(|(k, _)| g.matches(k)).collect();
        // Depth-first with sorted entries: compare component lists.
        files.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
        files
            .get(off as usize)
            .map(|(k, (r, v))| ((*k).clone(), v.clone(), *r))
            .ok_or(ErrCode::Range)
    }

    fn wait(&self, g: &Glob, from: i64) -> Option<Event> {
        self.events
            .iter()
            .find(|e| e.rev >= from && g.matches(&e.path))
            .cloned()
    }
}

fn code<T>(r: doozer_store::Result<T>) -> Result<T, ErrCode> {
    r.map_err(|e| e.err_code())
}

const NAMES: &[&str] = &["a", "b", "a-b", "a.c"];
const GLOBS: &[&str] = &[
    "/**",
    "/a/*",
    "/a/**",
    "/*",
    "/a*/b",
    "/?",
    "/ctl/err",
    "/",
    "/b/a-b/**",
    "/**/a",
];

fn random_path(rng: &mut StdRng) -> String {
    if rng.gen_ratio(1, 40) {
        return ["/a_b", "a", "/a//b", "", "/a/"][rng.gen_range(0..5)].to_string();
    }
    let depth = rng.gen_range(1..=3);
    (0..depth)
        .map(|_| format!("/{}", NAMES[rng.gen_range(0..NAMES.len())]))
        .collect()
}

fn random_op(rng: &mut StdRng, m: &Model) -> Op {
    let p = random_path(rng);
    let cur = m.tree.get(&p).map(|(r, _)| *r).unwrap_or(0);
    let cas = match rng.gen_range(0..6) {
        0 => 0,
        1 => -1,
        2 | 3 => cur,
        4 => rng.gen_range(-3..=m.rev + 2),
        _ => cur + 1,
    };
    match rng.gen_range(0..10) {
        0 => Op::Nop,
        1..=3 => Op::Del { path: p, rev: cas },
        _ => Op::Set {
            path: p,
            rev: cas,
            value: Bytes::from(vec![b'v'; rng.gen_range(0..20)]),
        },
    }
}

fn check_reads(rng: &mut StdRng, s: &Store, m: &Model) {
    assert_eq!(s.rev(), m.rev);
    let oldest = s.oldest_rev();
    assert!(oldest >= 0 && oldest <= m.rev);
    for _ in 0..20 {
        let rev = rng.gen_range(oldest..=m.rev);
        let at = if rng.gen_bool(0.3) { None } else { Some(rev) };
        let rev = at.unwrap_or(m.rev);
        let p = if rng.gen_bool(0.2) {
            "/".to_string()
        } else {
            random_path(rng)
        };
        assert_eq!(code(s.get(&p, at)), m.get(rev, &p), "GET {p} at {rev}");
        assert_eq!(
            s.stat(&p, at).unwrap(),
            m.stat(rev, &p),
            "STAT {p} at {rev}"
        );
        let off = rng.gen_range(-1..4);
        let want = if off < 0 {
            Err(ErrCode::Range)
        } else {
            m.getdir(rev, &p, off)
        };
        let got = code(s.getdir(&p, off, at));
        // A negative offset is RANGE unless the path itself is bad.
        if !(off < 0 && got == Err(ErrCode::BadPath)) {
            assert_eq!(got, want, "GETDIR {p} {off} at {rev}");
        }
        let g = Glob::new(GLOBS[rng.gen_range(0..GLOBS.len())]).unwrap();
        let off = rng.gen_range(0..6);
        assert_eq!(
            code(s.walk(&g, off, at)),
            m.walk(rev, &g, off),
            "WALK {} {off} at {rev}",
            g.as_str()
        );
        let from = rng.gen_range(oldest + 1..=m.rev + 1);
        assert_eq!(
            s.wait(&g, from).unwrap(),
            m.wait(&g, from),
            "WAIT {} from {from}",
            g.as_str()
        );
    }
    if oldest > 0 {
        assert_eq!(code(s.get("/a", Some(oldest - 1))), Err(ErrCode::TooLate));
    }
}

fn run(seed: u64, slots: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let hist = rng.gen_range(20..200);
    let mut s = open(dir.path(), hist);
    let mut m = Model::new();
    let mut sent: Vec<(Command, Op)> = Vec::new();
    let mut seq = 0;
    let mut slot = 0;
    for step in 0..slots {
        let mut batch = Vec::new();
        let n = rng.gen_range(0..4);
        for _ in 0..n {
            slot += 1;
            let value = if rng.gen_ratio(1, 8) {
                Value::Noop
            } else {
                // Now and then a slot big enough to fill several `revs` rows.
                let n = if rng.gen_ratio(1, 15) {
                    rng.gen_range(40..120)
                } else {
                    rng.gen_range(1..6)
                };
                let cmds: Vec<(Command, Op)> = (0..n)
                    .map(|_| {
                        if !sent.is_empty() && rng.gen_ratio(1, 10) {
                            sent[rng.gen_range(0..sent.len())].clone()
                        } else {
                            seq += 1;
                            let op = random_op(&mut rng, &m);
                            let c = Command {
                                id: CommandId {
                                    node: NodeId(seed as u128),
                                    seq,
                                },
                                data: encode_op(&op),
                            };
                            sent.push((c.clone(), op.clone()));
                            (c, op)
                        }
                    })
                    .collect();
                Value::Batch(cmds.into_iter().map(|(c, _)| c).collect())
            };
            batch.push((slot, value));
        }
        let mut want_results = Vec::new();
        let mut want_events = Vec::new();
        for (_, v) in &batch {
            if let Value::Batch(cmds) = v {
                for c in cmds {
                    let op = doozer_store::codec::decode_op(&c.data).unwrap();
                    let (r, ev) = m.apply(c, &op);
                    want_results.push((c.id, r));
                    want_events.extend(ev);
                }
            }
        }
        let got = s
            .commit(Batch {
                records: vec![],
                decided: batch,
            })
            .unwrap();
        assert_eq!(got.results, want_results, "seed {seed} step {step}");
        assert_eq!(got.events, want_events, "seed {seed} step {step}");
        assert_eq!((got.rev, got.applied), (m.rev, slot));
        check_reads(&mut rng, &s, &m);
        if rng.gen_ratio(1, 50) {
            drop(s);
            s = open(dir.path(), hist);
            check_reads(&mut rng, &s, &m);
        }
    }
}

#[test]
fn store_matches_model() {
    let slots = std::env::var("MODEL_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seeds: Vec<u64> = match std::env::var("SEED").ok().and_then(|v| v.parse().ok()) {
        Some(s) => vec![s],
        None => (1..=8).collect(),
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        run(seed, slots);
    }
}
