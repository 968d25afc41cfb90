//! Fault proxies: one TCP proxy in front of each node's peer port, through which every peer
//! link to that node passes, and the table of faults the nemesis sets on directed links.
//!
//! A node's peers dial the address in `/ctl/node/<id>/addr`, which the harness sets with
//! `doozerd --advertise` to the node's proxy. Messages from node A to node B travel only on
//! the connection A opens to B (inbound peer connections are one-way streams after the
//! hello), so the proxy in front of B that knows the connection comes from A controls
//! exactly the directed link A → B. The proxy learns who dialed by looking up which of the
//! harness's child processes owns the connecting socket (`/proc/net/tcp` and
//! `/proc/<pid>/fd`), so it needs nothing from the peer protocol.
//!
//! Faults on a link ([`LinkFault`]):
//! * `blocked`: a partition. Open connections become black holes (bytes are read and
//!   discarded in both directions, nothing is closed, as with a pulled cable); new ones are
//!   accepted and black-holed too. When the block lifts, the black-holed connections are
//!   closed, since their byte streams lost data mid-frame, and the node redials.
//! * `delay`: every chunk is held this long before it is forwarded (order is kept).
//! * `loss`: each forwarded chunk cuts its connection with this probability, losing what
//!   was in flight, as a flaky link that keeps resetting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

/// The fault on one directed link. The default is a healthy link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFault {
    /// Nothing gets through.
    pub blocked: bool,
    /// Added latency per chunk.
    pub delay: Duration,
    /// Probability that a chunk cuts its connection.
    pub loss: f64,
}

impl LinkFault {
    /// Is this link healthy?
    pub fn is_healthy(&self) -> bool {
        *self == LinkFault::default()
    }
}

/// Counters of what the proxies did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections whose dialing node could not be identified.
    pub unidentified: AtomicU64,
    /// Connections closed unserved: the dialing socket had no owner any more.
    pub gone: AtomicU64,
    /// Bytes forwarded.
    pub forwarded_bytes: AtomicU64,
    /// Bytes discarded by black holes.
    pub dropped_bytes: AtomicU64,
    /// Connections cut by loss or by a healed block.
    pub cut: AtomicU64,
}

struct Shared {
    n: usize,
    /// `faults[src][dst]`.
    faults: Mutex<Vec<Vec<LinkFault>>>,
    /// Bumped on every fault change, so idle connections re-evaluate their link.
    generation: watch::Sender<u64>,
    /// Process id of each node (to identify who dialed), `None` while it is down.
    pids: Mutex<Vec<Option<u32>>>,
    stats: ProxyStats,
    stop: CancellationToken,
}

impl Shared {
    fn fault(&self, src: Option<usize>, dst: usize) -> LinkFault {
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        match src {
            Some(s) => f[s][dst],
            // Unknown dialer: blocked if any link into dst is, so isolation holds.
            None => LinkFault {
                blocked: f.iter().any(|row| row[dst].blocked),
                ..LinkFault::default()
            },
        }
    }
}

/// The proxies of a cluster of `n` nodes and the fault table they obey.
pub struct Net {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts one proxy per node on 127.0.0.1 (a free port each), forwarding to
    /// `targets[i]`, node i's listen address.
    pub async fn start(targets: Vec<SocketAddr>) -> std::io::Result<Net> {
        let n = targets.len();
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            n,
            faults: Mutex::new(vec![vec![LinkFault::default(); n]; n]),
            generation,
            pids: Mutex::new(vec![None; n]),
            stats: ProxyStats::default(),
            stop: CancellationToken::new(),
        });
        let mut addrs = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for (dst, target) in targets.into_iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(shared.clone(), dst, l, target)));
        }
        Ok(Net {
            shared,
            addrs,
            tasks,
        })
    }

    /// The address peers must use to reach node `dst` (its `--advertise`).
    pub fn proxy_addr(&self, dst: usize) -> SocketAddr {
        self.addrs[dst]
    }

    /// Records node `node`'s process id (`None` when it is down).
    pub fn set_pid(&self, node: usize, pid: Option<u32>) {
        self.shared.pids.lock().unwrap_or_else(|p| p.into_inner())[node] = pid;
    }

    /// Sets the fault of the directed link `src` → `dst`.
    pub fn set(&self, src: usize, dst: usize, fault: LinkFault) {
        {
            let mut f = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
            f[src][dst] = fault;
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Blocks both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                if x != y {
                    self.update(x, y, |f| f.blocked = true);
                    self.update(y, x, |f| f.blocked = true);
                }
            }
        }
    }

    /// Changes one link's fault in place.
    pub fn update(&self, src: usize, dst: usize, change: impl FnOnce(&mut LinkFault)) {
        {
            let mut f = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut f[src][dst]);
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Makes every link healthy.
    pub fn heal(&self) {
        {
            let mut f = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
            for row in f.iter_mut() {
                row.fill(LinkFault::default());
            }
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// The current fault table, `[src][dst]`.
    pub fn faults(&self) -> Vec<Vec<LinkFault>> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the proxies did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.shared.n
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.shared.n == 0
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, dst: usize, l: TcpListener, target: SocketAddr) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = shared.stop.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let proxy_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let shared = shared.clone();
        tokio::spawn(async move {
            let src = match identify(&shared, peer.port(), proxy_port).await {
                Dialer::Node(i) => Some(i),
                Dialer::Gone => {
                    // Nobody is left to talk to: close it, as the dead dialer's kernel would.
                    shared.stats.gone.fetch_add(1, Ordering::Relaxed);
                    trace!(dst, %peer, "proxy connection from a dialer that is gone");
                    return;
                }
                Dialer::Unknown => {
                    shared.stats.unidentified.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            trace!(?src, dst, %peer, "proxy connection");
            serve(shared, src, dst, sock, target).await;
        });
    }
}

/// How many times [`identify`] looks again at a socket no node holds, and how long apart.
const IDENTIFY_TRIES: u32 = 20;
const IDENTIFY_GAP: Duration = Duration::from_millis(5);

/// [`dialer`], looking again while the answer is `Unknown`: the socket table and the fd
/// tables are read one after the other, so a node being killed can close the socket in
/// between (it then shows as gone), and a node just spawned can dial before the harness
/// has recorded its pid. Both settle within milliseconds; there is no event to wait for.
async fn identify(shared: &Shared, port: u16, proxy_port: u16) -> Dialer {
    let mut tries = 0;
    loop {
        let pids = shared
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let d = dialer(port, proxy_port, &pids);
        tries += 1;
        if d != Dialer::Unknown || tries >= IDENTIFY_TRIES {
            return d;
        }
        tokio::time::sleep(IDENTIFY_GAP).await;
    }
}

/// Which node (index into `pids`) owns the TCP socket bound to local port `port` and
/// connected to `proxy_port` on loopback, from `/proc`.
fn dialer(port: u16, proxy_port: u16, pids: &[Option<u32>]) -> Dialer {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|table| socket_inode(&table, port, proxy_port));
    // No entry, or inode 0 (an orphaned socket): the dialer closed it or died before the
    // proxy looked, e.g. a node killed with connections still in the accept queue.
    let Some(inode) = inode.filter(|i| *i != 0) else {
        return Dialer::Gone;
    };
    let needle = format!("socket:[{inode}]");
    pids.iter()
        .position(|pid| {
            let Some(pid) = pid else { return false };
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            dir.filter_map(Result::ok).any(|e| {
                std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == needle.as_str())
            })
        })
        .map_or(Dialer::Unknown, Dialer::Node)
}

/// Who dialed a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialer {
    /// This node (index into the pid table).
    Node(usize),
    /// Nobody holds the dialing socket any more.
    Gone,
    /// A live socket that no node's process holds.
    Unknown,
}

/// The inode of the socket in a `/proc/net/tcp` table whose local port is `local` and
/// remote port is `remote`.
fn socket_inode(table: &str, local: u16, remote: u16) -> Option<u64> {
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return None;
        }
        (port_of(f[1]) == Some(local) && port_of(f[2]) == Some(remote))
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Forwards one connection from `src` to node `dst` under the link's faults.
async fn serve(
    shared: Arc<Shared>,
    src: Option<usize>,
    dst: usize,
    down: TcpStream,
    target: SocketAddr,
) {
    let up = match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        // The node is down: close, as a dead host's port would refuse.
        _ => return,
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let cut = shared.stop.child_token();
    let holed = Arc::new(AtomicBool::new(shared.fault(src, dst).blocked));
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let mut pumps = tokio::task::JoinSet::new();
    pumps.spawn(pump(
        shared.clone(),
        src,
        dst,
        dr,
        uw,
        holed.clone(),
        cut.clone(),
    ));
    pumps.spawn(pump(
        shared.clone(),
        src,
        dst,
        ur,
        dw,
        holed.clone(),
        cut.clone(),
    ));
    // Re-evaluate the link whenever the fault table changes; end when both directions
    // have finished (each closes its write side after its peer's EOF) or the link is cut.
    let mut gen = shared.generation.subscribe();
    loop {
        tokio::select! {
            _ = cut.cancelled() => break,
            done = pumps.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            r = gen.changed() => {
                if r.is_err() {
                    break;
                }
                let blocked = shared.fault(src, dst).blocked;
                if holed.load(Ordering::Relaxed) && !blocked {
                    // The stream lost bytes while black-holed: it cannot resume.
                    shared.stats.cut.fetch_add(1, Ordering::Relaxed);
                    cut.cancel();
                } else if blocked {
                    holed.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    cut.cancel();
    while pumps.join_next().await.is_some() {}
}

/// One direction of a proxied connection: reads chunks, applies the link's fault, and
/// hands them to a writer that releases each at its due time. The reader's EOF becomes,
/// once everything before it is written, a half-close of the other side (unless the link
/// is a black hole, which lets nothing through, not even a FIN). Errors, loss and a
/// healed black hole cut both directions at once.
async fn pump(
    shared: Arc<Shared>,
    src: Option<usize>,
    dst: usize,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    holed: Arc<AtomicBool>,
    cut: CancellationToken,
) {
    // Bounded: a slow (delayed) writer pushes back on the reader, as TCP would.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let writer = {
        let cut = cut.clone();
        let shared = shared.clone();
        let holed = holed.clone();
        async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if holed.load(Ordering::Relaxed) {
                    shared
                        .stats
                        .dropped_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    continue;
                }
                if w.write_all(&chunk).await.is_err() {
                    cut.cancel();
                    return;
                }
                shared
                    .stats
                    .forwarded_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            if !holed.load(Ordering::Relaxed) {
                let _ = w.shutdown().await;
            }
        }
    };
    let stop = cut.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let k = match r.read(&mut buf).await {
                Ok(0) => return, // EOF: dropping `tx` lets the writer finish and half-close.
                Ok(k) => k,
                Err(_) => {
                    cut.cancel();
                    return;
                }
            };
            let fault = shared.fault(src, dst);
            if fault.blocked || holed.load(Ordering::Relaxed) {
                holed.store(true, Ordering::Relaxed);
                shared
                    .stats
                    .dropped_bytes
                    .fetch_add(k as u64, Ordering::Relaxed);
                continue;
            }
            if fault.loss > 0.0 && rand::thread_rng().gen_bool(fault.loss.min(1.0)) {
                shared.stats.cut.fetch_add(1, Ordering::Relaxed);
                cut.cancel();
                return;
            }
            if tx
                .send((Instant::now() + fault.delay, buf[..k].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = async { tokio::join!(reader, writer) } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for a node.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        a
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut got = vec![0; msg.len()];
        match tokio::time::timeout(within, s.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            _ => None,
        }
    }

    /// A server that sends `len` bytes and closes, as a node streaming a snapshot does.
    async fn blob(len: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    let _ = s.write_all(&data).await;
                    // Dropped here: FIN right behind the last byte.
                });
            }
        });
        a
    }

    #[tokio::test]
    async fn a_stream_that_ends_is_delivered_whole_even_when_delayed() {
        let len = 3 << 20;
        let net = Net::start(vec![blob(len).await]).await.unwrap();
        net.set_pid(0, Some(std::process::id()));
        for delay_ms in [0, 30] {
            net.set(
                0,
                0,
                LinkFault {
                    delay: Duration::from_millis(delay_ms),
                    ..LinkFault::default()
                },
            );
            let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
                .await
                .expect("EOF arrives")
                .unwrap();
            assert_eq!(got.len(), len, "delay {delay_ms} ms");
            assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        }
    }

    #[test]
    fn socket_inode_parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(socket_inode(table, 0x9C40, 0x1F90), Some(424242));
        assert_eq!(socket_inode(table, 0x1F90, 0x9C40), None);
    }

    #[tokio::test]
    async fn identifies_the_dialing_process() {
        let net = Net::start(vec![echo().await, echo().await]).await.unwrap();
        // This test process plays node 1.
        net.set_pid(1, Some(std::process::id()));
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        let local = s.local_addr().unwrap().port();
        assert!(roundtrip(&mut s, b"hi", Duration::from_secs(5))
            .await
            .is_some());
        assert_eq!(
            dialer(
                local,
                net.proxy_addr(0).port(),
                &[None, Some(std::process::id())]
            ),
            Dialer::Node(1)
        );
        // Held by a process no node is registered as: unknown.
        assert_eq!(
            dialer(local, net.proxy_addr(0).port(), &[None, None]),
            Dialer::Unknown
        );
        // A port pair with no socket (closed, or its process died): gone.
        assert_eq!(dialer(local, local, &[None, None]), Dialer::Gone);
        assert_eq!(net.stats().unidentified.load(Ordering::Relaxed), 0);
        // Blocking 1 -> 0 now black-holes this very connection.
        net.set(
            1,
            0,
            LinkFault {
                blocked: true,
                ..LinkFault::default()
            },
        );
        assert_eq!(
            roundtrip(&mut s, b"lost", Duration::from_millis(300)).await,
            None
        );
        // Another node's link is unaffected by that block.
        net.set_pid(1, None);
        net.set_pid(0, Some(std::process::id()));
        let mut s2 = TcpStream::connect(net.proxy_addr(1)).await.unwrap();
        assert!(roundtrip(&mut s2, b"ok", Duration::from_secs(5))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn a_node_that_dials_before_its_pid_is_recorded_is_identified() {
        let net = Net::start(vec![echo().await, echo().await]).await.unwrap();
        // Link 1 -> 0 is blocked, so an unidentified dialer into 0 would be black-holed.
        net.set(
            1,
            0,
            LinkFault {
                blocked: true,
                ..LinkFault::default()
            },
        );
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        // The proxy has the connection before this process is known as node 0, as with a
        // node that dials the moment it is spawned.
        while net.stats().accepted.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        net.set_pid(0, Some(std::process::id()));
        assert_eq!(
            roundtrip(&mut s, b"me", Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&b"me"[..])
        );
        assert_eq!(net.stats().unidentified.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn healing_a_block_closes_the_black_holed_connection() {
        let net = Net::start(vec![echo().await]).await.unwrap();
        net.set_pid(0, Some(std::process::id()));
        net.set(
            0,
            0,
            LinkFault {
                blocked: true,
                ..LinkFault::default()
            },
        );
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        assert_eq!(
            roundtrip(&mut s, b"x", Duration::from_millis(200)).await,
            None
        );
        net.heal();
        // The connection is closed (EOF), and a new one works.
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        assert_eq!(
            roundtrip(&mut s, b"back", Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&b"back"[..])
        );
    }

    #[tokio::test]
    async fn delay_holds_chunks_back_and_loss_cuts() {
        let net = Net::start(vec![echo().await]).await.unwrap();
        net.set_pid(0, Some(std::process::id()));
        net.set(
            0,
            0,
            LinkFault {
                delay: Duration::from_millis(100),
                ..LinkFault::default()
            },
        );
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        let t = std::time::Instant::now();
        assert!(roundtrip(&mut s, b"slow", Duration::from_secs(5))
            .await
            .is_some());
        // Delayed on the way there and on the way back.
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        net.set(
            0,
            0,
            LinkFault {
                loss: 1.0,
                ..LinkFault::default()
            },
        );
        let mut s = TcpStream::connect(net.proxy_addr(0)).await.unwrap();
        assert_eq!(
            roundtrip(&mut s, b"gone", Duration::from_secs(5)).await,
            None
        );
        assert!(net.stats().cut.load(Ordering::Relaxed) >= 1);
    }
}
