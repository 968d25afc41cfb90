//! kill -9 of the leader during a stream of writes: every acknowledged write survives.

mod cluster_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{eventually, Client, Cluster};

#[test]
fn acknowledged_writes_survive_leader_kill() {
    let mut cl = Cluster::new();
    cl.three_voters(&[]);
    let leader = eventually(Duration::from_secs(10), "one leader", || {
        let l: Vec<usize> = (0..3).filter(|&i| cl.nodes[i].is_leader()).collect();
        (l.len() == 1).then(|| l[0])
    });
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // Two writers on the survivors record every write the cluster acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let after_kill = Arc::new(AtomicUsize::new(0));
    let before_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, idx) in survivors.iter().enumerate() {
        let addr = cl.nodes[*idx].addr.clone();
        let (stop, after_kill, killed) = (stop.clone(), after_kill.clone(), killed.clone());
        let before_kill = before_kill.clone();
        writers.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut c = Client::connect(&addr);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let path = format!("/w/{w}-{i}");
                match c.set(&path, -1, i.to_string().as_bytes()) {
                    Ok(rev) => {
                        acked.push((path, i, rev));
                        if killed.load(Ordering::SeqCst) {
                            after_kill.fetch_add(1, Ordering::SeqCst);
                        } else {
                            before_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) if e.code.is_none() => {
                        // Connection trouble: reconnect and go on.
                        c = Client::connect(&addr);
                    }
                    Err(_) => {}
                }
                i += 1;
            }
            acked
        }));
    }
    // (Counted, not read off REV: the membership no-ops of the cluster's formation take
    // revisions too.)
    eventually(Duration::from_secs(20), "writes before the kill", || {
        (before_kill.load(Ordering::SeqCst) > 200).then_some(())
    });
    cl.nodes[leader].kill9();
    killed.store(true, Ordering::SeqCst);
    let t = Instant::now();
    eventually(Duration::from_secs(30), "writes after the kill", || {
        (after_kill.load(Ordering::SeqCst) >= 100).then_some(())
    });
    eprintln!("writes resumed within {:?}", t.elapsed());
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<(String, u64, i64)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(acked.len() > 200);

    for &s in &survivors {
        let mut c = cl.nodes[s].client();
        for (path, i, rev) in &acked {
            let (v, r) = c.get(path).unwrap();
            assert_eq!(
                v,
                i.to_string().into_bytes(),
                "{path} on {}",
                cl.nodes[s].addr
            );
            assert_eq!(r, *rev, "{path} on {}", cl.nodes[s].addr);
        }
    }
}
