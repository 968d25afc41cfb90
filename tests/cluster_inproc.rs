//! Nodes started in-process through the library (`doozerd::Node`), driven through the
//! `NodeHandle` API that client sessions use. These exercise the node core (engine driver,
//! storage thread, peer links, joining) without the client protocol.

use std::time::{Duration, Instant};

use bytes::Bytes;
use doozer_proto::msg::ErrCode;
use doozer_store::Op;
use doozerd::{Handle, Node, NodeConfig, NodeError, NodeHandle, WriteResult};

const DEADLINE: Duration = Duration::from_secs(10);

/// Logs to the test's output (shown for failing tests); `RUST_LOG` picks the level.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn cfg(dir: &std::path::Path, attach: Vec<String>) -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".into()),
        data_dir: dir.to_path_buf(),
        attach,
        ..NodeConfig::default()
    }
}

fn set(path: &str, rev: i64, value: &str) -> Op {
    Op::Set {
        path: path.into(),
        rev,
        value: Bytes::from(value.to_string()),
    }
}

async fn ok_rev(h: &Handle, op: Op) -> i64 {
    match h.write(op, DEADLINE).await {
        Ok(WriteResult::Ok { rev }) => rev,
        other => panic!("write failed: {other:?}"),
    }
}

/// Linearizable read of a file through `h`.
async fn read(h: &Handle, path: &str) -> (Bytes, i64) {
    h.read_barrier(DEADLINE).await.expect("read barrier");
    h.store().get(path, None).expect("get")
}

/// Polls `f` every 20 ms until it holds, or panics after `within`.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_writes_and_restarts() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(cfg(dir.path(), vec![])).await.unwrap();
    let h = node.handle();
    let id = h.self_id();

    // The bootstrap wrote the /ctl tree through consensus.
    assert_eq!(read(&h, "/ctl/name").await.0, "local");
    assert_eq!(read(&h, "/ctl/cal/0").await.0, id.as_bytes());
    let (addr, _) = read(&h, &format!("/ctl/node/{id}/addr")).await;
    assert_eq!(addr, node.client_addr().to_string().as_bytes());
    assert_eq!(
        h.store()
            .config()
            .voters
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>(),
        vec![id.clone()]
    );

    let r1 = ok_rev(&h, set("/app/a", -1, "one")).await;
    assert_eq!(read(&h, "/app/a").await, (Bytes::from("one"), r1));
    // A stale CAS fails, and still takes a revision.
    match h.write(set("/app/a", r1 - 1, "two"), DEADLINE).await {
        Ok(WriteResult::Err { rev, code }) => {
            assert_eq!(code, ErrCode::RevMismatch);
            assert_eq!(rev, r1 + 1);
        }
        other => panic!("expected REV_MISMATCH, got {other:?}"),
    }
    let r2 = ok_rev(&h, set("/app/a", r1, "two")).await;
    assert_eq!(r2, r1 + 2);
    // Concurrent writes all get distinct revisions.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            ok_rev(&h, set(&format!("/many/{i}"), -1, "x")).await
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 50);
    let rev_before = h.store().rev();
    let addr = node.client_addr();
    // The handle shares the store: drop it so the restarted node can open the file.
    drop(h);
    node.shutdown().await;

    // Restart from the data directory alone: same id, address, data and revisions.
    let again = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let node = Node::start(again).await.unwrap();
    let h = node.handle();
    assert_eq!(h.self_id(), id);
    assert_eq!(node.client_addr(), addr);
    assert_eq!(read(&h, "/app/a").await, (Bytes::from("two"), r2));
    let r3 = ok_rev(&h, set("/app/b", 0, "three")).await;
    assert!(r3 > rev_before);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_and_agree_then_lose_quorum() {
    init_logs();
    let base = tempfile::tempdir().unwrap();
    let seed = Node::start(cfg(&base.path().join("n0"), vec![]))
        .await
        .unwrap();
    let via = vec![seed.client_addr().to_string()];
    let n1 = Node::start(cfg(&base.path().join("n1"), via.clone()))
        .await
        .unwrap();
    let n2 = Node::start(cfg(&base.path().join("n2"), via))
        .await
        .unwrap();
    let hs = [seed.handle(), n1.handle(), n2.handle()];
    for h in &hs {
        eventually(
            Duration::from_secs(30),
            "three voters in force everywhere",
            || h.store().config().voters.len() == 3 && h.consensus().in_force.voters.len() == 3,
        )
        .await;
    }
    // A write on any node is visible at the same revision on every node.
    let mut revs = Vec::new();
    for (i, h) in hs.iter().enumerate() {
        revs.push(ok_rev(h, set(&format!("/k/{i}"), -1, &format!("v{i}"))).await);
    }
    for h in &hs {
        for (i, rev) in revs.iter().enumerate() {
            assert_eq!(
                read(h, &format!("/k/{i}")).await,
                (Bytes::from(format!("v{i}")), *rev)
            );
        }
    }
    // Two CAS writes from the same rev through different followers: exactly one wins.
    let (a, b) = tokio::join!(
        hs[1].write(set("/k/0", revs[0], "a"), DEADLINE),
        hs[2].write(set("/k/0", revs[0], "b"), DEADLINE)
    );
    let wins = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|r| matches!(r, WriteResult::Ok { .. }))
        .count();
    assert_eq!(wins, 1);

    // With two of three voters gone, a write fails at its deadline instead of hanging.
    n1.shutdown().await;
    n2.shutdown().await;
    let t = Instant::now();
    let r = hs[0]
        .write(set("/k/lost", -1, "x"), Duration::from_secs(2))
        .await;
    assert!(
        matches!(r, Err(NodeError::Timeout | NodeError::NoLeader)),
        "{r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Once the survivor knows no leader, the engine refuses its writes; the refusal comes
    // back through the write's waiter and the write proposes again until its deadline.
    eventually(
        Duration::from_secs(30),
        "the survivor knows no leader",
        || hs[0].consensus().leader.is_none(),
    )
    .await;
    let t = Instant::now();
    let r = hs[0]
        .write(set("/k/lost", -1, "y"), Duration::from_secs(1))
        .await;
    assert!(matches!(r, Err(NodeError::NoLeader)), "{r:?}");
    // Not the first refusal's answer: the last retry ends within one backoff (200 ms) of
    // the deadline.
    assert!(
        t.elapsed() >= Duration::from_millis(750),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    seed.shutdown().await;
}

/// Sessions are answered as soon as a write is applied in memory, before this node's commit
/// is flushed; `write` (what embedders call) still returns only once the store shows it, and
/// REV never reports less than a revision already answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_writes_are_counted_by_rev_and_written_ones_are_readable() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(cfg(dir.path(), vec![])).await.unwrap();
    let h = node.handle();
    for i in 0..300 {
        let op = set(&format!("/early/{}", i % 7), -1, &format!("v{i}"));
        let rev = match h.write_answered(op, DEADLINE).await {
            Ok(WriteResult::Ok { rev }) => rev,
            other => panic!("write failed: {other:?}"),
        };
        assert!(
            h.rev() >= rev,
            "REV {} below an answered write's {rev}",
            h.rev()
        );
        // A read at the answered revision waits for it rather than failing.
        h.wait_applied_rev(rev, Some(DEADLINE)).await.unwrap();
        assert_eq!(
            h.store()
                .get(&format!("/early/{}", i % 7), Some(rev))
                .unwrap(),
            (Bytes::from(format!("v{i}")), rev)
        );
        // `write` returns with the store showing the write.
        let rev2 = ok_rev(&h, set("/early/w", -1, &format!("w{i}"))).await;
        assert!(h.store().rev() >= rev2);
        assert_eq!(
            h.store().get("/early/w", None).unwrap(),
            (Bytes::from(format!("w{i}")), rev2)
        );
    }
    node.shutdown().await;
}
