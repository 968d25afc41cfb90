//! Tags and pipelining against a real `doozerd`: answers in any order, TAG_IN_USE for a
//! duplicate outstanding tag, many requests in flight, WAITs cancelled with their
//! connection, and access secrets (doozer-protocol.md §1.4, §2.8).

#[path = "protocol_support.rs"]
mod support;

use std::collections::BTreeMap;

use doozer_proto::codec::encode_frame;
use doozer_proto::msg::{ErrCode, Response, Verb, FLAG_SET};
use support::{req, Server};

#[test]
fn answers_come_back_in_any_order() {
    let s = Server::start();
    let mut c = s.raw();
    let now = c.call(&req(Verb::Rev, 1)).rev.unwrap();
    // A GET at a future rev waits; the REV read after it is answered first.
    c.send(&req(Verb::Get, 2).with_path("/fut").with_rev(now + 1000));
    c.send(&req(Verb::Wait, 3).with_path("/pipe/x").with_rev(now + 1));
    let r = c.call(&req(Verb::Rev, 4));
    assert_eq!(r.tag, Some(4), "{r:?}");
    // A write lets the WAIT go; the GET still waits for its rev.
    c.send(
        &req(Verb::Set, 5)
            .with_path("/pipe/x")
            .with_rev(-1)
            .with_value("v"),
    );
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let r = c.recv();
        got.insert(r.tag.unwrap(), r);
    }
    let set_rev = got[&5].rev.unwrap();
    assert_eq!(
        got[&3],
        Response::ok(Some(3))
            .with_flags(FLAG_SET)
            .with_rev(set_rev)
            .with_path("/pipe/x")
            .with_value("v")
    );
    assert!(!got.contains_key(&2));
}

#[test]
fn duplicate_outstanding_tag_is_refused() {
    let s = Server::start();
    let mut c = s.raw();
    let now = c.call(&req(Verb::Rev, 1)).rev.unwrap();
    c.send(&req(Verb::Wait, 7).with_path("/dup/**").with_rev(now + 1));
    let r = c.call(&req(Verb::Get, 7).with_path("/dup/a"));
    assert_eq!(r, Response::err(Some(7), ErrCode::TagInUse));
    let r = c.call(
        &req(Verb::Set, 8)
            .with_path("/dup/a")
            .with_rev(-1)
            .with_value("1"),
    );
    let mut answers = [r, c.recv()];
    answers.sort_by_key(|r| r.tag);
    assert_eq!(answers[0].tag, Some(7));
    assert_eq!(answers[0].path.as_deref(), Some("/dup/a"));
    assert_eq!(answers[1].tag, Some(8));
    // Answered, so the tag is free again.
    let r = c.call(&req(Verb::Rev, 7));
    assert!(!r.is_err(), "{r:?}");
}

#[test]
fn many_requests_in_flight() {
    let s = Server::start();
    let mut c = s.raw();
    let n: i32 = std::env::var("PROTOCOL_PIPELINE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // More requests than the per-connection limit (4096): the server stops reading until
    // answers drain, so write from another thread while this one reads.
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut buf = Vec::new();
        for t in 0..n {
            let q = if t % 2 == 0 {
                req(Verb::Rev, t)
            } else {
                req(Verb::Set, t)
                    .with_path(format!("/many/{}", t % 16))
                    .with_rev(-1)
                    .with_value("x")
            };
            buf.extend_from_slice(&encode_frame(&q));
        }
        w.write_all(&buf).unwrap();
    });
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let r = c.recv();
        assert!(!r.is_err(), "{r:?}");
        let t = r.tag.unwrap() as usize;
        assert!(!seen[t], "tag {t} answered twice");
        seen[t] = true;
    }
    writer.join().unwrap();
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn closing_a_connection_cancels_its_waits() {
    let s = Server::start();
    let mut c = s.raw();
    let now = c.call(&req(Verb::Rev, 1)).rev.unwrap();
    for t in 0..100 {
        c.send(
            &req(Verb::Wait, 10 + t)
                .with_path("/gone/**")
                .with_rev(now + 1),
        );
    }
    c.call(&req(Verb::Rev, 2));
    drop(c);
    // The session ends (and logs it) only once every task of the connection is gone: the
    // 100 WAITs would keep it open forever if they were not cancelled.
    s.wait_log("the close of the connection with 102 requests", |log| {
        log.lines()
            .any(|l| l.contains("client disconnected") && l.contains("requests=102 "))
    });
    // Nothing is woken by a later write, and the node carries on.
    let mut d = s.raw();
    let r = d.call(&req(Verb::Set, 1).with_path("/gone/x").with_rev(-1));
    assert!(!r.is_err());
}

#[test]
fn secrets_gate_reads_and_writes() {
    let s = Server::start_with(&[], &[("DOOZER_RWSECRET", "rw-secret")]);
    let mut c = s.raw();
    let denied = |t| Response::err_with_detail(Some(t), ErrCode::Other, "permission denied");
    // Only the RW secret set: anonymous clients read.
    assert!(!c.call(&req(Verb::Get, 1).with_path("/ctl/name")).is_err());
    assert_eq!(
        c.call(&req(Verb::Set, 2).with_path("/s").with_rev(-1)),
        denied(2)
    );
    assert_eq!(c.call(&req(Verb::Nop, 3)), denied(3));
    assert_eq!(c.call(&req(Verb::Access, 4).with_value("wrong")), denied(4));
    assert_eq!(
        c.call(&req(Verb::Access, 5).with_value("rw-secret")),
        Response::ok(Some(5))
    );
    assert!(!c
        .call(&req(Verb::Set, 6).with_path("/s").with_rev(-1))
        .is_err());
    // Another connection starts anonymous again.
    let mut d = s.raw();
    assert_eq!(
        d.call(&req(Verb::Del, 1).with_path("/s").with_rev(-1)),
        denied(1)
    );
    assert!(!d.call(&req(Verb::Rev, 2)).is_err());
}

/// GET, GETDIR, STAT and WALK at a future rev wait for it, then answer as of that rev
/// (doozer-protocol.md §11: reads at a future rev block).
#[test]
fn reads_at_a_future_rev_wait_for_it() {
    let s = Server::start();
    let mut c = s.raw();
    let now = c.call(&req(Verb::Rev, 1)).rev.unwrap();
    let at = now + 3;
    c.send(&req(Verb::Get, 2).with_path("/fr/c").with_rev(at));
    c.send(
        &req(Verb::Getdir, 3)
            .with_path("/fr")
            .with_offset(2)
            .with_rev(at),
    );
    c.send(&req(Verb::Stat, 4).with_path("/fr").with_rev(at));
    c.send(
        &req(Verb::Walk, 5)
            .with_path("/fr/*")
            .with_offset(2)
            .with_rev(at),
    );
    // Nothing is answered before the rev exists: the REV sent after them comes first.
    assert_eq!(c.call(&req(Verb::Rev, 6)).tag, Some(6));
    let mut w = s.raw();
    let mut revs = Vec::new();
    for (t, p) in [(1, "/fr/a"), (2, "/fr/b"), (3, "/fr/c"), (4, "/fr/d")] {
        let r = w.call(&req(Verb::Set, t).with_path(p).with_rev(-1).with_value(p));
        revs.push(r.rev.unwrap());
    }
    assert!(
        revs[2] >= at,
        "{revs:?} (another write took a rev meanwhile?)"
    );
    let mut got = BTreeMap::new();
    for _ in 0..4 {
        let r = c.recv();
        got.insert(r.tag.unwrap(), r);
    }
    // At rev `at` (= the third set if nothing else wrote), /fr/d does not exist yet.
    if revs[2] == at {
        assert_eq!(
            got[&2],
            Response::ok(Some(2)).with_rev(at).with_value("/fr/c")
        );
        assert_eq!(got[&3], Response::ok(Some(3)).with_path("c"));
        assert_eq!(got[&4], Response::ok(Some(4)).with_rev(-2).with_len(3));
        assert_eq!(got[&5].path.as_deref(), Some("/fr/c"));
    }
    for r in got.values() {
        assert!(!r.is_err(), "{r:?}");
    }
}
