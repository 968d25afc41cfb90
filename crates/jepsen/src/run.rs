//! One run of the harness: start a cluster, drive a workload under a nemesis, heal, do the
//! final reads, check, and write the history and the reports.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use doozer_client::{Client, ClientError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tracing::{info, info_span, Instrument};

use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::history::{self, HistoryError, Op};
use crate::linearizability::{self, CheckOptions};
use crate::nemesis::{self, Family, Fault};
use crate::report;
use crate::set_checker::{self, SetReport};
use crate::watch_checker::{self, AckedWrite, SeenEvent, WatchReport, WatcherLog};
use crate::workload::{self, client_options, Recorder, Workload};

/// Why a run could not be carried out (as opposed to a check failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cluster could not be started or driven.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A client could not connect at the start.
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// Writing the history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Writing a report or creating the output directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the workload does, independent of where the cluster comes from.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Which workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys of the register workload.
    pub keys: usize,
    /// How long the clients run.
    pub time: Duration,
    /// Seed of the clients' choices (each client derives its own).
    pub seed: u64,
    /// Deadline of each client call.
    pub client_timeout: Duration,
    /// How long the final reads may take, after the heal, before the cluster counts as
    /// unavailable.
    pub recovery: Duration,
}

/// The addresses a workload uses.
#[derive(Debug, Clone)]
pub struct Uris {
    /// One URI per client (all nodes, each starting at a different one).
    pub clients: Vec<String>,
    /// One URI per node, naming that node alone (for the final reads).
    pub nodes: Vec<String>,
}

/// What the watch workload collected.
#[derive(Debug, Clone, Default)]
pub struct WatchData {
    /// First revision watched.
    pub from_rev: i64,
    /// Revision of the end marker.
    pub end_rev: i64,
    /// The committed history read at the end.
    pub reference: Vec<SeenEvent>,
    /// What each watcher saw.
    pub logs: Vec<WatcherLog>,
    /// Watch streams that ended with an error.
    pub errors: Vec<(u64, String)>,
    /// Acknowledged writes.
    pub acked: Vec<AckedWrite>,
    /// Why the committed history could not be read, if it could not.
    pub reference_error: Option<String>,
    /// Nodes passed over when reading the committed history (no history that far back).
    pub reference_notes: Vec<String>,
}

/// Everything a run collected.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// The history, sorted by call time.
    pub history: Vec<Op>,
    /// The faults injected.
    pub faults: Vec<Fault>,
    /// The watch workload's data.
    pub watch: Option<WatchData>,
    /// Nodes that could not answer the final reads after the heal.
    pub unavailable: Vec<(usize, String)>,
}

/// Runs the workload's clients against `uris` while `nemesis` runs; `nemesis` must return
/// once the run's time is up and everything is healed. Then does the final reads.
pub async fn drive<N>(
    spec: &WorkloadSpec,
    uris: &Uris,
    rec: Arc<Recorder>,
    nemesis: N,
) -> Result<Collected, RunError>
where
    N: Future<Output = Result<Vec<Fault>, ClusterError>>,
{
    let mut clients = Vec::new();
    for uri in &uris.clients {
        clients.push(Client::connect_with(uri, client_options(spec.client_timeout)).await?);
    }
    let until = rec.start() + spec.time;
    let mut watchers = None;
    if spec.workload == Workload::Watch {
        let from_rev = clients[0].rev().await? + 1;
        // Watchers get their own connections, spread over the nodes.
        let mut wc = Vec::new();
        for uri in uris.clients.iter().take(workload::WATCH_GLOBS.len()) {
            wc.push(Client::connect_with(uri, client_options(spec.client_timeout)).await?);
        }
        watchers = Some(workload::start_watchers(&wc, from_rev, rec.clone()));
    }
    let mut handles = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let id = i as u64;
        let rng =
            ChaCha8Rng::seed_from_u64(spec.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id + 1)));
        let rec = rec.clone();
        let span = info_span!("client", id, workload = spec.workload.name());
        handles.push(match spec.workload {
            Workload::Register => tokio::spawn(
                workload::register_client(id, client, rec, spec.keys, until, rng).instrument(span),
            ),
            Workload::Set => {
                tokio::spawn(workload::set_client(id, client, rec, until).instrument(span))
            }
            Workload::Watch => tokio::spawn(
                workload::watch_writer(
                    id,
                    client,
                    rec,
                    watchers.as_ref().expect("started above").acked.clone(),
                    until,
                    rng,
                )
                .instrument(span),
            ),
        });
    }
    let (faults, _) = tokio::join!(nemesis, futures::future::join_all(handles));
    let faults = faults?;
    info!("workload done; final reads");
    let mut collected = Collected {
        faults,
        ..Collected::default()
    };
    match spec.workload {
        Workload::Register => {
            collected.unavailable =
                workload::register_final_reads(&uris.nodes, &rec, spec.keys, spec.recovery).await;
        }
        Workload::Set => {
            collected.unavailable =
                workload::set_final_reads(&uris.nodes, &rec, spec.recovery).await;
        }
        Workload::Watch => {
            let w = watchers.expect("started above");
            let mut data = WatchData {
                from_rev: w.from_rev,
                ..WatchData::default()
            };
            let read =
                workload::read_committed(&uris.clients[0], &uris.nodes, w.from_rev, spec.recovery)
                    .await;
            let (read, notes) = read;
            data.reference_notes = notes;
            match read {
                Ok((reference, end)) => {
                    w.await_caught_up(&reference, spec.recovery).await;
                    data.reference = reference;
                    data.end_rev = end;
                }
                Err(e) if e.code() == Some(doozer_client::ErrCode::TooLate) => {
                    data.reference_error = Some(format!(
                        "{e}: no node kept the history back to rev {} (a node that catches \
                         up from a snapshot keeps no history before it)",
                        w.from_rev
                    ))
                }
                Err(e) => data.reference_error = Some(e.to_string()),
            }
            data.acked = w.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (logs, errors) = w.stop().await;
            data.logs = logs;
            data.errors = errors;
            collected.watch = Some(data);
        }
    }
    collected.history = rec.ops();
    Ok(collected)
}

/// The checkers' results.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    /// Linearizability (register workload).
    pub linear: Option<linearizability::Report>,
    /// The set checker (set workload).
    pub set: Option<SetReport>,
    /// The watch checker (watch workload).
    pub watch: Option<WatchReport>,
    /// Other failures: unavailability after the heal, node crashes, watch errors.
    pub problems: Vec<String>,
    /// Wall-clock time the checkers took.
    pub check_time: Duration,
}

impl Verdicts {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self.linear.as_ref().is_none_or(|l| l.is_linearizable())
            && self.set.as_ref().is_none_or(|s| s.passed())
            && self.watch.as_ref().is_none_or(|w| w.passed())
    }
}

/// Runs the checkers of `workload` on what was collected. `crashes` are node exits the
/// harness did not cause.
pub fn check(workload: Workload, c: &Collected, crashes: &[(usize, String)]) -> Verdicts {
    let started = std::time::Instant::now();
    let mut v = Verdicts::default();
    for (node, why) in &c.unavailable {
        v.problems.push(format!(
            "node n{node} could not answer the final reads after the cluster healed: {why}"
        ));
    }
    for (node, status) in crashes {
        v.problems.push(format!("node n{node}: {status}"));
    }
    match workload {
        Workload::Register => {
            v.linear = Some(linearizability::check(&c.history, CheckOptions::default()));
        }
        Workload::Set => v.set = Some(set_checker::check(&c.history)),
        Workload::Watch => {
            let data = c.watch.clone().unwrap_or_default();
            if let Some(e) = &data.reference_error {
                v.problems
                    .push(format!("could not read the committed history: {e}"));
            }
            for (w, e) in &data.errors {
                v.problems
                    .push(format!("watcher {w} ended with an error: {e}"));
            }
            v.watch = Some(watch_checker::check(
                &data.reference,
                data.from_rev,
                data.end_rev,
                &data.logs,
                &data.acked,
            ));
        }
    }
    v.check_time = started.elapsed();
    v
}

/// Everything `doozer-jepsen run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The workload.
    pub spec: WorkloadSpec,
    /// Number of nodes.
    pub nodes: usize,
    /// Fault families.
    pub nemesis: Vec<Family>,
    /// Output directory.
    pub out: PathBuf,
    /// The `doozerd` binary.
    pub doozerd: PathBuf,
    /// Start the nodes with the planted bug.
    pub unsafe_local_reads: bool,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was collected.
    pub collected: Collected,
    /// The checkers' verdicts.
    pub verdicts: Verdicts,
    /// Path of `report.txt`.
    pub report_txt: PathBuf,
    /// What the fault proxies did.
    pub proxy: report::ProxyCounts,
}

/// Runs the nemesis schedule on `c` for `total`, then heals everything.
async fn run_nemesis(
    c: &mut Cluster,
    families: &[Family],
    total: Duration,
    seed: u64,
    rec: Arc<Recorder>,
) -> Result<Vec<Fault>, ClusterError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let steps = nemesis::schedule(families, total, &mut rng);
    let start = tokio::time::Instant::from_std(rec.start());
    let mut at = Duration::ZERO;
    let mut faults = Vec::new();
    for step in steps {
        at += step.quiet;
        tokio::time::sleep_until(start + at).await;
        for dead in c.reap() {
            c.restart(dead).await?;
        }
        let mut f = nemesis::inject(c, step.family, &mut rng, rec.now_ns()).await?;
        at += step.hold;
        tokio::time::sleep_until(start + at).await;
        nemesis::lift(c, &mut f, rec.now_ns()).await?;
        faults.push(f);
    }
    tokio::time::sleep_until(start + total).await;
    c.heal_all().await?;
    Ok(faults)
}

/// Runs the harness: see the crate docs.
pub async fn run(cfg: &RunConfig) -> Result<Outcome, RunError> {
    let span = info_span!(
        "run",
        workload = cfg.spec.workload.name(),
        seed = cfg.spec.seed,
        nodes = cfg.nodes
    );
    run_inner(cfg).instrument(span).await
}

async fn run_inner(cfg: &RunConfig) -> Result<Outcome, RunError> {
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |source| RunError::Io { what, source }
    };
    std::fs::create_dir_all(&cfg.out).map_err(io("create", &cfg.out))?;
    let (hist_revs, checkpoint_revs) =
        crate::cluster::store_settings(cfg.spec.workload, cfg.spec.time);
    let mut cluster = Cluster::start(ClusterConfig {
        doozerd: cfg.doozerd.clone(),
        nodes: cfg.nodes,
        dir: cfg.out.clone(),
        unsafe_local_reads: cfg.unsafe_local_reads,
        write_deadline_secs: cfg.spec.client_timeout.as_secs_f64(),
        hist_revs,
        checkpoint_revs,
    })
    .await?;
    info!(nodes = cfg.nodes, "cluster formed");
    let rec = Arc::new(Recorder::new());
    let uris = Uris {
        clients: (0..cfg.spec.clients)
            .map(|i| cluster.uri(i % cfg.nodes))
            .collect(),
        nodes: (0..cfg.nodes).map(|i| cluster.uri_of(i)).collect(),
    };
    let nemesis = run_nemesis(
        &mut cluster,
        &cfg.nemesis,
        cfg.spec.time,
        cfg.spec.seed,
        rec.clone(),
    );
    let collected = drive(&cfg.spec, &uris, rec, nemesis).await;
    cluster.reap();
    let crashes = cluster.crashes().to_vec();
    let stats = report::ProxyCounts::of(cluster.net().stats());
    cluster.stop().await;
    drop(cluster);
    let collected = collected?;
    let verdicts = check(cfg.spec.workload, &collected, &crashes);
    history::save(&collected.history, &cfg.out.join("history.jsonl"))?;
    if let Some(w) = &collected.watch {
        let p = cfg.out.join("watch.jsonl");
        let mut lines = String::new();
        for e in w
            .logs
            .iter()
            .flat_map(|l| l.events.iter())
            .chain(&w.reference)
        {
            lines.push_str(&serde_json::to_string(e).unwrap_or_default());
            lines.push('\n');
        }
        std::fs::write(&p, lines).map_err(io("write", &p))?;
    }
    let faults_path = cfg.out.join("faults.jsonl");
    let mut lines = String::new();
    for f in &collected.faults {
        lines.push_str(&serde_json::to_string(f).unwrap_or_default());
        lines.push('\n');
    }
    std::fs::write(&faults_path, lines).map_err(io("write", &faults_path))?;
    let ctx = report::Context {
        cfg,
        collected: &collected,
        verdicts: &verdicts,
        proxy: stats,
    };
    let txt = cfg.out.join("report.txt");
    std::fs::write(&txt, report::text(&ctx)).map_err(io("write", &txt))?;
    let html = cfg.out.join("report.html");
    std::fs::write(&html, report::html(&ctx)).map_err(io("write", &html))?;
    Ok(Outcome {
        collected,
        verdicts,
        report_txt: txt,
        proxy: stats,
    })
}
