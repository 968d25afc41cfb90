//! An in-memory Doozer server speaking real frames, for tests (feature `fake-server`).
//!
//! [`FakeCluster`] holds one versioned tree; each [`FakeServer`] started from it listens on
//! its own 127.0.0.1 port and serves that same tree, so a client can fail over between two
//! servers and see the same data, as with a real cluster. A server can be stopped (its
//! listener and every connection close at once) and [`Hooks`] make it misbehave on purpose:
//! stall a verb forever, drop the connection before or after applying a request, or apply
//! one and answer it with an error (a write that timed out in the server).
//!
//! It follows doozer-protocol.md §2 closely enough for client tests (rev rules, implicit
//! directories, sorted listings, WAIT history, reads at a revision, secrets) but is no
//! substitute for the real server: it has no consensus, no persistence, no limits.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use doozer_proto::codec::ServerCodec;
use doozer_proto::glob::Glob;
use doozer_proto::msg::{
    ErrCode, Request, Response, Verb, FLAG_DEL, FLAG_SET, REV_CLOBBER, REV_DIR, REV_MISSING,
};
use doozer_proto::path;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

type Tree = BTreeMap<String, (Bytes, i64)>;

/// One change in the fake's history.
#[derive(Debug, Clone)]
struct FakeEvent {
    rev: i64,
    path: String,
    value: Bytes,
    flags: i32,
}

/// Ways to make the fake misbehave. One-shot hooks fire on the next matching request only.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Requests with these verbs are never answered.
    pub stall: HashSet<Verb>,
    /// The next request with this verb closes its connection without being applied.
    pub drop_before: Option<Verb>,
    /// The next request with this verb is applied, then its connection closes unanswered.
    pub drop_after: Option<Verb>,
    /// The next request with this verb is applied, then answered `OTHER` with this detail
    /// instead of its result (as doozerd answers a write whose deadline passed after it
    /// was proposed: `timed out: the write may or may not have been applied`).
    pub fail_after: Option<(Verb, String)>,
}

struct Data {
    /// Tree after each revision, from `first_rev` on (index = rev - first_rev).
    states: Vec<Arc<Tree>>,
    first_rev: i64,
    history: Vec<FakeEvent>,
}

impl Data {
    fn rev(&self) -> i64 {
        self.first_rev + self.states.len() as i64 - 1
    }
    fn current(&self) -> Arc<Tree> {
        self.states.last().cloned().unwrap_or_default()
    }
    fn at(&self, rev: i64) -> Result<Option<Arc<Tree>>, ErrCode> {
        if rev < self.first_rev {
            return Err(ErrCode::TooLate);
        }
        Ok(self.states.get((rev - self.first_rev) as usize).cloned())
    }
}

struct State {
    data: Mutex<Data>,
    changed: Notify,
    hooks: Mutex<Hooks>,
    secret: Mutex<Option<Bytes>>,
    id: String,
}

/// The shared data of a fake cluster. Cheap to clone.
#[derive(Clone)]
pub struct FakeCluster {
    state: Arc<State>,
}

impl Default for FakeCluster {
    fn default() -> Self {
        FakeCluster::new()
    }
}

impl FakeCluster {
    /// An empty tree at revision 1 (holding only `/ctl/name` = `fake`), no secret.
    pub fn new() -> FakeCluster {
        let mut tree = Tree::new();
        tree.insert("/ctl/name".into(), (Bytes::from_static(b"fake"), 1));
        FakeCluster {
            state: Arc::new(State {
                data: Mutex::new(Data {
                    states: vec![Arc::new(tree)],
                    first_rev: 1,
                    history: vec![FakeEvent {
                        rev: 1,
                        path: "/ctl/name".into(),
                        value: Bytes::from_static(b"fake"),
                        flags: FLAG_SET,
                    }],
                }),
                changed: Notify::new(),
                hooks: Mutex::new(Hooks::default()),
                secret: Mutex::new(None),
                id: "FAKEFAKEFAKEFAKE".into(),
            }),
        }
    }

    /// Requires `secret` (ACCESS) for everything except REV, SELF and ACCESS.
    pub fn set_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = Some(Bytes::copy_from_slice(secret.as_bytes()));
    }

    /// Changes the hooks.
    pub fn hooks(&self, f: impl FnOnce(&mut Hooks)) {
        f(&mut self.state.hooks.lock().unwrap())
    }

    /// The current revision.
    pub fn rev(&self) -> i64 {
        self.state.data.lock().unwrap().rev()
    }

    /// Forgets history (and old states) below `rev`: older reads and waits get TOO_LATE.
    pub fn forget_before(&self, rev: i64) {
        let mut d = self.state.data.lock().unwrap();
        let cut = (rev - d.first_rev).clamp(0, d.states.len() as i64 - 1);
        d.states.drain(..cut as usize);
        d.first_rev += cut;
        let first = d.first_rev;
        d.history.retain(|e| e.rev >= first);
    }

    /// Applies a SET directly (as if a client did), returning its result.
    pub fn set(&self, p: &str, rev: i64, value: &[u8]) -> Result<i64, ErrCode> {
        self.mutate(p, Some(rev), Some(Bytes::copy_from_slice(value)))
    }

    /// Starts a server for this cluster on 127.0.0.1 with an OS-chosen port.
    pub async fn start(&self) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let state = self.state.clone();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop2.cancelled() => return,
                };
                if let Ok((sock, _)) = accepted {
                    tokio::spawn(serve_conn(sock, state.clone(), stop2.clone()));
                }
            }
        });
        FakeServer { addr, stop }
    }

    /// Starts a server for this cluster that speaks TLS (rustls, ring) with the PEM
    /// certificate chain and key given; with `client_ca`, it requires a client certificate
    /// signed by that CA. Connections whose handshake fails are dropped.
    pub async fn start_tls(
        &self,
        cert_file: &std::path::Path,
        key_file: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<FakeServer, String> {
        let acceptor = tls_acceptor(cert_file, key_file, client_ca)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let state = self.state.clone();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop2.cancelled() => return,
                };
                if let Ok((sock, _)) = accepted {
                    let (acceptor, state, stop) = (acceptor.clone(), state.clone(), stop2.clone());
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(sock).await {
                            serve_conn(tls, state, stop).await;
                        }
                    });
                }
            }
        });
        Ok(FakeServer { addr, stop })
    }

    /// Applies a write (`value: Some` = SET, `None` = DEL, `rev: None` = NOP). Failed
    /// mutations take a revision too, recording the error at `/ctl/err`, as in Doozer.
    fn mutate(&self, p: &str, rev: Option<i64>, value: Option<Bytes>) -> Result<i64, ErrCode> {
        let mut d = self.state.data.lock().unwrap();
        let seqn = d.rev() + 1;
        let mut tree = (*d.current()).clone();
        let outcome = match rev {
            None => Ok(FakeEvent {
                rev: seqn,
                path: "/".into(),
                value: Bytes::new(),
                flags: 0,
            }),
            Some(rev) => check_write(&tree, p, rev).map(|()| match &value {
                Some(v) => {
                    tree.insert(p.to_owned(), (v.clone(), seqn));
                    FakeEvent {
                        rev: seqn,
                        path: p.to_owned(),
                        value: v.clone(),
                        flags: FLAG_SET,
                    }
                }
                None => {
                    tree.remove(p);
                    FakeEvent {
                        rev: seqn,
                        path: p.to_owned(),
                        value: Bytes::new(),
                        flags: FLAG_DEL,
                    }
                }
            }),
        };
        let (event, result) = match outcome {
            Ok(ev) => (ev, Ok(seqn)),
            Err(code) => {
                let text = Bytes::from(code.as_str().to_lowercase().replace('_', " "));
                tree.insert("/ctl/err".into(), (text.clone(), seqn));
                let ev = FakeEvent {
                    rev: seqn,
                    path: "/ctl/err".into(),
                    value: text,
                    flags: FLAG_SET,
                };
                (ev, Err(code))
            }
        };
        d.states.push(Arc::new(tree));
        d.history.push(event);
        drop(d);
        self.state.changed.notify_waiters();
        result
    }
}

fn check_write(tree: &Tree, p: &str, rev: i64) -> Result<(), ErrCode> {
    path::validate(p).map_err(|_| ErrCode::BadPath)?;
    if p == "/" || is_dir(tree, p) {
        return Err(ErrCode::IsDir);
    }
    let mut dir = path::parent(p);
    while let Some(d) = dir {
        if tree.contains_key(d) {
            return Err(ErrCode::NotDir);
        }
        dir = path::parent(d);
    }
    let cur = tree.get(p).map(|(_, r)| *r).unwrap_or(REV_MISSING);
    if rev == REV_CLOBBER || (rev >= 0 && rev >= cur) {
        Ok(())
    } else {
        Err(ErrCode::RevMismatch)
    }
}

fn is_dir(tree: &Tree, p: &str) -> bool {
    if p == "/" {
        return true;
    }
    let prefix = format!("{p}/");
    tree.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// Sorted names of the entries of directory `p`.
fn children(tree: &Tree, p: &str) -> Vec<String> {
    let prefix = if p == "/" {
        "/".to_owned()
    } else {
        format!("{p}/")
    };
    // Inserted one by one rather than collected: `BTreeSet::from_iter` instantiates the
    // stable sort, which rustc 1.95's incremental build at opt-level 1 (our test profile)
    // miscompiles into an rlib with undefined symbols (rust-lang/rust#81280).
    let mut names = BTreeSet::new();
    for (k, _) in tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
    {
        if let Some(name) = k[prefix.len()..].split('/').next() {
            names.insert(name.to_owned());
        }
    }
    names.into_iter().collect()
}

/// Files in depth-first order with sorted names.
fn walk_files(tree: &Tree, dir: &str, out: &mut Vec<(String, Bytes, i64)>) {
    for name in children(tree, dir) {
        let p = path::join(dir, &name);
        if let Some((v, r)) = tree.get(&p) {
            out.push((p, v.clone(), *r));
        } else {
            walk_files(tree, &p, out);
        }
    }
}

/// PEM files for TLS tests, written by [`write_test_certs`].
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate that signed the other two.
    pub ca: std::path::PathBuf,
    /// Server certificate, valid for `127.0.0.1` and `localhost`.
    pub server_cert: std::path::PathBuf,
    /// Its key.
    pub server_key: std::path::PathBuf,
    /// A client certificate (common name `client`).
    pub client_cert: std::path::PathBuf,
    /// Its key.
    pub client_key: std::path::PathBuf,
}

/// Creates a fresh CA, a server and a client certificate in `dir` (as `ca.pem`,
/// `server.pem`, `server.key`, `client.pem`, `client.key`).
pub fn write_test_certs(dir: &std::path::Path) -> Result<TestCerts, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "doozer test CA");
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let leaf = |names: Vec<String>, cn: &str| -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server")?;
    let (client_pem, client_key) = leaf(vec!["client".into()], "client")?;
    let certs = TestCerts {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    for (path, text) in [
        (&certs.ca, ca.pem()),
        (&certs.server_cert, server_pem),
        (&certs.server_key, server_key),
        (&certs.client_cert, client_pem),
        (&certs.client_key, client_key),
    ] {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(certs)
}

/// A running fake server. Dropping it stops it.
pub struct FakeServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl FakeServer {
    /// Its address, `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `doozer:?ca=<addr>`.
    pub fn uri(&self) -> String {
        format!("doozer:?ca={}", self.addr)
    }

    /// Closes the listener and every connection, as if the node died.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn tls_acceptor(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use std::io::BufReader;
    let read = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut read(cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut read(key_file)?)
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read(ca)?) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_conn<S>(sock: S, state: Arc<State>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = Framed::new(sock, ServerCodec::new()).split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Response>>();
    let conn_stop = stop.child_token();
    let authed = Arc::new(Mutex::new(state.secret.lock().unwrap().is_none()));
    let writer_stop = conn_stop.clone();
    let writer = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = writer_stop.cancelled() => None,
            };
            match msg {
                Some(Some(resp)) => {
                    if sink.send(resp).await.is_err() {
                        break;
                    }
                }
                // `None` inside: a hook asked to drop the connection.
                Some(None) | None => break,
            }
        }
        writer_stop.cancel();
    });
    let cluster = FakeCluster { state };
    loop {
        let req = tokio::select! {
            r = stream.next() => r,
            _ = conn_stop.cancelled() => None,
        };
        let Some(Ok(req)) = req else { break };
        let verb = req.known_verb();
        let (stall, before, after, fail) = {
            let mut h = cluster.state.hooks.lock().unwrap();
            let stall = verb.is_some_and(|v| h.stall.contains(&v));
            let before = verb.is_some() && h.drop_before == verb;
            let after = verb.is_some() && h.drop_after == verb;
            if before {
                h.drop_before = None;
            }
            if after {
                h.drop_after = None;
            }
            let fail = match &h.fail_after {
                Some((v, _)) if Some(*v) == verb => h.fail_after.take().map(|(_, d)| d),
                _ => None,
            };
            (stall, before, after, fail)
        };
        if before {
            let _ = tx.send(None);
            break;
        }
        if stall {
            continue;
        }
        // Requests run concurrently, so a blocked WAIT never holds up the others and
        // answers may come back out of order, as from the real server.
        let cluster = cluster.clone();
        let tx = tx.clone();
        let authed = authed.clone();
        let conn_stop = conn_stop.clone();
        tokio::spawn(async move {
            let tag = req.tag;
            let mut resp = tokio::select! {
                r = handle(&cluster, req, &authed) => r,
                _ = conn_stop.cancelled() => return,
            };
            if let Some(detail) = fail {
                resp = Response::err_with_detail(tag, ErrCode::Other, detail);
            }
            if after {
                let _ = tx.send(None);
            } else {
                let _ = tx.send(Some(resp));
            }
        });
    }
    conn_stop.cancel();
    let _ = writer.await;
}

async fn handle(c: &FakeCluster, req: Request, authed: &Mutex<bool>) -> Response {
    let tag = req.tag;
    let err = |code| Response::err(tag, code);
    let Some(verb) = req.known_verb() else {
        return err(ErrCode::UnknownVerb);
    };
    let needs_auth = !matches!(verb, Verb::Rev | Verb::SelfId | Verb::Access);
    if needs_auth && !*authed.lock().unwrap() {
        return Response::err_with_detail(tag, ErrCode::Other, "permission denied");
    }
    let p = req.path.clone();
    match verb {
        Verb::Rev => Response::ok(tag).with_rev(c.rev()),
        Verb::SelfId => Response::ok(tag).with_value(c.state.id.clone()),
        Verb::Access => {
            let want = c.state.secret.lock().unwrap().clone();
            match want {
                Some(s) if Some(&s) != req.value.as_ref() => {
                    Response::err_with_detail(tag, ErrCode::Other, "permission denied")
                }
                _ => {
                    *authed.lock().unwrap() = true;
                    Response::ok(tag)
                }
            }
        }
        Verb::Nop => match c.mutate("/", None, None) {
            Ok(_) => Response::ok(tag),
            Err(code) => err(code),
        },
        Verb::Set | Verb::Del => {
            let (Some(p), Some(rev)) = (p, req.rev) else {
                return err(ErrCode::MissingArg);
            };
            let value = (verb == Verb::Set).then(|| req.value.clone().unwrap_or_default());
            match c.mutate(&p, Some(rev), value) {
                Ok(r) if verb == Verb::Set => Response::ok(tag).with_rev(r),
                Ok(_) => Response::ok(tag),
                Err(code) => err(code),
            }
        }
        Verb::Wait => {
            let (Some(g), Some(rev)) = (p, req.rev) else {
                return err(ErrCode::MissingArg);
            };
            let glob = match Glob::new(&g) {
                Ok(g) => g,
                Err(e) => return Response::from_error(tag, &e),
            };
            let rev = rev.max(1);
            loop {
                let notified = c.state.changed.notified();
                {
                    let d = c.state.data.lock().unwrap();
                    if rev < d.first_rev {
                        return err(ErrCode::TooLate);
                    }
                    if let Some(ev) = d
                        .history
                        .iter()
                        .find(|e| e.rev >= rev && glob.matches(&e.path))
                    {
                        return Response::ok(tag)
                            .with_path(ev.path.clone())
                            .with_rev(ev.rev)
                            .with_value(ev.value.clone())
                            .with_flags(ev.flags);
                    }
                }
                notified.await;
            }
        }
        Verb::Get | Verb::Getdir | Verb::Stat | Verb::Walk => {
            let tree = match tree_at(c, req.rev).await {
                Ok(t) => t,
                Err(code) => return err(code),
            };
            read(&tree, verb, tag, p, req.offset)
        }
    }
}

/// The tree now or at `rev`, waiting for a future `rev`.
async fn tree_at(c: &FakeCluster, rev: Option<i64>) -> Result<Arc<Tree>, ErrCode> {
    loop {
        let notified = c.state.changed.notified();
        {
            let d = c.state.data.lock().unwrap();
            match rev {
                None => return Ok(d.current()),
                Some(r) => {
                    if let Some(t) = d.at(r)? {
                        return Ok(t);
                    }
                }
            }
        }
        notified.await;
    }
}

fn read(
    tree: &Tree,
    verb: Verb,
    tag: Option<i32>,
    p: Option<String>,
    off: Option<i32>,
) -> Response {
    let err = |code| Response::err(tag, code);
    match verb {
        Verb::Get => {
            let Some(p) = p else {
                return err(ErrCode::MissingArg);
            };
            if path::validate(&p).is_err() {
                return err(ErrCode::BadPath);
            }
            if is_dir(tree, &p) {
                return err(ErrCode::IsDir);
            }
            let (v, r) = tree.get(&p).cloned().unwrap_or((Bytes::new(), REV_MISSING));
            Response::ok(tag).with_value(v).with_rev(r)
        }
        Verb::Stat => {
            let p = p.unwrap_or_default();
            if let Some((v, r)) = tree.get(&p) {
                Response::ok(tag).with_rev(*r).with_len(v.len() as i32)
            } else if path::is_valid(&p) && is_dir(tree, &p) {
                Response::ok(tag)
                    .with_rev(REV_DIR)
                    .with_len(children(tree, &p).len() as i32)
            } else {
                Response::ok(tag).with_rev(REV_MISSING).with_len(0)
            }
        }
        Verb::Getdir => {
            let (Some(p), Some(off)) = (p, off) else {
                return err(ErrCode::MissingArg);
            };
            if tree.contains_key(&p) {
                return err(ErrCode::NotDir);
            }
            if !is_dir(tree, &p) {
                return err(ErrCode::NoEnt);
            }
            match usize::try_from(off)
                .ok()
                .and_then(|i| children(tree, &p).get(i).cloned())
            {
                Some(name) => Response::ok(tag).with_path(name),
                None => err(ErrCode::Range),
            }
        }
        Verb::Walk => {
            let (Some(g), Some(off)) = (p, off) else {
                return err(ErrCode::MissingArg);
            };
            let glob = match Glob::new(&g) {
                Ok(g) => g,
                Err(e) => return Response::from_error(tag, &e),
            };
            let mut files = Vec::new();
            walk_files(tree, "/", &mut files);
            let hit = files
                .into_iter()
                .filter(|(p, _, _)| glob.matches(p))
                .nth(usize::try_from(off).unwrap_or(usize::MAX));
            match hit {
                Some((p, v, r)) => Response::ok(tag)
                    .with_path(p)
                    .with_value(v)
                    .with_rev(r)
                    .with_flags(FLAG_SET),
                None => err(ErrCode::Range),
            }
        }
        _ => err(ErrCode::UnknownVerb),
    }
}
