//! [`Node`]: starting and stopping a node.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doozer_paxos::{Config, Engine, NodeId, Options, PersistentState};
use doozer_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, JoinRequest};
use crate::config::{meta, NodeConfig, DEFAULT_CLUSTER, DEFAULT_LISTEN};
use crate::core::{answer_write, Applied, Consensus, Core, Handle};
use crate::driver::{patch_configs, Driver};
use crate::peer::PeerNet;
use crate::storage::StorageThread;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or store could not be opened.
    #[error("store {path}: {detail}")]
    Store {
        /// The data directory.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The listen address could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Joining the cluster failed.
    #[error(transparent)]
    Join(#[from] cluster::JoinError),
    /// The stored identity is unreadable, or the configuration contradicts it.
    #[error("configuration: {0}")]
    Config(String),
}

/// A running node. Dropping it without [`Node::shutdown`] stops its tasks too, less tidily.
pub struct Node {
    core: Arc<Core>,
    addr: SocketAddr,
    web: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    storage: Option<StorageThread>,
}

/// Events the driver may have in flight towards the storage thread.
const STORAGE_DEPTH: usize = 64;
/// Bound of the driver's input queue (proposals, peer messages, read requests).
const DRIVER_QUEUE: usize = 16_384;

fn store_err(cfg: &NodeConfig, e: impl std::fmt::Display) -> StartError {
    StartError::Store {
        path: cfg.data_dir.display().to_string(),
        detail: e.to_string(),
    }
}

fn meta_str(store: &Store, key: &str) -> Result<Option<String>, String> {
    store
        .meta_get(key)
        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
        .map_err(|e| e.to_string())
}

/// Opens the store in `cfg.data_dir`, creating the directory.
pub(crate) fn open_store(cfg: &NodeConfig) -> Result<Store, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| store_err(cfg, e))?;
    let opts = StoreOptions {
        hist_revs: cfg.hist_revs,
        retain_slots: cfg.retain_slots,
        checkpoint_revs: cfg.checkpoint_revs,
        ..StoreOptions::default()
    };
    Store::open(&cfg.data_dir.join("doozer.redb"), opts).map_err(|e| store_err(cfg, e))
}

fn new_node_id() -> NodeId {
    NodeId(rand::random::<u128>() & ((1u128 << 80) - 1))
}

impl Node {
    /// Starts a node: opens (or creates) its data directory, binds the listen address,
    /// then bootstraps a new cluster, joins one through `cfg.attach`, or resumes from disk.
    /// Returns once the node serves clients (a joiner: once it is registered).
    pub async fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        let store = open_store(&cfg)?;
        let id = match meta_str(&store, meta::ID).map_err(|e| store_err(&cfg, e))? {
            Some(s) => s
                .parse::<NodeId>()
                .map_err(|_| StartError::Config(format!("stored node id {s:?} is invalid")))?,
            None => {
                let id = new_node_id();
                store
                    .meta_put(meta::ID, id.to_string().as_bytes())
                    .map_err(|e| store_err(&cfg, e))?;
                id
            }
        };
        let stored_cluster = meta_str(&store, meta::CLUSTER).map_err(|e| store_err(&cfg, e))?;
        let cluster = match (&cfg.cluster, &stored_cluster) {
            (Some(c), Some(s)) if c != s => {
                return Err(StartError::Config(format!(
                    "data directory belongs to cluster {s:?}, not {c:?}"
                )))
            }
            (Some(c), _) => c.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => DEFAULT_CLUSTER.to_string(),
        };
        let listen = match &cfg.listen {
            Some(l) => l.clone(),
            None => meta_str(&store, meta::LISTEN)
                .map_err(|e| store_err(&cfg, e))?
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        };
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen.clone(),
            source,
        })?;
        // The web view (-w) is bound now, so a bad address fails the start like -l does.
        // Without -w: port 8000 on the listen host (0 for a node on an ephemeral port, also
        // when it restarts at the port it got), or none if that is taken.
        let restart_web_port =
            match meta_str(&store, meta::WEB_DEFAULT_PORT).map_err(|e| store_err(&cfg, e))? {
                Some(p) => {
                    let stored_listen =
                        meta_str(&store, meta::LISTEN).map_err(|e| store_err(&cfg, e))?;
                    let same = cfg.listen.is_none() || cfg.listen == stored_listen;
                    p.parse::<u16>().ok().filter(|_| same)
                }
                None => None,
            };
        let default_web = crate::config::default_web_addr(&listen, restart_web_port);
        if cfg.web == crate::config::WebView::Default {
            let port = default_web.rsplit(':').next().unwrap_or("");
            store
                .meta_put(meta::WEB_DEFAULT_PORT, port.as_bytes())
                .map_err(|e| store_err(&cfg, e))?;
        }
        let web_listener = crate::web::bind(&cfg.web, || default_web).await?;
        let web = web_listener.as_ref().map(|(_, a)| *a);
        let advertise = match &cfg.advertise {
            Some(a) => a.clone(),
            None => match meta_str(&store, meta::ADVERTISE).map_err(|e| store_err(&cfg, e))? {
                // Keep the advertised identity across restarts unless the port changed.
                Some(a) if cfg.listen.is_none() => a,
                _ => addr.to_string(),
            },
        };
        store
            .meta_put(meta::CLUSTER, cluster.as_bytes())
            .map_err(|e| store_err(&cfg, e))?;
        store
            .meta_put(meta::LISTEN, addr.to_string().as_bytes())
            .map_err(|e| store_err(&cfg, e))?;
        store
            .meta_put(meta::ADVERTISE, advertise.as_bytes())
            .map_err(|e| store_err(&cfg, e))?;

        let member = meta_str(&store, meta::MEMBER)
            .map_err(|e| store_err(&cfg, e))?
            .is_some();
        let bootstrapped = meta_str(&store, meta::BOOTSTRAPPED)
            .map_err(|e| store_err(&cfg, e))?
            .is_some();
        tracing::info!(
            %id, %cluster, listen = %addr, %advertise,
            data_dir = %cfg.data_dir.display(),
            resuming = member,
            "doozerd starting"
        );

        let stop = CancellationToken::new();

        // What the engine starts from, and what to do once it runs.
        enum Then {
            Nothing,
            Bootstrap,
        }
        let stored_config0 = match store.meta_get(meta::CONFIG0) {
            Ok(Some(b)) => Some(
                doozer_store::codec::decode::<Config>(&b)
                    .map_err(|e| StartError::Config(format!("stored membership: {e}")))?,
            ),
            Ok(None) => None,
            Err(e) => return Err(store_err(&cfg, e)),
        };
        let mut peers0: Vec<(NodeId, String)> = Vec::new();
        let (mut state, config0, then) = if member {
            let config0 = stored_config0.unwrap_or_else(|| solo(id));
            let mut st = store
                .load_engine_state(cfg.alpha)
                .map_err(|e| store_err(&cfg, e))?;
            st.configs = patch_configs(st.configs, &config0);
            let then = if !bootstrapped && config0 == solo(id) {
                // A first node that stopped before its bootstrap writes were all applied:
                // nobody else can have joined, so it is still the only voter. (A joiner
                // never bootstraps: its /ctl writes would clobber the cluster's.)
                Then::Bootstrap
            } else {
                Then::Nothing
            };
            (st, config0, then)
        } else if !cfg.attach.is_empty() {
            let req = JoinRequest {
                id,
                addr: advertise.clone(),
                hostname: cluster::hostname(),
                version: crate::config::VERSION.to_string(),
                cluster: cluster.clone(),
                applied: 0,
            };
            let info = cluster::join(&cfg.attach, &req, Duration::from_secs(30)).await?;
            peers0 = info.addrs.clone();
            let config0 = Config {
                voters: info.voters.iter().copied().collect(),
                learners: BTreeSet::from([id]),
            };
            (
                PersistentState::empty(config0.clone()),
                config0,
                Then::Nothing,
            )
        } else {
            (PersistentState::empty(solo(id)), solo(id), Then::Bootstrap)
        };
        if !member {
            if matches!(then, Then::Nothing) {
                // A joiner: the cluster exists, nothing to bootstrap, ever.
                store
                    .meta_put(meta::BOOTSTRAPPED, b"1")
                    .map_err(|e| store_err(&cfg, e))?;
            }
            store
                .meta_put(meta::CONFIG0, &doozer_store::codec::encode(&config0))
                .map_err(|e| store_err(&cfg, e))?;
            store
                .meta_put(meta::MEMBER, b"1")
                .map_err(|e| store_err(&cfg, e))?;
        }

        let (driver_tx, driver_rx) = mpsc::channel(DRIVER_QUEUE);
        let applied0 = Applied {
            slot: store.applied_slot(),
            rev: store.rev(),
        };
        let seq0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1)
            << 10;
        let core = Arc::new(Core {
            id,
            cluster: cluster.clone(),
            advertise: advertise.clone(),
            cfg: cfg.clone(),
            config0,
            store: store.clone(),
            driver: driver_tx,
            writes: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
            applied: watch::channel(applied0).0,
            consensus: watch::channel(Consensus::default()).0,
            ctl_changes: watch::channel(0).0,
            events: broadcast::channel(4096).0,
            peers: PeerNet::new(id, cluster.clone(), stop.clone()),
            heard: Mutex::new(HashMap::new()),
            stalled_at: Mutex::new(None),
            seq: AtomicU64::new(seq0),
            answered_rev: std::sync::atomic::AtomicI64::new(0),
            read_ctx: AtomicU64::new(1),
            stop: stop.clone(),
            failed: Mutex::new(None),
        });
        for (pid, paddr) in &peers0 {
            core.peers.ensure(*pid, paddr);
        }
        let clients = crate::client_conn::ClientCount::default();
        let mut tasks = vec![tokio::spawn(crate::listener::run(
            core.clone(),
            listener,
            clients.clone(),
        ))];
        if member {
            // Asked with the listener already up: peers restarting at the same time get
            // their answers (the driver, started below, takes any writes they need).
            if let Some(learner) =
                rejoin(&cfg, &store, id, &cluster, &advertise, state.applied).await
            {
                // Not a voter any more (removed while it was away): resume as a learner,
                // so the engine does not campaign on a membership the cluster left
                // behind. The real history replaces this view as the node catches up.
                state.configs = vec![(state.applied + 1, learner)];
            }
        }
        let configs0 = state.configs.clone();

        let opts = Options {
            id,
            alpha: cfg.alpha,
            heartbeat_ticks: 5,
            election_ticks: (30, 60),
            // Under load, bigger slots rather than more of them: fewer fsyncs per command.
            max_inflight: if cfg.max_inflight == 0 {
                u64::MAX
            } else {
                cfg.max_inflight
            },
            max_batch_cmds: 4096,
            max_batch_bytes: 8 << 20,
            max_pending: 65_536,
            retain_decided: cfg.retain_slots,
            seed: rand::random(),
            ..Options::default()
        };
        let engine = Engine::new(opts, state);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let answers = core.clone();
        let storage = StorageThread::start(
            store.clone(),
            STORAGE_DEPTH,
            done_tx,
            Box::new(move |results| {
                for (id, r) in results {
                    answer_write(&answers, id, r);
                }
            }),
        );
        let driver = Driver::new(
            core.clone(),
            engine,
            driver_rx,
            storage.jobs.clone(),
            done_rx,
            applied0,
            configs0,
        );
        tasks.push(tokio::spawn(driver.run()));

        let handle = Handle { core: core.clone() };
        if let Then::Bootstrap = then {
            if let Err(e) = cluster::bootstrap(&handle).await {
                stop.cancel();
                return Err(StartError::Config(format!("bootstrap failed: {e}")));
            }
            store
                .meta_put(meta::BOOTSTRAPPED, b"1")
                .map_err(|e| store_err(&cfg, e))?;
        }
        if let Some((l, a)) = web_listener {
            tasks.push(tokio::spawn(crate::web::serve(handle.clone(), l, clients)));
            crate::web::log_listening(a);
        }
        tasks.push(tokio::spawn(cluster::leaderless_task(handle.core.clone())));
        tasks.push(tokio::spawn(cluster::membership_task(handle)));
        tracing::info!(%id, listen = %addr, "doozerd ready");
        Ok(Node {
            core,
            addr,
            web,
            tasks,
            storage: Some(storage),
        })
    }

    /// The address clients (and peers) connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the read-only web view (`-w`, [`NodeConfig::web`]) listens on, if it
    /// is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web
    }

    /// This node's id (16 base32 characters).
    pub fn id(&self) -> String {
        self.core.id.to_string()
    }

    /// The handle client sessions use; also handy for embedding without a socket.
    pub fn handle(&self) -> Handle {
        Handle {
            core: self.core.clone(),
        }
    }

    /// Resolves when the node stopped on its own (storage failure).
    pub async fn stopped(&self) {
        self.core.stop.cancelled().await
    }

    /// Stops every task, waits for queued storage work to finish, closes the store.
    pub async fn shutdown(mut self) {
        tracing::info!(id = %self.core.id, "doozerd shutting down");
        self.core.stop.cancel();
        self.core.peers.close();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(mut storage) = self.storage.take() {
            let thread = storage.thread.take();
            // The last job sender goes with it: the thread finishes its queue and exits.
            drop(storage);
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.core.stop.cancel();
    }
}

/// How long a restarted member waits for its peers' answers before resuming on its own.
const REJOIN_WITHIN: Duration = Duration::from_secs(3);

/// A restarted member asks its known peers (and `-a` addresses) to register it again, in
/// case the cluster removed it while it was away. Returns the learner membership to resume
/// with if a peer that has applied at least as much as this node says it is not a voter;
/// `None` to resume from the stored membership (still a voter, or nobody answered).
async fn rejoin(
    cfg: &NodeConfig,
    store: &Store,
    id: NodeId,
    cluster: &str,
    advertise: &str,
    applied: u64,
) -> Option<Config> {
    let peers = cluster::known_peers(cfg, store, id, advertise);
    if peers.is_empty() {
        return None; // a cluster of one
    }
    let Some(info) =
        cluster::ask_peers(&peers, id, cluster, advertise, applied, REJOIN_WITHIN).await
    else {
        tracing::info!("no peer answered; resuming from the stored membership");
        return None;
    };
    if info.applied < applied || info.voters.is_empty() || info.voters.contains(&id) {
        return None;
    }
    tracing::info!(
        member = %info.id,
        its_applied = info.applied,
        applied,
        "no longer a voter; resuming as a learner"
    );
    Some(Config {
        voters: info.voters.into_iter().collect(),
        learners: BTreeSet::from([id]),
    })
}

fn solo(id: NodeId) -> Config {
    Config {
        voters: BTreeSet::from([id]),
        learners: BTreeSet::new(),
    }
}
