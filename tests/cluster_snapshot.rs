//! A node joining after more revisions than the history holds catches up by snapshot.

mod cluster_support;

use std::time::Duration;

use cluster_support::{eventually, Cluster};
use doozer_proto::msg::{ErrCode, Request, Verb};

#[test]
fn late_joiner_catches_up_by_snapshot() {
    let mut cl = Cluster::new();
    let small = ["--hist", "150", "--retain-slots", "8"];
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
    // It also holds the cluster's history (it came with the snapshot): WAIT at past
    // revisions answers as on the node that saw them written.
    let wait = |c: &mut cluster_support::Client, rev: i64| {
        let r = c
            .call(Request::new(Verb::Wait).with_path("/s/**").with_rev(rev))
            .unwrap();
        (r.err_code, r.path, r.rev, r.value, r.flags)
    };
    // (History is 150 revisions: the first writes are gone everywhere.)
    assert_eq!(wait(&mut cj, 1).0, Some(ErrCode::TooLate as i32));
    for rev in last - 30..=last {
        let on_seed = wait(&mut c, rev);
        assert_eq!(on_seed.0, None, "the seed keeps rev {rev}");
        assert_eq!(wait(&mut cj, rev), on_seed, "WAIT at rev {rev}");
    }
    // And it goes on following the decided stream.
    let r = c.set("/s/new", -1, b"n").unwrap();
    eventually(Duration::from_secs(10), "joiner follows", || {
        (cj.rev() >= r).then_some(())
    });
    assert_eq!(cj.get("/s/new").unwrap(), (b"n".to_vec(), r));
}
