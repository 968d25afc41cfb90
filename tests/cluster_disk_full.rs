//! A node whose disk fills up: the write that does not fit gets a clear error, the node
//! stops (it may not apply anything it cannot keep), and nothing it acknowledged is lost.
//! The disk is "full" for that process alone: `RLIMIT_FSIZE` makes writes past a size fail
//! with EFBIG, which the store reports like ENOSPC.

mod cluster_support;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_support::{eventually, Cluster, Proc};
use doozer_proto::msg::ErrCode;

/// No file of the limited node may grow past this; the redb file starts at ~1.6 MB.
const FILE_LIMIT: u64 = 6 << 20;
/// Values this large fill the limit within a few hundred writes.
const VALUE_BYTES: usize = 60_000;

fn value(i: usize) -> Vec<u8> {
    format!("{i:08}").into_bytes().repeat(VALUE_BYTES / 8)
}

#[test]
fn a_full_disk_refuses_the_write_stops_the_node_and_loses_nothing_acknowledged() {
    let cl = Cluster::new();
    let mut node = Proc::start_limited(
        &cl.dir(0),
        &cl.log(0),
        &["-l", "127.0.0.1:0"],
        Some(FILE_LIMIT),
    );
    let mut c = node.client();
    let mut acked: BTreeMap<String, (Vec<u8>, i64)> = BTreeMap::new();
    let mut refused = None;
    for i in 0..1000 {
        let path = format!("/full/{}", i % 50);
        match c.set(&path, -1, &value(i)) {
            Ok(rev) => {
                acked.insert(path, (value(i), rev));
            }
            Err(e) => {
                refused = Some((path, e));
                break;
            }
        }
    }
    let (path, e) = refused.expect("the disk never filled up");
    assert!(acked.len() >= 10, "only {} writes fit", acked.len());
    // Usually the commit that does not fit is the refused write's own. If the client was
    // slow, the node may have flushed the previous (answered) write's decided state alone
    // and failed there: then the next write finds the connection closing.
    if e.code.is_some() {
        assert_eq!(e.code, Some(ErrCode::Other), "{e:?}");
        assert!(e.detail.contains("disk full"), "{e:?}");
    }

    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node stops after a failed commit");
    assert!(!status.success(), "{status:?}");
    assert!(node.log_text().contains("disk full"));

    // Room again: restart from the data directory alone.
    let node = Proc::start(&cl.dir(0), &cl.log(0), &[]);
    let mut c = node.client();
    let last = acked.values().map(|(_, r)| *r).max().unwrap();
    for (p, (v, rev)) in &acked {
        assert_eq!(c.get(p).unwrap(), (v.clone(), *rev), "{p}");
    }
    // The refused write is not there: its path still holds what was acknowledged before.
    assert_eq!(c.get(&path).unwrap(), acked[&path]);
    let rev = c.set("/full/after", -1, b"x").unwrap();
    assert!(rev > last, "{rev} after {last}");
}

#[test]
fn a_member_whose_disk_fills_stops_and_the_others_go_on() {
    let mut cl = Cluster::new();
    let seed = cl.seed(&[]);
    let seed_addr = cl.nodes[seed].addr.clone();
    cl.join(&seed_addr, &[]);
    let full = Proc::start_limited(
        &cl.dir(2),
        &cl.log(2),
        &["-l", "127.0.0.1:0", "-a", &seed_addr],
        Some(FILE_LIMIT),
    );
    cl.nodes.push(full);
    cl.wait_three_voters();

    // Every write goes through: the other two are a majority without the full node. (The
    // seed leads unless an election moved the lead; if the full node led when it stopped,
    // the write under way may fail and go through after the others elect.)
    let mut c = cl.nodes[0].client();
    let mut acked: BTreeMap<String, (Vec<u8>, i64)> = BTreeMap::new();
    let mut stopped = None;
    for i in 0..2000 {
        let path = format!("/full/{}", i % 50);
        let rev = match c.set(&path, -1, &value(i)) {
            Ok(rev) => rev,
            Err(e) => {
                assert!(
                    e.code.is_some() && cl.nodes[2].log_text().contains("became leader"),
                    "a write failed while the full node did not lead: {e:?}"
                );
                eventually(
                    Duration::from_secs(30),
                    "a write after the election",
                    || c.set(&path, -1, &value(i)).ok(),
                )
            }
        };
        acked.insert(path, (value(i), rev));
        if let Some(st) = cl.nodes[2].wait_exit(Duration::ZERO) {
            stopped = Some(st);
            break;
        }
    }
    let status = stopped.expect("the limited node never filled its disk");
    assert!(!status.success(), "{status:?}");
    assert!(cl.nodes[2].log_text().contains("disk full"));
    for _ in 0..20 {
        let i = acked.len() + 5000;
        let rev = c.set("/full/later", -1, &value(i)).unwrap();
        acked.insert("/full/later".into(), (value(i), rev));
    }

    // Room again: it restarts from its data directory and catches up.
    cl.nodes[2] = Proc::start(&cl.dir(2), &cl.log(2), &[]);
    let mut c2 = cl.nodes[2].client();
    for (p, (v, rev)) in &acked {
        let got = eventually(
            Duration::from_secs(30),
            "the restarted node's reads",
            || c2.get(p).ok(),
        );
        assert_eq!(got, (v.clone(), *rev), "{p}");
    }
}
