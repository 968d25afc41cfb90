//! Bytes and strings from outside never panic the store: operations, snapshots, paths.
//! `SEED=n` replays one seed, `RANDOM_CASES` sets the number of cases.

mod common;

use common::*;
use doozer_proto::Glob;
use doozer_store::codec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> usize {
    std::env::var("RANDOM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn rng() -> StdRng {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    eprintln!("SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..max);
    (0..n).map(|_| rng.gen()).collect()
}

#[test]
fn random_ops_decode_or_fail() {
    let mut rng = rng();
    let good = codec::encode_op(&set("/a/b", 3, "value"));
    for _ in 0..cases() * 10 {
        let _ = codec::decode_op(&random_bytes(&mut rng, 64));
        let mut m = good.to_vec();
        let i = rng.gen_range(0..m.len());
        m[i] = rng.gen();
        if let Ok(op) = codec::decode_op(&m) {
            // Whatever decodes re-encodes to the same bytes.
            assert_eq!(codec::encode_op(&op).to_vec(), m);
        }
    }
}

#[test]
fn damaged_snapshots_never_install() {
    let mut rng = rng();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut src = Driver::new(open(d1.path(), 1000));
    for i in 0..40 {
        src.slot(&[
            set(&format!("/s/{}/{i}", i % 3), -1, &"v".repeat(i)),
            del("/s/0/0", -1),
        ]);
    }
    let mut good = Vec::new();
    src.store.export_snapshot(&mut good).unwrap();
    let dst = open(d2.path(), 1000);
    for case in 0..cases() {
        let mut bad = good.clone();
        match case % 4 {
            0 => bad = random_bytes(&mut rng, 512),
            1 => {
                let i = rng.gen_range(0..bad.len());
                bad[i] ^= 1 << rng.gen_range(0..8);
            }
            2 => bad.truncate(rng.gen_range(0..bad.len())),
            _ => {
                let i = rng.gen_range(0..bad.len());
                bad.insert(i, rng.gen());
            }
        }
        let r = dst.install_snapshot(&mut bad.as_slice());
        assert!(r.is_err(), "case {case}: a damaged snapshot installed");
        assert_eq!((dst.rev(), dst.applied_slot()), (0, 0), "case {case}");
    }
    dst.install_snapshot(&mut good.as_slice()).unwrap();
    assert_eq!(dst.rev(), src.store.rev());
}

#[test]
fn random_paths_and_globs_never_panic() {
    let mut rng = rng();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(open(dir.path(), 1000));
    d.slot(&[set("/a/b", 0, "x"), set("/a-c", 0, "y")]);
    let alphabet = b"/ab-._*?\x01\x00\xffZ9 ";
    for _ in 0..cases() * 10 {
        let n = rng.gen_range(0..12);
        let bytes: Vec<u8> = (0..n)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let s = String::from_utf8_lossy(&bytes).into_owned();
        let rev = if rng.gen_bool(0.5) {
            None
        } else {
            Some(rng.gen_range(-3..5))
        };
        let _ = d.store.get(&s, rev);
        let _ = d.store.getdir(&s, rng.gen_range(-2..3), rev);
        let _ = d.store.stat(&s, rev);
        if let Ok(g) = Glob::new(&s) {
            let _ = d.store.walk(&g, rng.gen_range(-2..3), rev);
            let _ = d.store.wait(&g, rng.gen_range(-3..5));
        }
        // Writes of any path are applied as commands: bad ones fail with BAD_PATH.
        if !rng.gen_ratio(1, 10) {
            continue;
        }
        let r = d.one(set(&s, -1, "z"));
        if doozer_proto::path::validate(&s).is_err() {
            assert!(matches!(
                r,
                doozer_store::ApplyResult::Err {
                    code: doozer_proto::ErrCode::BadPath,
                    ..
                }
            ));
        }
    }
}
