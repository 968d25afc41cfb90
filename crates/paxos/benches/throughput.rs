//! Engine throughput: three engines wired in memory (instant delivery, instant persistence),
//! clients keeping the leader's proposal queue full of small commands. Prints commands and
//! slots decided per second. `BENCH_SECS` sets the measured time (default 5 s);
//! `BENCH_CMD_BYTES` the command size (default 16).
//!
//! Run: `cargo bench -p doozer-paxos`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use doozer_paxos::{
    Command, CommandId, Config, Engine, Message, NodeId, Options, PersistentState, Value,
};

struct Cluster {
    engines: Vec<Engine>,
    config: Config,
    wire: VecDeque<(NodeId, NodeId, Message)>,
    decided_cmds: u64,
    decided_slots: u64,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let ids: Vec<NodeId> = (1..=n as u128).map(NodeId).collect();
        let config = Config::with_voters(ids.iter().copied());
        let engines = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let opts = Options {
                    id: *id,
                    seed: i as u64,
                    // Node 1 times out first and leads.
                    election_ticks: if i == 0 { (2, 3) } else { (50, 60) },
                    max_pending: 65_536,
                    max_batch_cmds: 4096,
                    ..Options::default()
                };
                Engine::new(opts, PersistentState::empty(config.clone()))
            })
            .collect();
        Cluster {
            engines,
            config,
            wire: VecDeque::new(),
            decided_cmds: 0,
            decided_slots: 0,
        }
    }

    fn index(id: NodeId) -> usize {
        (id.0 - 1) as usize
    }

    /// Drains every engine once; persistence is instant, so everything is sent at once.
    fn flush(&mut self) {
        for i in 0..self.engines.len() {
            let e = &mut self.engines[i];
            let r = e.ready();
            let me = e.status().id;
            for (slot, value) in &r.decided {
                e.applied(*slot, &self.config);
                if i == 0 {
                    self.decided_slots += 1;
                    if let Value::Batch(cmds) = value {
                        self.decided_cmds += cmds.len() as u64;
                    }
                }
            }
            for (to, msg) in r.send_now.into_iter().chain(r.send_after_persist) {
                self.wire.push_back((me, to, msg));
            }
        }
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, msg)) = self.wire.pop_front() {
            self.engines[Self::index(to)].step(from, msg);
            if self.wire.is_empty() {
                self.flush();
            }
        }
    }
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cmd_bytes: usize = std::env::var("BENCH_CMD_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut c = Cluster::new(3);
    while !c.engines[0].status().is_leader {
        for e in &mut c.engines {
            e.tick();
        }
        c.flush();
        c.deliver_all();
    }
    let leader = NodeId(1);
    let data = Bytes::from(vec![b'x'; cmd_bytes]);
    let mut seq = 0u64;
    let run = Duration::from_secs(secs);
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < run {
        // Clients top the queue up; the engine closes batches when the pipeline has room.
        for _ in 0..4096 {
            seq += 1;
            let cmd = Command {
                id: CommandId { node: leader, seq },
                data: data.clone(),
            };
            if c.engines[0].propose(cmd).is_err() {
                break;
            }
        }
        rounds += 1;
        if rounds.is_multiple_of(16) {
            for e in &mut c.engines {
                e.tick();
            }
        }
        c.flush();
        c.deliver_all();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cmds = c.decided_cmds as f64 / elapsed;
    let slots = c.decided_slots as f64 / elapsed;
    println!(
        "paxos throughput (3 engines in memory, {cmd_bytes}-byte commands, batching): \
         {cmds:.0} commands/s, {slots:.0} slots/s, {:.1} commands/slot over {elapsed:.1} s",
        c.decided_cmds as f64 / c.decided_slots.max(1) as f64
    );
    assert!(c.decided_cmds > 0, "nothing decided");
}
