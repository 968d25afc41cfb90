//! The client protocol on a three-node cluster: every node answers every verb, reads
//! without a rev are linearizable whichever node serves them, and a WAIT on one node
//! wakes for a write made through another.

#[path = "protocol_support.rs"]
mod support;

use std::collections::BTreeSet;

use doozer_proto::msg::{Response, Verb, FLAG_SET};
use support::{req, Server};

#[test]
fn reads_waits_and_writes_across_nodes() {
    let a = Server::start();
    let b = Server::start_with(&["-a", &a.addr], &[]);
    let c = Server::start_with(&["-a", &a.addr], &[]);
    let nodes = [&a, &b, &c];
    let ids: BTreeSet<&str> = nodes.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    let mut conns: Vec<_> = nodes.iter().map(|s| s.raw()).collect();
    for (i, s) in nodes.iter().enumerate() {
        let r = conns[i].call(&req(Verb::SelfId, 1));
        assert_eq!(r.value.as_deref(), Some(s.id.as_bytes()));
    }

    // A WAIT on c for a write made through a.
    let now = conns[2].call(&req(Verb::Rev, 2)).rev.unwrap();
    conns[2].send(&req(Verb::Wait, 3).with_path("/x/w").with_rev(now + 1));
    let r = conns[0].call(
        &req(Verb::Set, 4)
            .with_path("/x/w")
            .with_rev(-1)
            .with_value("hi"),
    );
    let wrote = r.rev.unwrap();
    let r = conns[2].recv();
    assert_eq!(
        r,
        Response::ok(Some(3))
            .with_flags(FLAG_SET)
            .with_rev(wrote)
            .with_path("/x/w")
            .with_value("hi")
    );

    // Write through one node, read at once through the next: the read barrier makes the
    // write visible there without waiting or retrying.
    let rounds: usize = std::env::var("PROTOCOL_CLUSTER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for i in 0..rounds {
        let w = i % 3;
        let rd = (i + 1) % 3;
        let value = format!("v{i}");
        let r = conns[w].call(
            &req(Verb::Set, 10)
                .with_path("/x/k")
                .with_rev(-1)
                .with_value(value.clone()),
        );
        let rev = r
            .rev
            .unwrap_or_else(|| panic!("set through node {w}: {r:?}"));
        let r = conns[rd].call(&req(Verb::Get, 11).with_path("/x/k"));
        assert_eq!(
            (r.rev, r.value.as_deref()),
            (Some(rev), Some(value.as_bytes())),
            "round {i}: read through node {rd} after a write through node {w}"
        );
        let r = conns[rd].call(&req(Verb::Stat, 12).with_path("/x/k"));
        assert_eq!(r.rev, Some(rev));
    }

    // Every node applies deletes and nops as such (the original's slaves turned deletes
    // into empty files and nops into /ctl/err writes, doozer-protocol.md §3.3).
    let err_before = conns[2].call(&req(Verb::Get, 20).with_path("/ctl/err")).rev;
    let r = conns[0].call(&req(Verb::Del, 21).with_path("/x/k").with_rev(-1));
    assert_eq!(r, Response::ok(Some(21)));
    let before_nop = conns[1].call(&req(Verb::Rev, 23)).rev.unwrap();
    let r = conns[1].call(&req(Verb::Nop, 22));
    assert_eq!(r, Response::ok(Some(22)));
    for conn in conns.iter_mut() {
        let r = conn.call(&req(Verb::Get, 24).with_path("/x/k"));
        assert_eq!((r.rev, r.value.as_deref()), (Some(0), Some(&b""[..])));
        let r = conn.call(&req(Verb::Stat, 25).with_path("/x"));
        assert_eq!((r.rev, r.len), (Some(-2), Some(1)), "only /x/w is left");
        let r = conn.call(&req(Verb::Wait, 26).with_path("/").with_rev(before_nop + 1));
        assert_eq!((r.path.as_deref(), r.flags), (Some("/"), Some(0)));
    }
    assert_eq!(
        conns[2].call(&req(Verb::Get, 27).with_path("/ctl/err")).rev,
        err_before
    );
}
