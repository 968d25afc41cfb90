//! Session tests against the fake node, over an in-memory duplex pipe.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use doozer_proto::codec::ClientCodec;
use doozer_proto::msg::{ErrCode, Request, Response, Verb, FLAG_DEL, FLAG_SET};
use doozer_proto::Message;
use doozer_store::Op;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::codec::Framed;

use super::fake::{Failure, FakeNode};
use super::{serve, Secrets, SessionConfig};
use crate::handle::{NodeHandle as _, WriteResult};

/// How long any single answer may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

struct Client {
    io: Framed<DuplexStream, ClientCodec>,
}

fn connect(node: &FakeNode, cfg: SessionConfig) -> Client {
    connect_with_pipe(node, cfg, 1 << 20)
}

/// A client whose pipe to the server buffers only `pipe_bytes` in each direction.
fn connect_with_pipe(node: &FakeNode, cfg: SessionConfig, pipe_bytes: usize) -> Client {
    let (ours, theirs) = tokio::io::duplex(pipe_bytes);
    tokio::spawn(serve(theirs, node.clone(), Arc::new(cfg), "test".into()));
    Client {
        io: Framed::new(ours, ClientCodec::new()),
    }
}

impl Client {
    async fn send(&mut self, req: Request) {
        self.io.send(req).await.expect("send");
    }

    async fn recv(&mut self) -> Response {
        tokio::time::timeout(DEADLINE, self.io.next())
            .await
            .expect("no answer in time")
            .expect("connection closed")
            .expect("undecodable answer")
    }

    async fn call(&mut self, req: Request) -> Response {
        self.send(req).await;
        self.recv().await
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// Waits until the server closes the connection; panics on an answer instead.
    async fn expect_closed(&mut self) {
        match tokio::time::timeout(DEADLINE, self.io.next()).await {
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(r))) => panic!("expected close, got {r:?}"),
            Err(_) => panic!("connection not closed in time"),
        }
    }
}

fn req(verb: Verb, tag: i32) -> Request {
    Request::new(verb).with_tag(tag)
}

fn code(r: &Response) -> Option<ErrCode> {
    r.error_code()
}

/// Polls `cond` (yielding to other tasks) until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
}

// ---- The wire vectors of the original server, byte for byte ----

#[tokio::test]
async fn wire_vectors_replay_byte_for_byte() {
    // The original's run was at rev 59 when the vectors start; every failed mutation takes
    // a rev as in the original, so after 59 nops ours lands on exactly the same revs.
    let node = FakeNode::new(100_000);
    node.nops(59);
    let mut c = connect(&node, SessionConfig::default());
    let text = include_str!("../../../proto/tests/data/doozer-wire-vectors.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let hex = data_encoding::HEXLOWER_PERMISSIVE;
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let frame = hex
            .decode(v["request_frame_hex"].as_str().unwrap().as_bytes())
            .unwrap();
        let want = hex
            .decode(v["response_hex"].as_str().unwrap().as_bytes())
            .unwrap();
        c.raw(&frame).await;
        let got = c.recv().await;
        assert_eq!(
            data_encoding::HEXLOWER.encode(&got.encode_to_vec()),
            data_encoding::HEXLOWER.encode(&want),
            "vector {name:?}: got {got:?}"
        );
    }
}

// ---- Verbs ----

#[tokio::test]
async fn set_get_del_round_trip() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    let r = c
        .call(
            req(Verb::Set, 1)
                .with_path("/a/b")
                .with_rev(0)
                .with_value("hi"),
        )
        .await;
    assert_eq!((r.tag, code(&r)), (Some(1), None));
    let rev = r.rev.expect("SET answers its rev");
    assert_eq!(rev, 1);
    let r = c.call(req(Verb::Get, 2).with_path("/a/b")).await;
    assert_eq!((r.rev, r.value.as_deref()), (Some(rev), Some(&b"hi"[..])));
    // Values are raw bytes.
    let bin = Bytes::from_static(&[0, 255, 10, 13, 0]);
    let r = c
        .call(
            req(Verb::Set, 3)
                .with_path("/bin")
                .with_rev(-1)
                .with_value(bin.clone()),
        )
        .await;
    assert!(!r.is_err());
    let r = c.call(req(Verb::Get, 4).with_path("/bin")).await;
    assert_eq!(r.value, Some(bin));
    // SET without a value is an empty file.
    let r = c
        .call(req(Verb::Set, 5).with_path("/empty").with_rev(-1))
        .await;
    assert!(!r.is_err());
    let r = c.call(req(Verb::Get, 6).with_path("/empty")).await;
    assert_eq!(r.value.as_deref(), Some(&b""[..]));
    // DEL answers with the tag only.
    let r = c
        .call(req(Verb::Del, 7).with_path("/a/b").with_rev(rev))
        .await;
    assert_eq!(r, Response::ok(Some(7)));
    let r = c.call(req(Verb::Get, 8).with_path("/a/b")).await;
    assert_eq!((r.rev, r.value.as_deref()), (Some(0), Some(&b""[..])));
    // The directory went with its last file.
    let r = c.call(req(Verb::Stat, 9).with_path("/a")).await;
    assert_eq!((r.rev, r.len), (Some(0), Some(0)));
}

#[tokio::test]
async fn rev_self_nop() {
    let node = FakeNode::new(1000);
    node.nops(3);
    let mut c = connect(&node, SessionConfig::default());
    let r = c.call(req(Verb::Rev, 1)).await;
    assert_eq!(r, Response::ok(Some(1)).with_rev(3));
    let r = c.call(req(Verb::SelfId, 2)).await;
    assert_eq!(r, Response::ok(Some(2)).with_value("HZAVFJHCLRH5WCUT"));
    let r = c.call(req(Verb::Nop, 3)).await;
    assert_eq!(r, Response::ok(Some(3)));
    assert_eq!(node.store().rev(), 4);
    // A nop is an event at "/" with flags 0, seen by /**.
    let r = c
        .call(req(Verb::Wait, 4).with_path("/**").with_rev(4))
        .await;
    assert_eq!(
        (r.path.as_deref(), r.rev, r.flags, r.value.as_deref()),
        (Some("/"), Some(4), Some(0), Some(&b""[..]))
    );
}

#[tokio::test]
async fn untagged_request_gets_untagged_answer() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    let r = c.call(Request::new(Verb::Rev)).await;
    assert_eq!(r.tag, None);
    assert_eq!(r.rev, Some(0));
    // Two untagged requests in flight are not a tag conflict.
    c.send(Request::new(Verb::Rev)).await;
    c.send(Request::new(Verb::SelfId)).await;
    assert!(!c.recv().await.is_err());
    assert!(!c.recv().await.is_err());
}

#[tokio::test]
async fn getdir_lists_and_errors() {
    let node = FakeNode::new(1000);
    for p in ["/d/b", "/d/a", "/d/c/x", "/f"] {
        node.apply(Op::Set {
            path: p.into(),
            rev: -1,
            value: Bytes::new(),
        });
    }
    let mut c = connect(&node, SessionConfig::default());
    let mut names = Vec::new();
    for i in 0.. {
        let r = c
            .call(req(Verb::Getdir, i).with_path("/d").with_offset(i))
            .await;
        if code(&r) == Some(ErrCode::Range) {
            break;
        }
        assert!(!r.is_err(), "{r:?}");
        names.push(r.path.unwrap());
    }
    assert_eq!(names, ["a", "b", "c"]);
    let cases = [
        (
            Request::new(Verb::Getdir).with_path("/f").with_offset(0),
            ErrCode::NotDir,
        ),
        (
            Request::new(Verb::Getdir).with_path("/nope").with_offset(0),
            ErrCode::NoEnt,
        ),
        (
            Request::new(Verb::Getdir).with_path("/d").with_offset(-1),
            ErrCode::Range,
        ),
        (
            Request::new(Verb::Getdir).with_path("/d"),
            ErrCode::MissingArg,
        ),
        (
            Request::new(Verb::Getdir).with_offset(0),
            ErrCode::MissingArg,
        ),
        (
            Request::new(Verb::Getdir).with_path("").with_offset(0),
            ErrCode::BadPath,
        ),
        (
            Request::new(Verb::Getdir).with_path("d").with_offset(0),
            ErrCode::BadPath,
        ),
    ];
    for (i, (r, want)) in cases.into_iter().enumerate() {
        let got = c.call(r.with_tag(100 + i as i32)).await;
        assert_eq!(code(&got), Some(want), "case {i}: {got:?}");
    }
    // The root lists /d and /f.
    let r = c
        .call(req(Verb::Getdir, 200).with_path("/").with_offset(1))
        .await;
    assert_eq!(r.path.as_deref(), Some("f"));
}

#[tokio::test]
async fn stat_files_dirs_missing_and_invalid() {
    let node = FakeNode::new(1000);
    let WriteResult::Ok { rev } = node.apply(Op::Set {
        path: "/s/f".into(),
        rev: -1,
        value: Bytes::from_static(b"12345"),
    }) else {
        panic!()
    };
    let mut c = connect(&node, SessionConfig::default());
    let r = c.call(req(Verb::Stat, 1).with_path("/s/f")).await;
    assert_eq!(r, Response::ok(Some(1)).with_rev(rev).with_len(5));
    let r = c.call(req(Verb::Stat, 2).with_path("/s")).await;
    assert_eq!(r, Response::ok(Some(2)).with_rev(-2).with_len(1));
    for (i, p) in [Some("/nope"), Some(""), Some("/a_b"), Some("rel"), None]
        .into_iter()
        .enumerate()
    {
        let mut q = req(Verb::Stat, 10 + i as i32);
        q.path = p.map(String::from);
        let r = c.call(q).await;
        assert_eq!(
            r,
            Response::ok(Some(10 + i as i32)).with_rev(0).with_len(0),
            "{p:?}"
        );
    }
}

#[tokio::test]
async fn walk_files_in_order() {
    let node = FakeNode::new(1000);
    for p in ["/w/b", "/w/a/2", "/w/a/1", "/x"] {
        node.apply(Op::Set {
            path: p.into(),
            rev: -1,
            value: Bytes::from(p.to_string()),
        });
    }
    let mut c = connect(&node, SessionConfig::default());
    let mut seen = Vec::new();
    for i in 0.. {
        let r = c
            .call(req(Verb::Walk, i).with_path("/w/**").with_offset(i))
            .await;
        if code(&r) == Some(ErrCode::Range) {
            break;
        }
        assert_eq!(r.flags, Some(FLAG_SET));
        let p = r.path.clone().unwrap();
        assert_eq!(r.value.as_deref(), Some(p.as_bytes()));
        assert!(r.rev.unwrap() > 0);
        seen.push(p);
    }
    assert_eq!(seen, ["/w/a/1", "/w/a/2", "/w/b"]);
    let r = c
        .call(req(Verb::Walk, 50).with_path("/w/*").with_offset(-1))
        .await;
    assert_eq!(code(&r), Some(ErrCode::Range));
    let r = c.call(req(Verb::Walk, 51).with_path("/w/*")).await;
    assert_eq!(code(&r), Some(ErrCode::MissingArg));
    let r = c.call(req(Verb::Walk, 52).with_offset(0)).await;
    assert_eq!(code(&r), Some(ErrCode::MissingArg));
    let r = c
        .call(req(Verb::Walk, 53).with_path("/w/[").with_offset(0))
        .await;
    assert_eq!(code(&r), Some(ErrCode::Other));
    assert_eq!(r.err_detail.as_deref(), Some("invalid glob pattern: /w/["));
}

#[tokio::test]
async fn get_errors() {
    let node = FakeNode::new(1000);
    node.apply(Op::Set {
        path: "/g/f".into(),
        rev: -1,
        value: Bytes::new(),
    });
    let mut c = connect(&node, SessionConfig::default());
    let r = c.call(req(Verb::Get, 1)).await;
    assert_eq!(r, Response::err(Some(1), ErrCode::MissingArg));
    let r = c.call(req(Verb::Get, 2).with_path("/g")).await;
    assert_eq!(r, Response::err(Some(2), ErrCode::IsDir));
    // The original crashed on "" and guessed on relative paths: BAD_PATH.
    for (t, p) in [(3, ""), (4, "ctl/name"), (5, "/a_b"), (6, "/a/"), (7, "//")] {
        let r = c.call(req(Verb::Get, t).with_path(p)).await;
        assert_eq!(r, Response::err(Some(t), ErrCode::BadPath), "{p:?}");
    }
    let long = format!("/{}", "a".repeat(5000));
    let r = c.call(req(Verb::Get, 8).with_path(long)).await;
    assert_eq!(code(&r), Some(ErrCode::BadPath));
}

#[tokio::test]
async fn set_and_del_errors() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    let set = |t: i32| req(Verb::Set, t);
    let del = |t: i32| req(Verb::Del, t);
    let r = c
        .call(set(1).with_path("/e/f").with_rev(0).with_value("1"))
        .await;
    let rev = r.rev.unwrap();
    let cases: Vec<(Request, ErrCode)> = vec![
        (set(2).with_value("x").with_rev(-1), ErrCode::MissingArg),
        (
            set(3).with_path("/e/g").with_value("x"),
            ErrCode::MissingArg,
        ),
        (set(4).with_path("/e/a_b").with_rev(-1), ErrCode::BadPath),
        (set(5).with_path("").with_rev(-1), ErrCode::BadPath),
        (set(6).with_path("/e").with_rev(-1), ErrCode::IsDir),
        (set(7).with_path("/e/f/g").with_rev(-1), ErrCode::NotDir),
        (set(8).with_path("/e/f").with_rev(0), ErrCode::RevMismatch),
        (
            set(9).with_path("/e/f").with_rev(rev - 1),
            ErrCode::RevMismatch,
        ),
        (
            set(10).with_path("/e/new").with_rev(-5),
            ErrCode::RevMismatch,
        ),
        (del(11).with_path("/e/f"), ErrCode::MissingArg),
        (del(12).with_rev(-1), ErrCode::MissingArg),
        (
            del(13).with_path("/e/f").with_rev(rev - 1),
            ErrCode::RevMismatch,
        ),
        (del(14).with_path("/e").with_rev(-1), ErrCode::IsDir),
        (del(15).with_path("e").with_rev(-1), ErrCode::BadPath),
    ];
    for (r, want) in cases {
        let t = r.tag;
        let got = c.call(r).await;
        assert_eq!(got, Response::err(t, want), "tag {t:?}");
    }
    // A failed mutation used up a rev and wrote /ctl/err (doozer-protocol.md §2.7).
    let r = c.call(req(Verb::Get, 20).with_path("/ctl/err")).await;
    assert!(r.rev.unwrap() > rev, "{r:?}");
    // The larger rev works (any rev >= the file's rev).
    let r = c
        .call(
            set(21)
                .with_path("/e/f")
                .with_rev(rev + 100)
                .with_value("2"),
        )
        .await;
    assert!(!r.is_err(), "{r:?}");
    // Deleting a missing file succeeds.
    let r = c.call(del(22).with_path("/e/missing").with_rev(0)).await;
    assert_eq!(r, Response::ok(Some(22)));
}

#[tokio::test]
async fn huge_value_is_refused_before_consensus() {
    let node = FakeNode::new(1000);
    let cfg = SessionConfig {
        max_value: 10,
        ..SessionConfig::default()
    };
    let mut c = connect(&node, cfg);
    let r = c
        .call(
            req(Verb::Set, 1)
                .with_path("/v")
                .with_rev(-1)
                .with_value(vec![b'x'; 11]),
        )
        .await;
    assert_eq!(code(&r), Some(ErrCode::Other));
    assert_eq!(
        r.err_detail.as_deref(),
        Some("value of 11 bytes exceeds the limit of 10 bytes")
    );
    assert_eq!(node.writes(), 0);
    let r = c
        .call(
            req(Verb::Set, 2)
                .with_path("/v")
                .with_rev(-1)
                .with_value(vec![b'x'; 10]),
        )
        .await;
    assert!(!r.is_err());
}

#[tokio::test]
async fn unknown_and_missing_verbs() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    for (t, v) in [
        (1, Some(0)),
        (2, Some(4)),
        (3, Some(10)),
        (4, Some(42)),
        (5, None),
        (6, Some(-1)),
    ] {
        let r = c
            .call(Request {
                tag: Some(t),
                verb: v,
                ..Request::default()
            })
            .await;
        assert_eq!(r, Response::err(Some(t), ErrCode::UnknownVerb), "{v:?}");
    }
}

// ---- Revisions ----

#[tokio::test]
async fn reads_at_past_revs_and_too_late() {
    let node = FakeNode::new(5);
    let mut c = connect(&node, SessionConfig::default());
    let first = c
        .call(
            req(Verb::Set, 1)
                .with_path("/r")
                .with_rev(-1)
                .with_value("one"),
        )
        .await
        .rev
        .unwrap();
    let second = c
        .call(
            req(Verb::Set, 2)
                .with_path("/r")
                .with_rev(-1)
                .with_value("two"),
        )
        .await
        .rev
        .unwrap();
    let r = c
        .call(req(Verb::Get, 3).with_path("/r").with_rev(first))
        .await;
    assert_eq!(
        (r.rev, r.value.as_deref()),
        (Some(first), Some(&b"one"[..]))
    );
    let r = c
        .call(req(Verb::Stat, 4).with_path("/r").with_rev(first))
        .await;
    assert_eq!((r.rev, r.len), (Some(first), Some(3)));
    let r = c
        .call(req(Verb::Get, 5).with_path("/r").with_rev(second))
        .await;
    assert_eq!(r.value.as_deref(), Some(&b"two"[..]));
    // Push the first revs out of the 5-rev history.
    node.nops(20);
    for r in [
        req(Verb::Get, 6).with_path("/r").with_rev(first),
        req(Verb::Stat, 7).with_path("/r").with_rev(first),
        req(Verb::Getdir, 8)
            .with_path("/")
            .with_offset(0)
            .with_rev(first),
        req(Verb::Walk, 9)
            .with_path("/**")
            .with_offset(0)
            .with_rev(first),
        req(Verb::Wait, 10).with_path("/**").with_rev(first),
    ] {
        let t = r.tag;
        let got = c.call(r).await;
        assert_eq!(got, Response::err(t, ErrCode::TooLate));
    }
}

#[tokio::test]
async fn read_at_future_rev_waits_for_it() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    c.send(req(Verb::Get, 1).with_path("/fut").with_rev(2))
        .await;
    // REV is answered while the GET waits: answers come in any order.
    let r = c.call(req(Verb::Rev, 2)).await;
    assert_eq!((r.tag, r.rev), (Some(2), Some(0)));
    c.send(
        req(Verb::Set, 3)
            .with_path("/fut")
            .with_rev(-1)
            .with_value("a"),
    )
    .await;
    c.send(
        req(Verb::Set, 4)
            .with_path("/fut")
            .with_rev(-1)
            .with_value("b"),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv().await);
    }
    got.sort_by_key(|r| r.tag);
    assert_eq!(got[0].tag, Some(1));
    assert_eq!(
        (got[0].rev, got[0].value.as_deref()),
        (Some(2), Some(&b"b"[..]))
    );
    assert_eq!((got[1].rev, got[2].rev), (Some(1), Some(2)));
}

#[tokio::test]
async fn reads_without_rev_pass_the_read_barrier() {
    let node = FakeNode::new(1000);
    node.apply(Op::Set {
        path: "/b/f".into(),
        rev: -1,
        value: Bytes::new(),
    });
    let mut c = connect(&node, SessionConfig::default());
    let reads = [
        req(Verb::Get, 1).with_path("/b/f"),
        req(Verb::Stat, 2).with_path("/b/f"),
        req(Verb::Getdir, 3).with_path("/b").with_offset(0),
        req(Verb::Walk, 4).with_path("/**").with_offset(0),
    ];
    for (i, r) in reads.iter().enumerate() {
        let got = c.call(r.clone()).await;
        assert!(!got.is_err(), "{got:?}");
        assert_eq!(node.barriers(), i as u64 + 1);
    }
    // With an explicit rev there is no barrier.
    let got = c
        .call(req(Verb::Get, 5).with_path("/b/f").with_rev(1))
        .await;
    assert!(!got.is_err());
    assert_eq!(node.barriers(), 4);
    // A failed barrier is an error, never a possibly stale answer.
    node.fail_barriers(Failure::NoLeader);
    for r in reads {
        let t = r.tag;
        let got = c.call(r).await;
        assert_eq!(
            got,
            Response::err_with_detail(t, ErrCode::Other, "no leader")
        );
    }
}

#[tokio::test]
async fn failed_writes_say_so() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    node.fail_writes(Failure::Timeout);
    let r = c.call(req(Verb::Set, 1).with_path("/x").with_rev(-1)).await;
    assert_eq!(code(&r), Some(ErrCode::Other));
    assert_eq!(
        r.err_detail.as_deref(),
        Some("timed out: the write may or may not have been applied")
    );
    node.fail_writes(Failure::NoLeader);
    let r = c.call(req(Verb::Nop, 2)).await;
    assert_eq!(
        r,
        Response::err_with_detail(Some(2), ErrCode::Other, "no leader")
    );
}

// ---- WAIT ----

#[tokio::test]
async fn wait_from_history_and_live() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    let a = c
        .call(
            req(Verb::Set, 1)
                .with_path("/q/a")
                .with_rev(-1)
                .with_value("1"),
        )
        .await;
    let a = a.rev.unwrap();
    let r = c
        .call(req(Verb::Wait, 2).with_path("/q/*").with_rev(a))
        .await;
    assert_eq!(
        r,
        Response::ok(Some(2))
            .with_flags(FLAG_SET)
            .with_rev(a)
            .with_path("/q/a")
            .with_value("1")
    );
    // Rev 0 and negatives are read as 1.
    let r = c
        .call(req(Verb::Wait, 3).with_path("/q/*").with_rev(-7))
        .await;
    assert_eq!(r.rev, Some(a));
    // Live: nothing at a+1 yet.
    c.send(req(Verb::Wait, 4).with_path("/q/**").with_rev(a + 1))
        .await;
    eventually("the wait to subscribe", || node.subscribers() == 1).await;
    c.send(req(Verb::Set, 5).with_path("/other").with_rev(-1))
        .await;
    let r = c.recv().await;
    assert_eq!(r.tag, Some(5));
    c.send(req(Verb::Del, 6).with_path("/q/a").with_rev(-1))
        .await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|r| r.tag);
    assert_eq!(
        got[0],
        Response::ok(Some(4))
            .with_flags(FLAG_DEL)
            .with_rev(a + 2)
            .with_path("/q/a")
            .with_value("")
    );
    assert_eq!(got[1], Response::ok(Some(6)));
    // Errors.
    let r = c.call(req(Verb::Wait, 7).with_path("/q/*")).await;
    assert_eq!(r, Response::err(Some(7), ErrCode::MissingArg));
    let r = c.call(req(Verb::Wait, 8).with_rev(1)).await;
    assert_eq!(r, Response::err(Some(8), ErrCode::MissingArg));
    let r = c
        .call(req(Verb::Wait, 9).with_path("/q/{a}").with_rev(1))
        .await;
    assert_eq!(
        r,
        Response::err_with_detail(Some(9), ErrCode::Other, "invalid glob pattern: /q/{a}")
    );
}

// One thread: the WAIT task cannot drain the event channel while the test applies writes,
// so every write really overflows it.
#[tokio::test]
async fn lagging_wait_rereads_history() {
    let node = FakeNode::with_event_capacity(1000, 2);
    node.lag_subscribers(true);
    let mut c = connect(&node, SessionConfig::default());
    c.send(req(Verb::Wait, 1).with_path("/lag/z").with_rev(1))
        .await;
    eventually("the wait to subscribe", || node.subscribers() == 1).await;
    // Every event now reaches the WAIT only as "you lagged": it must find its event in the
    // history.
    for i in 0..5 {
        node.apply(Op::Set {
            path: format!("/lag/n{i}"),
            rev: -1,
            value: Bytes::new(),
        });
    }
    let WriteResult::Ok { rev } = node.apply(Op::Set {
        path: "/lag/z".into(),
        rev: -1,
        value: Bytes::from_static(b"z"),
    }) else {
        panic!()
    };
    let r = c.recv().await;
    assert_eq!(
        (r.tag, r.rev, r.path.as_deref()),
        (Some(1), Some(rev), Some("/lag/z"))
    );
}

#[tokio::test]
async fn waits_are_cancelled_when_the_client_goes() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    for t in 0..10 {
        c.send(req(Verb::Wait, t).with_path("/never").with_rev(1))
            .await;
    }
    eventually("ten waits", || node.subscribers() == 10).await;
    drop(c);
    eventually("the waits to go", || node.subscribers() == 0).await;
}

// ---- Tags, pipelining, limits ----

#[tokio::test]
async fn answers_come_back_out_of_order() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    node.hold_writes(true);
    c.send(
        req(Verb::Set, 1)
            .with_path("/slow")
            .with_rev(-1)
            .with_value("x"),
    )
    .await;
    eventually("the write to start", || node.writes() == 1).await;
    // Read after the SET, answered before it.
    let r = c.call(req(Verb::Rev, 2)).await;
    assert_eq!((r.tag, r.rev), (Some(2), Some(0)));
    let r = c.call(req(Verb::Get, 3).with_path("/slow")).await;
    assert_eq!((r.tag, r.rev), (Some(3), Some(0)));
    node.hold_writes(false);
    let r = c.recv().await;
    assert_eq!((r.tag, r.rev), (Some(1), Some(1)));
}

#[tokio::test]
async fn duplicate_outstanding_tag_is_tag_in_use() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    c.send(req(Verb::Wait, 5).with_path("/t/**").with_rev(1))
        .await;
    eventually("the wait", || node.subscribers() == 1).await;
    for verb in [Verb::Get, Verb::Rev, Verb::Wait] {
        let r = c.call(req(verb, 5).with_path("/t/x").with_rev(1)).await;
        assert_eq!(r, Response::err(Some(5), ErrCode::TagInUse), "{verb}");
    }
    // The first request is unaffected and its tag is free again once answered.
    let r = c
        .call(req(Verb::Set, 6).with_path("/t/x").with_rev(-1))
        .await;
    let mut got = [r, c.recv().await];
    got.sort_by_key(|r| r.tag);
    assert_eq!(
        (got[0].tag, got[0].path.as_deref()),
        (Some(5), Some("/t/x"))
    );
    let r = c.call(req(Verb::Rev, 5)).await;
    assert_eq!((r.tag, r.error_code()), (Some(5), None));
}

#[tokio::test]
async fn outstanding_limit_stops_reading() {
    let node = FakeNode::new(1000);
    let cfg = SessionConfig {
        max_outstanding: 2,
        ..SessionConfig::default()
    };
    let mut c = connect(&node, cfg);
    node.hold_writes(true);
    for t in 1..=3 {
        c.send(req(Verb::Set, t).with_path("/lim").with_rev(-1))
            .await;
    }
    c.send(req(Verb::Rev, 4)).await;
    eventually("two writes", || node.writes() == 2).await;
    node.hold_writes(false);
    // The third SET and the REV were only read once an answer had gone out, so the REV
    // cannot overtake the first SETs as it would without the limit.
    let first = c.recv().await;
    assert!(matches!(first.tag, Some(1) | Some(2)), "{first:?}");
    let mut tags = vec![first.tag.unwrap()];
    for _ in 0..3 {
        tags.push(c.recv().await.tag.unwrap());
    }
    tags.sort();
    assert_eq!(tags, [1, 2, 3, 4]);
    assert_eq!(node.writes(), 3);
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_only_its_budget() {
    let node = FakeNode::new(1000);
    node.apply(Op::Set {
        path: "/big".into(),
        rev: -1,
        value: Bytes::from(vec![7u8; 600]),
    });
    // Less budget than one answer, a pipe smaller than one answer, two reads of bodies at
    // a time: everything must still flow once the client reads, and nothing deadlocks.
    let cfg = SessionConfig {
        response_bytes: 100,
        value_reads: 2,
        max_outstanding: 8,
        ..SessionConfig::default()
    };
    let c = connect_with_pipe(&node, cfg, 64);
    let n = 20;
    let sender = {
        let mut frames = Vec::new();
        for t in 0..n {
            let q = req(Verb::Get, t).with_path("/big");
            frames.extend_from_slice(&doozer_proto::codec::encode_frame(&q));
        }
        frames
    };
    // Write while reading, as the server stops reading at 8 outstanding requests.
    let (mut rd, mut wr) = tokio::io::split(c.io.into_inner());
    let writer = tokio::spawn(async move {
        wr.write_all(&sender).await.unwrap();
        wr
    });
    // Another client is served meanwhile.
    let mut other = connect(&node, SessionConfig::default());
    assert!(!other.call(req(Verb::Rev, 1)).await.is_err());
    let mut tags = Vec::new();
    let mut framed = tokio_util::codec::FramedRead::new(&mut rd, ClientCodec::new());
    for _ in 0..n {
        let r = tokio::time::timeout(DEADLINE, framed.next())
            .await
            .expect("answer in time")
            .unwrap()
            .unwrap();
        assert_eq!(r.value.as_ref().map(|v| v.len()), Some(600));
        tags.push(r.tag.unwrap());
    }
    tags.sort();
    assert_eq!(tags, (0..n).collect::<Vec<_>>());
    writer.await.unwrap();
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded() {
    let node = FakeNode::new(1000);
    // Room for one 1000-byte SET at a time: the others wait to be read, then all finish.
    let cfg = SessionConfig {
        request_bytes: 1500,
        ..SessionConfig::default()
    };
    let mut c = connect(&node, cfg);
    node.hold_writes(true);
    for t in 0..10 {
        let v = vec![b'a' + t as u8; 1000];
        c.send(
            req(Verb::Set, t)
                .with_path(format!("/rb/{t}"))
                .with_rev(-1)
                .with_value(v),
        )
        .await;
    }
    eventually("the first write", || node.writes() == 1).await;
    c.send(req(Verb::Rev, 100)).await;
    node.hold_writes(false);
    let mut tags = Vec::new();
    for _ in 0..11 {
        let r = c.recv().await;
        assert!(!r.is_err(), "{r:?}");
        tags.push(r.tag.unwrap());
    }
    // The REV was read only once the ninth SET had budget, so at least eight SETs had
    // finished and answered (without the bound it would be answered first).
    let rev_at = tags.iter().position(|t| *t == 100).unwrap();
    assert!(rev_at >= 8, "REV answered at position {rev_at}: {tags:?}");
    tags.sort();
    assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100]);
    assert_eq!(node.writes(), 10);
    for t in 0..10u8 {
        let r = c
            .call(req(Verb::Get, 200).with_path(format!("/rb/{t}")))
            .await;
        assert_eq!(r.value.as_deref(), Some(&vec![b'a' + t; 1000][..]));
    }
}

// ---- Access ----

fn secrets(rw: Option<&str>, ro: Option<&str>) -> SessionConfig {
    SessionConfig {
        secrets: Secrets {
            rw: rw.map(|s| s.as_bytes().to_vec()),
            ro: ro.map(|s| s.as_bytes().to_vec()),
        },
        ..SessionConfig::default()
    }
}

fn denied(tag: i32) -> Response {
    Response::err_with_detail(Some(tag), ErrCode::Other, "permission denied")
}

#[tokio::test]
async fn access_with_rw_secret_only() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, secrets(Some("sekrit"), None));
    // Anonymous: read-only.
    let r = c.call(req(Verb::Get, 1).with_path("/a")).await;
    assert!(!r.is_err());
    let r = c.call(req(Verb::Set, 2).with_path("/a").with_rev(-1)).await;
    assert_eq!(r, denied(2));
    let r = c.call(req(Verb::Nop, 3)).await;
    assert_eq!(r, denied(3));
    let r = c.call(req(Verb::Access, 4).with_value("wrong")).await;
    assert_eq!(r, denied(4));
    // Reading still works after a failed ACCESS.
    let r = c.call(req(Verb::Stat, 5).with_path("/a")).await;
    assert!(!r.is_err());
    let r = c.call(req(Verb::Access, 6).with_value("sekrit")).await;
    assert_eq!(r, Response::ok(Some(6)));
    let r = c.call(req(Verb::Set, 7).with_path("/a").with_rev(-1)).await;
    assert!(!r.is_err(), "{r:?}");
    // A later wrong secret takes nothing away.
    assert_eq!(
        c.call(req(Verb::Access, 8).with_value("x")).await,
        denied(8)
    );
    let r = c.call(req(Verb::Del, 9).with_path("/a").with_rev(-1)).await;
    assert_eq!(r, Response::ok(Some(9)));
    assert_eq!(node.writes(), 2);
}

#[tokio::test]
async fn access_with_both_secrets() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, secrets(Some("rw"), Some("ro")));
    // Anonymous: nothing but REV, SELF and ACCESS; the permission check comes before the
    // argument checks.
    assert!(!c.call(req(Verb::Rev, 1)).await.is_err());
    assert!(!c.call(req(Verb::SelfId, 2)).await.is_err());
    for (t, v) in [
        (3, Verb::Get),
        (4, Verb::Stat),
        (5, Verb::Getdir),
        (6, Verb::Walk),
        (7, Verb::Wait),
        (8, Verb::Set),
        (9, Verb::Del),
        (10, Verb::Nop),
    ] {
        assert_eq!(c.call(req(v, t)).await, denied(t), "{v}");
    }
    assert_eq!(c.call(req(Verb::Access, 11)).await, denied(11));
    assert_eq!(
        c.call(req(Verb::Access, 12).with_value("ro")).await,
        Response::ok(Some(12))
    );
    let r = c.call(req(Verb::Stat, 14).with_path("/")).await;
    assert_eq!(r.rev, Some(-2));
    assert_eq!(
        c.call(req(Verb::Set, 15).with_path("/a").with_rev(-1))
            .await,
        denied(15)
    );
    assert_eq!(
        c.call(req(Verb::Access, 16).with_value("rw")).await,
        Response::ok(Some(16))
    );
    assert!(!c
        .call(req(Verb::Set, 17).with_path("/a").with_rev(-1))
        .await
        .is_err());
    // Rights are per connection.
    let mut other = connect(&node, secrets(Some("rw"), Some("ro")));
    assert_eq!(
        other.call(req(Verb::Get, 1).with_path("/a")).await,
        denied(1)
    );
}

#[tokio::test]
async fn access_without_secrets() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    assert_eq!(
        c.call(req(Verb::Access, 1).with_value("nope")).await,
        denied(1)
    );
    assert_eq!(c.call(req(Verb::Access, 2)).await, Response::ok(Some(2)));
    assert!(!c
        .call(req(Verb::Set, 3).with_path("/a").with_rev(-1))
        .await
        .is_err());
}

// ---- Bad input ----

#[tokio::test]
async fn oversize_frame_closes_the_connection() {
    let node = FakeNode::new(1000);
    let cfg = SessionConfig {
        max_frame: 64,
        ..SessionConfig::default()
    };
    let mut c = connect(&node, cfg.clone());
    c.raw(&65u32.to_be_bytes()).await;
    c.expect_closed().await;
    // A huge header is refused at once, without waiting for (or allocating) the body.
    let mut c = connect(&node, cfg);
    c.raw(&0x7fff_ffffu32.to_be_bytes()).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn negative_length_closes_the_connection() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    c.raw(&(-1i32).to_be_bytes()).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let node = FakeNode::new(1000);
    let mut good = connect(&node, SessionConfig::default());
    let mut bad = connect(&node, SessionConfig::default());
    // A well-framed body that is not a Request (truncated varint).
    bad.raw(&[0, 0, 0, 2, 0x08, 0xff]).await;
    bad.expect_closed().await;
    // An HTTP request: its first four bytes read as a ~1.2 GB length.
    let mut http = connect(&node, SessionConfig::default());
    http.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    http.expect_closed().await;
    // A string field that is not UTF-8.
    let mut utf = connect(&node, SessionConfig::default());
    utf.raw(&[0, 0, 0, 5, 0x08, 0x01, 0x22, 0x01, 0xff]).await;
    utf.expect_closed().await;
    let r = good.call(req(Verb::Rev, 1)).await;
    assert!(!r.is_err());
}

#[tokio::test]
async fn answers_already_due_are_flushed_when_the_client_half_closes() {
    let node = FakeNode::new(1000);
    let mut c = connect(&node, SessionConfig::default());
    node.hold_writes(true);
    c.send(req(Verb::Set, 1).with_path("/h").with_rev(-1)).await;
    c.send(req(Verb::Wait, 2).with_path("/never").with_rev(1))
        .await;
    // A read at a rev the node will never reach while the test runs: cancelled too, or
    // the connection could not close below.
    c.send(req(Verb::Get, 3).with_path("/h").with_rev(1_000_000))
        .await;
    eventually("the write", || node.writes() == 1).await;
    eventually("the wait", || node.subscribers() == 1).await;
    c.io.get_mut().shutdown().await.unwrap();
    // The WAIT is cancelled at once; the write still answers.
    eventually("the wait to go", || node.subscribers() == 0).await;
    node.hold_writes(false);
    let r = c.recv().await;
    assert_eq!((r.tag, r.rev), (Some(1), Some(1)));
    c.expect_closed().await;
}

// ---- Random requests ----

/// Seeded random requests, pipelined: every one is answered exactly once, with its own
/// tag, and the session stays up. `SESSION_FUZZ_N` sets the count, `SEED` the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_each_get_one_answer() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let n: i32 = std::env::var("SESSION_FUZZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let node = FakeNode::new(50);
    node.nops(5);
    let mut c = connect(&node, SessionConfig::default());
    let paths = [
        "/", "/a", "/a/b", "/a/b/c", "", "a", "/a_b", "//", "/a/", "/ctl/err", "/é",
    ];
    let globs = ["/**", "/a/*", "/a/**", "/?", "/[", "/*/b", "**"];
    let mut sent = 0;
    for tag in 0..n {
        let verb = match rng.gen_range(0..13) {
            11 => Some(rng.gen_range(-3..120)),
            12 => None,
            i => Some(Verb::ALL[i as usize] as i32),
        };
        let mut q = Request {
            tag: Some(tag),
            verb,
            ..Request::default()
        };
        let is_wait = verb == Some(Verb::Wait as i32);
        let is_glob = is_wait || verb == Some(Verb::Walk as i32);
        if rng.gen_bool(0.9) {
            q.path = Some(if is_wait {
                "/**".to_string() // matches the latest event, so it never waits
            } else if is_glob {
                globs[rng.gen_range(0..globs.len())].to_string()
            } else {
                paths[rng.gen_range(0..paths.len())].to_string()
            });
        }
        if rng.gen_bool(0.7) {
            // Never a future rev: those would wait (correctly) for ever.
            let now = node.store().rev();
            q.rev = Some(if is_wait {
                now
            } else {
                rng.gen_range(-3..=now)
            });
        }
        if rng.gen_bool(0.6) {
            q.offset = Some(rng.gen_range(-2..5));
        }
        if rng.gen_bool(0.5) {
            q.value = Some(Bytes::from(vec![b'x'; rng.gen_range(0..64)]));
        }
        c.send(q).await;
        sent += 1;
    }
    let mut seen = vec![false; sent];
    for _ in 0..sent {
        let r = c.recv().await;
        let t = r.tag.expect("every request had a tag") as usize;
        assert!(!seen[t], "tag {t} answered twice (seed {seed})");
        seen[t] = true;
        if let Some(code) = r.error_code() {
            assert_ne!(code, ErrCode::TagInUse, "tags were unique (seed {seed})");
        }
    }
    let r = c.call(req(Verb::Rev, -1)).await;
    assert_eq!(r.tag, Some(-1));
}
