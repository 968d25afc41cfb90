//! The read-only web view (`-w`): a node started in-process with `NodeConfig::web`, written
//! to through the Doozer client, read over plain HTTP/1.1 (a few lines on a TcpStream, no
//! HTTP client crate); and `doozerd` processes for the flag itself and its default.

mod cluster_support;

use std::net::SocketAddr;
use std::time::Duration;

use doozerd::config::WebView;
use doozerd::{Node, NodeConfig, NodeHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every wait on the node, so a broken server fails the test instead of hanging it.
const WITHIN: Duration = Duration::from_secs(20);

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on its own connection (`Connection: close`, so the body ends at EOF).
async fn request(addr: SocketAddr, method: &str, target: &str) -> Answer {
    let io = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(WITHIN, io).await.expect("HTTP answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("end of headers");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, target: &str) -> Answer {
    request(addr, "GET", target).await
}

/// An open `/v1/events` stream.
struct Events {
    s: TcpStream,
    buf: String,
}

impl Events {
    /// Opens the stream and waits for the response headers: from then on the server has
    /// fixed the stream's first revision.
    async fn open(addr: SocketAddr, target: &str) -> Events {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut ev = Events {
            s,
            buf: String::new(),
        };
        while !ev.buf.contains("\r\n\r\n") {
            assert!(ev.fill().await, "stream closed before its headers");
        }
        let (head, rest) = ev.buf.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        ev.buf = rest.to_string();
        ev
    }

    /// Reads more; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WITHIN, self.s.read(&mut chunk))
            .await
            .expect("stream stalled")
            .unwrap();
        self.buf.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        n > 0
    }

    /// The next event's data, as JSON (chunk-size lines and keep-alive comments skipped).
    async fn next(&mut self) -> Value {
        loop {
            if let Some(at) = self.buf.find("data: ") {
                if let Some(end) = self.buf[at..].find('\n') {
                    let data = self.buf[at + 6..at + end].trim().to_string();
                    self.buf.drain(..at + end);
                    return serde_json::from_str(&data).unwrap();
                }
            }
            assert!(self.fill().await, "stream ended");
        }
    }

    /// Waits for the server to close the stream.
    async fn ended(&mut self) {
        while self.fill().await {}
    }
}

fn names(dir: &Value) -> Vec<&str> {
    dir["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

/// `doozer_rev 12` -> 12.
fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A single node on 127.0.0.1 with its web view, 20 revisions of history, data in `dir`.
fn web_config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".into()),
        web: WebView::At("127.0.0.1:0".into()),
        data_dir: dir.to_path_buf(),
        hist_revs: 20,
        ..NodeConfig::default()
    }
}

/// Starts `cfg`: the node, its web address and a client.
async fn web_node(cfg: NodeConfig) -> (Node, SocketAddr, doozer_client::Client) {
    let node = Node::start(cfg).await.unwrap();
    let web = node.web_addr().expect("web view bound");
    let c = doozer_client::Client::connect(&format!("doozer:?ca={}", node.client_addr()))
        .await
        .unwrap();
    (node, web, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_where_the_last_checkpoint_started() {
    let dir = tempfile::tempdir().unwrap();
    let (node, web, c) = web_node(NodeConfig {
        checkpoint_revs: 40,
        ..web_config(dir.path())
    })
    .await;
    let first = metric(&get(web, "/metrics").await.body, "doozer_checkpoint_rev");
    let mut rev = 0;
    for i in 0..100 {
        rev = c.set(&format!("/k/{}", i % 4), -1, "v").await.unwrap();
    }
    // The checkpoint starts after the commit that passes its revision, which the client's
    // answer can precede.
    let t = tokio::time::Instant::now();
    let at = loop {
        let at = metric(&get(web, "/metrics").await.body, "doozer_checkpoint_rev");
        if at > first && at + 40 > rev {
            break at;
        }
        assert!(t.elapsed() < WITHIN, "checkpoint at {at}, rev {rev}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(at <= rev, "{at} > {rev}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_reads_the_tree_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (node, web, c) = web_node(web_config(dir.path())).await;

    let r1 = c.set("/app/a", -1, "one").await.unwrap();
    c.set("/app/b/c", -1, "x").await.unwrap();
    let binary = vec![0xffu8, 0xfe, 0x00, b'z'];
    c.set("/app/bin", -1, binary.clone()).await.unwrap();
    let r2 = c.set("/app/a", r1, "two").await.unwrap();

    // A file, now and at a past revision.
    let a = get(web, "/v1/tree/app/a").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let j = a.json();
    assert_eq!(j["path"], "/app/a");
    assert_eq!(j["rev"], r2);
    assert_eq!(j["value"], "two");
    assert!(j.get("value_b64").is_none(), "{j}");
    let old = get(web, &format!("/v1/tree/app/a?rev={r1}")).await.json();
    assert_eq!(
        (old["rev"].as_i64(), old["value"].as_str()),
        (Some(r1), Some("one"))
    );
    let bin = get(web, "/v1/tree/app/bin").await.json();
    assert_eq!(
        bin["value_b64"].as_str().unwrap(),
        data_encoding::BASE64.encode(&binary)
    );

    // Directories: entries in order, each saying what it is; a trailing slash is the same.
    let app = get(web, "/v1/tree/app").await;
    assert_eq!(app.status, 200, "{}", app.body);
    let app = app.json();
    assert_eq!(names(&app), ["a", "b", "bin"]);
    assert!(app["rev"].as_i64().unwrap() >= r2, "{app}");
    let e = &app["entries"];
    assert_eq!(
        (e[0]["dir"].as_bool(), e[0]["rev"].as_i64()),
        (Some(false), Some(r2))
    );
    assert_eq!(e[0]["len"], 3);
    assert_eq!(
        (e[1]["dir"].as_bool(), e[1]["entries"].as_i64()),
        (Some(true), Some(1))
    );
    assert_eq!(
        get(web, "/v1/tree/app/").await.json()["entries"],
        app["entries"]
    );
    let root = get(web, "/v1/tree/").await.json();
    assert_eq!(root["path"], "/");
    assert_eq!(names(&root), ["app", "ctl"]);
    // The directory as it was at r1: no bin yet.
    let app1 = get(web, &format!("/v1/tree/app?rev={r1}")).await.json();
    assert_eq!(names(&app1), ["a"]);

    // Errors: JSON with the Doozer code, and the HTTP status that fits.
    for (target, status, code) in [
        ("/v1/tree/app/a%20b", 400, "BAD_PATH"),
        ("/v1/tree/app//a", 400, "BAD_PATH"),
        ("/v1/tree/nothing/here", 404, "NOENT"),
        ("/v1/tree/app/a?rev=x", 400, "OTHER"),
        ("/v1/tree/app/a?rev=-3", 400, "OTHER"),
        ("/v1/events?glob=/a%5B", 400, "BAD_GLOB"),
        ("/v1/nothing", 404, "OTHER"),
    ] {
        let ans = get(web, target).await;
        assert_eq!(ans.status, status, "{target}: {}", ans.body);
        if target.starts_with("/v1/events") {
            assert!(ans.json()["error"].is_string(), "{target}: {}", ans.body);
        } else {
            assert_eq!(ans.json()["error"], code, "{target}: {}", ans.body);
        }
    }
    // No writes over HTTP.
    for method in ["PUT", "POST", "DELETE"] {
        let ans = request(web, method, "/v1/tree/app/a").await;
        assert_eq!(ans.status, 405, "{method}");
    }
    assert_eq!(c.get("/app/a", None).await.unwrap().1, r2);

    // Health and metrics: a single node leads itself.
    let h = get(web, "/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let h = h.json();
    assert_eq!(h["id"], node.id());
    assert_eq!(h["leader"], true);
    assert_eq!(h["leader_id"], node.id());
    assert_eq!(h["voters"], serde_json::json!([node.id()]));
    assert!(h["rev"].as_i64().unwrap() >= r2);
    assert!(h["applied"].as_u64().unwrap() > 0);
    let m = get(web, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(m.body.contains("# TYPE doozer_rev gauge"), "{}", m.body);
    assert!(metric(&m.body, "doozer_rev") >= r2);
    assert!(metric(&m.body, "doozer_applied_slot") > 0);
    assert_eq!(metric(&m.body, "doozer_is_leader"), 1);
    assert_eq!(metric(&m.body, "doozer_voters"), 1);
    assert_eq!(metric(&m.body, "doozer_web_event_streams"), 0);
    assert!(metric(&m.body, "doozer_web_connections") >= 1);
    assert!(m
        .body
        .contains(&format!("doozer_node_info{{id=\"{}\"", node.id())));

    // The page: self-contained, following the event stream.
    let page = get(web, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.body.contains("EventSource(\"/v1/events"),
        "page does not follow events"
    );
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));

    // Events: a stream without a rev delivers what is written after it opened, and only
    // what matches its glob.
    let mut live = Events::open(web, "/v1/events?glob=/app/live/*").await;
    let mut all = Events::open(web, "/v1/events").await;
    c.set("/other", -1, "no").await.unwrap();
    let r3 = c.set("/app/live/x", -1, "hi").await.unwrap();
    let ev = live.next().await;
    assert_eq!(ev["rev"], r3);
    assert_eq!(ev["path"], "/app/live/x");
    assert_eq!(ev["value"], "hi");
    assert_eq!(ev["flags"], 4);
    // The default glob is /**.
    let mut seen = Vec::new();
    while seen.last() != Some(&r3) {
        let ev = all.next().await;
        if ev["path"] == "/other" {
            seen.push(0);
        }
        seen.push(ev["rev"].as_i64().unwrap());
    }
    assert!(seen.contains(&0), "/other missing from /**: {seen:?}");
    c.del("/app/live/x", -1).await.unwrap();
    assert_eq!(live.next().await["flags"], 8);
    // With a rev, the history first (here both sets of /app/a), then live changes.
    let mut hist = Events::open(web, &format!("/v1/events?glob=/app/a&rev={r1}")).await;
    let e1 = hist.next().await;
    assert_eq!(
        (e1["rev"].as_i64(), e1["value"].as_str()),
        (Some(r1), Some("one"))
    );
    let e2 = hist.next().await;
    assert_eq!(
        (e2["rev"].as_i64(), e2["value"].as_str()),
        (Some(r2), Some("two"))
    );
    let r4 = c.set("/app/a", -1, "three").await.unwrap();
    assert_eq!(hist.next().await["rev"], r4);
    let m = get(web, "/metrics").await.body;
    assert_eq!(metric(&m, "doozer_web_event_streams"), 3);

    // Clients that go away release their streams.
    drop(live);
    drop(all);
    let t = tokio::time::Instant::now();
    loop {
        let m = get(web, "/metrics").await.body;
        // Left: `hist`, and the connection asking.
        let conns = metric(&m, "doozer_web_connections");
        if metric(&m, "doozer_web_event_streams") == 1 && conns == 2 {
            break;
        }
        assert!(t.elapsed() < WITHIN, "closed streams still counted:\n{m}");
        // The server sees the EOF at once; should it not, a change makes it write to the
        // closed sockets.
        c.set("/app/nudge", -1, "x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Past the retained history: TOO_LATE is 410, for reads and for event streams.
    let store = node.handle().store().clone();
    let mut n = 0;
    while store.oldest_rev() <= r1 {
        c.set("/app/fill", -1, n.to_string()).await.unwrap();
        n += 1;
        assert!(n < 500, "history never moved past {r1}");
    }
    let gone = get(web, &format!("/v1/tree/app/a?rev={r1}")).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert_eq!(gone.json()["error"], "TOO_LATE");
    let gone = get(web, &format!("/v1/events?rev={r1}")).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert_eq!(gone.json()["error"], "TOO_LATE");

    // Shutdown ends the open stream rather than waiting for it.
    c.close().await;
    tokio::time::timeout(WITHIN, node.shutdown())
        .await
        .expect("shutdown");
    tokio::time::timeout(WITHIN, hist.ended())
        .await
        .expect("stream ended");
}

/// The addresses in the log lines `web view listening (read-only HTTP) addr=...`, in order
/// (a log is appended to across restarts).
fn web_addrs_in(log: &str) -> Vec<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("web view listening"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .expect("addr= in the web view line")
                .parse()
                .unwrap()
        })
        .collect()
}

/// The address of the one `web view listening` line of a log.
fn web_addr_in(log: &str) -> SocketAddr {
    match web_addrs_in(log)[..] {
        [a] => a,
        ref all => panic!("expected one web view line, got {all:?} in the log:\n{log}"),
    }
}

#[tokio::test]
async fn doozerd_w_flag_serves_the_web_view() {
    let mut cl = cluster_support::Cluster::new();
    let n = cl.seed(&["-w", "127.0.0.1:0"]);
    let addr = web_addr_in(&cl.nodes[n].log_text());
    let h = get(addr, "/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.json()["id"], cl.nodes[n].id);
    let page = get(addr, "/").await;
    assert!(page.body.contains("<title>doozer</title>"));

    // With -w false nothing listens but the Doozer port.
    let m = cl.seed(&["-w", "false"]);
    assert!(!cl.nodes[m].log_text().contains("web view"));
}

/// Without -w the web view is on by default: on the -l host, and with `-l HOST:0` on a free
/// port, so that several nodes share a host (and tests never bind a fixed port). A restart
/// at the port it got keeps a free web port. `/metrics` counts client connections.
#[tokio::test]
async fn doozerd_without_w_serves_the_web_view_on_a_free_port_when_l_port_is_0() {
    let mut cl = cluster_support::Cluster::new();
    let a = cl.seed(&[]);
    let b = cl.seed(&[]);
    let wa = web_addr_in(&cl.nodes[a].log_text());
    let wb = web_addr_in(&cl.nodes[b].log_text());
    for (w, n) in [(wa, a), (wb, b)] {
        assert_eq!(w.ip().to_string(), "127.0.0.1");
        assert_ne!(
            w.port(),
            8000,
            "an ephemeral -l port must not give the fixed web port"
        );
        assert!(!cl.nodes[n].log_text().contains("web view not served"));
        let h = get(w, "/health").await;
        assert_eq!(h.status, 200, "{}", h.body);
        assert_eq!(h.json()["id"], cl.nodes[n].id);
    }
    assert_ne!(wa, wb);

    // Client connections (not web ones, not peer links) are counted while open.
    let m = get(wa, "/metrics").await.body;
    assert_eq!(metric(&m, "doozer_client_connections"), 0, "{m}");
    let (mut c1, mut c2) = (cl.nodes[a].client(), cl.nodes[a].client());
    // Answered: each connection is counted by now (a silent one is not a client yet).
    c1.rev();
    c2.rev();
    let m = get(wa, "/metrics").await.body;
    assert_eq!(metric(&m, "doozer_client_connections"), 2, "{m}");
    drop(c1);
    drop(c2);
    let t = std::time::Instant::now();
    while metric(&get(wa, "/metrics").await.body, "doozer_client_connections") != 0 {
        assert!(
            t.elapsed() < WITHIN,
            "closed client connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Restarted from its data directory (no -l: the bound port it stored), the node again
    // picks a free web port.
    cl.nodes[a].stop();
    let p = cluster_support::Proc::start(&cl.dir(a), &cl.log(a), &[]);
    let again = web_addrs_in(&p.log_text());
    assert_eq!(again.len(), 2, "{again:?}");
    assert_ne!(again[1].port(), 8000);
    assert_eq!(get(again[1], "/health").await.json()["id"], p.id);
}

/// A `doozerd` started with its own environment, killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn with_both_secrets_the_web_view_does_not_show_the_tree() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["-l", "127.0.0.1:0", "-w", "127.0.0.1:0"])
        .env("DOOZER_RWSECRET", "rw")
        .env("DOOZER_ROSECRET", "ro")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon(child);
    // The first stdout line comes once the node serves (or never, if it exits).
    let mut line = String::new();
    std::io::BufReader::new(d.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening on"),
        "doozerd did not start: {line:?}"
    );
    let addr = web_addr_in(&std::fs::read_to_string(&log).unwrap());

    // Anonymous clients may not read, so neither may the web view.
    for target in ["/v1/tree/", "/v1/tree/ctl/name", "/v1/events"] {
        let ans = get(addr, target).await;
        assert_eq!(ans.status, 403, "{target}: {}", ans.body);
        assert!(ans.json()["detail"].as_str().unwrap().contains("secret"));
    }
    // The node's state is not secret.
    assert_eq!(get(addr, "/health").await.status, 200);
}
