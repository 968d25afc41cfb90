//! Plants one protocol bug at a time and asserts the simulator's checkers catch it within a
//! bounded number of seeds. A checker that can't fail proves nothing.
//!
//! `SIM_PLANTED_SEEDS=<n>` raises the bound (default 300 seeds per bug).

mod sim;

use doozer_paxos::Faults;
use sim::{Planted, RunOptions, Violation};

const DEFAULT_MAX_SEEDS: u64 = 300;

/// Safety violations only: a planted bug must be caught as a broken invariant, not as a
/// stall or a crash of the engine.
fn is_safety(v: &Violation) -> bool {
    matches!(
        v.kind,
        "agreement"
            | "validity"
            | "durability"
            | "read-index"
            | "state"
            | "duplicate"
            | "quorum"
            | "ballot"
            | "alpha"
            | "stability"
            | "phase1"
    )
}

fn assert_caught(name: &str, planted: Planted) {
    let max = sim::env_u64("SIM_PLANTED_SEEDS").unwrap_or(DEFAULT_MAX_SEEDS);
    let opts = RunOptions {
        planted,
        ..RunOptions::default()
    };
    let (hit, ran) = sim::find_violation(max, opts, is_safety);
    match hit {
        Some(outcome) => {
            let v = outcome.violation.as_ref().expect("a hit has a violation");
            eprintln!(
                "planted {name}: caught at seed {} (after {ran} seeds): {v}",
                outcome.seed
            );
        }
        None => panic!("planted {name}: no safety violation in {ran} seeds"),
    }
}

#[test]
fn catches_skip_phase1() {
    let engine = Faults {
        skip_phase1: true,
        ..Faults::default()
    };
    assert_caught(
        "skip_phase1",
        Planted {
            engine,
            ..Planted::default()
        },
    );
}

#[test]
fn catches_ignore_accepted() {
    let engine = Faults {
        ignore_accepted: true,
        ..Faults::default()
    };
    assert_caught(
        "ignore_accepted",
        Planted {
            engine,
            ..Planted::default()
        },
    );
}

#[test]
fn catches_count_across_ballots() {
    let engine = Faults {
        count_across_ballots: true,
        ..Faults::default()
    };
    assert_caught(
        "count_across_ballots",
        Planted {
            engine,
            ..Planted::default()
        },
    );
}

#[test]
fn catches_send_before_persist() {
    let engine = Faults {
        send_before_persist: true,
        ..Faults::default()
    };
    assert_caught(
        "send_before_persist",
        Planted {
            engine,
            ..Planted::default()
        },
    );
}

#[test]
fn catches_acceptor_forgetting_its_promise_on_restart() {
    assert_caught(
        "forget_promise",
        Planted {
            forget_promise: true,
            ..Planted::default()
        },
    );
}

// The sim-level plants below prove the checkers that no engine fault exercises.

#[test]
fn liveness_checker_catches_a_node_left_cut_off() {
    let max = sim::env_u64("SIM_PLANTED_SEEDS").unwrap_or(DEFAULT_MAX_SEEDS);
    let planted = Planted {
        never_heal: true,
        ..Planted::default()
    };
    let opts = RunOptions {
        planted,
        ..RunOptions::default()
    };
    let (hit, ran) = sim::find_violation(max, opts, |v| v.kind == "liveness");
    let outcome = hit.unwrap_or_else(|| panic!("never_heal: no liveness violation in {ran} seeds"));
    eprintln!("planted never_heal: caught at seed {}", outcome.seed);
}

#[test]
fn validity_checker_catches_values_nobody_proposed() {
    let planted = Planted {
        corrupt_proposals: true,
        ..Planted::default()
    };
    assert_caught("corrupt_proposals", planted);
}

// Each checker on its own: with the others silenced, the checker named must still catch the
// plant (so none of them is dead code hiding behind another).

/// A plant of one engine fault, set by `set`.
fn engine_fault(set: impl FnOnce(&mut Faults)) -> Planted {
    let mut engine = Faults::default();
    set(&mut engine);
    Planted {
        engine,
        ..Planted::default()
    }
}

fn assert_caught_by(name: &str, planted: Planted, kind: &'static [&'static str]) {
    let max = sim::env_u64("SIM_PLANTED_SEEDS").unwrap_or(DEFAULT_MAX_SEEDS);
    let opts = RunOptions {
        planted,
        only: Some(kind),
        ..RunOptions::default()
    };
    let (hit, ran) = sim::find_violation(max, opts, |v| kind.contains(&v.kind));
    let outcome = hit.unwrap_or_else(|| panic!("{name}: no {kind:?} violation in {ran} seeds"));
    let v = outcome.violation.as_ref().expect("a hit has a violation");
    eprintln!(
        "planted {name}: {kind:?} checker caught it at seed {}: {v}",
        outcome.seed
    );
}

#[test]
fn quorum_checker_catches_votes_counted_across_ballots() {
    assert_caught_by(
        "count_across_ballots",
        engine_fault(|f| f.count_across_ballots = true),
        &["quorum"],
    );
}

#[test]
fn quorum_checker_catches_accepts_counted_before_durable() {
    assert_caught_by(
        "send_before_persist",
        engine_fault(|f| f.send_before_persist = true),
        &["quorum"],
    );
}

#[test]
fn agreement_checker_catches_a_leader_skipping_phase1() {
    assert_caught_by(
        "skip_phase1",
        engine_fault(|f| f.skip_phase1 = true),
        &["agreement"],
    );
}

#[test]
fn read_index_checker_catches_a_leader_skipping_phase1() {
    assert_caught_by(
        "skip_phase1",
        engine_fault(|f| f.skip_phase1 = true),
        &["read-index"],
    );
}

#[test]
fn durability_checker_catches_a_forgotten_promise() {
    let planted = Planted {
        forget_promise: true,
        ..Planted::default()
    };
    assert_caught_by("forget_promise", planted, &["durability"]);
}

#[test]
fn alpha_checker_catches_a_leader_past_the_known_configs() {
    let planted = Planted {
        engine_alpha_too_big: true,
        ..Planted::default()
    };
    assert_caught_by("engine_alpha_too_big", planted, &["alpha"]);
}

#[test]
fn state_checker_catches_a_diverging_state_machine() {
    let planted = Planted {
        diverge_state: true,
        ..Planted::default()
    };
    assert_caught_by("diverge_state", planted, &["state"]);
}

#[test]
fn phase1_checker_catches_a_leader_skipping_phase1() {
    assert_caught_by(
        "skip_phase1",
        engine_fault(|f| f.skip_phase1 = true),
        &["phase1"],
    );
}

#[test]
fn ballot_checker_catches_a_ballot_reused_with_another_value() {
    // A leader that skips phase 1 proposes before its own promise is durable; after a crash
    // it takes the same ballot again and proposes other values in the same slots.
    assert_caught_by(
        "skip_phase1",
        engine_fault(|f| f.skip_phase1 = true),
        &["ballot"],
    );
}

#[test]
fn stability_checker_catches_a_node_deciding_a_slot_twice() {
    // Without phase 1 a leader can overwrite what a node decided before a crash (and had
    // not yet applied): the node decides the slot again, otherwise.
    assert_caught_by(
        "skip_phase1",
        engine_fault(|f| f.skip_phase1 = true),
        &["stability"],
    );
}
