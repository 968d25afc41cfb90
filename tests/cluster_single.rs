//! One real `doozerd`: starts with no join flags, takes writes, keeps them across restarts.

mod cluster_support;

use std::time::Duration;

use cluster_support::{eventually, Cluster, Proc};

#[test]
fn single_node_write_read_and_restart() {
    let mut cl = Cluster::new();
    let n = cl.seed(&[]);
    let mut c = cl.nodes[n].client();

    // The bootstrap wrote the /ctl tree through consensus.
    let (name, _) = c.get("/ctl/name").unwrap();
    assert_eq!(name, b"local");
    let id = c.self_id();
    assert_eq!(id, cl.nodes[n].id);
    let (cal0, _) = c.get("/ctl/cal/0").unwrap();
    assert_eq!(cal0, id.as_bytes());
    assert_eq!(c.getdir_all("/ctl/cal"), vec!["0", "1", "2"]);
    let (addr, _) = c.get(&format!("/ctl/node/{id}/addr")).unwrap();
    assert_eq!(String::from_utf8(addr).unwrap(), cl.nodes[n].addr);
    let (host, _) = c.get(&format!("/ctl/node/{id}/hostname")).unwrap();
    assert!(!host.is_empty());
    let (version, _) = c.get(&format!("/ctl/node/{id}/version")).unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION").as_bytes());
    assert_eq!(
        c.getdir_all(&format!("/ctl/node/{id}")),
        ["addr", "hostname", "version"]
    );

    let r1 = c.set("/app/a", -1, b"one").unwrap();
    assert!(r1 > 0);
    assert_eq!(c.get("/app/a").unwrap(), (b"one".to_vec(), r1));
    // CAS with a stale rev fails and still uses up a revision.
    let err = c.set("/app/a", r1 - 1, b"two").unwrap_err();
    assert_eq!(err.code, Some(doozer_proto::msg::ErrCode::RevMismatch));
    let r2 = c.set("/app/a", r1, b"two").unwrap();
    assert!(r2 > r1 + 1, "the failed CAS used revision {}", r1 + 1);
    let rev_before = c.rev();
    drop(c);

    // Restart with no flags but the data dir: same id, address, data and revisions.
    let addr_before = cl.nodes[n].addr.clone();
    cl.nodes[n].stop();
    let p = Proc::start(&cl.dir(0), &cl.log(0), &[]);
    assert_eq!(p.id, id);
    assert_eq!(p.addr, addr_before);
    let mut c = p.client();
    assert_eq!(c.get("/app/a").unwrap(), (b"two".to_vec(), r2));
    assert!(c.rev() >= rev_before);
    let r3 = c.set("/app/b", 0, b"three").unwrap();
    assert!(r3 > rev_before);
    assert_eq!(c.get("/app/b").unwrap(), (b"three".to_vec(), r3));
}

#[test]
fn refuses_a_data_dir_of_another_cluster() {
    let mut cl = Cluster::new();
    let n = cl.seed(&["-c", "alpha"]);
    cl.nodes[n].stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .arg("--data-dir")
        .arg(cl.dir(0))
        .args(["-c", "beta", "-l", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alpha"), "stderr: {err}");
}

#[test]
fn restart_refreshes_a_stale_version_under_ctl_node() {
    let mut cl = Cluster::new();
    let n = cl.seed(&[]);
    let mut c = cl.nodes[n].client();
    let id = c.self_id();
    let path = format!("/ctl/node/{id}/version");
    // As if the data dir was written by an older doozerd.
    c.set(&path, -1, b"0.0.1-old").unwrap();
    drop(c);
    cl.nodes[n].stop();
    let p = Proc::start(&cl.dir(0), &cl.log(0), &[]);
    let mut c = p.client();
    eventually(Duration::from_secs(10), "the version refreshed", || {
        let (v, _) = c.get(&path).unwrap();
        (v == env!("CARGO_PKG_VERSION").as_bytes()).then_some(())
    });
    let (host, _) = c.get(&format!("/ctl/node/{id}/hostname")).unwrap();
    assert!(!host.is_empty());
}
