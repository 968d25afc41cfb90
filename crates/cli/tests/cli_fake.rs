//! The real `doozer` binary against the in-memory fake server of doozer-client: exact
//! stdout, stderr and exit status of every command, errors included.

mod support;

use std::process::Stdio;

use doozer_client::fake::{FakeCluster, FakeServer};
use support::{cmd, dz, exp, run, DOOZER};

/// A fake cluster served by one fake node, on a runtime of its own that keeps serving
/// while the test thread waits for the child process.
struct Fake {
    cluster: FakeCluster,
    server: FakeServer,
    _rt: tokio::runtime::Runtime,
}

impl Fake {
    fn new() -> Fake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = FakeCluster::new();
        let server = rt.block_on(cluster.start());
        Fake {
            cluster,
            server,
            _rt: rt,
        }
    }

    fn uri(&self) -> String {
        self.server.uri()
    }

    fn set(&self, path: &str, value: &str) -> i64 {
        self.cluster.set(path, -1, value.as_bytes()).unwrap()
    }
}

fn usage_head() -> String {
    format!("Use: {DOOZER} [options] <command> [options] [args]\n")
}

#[test]
fn set_get_add_del_touch() {
    let f = Fake::new();
    let u = f.uri();
    let r0 = f.cluster.rev();
    // set reads all of stdin; the body keeps echo's newline.
    assert_eq!(
        run(&u, &["set", "/a/b", "0"], b"hello\n"),
        exp(format!("{}\n", r0 + 1), "", 0)
    );
    assert_eq!(dz(&u, &["get", "/a/b"]), exp("hello\n", "", 0));
    // Missing file: nothing, success. Directory: ISDIR.
    assert_eq!(dz(&u, &["get", "/nope"]), exp("", "", 0));
    assert_eq!(dz(&u, &["get", "/a"]), exp("", "Error: ISDIR\n", 2));
    // Binary bodies round-trip byte for byte.
    let body = [0u8, 255, 10, 13, 61];
    assert_eq!(
        run(&u, &["set", "/bin", "-1"], &body),
        exp(format!("{}\n", r0 + 2), "", 0)
    );
    assert_eq!(dz(&u, &["get", "/bin"]), exp(body, "", 0));
    // add = set <path> 0: create only; an existing file is a rev mismatch, exit 1.
    assert_eq!(
        run(&u, &["add", "/new"], b"x"),
        exp(format!("{}\n", r0 + 3), "", 0)
    );
    assert_eq!(
        run(&u, &["add", "/new"], b"y"),
        exp("", "Error: REV_MISMATCH\n", 1)
    );
    // A stale rev is a mismatch too; a current one works.
    assert_eq!(
        run(&u, &["set", "/a/b", &(r0).to_string()], b"z"),
        exp("", "Error: REV_MISMATCH\n", 1)
    );
    let cur = f.cluster.rev();
    assert_eq!(
        run(&u, &["set", "/a/b", &(r0 + 1).to_string()], b"z"),
        exp(format!("{}\n", cur + 1), "", 0)
    );
    // touch bumps the rev and keeps the body; on a missing file it creates an empty one.
    let cur = f.cluster.rev();
    assert_eq!(dz(&u, &["touch", "/a/b"]), exp("", "", 0));
    assert_eq!(
        dz(&u, &["stat", "/a/b"]),
        exp(format!("{} 1\n", cur + 1), "", 0)
    );
    assert_eq!(dz(&u, &["get", "/a/b"]), exp("z", "", 0));
    assert_eq!(dz(&u, &["touch", "/t"]), exp("", "", 0));
    assert_eq!(
        dz(&u, &["stat", "/t"]),
        exp(format!("{} 0\n", cur + 2), "", 0)
    );
    // del prints nothing; with a stale rev it is a mismatch.
    assert_eq!(
        dz(&u, &["del", "/new", "1"]),
        exp("", "Error: REV_MISMATCH\n", 1)
    );
    assert_eq!(dz(&u, &["del", "/new", "-1"]), exp("", "", 0));
    assert_eq!(dz(&u, &["get", "/new"]), exp("", "", 0));
}

#[test]
fn write_errors() {
    let f = Fake::new();
    let u = f.uri();
    f.set("/file", "x");
    assert_eq!(
        run(&u, &["set", "/a_b", "-1"], b"x"),
        exp("", "Error: BAD_PATH\n", 2)
    );
    assert_eq!(
        run(&u, &["set", "/file/sub", "-1"], b"x"),
        exp("", "Error: NOTDIR\n", 2)
    );
    assert_eq!(
        run(&u, &["set", "/ctl", "-1"], b"x"),
        exp("", "Error: ISDIR\n", 2)
    );
    assert_eq!(dz(&u, &["del", "/ctl", "-1"]), exp("", "Error: ISDIR\n", 2));
    // The rev argument is parsed like Go's strconv, before anything is sent.
    let before = f.cluster.rev();
    assert_eq!(
        run(&u, &["set", "/x", "abc"], b"x"),
        exp(
            "",
            "Error: strconv.ParseInt: parsing \"abc\": invalid syntax\n",
            2
        )
    );
    assert_eq!(
        dz(&u, &["del", "/x", "1e3"]),
        exp(
            "",
            "Error: strconv.ParseInt: parsing \"1e3\": invalid syntax\n",
            2
        )
    );
    assert_eq!(f.cluster.rev(), before, "nothing was written");
}

#[test]
fn stat_rev_self_nop() {
    let f = Fake::new();
    let u = f.uri();
    let r1 = f.set("/d/one", "12345");
    f.set("/d/two", "");
    assert_eq!(dz(&u, &["stat", "/d/one"]), exp(format!("{r1} 5\n"), "", 0));
    assert_eq!(dz(&u, &["stat", "/d"]), exp("d 2\n", "", 0));
    assert_eq!(dz(&u, &["stat", "/"]), exp("d 2\n", "", 0));
    assert_eq!(
        dz(&u, &["stat", "/nope"]),
        exp("", "No such file or directory: /nope\n", 2)
    );
    let rev = f.cluster.rev();
    assert_eq!(dz(&u, &["rev"]), exp(format!("{rev}\n"), "", 0));
    // SELF: the node id, no newline.
    assert_eq!(dz(&u, &["self"]), exp("FAKEFAKEFAKEFAKE", "", 0));
    // NOP: no output, one revision.
    assert_eq!(dz(&u, &["nop"]), exp("", "", 0));
    assert_eq!(f.cluster.rev(), rev + 1);
}

#[test]
fn find_and_ls() {
    let f = Fake::new();
    let u = f.uri();
    f.set("/b/z", "1");
    let old = f.set("/b/a/x", "2");
    f.set("/a", "3");
    f.set("/b/a/y", "4");
    let all = "/\n/a\n/b\n/b/a\n/b/a/x\n/b/a/y\n/b/z\n/ctl\n/ctl/name\n";
    assert_eq!(dz(&u, &["find", "/"]), exp(all, "", 0));
    assert_eq!(
        dz(&u, &["find", "/b"]),
        exp("/b\n/b/a\n/b/a/x\n/b/a/y\n/b/z\n", "", 0)
    );
    assert_eq!(dz(&u, &["find", "/a"]), exp("/a\n", "", 0));
    // -r: the tree as it was, before or after the command name.
    let then = "/\n/b\n/b/a\n/b/a/x\n/b/z\n/ctl\n/ctl/name\n";
    assert_eq!(
        dz(&u, &["-r", &old.to_string(), "find", "/"]),
        exp(then, "", 0)
    );
    assert_eq!(
        dz(&u, &["find", "-r", &old.to_string(), "/"]),
        exp(then, "", 0)
    );
    // A missing root: NOENT on stderr, and still exit 0, as the original.
    assert_eq!(dz(&u, &["find", "/nope"]), exp("", "NOENT\n", 0));
    // ls (new): entry names, sorted.
    assert_eq!(dz(&u, &["ls", "/"]), exp("a\nb\nctl\n", "", 0));
    assert_eq!(dz(&u, &["ls", "/b"]), exp("a\nz\n", "", 0));
    assert_eq!(
        dz(&u, &["ls", "-r", &old.to_string(), "/b/a"]),
        exp("x\n", "", 0)
    );
    assert_eq!(dz(&u, &["ls", "/nope"]), exp("", "Error: NOENT\n", 2));
    assert_eq!(dz(&u, &["ls", "/a"]), exp("", "Error: NOTDIR\n", 2));
}

#[test]
fn wait_prints_one_record() {
    let f = Fake::new();
    let u = f.uri();
    let r1 = f.set("/w/x", "hello");
    let r2 = f.cluster.set("/w/x", -1, b"").unwrap();
    // Without -r: from the current rev, so the latest change (if it matches) comes back.
    assert_eq!(
        dz(&u, &["wait", "/w/*"]),
        exp(format!("/w/x {r2} set 0\n\n"), "", 0)
    );
    assert_eq!(
        dz(&u, &["wait", "-r", &r1.to_string(), "/w/**"]),
        exp(format!("/w/x {r1} set 5\nhello\n"), "", 0)
    );
    // A delete, and a nop (path "/", empty kind: two spaces).
    let c = doozer_client_del(&f, "/w/x");
    assert_eq!(
        dz(&u, &["-r", &c.to_string(), "wait", "/w/x"]),
        exp(format!("/w/x {c} del 0\n\n"), "", 0)
    );
    assert_eq!(dz(&u, &["nop"]).code, 0);
    let n = f.cluster.rev();
    assert_eq!(
        dz(&u, &["wait", "-r", &n.to_string(), "/**"]),
        exp(format!("/ {n}  0\n\n"), "", 0)
    );
    // -t: a timeout is an error.
    assert_eq!(
        dz(
            &u,
            &["wait", "-t", "200ms", "-r", &(n + 1).to_string(), "/w/**"]
        ),
        exp("", "Error: wait timeout\n", 2)
    );
    // Server errors.
    assert_eq!(
        dz(&u, &["wait", "/w/[x"]),
        exp("", "Error: OTHER: invalid glob pattern: /w/[x\n", 2)
    );
    f.cluster.forget_before(n);
    assert_eq!(
        dz(&u, &["wait", "-r", "1", "/**"]),
        exp("", "Error: TOO_LATE\n", 2)
    );
}

/// Deletes `path` with the CLI (the fake offers no delete of its own); returns the rev.
fn doozer_client_del(f: &Fake, path: &str) -> i64 {
    assert_eq!(dz(&f.uri(), &["del", path, "-1"]), exp("", "", 0));
    f.cluster.rev()
}

#[test]
fn watch_streams_records_until_killed() {
    let f = Fake::new();
    let u = f.uri();
    let start = f.cluster.rev() + 1;
    let mut child = cmd(&u, &["watch", "-r", &start.to_string(), "/w/**"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r1 = f.set("/w/a", "one");
    f.set("/other", "ignored");
    let r2 = f.set("/w/b/c", "two\nlines");
    let expected = format!("/w/a {r1} set 3\none\n/w/b/c {r2} set 9\ntwo\nlines\n");
    let mut out = support::Lines::new(child.stdout.take().unwrap());
    assert_eq!(
        String::from_utf8(out.take(expected.len())).unwrap(),
        expected
    );
    // Still running: watch never ends by itself.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn watch_survives_a_lost_connection() {
    // The watch keeps its place across reconnections: one record per change, none lost
    // and none repeated.
    let f = Fake::new();
    let second = f._rt.block_on(f.cluster.start());
    let uri = format!("doozer:?ca={}&ca={}", f.server.addr(), second.addr());
    let start = f.cluster.rev() + 1;
    let mut child = cmd(&uri, &["watch", "-r", &start.to_string(), "/w/**"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = support::Lines::new(child.stdout.take().unwrap());
    let r1 = f.set("/w/a", "1");
    assert_eq!(lines.next_line(), format!("/w/a {r1} set 1"));
    assert_eq!(lines.next_line(), "1");
    // The next WAIT to arrive (on whichever node the watch is) loses its connection.
    f.cluster
        .hooks(|h| h.drop_before = Some(doozer_proto::msg::Verb::Wait));
    let r2 = f.set("/w/b", "2");
    let r3 = f.set("/w/c", "3");
    let got: Vec<String> = (0..4).map(|_| lines.next_line()).collect();
    assert_eq!(
        got,
        [
            format!("/w/b {r2} set 1"),
            "2".into(),
            format!("/w/c {r3} set 1"),
            "3".into()
        ]
    );
    // r3 cannot have been delivered before the dropped WAIT was resent.
    f.cluster.hooks(|h| assert_eq!(h.drop_before, None));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn help_usage_and_exit_127() {
    let f = Fake::new();
    let u = f.uri();
    assert_eq!(
        dz(&u, &["help", "get"]),
        exp(
            format!("Use: {DOOZER} [options] get [options] <path>\n\nPrints the body of the file at <path>.\n"),
            "",
            0
        )
    );
    let del = dz(&u, &["help", "del"]);
    assert!(del.text().starts_with(&format!(
        "Use: {DOOZER} [options] del [options] <path> <rev>\n\nDeletes the file at <path>.\n"
    )));
    // -h after the command is the same help.
    assert_eq!(dz(&u, &["get", "-h"]), dz(&u, &["help", "get"]));

    // No command: message, usage on stderr, 127.
    let o = dz(&u, &[]);
    assert_eq!((o.code, o.stdout.len()), (127, 0));
    assert!(o
        .stderr
        .starts_with(&format!("{DOOZER}: missing command\n{}", usage_head())));
    assert!(o.stderr.contains("\n  del <path> <rev>"), "{}", o.stderr);
    assert!(o.stderr.contains(" - delete a file\n"), "{}", o.stderr);
    assert!(o.stderr.contains("\n  DOOZER_URI - "), "{}", o.stderr);
    // Unknown command.
    let o = dz(&u, &["frob"]);
    assert_eq!(o.code, 127);
    assert!(o
        .stderr
        .starts_with(&format!("Unknown command: frob\n{}", usage_head())));
    // Wrong number of arguments: message on stderr, the command's help on stdout.
    let o = dz(&u, &["get"]);
    assert_eq!(o.code, 127);
    assert_eq!(o.stderr, "get: wrong number of arguments\n");
    assert_eq!(o.stdout, dz(&u, &["help", "get"]).stdout);
    assert_eq!(dz(&u, &["rev", "extra"]).code, 127);
    // Flags after the arguments are arguments (Go's flag stops at the first non-flag).
    assert_eq!(dz(&u, &["get", "/x", "-r", "3"]).code, 127);
    // -h: usage on stderr, success. -v: the original's version.
    let o = dz(&u, &["-h"]);
    assert_eq!((o.code, o.stdout.len()), (0, 0));
    assert!(o.stderr.starts_with(&usage_head()));
    assert_eq!(dz(&u, &["-v"]), exp("doozer 0.9.0\n", "", 0));
    // Flag errors: Go's words, usage, exit 2.
    let o = dz(&u, &["-x", "rev"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.starts_with(&format!(
        "flag provided but not defined: -x\n{}",
        usage_head()
    )));
    let o = dz(&u, &["wait", "-t", "soon", "/x"]);
    assert_eq!(o.code, 2);
    assert!(o
        .stderr
        .starts_with("invalid value \"soon\" for flag -t: parse error\n"));
}

#[test]
fn uri_flag_env_and_connection_errors() {
    let f = Fake::new();
    let rev = f.cluster.rev();
    // -a overrides DOOZER_URI.
    assert_eq!(
        dz("doozer:?ca=127.0.0.1:1", &["-a", &f.uri(), "rev"]),
        exp(format!("{rev}\n"), "", 0)
    );
    assert_eq!(dz(&f.uri(), &["rev"]), exp(format!("{rev}\n"), "", 0));
    assert_eq!(
        dz("doozer:?x=1", &["rev"]),
        exp("", "Error: invalid uri\n", 2)
    );
    assert_eq!(dz("http://x", &["rev"]), exp("", "Error: invalid uri\n", 2));
    // Nobody listening: Go's dial error text.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_eq!(
        dz(&format!("doozer:?ca=127.0.0.1:{port}"), &["rev"]),
        exp(
            "",
            &format!("Error: dial tcp 127.0.0.1:{port}: connection refused\n"),
            2
        )
    );
}

#[test]
fn secrets() {
    let f = Fake::new();
    f.cluster.set_secret("s3cret");
    let u = f.uri();
    assert_eq!(
        dz(&u, &["get", "/ctl/name"]),
        exp("", "Error: OTHER: permission denied\n", 2)
    );
    let rev = f.cluster.rev();
    // REV needs no access.
    assert_eq!(dz(&u, &["rev"]), exp(format!("{rev}\n"), "", 0));
    assert_eq!(
        dz(&format!("{u}&sk=s3cret"), &["get", "/ctl/name"]),
        exp("fake", "", 0)
    );
    assert_eq!(
        dz(&format!("{u}&sk=wrong"), &["get", "/ctl/name"]),
        exp("", "Error: OTHER: permission denied\n", 2)
    );
}

#[test]
fn json_output() {
    let f = Fake::new();
    let u = f.uri();
    let r = f.set("/j", "v");
    f.cluster.set("/bin", -1, &[0xff, 0]).unwrap();
    assert_eq!(
        dz(&u, &["-json", "get", "/j"]),
        exp(
            format!("{{\"path\":\"/j\",\"rev\":{r},\"value\":\"v\"}}\n"),
            "",
            0
        )
    );
    let b = f.cluster.rev();
    assert_eq!(
        dz(&u, &["--json", "get", "/bin"]),
        exp(
            format!("{{\"path\":\"/bin\",\"rev\":{b},\"value_base64\":\"/wA=\"}}\n"),
            "",
            0
        )
    );
    assert_eq!(
        dz(&u, &["get", "-json", "/j"]).stdout,
        dz(&u, &["-json", "get", "/j"]).stdout
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
        dz(&u, &["--json", "rev"]),
        exp(format!("{{\"rev\":{b}}}\n"), "", 0)
    );
    assert_eq!(
        run(&u, &["--json", "set", "/j", "-1"], b"w"),
        exp(format!("{{\"rev\":{}}}\n", b + 1), "", 0)
    );
    assert_eq!(
        dz(&u, &["--json", "ls", "/"]),
        exp(
            "{\"entries\":[\"bin\",\"ctl\",\"j\"],\"path\":\"/\"}\n",
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
    // Errors stay on stderr, in the usual form.
    assert_eq!(
        dz(&u, &["--json", "get", "/"]),
        exp("", "Error: ISDIR\n", 2)
    );
}

#[test]
fn snapshot_save_then_restore_keeps_every_revision() {
    let src = Fake::new();
    let u = src.uri();
    // Files with gaps between their revisions, one deleted, one overwritten.
    src.set("/app/a", "1");
    assert_eq!(dz(&u, &["nop"]).code, 0);
    src.set("/app/gone", "x");
    src.set("/app/b/c", "2\n");
    assert_eq!(dz(&u, &["del", "/app/gone", "-1"]).code, 0);
    src.set("/app/a", "1b");
    src.cluster.set("/bin", -1, &[0, 1, 255]).unwrap();
    let snap_rev = src.cluster.rev();
    src.set("/app/later", "not in the snapshot");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.jsonl");
    let file = file.to_str().unwrap();
    let o = dz(&u, &["-r", &snap_rev.to_string(), "snapshot", "save", file]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        format!("saved 4 files at rev {snap_rev} to {file}\n")
    );
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("{{\"doozer_snapshot\":1,\"files\":4,\"rev\":{snap_rev}}}")
    );
    assert_eq!(lines.len(), 5);
    // "-" writes the same to stdout.
    let o = dz(&u, &["-r", &snap_rev.to_string(), "snapshot", "save", "-"]);
    assert_eq!(o.text(), text);

    // A new cluster gets every file at its own revision, and the snapshot's revision.
    let dst = Fake::new();
    let o = dz(&dst.uri(), &["snapshot", "restore", file]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        format!(
            "restored 3 files at their revisions (0 already present); \
             the cluster is at rev {snap_rev} (snapshot rev {snap_rev}); /ctl skipped\n"
        )
    );
    assert_eq!(dst.cluster.rev(), snap_rev);
    for p in ["/app/a", "/app/b/c", "/bin"] {
        assert_eq!(
            dz(&dst.uri(), &["stat", p]),
            // Nothing wrote these paths after snap_rev, so their stat now is their stat then.
            dz(&u, &["stat", p]),
            "{p}"
        );
        assert_eq!(dz(&dst.uri(), &["get", p]), dz(&u, &["get", p]), "{p}");
    }
    assert_eq!(dz(&dst.uri(), &["get", "/app/gone"]), exp("", "", 0));
    // Running it again finds everything in place.
    let o = dz(&dst.uri(), &["snapshot", "restore", file]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o
        .stderr
        .starts_with("restored 0 files at their revisions (3 already present)"));

    // A cluster already past the first file's revision cannot keep them: a clear error.
    let busy = Fake::new();
    for i in 0..5 {
        busy.set(&format!("/x{i}"), "x");
    }
    let o = dz(&busy.uri(), &["snapshot", "restore", file]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .starts_with("Error: snapshot restore: cannot keep revisions: the cluster is at rev"),
        "{}",
        o.stderr
    );
    // import works anywhere, with new revisions.
    let o = dz(&busy.uri(), &["snapshot", "import", file]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(dz(&busy.uri(), &["get", "/app/b/c"]), exp("2\n", "", 0));

    // A damaged file is refused before anything is written.
    std::fs::write(file, &text[..text.len() - 10]).unwrap();
    let before = busy.cluster.rev();
    let o = dz(&busy.uri(), &["snapshot", "import", file]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .starts_with(&format!("Error: snapshot: {file}:5: ")),
        "{}",
        o.stderr
    );
    assert_eq!(busy.cluster.rev(), before);
    assert_eq!(
        dz(&busy.uri(), &["snapshot", "frob", file]),
        exp(
            "",
            "Error: snapshot: unknown action \"frob\" (want save, restore or import)\n",
            2
        )
    );
}

#[test]
fn bench_runs_and_reports_percentiles() {
    let f = Fake::new();
    for mode in ["set", "get", "mixed", "watch"] {
        let o = dz(
            &f.uri(),
            &[
                "bench",
                "-clients",
                "3",
                "-ops",
                "60",
                "-keys",
                "10",
                "-value-size",
                "16",
                mode,
            ],
        );
        assert_eq!(o.code, 0, "{mode}: {}", o.stderr);
        let text = o.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("workload clients  bytes"), "{text}");
        assert!(
            lines[1].ends_with("p50      p90      p99    p99.9      max"),
            "{text}"
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&row[..5], [mode, "3", "16", "60", "0"], "{text}");
        if mode == "watch" {
            // Three watchers each see all 60 writes.
            assert!(
                lines[3].starts_with("180 deliveries to 3 watchers"),
                "{text}"
            );
        }
    }
    let o = dz(&f.uri(), &["bench", "-clients", "0", "set"]);
    assert_eq!(
        o,
        exp("", "Error: bench: -clients must be positive, got 0\n", 2)
    );
    let o = dz(&f.uri(), &["bench", "frob"]);
    assert_eq!(
        o,
        exp(
            "",
            "Error: bench: unknown workload \"frob\" (want set, get, mixed or watch)\n",
            2
        )
    );
}

#[test]
fn boot_uri_finds_the_cluster_by_name() {
    // -b names a DzNS cluster whose /ctl/ns/<cn>/* hold the addresses of cluster <cn>.
    let target = Fake::new();
    target.set("/where", "target");
    let dzns = Fake::new();
    dzns.set("/ctl/ns/prod/NODEA", &target.server.addr());
    assert_eq!(
        dz("doozer:?cn=prod", &["-b", &dzns.uri(), "get", "/where"]),
        exp("target", "", 0)
    );
    // DOOZER_BOOT_URI is the default for -b.
    let o = support::cmd("doozer:?cn=prod", &["get", "/where"])
        .env("DOOZER_BOOT_URI", dzns.uri())
        .output()
        .unwrap();
    assert_eq!((o.status.code(), &o.stdout[..]), (Some(0), &b"target"[..]));
    assert_eq!(
        dz("doozer:?cn=nope", &["-b", &dzns.uri(), "get", "/where"]),
        exp("", "Error: NOENT\n", 2)
    );
}

#[test]
fn tls_flags() {
    let dir = tempfile::tempdir().unwrap();
    let certs = doozer_client::fake::write_test_certs(dir.path()).unwrap();
    let f = Fake::new();
    let tls = f
        ._rt
        .block_on(
            f.cluster
                .start_tls(&certs.server_cert, &certs.server_key, Some(&certs.ca)),
        )
        .unwrap();
    let r = f.set("/t", "over tls");
    let (ca, cert, key) = (
        certs.ca.to_str().unwrap(),
        certs.client_cert.to_str().unwrap(),
        certs.client_key.to_str().unwrap(),
    );
    // Single- and double-dash spellings, before or after the command.
    assert_eq!(
        dz(
            &tls.uri(),
            &[
                "-tls-ca",
                ca,
                "-tls-cert",
                cert,
                "-tls-key",
                key,
                "get",
                "/t"
            ]
        ),
        exp("over tls", "", 0)
    );
    assert_eq!(
        dz(
            &tls.uri(),
            &[
                "stat",
                "--tls-ca",
                ca,
                "--tls-cert",
                cert,
                &format!("--tls-key={key}"),
                "/t"
            ]
        ),
        exp(format!("{r} 8\n"), "", 0)
    );
    // A certificate file that does not exist.
    assert_eq!(
        dz(&tls.uri(), &["-tls-ca", "/nonexistent.pem", "rev"]),
        exp(
            "",
            "Error: tls: /nonexistent.pem: No such file or directory (os error 2)\n",
            2
        )
    );
    assert_eq!(
        dz(&tls.uri(), &["-tls-cert", cert, "rev"]),
        exp("", "Error: tls: -tls-cert and -tls-key need -tls-ca\n", 2)
    );
}
