//! Running the real `doozer` binary from tests and capturing exactly what it printed.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// The binary under test, as the tests invoke it (also its `argv[0]`).
pub const DOOZER: &str = env!("CARGO_BIN_EXE_doozer");

/// What one run printed, and how it exited.
#[derive(Debug, PartialEq, Eq)]
pub struct Out {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
}

impl Out {
    /// stdout as text (the tests' values are ASCII).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A `doozer` command line with `DOOZER_URI` set to `uri` and nothing else inherited
/// from the environment that could change its behaviour.
pub fn cmd(uri: &str, args: &[&str]) -> Command {
    let mut c = Command::new(DOOZER);
    c.args(args)
        .env_remove("DOOZER_BOOT_URI")
        .env("DOOZER_URI", uri)
        .stdin(Stdio::null());
    c
}

/// Runs `doozer args...` against `uri`, with `stdin` as its standard input.
pub fn run(uri: &str, args: &[&str], stdin: &[u8]) -> Out {
    let mut child = cmd(uri, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn doozer");
    let mut si = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    // Write from a thread: a command that never reads stdin must not block the test.
    let feeder = std::thread::spawn(move || {
        let _ = si.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for doozer");
    let _ = feeder.join();
    Out {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Shorthand for a run with empty stdin.
pub fn dz(uri: &str, args: &[&str]) -> Out {
    run(uri, args, b"")
}

/// Expected result: stdout, stderr, exit code.
pub fn exp(stdout: impl AsRef<[u8]>, stderr: &str, code: i32) -> Out {
    Out {
        stdout: stdout.as_ref().to_vec(),
        stderr: stderr.to_owned(),
        code,
    }
}

/// A child's stdout, read on a thread so a test waits with a deadline instead of hanging
/// forever when an expected record never comes.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(mut out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match out.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Lines {
            rx,
            buf: Vec::new(),
        }
    }

    /// Exactly `n` bytes; panics if they don't come within 60 s or the output ends.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let more = self
                .rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("output ended or stalled for 60 s");
            self.buf.extend_from_slice(&more);
        }
        self.buf.drain(..n).collect()
    }

    /// The next line, without its `\n`.
    pub fn next_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let more = self
                .rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("output ended or stalled for 60 s");
            self.buf.extend_from_slice(&more);
        }
    }
}
