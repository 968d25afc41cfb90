//! A whole cluster killed and restarted keeps every acknowledged write and revision.

mod cluster_support;

use cluster_support::{Cluster, Proc};

#[test]
fn full_cluster_restart_keeps_data_and_revisions() {
    let mut cl = Cluster::new();
    cl.three_voters(&[]);
    let mut c = cl.nodes[0].client();
    let mut written = Vec::new();
    for i in 0..50 {
        let path = format!("/r/{i}");
        let rev = c.set(&path, -1, format!("v{i}").as_bytes()).unwrap();
        written.push((path, format!("v{i}"), rev));
    }
    drop(c);
    let addrs: Vec<String> = cl.nodes.iter().map(|p| p.addr.clone()).collect();
    for p in cl.nodes.iter_mut() {
        p.kill9();
    }
    // Restart every node from its data directory alone, all at once: each asks the others
    // whether it is still a member while they are starting too.
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let (dir, log) = (cl.dir(i), cl.log(i));
            std::thread::spawn(move || Proc::start(&dir, &log, &[]))
        })
        .collect();
    let restarted: Vec<Proc> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    for (p, addr) in restarted.iter().zip(&addrs) {
        assert_eq!(&p.addr, addr);
    }
    for p in &restarted {
        let mut c = p.client();
        for (path, v, rev) in &written {
            assert_eq!(
                c.get(path).unwrap(),
                (v.clone().into_bytes(), *rev),
                "on {}",
                p.addr
            );
        }
    }
    let mut c = restarted[1].client();
    let last = written.last().unwrap().2;
    let rev = c.set("/r/after", 0, b"x").unwrap();
    assert!(rev > last);
    let mut c2 = restarted[2].client();
    assert_eq!(c2.get("/r/after").unwrap(), (b"x".to_vec(), rev));
}
