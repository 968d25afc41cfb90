//! Shared by the tests/protocol_*.rs integration tests: a real `doozerd` process on
//! 127.0.0.1 (port picked by the OS, data in a temporary directory, killed on drop), and a
//! blocking client that speaks raw Doozer frames: bytes in, bytes out, no client library.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use doozer_proto::codec::{encode_frame, read_frame, MAX_FRAME};
use doozer_proto::msg::{Request, Response, Verb};

/// How long any one step may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `doozerd`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    pub id: String,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Server {
    /// Starts a one-node cluster and waits until it accepts writes.
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// Like [`Server::start`] with extra flags and environment variables (secrets).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("doozerd.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doozerd"));
        cmd.arg("-l")
            .arg("127.0.0.1:0")
            .arg("-w")
            .arg("false")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("RUST_LOG", "info,doozerd=debug")
            .env_remove("DOOZER_RWSECRET")
            .env_remove("DOOZER_ROSECRET")
            .env_remove("DOOZER_BOOT_URI")
            .stdout(Stdio::piped())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn doozerd");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let mut s = Server {
            child,
            addr: String::new(),
            id: String::new(),
            _dir: dir,
            log,
        };
        // "doozerd <id> listening on <addr>"
        let line = rx.recv_timeout(DEADLINE).unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 5 || words[2] != "listening" {
            s.dump_log();
            panic!("doozerd did not report its address: {line:?}");
        }
        s.id = words[1].to_string();
        s.addr = words[4].to_string();
        let secret = env
            .iter()
            .find(|(k, _)| *k == "DOOZER_RWSECRET")
            .map(|(_, v)| v.to_string());
        s.wait_writable(secret.as_deref());
        s
    }

    /// Sends NOP until one succeeds: a NOP waits (server side, up to the write deadline) for
    /// the node to have a leader, so this needs no sleeping.
    fn wait_writable(&self, secret: Option<&str>) {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(mut c) = Raw::try_connect(&self.addr) {
                if let Some(s) = secret {
                    let _ = c.try_call(
                        &Request::new(Verb::Access)
                            .with_tag(0)
                            .with_value(s.to_string()),
                    );
                }
                if let Ok(r) = c.try_call(&Request::new(Verb::Nop).with_tag(1)) {
                    if !r.is_err() {
                        return;
                    }
                }
            }
            if Instant::now() > until {
                self.dump_log();
                panic!("doozerd at {} never became writable", self.addr);
            }
        }
    }

    /// A new raw connection.
    pub fn raw(&self) -> Raw {
        Raw::try_connect(&self.addr).expect("connect")
    }

    /// The process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The node's log so far, without terminal colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                // ESC [ ... m
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    }

    /// Polls the log until `pred` holds; panics at the deadline.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let until = Instant::now() + DEADLINE;
        while !pred(&self.log_text()) {
            if Instant::now() > until {
                self.dump_log();
                panic!("log never showed {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn dump_log(&self) {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("==== last log lines of doozerd {} ====", self.addr);
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection that writes and reads raw frames.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn try_connect(addr: &str) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        // A read that waits this long means the test has failed, not that it is slow.
        stream.set_read_timeout(Some(DEADLINE))?;
        Ok(Raw { stream })
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one request frame.
    pub fn send(&mut self, req: &Request) {
        self.write_raw(&encode_frame(req));
    }

    /// Reads one response frame.
    pub fn recv(&mut self) -> Response {
        read_frame(&mut self.stream, MAX_FRAME).expect("read a response frame")
    }

    /// Reads one response's raw body bytes (without the length header).
    pub fn recv_raw(&mut self) -> Vec<u8> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).expect("read header");
        let len = u32::from_be_bytes(header) as usize;
        assert!(len <= MAX_FRAME, "response frame of {len} bytes");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).expect("read body");
        body
    }

    pub fn call(&mut self, req: &Request) -> Response {
        self.send(req);
        self.recv()
    }

    pub fn try_call(&mut self, req: &Request) -> Result<Response, doozer_proto::FrameError> {
        self.stream.write_all(&encode_frame(req))?;
        read_frame(&mut self.stream, MAX_FRAME)
    }

    /// Asserts that the server closes the connection (EOF or reset) without answering.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("expected close, got {n} bytes: {:?}", &buf[..n]),
            Err(e) => panic!("expected close, got {e}"),
        }
    }
}

/// A request with a tag.
pub fn req(verb: Verb, tag: i32) -> Request {
    Request::new(verb).with_tag(tag)
}
