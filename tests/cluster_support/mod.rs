//! Shared by the tests/cluster_*.rs integration tests: real `doozerd` processes on
//! 127.0.0.1, each with its data directory in a temporary directory, killed on drop, and a
//! tiny blocking client that speaks raw Doozer frames (doozer_proto only).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use doozer_proto::codec::{read_frame, write_frame, MAX_FRAME};
use doozer_proto::msg::{ErrCode, Request, Response, Verb};

/// A running `doozerd` process.
pub struct Proc {
    child: Option<Child>,
    pub id: String,
    pub addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `doozerd --data-dir dir <args>` and waits for its "listening" line.
    pub fn start(dir: &Path, log: &Path, args: &[&str]) -> Proc {
        Self::start_limited(dir, log, args, None)
    }

    /// [`Proc::start`] with no file allowed to grow beyond `file_limit` bytes
    /// (`RLIMIT_FSIZE`, with SIGXFSZ ignored so a write past it fails with EFBIG): a disk
    /// that fills up, for this process alone.
    pub fn start_limited(dir: &Path, log: &Path, args: &[&str], file_limit: Option<u64>) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doozerd"));
        cmd.arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info,doozerd=debug,doozer_paxos=debug")
            .stdout(Stdio::piped())
            .stderr(logf);
        if let Some(limit) = file_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec only async-signal-safe calls: setrlimit and
            // signal.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn doozerd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let mut p = Proc {
            child: Some(child),
            id: String::new(),
            addr: String::new(),
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if !l.is_empty() => l,
            _ => {
                p.dump_log();
                panic!("doozerd did not report its address");
            }
        };
        // "doozerd <id> listening on <addr>"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 5, "unexpected first line {line:?}");
        p.id = words[1].to_string();
        p.addr = words[4].to_string();
        p
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, silent (as if cut off), until [`Proc::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `within` for the process to exit on its own; its status, or None if it
    /// is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if t.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many voters govern the next slot, from this node's last "voters in force" log
    /// line (a change in /ctl/cal takes effect alpha slots after it is applied).
    pub fn voters_in_force(&self) -> usize {
        let log = self.log_text();
        let Some(line) = log.lines().rev().find(|l| l.contains("voters in force")) else {
            return 0;
        };
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Whether this node's log says it is the leader now.
    pub fn is_leader(&self) -> bool {
        let log = self.log_text();
        let became = log.rfind("became leader");
        let lost = [log.rfind("leader changed"), log.rfind("no leader")]
            .into_iter()
            .flatten()
            .max();
        match (became, lost) {
            (Some(b), Some(l)) => b > l,
            (Some(_), None) => true,
            _ => false,
        }
    }

    pub fn dump_log(&self) {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(80);
        eprintln!("==== last log lines of {} ({}) ====", self.id, self.addr);
        for l in &lines[from..] {
            eprintln!("{l}");
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            self.dump_log();
        }
        self.kill9();
    }
}

/// A temporary directory holding the data directories and logs of a test's nodes.
pub struct Cluster {
    // Declared first so the nodes are killed (and their logs dumped) before `base` is
    // deleted: fields drop in declaration order.
    pub nodes: Vec<Proc>,
    pub base: tempfile::TempDir,
}

impl Drop for Cluster {
    /// With `DOOZER_TEST_KEEP_LOGS=DIR`, the nodes' logs are copied to a fresh directory
    /// under DIR, for reading after a run (passing or not).
    fn drop(&mut self) {
        let Some(keep) = std::env::var_os("DOOZER_TEST_KEEP_LOGS") else {
            return;
        };
        let to = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(keep)
            .expect("DOOZER_TEST_KEEP_LOGS names a writable directory")
            .keep();
        for e in std::fs::read_dir(self.base.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
        }
        eprintln!("node logs kept in {}", to.display());
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            base: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        }
    }

    pub fn dir(&self, n: usize) -> PathBuf {
        self.base.path().join(format!("n{n}"))
    }

    pub fn log(&self, n: usize) -> PathBuf {
        self.base.path().join(format!("n{n}.log"))
    }

    /// Starts node number `n` (its own data dir) with `args`; returns its index in `nodes`.
    pub fn start(&mut self, n: usize, args: &[&str]) -> usize {
        let p = Proc::start(&self.dir(n), &self.log(n), args);
        self.nodes.push(p);
        self.nodes.len() - 1
    }

    /// A first node on a free port.
    pub fn seed(&mut self, extra: &[&str]) -> usize {
        let mut args = vec!["-l", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        self.start(self.nodes.len(), &args)
    }

    /// A node joining through `via`.
    pub fn join(&mut self, via: &str, extra: &[&str]) -> usize {
        let mut args = vec!["-l", "127.0.0.1:0", "-a", via];
        args.extend_from_slice(extra);
        self.start(self.nodes.len(), &args)
    }

    /// Starts a seed and two joiners (all with `extra`) and waits until all three are
    /// voters.
    pub fn three_voters(&mut self, extra: &[&str]) {
        let s = self.seed(extra);
        let seed_addr = self.nodes[s].addr.clone();
        self.join(&seed_addr, extra);
        self.join(&seed_addr, extra);
        self.wait_three_voters();
    }

    /// Waits until the three nodes in `nodes` are the voters, in force on every node.
    pub fn wait_three_voters(&self) {
        let mut ids: Vec<String> = self.nodes.iter().map(|p| p.id.clone()).collect();
        ids.sort();
        let mut c = self.nodes[0].client();
        eventually(Duration::from_secs(30), "three voters", || {
            (Cluster::voters(&mut c) == ids).then_some(())
        });
        eventually(Duration::from_secs(30), "three voters in force", || {
            self.nodes
                .iter()
                .all(|p| p.voters_in_force() == 3)
                .then_some(())
        });
    }

    /// The ids in non-empty /ctl/cal slots, read through `c`.
    pub fn voters(c: &mut Client) -> Vec<String> {
        Self::try_voters(c).unwrap()
    }

    /// [`Cluster::voters`], or the error of a read that failed (for loops that wait through
    /// an election).
    pub fn try_voters(c: &mut Client) -> Result<Vec<String>, DzErr> {
        let mut out = Vec::new();
        for name in c.getdir_all("/ctl/cal") {
            let (v, _) = c.get(&format!("/ctl/cal/{name}"))?;
            if !v.is_empty() {
                out.push(String::from_utf8(v).unwrap());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Polls `f` until it returns Some, or panics after `within`. For conditions no event
/// announces (membership, a leader elsewhere).
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Doozer error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DzErr {
    pub code: Option<ErrCode>,
    pub detail: String,
}

/// A blocking raw-frame client: one request at a time.
pub struct Client {
    s: TcpStream,
    tag: i32,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, tag: 0 }
    }

    pub fn try_connect(addr: &str) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Client { s, tag: 0 })
    }

    pub fn call(&mut self, mut req: Request) -> std::io::Result<Response> {
        self.tag += 1;
        req.tag = Some(self.tag);
        write_frame(&mut self.s, &req, MAX_FRAME).map_err(std::io::Error::other)?;
        self.s.flush()?;
        let resp: Response = read_frame(&mut self.s, MAX_FRAME).map_err(std::io::Error::other)?;
        assert_eq!(resp.tag, Some(self.tag), "response to another tag");
        Ok(resp)
    }

    fn check(resp: Response) -> Result<Response, DzErr> {
        if resp.err_code.is_some() {
            return Err(DzErr {
                code: resp.error_code(),
                detail: resp.err_detail.clone().unwrap_or_default(),
            });
        }
        Ok(resp)
    }

    pub fn set(&mut self, path: &str, rev: i64, value: &[u8]) -> Result<i64, DzErr> {
        let r = self
            .call(
                Request::new(Verb::Set)
                    .with_path(path)
                    .with_rev(rev)
                    .with_value(value.to_vec()),
            )
            .map_err(|e| DzErr {
                code: None,
                detail: e.to_string(),
            })?;
        Ok(Self::check(r)?.rev.unwrap_or(0))
    }

    pub fn get(&mut self, path: &str) -> Result<(Vec<u8>, i64), DzErr> {
        let r = self
            .call(Request::new(Verb::Get).with_path(path))
            .map_err(|e| DzErr {
                code: None,
                detail: e.to_string(),
            })?;
        let r = Self::check(r)?;
        Ok((
            r.value.map(|v| v.to_vec()).unwrap_or_default(),
            r.rev.unwrap_or(0),
        ))
    }

    pub fn rev(&mut self) -> i64 {
        let r = self.call(Request::new(Verb::Rev)).expect("rev");
        Self::check(r).expect("rev").rev.unwrap_or(0)
    }

    pub fn self_id(&mut self) -> String {
        let r = self.call(Request::new(Verb::SelfId)).expect("self");
        String::from_utf8(
            Self::check(r)
                .expect("self")
                .value
                .unwrap_or_default()
                .to_vec(),
        )
        .unwrap()
    }

    pub fn getdir_all(&mut self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        for off in 0.. {
            let r = self
                .call(Request::new(Verb::Getdir).with_path(dir).with_offset(off))
                .expect("getdir");
            match Self::check(r) {
                Ok(r) => out.push(r.path.unwrap_or_default()),
                Err(_) => break,
            }
        }
        out
    }
}
