//! The workloads: concurrent clients that drive the cluster and record what they did.
//!
//! * `register`: reads, blind writes and compare-and-sets on a few keys. Every written
//!   value is unique, so a CAS can be made with doozer's revision-based SET: a client that
//!   read value `v` at file revision `r` sends `SET key r new`, which succeeds exactly when
//!   the file still holds the version `r` — the one holding `v` — as revisions only grow
//!   (`expect: null` is `SET key 0 new`: only if missing).
//! * `set`: each client creates unique files under one directory; at the end every node
//!   lists the directory.
//! * `watch`: clients write files under three directories while watchers with
//!   overlapping globs follow them; at the end the committed history is read back.
//!
//! Outcomes: an answer is `ok: true`; REV_MISMATCH, or an error the client raised before
//! sending, is `ok: false`; anything else on a write (a lost connection, a deadline, a
//! server error after the request may have been proposed) is unknown. A failed read is
//! `ok: false` (it changed nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use doozer_client::{Client, ClientError, ClientOptions, ErrCode};
use futures::StreamExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use crate::history::{Op, OpKind};
use crate::set_checker::FINAL_READ_KEY;
use crate::watch_checker::{AckedWrite, SeenEvent, WatcherLog};

/// Which workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Linearizable register per key.
    Register,
    /// Grow-only set.
    Set,
    /// Watches on overlapping globs.
    Watch,
}

impl Workload {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Watch => "watch",
        }
    }
}

/// Where the register workload keeps its keys.
pub const REGISTER_DIR: &str = "/jepsen/r";
/// Where the set workload adds its elements: `SET_DIR/c<client>/b<seq / 100>/<element>`.
/// Small directories keep the final listing fast (a GETDIR at offset k costs O(k) on the
/// server, so listing a directory of n entries costs O(n²)).
pub const SET_DIR: &str = "/jepsen/set";
/// Where the watch workload writes.
pub const WATCH_DIR: &str = "/jepsen/w";
/// The globs of the watch workload's watchers (overlapping on purpose; the first is also
/// the glob of the committed-history read, and it covers all the others).
pub const WATCH_GLOBS: [&str; 5] = [
    "/jepsen/w/**",
    "/jepsen/w/a/*",
    "/jepsen/w/*/1",
    "/jepsen/w/**",
    "/jepsen/w/b/**",
];
/// Client ids of the final reads start here (plus the node index).
pub const FINAL_CLIENT_BASE: u64 = 1000;

/// The operations recorded so far, with the clock they are timed on.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Time zero of the run.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since time zero.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records a completed operation.
    pub fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// Everything recorded, sorted by call time.
    pub fn ops(&self) -> Vec<Op> {
        let mut v = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|o| (o.call, o.client));
        v
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// Options of the harness's clients.
pub fn client_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout: Some(timeout),
        connect_timeout: Duration::from_secs(1),
        backoff_max: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

/// The outcome of a write: see the module docs.
fn write_outcome<T>(r: &Result<T, ClientError>) -> Option<bool> {
    match r {
        Ok(_) => Some(true),
        Err(e) if e.is_rev_mismatch() => Some(false),
        Err(
            ClientError::Timeout(_) | ClientError::Connect { .. } | ClientError::TooLarge { .. },
        ) => Some(false),
        Err(ClientError::InvalidUri { .. } | ClientError::Tls(_)) => Some(false),
        Err(ClientError::Doozer { code, .. }) if is_rejection(*code) => Some(false),
        Err(_) => None,
    }
}

/// Codes a node answers before proposing anything: the write certainly did not happen.
fn is_rejection(code: ErrCode) -> bool {
    matches!(
        code,
        ErrCode::BadPath | ErrCode::MissingArg | ErrCode::IsDir | ErrCode::NotDir
    )
}

/// Value of a read: `None` for a missing file (rev 0).
fn read_value(body: &[u8], rev: i64) -> Option<String> {
    (rev != 0).then(|| String::from_utf8_lossy(body).into_owned())
}

/// One register-workload client: until `until`, random ops on `keys` keys.
pub async fn register_client(
    id: u64,
    client: Client,
    rec: Arc<Recorder>,
    keys: usize,
    until: Instant,
    mut rng: ChaCha8Rng,
) {
    // What this client last read of each key: (value, file rev), for its CASes.
    let mut seen: HashMap<usize, (Option<String>, i64)> = HashMap::new();
    let mut seq = 0u64;
    while Instant::now() < until {
        let k = rng.gen_range(0..keys);
        let key = format!("{REGISTER_DIR}/{k}");
        let roll = rng.gen_range(0..10);
        let cas = roll >= 7;
        // Half the CASes read first (they mostly succeed), the others use whatever this
        // client last read of the key (they often fail: someone wrote since).
        if roll < 4 || (cas && (!seen.contains_key(&k) || rng.gen_bool(0.5))) {
            let call = rec.now_ns();
            let r = client.get(&key, None).await;
            let ret = rec.now_ns();
            let (value, ok) = match &r {
                Ok((body, rev)) => {
                    let v = read_value(body, *rev);
                    seen.insert(k, (v.clone(), *rev));
                    (v, Some(true))
                }
                Err(_) => (None, Some(false)),
            };
            rec.push(Op {
                client: id,
                op: OpKind::Read,
                key: key.clone(),
                value,
                expect: None,
                ok,
                call,
                ret: Some(ret),
            });
            if !cas || !seen.contains_key(&k) {
                continue;
            }
        }
        seq += 1;
        let value = format!("{id}-{seq}");
        let (kind, expect, rev) = if !cas {
            (OpKind::Write, None, -1)
        } else {
            let (v, r) = seen.get(&k).cloned().expect("checked above");
            (OpKind::Cas, v, r)
        };
        let call = rec.now_ns();
        let r = client.set(&key, rev, value.clone()).await;
        let ret = rec.now_ns();
        let ok = write_outcome(&r);
        if let Ok(new_rev) = r {
            seen.insert(k, (Some(value.clone()), new_rev));
        }
        rec.push(Op {
            client: id,
            op: kind,
            key,
            value: Some(value),
            expect,
            ok,
            call,
            ret: ok.map(|_| ret),
        });
    }
}

/// Retries `f` until it succeeds or `within` passes; returns the last error otherwise.
async fn retry<T, F, Fut>(within: Duration, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// After the run: reads every key through every node (`uris[i]` reaches node i only),
/// recorded as reads of clients [`FINAL_CLIENT_BASE`]` + i`. Returns the nodes that
/// could not answer within `within`, with the last error.
pub async fn register_final_reads(
    uris: &[String],
    rec: &Recorder,
    keys: usize,
    within: Duration,
) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        let client = match retry(within, || {
            Client::connect_with(uri, client_options(Duration::from_secs(5)))
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                failed.push((i, format!("connect: {e}")));
                continue;
            }
        };
        for k in 0..keys {
            let key = format!("{REGISTER_DIR}/{k}");
            let call = rec.now_ns();
            match retry(within, || client.get(&key, None)).await {
                Ok((body, rev)) => rec.push(Op {
                    client: FINAL_CLIENT_BASE + i as u64,
                    op: OpKind::Read,
                    key,
                    value: read_value(&body, rev),
                    expect: None,
                    ok: Some(true),
                    call,
                    ret: Some(rec.now_ns()),
                }),
                Err(e) => {
                    failed.push((i, format!("get {key}: {e}")));
                    break;
                }
            }
        }
    }
    failed
}

/// Pause between two adds of one set client: the point is adds under faults, not volume,
/// and every element must be listed through every node at the end.
const SET_ADD_PAUSE: Duration = Duration::from_millis(50);

/// One set-workload client: until `until`, adds unique elements (create-only SETs), at
/// most one per [`SET_ADD_PAUSE`].
pub async fn set_client(id: u64, client: Client, rec: Arc<Recorder>, until: Instant) {
    let mut seq = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(SET_ADD_PAUSE).await;
        seq += 1;
        let el = format!("e{id}-{seq}");
        let key = format!("{SET_DIR}/c{id}/b{}/{el}", seq / 100);
        let call = rec.now_ns();
        let r = client.set(&key, 0, el.clone()).await;
        let ret = rec.now_ns();
        let ok = write_outcome(&r);
        rec.push(Op {
            client: id,
            op: OpKind::Write,
            key,
            value: Some(el),
            expect: None,
            ok,
            call,
            ret: ok.map(|_| ret),
        });
    }
}

/// After the run: lists the set through every node, recorded as reads of
/// [`FINAL_READ_KEY`]. Returns the nodes that could not answer within `within`, with the last error.
pub async fn set_final_reads(
    uris: &[String],
    rec: &Recorder,
    within: Duration,
) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        let call = rec.now_ns();
        let r = retry(within, || async {
            let c = Client::connect_with(uri, client_options(Duration::from_secs(20))).await?;
            // REV answers the node's local revision, which may lag: a linearizable read
            // first makes the node catch up with everything committed before the read.
            c.get(&format!("{SET_DIR}-sync"), None).await?;
            // Then every directory and every file at one revision.
            let rev = c.rev().await?;
            let dirs = match c.getdir_all(SET_DIR, Some(rev)).await {
                Err(e) if e.code() == Some(ErrCode::NoEnt) => Vec::new(),
                other => other?,
            };
            let mut names = Vec::new();
            for d in dirs {
                let dir = format!("{SET_DIR}/{d}");
                for b in c.getdir_all(&dir, Some(rev)).await? {
                    names.extend(c.getdir_all(&format!("{dir}/{b}"), Some(rev)).await?);
                }
            }
            Ok(names)
        })
        .await;
        match r {
            Ok(names) => rec.push(Op {
                client: FINAL_CLIENT_BASE + i as u64,
                op: OpKind::Read,
                key: FINAL_READ_KEY.into(),
                value: Some(names.join(" ")),
                expect: None,
                ok: Some(true),
                call,
                ret: Some(rec.now_ns()),
            }),
            Err(e) => failed.push((i, format!("list {SET_DIR}: {e}"))),
        }
    }
    failed
}

/// The state of a running watch workload.
pub struct Watchers {
    logs: Vec<Arc<Mutex<WatcherLog>>>,
    errors: Arc<Mutex<Vec<(u64, String)>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Acknowledged writes (rev from the SET answer).
    pub acked: Arc<Mutex<Vec<AckedWrite>>>,
    /// The revision the watchers start from.
    pub from_rev: i64,
}

/// Starts one watcher per glob of [`WATCH_GLOBS`], watcher `w` on `clients[w % len]`,
/// all from `from_rev`.
pub fn start_watchers(clients: &[Client], from_rev: i64, rec: Arc<Recorder>) -> Watchers {
    let stop = CancellationToken::new();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for (w, glob) in WATCH_GLOBS.iter().enumerate() {
        let log = Arc::new(Mutex::new(WatcherLog {
            id: w as u64,
            glob: glob.to_string(),
            from_rev,
            events: Vec::new(),
        }));
        logs.push(log.clone());
        let client = clients[w % clients.len()].clone();
        let (stop, errors, rec) = (stop.clone(), errors.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = client.watch(glob, from_rev);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => {
                        let seen = SeenEvent {
                            watcher: w as u64,
                            rev: ev.rev,
                            path: ev.path,
                            value: String::from_utf8_lossy(&ev.value).into_owned(),
                            flags: ev.flags,
                            time: rec.now_ns(),
                        };
                        log.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .events
                            .push(seen);
                    }
                    Some(Err(e)) => {
                        errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((w as u64, e.to_string()));
                        return;
                    }
                    None => return,
                }
            }
        }));
    }
    Watchers {
        logs,
        errors,
        stop,
        tasks,
        acked: Arc::new(Mutex::new(Vec::new())),
        from_rev,
    }
}

impl Watchers {
    /// What each watcher saw so far.
    pub fn logs(&self) -> Vec<WatcherLog> {
        self.logs
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Watch streams that ended with an error: (watcher, error).
    pub fn errors(&self) -> Vec<(u64, String)> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until every watcher has seen the last event of `reference` its glob matches,
    /// or `within` passes.
    pub async fn await_caught_up(&self, reference: &[SeenEvent], within: Duration) {
        let deadline = Instant::now() + within;
        let targets: Vec<Option<i64>> = self
            .logs()
            .iter()
            .map(|w| {
                let g = doozer_proto::Glob::new(&w.glob).ok()?;
                reference
                    .iter()
                    .rev()
                    .find(|e| g.matches(&e.path))
                    .map(|e| e.rev)
            })
            .collect();
        while Instant::now() < deadline {
            let done = self.logs().iter().zip(&targets).all(|(w, t)| match t {
                None => true,
                Some(t) => w.events.last().is_some_and(|e| e.rev >= *t),
            });
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every watcher.
    pub async fn stop(self) -> (Vec<WatcherLog>, Vec<(u64, String)>) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let logs = self
            .logs
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (logs, errors)
    }
}

/// One watch-workload writer: until `until`, blind writes of unique values to files under
/// three directories.
pub async fn watch_writer(
    id: u64,
    client: Client,
    rec: Arc<Recorder>,
    acked: Arc<Mutex<Vec<AckedWrite>>>,
    until: Instant,
    mut rng: ChaCha8Rng,
) {
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let dir = ["a", "b", "c"][rng.gen_range(0..3)];
        let key = format!("{WATCH_DIR}/{dir}/{}", rng.gen_range(0..3));
        let value = format!("{id}-{seq}");
        let call = rec.now_ns();
        let r = client.set(&key, -1, value.clone()).await;
        let ret = rec.now_ns();
        let ok = write_outcome(&r);
        if let Ok(rev) = r {
            acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(AckedWrite {
                    rev,
                    path: key.clone(),
                    value: value.clone(),
                });
        }
        rec.push(Op {
            client: id,
            op: OpKind::Write,
            key,
            value: Some(value),
            expect: None,
            ok,
            call,
            ret: ok.map(|_| ret),
        });
    }
}

/// After the writers stopped and the cluster healed: writes an end marker (through `uri`)
/// and reads the committed history of [`WATCH_GLOBS`]`[0]` from `from_rev` up to the marker
/// with a fresh client on one node of `node_uris`. A node that caught up by installing a
/// snapshot keeps no history before it and answers `TOO_LATE`; the next node is tried then.
/// Returns the events and the marker's revision, and (either way) a note for each node
/// passed over. When every node has installed a snapshot since `from_rev`, no node can
/// serve it and the history cannot be checked.
pub async fn read_committed(
    uri: &str,
    node_uris: &[String],
    from_rev: i64,
    within: Duration,
) -> (Result<(Vec<SeenEvent>, i64), ClientError>, Vec<String>) {
    let mut notes = Vec::new();
    let end = async {
        let client = retry(within, || {
            Client::connect_with(uri, client_options(Duration::from_secs(10)))
        })
        .await?;
        let marker = format!("{WATCH_DIR}/end");
        retry(within, || client.set(&marker, -1, "end")).await
    };
    let end = match end.await {
        Ok(end) => end,
        Err(e) => return (Err(e), notes),
    };
    let mut last = None;
    for (i, node) in node_uris.iter().enumerate() {
        match read_history(node, from_rev, end, within).await {
            Ok(events) => return (Ok((events, end)), notes),
            Err(e) => {
                notes.push(format!(
                    "node n{i} could not serve the committed history from rev {from_rev}: {e}"
                ));
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or(ClientError::InvalidUri {
        reason: "no nodes".into(),
    });
    (Err(e), notes)
}

/// WAITs on one node from `from_rev` through `end`. Transient errors are retried until
/// `within` passes; `TOO_LATE` (the node has no history that far back) is returned at once.
async fn read_history(
    uri: &str,
    from_rev: i64,
    end: i64,
    within: Duration,
) -> Result<Vec<SeenEvent>, ClientError> {
    let deadline = Instant::now() + within;
    let client = retry(within, || {
        Client::connect_with(uri, client_options(Duration::from_secs(10)))
    })
    .await?;
    let mut events = Vec::new();
    let mut next = from_rev;
    while next <= end {
        let ev = loop {
            match client.wait(WATCH_GLOBS[0], next).await {
                Ok(ev) => break ev,
                Err(e) if e.code() == Some(ErrCode::TooLate) || Instant::now() >= deadline => {
                    return Err(e)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        next = ev.rev + 1;
        events.push(SeenEvent {
            watcher: u64::MAX,
            rev: ev.rev,
            path: ev.path,
            value: String::from_utf8_lossy(&ev.value).into_owned(),
            flags: ev.flags,
            time: 0,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_conservative() {
        assert_eq!(write_outcome::<()>(&Ok(())), Some(true));
        assert_eq!(
            write_outcome::<()>(&Err(ClientError::doozer(ErrCode::RevMismatch))),
            Some(false)
        );
        assert_eq!(
            write_outcome::<()>(&Err(ClientError::Timeout(Duration::from_secs(1)))),
            Some(false)
        );
        assert_eq!(
            write_outcome::<()>(&Err(ClientError::Unknown {
                verb: "SET",
                reason: "lost".into()
            })),
            None
        );
        // A server error after the write may have been proposed: unknown, not failed.
        assert_eq!(
            write_outcome::<()>(&Err(ClientError::doozer(ErrCode::Other))),
            None
        );
        assert_eq!(read_value(b"", 0), None);
        assert_eq!(read_value(b"x", 5).as_deref(), Some("x"));
    }
}
