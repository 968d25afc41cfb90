//! A deterministic simulator for the Multi-Paxos engine, in the manner of TigerBeetle's VOPR
//! and FoundationDB's simulation: whole clusters of real engines over a simulated network
//! (loss, duplication, delay, reordering, partitions both ways and one way) and simulated disks
//! (records durable only once fsynced; a crash loses the rest), driven by one seeded RNG, with
//! every safety invariant checked at the step that could break it and liveness checked after
//! healing.
//!
//! - `world`: the loop, the driver contract (persist before send, feed self-messages back,
//!   apply decided slots, install snapshots), faults.
//! - `check`: agreement, validity, durability of promises and accepts, state digests,
//!   read-index linearizability.
//! - `machine`: the replicated state machine (dedupe by command id, membership commands).
//! - `net`, `node`, `workload`, `profile`: the pieces.
//!
//! `SIM_SEED=<n>` replays one seed with its event log; `SIM_SEEDS=<n>` sets how many run.

// Each test file uses a different part of this support module.
#![allow(dead_code)]

pub mod check;
pub mod machine;
pub mod net;
pub mod node;
pub mod profile;
pub mod workload;
pub mod world;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

// Not every test file uses every re-export.
#[allow(unused_imports)]
pub use check::Violation;
#[allow(unused_imports)]
pub use profile::{Planted, Profile, Shape};
#[allow(unused_imports)]
pub use world::{run_seed, Outcome, RunOptions};

/// A number from the environment, if set and valid.
pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// The profile seed `seed` runs with (drawn first from its RNG, as the world does).
pub fn profile_of(seed: u64) -> Profile {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Profile::random(&mut rng, Planted::default())
}

/// Runs one seed, turning a panic (an engine assertion, say) into a violation.
pub fn run_guarded(seed: u64, opts: RunOptions) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_seed(seed, opts))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".to_string());
            Outcome {
                seed,
                profile: String::from("(panicked)"),
                violation: Some(Violation {
                    tick: 0,
                    kind: "panic",
                    detail: text,
                }),
                trace_hash: 0,
                stats: Default::default(),
                log: Vec::new(),
            }
        }
    }
}

/// Runs `seeds` on every core; outcomes come back in the order of `seeds`.
pub fn run_seeds(seeds: &[u64], opts: RunOptions) -> Vec<Outcome> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; seeds.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= seeds.len() {
                    return;
                }
                let outcome = run_guarded(seeds[k], opts);
                results.lock().expect("no worker panics holding the lock")[k] = Some(outcome);
            });
        }
    });
    results
        .into_inner()
        .expect("workers finished")
        .into_iter()
        .map(|o| o.expect("every seed ran"))
        .collect()
}

/// Runs seeds `1..=max_seeds` in rounds until one reports a violation accepted by `counts`;
/// returns the lowest such seed's outcome and how many seeds ran.
pub fn find_violation(
    max_seeds: u64,
    opts: RunOptions,
    counts: impl Fn(&Violation) -> bool,
) -> (Option<Outcome>, u64) {
    let round = 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut first = 1;
    while first <= max_seeds {
        let last = (first + round - 1).min(max_seeds);
        let seeds: Vec<u64> = (first..=last).collect();
        let outcomes = run_seeds(&seeds, opts);
        if let Some(hit) = outcomes
            .into_iter()
            .find(|o| o.violation.as_ref().is_some_and(&counts))
        {
            return (Some(hit), last);
        }
        first = last + 1;
    }
    (None, max_seeds)
}

/// The failure report of one outcome.
pub fn report(outcome: &Outcome) -> String {
    let mut text = String::new();
    if let Some(v) = &outcome.violation {
        text.push_str(&format!(
            "sim seed {} VIOLATION {v}\n  profile: {}\n  stats: {:?}\n  replay: SIM_SEED={} cargo test -p doozer-paxos --test simulation -- --nocapture\n",
            outcome.seed, outcome.profile, outcome.stats, outcome.seed
        ));
        if !outcome.log.is_empty() {
            text.push_str("  last events:\n");
            for line in &outcome.log {
                text.push_str("    ");
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}
