//! The real `doozer` binary against real `doozerd` processes on 127.0.0.1: exact stdout,
//! stderr and exit status of every command, errors included.
//!
//! Where `doozerd` comes from: cargo sets `CARGO_BIN_EXE_*` only for a package's own
//! binaries, so these tests look for `doozerd` next to the `doozer` under test
//! (target/<profile>/doozerd), or at `$DOOZERD_BIN`. `cargo test --workspace` builds it
//! (the doozerd package has integration tests, so cargo builds its binaries, and all
//! building happens before any test runs). With `cargo test -p doozer-cli` alone, run
//! `cargo build -p doozerd` first, or a stale binary may be tested. A missing binary fails
//! every test here with that instruction; it is never skipped silently.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{cmd, dz, exp, run, DOOZER};

/// Where `doozerd` is: `$DOOZERD_BIN`, else next to the `doozer` binary under test.
fn doozerd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DOOZERD_BIN") {
        return PathBuf::from(p);
    }
    let dir = std::path::Path::new(DOOZER)
        .parent()
        .expect("doozer binary has a directory");
    let p = dir.join("doozerd");
    assert!(
        p.exists(),
        "doozerd binary not found at {}: these tests run the real server. Build it first with \
         `cargo build -p doozerd` (the same profile as the tests), or set DOOZERD_BIN.",
        p.display()
    );
    p
}

/// A `doozerd` process with its data in a temporary directory; killed on drop.
struct Doozerd {
    child: Child,
    id: String,
    addr: String,
    dir: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl Doozerd {
    /// Starts a node (a new cluster, or joining with `extra` = `["-a", addr]`) and waits
    /// until it reports its address and accepts a write.
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Doozerd {
        let dir = tempfile::tempdir().unwrap();
        Doozerd::start_in(dir, &["-l", "127.0.0.1:0"], extra, env)
    }

    /// Kills the node and starts it again on its data directory, with no flags: it comes
    /// back with its id, membership and address.
    fn restart(mut self) -> Doozerd {
        self.kill();
        let dir = self.dir.take().expect("data directory");
        Doozerd::start_in(dir, &[], &[], &[])
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start_in(
        dir: tempfile::TempDir,
        listen: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Doozerd {
        let log = dir.path().join("doozerd.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut c = Command::new(doozerd_bin());
        c.args(listen)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("-w")
            .arg("false")
            .args(extra)
            .env_remove("DOOZER_BOOT_URI")
            .env_remove("DOOZER_RWSECRET")
            .env_remove("DOOZER_ROSECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn doozerd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let mut d = Doozerd {
            child,
            id: String::new(),
            addr: String::new(),
            dir: Some(dir),
            log,
        };
        // "doozerd <id> listening on <addr>"
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 5 || words[2] != "listening" {
            panic!(
                "doozerd did not report its address (first line {line:?}); log:\n{}",
                d.log_text()
            );
        }
        d.id = words[1].to_owned();
        d.addr = words[4].to_owned();
        d
    }

    fn uri(&self) -> String {
        format!("doozer:?ca={}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a NOP (a write through consensus) succeeds through the CLI.
    fn wait_writable(&self, uri: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = dz(uri, &["nop"]);
            if o.code == 0 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} never accepted a write: {o:?}; log:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Doozerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh single-node cluster, ready for writes.
fn node() -> Doozerd {
    let d = Doozerd::start(&[], &[]);
    d.wait_writable(&d.uri());
    d
}

/// `rev` as a number.
fn rev(uri: &str) -> i64 {
    let o = dz(uri, &["rev"]);
    assert_eq!(o.code, 0, "{o:?}");
    o.text().trim_end().parse().expect("rev prints a number")
}

/// `set` through the CLI; returns the new rev (and checks the output's exact form).
fn set(uri: &str, path: &str, rev: &str, body: &[u8]) -> i64 {
    let o = run(uri, &["set", path, rev], body);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{o:?}");
    let text = o.text();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    text.trim_end().parse().unwrap()
}

#[test]
fn reads_and_writes() {
    let d = node();
    let u = d.uri();
    let r1 = set(&u, "/a/b", "0", b"hello\n");
    assert!(r1 > 0);
    assert_eq!(dz(&u, &["get", "/a/b"]), exp("hello\n", "", 0));
    assert_eq!(dz(&u, &["stat", "/a/b"]), exp(format!("{r1} 6\n"), "", 0));
    assert_eq!(dz(&u, &["stat", "/a"]), exp("d 1\n", "", 0));
    assert_eq!(dz(&u, &["get", "/nope"]), exp("", "", 0));
    assert_eq!(
        dz(&u, &["stat", "/nope"]),
        exp("", "No such file or directory: /nope\n", 2)
    );
    assert_eq!(dz(&u, &["get", "/a"]), exp("", "Error: ISDIR\n", 2));
    // Binary bodies round-trip.
    let body = [0u8, 255, 10, 13, b'='];
    let rb = set(&u, "/bin", "-1", &body);
    assert_eq!(dz(&u, &["get", "/bin"]), exp(body, "", 0));
    assert_eq!(dz(&u, &["stat", "/bin"]), exp(format!("{rb} 5\n"), "", 0));
    // add: create only.
    let o = run(&u, &["add", "/a/b"], b"x");
    assert_eq!(o, exp("", "Error: REV_MISMATCH\n", 1));
    let ra = {
        let o = run(&u, &["add", "/new"], b"x");
        assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{o:?}");
        o.text().trim_end().parse::<i64>().unwrap()
    };
    assert_eq!(dz(&u, &["stat", "/new"]), exp(format!("{ra} 1\n"), "", 0));
    // CAS: the current rev works, an older one is a mismatch (exit 1).
    assert_eq!(
        run(&u, &["set", "/a/b", &(r1 - 1).to_string()], b"z"),
        exp("", "Error: REV_MISMATCH\n", 1)
    );
    let r2 = set(&u, "/a/b", &r1.to_string(), b"z");
    assert!(r2 > r1);
    // touch: bumps the rev, keeps the body; creates a missing file empty.
    assert_eq!(dz(&u, &["touch", "/a/b"]), exp("", "", 0));
    let o = dz(&u, &["stat", "/a/b"]);
    let (trev, tlen) = o
        .text()
        .trim_end()
        .split_once(' ')
        .map(|(a, b)| (a.parse::<i64>().unwrap(), b.to_owned()))
        .unwrap();
    assert!(trev > r2);
    assert_eq!(tlen, "1");
    assert_eq!(dz(&u, &["get", "/a/b"]), exp("z", "", 0));
    assert_eq!(dz(&u, &["touch", "/t"]), exp("", "", 0));
    assert_eq!(dz(&u, &["get", "/t"]), exp("", "", 0));
    assert!(dz(&u, &["stat", "/t"]).text().ends_with(" 0\n"));
    // del.
    assert_eq!(
        dz(&u, &["del", "/new", "1"]),
        exp("", "Error: REV_MISMATCH\n", 1)
    );
    assert_eq!(dz(&u, &["del", "/new", &ra.to_string()]), exp("", "", 0));
    assert_eq!(
        dz(&u, &["stat", "/new"]),
        exp("", "No such file or directory: /new\n", 2)
    );
    // Write errors.
    assert_eq!(
        run(&u, &["set", "/a_b", "-1"], b"x"),
        exp("", "Error: BAD_PATH\n", 2)
    );
    assert_eq!(
        run(&u, &["set", "/bin/x", "-1"], b"x"),
        exp("", "Error: NOTDIR\n", 2)
    );
    assert_eq!(
        run(&u, &["set", "/a", "-1"], b"x"),
        exp("", "Error: ISDIR\n", 2)
    );
    assert_eq!(dz(&u, &["del", "/a", "-1"]), exp("", "Error: ISDIR\n", 2));
    assert_eq!(
        run(&u, &["set", "/x", "abc"], b"x"),
        exp(
            "",
            "Error: strconv.ParseInt: parsing \"abc\": invalid syntax\n",
            2
        )
    );
}

#[test]
fn rev_self_nop_find_ls() {
    let d = node();
    let u = d.uri();
    assert_eq!(dz(&u, &["self"]), exp(d.id.as_bytes(), "", 0));
    let r = rev(&u);
    assert_eq!(dz(&u, &["nop"]), exp("", "", 0));
    assert!(rev(&u) > r, "a NOP takes a revision");
    set(&u, "/f/z", "-1", b"1");
    let old = set(&u, "/f/a/x", "-1", b"2");
    set(&u, "/f/a/y", "-1", b"3");
    assert_eq!(
        dz(&u, &["find", "/f"]),
        exp("/f\n/f/a\n/f/a/x\n/f/a/y\n/f/z\n", "", 0)
    );
    assert_eq!(
        dz(&u, &["find", "-r", &old.to_string(), "/f"]),
        exp("/f\n/f/a\n/f/a/x\n/f/z\n", "", 0)
    );
    assert_eq!(dz(&u, &["find", "/f/z"]), exp("/f/z\n", "", 0));
    assert_eq!(dz(&u, &["find", "/nope"]), exp("", "NOENT\n", 0));
    // The whole tree starts at / and holds the cluster's /ctl.
    let all = dz(&u, &["find", "/"]);
    assert_eq!(all.code, 0);
    assert!(all.text().starts_with("/\n/ctl\n"), "{}", all.text());
    assert!(
        all.text().contains(&format!("\n/ctl/node/{}\n", d.id)),
        "{}",
        all.text()
    );
    assert_eq!(dz(&u, &["ls", "/f"]), exp("a\nz\n", "", 0));
    assert_eq!(
        dz(&u, &["ls", "-r", &old.to_string(), "/f/a"]),
        exp("x\n", "", 0)
    );
    assert_eq!(dz(&u, &["ls", "/nope"]), exp("", "Error: NOENT\n", 2));
    assert_eq!(dz(&u, &["ls", "/f/z"]), exp("", "Error: NOTDIR\n", 2));
    assert_eq!(dz(&u, &["get", "/ctl/name"]), exp("local", "", 0));
}

#[test]
fn wait_and_watch() {
    let d = node();
    let u = d.uri();
    let r1 = set(&u, "/w/x", "-1", b"hello");
    assert_eq!(
        dz(&u, &["wait", "-r", &r1.to_string(), "/w/**"]),
        exp(format!("/w/x {r1} set 5\nhello\n"), "", 0)
    );
    assert_eq!(dz(&u, &["del", "/w/x", "-1"]), exp("", "", 0));
    let o = dz(&u, &["wait", "-r", &(r1 + 1).to_string(), "/w/x"]);
    let rd: i64 = o.text().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(o, exp(format!("/w/x {rd} del 0\n\n"), "", 0));
    assert_eq!(
        dz(
            &u,
            &["wait", "-t", "300ms", "-r", &(rd + 1).to_string(), "/w/**"]
        ),
        exp("", "Error: wait timeout\n", 2)
    );
    // A NOP is an event at "/" with no set/del word (two spaces) and an empty body.
    assert_eq!(dz(&u, &["nop"]), exp("", "", 0));
    let o = dz(&u, &["wait", "-r", &(rd + 1).to_string(), "/**"]);
    let rn: i64 = o.text().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(o, exp(format!("/ {rn}  0\n\n"), "", 0));
    assert_eq!(
        dz(&u, &["wait", "/w/[x"]),
        exp("", "Error: OTHER: invalid glob pattern: /w/[x\n", 2)
    );
    // watch: records as they happen, forever.
    let start = rev(&u) + 1;
    let mut child = cmd(&u, &["watch", "-r", &start.to_string(), "/w/**"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = set(&u, "/w/a", "-1", b"one");
    set(&u, "/other", "-1", b"ignored");
    let b = set(&u, "/w/b/c", "-1", b"two\nlines");
    let expected = format!("/w/a {a} set 3\none\n/w/b/c {b} set 9\ntwo\nlines\n");
    let mut out = support::Lines::new(child.stdout.take().unwrap());
    assert_eq!(
        String::from_utf8(out.take(expected.len())).unwrap(),
        expected
    );
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn connection_errors_and_usage() {
    let mut d = node();
    let u = d.uri();
    let o = dz(&u, &["get"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (127, "get: wrong number of arguments\n")
    );
    assert_eq!(dz(&u, &["frob"]).code, 127);
    assert_eq!(
        dz("doozer:?x=1", &["rev"]),
        exp("", "Error: invalid uri\n", 2)
    );
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_eq!(
        dz(&u, &["rev"]),
        exp(
            "",
            &format!("Error: dial tcp {}: connection refused\n", d.addr),
            2
        )
    );
}

#[test]
fn rw_secret_makes_anonymous_clients_read_only() {
    // doozer-protocol.md §2.8: with only DOOZER_RWSECRET set, "" equals the unset RO
    // secret, so anonymous clients may read but not write.
    let d = Doozerd::start(&[], &[("DOOZER_RWSECRET", "s3cret")]);
    let rw = format!("{}&sk=s3cret", d.uri());
    d.wait_writable(&rw);
    let anon = d.uri();
    assert_eq!(dz(&anon, &["get", "/ctl/name"]), exp("local", "", 0));
    assert_eq!(
        run(&anon, &["set", "/x", "-1"], b"x"),
        exp("", "Error: OTHER: permission denied\n", 2)
    );
    set(&rw, "/x", "-1", b"x");
    assert_eq!(
        dz(&format!("{}&sk=wrong", d.uri()), &["get", "/x"]),
        exp("", "Error: OTHER: permission denied\n", 2)
    );
}

#[test]
fn json_output() {
    let d = node();
    let u = d.uri();
    let r = set(&u, "/j", "-1", b"v");
    assert_eq!(
        dz(&u, &["-json", "get", "/j"]),
        exp(
            format!("{{\"path\":\"/j\",\"rev\":{r},\"value\":\"v\"}}\n"),
            "",
            0
        )
    );
    assert_eq!(
        dz(&u, &["--json", "stat", "/j"]),
        exp(
            format!("{{\"dir\":false,\"len\":1,\"path\":\"/j\",\"rev\":{r}}}\n"),
            "",
            0
        )
    );
    assert_eq!(
        dz(&u, &["--json", "wait", "-r", &r.to_string(), "/j"]),
        exp(
            format!("{{\"kind\":\"set\",\"len\":1,\"path\":\"/j\",\"rev\":{r},\"value\":\"v\"}}\n"),
            "",
            0
        )
    );
}

#[test]
fn snapshot_restore_into_a_new_cluster_keeps_revisions() {
    let src = node();
    let u = src.uri();
    let a = set(&u, "/app/a", "-1", b"1");
    set(&u, "/app/gone", "-1", b"x");
    let c = set(&u, "/app/b/c", "-1", b"2\n");
    assert_eq!(dz(&u, &["del", "/app/gone", "-1"]).code, 0);
    let snap_rev = rev(&u);
    set(&u, "/app/later", "-1", b"not in the snapshot");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.jsonl");
    let file = file.to_str().unwrap();
    let o = dz(&u, &["-r", &snap_rev.to_string(), "snapshot", "save", file]);
    assert_eq!(o.code, 0, "{o:?}");

    let dst = node();
    let v = dst.uri();
    let o = dz(&v, &["snapshot", "restore", file]);
    assert_eq!(o.code, 0, "{o:?}\ntarget log:\n{}", dst.log_text());
    assert!(
        o.stderr
            .starts_with("restored 2 files at their revisions (0 already present)"),
        "{}",
        o.stderr
    );
    assert_eq!(dz(&v, &["stat", "/app/a"]), exp(format!("{a} 1\n"), "", 0));
    assert_eq!(
        dz(&v, &["stat", "/app/b/c"]),
        exp(format!("{c} 2\n"), "", 0)
    );
    assert_eq!(dz(&v, &["get", "/app/b/c"]), exp("2\n", "", 0));
    assert_eq!(dz(&v, &["get", "/app/later"]), exp("", "", 0));
    assert!(rev(&v) >= snap_rev);
}

#[test]
fn bench_against_a_real_node() {
    let d = node();
    let o = dz(
        &d.uri(),
        &[
            "bench", "-clients", "2", "-ops", "40", "-keys", "5", "mixed",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let text = o.text();
    let row: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["mixed", "2", "100", "40", "0"], "{text}");
}

#[test]
fn three_nodes_fail_over() {
    // A client with every address keeps working when the node it uses dies.
    let seed = node();
    let n1 = Doozerd::start(&["-a", &seed.addr], &[]);
    let n2 = Doozerd::start(&["-a", &seed.addr], &[]);
    let all = format!("doozer:?ca={}&ca={}&ca={}", seed.addr, n1.addr, n2.addr);
    n1.wait_writable(&format!("doozer:?ca={}", n1.addr));
    n2.wait_writable(&format!("doozer:?ca={}", n2.addr));
    settle(&seed, &[&seed, &n1, &n2]);
    let r = set(&all, "/ha", "-1", b"1");
    for n in [&n1, &n2] {
        assert_eq!(
            dz(&format!("doozer:?ca={}", n.addr), &["stat", "/ha"]),
            exp(format!("{r} 1\n"), "", 0)
        );
    }
    drop(n2);
    let r2 = set(&all, "/ha", &r.to_string(), b"22");
    assert_eq!(dz(&all, &["get", "/ha"]), exp("22", "", 0));
    assert_eq!(dz(&all, &["stat", "/ha"]), exp(format!("{r2} 2\n"), "", 0));
}

/// Waits until every node in `nodes` holds a `/ctl/cal` slot, then sends 60 NOPs one
/// after another. A voter takes part only `alpha` (50) slots after its claim; the NOPs take
/// the cluster past that window whether or not the leader fills it by itself. After this,
/// the cluster survives the loss of any one of three voters.
fn settle(seed: &Doozerd, nodes: &[&Doozerd]) {
    let u = seed.uri();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cals: Vec<String> = (0..3)
            .map(|i| dz(&u, &["get", &format!("/ctl/cal/{i}")]).text())
            .collect();
        if nodes.iter().all(|n| cals.contains(&n.id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node became a voter: /ctl/cal = {cals:?}; seed log:\n{}",
            seed.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..60 {
        assert_eq!(dz(&u, &["nop"]), exp("", "", 0));
    }
}

/// A free 127.0.0.1 port (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn watch_fails_over_without_gap_or_repeat() {
    let seed = node();
    let n1 = Doozerd::start(&["-a", &seed.addr], &[]);
    n1.wait_writable(&format!("doozer:?ca={}", n1.addr));
    // n2's address is chosen now but nothing listens there yet, so the watch can only
    // connect to n1.
    let n2_addr = format!("127.0.0.1:{}", free_port());
    let pair = format!("doozer:?ca={}&ca={n2_addr}", n1.addr);
    let start = rev(&seed.uri()) + 1;
    let mut child = cmd(&pair, &["watch", "-r", &start.to_string(), "/fo/**"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = support::Lines::new(child.stdout.take().unwrap());
    let a = set(&seed.uri(), "/fo/a", "-1", b"1");
    assert_eq!(lines.next_line(), format!("/fo/a {a} set 1"));
    assert_eq!(lines.next_line(), "1");
    // n2 joins at that address; then n1, the watch's node, dies. Writes go on with a
    // quorum of two, and the watch resumes on n2 exactly after its last record.
    let dir = tempfile::tempdir().unwrap();
    let n2 = Doozerd::start_in(dir, &["-l", &n2_addr], &["-a", &seed.addr], &[]);
    n2.wait_writable(&format!("doozer:?ca={}", n2.addr));
    settle(&seed, &[&seed, &n1, &n2]);
    drop(n1);
    // If n1 led, the others elect a new leader first; NOPs (events at "/", which the
    // watch does not match) tell when writes go through again.
    seed.wait_writable(&seed.uri());
    let b = set(&seed.uri(), "/fo/b", "-1", b"2");
    let c = set(&seed.uri(), "/fo/c", "-1", b"3");
    assert_eq!(
        String::from_utf8(lines.take(format!("/fo/b {b} set 1\n2\n/fo/c {c} set 1\n3\n").len()))
            .unwrap(),
        format!("/fo/b {b} set 1\n2\n/fo/c {c} set 1\n3\n")
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn cluster_keeps_a_leader_after_a_restart_and_a_death() {
    // A voter restarted on its data directory (no flags) comes back with its id, address
    // and slot, so after it is in force again the cluster survives another voter's death.
    // (Without `settle`, a death inside the alpha window after a claim can leave the old
    // configuration without a quorum: "OTHER: no leader". That is the alpha rule.)
    let seed = node();
    let n1 = Doozerd::start(&["-a", &seed.addr], &[]);
    let mut n2 = Doozerd::start(&["-a", &seed.addr], &[]);
    n1.wait_writable(&format!("doozer:?ca={}", n1.addr));
    n2.wait_writable(&format!("doozer:?ca={}", n2.addr));
    settle(&seed, &[&seed, &n1, &n2]);
    n2.kill();
    set(&seed.uri(), "/r/a", "-1", b"1");
    let n2 = n2.restart();
    n2.wait_writable(&format!("doozer:?ca={}", n2.addr));
    settle(&seed, &[&seed, &n1, &n2]);
    drop(n1);
    seed.wait_writable(&seed.uri());
    set(&seed.uri(), "/r/b", "-1", b"2");
}
