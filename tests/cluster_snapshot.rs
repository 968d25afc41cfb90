//! A node joining after more revisions than the history holds catches up by snapshot.

mod cluster_support;

use std::time::Duration;

use cluster_support::{eventually, Cluster};

#[test]
fn late_joiner_catches_up_by_snapshot() {
    let mut cl = Cluster::new();
    let small = ["--hist", "20", "--retain-slots", "8"];
    let s = cl.seed(&small);
    let seed_addr = cl.nodes[s].addr.clone();
    let mut c = cl.nodes[s].client();
    let mut last = 0;
    for i in 0..200 {
        last = c
            .set(&format!("/s/{}", i % 50), -1, format!("v{i}").as_bytes())
            .unwrap();
    }
    let j = cl.join(&seed_addr, &small);
    let mut cj = cl.nodes[j].client();
    // The joiner serves the data it never saw written.
    eventually(Duration::from_secs(30), "joiner caught up", || {
        (cj.rev() >= last).then_some(())
    });
    for k in 0..50 {
        let i = 150 + k;
        assert_eq!(
            cj.get(&format!("/s/{k}")).unwrap().0,
            format!("v{i}").into_bytes()
        );
    }
    assert!(
        cl.nodes[j].log_text().contains("snapshot installed"),
        "the joiner should have caught up through a snapshot"
    );
    // And it goes on following the decided stream.
    let r = c.set("/s/new", -1, b"n").unwrap();
    eventually(Duration::from_secs(10), "joiner follows", || {
        (cj.rev() >= r).then_some(())
    });
    assert_eq!(cj.get("/s/new").unwrap(), (b"n".to_vec(), r));
}
