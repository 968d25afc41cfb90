//! Runs of the whole harness against real `doozerd` processes: a short run under
//! partitions and kills must pass, and the planted bug (`--unsafe-local-reads`) must be
//! caught by the linearizability checker within a few runs.
//!
//! The `doozerd` binary comes from the workspace's target directory (`cargo test
//! --workspace` builds it; `$DOOZERD` overrides). `JEPSEN_TEST_SECS` changes the length
//! of the passing run (default 30).

use std::path::PathBuf;
use std::time::Duration;

use doozer_jepsen::find_doozerd;
use doozer_jepsen::nemesis::Family;
use doozer_jepsen::run::{run, Outcome, RunConfig, WorkloadSpec};
use doozer_jepsen::workload::Workload;

fn doozerd() -> PathBuf {
    find_doozerd(true).expect(
        "doozerd binary not found in the target directory: build it first \
         (`cargo build -p doozerd`; `cargo test --workspace` builds it) or set DOOZERD=path",
    )
}

fn config(
    out: PathBuf,
    secs: u64,
    seed: u64,
    nemesis: Vec<Family>,
    unsafe_reads: bool,
) -> RunConfig {
    RunConfig {
        spec: WorkloadSpec {
            workload: Workload::Register,
            clients: 10,
            keys: 3,
            time: Duration::from_secs(secs),
            seed,
            client_timeout: Duration::from_secs(2),
            recovery: Duration::from_secs(30),
        },
        nodes: 3,
        nemesis,
        out,
        doozerd: doozerd(),
        unsafe_local_reads: unsafe_reads,
    }
}

fn report(o: &Outcome) -> String {
    std::fs::read_to_string(&o.report_txt).unwrap_or_else(|e| format!("no report: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_under_partitions_and_kills_passes() {
    let secs = std::env::var("JEPSEN_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path().to_path_buf(),
        secs,
        7,
        vec![Family::Partition, Family::Kill],
        false,
    );
    let o = run(&cfg).await.expect("the run itself failed");
    let txt = report(&o);
    let keep = dir.keep();
    assert!(
        o.verdicts.passed(),
        "jepsen run failed (kept in {}):\n{txt}",
        keep.display()
    );
    // The run must have done real work under real faults, or passing means little.
    let h = &o.collected.history;
    assert!(
        h.iter().filter(|op| op.ok == Some(true)).count() > 200,
        "{txt}"
    );
    assert!(o.collected.faults.len() >= 3, "{txt}");
    // Peer traffic went through the proxies, each connection's dialer was identified, and
    // the partitions really dropped bytes.
    assert!(o.proxy.accepted > 0 && o.proxy.forwarded_bytes > 0, "{txt}");
    assert_eq!(o.proxy.unidentified, 0, "{txt}");
    if o.collected.faults.iter().any(|f| f.family == "partition") {
        assert!(o.proxy.dropped_bytes > 0, "{txt}");
    }
    assert!(dir_has(
        &keep,
        &["history.jsonl", "report.txt", "report.html"]
    ));
    let _ = std::fs::remove_dir_all(&keep);
}

fn dir_has(dir: &std::path::Path, files: &[&str]) -> bool {
    files.iter().all(|f| dir.join(f).is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_stale_reads_are_caught() {
    let mut reports = Vec::new();
    for seed in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path().to_path_buf(),
            15,
            seed,
            vec![Family::Partition],
            true,
        );
        let o = run(&cfg).await.expect("the run itself failed");
        let lin = o.verdicts.linear.as_ref().expect("register workload");
        if let Some(a) = lin.first_anomaly(&o.collected.history) {
            assert!(a.op_index < o.collected.history.len());
            assert!(!o.verdicts.passed());
            assert!(report(&o).contains("NOT linearizable"));
            return;
        }
        reports.push(report(&o));
    }
    panic!(
        "3 runs with --unsafe-local-reads under partitions found no anomaly:\n{}",
        reports.join("\n----\n")
    );
}
