//! [`Client`]: the typed verbs, deadlines, retries, reconnection and failover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use doozer_proto::msg::{ErrCode, Request, Response, Verb, REV_DIR, REV_MISSING};
use doozer_proto::uri::DoozerUri;
use prost::Message;
use rand::Rng;
use tokio::sync::Mutex;
use tracing::{debug, info_span, Instrument};

use crate::conn::{Conn, Lost};
use crate::error::ClientError;
use crate::options::{ClientOptions, TlsOptions};
use crate::types::{Entry, Event, Stat};

/// How a verb may be retried after its connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: asking again is harmless.
    Always,
    /// Compare-and-set writes (rev >= 0): a second attempt cannot apply a second change
    /// unless the first one failed, because a successful first attempt raises the file's
    /// rev past the one given. A retry that then gets REV_MISMATCH is reported as
    /// [`ClientError::Unknown`], since the mismatch may be with our own first attempt.
    /// (The one exception is a rev at or beyond the revision the write itself lands at,
    /// i.e. a rev from the future: no caller that read the rev it passes can produce one.)
    Cas,
    /// Clobber writes (rev -1) and NOP: a retry could apply twice; report Unknown.
    Never,
}

struct Inner {
    addrs: Vec<String>,
    opts: ClientOptions,
    tls: Option<(tokio_rustls::TlsConnector, TlsOptions)>,
    /// Secret presented with ACCESS on every new connection (from `sk` or [`Client::access`]).
    secret: StdMutex<Option<Bytes>>,
    /// The current connection. A tokio mutex: whoever finds it dead reconnects while holding
    /// it, and everyone else waits for that one attempt instead of dialing in parallel.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Index into `addrs` of the next address to try.
    next_addr: AtomicUsize,
}

/// An async client for a Doozer cluster.
///
/// Cheap to clone: clones share one connection, on which requests from all clones are
/// pipelined. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Deadline of this handle's calls ([`Client::with_timeout`]).
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// Connects to the cluster named by a `doozer:?ca=host:port&ca=...&sk=secret` URI with
    /// the default options. See [`Client::connect_with`].
    pub async fn connect(uri: &str) -> Result<Client, ClientError> {
        Client::connect_with(uri, ClientOptions::default()).await
    }

    /// Connects with explicit options. Tries the URI's addresses starting at a random one
    /// (spreading clients over the cluster) and fails only when none answers; later
    /// failures are handled by reconnecting. Presents the URI's `sk` secret, if any.
    pub async fn connect_with(uri: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let parsed = DoozerUri::parse(uri).map_err(|e| ClientError::InvalidUri {
            reason: e.to_string(),
        })?;
        if parsed.addrs.is_empty() {
            return Err(ClientError::InvalidUri {
                reason: "no ca address (cn lookups need a boot uri: use connect_boot)".into(),
            });
        }
        Client::connect_addrs(parsed.addrs, parsed.secret.map(Bytes::from), opts).await
    }

    /// Connects to the cluster whose name is the `cn` of `uri`, finding its addresses in
    /// the DzNS cluster at `boot_uri` (`/ctl/ns/<cn>/*`, read at one revision), as the
    /// original client did for `-b`. Without `cn`, or with an empty `boot_uri`, this is
    /// [`Client::connect_with`].
    pub async fn connect_boot(
        uri: &str,
        boot_uri: &str,
        opts: ClientOptions,
    ) -> Result<Client, ClientError> {
        let parsed = DoozerUri::parse(uri).map_err(|e| ClientError::InvalidUri {
            reason: e.to_string(),
        })?;
        let Some(cluster) = parsed.cluster.clone().filter(|_| !boot_uri.is_empty()) else {
            return Client::connect_with(uri, opts).await;
        };
        let dzns = Client::connect_with(boot_uri, opts.clone()).await?;
        let rev = dzns.rev().await?;
        let dir = format!("/ctl/ns/{cluster}");
        let mut addrs = Vec::new();
        for name in dzns.getdir_all(&dir, Some(rev)).await? {
            let (addr, _) = dzns.get(&format!("{dir}/{name}"), Some(rev)).await?;
            addrs.push(String::from_utf8_lossy(&addr).into_owned());
        }
        if addrs.is_empty() {
            return Err(ClientError::InvalidUri {
                reason: format!("no addresses under {dir} in the boot cluster"),
            });
        }
        Client::connect_addrs(addrs, parsed.secret.map(Bytes::from), opts).await
    }

    async fn connect_addrs(
        addrs: Vec<String>,
        secret: Option<Bytes>,
        opts: ClientOptions,
    ) -> Result<Client, ClientError> {
        let tls = match &opts.tls {
            Some(t) => Some((crate::tls::connector(t)?, t.clone())),
            None => None,
        };
        let start = rand::thread_rng().gen_range(0..addrs.len());
        let timeout = opts.timeout;
        let client = Client {
            inner: Arc::new(Inner {
                addrs,
                opts,
                tls,
                secret: StdMutex::new(secret),
                conn: Mutex::new(None),
                next_addr: AtomicUsize::new(start),
            }),
            timeout,
        };
        let conn = client.inner.dial_round().await?;
        *client.inner.conn.lock().await = Some(conn);
        Ok(client)
    }

    /// A handle to the same connection whose calls have deadline `timeout` (`None`: no
    /// deadline). This is the per-call override:
    /// `client.with_timeout(Some(Duration::from_secs(1))).get("/a", None)`.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// The deadline of this handle's calls.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A client for the same cluster, options and secret with a connection of its own,
    /// made on first use to the address after the one this client last connected to.
    /// [`crate::Watch`] uses it when a node cannot serve a revision another node may still
    /// hold (`TOO_LATE` from a node that caught up from a snapshot), without disturbing the
    /// requests other clones have in flight on the shared connection.
    pub(crate) fn on_another_node(&self) -> Client {
        let inner = &self.inner;
        Client {
            inner: Arc::new(Inner {
                addrs: inner.addrs.clone(),
                opts: inner.opts.clone(),
                tls: inner.tls.clone(),
                secret: StdMutex::new(
                    inner
                        .secret
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                ),
                conn: Mutex::new(None),
                next_addr: AtomicUsize::new(inner.next_addr.load(Ordering::Relaxed)),
            }),
            timeout: self.timeout,
        }
    }

    /// The cluster addresses this client fails over between.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// The address of the current connection, if one is up.
    pub async fn current_addr(&self) -> Option<String> {
        let conn = self.inner.conn.lock().await;
        conn.as_ref()
            .filter(|c| !c.is_dead())
            .map(|c| c.addr().to_owned())
    }

    // ----- the verbs -----

    /// GET: the body and rev of the file at `path`, now (`rev: None`) or as of `rev`.
    /// A missing file is an empty body with rev 0; a directory is `ISDIR`.
    pub async fn get(&self, path: &str, rev: Option<i64>) -> Result<(Bytes, i64), ClientError> {
        let mut req = Request::new(Verb::Get).with_path(path);
        req.rev = rev;
        let resp = self.call(req, Retry::Always).await?;
        Ok((
            resp.value.unwrap_or_default(),
            resp.rev.unwrap_or(REV_MISSING),
        ))
    }

    /// SET: writes `value` at `path` if `rev` is -1 (unconditional), 0 (only if missing) or at
    /// least the file's current rev. Returns the new rev.
    pub async fn set(
        &self,
        path: &str,
        rev: i64,
        value: impl Into<Bytes>,
    ) -> Result<i64, ClientError> {
        let req = Request::new(Verb::Set)
            .with_path(path)
            .with_rev(rev)
            .with_value(value.into());
        let resp = self.call(req, write_retry(rev)).await?;
        resp.rev.ok_or(ClientError::Malformed {
            verb: "SET",
            what: "no rev",
        })
    }

    /// DEL: deletes the file at `path` under the same rev rule as [`Client::set`].
    pub async fn del(&self, path: &str, rev: i64) -> Result<(), ClientError> {
        let req = Request::new(Verb::Del).with_path(path).with_rev(rev);
        self.call(req, write_retry(rev)).await.map(drop)
    }

    /// REV: the node's current revision.
    pub async fn rev(&self) -> Result<i64, ClientError> {
        let resp = self.call(Request::new(Verb::Rev), Retry::Always).await?;
        resp.rev.ok_or(ClientError::Malformed {
            verb: "REV",
            what: "no rev",
        })
    }

    /// WAIT: the first event at or after `rev` whose path matches `glob`. Waits (up to the
    /// deadline) if there is none yet. See [`Client::watch`] for a continuous stream.
    pub async fn wait(&self, glob: &str, rev: i64) -> Result<Event, ClientError> {
        let req = Request::new(Verb::Wait).with_path(glob).with_rev(rev);
        let resp = self.call(req, Retry::Always).await?;
        event_of(resp)
    }

    /// WALK: the `offset`-th file matching `glob`, in sorted depth-first order, now or at `rev`.
    pub async fn walk(
        &self,
        glob: &str,
        offset: i32,
        rev: Option<i64>,
    ) -> Result<Entry, ClientError> {
        let mut req = Request::new(Verb::Walk).with_path(glob).with_offset(offset);
        req.rev = rev;
        let resp = self.call(req, Retry::Always).await?;
        Ok(Entry {
            path: resp.path.ok_or(ClientError::Malformed {
                verb: "WALK",
                what: "no path",
            })?,
            rev: resp.rev.unwrap_or(REV_MISSING),
            value: resp.value.unwrap_or_default(),
        })
    }

    /// GETDIR: the name of the `offset`-th entry of directory `path`, now or at `rev`.
    pub async fn getdir(
        &self,
        path: &str,
        offset: i32,
        rev: Option<i64>,
    ) -> Result<String, ClientError> {
        let mut req = Request::new(Verb::Getdir)
            .with_path(path)
            .with_offset(offset);
        req.rev = rev;
        let resp = self.call(req, Retry::Always).await?;
        resp.path.ok_or(ClientError::Malformed {
            verb: "GETDIR",
            what: "no path",
        })
    }

    /// STAT: a file's rev and length, a directory's entry count (rev -2), or rev 0 if missing.
    pub async fn stat(&self, path: &str, rev: Option<i64>) -> Result<Stat, ClientError> {
        let mut req = Request::new(Verb::Stat).with_path(path);
        req.rev = rev;
        let resp = self.call(req, Retry::Always).await?;
        Ok(Stat {
            rev: resp.rev.unwrap_or(REV_MISSING),
            len: resp.len.unwrap_or(0),
        })
    }

    /// NOP: one round of consensus, no change. Not retried (it takes a revision).
    pub async fn nop(&self) -> Result<(), ClientError> {
        self.call(Request::new(Verb::Nop), Retry::Never)
            .await
            .map(drop)
    }

    /// ACCESS: presents `secret`. On success it is also presented on every later
    /// reconnection.
    pub async fn access(&self, secret: impl Into<Bytes>) -> Result<(), ClientError> {
        let secret = secret.into();
        let req = Request::new(Verb::Access).with_value(secret.clone());
        self.call(req, Retry::Always).await?;
        *self.inner.secret.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret);
        Ok(())
    }

    /// SELF: the ID of the node this client is connected to.
    pub async fn self_id(&self) -> Result<String, ClientError> {
        let resp = self.call(Request::new(Verb::SelfId), Retry::Always).await?;
        Ok(String::from_utf8_lossy(&resp.value.unwrap_or_default()).into_owned())
    }

    // ----- helpers over the verbs -----

    /// All entry names of directory `path` at one revision (`rev`, or the current one),
    /// sorted. The GETDIRs are pipelined. A missing path is `NOENT`, a file `NOTDIR`.
    pub async fn getdir_all(
        &self,
        path: &str,
        rev: Option<i64>,
    ) -> Result<Vec<String>, ClientError> {
        let rev = match rev {
            Some(r) => r,
            None => self.rev().await?,
        };
        let st = self.stat(path, Some(rev)).await?;
        if st.rev == REV_MISSING {
            return Err(ClientError::doozer(ErrCode::NoEnt));
        }
        if st.rev != REV_DIR {
            return Err(ClientError::doozer(ErrCode::NotDir));
        }
        let calls = (0..st.len).map(|i| self.getdir(path, i, Some(rev)));
        futures::future::try_join_all(calls).await
    }

    /// Every file matching `glob` at one revision (`rev`, or the current one), in walk
    /// order. The WALKs are pipelined in windows of 64.
    pub async fn walk_all(&self, glob: &str, rev: Option<i64>) -> Result<Vec<Entry>, ClientError> {
        const WINDOW: i32 = 64;
        let rev = match rev {
            Some(r) => r,
            None => self.rev().await?,
        };
        let mut out = Vec::new();
        let mut offset = 0i32;
        loop {
            let calls =
                (offset..offset.saturating_add(WINDOW)).map(|i| self.walk(glob, i, Some(rev)));
            let results = futures::future::join_all(calls).await;
            for r in results {
                match r {
                    Ok(e) => out.push(e),
                    Err(e) if e.code() == Some(ErrCode::Range) => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
            offset = offset.saturating_add(WINDOW);
        }
    }

    /// A stream of every event matching `glob` from revision `from_rev` on; see
    /// [`crate::Watch`].
    pub fn watch(&self, glob: &str, from_rev: i64) -> crate::watch::Watch {
        crate::watch::Watch::new(self.clone(), glob.to_owned(), from_rev)
    }

    /// Closes the current connection. Later calls reconnect.
    pub async fn close(&self) {
        self.inner.conn.lock().await.take();
    }

    // ----- the machinery -----

    /// Sends `req` with this handle's deadline and the verb's retry rule.
    async fn call(&self, req: Request, retry: Retry) -> Result<Response, ClientError> {
        let verb = req.known_verb().map(Verb::as_str).unwrap_or("?");
        let len = req.encoded_len();
        if len > self.inner.opts.max_frame {
            return Err(ClientError::TooLarge {
                len,
                max: self.inner.opts.max_frame,
            });
        }
        let span = info_span!(
            "doozer_call",
            verb,
            path = req.path.as_deref().unwrap_or("")
        );
        let mut sent = false;
        let attempt = self.call_until_done(req, retry, &mut sent).instrument(span);
        let res = match self.timeout {
            None => attempt.await,
            Some(d) => match tokio::time::timeout(d, attempt).await {
                Ok(r) => r,
                // A write that may have left: its fate is unknown, not "failed".
                Err(_) if sent && retry != Retry::Always => Err(ClientError::Unknown {
                    verb,
                    reason: format!("no answer within {d:?}"),
                }),
                Err(_) => Err(ClientError::Timeout(d)),
            },
        };
        res
    }

    async fn call_until_done(
        &self,
        req: Request,
        retry: Retry,
        sent: &mut bool,
    ) -> Result<Response, ClientError> {
        let verb = req.known_verb().map(Verb::as_str).unwrap_or("?");
        let mut maybe_applied = false;
        let mut failed: Option<Arc<Conn>> = None;
        let mut pause = self.inner.opts.backoff_min;
        loop {
            let conn = self.inner.conn_for(failed.take(), &mut pause).await?;
            match conn.call(req.clone(), sent).await {
                Ok(resp) => {
                    return match resp.error_code() {
                        None => Ok(resp),
                        Some(ErrCode::RevMismatch) if maybe_applied => Err(ClientError::Unknown {
                            verb,
                            reason: "connection lost; the retry got REV_MISMATCH, \
                                         possibly against the first attempt"
                                .into(),
                        }),
                        Some(ErrCode::Other)
                            if retry != Retry::Always
                                && server_outcome_unknown(resp.err_detail.as_deref()) =>
                        {
                            Err(ClientError::Unknown {
                                verb,
                                reason: format!(
                                    "the server answered OTHER: {}",
                                    resp.err_detail.unwrap_or_default()
                                ),
                            })
                        }
                        Some(code) => Err(ClientError::Doozer {
                            code,
                            detail: resp.err_detail,
                        }),
                    };
                }
                Err(Lost::NotSent) => {}
                Err(Lost::MaybeSent) => match retry {
                    Retry::Always => {}
                    Retry::Cas => maybe_applied = true,
                    Retry::Never => {
                        return Err(ClientError::Unknown {
                            verb,
                            reason: format!("connection to {} lost", conn.addr()),
                        })
                    }
                },
            }
            debug!(
                addr = conn.addr(),
                verb, "connection lost; retrying elsewhere"
            );
            failed = Some(conn);
        }
    }
}

/// Does an `OTHER` answer to a write leave its outcome open? doozer-rs answers a write that
/// was proposed but not seen applied before its deadline with `timed out: ...`, and one
/// interrupted by shutdown or a storage failure with `node is shutting down` / `storage:
/// ...`: the command may still be decided and applied. `no leader` and `busy` mean it was
/// never proposed, and `permission denied` that it was refused: certain failures.
fn server_outcome_unknown(detail: Option<&str>) -> bool {
    let d = detail.unwrap_or("");
    ["timed out", "node is shutting down", "storage"]
        .iter()
        .any(|p| d.starts_with(p))
}

fn write_retry(rev: i64) -> Retry {
    if rev >= 0 {
        Retry::Cas
    } else {
        Retry::Never
    }
}

fn event_of(resp: Response) -> Result<Event, ClientError> {
    Ok(Event {
        path: resp.path.ok_or(ClientError::Malformed {
            verb: "WAIT",
            what: "no path",
        })?,
        rev: resp.rev.ok_or(ClientError::Malformed {
            verb: "WAIT",
            what: "no rev",
        })?,
        value: resp.value.unwrap_or_default(),
        flags: resp.flags.unwrap_or(0),
    })
}

impl Inner {
    /// The connection to use: the current one, unless it is dead or is `failed` (the one the
    /// caller just lost), in which case this reconnects, trying every address in turn with
    /// a growing pause between rounds. Bounded only by the caller's deadline.
    async fn conn_for(
        &self,
        failed: Option<Arc<Conn>>,
        pause: &mut Duration,
    ) -> Result<Arc<Conn>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            let is_failed = failed.as_ref().is_some_and(|f| Arc::ptr_eq(f, c));
            if !c.is_dead() && !is_failed {
                return Ok(c.clone());
            }
        }
        *slot = None;
        if failed.is_some() {
            // Someone (maybe us) just lost a connection: don't hammer the cluster.
            tokio::time::sleep(jitter(*pause)).await;
            *pause = (*pause * 2).min(self.opts.backoff_max);
        }
        loop {
            match self.dial_round().await {
                Ok(c) => {
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                // A refused secret won't be accepted elsewhere either.
                Err(e @ ClientError::Doozer { .. }) => return Err(e),
                Err(e) => debug!(error = %e, "no address answered; backing off"),
            }
            tokio::time::sleep(jitter(*pause)).await;
            *pause = (*pause * 2).min(self.opts.backoff_max);
        }
    }

    /// One attempt at each address, starting at `next_addr`. Returns the first that
    /// connects (and accepts the secret), or the last error.
    async fn dial_round(&self) -> Result<Arc<Conn>, ClientError> {
        let n = self.addrs.len();
        let mut last = None;
        for _ in 0..n {
            let i = self.next_addr.fetch_add(1, Ordering::Relaxed) % n;
            let addr = &self.addrs[i];
            let tls = self.tls.as_ref().map(|(c, o)| (c, o));
            match Conn::open(
                addr,
                tls,
                self.opts.connect_timeout,
                self.opts.max_frame,
                self.opts.max_outstanding,
            )
            .await
            {
                Ok(conn) => {
                    // Next time, start after this one: a reconnect moves on to another node.
                    self.next_addr.store(i + 1, Ordering::Relaxed);
                    let conn = Arc::new(conn);
                    let secret = self
                        .secret
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some(secret) = secret {
                        let mut sent = false;
                        let req = Request::new(Verb::Access).with_value(secret);
                        match conn.call(req, &mut sent).await {
                            Ok(resp) => {
                                if let Some(code) = resp.error_code() {
                                    return Err(ClientError::Doozer {
                                        code,
                                        detail: resp.err_detail,
                                    });
                                }
                            }
                            Err(_) => {
                                last = Some(ClientError::Connect {
                                    addr: addr.clone(),
                                    source: std::io::Error::from(
                                        std::io::ErrorKind::ConnectionReset,
                                    ),
                                });
                                continue;
                            }
                        }
                    }
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::InvalidUri {
            reason: "no addresses".into(),
        }))
    }
}

/// `d` scaled by a random factor in [0.5, 1.5), so clients that lost the same node don't
/// all come back in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}
