//! Exact-output tests of single protocol steps: an engine built from a literal state, one
//! input, and the complete `Ready` it produces.

use std::collections::BTreeMap;

use bytes::Bytes;
use doozer_paxos::*;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn cfg() -> Config {
    Config::with_voters([A, B, C])
}

fn opts(id: NodeId) -> Options {
    Options {
        id,
        alpha: 8,
        heartbeat_ticks: 5,
        // A fixed timeout (the range holds one value) makes the campaign tick exact.
        election_ticks: (10, 11),
        // These exact tests campaign straight away; pre-vote has its own tests.
        pre_vote: false,
        max_batch_cmds: 2,
        max_pending: 3,
        ..Options::default()
    }
}

fn ballot(round: u64, node: NodeId) -> Ballot {
    Ballot { round, node }
}

fn cmd(seq: u64, data: &'static [u8]) -> Command {
    Command {
        id: CommandId { node: A, seq },
        data: Bytes::from_static(data),
    }
}

fn batch(seq: u64, data: &'static [u8]) -> Value {
    Value::Batch(vec![cmd(seq, data)])
}

/// The leader's Accept of `value` into `slot` at `ballot` (nothing known committed).
fn accept(ballot: Ballot, slot: Slot, value: Value) -> Message {
    Message::Accept {
        ballot,
        slot,
        value,
        commit: 0,
    }
}

/// A durable vote for `slot` at `ballot`.
fn vote(ballot: Ballot, slot: Slot) -> Message {
    Message::Accepted { ballot, slot }
}

fn state(promised: Ballot, accepted: &[(Slot, Ballot, Value)]) -> PersistentState {
    PersistentState {
        promised,
        accepted: accepted
            .iter()
            .map(|(s, b, v)| (*s, (*b, v.clone())))
            .collect::<BTreeMap<_, _>>(),
        ..PersistentState::empty(cfg())
    }
}

fn engine(id: NodeId, st: PersistentState) -> Engine {
    Engine::new(opts(id), st)
}

/// Ticks until the election timeout fires; returns that tick's output.
fn campaign(e: &mut Engine) -> Ready {
    for _ in 0..9 {
        e.tick();
        assert!(e.ready().is_empty(), "nothing happens before the timeout");
    }
    e.tick();
    e.ready()
}

/// A leading at ballot 1.A over an empty log, with B's promise; outputs drained.
fn leader_a() -> Engine {
    leader_a_with(opts(A))
}

/// [`leader_a`] with other options.
fn leader_a_with(o: Options) -> Engine {
    let mut a = Engine::new(o, PersistentState::empty(cfg()));
    campaign(&mut a);
    let b1 = ballot(1, A);
    let empty = Message::Promise {
        ballot: b1,
        from_slot: 1,
        accepted: vec![],
        decided: vec![],
    };
    a.step(A, empty.clone());
    a.step(B, empty);
    a.ready();
    assert!(a.status().is_leader);
    a
}

/// B following A at ballot 1.A; outputs drained.
fn follower_b(accepted: &[(Slot, Ballot, Value)]) -> Engine {
    let b1 = ballot(1, A);
    let mut b = engine(B, state(b1, accepted));
    b.step(
        A,
        Message::Heartbeat {
            ballot: b1,
            commit: 0,
            read_seq: 0,
        },
    );
    b.ready();
    assert_eq!(b.status().leader, Some(A));
    b
}

#[test]
fn timeout_starts_phase1_with_durable_ballot() {
    let mut a = engine(A, PersistentState::empty(cfg()));
    let b1 = ballot(1, A);
    let r = campaign(&mut a);
    assert_eq!(
        r,
        Ready {
            persist: vec![Record::Promise(b1)],
            send_after_persist: vec![
                (
                    B,
                    Message::Prepare {
                        ballot: b1,
                        from_slot: 1
                    }
                ),
                (
                    C,
                    Message::Prepare {
                        ballot: b1,
                        from_slot: 1
                    }
                ),
                (
                    A,
                    Message::Promise {
                        ballot: b1,
                        from_slot: 1,
                        accepted: vec![],
                        decided: vec![]
                    }
                ),
            ],
            ..Ready::default()
        }
    );
}

#[test]
fn prepare_gets_promise_after_persist() {
    let old = ballot(1, A);
    let mut b = engine(B, state(old, &[(3, old, batch(1, b"x"))]));
    let b2 = ballot(2, C);
    b.step(
        C,
        Message::Prepare {
            ballot: b2,
            from_slot: 2,
        },
    );
    assert_eq!(
        b.ready(),
        Ready {
            persist: vec![Record::Promise(b2)],
            send_after_persist: vec![(
                C,
                Message::Promise {
                    ballot: b2,
                    from_slot: 2,
                    accepted: vec![(3, old, batch(1, b"x"))],
                    decided: vec![],
                }
            )],
            ..Ready::default()
        }
    );
    assert_eq!(b.status().ballot, b2);
}

#[test]
fn promise_quorum_adopts_highest_ballot_and_fills_holes_with_noops() {
    // A accepted Z in slot 2 at 1.C; B reports X at 1.B there (lower) and Y in slot 4.
    let (b1b, b1c) = (ballot(1, B), ballot(1, C));
    let (x, y, z) = (batch(1, b"X"), batch(2, b"Y"), batch(3, b"Z"));
    let mut a = engine(A, state(Ballot::ZERO, &[(2, b1c, z.clone())]));
    let r = campaign(&mut a);
    let b2 = ballot(2, A); // above the 1.C it accepted at
    let own = Message::Promise {
        ballot: b2,
        from_slot: 1,
        accepted: vec![(2, b1c, z.clone())],
        decided: vec![],
    };
    assert_eq!(r.send_after_persist.last(), Some(&(A, own.clone())));
    a.step(A, own);
    assert!(a.ready().is_empty(), "one promise of three is no quorum");
    a.step(
        B,
        Message::Promise {
            ballot: b2,
            from_slot: 1,
            accepted: vec![(2, b1b, x), (4, b1b, y.clone())],
            decided: vec![],
        },
    );
    assert!(a.status().is_leader);
    let plan = [(1, Value::Noop), (2, z), (3, Value::Noop), (4, y)];
    let mut send_now = vec![
        (
            B,
            Message::Heartbeat {
                ballot: b2,
                commit: 0,
                read_seq: 0,
            },
        ),
        (
            C,
            Message::Heartbeat {
                ballot: b2,
                commit: 0,
                read_seq: 0,
            },
        ),
    ];
    let mut persist = Vec::new();
    let mut after = Vec::new();
    for (slot, value) in plan {
        for to in [B, C] {
            send_now.push((
                to,
                Message::Accept {
                    ballot: b2,
                    slot,
                    value: value.clone(),
                    commit: 0,
                },
            ));
        }
        persist.push(Record::Accept {
            slot,
            ballot: b2,
            value,
        });
        // The leader's own vote, and (three voters) the same vote to each follower.
        for to in [A, B, C] {
            after.push((to, Message::Accepted { ballot: b2, slot }));
        }
    }
    assert_eq!(
        a.ready(),
        Ready {
            persist,
            send_now,
            send_after_persist: after,
            ..Ready::default()
        }
    );
}

#[test]
fn proposals_are_batched_into_one_slot() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"p")).unwrap();
    a.propose(cmd(2, b"q")).unwrap();
    a.propose(cmd(3, b"r")).unwrap();
    assert_eq!(
        a.propose(cmd(4, b"s")),
        Err(ProposeError::Busy),
        "max_pending is 3"
    );
    let r = a.ready();
    // max_batch_cmds is 2: p and q share slot 1, r goes alone in slot 2.
    let v1 = Value::Batch(vec![cmd(1, b"p"), cmd(2, b"q")]);
    let v2 = Value::Batch(vec![cmd(3, b"r")]);
    assert_eq!(
        r.persist,
        vec![
            Record::Accept {
                slot: 1,
                ballot: b1,
                value: v1.clone()
            },
            Record::Accept {
                slot: 2,
                ballot: b1,
                value: v2.clone()
            },
        ]
    );
    assert_eq!(
        r.send_now,
        vec![
            (
                B,
                Message::Accept {
                    ballot: b1,
                    slot: 1,
                    value: v1.clone(),
                    commit: 0
                }
            ),
            (
                C,
                Message::Accept {
                    ballot: b1,
                    slot: 1,
                    value: v1,
                    commit: 0
                }
            ),
            (
                B,
                Message::Accept {
                    ballot: b1,
                    slot: 2,
                    value: v2.clone(),
                    commit: 0
                }
            ),
            (
                C,
                Message::Accept {
                    ballot: b1,
                    slot: 2,
                    value: v2,
                    commit: 0
                }
            ),
        ]
    );
    // The leader's own votes, each also sent to both followers (three voters).
    let votes: Vec<_> = [1, 2]
        .into_iter()
        .flat_map(|slot| [A, B, C].map(|to| (to, Message::Accepted { ballot: b1, slot })))
        .collect();
    assert_eq!(r.send_after_persist, votes);
}

#[test]
fn accept_is_answered_after_persist() {
    let b1 = ballot(1, A);
    let mut b = follower_b(&[]);
    b.step(A, accept(b1, 1, batch(1, b"v")));
    assert_eq!(
        b.ready(),
        Ready {
            persist: vec![Record::Accept {
                slot: 1,
                ballot: b1,
                value: batch(1, b"v")
            }],
            // The vote to the leader, and fed back to B itself (with the leader's vote it
            // makes a quorum of three).
            send_after_persist: vec![(A, vote(b1, 1)), (B, vote(b1, 1))],
            ..Ready::default()
        }
    );
}

#[test]
fn a_follower_learns_a_slot_from_its_own_vote_and_the_leaders() {
    let b1 = ballot(1, A);
    let accept = |slot| accept(b1, slot, batch(slot, b"v"));
    let mut b = follower_b(&[]);
    b.step(A, accept(1));
    b.step(A, accept(2));
    let _ = b.ready();
    // The leader's vote alone: B's own accept may not be durable yet.
    b.step(A, vote(b1, 1));
    assert!(b.ready().decided.is_empty());
    // B's own vote, fed back after its persist: with the leader's, a quorum of three.
    b.step(B, vote(b1, 1));
    assert_eq!(b.ready().decided, vec![(1, batch(1, b"v"))]);
    // Slot 2: the other order; and a vote at another ballot counts for nothing.
    b.step(B, vote(b1, 2));
    b.step(C, vote(ballot(2, C), 2));
    assert!(b.ready().decided.is_empty());
    b.step(A, vote(b1, 2));
    assert_eq!(b.ready().decided, vec![(2, batch(2, b"v"))]);
    // Votes for a slot not accepted here decide nothing (the value is unknown).
    b.step(B, vote(b1, 3));
    b.step(A, vote(b1, 3));
    assert!(b.ready().decided.is_empty());
    // Nor do votes for a slot more than alpha (8) past the applied one (0): its config is
    // not settled here. Slots 3..=8 are learned, 9 is not.
    for slot in 3..=9 {
        b.step(A, accept(slot));
    }
    let _ = b.ready();
    for slot in 3..=9 {
        b.step(B, vote(b1, slot));
        b.step(A, vote(b1, slot));
    }
    let decided: Vec<Slot> = b.ready().decided.iter().map(|(s, _)| *s).collect();
    assert_eq!(decided, (3..=8).collect::<Vec<_>>());
}

#[test]
fn with_five_voters_the_leaders_vote_is_not_sent_and_two_votes_decide_nothing() {
    let (d, e) = (NodeId(4), NodeId(5));
    let five = Config::with_voters([A, B, C, d, e]);
    let b1 = ballot(1, A);
    let mut st = state(b1, &[]);
    st.configs = vec![(1, five)];
    let mut b = engine(B, st);
    b.step(A, accept(b1, 1, Value::Noop));
    // Only the vote to the leader: B's own and the leader's are not a quorum of five.
    let vote = vote(b1, 1);
    assert_eq!(b.ready().send_after_persist, vec![(A, vote.clone())]);
    b.step(B, vote.clone());
    b.step(A, vote);
    assert!(b.ready().decided.is_empty());
}

#[test]
fn accept_at_a_new_ballot_persists_the_promise_first() {
    let b3 = ballot(3, A);
    let mut b = engine(B, state(ballot(1, C), &[]));
    b.step(A, accept(b3, 1, Value::Noop));
    assert_eq!(
        b.ready(),
        Ready {
            persist: vec![
                Record::Promise(b3),
                Record::Accept {
                    slot: 1,
                    ballot: b3,
                    value: Value::Noop
                }
            ],
            send_after_persist: vec![(A, vote(b3, 1)), (B, vote(b3, 1))],
            ..Ready::default()
        }
    );
}

#[test]
fn send_before_persist_fault_sends_early() {
    let b1 = ballot(1, A);
    let mut o = opts(B);
    o.faults.send_before_persist = true;
    let mut b = Engine::new(o, state(b1, &[]));
    b.step(A, accept(b1, 1, Value::Noop));
    let r = b.ready();
    assert_eq!(r.send_now, vec![(A, vote(b1, 1)), (B, vote(b1, 1))]);
    assert!(r.send_after_persist.is_empty());
}

#[test]
fn accepted_quorum_decides_and_publishes_commit() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"v")).unwrap();
    a.ready();
    a.step(
        A,
        Message::Accepted {
            ballot: b1,
            slot: 1,
        },
    );
    assert!(a.ready().is_empty(), "own vote alone is no quorum");
    a.step(
        B,
        Message::Accepted {
            ballot: b1,
            slot: 1,
        },
    );
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![
                (
                    B,
                    Message::Commit {
                        ballot: b1,
                        commit: 1
                    }
                ),
                (
                    C,
                    Message::Commit {
                        ballot: b1,
                        commit: 1
                    }
                ),
            ],
            decided: vec![(1, batch(1, b"v"))],
            ..Ready::default()
        }
    );
    assert_eq!(a.status().decided, 1);
}

#[test]
fn a_decided_command_forwarded_again_is_not_proposed_again() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.step(
        B,
        Message::Forward {
            cmds: vec![cmd(1, b"v")],
        },
    );
    a.ready();
    a.step(A, vote(b1, 1));
    a.step(B, vote(b1, 1));
    assert_eq!(a.ready().decided, vec![(1, batch(1, b"v"))]);
    // A follower's late retry of the decided command, with a new one: only the new one
    // gets a slot.
    a.step(
        C,
        Message::Forward {
            cmds: vec![cmd(1, b"v"), cmd(2, b"w")],
        },
    );
    let r = a.ready();
    assert_eq!(
        r.persist,
        vec![Record::Accept {
            slot: 2,
            ballot: b1,
            value: batch(2, b"w")
        }]
    );
    // The retry alone: nothing to do.
    a.step(
        C,
        Message::Forward {
            cmds: vec![cmd(1, b"v")],
        },
    );
    assert!(a.ready().is_empty());
}

#[test]
fn votes_of_another_ballot_do_not_count() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"v")).unwrap();
    a.ready();
    a.step(
        A,
        Message::Accepted {
            ballot: b1,
            slot: 1,
        },
    );
    a.step(
        B,
        Message::Accepted {
            ballot: ballot(0, A),
            slot: 1,
        },
    );
    assert!(a.ready().is_empty());
    assert_eq!(a.status().decided, 0);
}

#[test]
fn heartbeat_commit_decides_values_accepted_at_its_ballot() {
    let b1 = ballot(1, A);
    let mut b = follower_b(&[(1, b1, batch(1, b"v"))]);
    b.step(
        A,
        Message::Heartbeat {
            ballot: b1,
            commit: 1,
            read_seq: 0,
        },
    );
    assert_eq!(
        b.ready(),
        Ready {
            send_after_persist: vec![(
                A,
                Message::HeartbeatAck {
                    ballot: b1,
                    read_seq: 0,
                    decided: 1
                }
            )],
            decided: vec![(1, batch(1, b"v"))],
            ..Ready::default()
        }
    );
}

#[test]
fn commit_beyond_what_was_accepted_at_that_ballot_asks_for_catch_up() {
    let b1 = ballot(1, A);
    // Slot 1 accepted at the current ballot, slot 2 only at an older one: must be fetched.
    let mut b = follower_b(&[(1, b1, Value::Noop), (2, ballot(0, C), batch(1, b"old"))]);
    b.step(
        A,
        Message::Commit {
            ballot: b1,
            commit: 3,
        },
    );
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(A, Message::CatchUp { from: 2, to: 3 })],
            decided: vec![(1, Value::Noop)],
            ..Ready::default()
        }
    );
    b.step(
        A,
        Message::Decided {
            entries: vec![(2, batch(2, b"new")), (3, Value::Noop)],
        },
    );
    assert_eq!(
        b.ready(),
        Ready {
            decided: vec![(2, batch(2, b"new")), (3, Value::Noop)],
            ..Ready::default()
        }
    );
}

#[test]
fn catch_up_is_served_from_retained_decided_slots() {
    let st = PersistentState {
        applied: 2,
        decided_tail: vec![(1, Value::Noop), (2, batch(1, b"v"))],
        configs: vec![(3, cfg())],
        ..PersistentState::empty(cfg())
    };
    let mut a = engine(A, st);
    a.step(C, Message::CatchUp { from: 1, to: 5 });
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![(
                C,
                Message::Decided {
                    entries: vec![(1, Value::Noop), (2, batch(1, b"v"))]
                }
            )],
            ..Ready::default()
        }
    );
}

#[test]
fn compacted_slots_lead_to_a_snapshot_request() {
    let st = PersistentState {
        applied: 10,
        configs: vec![(11, cfg())],
        ..PersistentState::empty(cfg())
    };
    let mut a = engine(A, st);
    a.step(C, Message::CatchUp { from: 1, to: 12 });
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![(C, Message::Compacted { applied: 10 })],
            ..Ready::default()
        }
    );

    let mut c = engine(C, PersistentState::empty(cfg()));
    c.step(A, Message::Compacted { applied: 10 });
    assert_eq!(
        c.ready(),
        Ready {
            snapshot: Some(SnapshotRequest { from: A, slot: 10 }),
            ..Ready::default()
        }
    );
    c.snapshot_installed(10, vec![(11, cfg())]);
    assert!(c.ready().is_empty());
    let s = c.status();
    assert_eq!((s.decided, s.applied), (10, 10));
}

#[test]
fn read_index_needs_one_heartbeat_quorum() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"w")).unwrap();
    a.ready(); // slot 1 assigned, not decided
    a.read_index(7);
    a.read_index(8);
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![
                (
                    B,
                    Message::Heartbeat {
                        ballot: b1,
                        commit: 0,
                        read_seq: 1
                    }
                ),
                (
                    C,
                    Message::Heartbeat {
                        ballot: b1,
                        commit: 0,
                        read_seq: 1
                    }
                ),
            ],
            ..Ready::default()
        }
    );
    a.read_index(9); // arrives during the round: waits for the next one
    assert!(a.ready().is_empty());
    a.step(
        C,
        Message::HeartbeatAck {
            ballot: b1,
            read_seq: 0,
            decided: 0,
        },
    );
    assert!(
        a.ready().is_empty(),
        "an ack of an older round confirms nothing"
    );
    a.step(
        C,
        Message::HeartbeatAck {
            ballot: b1,
            read_seq: 1,
            decided: 0,
        },
    );
    // Both reads must wait for slot 1, assigned before they arrived; read 9 starts round 2.
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![
                (
                    B,
                    Message::Heartbeat {
                        ballot: b1,
                        commit: 0,
                        read_seq: 2
                    }
                ),
                (
                    C,
                    Message::Heartbeat {
                        ballot: b1,
                        commit: 0,
                        read_seq: 2
                    }
                ),
            ],
            reads: vec![(7, Ok(1)), (8, Ok(1))],
            ..Ready::default()
        }
    );
    a.step(
        B,
        Message::HeartbeatAck {
            ballot: b1,
            read_seq: 2,
            decided: 0,
        },
    );
    assert_eq!(
        a.ready(),
        Ready {
            reads: vec![(9, Ok(1))],
            ..Ready::default()
        }
    );
}

#[test]
fn follower_forwards_reads_and_relays_the_answer() {
    let mut b = follower_b(&[]);
    b.read_index(5);
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(A, Message::ReadIndex { ctx: 5 })],
            ..Ready::default()
        }
    );
    b.step(
        C,
        Message::ReadIndexResp {
            ctx: 5,
            result: Ok(9),
        },
    );
    assert!(b.ready().is_empty(), "only the leader asked may answer");
    b.step(
        A,
        Message::ReadIndexResp {
            ctx: 5,
            result: Ok(9),
        },
    );
    assert_eq!(
        b.ready(),
        Ready {
            reads: vec![(5, Ok(9))],
            ..Ready::default()
        }
    );

    let mut lone = engine(B, PersistentState::empty(cfg()));
    lone.read_index(6);
    assert_eq!(
        lone.ready(),
        Ready {
            reads: vec![(6, Err(ReadError::NoLeader))],
            ..Ready::default()
        }
    );
}

#[test]
fn leader_change_fails_waiting_reads() {
    let mut a = leader_a();
    a.read_index(7);
    a.ready();
    let b5 = ballot(5, C);
    // A higher-ballot leader's accept deposes A.
    a.step(
        C,
        Message::Accept {
            ballot: b5,
            slot: 1,
            value: Value::Noop,
            commit: 0,
        },
    );
    let r = a.ready();
    assert_eq!(r.reads, vec![(7, Err(ReadError::LeaderChanged))]);
    assert_eq!(a.status().leader, Some(C));
    assert!(!a.status().is_leader);
}

#[test]
fn stale_ballots_are_rejected_without_persisting() {
    let b3 = ballot(3, C);
    let mut b = engine(B, state(b3, &[]));
    let old = ballot(2, A);
    b.step(
        A,
        Message::Accept {
            ballot: old,
            slot: 1,
            value: Value::Noop,
            commit: 0,
        },
    );
    b.step(
        A,
        Message::Prepare {
            ballot: old,
            from_slot: 1,
        },
    );
    let reject = Message::Reject {
        ballot: old,
        promised: b3,
    };
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(A, reject.clone()), (A, reject)],
            ..Ready::default()
        }
    );
}

#[test]
fn garbage_is_ignored() {
    let mut b = follower_b(&[]);
    // Ballots that are not the sender's own, slot 0, a promise nobody asked for.
    b.step(
        C,
        Message::Accept {
            ballot: ballot(9, A),
            slot: 1,
            value: Value::Noop,
            commit: 0,
        },
    );
    b.step(
        C,
        Message::Prepare {
            ballot: ballot(9, A),
            from_slot: 1,
        },
    );
    b.step(
        A,
        Message::Accept {
            ballot: ballot(1, A),
            slot: 0,
            value: Value::Noop,
            commit: 0,
        },
    );
    b.step(
        C,
        Message::Promise {
            ballot: ballot(1, B),
            from_slot: 1,
            accepted: vec![],
            decided: vec![],
        },
    );
    b.step(
        C,
        Message::Accepted {
            ballot: ballot(1, B),
            slot: 1,
        },
    );
    b.step(
        C,
        Message::CatchUp {
            from: u64::MAX,
            to: 0,
        },
    );
    assert!(b.ready().is_empty());
    assert_eq!(b.status().ballot, ballot(1, A));
}

#[test]
fn a_follower_of_a_live_leader_ignores_other_candidates() {
    let mut b = follower_b(&[]);
    let b5 = ballot(5, C);
    b.step(
        C,
        Message::Prepare {
            ballot: b5,
            from_slot: 1,
        },
    );
    assert!(
        b.ready().is_empty(),
        "sticky: leader A was heard within the election timeout"
    );
    // Without a leader, the same prepare is promised.
    let mut fresh = engine(B, PersistentState::empty(cfg()));
    fresh.step(
        C,
        Message::Prepare {
            ballot: b5,
            from_slot: 1,
        },
    );
    assert_eq!(fresh.ready().persist, vec![Record::Promise(b5)]);
}

#[test]
fn proposals_at_a_follower_are_forwarded() {
    let mut b = follower_b(&[]);
    b.propose(cmd(1, b"f")).unwrap();
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(
                A,
                Message::Forward {
                    cmds: vec![cmd(1, b"f")]
                }
            )],
            ..Ready::default()
        }
    );
    let mut lone = engine(B, PersistentState::empty(cfg()));
    assert_eq!(lone.propose(cmd(2, b"g")), Err(ProposeError::NoLeader));
}

#[test]
fn a_follower_holding_forwards_sends_its_queue_in_one_message_when_released() {
    let mut b = follower_b(&[]);
    b.hold_forwards(true);
    b.propose(cmd(1, b"f")).unwrap();
    assert!(b.ready().is_empty(), "held");
    b.propose(cmd(2, b"g")).unwrap();
    assert!(b.ready().is_empty(), "still held");
    assert_eq!(b.queued(), 2);
    b.hold_forwards(false);
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(
                A,
                Message::Forward {
                    cmds: vec![cmd(1, b"f"), cmd(2, b"g")]
                }
            )],
            ..Ready::default()
        }
    );
    assert_eq!(b.queued(), 0);
}

#[test]
fn a_candidate_too_far_behind_is_told_to_catch_up() {
    let st = PersistentState {
        applied: 300,
        configs: vec![(301, cfg())],
        ..PersistentState::empty(cfg())
    };
    let mut a = engine(A, st);
    let b1 = ballot(1, C);
    a.step(
        C,
        Message::Prepare {
            ballot: b1,
            from_slot: 1,
        },
    );
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![(
                C,
                Message::Behind {
                    ballot: b1,
                    decided: 300
                }
            )],
            ..Ready::default()
        }
    );
}

#[test]
fn restart_keeps_promise_and_accepted_values() {
    let b2 = ballot(2, C);
    let v = batch(1, b"kept");
    // Promised below what it accepted at: the accepted ballot still binds it.
    let mut b = engine(B, state(ballot(1, A), &[(1, b2, v.clone())]));
    assert_eq!(b.status().ballot, b2);
    b.step(
        A,
        Message::Prepare {
            ballot: ballot(3, A),
            from_slot: 1,
        },
    );
    let r = b.ready();
    assert_eq!(
        r.send_after_persist,
        vec![(
            A,
            Message::Promise {
                ballot: ballot(3, A),
                from_slot: 1,
                accepted: vec![(1, b2, v)],
                decided: vec![]
            }
        )]
    );
}

/// Ticks a leader until its next heartbeat goes out; returns that tick's output.
/// A leader's heartbeat round at `ballot` to B and C, publishing `commit`, and nothing else.
fn heartbeats(ballot: Ballot, commit: Slot) -> Ready {
    let hb = |to| {
        (
            to,
            Message::Heartbeat {
                ballot,
                commit,
                read_seq: 0,
            },
        )
    };
    Ready {
        send_now: vec![hb(B), hb(C)],
        ..Ready::default()
    }
}

fn until_heartbeat(a: &mut Engine) -> Ready {
    for _ in 0..5 {
        a.tick();
        let r = a.ready();
        if !r.is_empty() {
            return r;
        }
    }
    panic!("no heartbeat within a heartbeat period");
}

#[test]
fn a_leader_behind_a_follower_fetches_what_it_decided() {
    // A follower decided slots under an earlier leader that this one never learned (its
    // phase-1 quorum had only accepted them). The follower no longer votes there and may
    // have compacted them: the leader must fetch them, not wait for votes.
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.step(
        B,
        Message::HeartbeatAck {
            ballot: b1,
            read_seq: 0,
            decided: 6,
        },
    );
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![(B, Message::CatchUp { from: 1, to: 6 })],
            ..Ready::default()
        }
    );
    // The follower compacted them: the leader installs a snapshot.
    a.step(B, Message::Compacted { applied: 6 });
    assert_eq!(
        a.ready(),
        Ready {
            snapshot: Some(SnapshotRequest { from: B, slot: 6 }),
            ..Ready::default()
        }
    );
    a.snapshot_installed(6, vec![(7, cfg())]);
    assert!(a.status().is_leader);
    assert_eq!(a.status().decided, 6);
}

#[test]
fn a_proposal_learned_from_a_peer_is_not_sent_again() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"v")).unwrap();
    a.ready(); // accepts for slot 1 out; no votes come back
    a.step(
        B,
        Message::Decided {
            entries: vec![(1, batch(1, b"v"))],
        },
    );
    let r = a.ready();
    assert_eq!(r.decided, vec![(1, batch(1, b"v"))]);
    assert_eq!(
        until_heartbeat(&mut a),
        heartbeats(b1, 1),
        "no accept of slot 1 is sent again"
    );
}

#[test]
fn proposals_a_snapshot_covers_are_not_sent_again() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    a.propose(cmd(1, b"v")).unwrap();
    a.ready();
    a.step(B, Message::Compacted { applied: 3 });
    a.ready();
    a.snapshot_installed(3, vec![(4, cfg())]);
    let commit = |to| {
        (
            to,
            Message::Commit {
                ballot: b1,
                commit: 3,
            },
        )
    };
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![commit(B), commit(C)],
            ..Ready::default()
        }
    );
    assert_eq!(
        until_heartbeat(&mut a),
        heartbeats(b1, 3),
        "no accept of slot 1 is sent again"
    );
}

#[test]
fn a_rejected_candidate_steps_down_and_outbids_next_time() {
    let mut a = engine(A, PersistentState::empty(cfg()));
    campaign(&mut a);
    let b1 = ballot(1, A);
    // A stale reject (of another ballot) changes nothing.
    a.step(
        B,
        Message::Reject {
            ballot: ballot(0, A),
            promised: ballot(4, C),
        },
    );
    a.step(
        B,
        Message::Reject {
            ballot: b1,
            promised: ballot(4, C),
        },
    );
    assert!(a.ready().is_empty(), "stepping down sends nothing");
    // Promises for the abandoned ballot no longer count.
    let empty = Message::Promise {
        ballot: b1,
        from_slot: 1,
        accepted: vec![],
        decided: vec![],
    };
    a.step(A, empty.clone());
    a.step(C, empty);
    assert!(a.ready().is_empty());
    assert!(!a.status().is_leader);
    // Its next campaign outbids the ballot that beat it.
    let mut r = Ready::default();
    for _ in 0..1000 {
        a.tick();
        r = a.ready();
        if !r.is_empty() {
            break;
        }
    }
    assert_eq!(r.persist, vec![Record::Promise(ballot(5, A))]);
}

#[test]
fn commands_forwarded_to_the_leader_are_proposed_once() {
    let mut a = leader_a();
    let b1 = ballot(1, A);
    let fwd = Message::Forward {
        cmds: vec![cmd(7, b"x")],
    };
    a.step(B, fwd.clone());
    a.step(C, fwd); // the same command again (a retry): proposed once
    let v = batch(7, b"x");
    let accept = |to| {
        (
            to,
            Message::Accept {
                ballot: b1,
                slot: 1,
                value: v.clone(),
                commit: 0,
            },
        )
    };
    assert_eq!(
        a.ready(),
        Ready {
            persist: vec![Record::Accept {
                slot: 1,
                ballot: b1,
                value: v.clone()
            }],
            send_now: vec![accept(B), accept(C)],
            // The leader's own vote, also to both followers (three voters).
            send_after_persist: [A, B, C]
                .map(|to| {
                    (
                        to,
                        Message::Accepted {
                            ballot: b1,
                            slot: 1,
                        },
                    )
                })
                .to_vec(),
            ..Ready::default()
        }
    );
    // A follower does not take forwarded commands (their origin re-sends them).
    let mut b = follower_b(&[]);
    b.step(
        C,
        Message::Forward {
            cmds: vec![cmd(8, b"y")],
        },
    );
    assert!(b.ready().is_empty());
}

#[test]
fn a_new_voter_is_asked_for_a_promise_before_its_slots_are_proposed() {
    const D: NodeId = NodeId(4);
    let mut a = leader_a();
    let b1 = ballot(1, A);
    // The config after slot 0 adds D; with alpha 8 it governs slot 8 on, where a majority
    // of {A, B, C, D} is three and only A and B promised.
    let grown = Config::with_voters([A, B, C, D]);
    a.applied(0, &grown);
    a.step(
        B,
        Message::Decided {
            entries: (1..=7).map(|s| (s, Value::Noop)).collect(),
        },
    );
    a.propose(cmd(1, b"z")).unwrap();
    let prepare = |to| {
        (
            to,
            Message::Prepare {
                ballot: b1,
                from_slot: 8,
            },
        )
    };
    let commit = |to| {
        (
            to,
            Message::Commit {
                ballot: b1,
                commit: 7,
            },
        )
    };
    assert_eq!(
        a.ready(),
        Ready {
            send_now: vec![prepare(C), prepare(D), commit(B), commit(C), commit(D)],
            decided: (1..=7).map(|s| (s, Value::Noop)).collect(),
            ..Ready::default()
        },
        "slot 8 waits for phase 1 to cover its config"
    );
    a.step(
        D,
        Message::Promise {
            ballot: b1,
            from_slot: 8,
            accepted: vec![],
            decided: vec![],
        },
    );
    let v = batch(1, b"z");
    let accept = |to| {
        (
            to,
            Message::Accept {
                ballot: b1,
                slot: 8,
                value: v.clone(),
                commit: 7,
            },
        )
    };
    assert_eq!(
        a.ready(),
        Ready {
            persist: vec![Record::Accept {
                slot: 8,
                ballot: b1,
                value: v.clone()
            }],
            send_now: vec![accept(B), accept(C), accept(D)],
            send_after_persist: vec![(
                A,
                Message::Accepted {
                    ballot: b1,
                    slot: 8
                }
            )],
            ..Ready::default()
        }
    );
}

#[test]
fn max_inflight_holds_new_commands_for_one_bigger_slot() {
    let b1 = ballot(1, A);
    let mut a = leader_a_with(Options {
        max_inflight: 1,
        ..opts(A)
    });

    a.propose(cmd(1, b"p")).unwrap();
    let r = a.ready();
    let v1 = batch(1, b"p");
    assert_eq!(
        r.persist,
        vec![Record::Accept {
            slot: 1,
            ballot: b1,
            value: v1.clone()
        }]
    );
    // Slot 1 is in flight: q and r wait instead of taking slots 2 and 3.
    a.propose(cmd(2, b"q")).unwrap();
    a.propose(cmd(3, b"r")).unwrap();
    assert!(
        a.ready().is_empty(),
        "nothing proposed while slot 1 is undecided"
    );

    for from in [A, B] {
        a.step(
            from,
            Message::Accepted {
                ballot: b1,
                slot: 1,
            },
        );
    }
    let r = a.ready();
    assert_eq!(r.decided, vec![(1, v1)]);
    // Both waiting commands go together in slot 2.
    assert_eq!(
        r.persist,
        vec![Record::Accept {
            slot: 2,
            ballot: b1,
            value: Value::Batch(vec![cmd(2, b"q"), cmd(3, b"r")])
        }]
    );
}

fn with_pre_vote(id: NodeId, st: PersistentState) -> Engine {
    Engine::new(
        Options {
            pre_vote: true,
            ..opts(id)
        },
        st,
    )
}

#[test]
fn with_pre_vote_a_timeout_asks_first_and_changes_nothing_durable() {
    let mut a = with_pre_vote(A, PersistentState::empty(cfg()));
    let r = campaign(&mut a);
    let ask = Message::PreVote { round: 1 };
    assert_eq!(
        r,
        Ready {
            send_now: vec![(B, ask.clone()), (C, ask)],
            ..Ready::default()
        }
    );
    assert_eq!(a.status().ballot, Ballot::ZERO);
    // A refusal (B still hears a leader) changes nothing either.
    a.step(
        B,
        Message::PreVoteResp {
            round: 1,
            granted: false,
            promised: Ballot::ZERO,
        },
    );
    assert!(a.ready().is_empty());
    // One yes makes a quorum with its own: now it campaigns, at the round it asked about.
    a.step(
        C,
        Message::PreVoteResp {
            round: 1,
            granted: true,
            promised: Ballot::ZERO,
        },
    );
    let r = a.ready();
    assert_eq!(r.persist, vec![Record::Promise(ballot(1, A))]);
    assert!(r
        .send_after_persist
        .iter()
        .any(|(to, m)| *to == B
            && matches!(m, Message::Prepare { ballot: b, .. } if *b == ballot(1, A))));
}

#[test]
fn a_pre_vote_is_refused_while_a_leader_is_heard_and_granted_after() {
    let mut b = follower_b(&[]);
    b.step(C, Message::PreVote { round: 5 });
    let no = Message::PreVoteResp {
        round: 5,
        granted: false,
        promised: ballot(1, A),
    };
    assert_eq!(
        b.ready(),
        Ready {
            send_now: vec![(C, no)],
            ..Ready::default()
        }
    );
    // Answering changed nothing: B still follows A at 1.A.
    assert_eq!(b.status().leader, Some(A));
    assert_eq!(b.status().ballot, ballot(1, A));
    // A pre-vote at a round not above the promise is refused even without a leader.
    let mut fresh = engine(B, state(ballot(5, A), &[]));
    fresh.step(C, Message::PreVote { round: 4 });
    assert!(matches!(
        fresh.ready().send_now[..],
        [(C, Message::PreVoteResp { granted: false, .. })]
    ));
    fresh.step(C, Message::PreVote { round: 6 });
    let r = fresh.ready();
    assert!(matches!(
        r.send_now[..],
        [(C, Message::PreVoteResp { granted: true, .. })]
    ));
    assert!(r.persist.is_empty(), "a pre-vote is not a promise");
}

#[test]
fn a_node_that_hears_nobody_keeps_its_ballot_and_does_not_depose_the_leader() {
    // C is cut off: its timeouts fire again and again; with pre-vote unanswered its ballot
    // never rises, so when it is heard again the leader's accepts are still taken.
    let mut c = with_pre_vote(C, PersistentState::empty(cfg()));
    for _ in 0..20 {
        for _ in 0..200 {
            c.tick();
        }
        let r = c.ready();
        assert!(r.persist.is_empty());
        assert!(r
            .send_now
            .iter()
            .all(|(_, m)| matches!(m, Message::PreVote { .. })));
    }
    assert_eq!(c.status().ballot, Ballot::ZERO);
    let mut a = leader_a();
    a.propose(cmd(1, b"x")).unwrap();
    let r = a.ready();
    let (_, accept) = r
        .send_now
        .iter()
        .chain(&r.send_after_persist)
        .find(|(to, m)| *to == C && matches!(m, Message::Accept { .. }))
        .expect("an accept for C")
        .clone();
    c.step(A, accept);
    let r = c.ready();
    assert_eq!(
        r.persist.len(),
        2,
        "promise 1.A and the accepted value: {r:?}"
    );
    assert!(r.send_after_persist.iter().any(|(to, m)| *to == A
        && matches!(m, Message::Accepted { ballot: b, slot: 1 } if *b == ballot(1, A))));
}

#[test]
fn without_pre_vote_a_node_that_hears_nobody_raises_its_ballot() {
    // The counterpart of the test above: what pre-vote prevents.
    let mut c = engine(C, PersistentState::empty(cfg()));
    for _ in 0..200 {
        c.tick();
    }
    c.ready();
    assert!(c.status().ballot > ballot(1, A));
}

#[test]
fn held_batches_wait_and_then_go_in_one_slot() {
    let mut a = leader_a_with(Options {
        max_batch_cmds: 8,
        ..opts(A)
    });
    a.hold_batches(true);
    for seq in 1..=3 {
        a.propose(cmd(seq, b"h")).unwrap();
        let r = a.ready();
        assert!(
            !r.send_now
                .iter()
                .any(|(_, m)| matches!(m, Message::Accept { .. })),
            "nothing proposed while held: {r:?}"
        );
    }
    a.hold_batches(false);
    let r = a.ready();
    let accepts: Vec<_> = r
        .send_now
        .iter()
        .filter_map(|(to, m)| match m {
            Message::Accept { slot, value, .. } if *to == B => Some((*slot, value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        accepts,
        vec![(
            1,
            Value::Batch(vec![cmd(1, b"h"), cmd(2, b"h"), cmd(3, b"h")])
        )]
    );
}
