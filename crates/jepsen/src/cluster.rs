//! A cluster of real `doozerd` processes on 127.0.0.1, with their peer links routed
//! through the harness's [`Net`] of fault proxies.
//!
//! Node `i` listens on `127.0.0.1:L_i` (clients dial this directly) and advertises its
//! proxy `P_i` (`--advertise`), so every peer connection to it crosses the proxy. Each node
//! keeps its data directory and log under `DIR/nodes/n<i>/`; a restart reuses both, and
//! the same ports. The leader is learnt from the nodes' logs (`became leader`,
//! `leader changed leader=<id>`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use doozer_client::{Client, ClientOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::proxy::Net;
use crate::workload::Workload;

/// Why the cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The doozerd binary is not there.
    #[error("doozerd binary not found at {0} (build it with `cargo build -p doozerd`, or pass --doozerd PATH)")]
    NoBinary(PathBuf),
    /// Starting a process or a proxy, or writing a file, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A node did not come up in time.
    #[error("node n{node} did not start: {reason} (see {log})")]
    Start {
        /// The node.
        node: usize,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: String,
    },
    /// The cluster did not form (not every node became a member) in time.
    #[error("cluster did not form: {0}")]
    Form(String),
}

/// Ports below Linux's default ephemeral range (32768-60999), where neither `bind` to port
/// 0 nor an outgoing connection's source port lands: a node's port, released here and bound
/// by the node (again after every restart), is not taken meanwhile by a proxy, a client
/// connection or another cluster's reservation, as a port from `bind(0)` could be.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// `n` distinct free ports on 127.0.0.1 from [`NODE_PORTS`], found by binding them (held
/// until all are found, then released); ports from `bind(0)` if that range is full.
fn reserve_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let span = (NODE_PORTS.end - NODE_PORTS.start) as usize;
    let start = rand::random::<u16>() as usize;
    let mut held = Vec::new();
    for k in 0..span {
        if held.len() == n {
            break;
        }
        let port = NODE_PORTS.start + ((start + k) % span) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    while held.len() < n {
        held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
    }
    held.iter().map(|l| l.local_addr()).collect()
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `doozerd` binary.
    pub doozerd: PathBuf,
    /// Number of nodes (all of them voters).
    pub nodes: usize,
    /// Directory for data directories and logs.
    pub dir: PathBuf,
    /// Start the nodes with the planted bug `--unsafe-local-reads`.
    pub unsafe_local_reads: bool,
    /// `--write-deadline` of the nodes, in seconds.
    pub write_deadline_secs: f64,
    /// `--hist` of the nodes: revisions of history kept (see [`hist_for`]).
    pub hist_revs: u64,
    /// `--checkpoint-revs` of the nodes, if not their default.
    pub checkpoint_revs: Option<u64>,
}

/// `--hist` and `--checkpoint-revs` for the nodes of a run of `workload` lasting `time`.
/// Only the watch checker reads history (the whole run's: [`hist_for`]). The others run
/// with little history and a checkpoint every few thousand revisions (at least 2,000, and
/// as many as the files and undo records: the set workload's files grow), so that their
/// faults land while checkpoints are written and restarts load them: at the nodes' defaults
/// a run ends before its first checkpoint.
pub fn store_settings(workload: Workload, time: Duration) -> (u64, Option<u64>) {
    match workload {
        Workload::Watch => (hist_for(time), None),
        _ => (2_000, Some(2_000)),
    }
}

/// The `--hist` a run of `time` needs: the watch checker reads the committed history back
/// to the first revision a watcher saw, so the nodes must keep the whole run's. The nodes'
/// default (100,000) was passed by a 60 s run of 126,000 writes (TOO_LATE at the end).
/// 10,000 revisions per second is ~5x the rate of a 3-node run on 2 cores; history costs
/// memory only for the revisions written.
pub fn hist_for(time: Duration) -> u64 {
    (time.as_secs() + 1).saturating_mul(10_000).max(100_000)
}

/// What each node's log says about the leader: `Some(Some(i))` node i, `Some(None)` no
/// leader, `None` nothing said yet.
type LeaderViews = Arc<Mutex<Vec<Option<Option<String>>>>>;

/// One node.
struct NodeProc {
    listen: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    id: Option<String>,
    paused: bool,
}

/// A running cluster. Dropping it kills every node (SIGKILL) and stops the proxies.
pub struct Cluster {
    cfg: ClusterConfig,
    nodes: Vec<NodeProc>,
    net: Net,
    views: LeaderViews,
    /// Node exits the harness did not cause: (node, exit status).
    crashes: Vec<(usize, String)>,
}

impl Cluster {
    /// Starts `cfg.nodes` nodes: the first creates the cluster with `--cals N`, the others
    /// join through it; returns once every `/ctl/cal` slot is taken and a write succeeds.
    pub async fn start(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        if !cfg.doozerd.is_file() {
            return Err(ClusterError::NoBinary(cfg.doozerd.clone()));
        }
        let listens = reserve_ports(cfg.nodes).map_err(io("reserve ports"))?;
        let net = Net::start(listens.clone())
            .await
            .map_err(io("start the proxies"))?;
        let mut nodes = Vec::new();
        for (i, listen) in listens.iter().enumerate() {
            let dir = cfg.dir.join("nodes").join(format!("n{i}"));
            std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
            nodes.push(NodeProc {
                listen: *listen,
                data: dir.join("data"),
                log: dir.join("log.txt"),
                child: None,
                id: None,
                paused: false,
            });
        }
        let views = Arc::new(Mutex::new(vec![None; cfg.nodes]));
        let mut c = Cluster {
            cfg,
            nodes,
            net,
            views,
            crashes: Vec::new(),
        };
        c.spawn(0, true).await?;
        for i in 1..c.nodes.len() {
            c.spawn(i, true).await?;
        }
        c.await_formed(Duration::from_secs(60)).await?;
        Ok(c)
    }

    /// The proxies.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a cluster without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Client address of node `i`.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].listen
    }

    /// A `doozer:` URI listing every node's client address, starting with node `first`.
    pub fn uri(&self, first: usize) -> String {
        let n = self.nodes.len();
        let parts: Vec<String> = (0..n)
            .map(|k| format!("ca={}", self.nodes[(first + k) % n].listen))
            .collect();
        format!("doozer:?{}", parts.join("&"))
    }

    /// A `doozer:` URI of node `i` alone.
    pub fn uri_of(&self, i: usize) -> String {
        format!("doozer:?ca={}", self.nodes[i].listen)
    }

    /// Node `i`'s log file.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// Is node `i`'s process running (possibly paused)?
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Is node `i` paused (SIGSTOP)?
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Node exits the harness did not cause and failed restarts, as (node, what happened).
    pub fn crashes(&self) -> &[(usize, String)] {
        &self.crashes
    }

    /// The node the live nodes' logs agree is leader: the view held by most running,
    /// unpaused nodes, if it names a node.
    pub fn leader(&self) -> Option<usize> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let mut votes: Vec<(Option<String>, usize)> = Vec::new();
        for (i, v) in views.iter().enumerate() {
            if !self.is_up(i) || self.nodes[i].paused {
                continue;
            }
            if let Some(v) = v {
                let v = match v {
                    Some(s) if s == SELF => self.nodes[i].id.clone(),
                    other => other.clone(),
                };
                match votes.iter_mut().find(|(x, _)| *x == v) {
                    Some((_, k)) => *k += 1,
                    None => votes.push((v, 1)),
                }
            }
        }
        let (id, _) = votes.into_iter().max_by_key(|(_, k)| *k)?;
        let id = id?;
        self.nodes
            .iter()
            .position(|n| n.id.as_deref() == Some(id.as_str()))
    }

    /// Starts node `i`'s process (`first_time`: with the flags that create or join the
    /// cluster) and waits for its `listening` line.
    async fn spawn(&mut self, i: usize, first_time: bool) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        let mut cmd = Command::new(&self.cfg.doozerd);
        cmd.arg("-l")
            .arg(node.listen.to_string())
            .arg("--advertise")
            .arg(self.net.proxy_addr(i).to_string())
            .arg("--data-dir")
            .arg(&node.data)
            .arg("-c")
            .arg("jepsen")
            .arg("-w")
            .arg("false")
            .arg("--write-deadline")
            .arg(self.cfg.write_deadline_secs.to_string())
            .arg("--hist")
            .arg(self.cfg.hist_revs.to_string());
        if let Some(n) = self.cfg.checkpoint_revs {
            cmd.arg("--checkpoint-revs").arg(n.to_string());
        }
        if first_time {
            if i == 0 {
                cmd.arg("--cals").arg(self.cfg.nodes.to_string());
            } else {
                cmd.arg("-a").arg(self.nodes[0].listen.to_string());
            }
        }
        if self.cfg.unsafe_local_reads {
            cmd.arg("--unsafe-local-reads");
        }
        cmd.env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("JEPSEN_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // If the harness itself dies (even by SIGKILL), its nodes must not outlive it.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log_path = node.log.clone();
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .await
            .map_err(io(format!("open {}", log_path.display())))?;
        log.write_all(format!("==== harness: starting n{i} ====\n").as_bytes())
            .await
            .map_err(io("write log"))?;
        let mut child = cmd
            .spawn()
            .map_err(io(format!("spawn {}", self.cfg.doozerd.display())))?;
        let pid = child.id();
        // Before anything else: the node dials its peers as soon as it starts, and the
        // proxies identify the dialer by pid.
        self.net.set_pid(i, pid);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // stderr: append to the log, and follow what the node says about the leader.
        let stderr_task = {
            let views = self.views.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    if let Some(v) = leader_view(&line) {
                        views.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v);
                    }
                    let _ = log.write_all(line.as_bytes()).await;
                    let _ = log.write_all(b"\n").await;
                }
                let _ = log.flush().await;
            })
        };
        // stdout: the `doozerd <id> listening on <addr>` line.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("doozerd ") {
                    if let (Some(id), Some(tx)) = (rest.split_whitespace().next(), tx.take()) {
                        let _ = tx.send(id.to_string());
                    }
                }
            }
        });
        let fail = |reason: String| ClusterError::Start {
            node: i,
            reason,
            log: log_path.display().to_string(),
        };
        let id = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(id)) => id,
            Ok(Err(_)) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                // The node's last words, in the error itself: a test's temporary directory,
                // and the log with it, is gone by the time anyone reads the failure.
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let marker = format!("==== harness: starting n{i} ====");
                let this_start = said.rsplit(&marker).next().unwrap_or_default();
                let lines: Vec<&str> = this_start.lines().filter(|l| !l.is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
                return Err(fail(format!(
                    "exited before listening ({status}); its log ends:\n  {tail}"
                )));
            }
            Err(_) => return Err(fail("no `listening` line within 30 s".into())),
        };
        info!(node = i, %id, pid, "node up");
        let node = &mut self.nodes[i];
        node.id = Some(id);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Waits until every `/ctl/cal` slot holds a node id and a write through each node
    /// succeeds.
    async fn await_formed(&self, within: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        let opts = ClientOptions {
            timeout: Some(Duration::from_secs(3)),
            ..ClientOptions::default()
        };
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match self.formed_once(&opts).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ClusterError::Form(last))
    }

    async fn formed_once(&self, opts: &ClientOptions) -> Result<(), String> {
        let c = Client::connect_with(&self.uri_of(0), opts.clone())
            .await
            .map_err(|e| e.to_string())?;
        let cals = c
            .getdir_all("/ctl/cal", None)
            .await
            .map_err(|e| e.to_string())?;
        let mut filled = 0;
        for name in &cals {
            let (v, _) = c
                .get(&format!("/ctl/cal/{name}"), None)
                .await
                .map_err(|e| e.to_string())?;
            if !v.is_empty() {
                filled += 1;
            }
        }
        if filled < self.nodes.len() {
            return Err(format!("{filled} of {} cal slots taken", self.nodes.len()));
        }
        // New voters count only `alpha` slots after they claimed: push enough writes
        // through for the claims to take effect, through every node.
        for i in 0..self.nodes.len() {
            let c = Client::connect_with(&self.uri_of(i), opts.clone())
                .await
                .map_err(|e| e.to_string())?;
            for _ in 0..if i == 0 { 60 } else { 3 } {
                c.set("/jepsen-setup/ping", -1, format!("n{i}"))
                    .await
                    .map_err(|e| format!("write through n{i}: {e}"))?;
            }
        }
        Ok(())
    }

    /// `kill -9` node `i` (continues it first if paused, so it dies at once).
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(&child, libc::SIGCONT);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        // Only once it is dead: a connection it dialed until then is still its own.
        self.net.set_pid(i, None);
        node.paused = false;
        self.views.lock().unwrap_or_else(|p| p.into_inner())[i] = None;
    }

    /// Stops node `i` gracefully (SIGTERM), falling back to SIGKILL after `grace`.
    /// Returns false if it had to be killed.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> bool {
        let mut clean = true;
        let node = &mut self.nodes[i];
        if let Some(child) = node.child.as_mut() {
            if node.paused {
                signal(child, libc::SIGCONT);
            }
            signal(child, libc::SIGTERM);
            clean = tokio::time::timeout(grace, child.wait()).await.is_ok();
        }
        if !clean {
            warn!(node = i, ?grace, "node ignored SIGTERM; killing it");
        }
        self.kill(i).await;
        clean
    }

    /// Restarts a killed node from its data directory. A node that does not come back is
    /// a finding, not a harness failure: it is recorded in [`Cluster::crashes`] and the
    /// run goes on without it.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        match self.spawn(i, false).await {
            Ok(()) => Ok(()),
            Err(e @ ClusterError::Start { .. }) => {
                warn!(node = i, error = %e, "node did not restart");
                self.net.set_pid(i, None);
                self.crashes.push((i, format!("did not restart: {e}")));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(c) = &node.child {
            if !node.paused {
                signal(c, libc::SIGSTOP);
                node.paused = true;
            }
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(c) = &node.child {
            if node.paused {
                signal(c, libc::SIGCONT);
                node.paused = false;
            }
        }
    }

    /// Notices nodes that exited on their own, recording them as crashes. Returns the
    /// nodes found dead.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut dead = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(c) = node.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    warn!(node = i, %status, "node exited on its own");
                    self.crashes
                        .push((i, format!("exited on its own ({status})")));
                    node.child = None;
                    node.paused = false;
                    self.net.set_pid(i, None);
                    dead.push(i);
                }
            }
        }
        dead
    }

    /// Heals everything: network healthy, paused nodes continued, dead nodes restarted.
    pub async fn heal_all(&mut self) -> Result<(), ClusterError> {
        self.net.heal();
        self.reap();
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Stops every node (SIGKILL).
    pub async fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(c) = node.child.as_mut() {
                if node.paused {
                    signal(c, libc::SIGCONT);
                }
                // kill_on_drop also does this; be explicit so paused nodes die too.
                let _ = c.start_kill();
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// Removes terminal colour sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a log line says about the leader, if anything: `Some(Some(id))`, or `Some(None)`
/// for "no leader". `became leader` lines name the node itself and are handled by the
/// caller through the `SELF` marker.
fn leader_view(line: &str) -> Option<Option<String>> {
    if line.contains("became leader") {
        return Some(Some(SELF.into()));
    }
    if line.contains("leader changed") {
        let id = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("leader="))?;
        return Some(Some(id.trim_matches('"').to_string()));
    }
    if line.contains("no leader") {
        return Some(None);
    }
    None
}

/// Stands for the node's own id in a view.
const SELF: &str = "<self>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_tell_the_leader() {
        let l = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m doozerd::driver: leader changed leader=ABCDEFGHIJKLMNOP";
        assert_eq!(
            leader_view(&strip_ansi(l)),
            Some(Some("ABCDEFGHIJKLMNOP".into()))
        );
        assert_eq!(
            leader_view("INFO doozerd::driver: became leader ballot=Ballot { round: 3 }"),
            Some(Some(SELF.into()))
        );
        assert_eq!(leader_view("INFO doozerd::driver: no leader"), Some(None));
        assert_eq!(leader_view("INFO doozerd::peer: peer link"), None);
    }

    #[test]
    fn the_nodes_keep_the_history_of_the_whole_run() {
        // A 60 s watch run wrote 126,000 revisions (2026-12-06, 3 nodes on 2 cores) and
        // failed its check with the nodes' default of 100,000: keep a wide margin over that.
        assert!(hist_for(Duration::from_secs(60)) >= 4 * 126_000);
        assert!(hist_for(Duration::from_secs(3600)) >= 60 * 4 * 126_000);
        // Short runs keep at least the nodes' default.
        assert_eq!(hist_for(Duration::ZERO), 100_000);
        // Only watch runs need it; the others checkpoint often instead.
        let minute = Duration::from_secs(60);
        assert_eq!(
            store_settings(Workload::Watch, minute),
            (hist_for(minute), None)
        );
        for w in [Workload::Register, Workload::Set] {
            let (hist, ckpt) = store_settings(w, minute);
            assert!(hist < 100_000 && ckpt.is_some_and(|c| c < 100_000), "{w:?}");
        }
    }

    #[test]
    fn node_ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ports = reserve_ports(5).unwrap();
        let mut distinct: Vec<u16> = ports.iter().map(|a| a.port()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "{ports:?}");
        for a in &ports {
            assert!(NODE_PORTS.contains(&a.port()), "{a}");
            std::net::TcpListener::bind(a).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
    }

    /// A node that exits before listening: the error carries the end of its log.
    #[tokio::test]
    async fn a_node_that_exits_at_start_is_reported_with_its_last_words() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("doozerd");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'cannot bind: address in use' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = ClusterConfig {
            doozerd: fake,
            nodes: 1,
            dir: dir.path().join("run"),
            unsafe_local_reads: false,
            write_deadline_secs: 1.0,
            hist_revs: hist_for(Duration::from_secs(1)),
            checkpoint_revs: None,
        };
        match Cluster::start(cfg).await {
            Err(e @ ClusterError::Start { .. }) => {
                let e = e.to_string();
                assert!(e.contains("exited before listening"), "{e}");
                assert!(e.contains("cannot bind: address in use"), "{e}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("started"),
        }
    }
}
