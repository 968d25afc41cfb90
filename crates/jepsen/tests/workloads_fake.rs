//! The workloads, end to end through the real client, against the client crate's
//! in-memory fake server: a linearizable store must pass every checker, also when
//! connections drop after writes were applied (unknown outcomes), and a split brain (two
//! servers that do not share data) must be caught.

use std::sync::Arc;
use std::time::Duration;

use doozer_client::fake::{FakeCluster, FakeServer};
use doozer_jepsen::history::OpKind;
use doozer_jepsen::nemesis::Fault;
use doozer_jepsen::run::{check, drive, Collected, RunConfig, Uris, WorkloadSpec};
use doozer_jepsen::workload::{Recorder, Workload};
use doozer_jepsen::{cluster::ClusterError, report};
use doozer_proto::Verb;

fn spec(workload: Workload) -> WorkloadSpec {
    WorkloadSpec {
        workload,
        clients: 6,
        keys: 3,
        time: Duration::from_millis(1500),
        seed: 42,
        client_timeout: Duration::from_secs(2),
        recovery: Duration::from_secs(5),
    }
}

fn uris(servers: &[&FakeServer], clients: usize) -> Uris {
    let all: Vec<String> = servers.iter().map(|s| format!("ca={}", s.addr())).collect();
    Uris {
        clients: (0..clients)
            .map(|i| {
                let mut v = all.clone();
                v.rotate_left(i % all.len());
                format!("doozer:?{}", v.join("&"))
            })
            .collect(),
        nodes: servers.iter().map(|s| s.uri()).collect(),
    }
}

/// A "nemesis" that makes the fake drop the connection right after applying a SET, a few
/// times, then waits for the end of the run.
async fn drop_after_sets(fc: FakeCluster, total: Duration) -> Result<Vec<Fault>, ClusterError> {
    let start = tokio::time::Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        fc.hooks(|h| h.drop_after = Some(Verb::Set));
    }
    tokio::time::sleep_until(start + total).await;
    Ok(Vec::new())
}

async fn run_on(
    workload: Workload,
    uris: Uris,
    fc: FakeCluster,
) -> (Collected, doozer_jepsen::run::Verdicts) {
    let spec = spec(workload);
    let rec = Arc::new(Recorder::new());
    let collected = drive(&spec, &uris, rec, drop_after_sets(fc, spec.time))
        .await
        .expect("drive");
    let verdicts = check(workload, &collected, &[]);
    (collected, verdicts)
}

fn reports(
    workload: Workload,
    collected: &Collected,
    verdicts: &doozer_jepsen::run::Verdicts,
) -> (String, String) {
    let cfg = RunConfig {
        spec: spec(workload),
        nodes: 2,
        nemesis: Vec::new(),
        out: "/nonexistent".into(),
        doozerd: "/nonexistent/doozerd".into(),
        unsafe_local_reads: false,
    };
    let ctx = report::Context {
        cfg: &cfg,
        collected,
        verdicts,
        proxy: report::ProxyCounts::default(),
    };
    (report::text(&ctx), report::html(&ctx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_a_linearizable_store_passes() {
    let fc = FakeCluster::new();
    let (a, b) = (fc.start().await, fc.start().await);
    let (c, v) = run_on(Workload::Register, uris(&[&a, &b], 6), fc.clone()).await;
    let h = &c.history;
    assert!(h.len() > 100, "only {} ops", h.len());
    assert!(h.iter().any(|o| o.op == OpKind::Cas && o.ok == Some(true)));
    assert!(
        h.iter().any(|o| o.ok.is_none()),
        "the dropped SETs are unknown"
    );
    assert!(c.unavailable.is_empty());
    assert!(v.passed(), "{:?}", v);
    let (txt, html) = reports(Workload::Register, &c, &v);
    assert!(
        txt.contains("linearizability: PASS") && txt.contains("VERDICT: PASS"),
        "{txt}"
    );
    assert!(html.contains("<svg") && !html.contains("First anomaly"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_a_split_brain_is_caught() {
    // Two servers that do not share data, and clients spread over both.
    let (fa, fb) = (FakeCluster::new(), FakeCluster::new());
    let (a, b) = (fa.start().await, fb.start().await);
    let mut u = uris(&[&a, &b], 6);
    // Pin each client to one side so both sides are used all the time.
    u.clients = (0..6)
        .map(|i| if i % 2 == 0 { a.uri() } else { b.uri() })
        .collect();
    let (c, v) = run_on(Workload::Register, u, fa).await;
    assert!(!v.passed());
    let lin = v.linear.as_ref().unwrap();
    let anomaly = lin.first_anomaly(&c.history).expect("an anomaly");
    let (txt, html) = reports(Workload::Register, &c, &v);
    assert!(
        txt.contains("NOT linearizable") && txt.contains("VERDICT: FAIL"),
        "{txt}"
    );
    assert!(txt.contains("first anomaly"));
    assert!(html.contains("First anomaly"));
    assert!(anomaly.op_index < c.history.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_on_a_linearizable_store_passes_and_split_brain_loses_adds() {
    let fc = FakeCluster::new();
    let (a, b) = (fc.start().await, fc.start().await);
    let (c, v) = run_on(Workload::Set, uris(&[&a, &b], 6), fc.clone()).await;
    let s = v.set.as_ref().unwrap();
    assert!(v.passed(), "{s:?}");
    assert_eq!(s.reads, 2);
    assert!(s.acked > 50);
    assert!(c.history.iter().any(|o| o.ok.is_none()));

    let (fa, fb) = (FakeCluster::new(), FakeCluster::new());
    let (a, b) = (fa.start().await, fb.start().await);
    let mut u = uris(&[&a, &b], 6);
    u.clients = (0..6)
        .map(|i| if i % 2 == 0 { a.uri() } else { b.uri() })
        .collect();
    let (_, v) = run_on(Workload::Set, u, fa).await;
    let s = v.set.as_ref().unwrap();
    assert!(!v.passed());
    assert!(
        !s.lost.is_empty() && !s.disagreeing_reads.is_empty(),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_linearizable_store_passes() {
    let fc = FakeCluster::new();
    let (a, b) = (fc.start().await, fc.start().await);
    let (c, v) = run_on(Workload::Watch, uris(&[&a, &b], 6), fc.clone()).await;
    let w = v.watch.as_ref().unwrap();
    assert!(v.passed(), "{w:?} {:?}", v.problems);
    let data = c.watch.as_ref().unwrap();
    assert!(data.reference.len() > 50, "{}", data.reference.len());
    assert_eq!(w.watchers, 5);
    // Every watcher saw something, and the catch-all ones saw everything.
    assert!(data.logs.iter().all(|l| !l.events.is_empty()));
    assert_eq!(data.logs[0].events.len(), data.reference.len());
    let (txt, _) = reports(Workload::Watch, &c, &v);
    assert!(txt.contains("watch: PASS"), "{txt}");
}

/// A node that caught up from a snapshot has no history before it (TOO_LATE): the
/// committed history is then read from another node, and the report says which was
/// passed over.
#[tokio::test]
async fn committed_history_is_read_from_a_node_that_kept_it() {
    // Two fake clusters stand for two nodes of one cluster: the same writes, but the
    // first has forgotten its early history.
    let (lost, kept) = (FakeCluster::new(), FakeCluster::new());
    for c in [&lost, &kept] {
        for i in 0..5 {
            c.set(
                &format!("{}/a/0", doozer_jepsen::workload::WATCH_DIR),
                -1,
                format!("v{i}").as_bytes(),
            )
            .unwrap();
        }
    }
    let from_rev = kept.rev() - 4;
    lost.forget_before(lost.rev());
    let (a, b) = (lost.start().await, kept.start().await);
    let (read, notes) = doozer_jepsen::workload::read_committed(
        &b.uri(),
        &[a.uri(), b.uri()],
        from_rev,
        Duration::from_secs(2),
    )
    .await;
    let (events, end) = read.unwrap();
    // Five writes and the end marker.
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events.last().unwrap().rev, end);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("node n0 ") && notes[0].contains("TOO_LATE"),
        "{notes:?}"
    );

    // No node kept it: the error, and a note for every node.
    let (read, notes) = doozer_jepsen::workload::read_committed(
        &a.uri(),
        &[a.uri(), a.uri()],
        from_rev,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        read.unwrap_err().code(),
        Some(doozer_client::ErrCode::TooLate)
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
}
