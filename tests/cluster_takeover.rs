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
            let v = Cluster::voters(&mut c);
            (v.contains(&learner) && !v.contains(&victim_id)).then_some(())
        },
    );
    assert!(c.getdir_all(&format!("/ctl/node/{victim_id}")).is_empty());
    // The new membership takes writes.
    let r = cl_c.set("/t/y", -1, b"2").unwrap();
    assert_eq!(c.get("/t/y").unwrap(), (b"2".to_vec(), r));
}
