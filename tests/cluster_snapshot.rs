//! A node joining after more revisions than the history holds catches up by snapshot, in
//! the newest snapshot stream version both ends support.

mod cluster_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster_support::{eventually, Cluster};
use doozer_proto::msg::{ErrCode, Request, Verb};

/// A seed node with little history and few retained slots, and 200 writes on it (more than
/// the history): a joiner can only catch up by snapshot.
struct Seeded {
    cl: Cluster,
    small: [&'static str; 4],
    s: usize,
    seed_addr: String,
    c: cluster_support::Client,
    last: i64,
}

fn seeded() -> Seeded {
    let mut cl = Cluster::new();
    let small = ["--hist", "150", "--retain-slots", "8"];
    let s = cl.seed(&small);
    let seed_addr = cl.nodes[s].addr.clone();
    let mut c = cl.nodes[s].client();
    let mut last = 0;
    for i in 0..200 {
        last = c
            .set(&format!("/s/{}", i % 50), -1, format!("v{i}").as_bytes())
            .unwrap();
    }
    Seeded {
        cl,
        small,
        s,
        seed_addr,
        c,
        last,
    }
}

/// Waits for the joiner behind `cj` to reach `last`, then checks it serves the 50 files
/// [`seeded`] wrote last, data it never saw written.
fn assert_caught_up(cj: &mut cluster_support::Client, last: i64) {
    eventually(Duration::from_secs(30), "joiner caught up", || {
        (cj.rev() >= last).then_some(())
    });
    for k in 0..50 {
        let i = 150 + k;
        assert_eq!(
            cj.get(&format!("/s/{k}")).unwrap().0,
            format!("v{i}").into_bytes()
        );
    }
}

#[test]
fn late_joiner_catches_up_by_snapshot() {
    let Seeded {
        mut cl,
        small,
        s: _,
        seed_addr,
        mut c,
        last,
    } = seeded();
    let j = cl.join(&seed_addr, &small);
    let mut cj = cl.nodes[j].client();
    assert_caught_up(&mut cj, last);
    assert!(
        cl.nodes[j].log_text().contains("snapshot installed"),
        "the joiner should have caught up through a snapshot"
    );
    // It also holds the cluster's history (it came with the snapshot): WAIT at past
    // revisions answers as on the node that saw them written.
    let wait = |c: &mut cluster_support::Client, rev: i64| {
        let r = c
            .call(Request::new(Verb::Wait).with_path("/s/**").with_rev(rev))
            .unwrap();
        (r.err_code, r.path, r.rev, r.value, r.flags)
    };
    // (History is 150 revisions: the first writes are gone everywhere.)
    assert_eq!(wait(&mut cj, 1).0, Some(ErrCode::TooLate as i32));
    for rev in last - 30..=last {
        let on_seed = wait(&mut c, rev);
        assert_eq!(on_seed.0, None, "the seed keeps rev {rev}");
        assert_eq!(wait(&mut cj, rev), on_seed, "WAIT at rev {rev}");
    }
    // And it goes on following the decided stream.
    let r = c.set("/s/new", -1, b"n").unwrap();
    eventually(Duration::from_secs(10), "joiner follows", || {
        (cj.rev() >= r).then_some(())
    });
    assert_eq!(cj.get("/s/new").unwrap(), (b"n".to_vec(), r));
}

/// The node's test hook: the snapshot stream versions it says it accepts (hidden, not a flag).
const SNAPSHOT_VERSIONS_ENV: &str = "DOOZERD_TEST_SNAPSHOT_VERSIONS";

/// A `doozerd` started with extra environment variables (`cluster_support::Proc` sets none),
/// killed on drop.
struct EnvProc {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl EnvProc {
    fn start(dir: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> EnvProc {
        std::fs::create_dir_all(dir).unwrap();
        let logf = std::fs::File::create(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_doozerd"))
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,doozerd=debug")
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("spawn doozerd");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let mut p = EnvProc {
            child,
            addr: String::new(),
            log: log.to_path_buf(),
        };
        // "doozerd <id> listening on <addr>"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 5, "unexpected first line {line:?}");
        p.addr = words[4].to_string();
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EnvProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("==== last log lines of {} ====", self.addr);
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// During a rolling upgrade a node may install only an older stream version: it says so,
/// and the node serving it writes that version.
#[test]
fn a_joiner_that_installs_only_version_2_gets_version_2() {
    let Seeded {
        cl,
        small,
        s,
        seed_addr,
        mut c,
        last,
    } = seeded();
    let mut args = vec!["-l", "127.0.0.1:0", "-a", &seed_addr];
    args.extend_from_slice(&small);
    let j = EnvProc::start(
        &cl.dir(1),
        &cl.log(1),
        &args,
        &[(SNAPSHOT_VERSIONS_ENV, "2")],
    );
    let mut cj = cluster_support::Client::connect(&j.addr);
    assert_caught_up(&mut cj, last);
    let has_line = |log: &str, what: &str| {
        log.lines()
            .any(|l| l.contains(what) && l.contains("version=2"))
    };
    assert!(
        has_line(&j.log_text(), "snapshot received"),
        "the joiner should have received a version 2 snapshot"
    );
    assert!(j.log_text().contains("snapshot installed"));
    assert!(
        has_line(&cl.nodes[s].log_text(), "sending snapshot"),
        "the seed should have written version 2"
    );
    // Version 2 carries no history: the joiner's starts at the snapshot's revision, while
    // the seed still answers WAITs there.
    let wait = |c: &mut cluster_support::Client, rev: i64| {
        c.call(Request::new(Verb::Wait).with_path("/s/**").with_rev(rev))
            .unwrap()
            .err_code
    };
    assert_eq!(wait(&mut c, last - 30), None);
    assert_eq!(wait(&mut cj, last - 30), Some(ErrCode::TooLate as i32));
    // And it goes on following the decided stream.
    let r = c.set("/s/new", -1, b"n").unwrap();
    eventually(Duration::from_secs(10), "joiner follows", || {
        (cj.rev() >= r).then_some(())
    });
    assert_eq!(cj.get("/s/new").unwrap(), (b"n".to_vec(), r));
}
