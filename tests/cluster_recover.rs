//! Lost quorum over the wire, and the operator's way out: with two of three voters gone a
//! write gets an error at its deadline (`--write-timeout`), never a hang; `doozerd recover`
//! on the survivor's data directory makes it the only voter, with every write it had.
//! The cluster is formed with `-a` and with `-b doozer:?ca=ADDR`.

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::{Cluster, Proc};

#[test]
fn lost_quorum_fails_at_the_deadline_and_recover_restores_writes() {
    let mut cl = Cluster::new();
    let deadline = ["--write-timeout", "1"];
    let s = cl.seed(&deadline);
    let seed_addr = cl.nodes[s].addr.clone();
    cl.join(&seed_addr, &deadline);
    let uri = format!("doozer:?ca={seed_addr}");
    cl.start(
        2,
        &["-l", "127.0.0.1:0", "-b", &uri, "--write-timeout", "1"],
    );
    cl.wait_three_voters();

    // Writes through the -b joiner, read on the seed.
    let mut c2 = cl.nodes[2].client();
    let mut written = Vec::new();
    for i in 0..20 {
        let path = format!("/q/{i}");
        written.push((
            path.clone(),
            c2.set(&path, -1, format!("v{i}").as_bytes()).unwrap(),
        ));
    }
    let mut c0 = cl.nodes[0].client();
    assert_eq!(c0.get("/q/19").unwrap(), (b"v19".to_vec(), written[19].1));
    drop(c2);

    // Two voters gone: the survivor's write fails at its 1 s deadline.
    let survivor_id = cl.nodes[0].id.clone();
    cl.nodes[1].kill9();
    cl.nodes[2].kill9();
    let t = Instant::now();
    let e = c0.set("/q/lost", -1, b"x").unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code, Some(doozer_proto::msg::ErrCode::Other), "{e:?}");
    assert!(
        e.detail.contains("timed out") || e.detail.contains("no leader"),
        "{e:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(c0);

    // The operator stops the survivor and recovers it alone.
    cl.nodes[0].stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .arg("recover")
        .arg("--data-dir")
        .arg(cl.dir(0))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "recover failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&survivor_id), "{stdout}");

    let p = Proc::start(&cl.dir(0), &cl.log(0), &[]);
    let mut c = p.client();
    assert_eq!(Cluster::voters(&mut c), [survivor_id]);
    for (i, (path, rev)) in written.iter().enumerate() {
        assert_eq!(c.get(path).unwrap(), (format!("v{i}").into_bytes(), *rev));
    }
    let r = c.set("/q/after", -1, b"a").unwrap();
    assert!(r > written[19].1);
    assert_eq!(c.get("/q/after").unwrap(), (b"a".to_vec(), r));
}
