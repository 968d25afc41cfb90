//! The client against the in-test fake server (real frames on 127.0.0.1).

use std::time::Duration;

use doozer_client::fake::FakeCluster;
use doozer_client::{Client, ClientError, ClientOptions, ErrCode};
use doozer_proto::msg::Verb;
use futures::StreamExt;

fn fast_opts() -> ClientOptions {
    ClientOptions {
        timeout: Some(Duration::from_secs(10)),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn verbs_round_trip() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let c = Client::connect(&server.uri()).await.unwrap();

    let r0 = c.rev().await.unwrap();
    let r1 = c.set("/a/b", 0, "hello").await.unwrap();
    assert_eq!(r1, r0 + 1);
    assert_eq!(c.get("/a/b", None).await.unwrap(), ("hello".into(), r1));
    assert_eq!(c.get("/missing", None).await.unwrap(), ("".into(), 0));
    let r2 = c.set("/a/c", -1, "x").await.unwrap();
    // A read at an older revision sees the older tree.
    assert_eq!(c.getdir_all("/a", Some(r1)).await.unwrap(), ["b"]);
    assert_eq!(c.getdir_all("/a", None).await.unwrap(), ["b", "c"]);
    assert_eq!(c.getdir("/a", 1, None).await.unwrap(), "c");

    let st = c.stat("/a/b", None).await.unwrap();
    assert_eq!((st.rev, st.len, st.is_dir()), (r1, 5, false));
    let st = c.stat("/a", None).await.unwrap();
    assert_eq!((st.len, st.is_dir()), (2, true));
    assert!(!c.stat("/nope", None).await.unwrap().exists());

    let files = c.walk_all("/a/**", None).await.unwrap();
    let got: Vec<_> = files.iter().map(|e| (e.path.as_str(), e.rev)).collect();
    assert_eq!(got, [("/a/b", r1), ("/a/c", r2)]);

    c.del("/a/b", r1).await.unwrap();
    assert_eq!(c.get("/a/b", None).await.unwrap().1, 0);
    c.nop().await.unwrap();
    assert_eq!(c.self_id().await.unwrap(), "FAKEFAKEFAKEFAKE");
    let ev = c.wait("/a/**", r2).await.unwrap();
    assert_eq!((ev.path.as_str(), ev.rev, ev.kind()), ("/a/c", r2, "set"));
    let ev = c.wait("/a/b", r2).await.unwrap();
    assert_eq!(ev.kind(), "del");
    assert!(ev.value.is_empty());
}

#[tokio::test]
async fn server_errors_map_to_codes() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let c = Client::connect(&server.uri()).await.unwrap();
    let r = c.set("/f", 0, "1").await.unwrap();

    let e = c.set("/f", 0, "2").await.unwrap_err();
    assert!(e.is_rev_mismatch(), "{e:?}");
    assert_eq!(e.to_string(), "REV_MISMATCH");
    assert_eq!(
        c.set("/f", r - 1, "2").await.unwrap_err().code(),
        Some(ErrCode::RevMismatch)
    );
    assert_eq!(
        c.set("/a_b", -1, "x").await.unwrap_err().code(),
        Some(ErrCode::BadPath)
    );
    assert_eq!(
        c.set("/f/g", -1, "x").await.unwrap_err().code(),
        Some(ErrCode::NotDir)
    );
    assert_eq!(
        c.get("/ctl", None).await.unwrap_err().code(),
        Some(ErrCode::IsDir)
    );
    assert_eq!(
        c.getdir("/nope", 0, None).await.unwrap_err().code(),
        Some(ErrCode::NoEnt)
    );
    assert_eq!(
        c.getdir_all("/nope", None).await.unwrap_err().code(),
        Some(ErrCode::NoEnt)
    );
    assert_eq!(
        c.getdir_all("/f", None).await.unwrap_err().code(),
        Some(ErrCode::NotDir)
    );
    assert_eq!(
        c.getdir("/", 99, None).await.unwrap_err().code(),
        Some(ErrCode::Range)
    );
    let e = c.wait("/a[", 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrCode::Other));
    assert_eq!(e.to_string(), "OTHER: invalid glob pattern: /a[");
    cluster.forget_before(r);
    assert_eq!(
        c.wait("/**", 1).await.unwrap_err().code(),
        Some(ErrCode::TooLate)
    );
}

#[tokio::test]
async fn bad_uris_and_dead_addresses_are_typed_errors() {
    let e = Client::connect("ca=127.0.0.1:1").await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidUri { .. }));
    assert_eq!(e.to_string(), "invalid uri");

    // Bind then drop: a port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let e = Client::connect(&format!("doozer:?ca={addr}"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("dial tcp {addr}: connection refused")
    );
}

#[tokio::test]
async fn oversized_request_is_refused_before_sending() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let c = Client::connect(&server.uri()).await.unwrap();
    let r = cluster.rev();
    let big = vec![b'x'; 2 * 1024 * 1024];
    assert!(matches!(
        c.set("/big", -1, big).await,
        Err(ClientError::TooLarge { .. })
    ));
    assert_eq!(cluster.rev(), r, "nothing was applied");
    assert_eq!(c.rev().await.unwrap(), r, "the connection still works");
}

#[tokio::test]
async fn requests_are_pipelined_and_answers_may_come_out_of_order() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let c = Client::connect(&server.uri()).await.unwrap();
    let start = c.rev().await.unwrap();

    // A WAIT for the future is outstanding while other requests complete around it.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.wait("/p/last", start + 1).await })
    };
    let sets = (0..200).map(|i| {
        let c = c.clone();
        async move { c.set(&format!("/p/k{i}"), 0, format!("{i}")).await }
    });
    let mut revs: Vec<i64> = futures::future::try_join_all(sets).await.unwrap();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 200, "every SET got its own answer");
    assert_eq!(revs, (start + 1..=start + 200).collect::<Vec<_>>());
    assert!(!waiter.is_finished());
    let last = c.set("/p/last", -1, "done").await.unwrap();
    let ev = waiter.await.unwrap().unwrap();
    assert_eq!((ev.path.as_str(), ev.rev), ("/p/last", last));
}

#[tokio::test]
async fn secret_from_uri_is_presented_and_a_wrong_one_refused() {
    let cluster = FakeCluster::new();
    cluster.set_secret("s3");
    let server = cluster.start().await;
    let e = Client::connect(&server.uri()).await.unwrap();
    let err = e.get("/ctl/name", None).await.unwrap_err();
    assert_eq!(err.to_string(), "OTHER: permission denied");
    let err = Client::connect(&format!("{}&sk=nope", server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "OTHER: permission denied");
    let c = Client::connect(&format!("{}&sk=s3", server.uri()))
        .await
        .unwrap();
    assert_eq!(&c.get("/ctl/name", None).await.unwrap().0[..], b"fake");
    // access() on an anonymous client also works, and is remembered for reconnections.
    e.access("s3").await.unwrap();
    assert_eq!(&e.get("/ctl/name", None).await.unwrap().0[..], b"fake");
}

#[tokio::test]
async fn fails_over_to_another_address_when_a_node_dies() {
    let cluster = FakeCluster::new();
    let a = cluster.start().await;
    let b = cluster.start().await;
    let uri = format!("doozer:?ca={}&ca={}", a.addr(), b.addr());
    let c = Client::connect_with(&uri, fast_opts()).await.unwrap();
    let first = c.current_addr().await.unwrap();
    let r = c.set("/x", 0, "1").await.unwrap();
    if first == a.addr() {
        a.stop()
    } else {
        b.stop()
    }
    // A read is retried transparently on the other node.
    assert_eq!(c.get("/x", None).await.unwrap(), ("1".into(), r));
    let now = c.current_addr().await.unwrap();
    assert_ne!(now, first);
}

#[tokio::test]
async fn lost_clobber_write_is_unknown_not_retried() {
    let cluster = FakeCluster::new();
    let a = cluster.start().await;
    let b = cluster.start().await;
    let uri = format!("doozer:?ca={}&ca={}", a.addr(), b.addr());
    let c = Client::connect_with(&uri, fast_opts()).await.unwrap();
    let before = cluster.rev();
    cluster.hooks(|h| h.drop_after = Some(doozer_proto::msg::Verb::Set));
    let e = c.set("/y", -1, "v").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Unknown { verb: "SET", .. }),
        "{e:?}"
    );
    // It was applied exactly once.
    assert_eq!(cluster.rev(), before + 1);
    assert_eq!(&c.get("/y", None).await.unwrap().0[..], b"v");

    cluster.hooks(|h| h.drop_after = Some(doozer_proto::msg::Verb::Nop));
    assert!(matches!(
        c.nop().await,
        Err(ClientError::Unknown { verb: "NOP", .. })
    ));
}

#[tokio::test]
async fn server_timed_out_write_is_unknown_and_other_refusals_are_not() {
    let cluster = FakeCluster::new();
    let a = cluster.start().await;
    let c = Client::connect_with(&a.uri(), fast_opts()).await.unwrap();
    let before = cluster.rev();
    // doozerd's answer to a write proposed but not seen applied before its deadline.
    let timed_out = "timed out: the write may or may not have been applied";
    cluster.hooks(|h| h.fail_after = Some((Verb::Set, timed_out.into())));
    let e = c.set("/t", 0, "v").await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Unknown { verb: "SET", reason } if reason.contains(timed_out)),
        "{e:?}"
    );
    // It was applied once (a CAS is not retried after such an answer).
    assert_eq!(cluster.rev(), before + 1);
    cluster.hooks(|h| h.fail_after = Some((Verb::Del, "node is shutting down".into())));
    assert!(matches!(
        c.del("/t", -1).await,
        Err(ClientError::Unknown { verb: "DEL", .. })
    ));
    // "no leader": never proposed, a certain failure with its code.
    cluster.hooks(|h| h.fail_after = Some((Verb::Nop, "no leader".into())));
    let e = c.nop().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrCode::Other), "{e:?}");
    assert_eq!(e.to_string(), "OTHER: no leader");
    // A read answered "timed out" is just an error: nothing was changed.
    cluster.hooks(|h| h.fail_after = Some((Verb::Get, timed_out.into())));
    assert_eq!(
        c.get("/t", None).await.unwrap_err().code(),
        Some(ErrCode::Other)
    );
}

#[tokio::test]
async fn lost_cas_write_is_retried_and_never_misreported() {
    let cluster = FakeCluster::new();
    let a = cluster.start().await;
    let b = cluster.start().await;
    let uri = format!("doozer:?ca={}&ca={}", a.addr(), b.addr());
    let c = Client::connect_with(&uri, fast_opts()).await.unwrap();

    // Lost before it was applied: the retry applies it and reports success.
    cluster.hooks(|h| h.drop_before = Some(doozer_proto::msg::Verb::Set));
    let r = c.set("/z", 0, "first").await.unwrap();
    assert_eq!(c.get("/z", None).await.unwrap(), ("first".into(), r));

    // Lost after it was applied: the retry's REV_MISMATCH may be against our own first
    // attempt, so the outcome is Unknown, not a (false) REV_MISMATCH.
    cluster.hooks(|h| h.drop_after = Some(doozer_proto::msg::Verb::Set));
    let e = c.set("/z", r, "second").await.unwrap_err();
    assert!(matches!(e, ClientError::Unknown { .. }), "{e:?}");
    assert_eq!(&c.get("/z", None).await.unwrap().0[..], b"second");

    // A lost DEL with rev >= 0 is retried; deleting a missing file succeeds.
    let (_, rz) = c.get("/z", None).await.unwrap();
    cluster.hooks(|h| h.drop_after = Some(doozer_proto::msg::Verb::Del));
    c.del("/z", rz).await.unwrap();
    assert_eq!(c.get("/z", None).await.unwrap().1, 0);
}

#[tokio::test]
async fn deadlines_apply_per_client_and_per_call() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let opts = ClientOptions {
        timeout: Some(Duration::from_millis(200)),
        ..fast_opts()
    };
    let c = Client::connect_with(&server.uri(), opts).await.unwrap();
    cluster.hooks(|h| {
        h.stall.insert(doozer_proto::msg::Verb::Get);
        h.stall.insert(doozer_proto::msg::Verb::Set);
    });
    assert!(
        matches!(c.get("/a", None).await, Err(ClientError::Timeout(d)) if d == Duration::from_millis(200))
    );
    let short = c.with_timeout(Some(Duration::from_millis(50)));
    assert!(
        matches!(short.get("/a", None).await, Err(ClientError::Timeout(d)) if d == Duration::from_millis(50))
    );
    // A write that was sent and not answered in time has an unknown outcome.
    assert!(matches!(
        c.set("/a", -1, "x").await,
        Err(ClientError::Unknown { verb: "SET", .. })
    ));
    // The connection is still usable, and a late answer can't be mistaken for a new one.
    assert_eq!(c.rev().await.unwrap(), cluster.rev());
    cluster.hooks(|h| h.stall.clear());
    assert_eq!(c.get("/ctl/name", None).await.unwrap().0, "fake");
}

#[tokio::test]
async fn watch_resumes_across_failover_without_gap_or_repeat() {
    let cluster = FakeCluster::new();
    let a = cluster.start().await;
    let b = cluster.start().await;
    let uri = format!("doozer:?ca={}&ca={}", a.addr(), b.addr());
    let c = Client::connect_with(&uri, fast_opts()).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    let mut w = c.watch("/w/*", from);

    let mut expect = Vec::new();
    for i in 0..5 {
        expect.push(cluster.set(&format!("/w/{i}"), -1, b"v").unwrap());
        cluster.set("/other", -1, b"noise").unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(w.next().await.unwrap().unwrap().rev);
    }
    // Kill the node the watch is using; changes keep happening meanwhile.
    let current = c.current_addr().await.unwrap();
    if current == a.addr() {
        a.stop()
    } else {
        b.stop()
    }
    for i in 5..10 {
        expect.push(cluster.set(&format!("/w/{i}"), -1, b"v").unwrap());
    }
    for _ in 3..10 {
        let ev = w.next().await.unwrap().unwrap();
        assert!(ev.path.starts_with("/w/"));
        got.push(ev.rev);
    }
    assert_eq!(got, expect);
    assert_ne!(c.current_addr().await.unwrap(), current);
}

#[tokio::test]
async fn watch_ends_with_the_servers_error() {
    let cluster = FakeCluster::new();
    let server = cluster.start().await;
    let c = Client::connect(&server.uri()).await.unwrap();
    let mut w = c.watch("/bad[", 1);
    let e = w.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(ErrCode::Other));
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn watch_asks_another_node_when_one_answers_too_late() {
    // Two fake clusters stand for two nodes of one cluster: the same writes, but the
    // first has no history before its last revision (as after a snapshot catch-up).
    let (lost, kept) = (FakeCluster::new(), FakeCluster::new());
    for c in [&lost, &kept] {
        for i in 0..3 {
            c.set("/w/x", -1, format!("v{i}").as_bytes()).unwrap();
        }
    }
    let from = kept.rev() - 2;
    lost.forget_before(lost.rev());
    let (a, b) = (lost.start().await, kept.start().await);
    let uri = format!("doozer:?ca={}&ca={}", a.addr(), b.addr());
    // Whichever address the client starts at, the watch reads from the node that kept it.
    for _ in 0..4 {
        let c = Client::connect_with(&uri, fast_opts()).await.unwrap();
        let evs: Vec<_> = c.watch("/w/**", from).take(3).collect().await;
        let values: Vec<_> = evs.into_iter().map(|e| e.unwrap().value).collect();
        assert_eq!(values, ["v0", "v1", "v2"]);
    }
    // A single node without it: TOO_LATE ends the stream.
    let c = Client::connect_with(&a.uri(), fast_opts()).await.unwrap();
    let mut w = c.watch("/w/**", from);
    assert_eq!(
        w.next().await.unwrap().unwrap_err().code(),
        Some(ErrCode::TooLate)
    );
    assert!(w.next().await.is_none());
}
