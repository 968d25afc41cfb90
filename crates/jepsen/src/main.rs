//! `doozer-jepsen`: runs a doozer-rs cluster under faults and checks what clients saw.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use doozer_jepsen::linearizability::{self, CheckOptions};
use doozer_jepsen::nemesis::parse_families;
use doozer_jepsen::run::{run, RunConfig, WorkloadSpec};
use doozer_jepsen::workload::Workload;
use doozer_jepsen::{find_doozerd, history, parse_duration};

#[derive(Parser, Debug)]
#[command(name = "doozer-jepsen", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster, run a workload under faults, check the history, write reports.
    /// Exits 0 only if every check passed.
    Run {
        /// Number of nodes (all voters).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How long the clients run: `60s`, `2m`, `500ms` or seconds.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        time: Duration,
        /// The workload.
        #[arg(long, value_enum, default_value = "register")]
        workload: Workload,
        /// Faults, comma-separated: partition, slow, lossy, kill, pause, restart; or all, none.
        #[arg(long, default_value = "partition,kill")]
        nemesis: String,
        /// Seed of the fault schedule and the clients' choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (history, reports, node data and logs).
        #[arg(long)]
        out: PathBuf,
        /// The doozerd binary. Default: the workspace's target/release/doozerd, else
        /// target/debug/doozerd, found from this executable's location.
        #[arg(long)]
        doozerd: Option<PathBuf>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Keys of the register workload.
        #[arg(long, default_value_t = 5)]
        keys: usize,
        /// Deadline of each client call (also the nodes' --write-deadline).
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        client_timeout: Duration,
        /// Start the nodes with the planted bug --unsafe-local-reads (reads skip the read
        /// index): the checker should find stale reads.
        #[arg(long)]
        unsafe_local_reads: bool,
        /// Run this many times, with seeds seed, seed+1, ..., each into OUT/seed-<n>;
        /// stops at the first failing run.
        #[arg(long, default_value_t = 1)]
        runs: u64,
    },
    /// Check a history.jsonl of the register workload for linearizability.
    Check {
        /// The history file.
        history: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().cmd {
        Cmd::Check { history: path } => {
            let ops = match history::load(&path) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("doozer-jepsen: {e}");
                    return ExitCode::from(2);
                }
            };
            let t = std::time::Instant::now();
            let rep = linearizability::check(&ops, CheckOptions::default());
            for k in &rep.keys {
                println!(
                    "{}: {} ops, {} searched, {} states: {:?}",
                    k.key, k.ops, k.searched, k.states, k.verdict
                );
            }
            println!(
                "{} in {:.2?}",
                if rep.is_linearizable() {
                    "linearizable"
                } else {
                    "NOT linearizable (or unknown)"
                },
                t.elapsed()
            );
            if rep.is_linearizable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Run {
            nodes,
            time,
            workload,
            nemesis,
            seed,
            out,
            doozerd,
            clients,
            keys,
            client_timeout,
            unsafe_local_reads,
            runs,
        } => {
            let nemesis = match parse_families(&nemesis) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("doozer-jepsen: {e}");
                    return ExitCode::from(2);
                }
            };
            if nodes == 0 || clients == 0 || keys == 0 {
                eprintln!("doozer-jepsen: --nodes, --clients and --keys must be at least 1");
                return ExitCode::from(2);
            }
            let doozerd = match doozerd.or_else(|| find_doozerd(false)) {
                Some(d) => d,
                None => {
                    eprintln!(
                        "doozer-jepsen: no doozerd found in the target directory; build it \
                         (cargo build -p doozerd) or pass --doozerd PATH"
                    );
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("doozer-jepsen: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for k in 0..runs.max(1) {
                let seed = seed.wrapping_add(k);
                let cfg = RunConfig {
                    spec: WorkloadSpec {
                        workload,
                        clients,
                        keys,
                        time,
                        seed,
                        client_timeout,
                        recovery: Duration::from_secs(30),
                    },
                    nodes,
                    nemesis: nemesis.clone(),
                    out: if runs > 1 {
                        out.join(format!("seed-{seed}"))
                    } else {
                        out.clone()
                    },
                    doozerd: doozerd.clone(),
                    unsafe_local_reads,
                };
                match rt.block_on(run(&cfg)) {
                    Ok(outcome) => {
                        match std::fs::read_to_string(&outcome.report_txt) {
                            Ok(t) => print!("{t}"),
                            Err(e) => eprintln!("doozer-jepsen: {e}"),
                        }
                        println!("reports in {}", cfg.out.display());
                        if !outcome.verdicts.passed() {
                            if runs > 1 {
                                println!("run {} of {runs} (seed {seed}) FAILED", k + 1);
                            }
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("doozer-jepsen: run failed (seed {seed}): {e}");
                        return ExitCode::from(3);
                    }
                }
            }
            if runs > 1 {
                println!(
                    "all {runs} runs passed (seeds {seed}..={})",
                    seed.wrapping_add(runs - 1)
                );
            }
            ExitCode::SUCCESS
        }
    }
}
