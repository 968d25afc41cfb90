//! Three real `doozerd` processes: a cluster formed with -a, writes on any node.

mod cluster_support;

use cluster_support::{Client, Cluster};

#[test]
fn three_nodes_agree() {
    let mut cl = Cluster::new();
    cl.three_voters(&[]);
    let addrs: Vec<String> = cl.nodes.iter().map(|p| p.addr.clone()).collect();

    // Each node registered itself under /ctl/node.
    let mut c0 = Client::connect(&addrs[0]);
    let mut nodes = c0.getdir_all("/ctl/node");
    nodes.sort();
    let mut ids: Vec<String> = cl.nodes.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    assert_eq!(nodes, ids);

    // A write on any node is visible, at the same revision, on every node.
    let mut revs = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let mut c = Client::connect(a);
        let rev = c
            .set(&format!("/k/{i}"), -1, format!("v{i}").as_bytes())
            .unwrap();
        revs.push(rev);
    }
    for a in &addrs {
        let mut c = Client::connect(a);
        for (i, rev) in revs.iter().enumerate() {
            assert_eq!(
                c.get(&format!("/k/{i}")).unwrap(),
                (format!("v{i}").into_bytes(), *rev),
                "on {a}"
            );
        }
    }
    // CAS through a follower is decided once for everyone.
    let mut c1 = Client::connect(&addrs[1]);
    let mut c2 = Client::connect(&addrs[2]);
    let r = c1.set("/k/0", revs[0], b"c1").unwrap();
    assert!(c2.set("/k/0", revs[0], b"c2").is_err());
    assert_eq!(c2.get("/k/0").unwrap(), (b"c1".to_vec(), r));
}
