//! A voter silent for --timeout loses its /ctl/cal slot, and a learner takes it.

mod cluster_support;

use std::time::Duration;

use cluster_support::{eventually, Cluster};

#[test]
fn learner_takes_the_slot_of_a_dead_voter() {
    let mut cl = Cluster::new();
    let fast = ["--timeout", "2"];
    cl.three_voters(&fast);
    let seed_addr = cl.nodes[0].addr.clone();
    let mut c = cl.nodes[0].client();
    // A fourth node finds no free slot: it stays a learner but serves reads.
    let l = cl.join(&seed_addr, &fast);
    let learner = cl.nodes[l].id.clone();
    let mut cl_c = cl.nodes[l].client();
    let r = c.set("/t/x", -1, b"1").unwrap();
    eventually(Duration::from_secs(10), "learner follows", || {
        (cl_c.rev() >= r).then_some(())
    });
    assert_eq!(cl_c.get("/t/x").unwrap(), (b"1".to_vec(), r));
    assert!(!Cluster::voters(&mut c).contains(&learner));

    // Kill a voter that is not the leader.
    let victim = (1..3).find(|&i| !cl.nodes[i].is_leader()).unwrap();
    let victim_id = cl.nodes[victim].id.clone();
    cl.nodes[victim].kill9();
    eventually(
        Duration::from_secs(30),
        "learner in the dead voter's slot",
        || {
            // The removal is several writes: the slot is freed (and may be taken) before
            // the dead voter's `/ctl/node` files are deleted.
            let v = Cluster::voters(&mut c);
            let files = c.getdir_all(&format!("/ctl/node/{victim_id}"));
            (v.contains(&learner) && !v.contains(&victim_id) && files.is_empty()).then_some(())
        },
    );
    // The new membership takes writes.
    let r = cl_c.set("/t/y", -1, b"2").unwrap();
    assert_eq!(c.get("/t/y").unwrap(), (b"2".to_vec(), r));
}

#[test]
fn removed_voter_rejoins_when_restarted() {
    let Removed {
        mut cl,
        leader,
        victim,
        other,
        victim_id,
        mut c,
        r,
    } = remove_a_follower();

    // Restarted with no flags, it registers again, takes the free slot, and catches up,
    // without disturbing the live cluster: no election while it comes back.
    let elections = |cl: &Cluster| -> usize {
        [leader, other]
            .iter()
            .map(|&i| cl.nodes[i].log_text().matches("became leader").count())
            .sum()
    };
    let elections_before = elections(&cl);
    let back = cl_restart(&mut cl, victim);
    assert_rejoined(&cl, back, &victim_id, &mut c, r, Duration::from_secs(30));
    assert_eq!(
        elections(&cl),
        elections_before,
        "the rejoin caused an election"
    );
    assert!(cl.nodes[back]
        .log_text()
        .contains("no longer a voter; resuming as a learner"));
}

#[test]
fn removed_voter_that_resumed_stale_rejoins() {
    let Removed {
        mut cl,
        leader,
        victim,
        other,
        victim_id,
        mut c,
        r,
    } = remove_a_follower();

    // Its peers don't answer while it restarts (frozen, like an unreachable network): it
    // resumes from its stored membership, as a voter the cluster no longer has.
    cl.nodes[leader].pause();
    cl.nodes[other].pause();
    let back = cl_restart(&mut cl, victim);
    assert!(cl.nodes[back].log_text().contains("no peer answered"));
    cl.nodes[leader].resume();
    cl.nodes[other].resume();

    // A member answers its (late) question and registers it again: a learner, led.
    assert_rejoined(&cl, back, &victim_id, &mut c, r, Duration::from_secs(60));
}

#[test]
fn removed_voter_alone_at_restart_rejoins_later() {
    let Removed {
        mut cl,
        leader,
        victim,
        other,
        victim_id,
        c,
        r,
    } = remove_a_follower();

    // Its peers are down while it restarts: it resumes from its stored membership, as a
    // voter the cluster no longer has. Then they come back, without it.
    drop(c);
    cl.nodes[leader].stop();
    cl.nodes[other].stop();
    let back = cl_restart(&mut cl, victim);
    assert!(cl.nodes[back].log_text().contains("no peer answered"));
    cl_restart(&mut cl, leader);
    let o2 = cl_restart(&mut cl, other);
    let mut c = cl.nodes[o2].client();

    // Nobody leads it; it asks again, learns it was removed, and comes back as a learner.
    // (By snapshot or by catching up slot by slot: both happen, depending on whether it is
    // led before the answer to its question arrives.)
    assert_rejoined(&cl, back, &victim_id, &mut c, r, Duration::from_secs(60));
}

#[test]
fn a_cluster_frozen_as_a_whole_keeps_its_voters() {
    let (cl, leader, all) = three_voters_fast();
    // Every node frozen for longer than --timeout (the host stalled, a laptop slept): on
    // waking, the leader's followers look silent only because nobody ran.
    for n in &cl.nodes {
        n.pause();
    }
    std::thread::sleep(Duration::from_secs(3));
    for n in &cl.nodes {
        n.resume();
    }
    let mut c = cl.nodes[leader].client();
    c.set("/t/after", -1, b"x").unwrap();
    // For another --timeout, every voter keeps its slot.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        if let Ok(mut v) = Cluster::try_voters(&mut c) {
            v.sort();
            assert_eq!(v, all, "a voter lost its slot after the stall");
        }
    }
    for n in &cl.nodes {
        assert!(!n.log_text().contains("removing silent voter"), "{}", n.id);
    }
}

#[test]
fn a_frozen_leader_that_lost_its_slot_comes_back() {
    let (cl, leader, all) = three_voters_fast();
    let id = cl.nodes[leader].id.clone();
    let mut others: Vec<_> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cl.nodes[i].client())
        .collect();
    cl.nodes[leader].pause();
    eventually(Duration::from_secs(30), "the frozen leader removed", || {
        let v = Cluster::try_voters(&mut others[0]).ok()?;
        (!v.contains(&id)).then_some(())
    });
    cl.nodes[leader].resume();
    // Writes through it go through once it has found the new leader (a write may time
    // out meanwhile: it is unconditional, so trying again is safe).
    let mut c = cl.nodes[leader].client();
    let r = eventually(
        Duration::from_secs(30),
        "a write through the old leader",
        || c.set("/t/after", -1, b"x").ok(),
    );
    assert_eq!(others[1].get("/t/after").unwrap(), (b"x".to_vec(), r));
    // It registers again and takes its free slot back; nobody else lost theirs.
    eventually(Duration::from_secs(30), "all three voters again", || {
        let mut v = Cluster::try_voters(&mut others[1]).ok()?;
        v.sort();
        (v == all).then_some(())
    });
    cl.nodes.iter().for_each(|n| {
        let removed = n.log_text().matches("removing silent voter").count();
        assert!(removed <= 1, "{} removed {removed} voters", n.id);
    });
}

/// Three voters with `--timeout 2`; returns the cluster, the leader's index, and the
/// sorted voter ids.
fn three_voters_fast() -> (Cluster, usize, Vec<String>) {
    let mut cl = Cluster::new();
    cl.three_voters(&["--timeout", "2"]);
    let leader = eventually(Duration::from_secs(10), "a leader", || {
        (0..3).find(|&i| cl.nodes[i].is_leader())
    });
    let mut c = cl.nodes[leader].client();
    let mut all = Cluster::voters(&mut c);
    all.sort();
    assert_eq!(all.len(), 3);
    (cl, leader, all)
}

/// A three-voter cluster (`--timeout 2`) whose follower `victim` was killed and removed,
/// and a write `r` made while it was away, through a client `c` of node `other`.
struct Removed {
    cl: Cluster,
    leader: usize,
    victim: usize,
    other: usize,
    victim_id: String,
    c: cluster_support::Client,
    r: i64,
}

fn remove_a_follower() -> Removed {
    let mut cl = Cluster::new();
    cl.three_voters(&["--timeout", "2"]);
    let leader = eventually(Duration::from_secs(10), "a leader", || {
        (0..3).find(|&i| cl.nodes[i].is_leader())
    });
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let other = (0..3).find(|&i| i != leader && i != victim).unwrap();
    let victim_id = cl.nodes[victim].id.clone();
    let mut c = cl.nodes[other].client();
    cl.nodes[victim].kill9();
    eventually(Duration::from_secs(30), "the dead voter removed", || {
        let gone = !Cluster::voters(&mut c).contains(&victim_id)
            && !c.getdir_all("/ctl/node").contains(&victim_id);
        gone.then_some(())
    });
    let r = c.set("/t/while-away", -1, b"w").unwrap();
    Removed {
        cl,
        leader,
        victim,
        other,
        victim_id,
        c,
        r,
    }
}

/// The restarted node `back` is a voter again, has the write made while it was away, and
/// takes writes that the rest of the cluster sees.
fn assert_rejoined(
    cl: &Cluster,
    back: usize,
    victim_id: &str,
    c: &mut cluster_support::Client,
    r: i64,
    within: Duration,
) {
    // Reads may time out while the cluster re-elects after the pauses: try again.
    eventually(within, "the node back in a slot", || {
        Cluster::try_voters(c)
            .ok()?
            .iter()
            .any(|v| v == victim_id)
            .then_some(())
    });
    let mut cb = cl.nodes[back].client();
    eventually(Duration::from_secs(30), "the node caught up", || {
        (cb.rev() >= r).then_some(())
    });
    assert_eq!(cb.get("/t/while-away").unwrap(), (b"w".to_vec(), r));
    let r2 = cb.set("/t/back", -1, b"b").unwrap();
    assert_eq!(c.get("/t/back").unwrap(), (b"b".to_vec(), r2));
}

/// Restarts node `i` from its data directory alone; returns its new index in `nodes`.
fn cl_restart(cl: &mut Cluster, i: usize) -> usize {
    let p = cluster_support::Proc::start(&cl.dir(i), &cl.log(i), &[]);
    cl.nodes.push(p);
    cl.nodes.len() - 1
}
