//! The `doozerd` binary: a doozer-rs node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use doozerd::config::WebView;
use doozerd::{Node, NodeConfig};

// A node allocates and frees many small buffers per request on several threads; glibc's
// allocator spent about a tenth of a loaded 3-node cluster's CPU (perf, scripts/bench.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A doozer-rs node: a strongly consistent, highly available store for configuration and
/// coordination data. The first node of a cluster needs no flags; further nodes join with
/// `-a ADDR` pointing at any member.
#[derive(Parser, Debug)]
#[command(name = "doozerd", version, about, long_about = None)]
struct Args {
    /// Address to listen on, for clients and peers alike. It is also this node's identity
    /// in the cluster (/ctl/node/<id>/addr), so it must be reachable by the other nodes.
    /// Default: the address of the previous run, else 127.0.0.1:8046. Port 0 picks one.
    #[arg(short = 'l', value_name = "ADDR")]
    listen: Option<String>,

    /// Join an existing cluster through this member's address (repeatable: tried in turn).
    /// A node restarting from its data directory asks these (and the peers it knows)
    /// whether it is still a member, and to register it again if it was removed.
    #[arg(short = 'a', value_name = "ADDR")]
    attach: Vec<String>,

    /// Join through a doozer URI, e.g. doozer:?ca=127.0.0.1:8046 (its ca= addresses are
    /// used like -a). Default: $DOOZER_BOOT_URI.
    #[arg(short = 'b', value_name = "URI", env = "DOOZER_BOOT_URI")]
    boot: Option<String>,

    /// Cluster name, written to /ctl/name by the first node; joiners must use the same.
    /// Default: the stored name, else "local".
    #[arg(short = 'c', value_name = "NAME")]
    cluster: Option<String>,

    /// Serve a read-only web view on this address ("false" turns it off; port 0 picks a
    /// free one; the address is logged at start). Default: port 8000 on the -l host (a free
    /// port when the -l port is 0); if that is taken, a warning and no web view, while an
    /// address given here that cannot be bound stops the start. GET / is a live HTML view
    /// of the tree, /v1/tree/<path>[?rev=N] a file or directory as JSON,
    /// /v1/events?glob=G&rev=N changes as server-sent events, /health and /metrics
    /// (Prometheus) the node's state. Nothing can be written over HTTP, and there is no
    /// login: anonymous clients' read rights apply (with both DOOZER_RWSECRET and
    /// DOOZER_ROSECRET set, the tree is refused).
    #[arg(short = 'w', value_name = "ADDR|false")]
    web: Option<String>,

    /// Seconds of silence after which the leader removes a voter from its /ctl/cal slot,
    /// so a learner can take it. Also accepted as -timeout.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,

    /// Revisions of history kept for WAIT and reads at old revisions (in memory, and in
    /// each checkpoint); older ones answer TOO_LATE. Also accepted as -hist.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    hist: u64,

    /// Directory holding this node's store (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./doozer-data")]
    data_dir: PathBuf,

    /// Number of /ctl/cal slots (voters) a new cluster is created with.
    #[arg(long, value_name = "N", default_value_t = 3)]
    cals: u32,

    /// Seconds a client write (or linearizable read) may wait for a quorum before it fails.
    /// Past it the client gets an error (for a write: its fate is unknown); never a hang.
    #[arg(
        long = "write-timeout",
        visible_alias = "write-deadline",
        value_name = "SECS",
        default_value_t = 10.0
    )]
    write_deadline: f64,

    /// Address peers use to reach this node, written to /ctl/node/<id>/addr instead of the
    /// listen address (for proxies and NAT).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,

    /// TEST ONLY: reads skip the read index and may return stale data.
    #[arg(long, hide = true)]
    unsafe_local_reads: bool,

    /// Revisions applied between two checkpoints of the tree to disk. A restart loads the
    /// last checkpoint and replays the log after it, so this bounds the replay; a larger
    /// value writes checkpoints less often (each costs about 1 us of CPU per file and
    /// history entry) but keeps more log on disk and makes restarts longer.
    #[arg(long, value_name = "N", default_value_t = doozer_store::StoreOptions::default().checkpoint_revs)]
    checkpoint_revs: u64,

    /// Worker threads of the node's runtime (client sessions, peer links, consensus).
    /// Default: half the CPUs, at least one (commits and checkpoints have threads of their
    /// own).
    // Three nodes sharing 2 CPUs spent ~12% less CPU per set with one worker each than with
    // two (alternating `scripts/bench.sh` runs, 2026-11-30).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Decided slots kept in memory to catch up lagging peers (older: snapshot).
    #[arg(long, hide = true, default_value_t = 4096)]
    retain_slots: u64,

    /// Undecided slots in flight at most, and the delay (in slots) before a membership
    /// change takes effect. Every node of a cluster must use the same value.
    #[arg(long, hide = true, default_value_t = 50)]
    alpha: u64,

    /// Slots of new commands a leader keeps in flight at most (0: up to alpha).
    #[arg(long, hide = true, default_value_t = 1)]
    max_inflight: u64,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Offline, with the node stopped: make this node the only voter. For when the other
    /// voters are gone for good and no quorum is left. Writes only they knew are lost.
    Recover {
        /// The stopped node's data directory.
        #[arg(long, value_name = "DIR", default_value = "./doozer-data")]
        data_dir: PathBuf,
    },
}

/// Go's flag package takes long names with one dash; keep `-timeout` and `-hist` working.
fn compat_args() -> Vec<String> {
    compat(std::env::args())
}

fn compat(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| {
        for name in ["-timeout", "-hist"] {
            if a == name || a.starts_with(&format!("{name}=")) {
                return format!("-{a}");
            }
        }
        a
    })
    .collect()
}

/// The `ca=` addresses of a `doozer:?` URI.
fn uri_addrs(uri: &str) -> Result<Vec<String>, String> {
    let u = doozer_proto::uri::DoozerUri::parse(uri).map_err(|e| format!("-b {uri:?}: {e}"))?;
    if u.addrs.is_empty() {
        return Err(format!(
            "-b {uri:?}: no ca= address (name lookup is not supported)"
        ));
    }
    Ok(u.addrs)
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{what}: {v} is not a valid duration"))
}

fn config(args: &Args) -> Result<NodeConfig, String> {
    if args.listen.as_deref() == Some("") {
        return Err("require a listen address (-l)".into());
    }
    let mut attach = args.attach.clone();
    if let Some(b) = &args.boot {
        attach.extend(uri_addrs(b)?);
    }
    let web = match args.web.as_deref() {
        None => WebView::Default,
        Some("false" | "0" | "f" | "F" | "FALSE" | "False") => WebView::Off,
        Some("") => return Err("-w needs an address, or false".into()),
        Some(w) => WebView::At(w.to_string()),
    };
    if args.cals == 0 {
        return Err("--cals must be at least 1".into());
    }
    if args.checkpoint_revs == 0 {
        return Err("--checkpoint-revs must be at least 1".into());
    }
    if args.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    Ok(NodeConfig {
        listen: args.listen.clone(),
        advertise: args.advertise.clone(),
        attach,
        cluster: args.cluster.clone(),
        web,
        timeout: secs(args.timeout, "--timeout")?,
        hist_revs: args.hist,
        data_dir: args.data_dir.clone(),
        cals: args.cals,
        write_deadline: secs(args.write_deadline, "--write-timeout")?,
        unsafe_local_reads: args.unsafe_local_reads,
        retain_slots: args.retain_slots,
        checkpoint_revs: args.checkpoint_revs,
        alpha: args.alpha.max(1),
        max_inflight: args.max_inflight,
        ..NodeConfig::default()
    })
}

/// Runtime workers by default on a machine with `cpus` CPUs (see `--threads`).
fn default_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

fn main() -> ExitCode {
    let args = Args::parse_from(compat_args());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(Cmd::Recover { data_dir }) = &args.cmd {
        let cfg = NodeConfig {
            data_dir: data_dir.clone(),
            ..NodeConfig::default()
        };
        return match doozerd::recover(&cfg) {
            Ok(r) => {
                println!(
                    "recovered: node {} is now the only voter (slot {}, rev {})",
                    r.id, r.slot, r.rev
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("doozerd recover: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("doozerd: {e}");
            return ExitCode::from(2);
        }
    };
    // `config` refused 0.
    let threads = args.threads.unwrap_or_else(|| {
        default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("doozerd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let node = match Node::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "doozerd failed to start");
                eprintln!("doozerd: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One machine-readable line for scripts and tests.
        println!("doozerd {} listening on {}", node.id(), node.client_addr());
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("doozerd: cannot watch SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        let failed = tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => false,
            _ = node.stopped() => true,
        };
        node.shutdown().await;
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_takes_every_ca() {
        assert_eq!(
            uri_addrs("doozer:?ca=a:1&sk=x&ca=b:2").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert!(uri_addrs("doozer?:ca=a:1").is_err());
        assert!(uri_addrs("doozer:?sk=x").is_err());
    }

    #[test]
    fn defaults_need_no_flags() {
        let a = Args::parse_from(["doozerd"]);
        let c = config(&a).unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(c.cals, 3);
        assert_eq!(c.hist_revs, 100_000);
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.write_deadline, Duration::from_secs(10));
        assert_eq!((c.alpha, c.max_inflight), (50, 1));
        assert_eq!(c.checkpoint_revs, 500_000);
    }

    #[test]
    fn flags_parse() {
        let a = Args::parse_from([
            "doozerd",
            "-l",
            "127.0.0.1:9000",
            "-a",
            "x:1",
            "-a",
            "y:2",
            "-b",
            "doozer:?ca=z:3",
            "-c",
            "prod",
            "-w",
            "false",
            "--timeout",
            "3",
            "--hist",
            "10",
            "--checkpoint-revs",
            "1000",
        ]);
        let c = config(&a).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.attach, vec!["x:1", "y:2", "z:3"]);
        assert_eq!(c.cluster.as_deref(), Some("prod"));
        assert_eq!(c.web, WebView::Off);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.hist_revs, 10);
        assert_eq!(c.checkpoint_revs, 1000);
        assert!(config(&Args::parse_from(["doozerd", "--checkpoint-revs", "0"])).is_err());
        let t = Args::parse_from(["doozerd", "--threads", "3"]);
        assert_eq!(t.threads, Some(3));
        assert_eq!(Args::parse_from(["doozerd"]).threads, None);
        assert!(config(&Args::parse_from(["doozerd", "--threads", "0"])).is_err());
    }

    #[test]
    fn default_threads_leave_room_for_the_storage_thread() {
        assert_eq!(default_threads(1), 1);
        assert_eq!(default_threads(2), 1);
        assert_eq!(default_threads(3), 1);
        assert_eq!(default_threads(8), 4);
    }

    #[test]
    fn go_style_single_dash_flags_and_aliases() {
        let argv = [
            "doozerd",
            "-timeout",
            "7",
            "-hist=12",
            "--write-deadline",
            "3",
        ]
        .map(String::from);
        let a = Args::parse_from(compat(argv.into_iter()));
        let c = config(&a).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.hist_revs, 12);
        assert_eq!(c.write_deadline, Duration::from_secs(3));
        let a = Args::parse_from(["doozerd", "--write-timeout", "0.5", "--cals", "5"]);
        let c = config(&a).unwrap();
        assert_eq!(c.write_deadline, Duration::from_millis(500));
        assert_eq!(c.cals, 5);
        assert!(config(&Args::parse_from(["doozerd", "--cals", "0"])).is_err());
    }

    #[test]
    fn help_explains_every_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "-l <ADDR>",
            "-a <ADDR>",
            "-b <URI>",
            "-c <NAME>",
            "-w <ADDR|false>",
            "--timeout <SECS>",
            "--hist <N>",
            "--data-dir <DIR>",
            "--cals <N>",
            "--write-timeout <SECS>",
            "--advertise <ADDR>",
            "--checkpoint-revs <N>",
            "recover",
        ] {
            let at = help
                .find(flag)
                .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
            // Each flag is followed by its explanation, before the next flag.
            let rest = &help[at + flag.len()..];
            let own = &rest[..rest.find("\n  -").unwrap_or(rest.len())];
            assert!(
                own.split_whitespace().count() >= 5,
                "{flag} has no explanation in --help: {own:?}"
            );
        }
        // Test-only and tuning knobs stay hidden.
        assert!(!help.contains("unsafe-local-reads"));
    }

    #[test]
    fn w_takes_an_address_false_turns_it_off_and_none_means_the_default() {
        let web = |w: &str| config(&Args::parse_from(["doozerd", "-w", w])).unwrap().web;
        assert_eq!(web("127.0.0.1:0"), WebView::At("127.0.0.1:0".into()));
        assert_eq!(web("10.0.0.1:8080"), WebView::At("10.0.0.1:8080".into()));
        for off in ["false", "0", "f", "F", "FALSE", "False"] {
            assert_eq!(web(off), WebView::Off, "-w {off}");
        }
        assert!(config(&Args::parse_from(["doozerd", "-w", ""])).is_err());
        // No -w: the default (port 8000 on the -l host, worked out at start); embedders'
        // NodeConfig::default() serves nothing.
        assert_eq!(
            config(&Args::parse_from(["doozerd"])).unwrap().web,
            WebView::Default
        );
        assert_eq!(
            config(&Args::parse_from(["doozerd", "-l", "127.0.0.1:0"]))
                .unwrap()
                .web,
            WebView::Default
        );
        assert_eq!(NodeConfig::default().web, WebView::Off);
    }

    #[test]
    fn empty_listen_is_refused() {
        let a = Args::parse_from(["doozerd", "-l", ""]);
        assert!(config(&a).is_err());
    }
}
