//! Cluster life: bootstrap, join, claiming a `/ctl/cal` slot, removing silent voters.
//!
//! Membership is replicated state, written through consensus like any file:
//! - a first node proposes `/ctl/name`, its `/ctl/node/<id>/{addr,hostname,version}`,
//!   `/ctl/cal/0` = its id and empty `/ctl/cal/1..N-1`;
//! - a joiner asks a member over the peer link ([`JoinRequest`]); the member proposes the
//!   joiner's `/ctl/node/<id>/...` files, which makes it a learner, and the joiner catches up
//!   (snapshot, then the decided stream);
//! - every registered node that is not a voter claims an empty `/ctl/cal` slot with a CAS
//!   SET; the engine makes it a voter `alpha` slots later;
//! - the leader empties the slot of a voter silent for `--timeout` and deletes its
//!   `/ctl/node/<id>` files, so a learner can take the slot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use doozer_paxos::NodeId;
use doozer_store::{Op, Store};
use serde::{Deserialize, Serialize};

use crate::core::{Core, Handle};
use crate::handle::{NodeError, NodeHandle, WriteResult};
use crate::peer::{Conn, Frame, PeerError};

/// A node asking to become a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub id: NodeId,
    pub addr: String,
    pub hostname: String,
    pub version: String,
    pub cluster: String,
    /// The asker's applied slot: 0 for a new node; a restarted member sends how far its
    /// own state goes, so a member that knows less does not judge (or rewrite) it.
    pub applied: u64,
}

/// What a joiner learns from the member it asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinInfo {
    /// The member that answered.
    pub id: NodeId,
    /// Every node's advertised address, as that member knows them.
    pub addrs: Vec<(NodeId, String)>,
    /// The voters in that member's applied state.
    pub voters: Vec<NodeId>,
    /// That member's applied slot when it answered (its `voters` are as of this slot).
    pub applied: u64,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No address answered.
    #[error("could not reach any of {0:?}: {1}")]
    Unreachable(Vec<String>, String),
    /// A member refused (wrong cluster name, registration failed).
    #[error("join refused: {0}")]
    Refused(String),
}

/// The OS hostname, or "unknown".
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // (or truncates, which we handle by stopping at the first NUL or the end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Names in a directory of the applied tree (empty if it is missing).
pub(crate) fn list_dir(store: &Store, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(name) = store.getdir(dir, off, None) {
        out.push(name);
        off += 1;
        if off > 100_000 {
            break;
        }
    }
    out
}

/// Every node's advertised address from `/ctl/node/<id>/addr`.
pub(crate) fn node_addrs(store: &Store) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for name in list_dir(store, "/ctl/node") {
        let Ok(id) = name.parse::<NodeId>() else {
            continue;
        };
        if let Ok((v, rev)) = store.get(&format!("/ctl/node/{name}/addr"), None) {
            if rev > 0 && !v.is_empty() {
                out.insert(id, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    out
}

/// The `/ctl/cal` slots: (path, value, rev).
fn cal_slots(store: &Store) -> Vec<(String, String, i64)> {
    list_dir(store, "/ctl/cal")
        .into_iter()
        .filter_map(|name| {
            let path = format!("/ctl/cal/{name}");
            let (v, rev) = store.get(&path, None).ok()?;
            Some((path, String::from_utf8_lossy(&v).into_owned(), rev))
        })
        .collect()
}

fn set(path: String, rev: i64, value: impl Into<Bytes>) -> Op {
    Op::Set {
        path,
        rev,
        value: value.into(),
    }
}

/// The registration writes of node `id`.
fn registration(id: NodeId, addr: &str, host: &str, version: &str) -> Vec<Op> {
    vec![
        set(format!("/ctl/node/{id}/addr"), -1, addr.to_string()),
        set(format!("/ctl/node/{id}/hostname"), -1, host.to_string()),
        set(format!("/ctl/node/{id}/version"), -1, version.to_string()),
    ]
}

async fn write_all(h: &Handle, ops: Vec<Op>, deadline: Duration) -> Result<(), String> {
    for op in ops {
        let what = format!("{op:?}");
        match h.write(op, deadline).await {
            Ok(WriteResult::Ok { .. }) => {}
            Ok(WriteResult::Err { code, .. }) => return Err(format!("{what}: {code:?}")),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Ok(())
}

/// First node of a new cluster: proposes the initial `/ctl` tree through consensus.
pub(crate) async fn bootstrap(h: &Handle) -> Result<(), NodeError> {
    let core = &h.core;
    let id = core.id;
    // The slot first, so the membership recorded in the tree names this node as the voter
    // from the first applied slot on.
    let mut ops = vec![
        set("/ctl/cal/0".into(), -1, id.to_string()),
        set("/ctl/name".into(), -1, core.cluster.clone()),
    ];
    ops.extend(registration(
        id,
        &core.advertise,
        &hostname(),
        crate::config::VERSION,
    ));
    for n in 1..core.cfg.cals.max(1) {
        ops.push(set(format!("/ctl/cal/{n}"), -1, Bytes::new()));
    }
    let deadline = core.cfg.write_deadline.max(Duration::from_secs(30));
    write_all(h, ops, deadline).await.map_err(|e| {
        tracing::error!(error = %e, "bootstrap write failed");
        NodeError::Storage(e)
    })?;
    tracing::info!(cluster = %core.cluster, cals = core.cfg.cals, "cluster bootstrapped");
    Ok(())
}

/// A member's side of a join: registers the joiner through consensus.
pub(crate) async fn handle_join(core: &Arc<Core>, req: JoinRequest) -> Result<JoinInfo, String> {
    if req.cluster != core.cluster {
        tracing::warn!(joiner = %req.id, cluster = %req.cluster, "join refused: cluster name mismatch");
        return Err(format!(
            "cluster name mismatch: this is {:?}, joiner wants {:?}",
            core.cluster, req.cluster
        ));
    }
    let applied = core.applied.borrow().slot;
    let registered = node_addrs(&core.store).get(&req.id) == Some(&req.addr);
    if req.applied > applied {
        // A restarted member that knows more than we do: our tree can't say whether it is
        // registered, and rewriting its files could undo a later change.
        tracing::info!(joiner = %req.id, its_applied = req.applied, applied, "node asking to rejoin is ahead of us; not registering it");
    } else if registered {
        tracing::info!(joiner = %req.id, addr = %req.addr, "node asking to join is registered already");
    } else {
        tracing::info!(joiner = %req.id, addr = %req.addr, "registering joining node");
        let h = Handle { core: core.clone() };
        write_all(
            &h,
            registration(req.id, &req.addr, &req.hostname, &req.version),
            core.cfg.write_deadline,
        )
        .await?;
    }
    let mut addrs: Vec<(NodeId, String)> = node_addrs(&core.store).into_iter().collect();
    if !addrs.iter().any(|(i, _)| *i == core.id) {
        addrs.push((core.id, core.advertise.clone()));
    }
    Ok(JoinInfo {
        id: core.id,
        addrs,
        voters: core.store.config().voters.into_iter().collect(),
        applied: core.applied.borrow().slot,
    })
}

/// The addresses this node can ask about its membership: the other nodes' stored
/// `/ctl/node/*/addr`, and `-a`.
pub(crate) fn known_peers(
    cfg: &crate::config::NodeConfig,
    store: &Store,
    id: NodeId,
    advertise: &str,
) -> Vec<String> {
    let mut peers: Vec<String> = node_addrs(store)
        .into_iter()
        .filter(|(p, _)| *p != id)
        .map(|(_, a)| a)
        .collect();
    for a in &cfg.attach {
        if !peers.contains(a) && a != advertise {
            peers.push(a.clone());
        }
    }
    peers
}

/// Asks `peers` whether this node is still a member, registering it again if it was
/// removed; see [`rejoin`].
pub(crate) async fn ask_peers(
    peers: &[String],
    id: NodeId,
    cluster: &str,
    advertise: &str,
    applied: u64,
    within: Duration,
) -> Option<JoinInfo> {
    if peers.is_empty() {
        return None;
    }
    let req = JoinRequest {
        id,
        addr: advertise.to_string(),
        hostname: hostname(),
        version: crate::config::VERSION.to_string(),
        cluster: cluster.to_string(),
        applied,
    };
    rejoin(peers, &req, within).await
}

/// A restarted member's side: asks every known peer at once to register it again if the
/// cluster removed it meanwhile (a voter silent for `--timeout` loses its slot and its
/// `/ctl/node` files). Returns the answer of the member that has applied the most, or
/// `None` if nobody answered within `within` (a whole cluster restarting: the node resumes
/// from its own state). Peers answer from their applied state, so a registered node is not
/// held up by a cluster that has no quorum yet.
pub(crate) async fn rejoin(
    peers: &[String],
    req: &JoinRequest,
    within: Duration,
) -> Option<JoinInfo> {
    let tries = peers.iter().map(|addr| async move {
        match tokio::time::timeout(within, join_one(addr, req)).await {
            Ok(Ok(Ok(info))) => Some(info),
            Ok(Ok(Err(refused))) => {
                tracing::warn!(peer = %addr, reason = %refused, "rejoin refused");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "rejoin: peer unreachable");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "rejoin: no answer in time");
                None
            }
        }
    });
    futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .max_by_key(|i| i.applied)
}

/// A joiner's side: asks each address in turn until one member registers us.
pub(crate) async fn join(
    attach: &[String],
    req: &JoinRequest,
    give_up: Duration,
) -> Result<JoinInfo, JoinError> {
    let until = Instant::now() + give_up;
    let mut last = String::from("no address given");
    let mut wait = Duration::from_millis(100);
    loop {
        for addr in attach {
            match join_one(addr, req).await {
                Ok(Ok(info)) => {
                    tracing::info!(via = %addr, member = %info.id, "joined cluster");
                    return Ok(info);
                }
                Ok(Err(refused)) if refused.contains("cluster name mismatch") => {
                    return Err(JoinError::Refused(refused));
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(e) => last = format!("{addr}: {e}"),
            }
            tracing::warn!(error = %last, "join attempt failed");
        }
        if Instant::now() + wait > until {
            return Err(JoinError::Unreachable(attach.to_vec(), last));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

async fn join_one(addr: &str, req: &JoinRequest) -> Result<Result<JoinInfo, String>, PeerError> {
    let mut conn = Conn::dial(addr).await?;
    conn.send(&Frame::Join(req.clone())).await?;
    // The member answers once the registration is applied (bounded by its write deadline).
    match tokio::time::timeout(Duration::from_secs(60), conn.recv()).await {
        Ok(Ok(Frame::JoinReply(r))) => Ok(r),
        Ok(Ok(_)) => Err(PeerError::Unexpected),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PeerError::Timeout),
    }
}

/// Runs for the node's life: re-registers this node if its files vanished, claims a free
/// `/ctl/cal` slot while it is not a voter, and (on the leader) removes silent voters.
pub(crate) async fn membership_task(h: Handle) {
    let core = h.core.clone();
    let mut ctl = core.ctl_changes.subscribe();
    let mut consensus = core.consensus.subscribe();
    let mut leader_since: Option<Instant> = None;
    // Re-register only a node that was registered and then removed: a joiner still
    // catching up does not see its own registration yet.
    let mut seen_registered = false;
    let mut refreshed = false;
    let period = (core.cfg.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let waited = Instant::now();
        tokio::select! {
            _ = core.stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            r = ctl.changed() => if r.is_err() { return },
            r = consensus.changed() => if r.is_err() { return },
        }
        // The timer fired late: the process was frozen. (The driver notices too, but this
        // task may wake first, and must not take its own stall for its peers' silence.)
        let gap = waited.elapsed();
        if gap > period + core.stall_threshold() {
            core.note_stall(gap);
        }
        let cons = core.consensus.borrow().clone();
        if cons.leader.is_none() {
            leader_since = None;
            continue;
        }
        if cons.is_leader {
            let since = *leader_since.get_or_insert_with(Instant::now);
            reap_silent(&h, since).await;
            push_membership(&h).await;
        } else {
            leader_since = None;
        }
        if !refreshed {
            refreshed = refresh_registration(&h).await;
        }
        claim_slot(&h, &mut seen_registered).await;
    }
}

/// Runs for the node's life, beside [`membership_task`] (whose writes may wait for their
/// deadline): a node that hears no leader for a while asks its peers whether it was removed.
pub(crate) async fn leaderless_task(core: Arc<Core>) {
    let mut consensus = core.consensus.subscribe();
    // Since when no leader is known, and when the peers were last asked about it.
    let mut leaderless_since: Option<Instant> = None;
    let mut asked: Option<Instant> = None;
    // Cheap for the peers (answered from their applied state), so soon: a working cluster
    // elects a leader well within this.
    let patience = core
        .cfg
        .timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = core.stop.cancelled() => return,
            _ = tokio::time::sleep(patience / 4) => {}
            r = consensus.changed() => if r.is_err() { return },
        }
        let cons = core.consensus.borrow().clone();
        if cons.leader.is_some() {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(Instant::now);
        // A node that thinks it votes, or that saw itself removed: a registered learner is
        // led as soon as there is a leader, and nobody leads a removed one.
        let votes = cons.in_force.voters.contains(&core.id);
        if (votes || !is_registered(&core))
            && since.elapsed() >= patience
            && asked.is_none_or(|t| t.elapsed() >= patience)
        {
            asked = Some(Instant::now());
            ask_if_removed(&core).await;
        }
    }
}

/// Once per process: a registered node whose `/ctl/node/<id>/hostname` or `version` no
/// longer describe it (it was upgraded, or its data dir moved host) writes them again.
/// Returns whether that is settled (nothing to do, or written).
async fn refresh_registration(h: &Handle) -> bool {
    let core = &h.core;
    let base = format!("/ctl/node/{}", core.id);
    let stored = |name: &str| core.store.get(&format!("{base}/{name}"), None).ok();
    let Some((_, addr_rev)) = stored("addr") else {
        return false;
    };
    if addr_rev <= 0 {
        return false; // not registered (yet): claim_slot handles that
    }
    let mut ops = Vec::new();
    for (name, want) in [
        ("hostname", hostname()),
        ("version", crate::config::VERSION.into()),
    ] {
        if stored(name).is_none_or(|(v, _)| v != want.as_bytes()) {
            ops.push(set(format!("{base}/{name}"), -1, want));
        }
    }
    if ops.is_empty() {
        return true;
    }
    tracing::info!("refreshing this node's hostname and version under /ctl/node");
    match write_all(h, ops, core.cfg.write_deadline).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "refreshing hostname/version failed; will retry");
            false
        }
    }
}

/// A node that has heard no leader for a long while may have been removed while it was
/// cut off (a voter silent for `--timeout` loses its slot): nobody sends it anything then,
/// and it campaigns on a membership the cluster left behind. It asks its peers; if one
/// that has applied more says it is not a voter (and registers it again), the node takes
/// a snapshot from it, which makes it a learner of the current membership; it then
/// follows the leader and claims a free slot like any learner.
async fn ask_if_removed(core: &Arc<Core>) {
    let applied = core.applied.borrow().slot;
    let peers = known_peers(&core.cfg, &core.store, core.id, &core.advertise);
    let Some(info) = ask_peers(
        &peers,
        core.id,
        &core.cluster,
        &core.advertise,
        applied,
        Duration::from_secs(3),
    )
    .await
    else {
        return;
    };
    if info.applied <= applied || info.voters.is_empty() || info.voters.contains(&core.id) {
        return;
    }
    tracing::warn!(
        member = %info.id,
        its_applied = info.applied,
        applied,
        "no leader heard and this node is no longer a voter; catching up by snapshot"
    );
    if let Some((_, addr)) = info.addrs.iter().find(|(i, _)| *i == info.id) {
        core.peers.ensure(info.id, addr);
    }
    let _ = core
        .driver
        .send(crate::driver::Input::FetchSnapshot(info.id))
        .await;
}

/// On the leader: while the membership in the tree differs from the one governing the next
/// slot, decides no-op slots so the change takes effect (`alpha` slots after it was applied)
/// without waiting for client traffic. The original Doozer does the same with NOPs.
async fn push_membership(h: &Handle) {
    let core = &h.core;
    // A change needs `alpha` slots; twice that bounds one round of this loop.
    for _ in 0..core.cfg.alpha.saturating_mul(2).max(4) {
        let cons = core.consensus.borrow().clone();
        if !cons.is_leader || core.stop.is_cancelled() {
            return;
        }
        let tree = crate::driver::keep_voters(&core.store.config(), &cons.in_force);
        if tree == cons.in_force {
            return;
        }
        if let Err(e) = h.write(Op::Nop, core.cfg.write_deadline).await {
            tracing::debug!(error = %e, "no-op to hasten a membership change failed");
            return;
        }
    }
}

/// Whether this node's `/ctl/node/<id>/addr` is in its applied state.
fn is_registered(core: &Core) -> bool {
    core.store
        .get(&format!("/ctl/node/{}/addr", core.id), None)
        .is_ok_and(|(_, rev)| rev > 0)
}

async fn claim_slot(h: &Handle, seen_registered: &mut bool) {
    let core = &h.core;
    let me = core.id.to_string();
    let store = &core.store;
    if is_registered(core) {
        *seen_registered = true;
    } else if *seen_registered {
        tracing::info!("this node was removed from the cluster; registering again");
        let ops = registration(
            core.id,
            &core.advertise,
            &hostname(),
            crate::config::VERSION,
        );
        if let Err(e) = write_all(h, ops, core.cfg.write_deadline).await {
            tracing::warn!(error = %e, "re-registration failed");
        }
        return;
    } else {
        return;
    }
    let slots = cal_slots(store);
    if slots.iter().any(|(_, v, _)| *v == me) {
        return;
    }
    let Some((path, _, rev)) = slots.into_iter().find(|(_, v, _)| v.is_empty()) else {
        return;
    };
    tracing::info!(slot = %path, "claiming free cal slot");
    match h
        .write(set(path.clone(), rev, me), core.cfg.write_deadline)
        .await
    {
        Ok(WriteResult::Ok { rev }) => {
            tracing::info!(slot = %path, rev, "claimed cal slot; voter after alpha slots")
        }
        Ok(WriteResult::Err { code, .. }) => {
            tracing::info!(slot = %path, ?code, "cal slot taken by someone else")
        }
        Err(e) => tracing::warn!(slot = %path, error = %e, "claiming cal slot failed"),
    }
}

async fn reap_silent(h: &Handle, leader_since: Instant) {
    let core = &h.core;
    let voters = core.store.config().voters;
    let now = Instant::now();
    for v in voters {
        if v == core.id {
            continue;
        }
        let heard = core.heard.lock().expect("heard lock").get(&v).copied();
        let stalled = *core.stalled_at.lock().expect("stalled_at lock");
        let since = stalled.map_or(leader_since, |t| t.max(leader_since));
        let last = heard.map_or(since, |t| t.max(since));
        if now.duration_since(last) < core.cfg.timeout {
            continue;
        }
        tracing::warn!(node = %v, silent_for = ?now.duration_since(last), "removing silent voter");
        let id = v.to_string();
        let mut ops = Vec::new();
        for (path, val, rev) in cal_slots(&core.store) {
            if val == id {
                ops.push(set(path, rev, Bytes::new()));
            }
        }
        for name in list_dir(&core.store, &format!("/ctl/node/{id}")) {
            let path = format!("/ctl/node/{id}/{name}");
            if let Ok((_, rev)) = core.store.get(&path, None) {
                ops.push(Op::Del { path, rev });
            }
        }
        // Don't try again for another timeout, whatever happened.
        core.heard.lock().expect("heard lock").insert(v, now);
        match write_all(h, ops, core.cfg.write_deadline).await {
            Ok(()) => tracing::info!(node = %v, "silent voter removed"),
            Err(e) => tracing::warn!(node = %v, error = %e, "removing silent voter failed"),
        }
    }
}
