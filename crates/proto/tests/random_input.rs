//! Seeded random input into every decoder of outside bytes: frames, paths, globs, URIs.
//! Nothing may panic, and no decoder may grow its buffer past the frame limit.
//!
//! `SEED=<n> cargo test -p doozer-proto --test random_input` replays one seed; the seed in
//! use is printed (visible on failure, or always with `-- --nocapture`).

use bytes::{Bytes, BytesMut};
use doozer_proto::codec::{
    decode_frame, encode_frame, read_frame, ClientCodec, FrameError, ServerCodec, HEADER_LEN,
    MAX_FRAME,
};
use doozer_proto::{path, DoozerUri, Glob, Message, Request, Response};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::codec::Decoder;

/// Fixed by default so CI is reproducible; `SEED` overrides it.
fn rng(test: &str) -> ChaCha8Rng {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_000);
    println!("{test}: SEED={seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_request(rng: &mut impl Rng) -> Request {
    let mut r = Request::default();
    if rng.gen_bool(0.8) {
        r.tag = Some(rng.gen());
    }
    if rng.gen_bool(0.9) {
        r.verb = Some(
            *[1, 2, 3, 5, 6, 7, 9, 14, 16, 20, 99, 0, 42, -3]
                .choose(rng)
                .unwrap(),
        );
    }
    if rng.gen_bool(0.6) {
        r.path = Some(random_string(rng, 20));
    }
    if rng.gen_bool(0.4) {
        r.value = Some(random_bytes(rng, 50).into());
    }
    if rng.gen_bool(0.1) {
        r.other_tag = Some(rng.gen());
    }
    if rng.gen_bool(0.3) {
        r.offset = Some(rng.gen());
    }
    if rng.gen_bool(0.5) {
        r.rev = Some(rng.gen());
    }
    r
}

fn random_response(rng: &mut impl Rng) -> Response {
    let mut r = Response::default();
    if rng.gen_bool(0.8) {
        r.tag = Some(rng.gen());
    }
    if rng.gen_bool(0.3) {
        r.flags = Some(*[0, 4, 8].choose(rng).unwrap());
    }
    if rng.gen_bool(0.5) {
        r.rev = Some(rng.gen());
    }
    if rng.gen_bool(0.4) {
        r.path = Some(random_string(rng, 20));
    }
    if rng.gen_bool(0.4) {
        r.value = Some(random_bytes(rng, 50).into());
    }
    if rng.gen_bool(0.2) {
        r.len = Some(rng.gen());
    }
    if rng.gen_bool(0.3) {
        r.err_code = Some(*[1, 2, 5, 6, 7, 8, 20, 21, 22, 127, 55].choose(rng).unwrap());
    }
    if rng.gen_bool(0.2) {
        r.err_detail = Some(random_string(rng, 30));
    }
    r
}

fn random_bytes(rng: &mut impl Rng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

/// Strings biased towards the characters that matter to paths, globs and URIs.
fn random_string(rng: &mut impl Rng, max: usize) -> String {
    const ALPHABET: &[char] = &[
        '/', '/', '/', 'a', 'b', 'Z', '0', '.', '-', '*', '*', '?', '_', ' ', '%', '&', '=', ':',
        '[', ']', '+', 'é', '\0', 'c', 'a', '1', 'F',
    ];
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| *ALPHABET.choose(rng).unwrap()).collect()
}

/// Mostly well-formed paths and globs, with the occasional bad character or empty component.
fn path_like(rng: &mut impl Rng) -> String {
    const PARTS: &[&str] = &[
        "a", "b", "ab", "*", "**", "?", "x.y", "-", "A", "", "a_b", "***",
    ];
    let n = rng.gen_range(0..5);
    if n == 0 {
        return String::from("/");
    }
    (0..n)
        .map(|_| format!("/{}", PARTS.choose(rng).unwrap()))
        .collect()
}

/// Query strings made of real and bogus parameters with random values.
fn query_like(rng: &mut impl Rng) -> String {
    const KEYS: &[&str] = &["ca", "ca", "sk", "cn", "un", "x", "", "c%61"];
    const ADDRS: &[&str] = &[
        "h",
        "h:1",
        "1.2.3.4:8046",
        "[::1]",
        "::1",
        "h:0",
        "",
        "%5B::1%5D:9",
    ];
    let n = rng.gen_range(0..5);
    let pairs: Vec<String> = (0..n)
        .map(|_| {
            let k = *KEYS.choose(rng).unwrap();
            let v = if k == "ca" && rng.gen_bool(0.8) {
                ADDRS.choose(rng).unwrap().to_string()
            } else {
                random_string(rng, 8)
            };
            format!("{k}={v}")
        })
        .collect();
    pairs.join("&")
}

/// Drains `codec` over `input`, fed in random chunks, until it needs more bytes or errs.
/// Returns (messages decoded, whether it ended in an error).
fn drain<C: Decoder<Error = FrameError>>(
    codec: &mut C,
    input: &[u8],
    rng: &mut impl Rng,
) -> (usize, bool) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut decoded = 0;
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => decoded += 1,
            Ok(None) if fed == input.len() => return (decoded, false),
            Ok(None) => {
                let n = rng.gen_range(1..=input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Err(_) => return (decoded, true),
        }
        // Growth is bounded by what the limit allows, never by what a header claims.
        assert!(
            buf.capacity() <= 2 * (MAX_FRAME + HEADER_LEN),
            "buffer grew to {}",
            buf.capacity()
        );
    }
}

#[test]
fn random_bytes_into_decoders_never_panic() {
    let mut rng = rng("random_bytes_into_decoders_never_panic");
    let (mut ok_msgs, mut errors) = (0, 0);
    for _ in 0..4000 {
        let input: Vec<u8> = match rng.gen_range(0..4) {
            // Pure noise: mostly huge or negative lengths.
            0 => random_bytes(&mut rng, 200),
            // A plausible header over a random body: exercises the protobuf decoder.
            1 => {
                let body = random_bytes(&mut rng, 64);
                let mut f = (body.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(&body);
                f
            }
            // Real frames with a few bytes corrupted.
            2 => {
                let mut f = Vec::new();
                for _ in 0..rng.gen_range(1..4) {
                    f.extend(encode_frame(&random_request(&mut rng)));
                }
                for _ in 0..rng.gen_range(0..3) {
                    let i = rng.gen_range(0..f.len());
                    f[i] = rng.gen();
                }
                f
            }
            // Real frames cut short.
            _ => {
                let f = encode_frame(&random_response(&mut rng));
                let cut = rng.gen_range(0..=f.len());
                f[..cut].to_vec()
            }
        };
        for (decoded, erred) in [
            drain(&mut ServerCodec::new(), &input, &mut rng),
            drain(&mut ClientCodec::new(), &input, &mut rng),
        ] {
            ok_msgs += decoded;
            errors += erred as usize;
        }
        let _ = decode_frame::<Request>(&input);
        let _ = decode_frame::<Response>(&input);
        let _ = read_frame::<Request>(&mut &input[..], MAX_FRAME);
        let _ = Request::decode(&input[..]);
        let _ = Response::decode(&input[..]);
    }
    // Both outcomes must have been exercised, or the generator is broken.
    assert!(
        ok_msgs > 1000 && errors > 1000,
        "ok {ok_msgs} errors {errors}"
    );
}

#[test]
fn random_messages_round_trip() {
    let mut rng = rng("random_messages_round_trip");
    for _ in 0..2000 {
        let req = random_request(&mut rng);
        let frame = encode_frame(&req);
        assert_eq!(decode_frame::<Request>(&frame).unwrap(), req);
        let resp = random_response(&mut rng);
        let frame = encode_frame(&resp);
        assert_eq!(decode_frame::<Response>(&frame).unwrap(), resp);

        // Through the async codec, split at a random point.
        let mut codec = ClientCodec::new();
        let cut = rng.gen_range(0..=frame.len());
        let mut buf = BytesMut::from(&frame[..cut]);
        let first = codec.decode(&mut buf).unwrap();
        buf.extend_from_slice(&frame[cut..]);
        let got = match first {
            Some(m) => m,
            None => codec.decode(&mut buf).unwrap().unwrap(),
        };
        assert_eq!(got, resp);
        assert!(buf.is_empty());
    }
}

#[test]
fn random_strings_into_paths_globs_and_uris() {
    let mut rng = rng("random_strings_into_paths_globs_and_uris");
    let (mut valid_paths, mut valid_globs, mut valid_uris) = (0, 0, 0);
    for _ in 0..20_000 {
        let (s, probe) = if rng.gen_bool(0.5) {
            (random_string(&mut rng, 24), random_string(&mut rng, 24))
        } else {
            (path_like(&mut rng), path_like(&mut rng))
        };
        let path_ok = path::validate(&s).is_ok();
        let _ = (
            path::parent(&s),
            path::basename(&s),
            path::components(&s).count(),
        );
        match Glob::new(&s) {
            Ok(g) => {
                valid_globs += 1;
                let _ = g.matches(&probe);
                if !s.contains(['*', '?']) {
                    // A glob without wildcards is a path, and matches exactly itself.
                    assert!(path_ok, "{s:?}");
                    assert!(g.matches(&s), "{s:?}");
                    assert_eq!(g.matches(&probe), probe == s, "{s:?} {probe:?}");
                }
            }
            // Every valid path is a valid glob.
            Err(_) => assert!(!path_ok, "{s:?}"),
        }
        valid_paths += path_ok as usize;

        let uri = format!("doozer:?{}", query_like(&mut rng));
        if let Ok(u) = DoozerUri::parse(&uri) {
            valid_uris += 1;
            assert_eq!(DoozerUri::parse(&u.to_string()).as_ref(), Ok(&u), "{uri:?}");
        }
    }
    println!("paths {valid_paths} globs {valid_globs} uris {valid_uris}");
    assert!(
        valid_paths > 1000 && valid_globs > 2000 && valid_uris > 1000,
        "paths {valid_paths} globs {valid_globs} uris {valid_uris}"
    );
}

#[test]
fn globs_built_from_a_path_match_it() {
    let mut rng = rng("globs_built_from_a_path_match_it");
    const NAMES: &[&str] = &["a", "b", "ctl", "node", "x.y", "-", "Z9"];
    for _ in 0..5000 {
        let depth = rng.gen_range(1..6);
        let comps: Vec<&str> = (0..depth)
            .map(|_| *NAMES.choose(&mut rng).unwrap())
            .collect();
        let p = format!("/{}", comps.join("/"));
        path::validate(&p).unwrap();
        let k = rng.gen_range(0..depth);

        // Replace component k with `*`: still matches; `?`s of the right count too.
        let mut star = comps.clone();
        star[k] = "*";
        let g = Glob::new(&format!("/{}", star.join("/"))).unwrap();
        assert!(g.matches(&p), "{g} {p}");
        let q = "?".repeat(comps[k].len());
        let mut qs = comps.clone();
        qs[k] = &q;
        assert!(Glob::new(&format!("/{}", qs.join("/")))
            .unwrap()
            .matches(&p));

        // Everything from component k on replaced by `**`: matches; `/<prefix>/**` does not
        // match the prefix itself.
        let prefix = format!("/{}", comps[..k].join("/"));
        let prefix = if k == 0 { String::from("/") } else { prefix };
        let g = Glob::new(&path::join(&prefix, "**")).unwrap();
        assert!(g.matches(&p), "{g} {p}");
        assert_eq!(g.matches(&prefix), prefix == "/", "{g} {prefix}");

        // Changing the case of a letter breaks a literal match.
        if let Some(i) = p.find(|c: char| c.is_ascii_alphabetic()) {
            let mut flipped = p.clone().into_bytes();
            flipped[i] ^= 0x20;
            let flipped = String::from_utf8(flipped).unwrap();
            assert!(!Glob::new(&p).unwrap().matches(&flipped));
        }
    }
}

#[test]
fn values_are_shared_not_copied() {
    // A decoded value points into the frame buffer (prost + Bytes), so large values cost no
    // extra copy on the server's read path.
    let value = Bytes::from(vec![b'v'; 4096]);
    let frame = encode_frame(&Request::default().with_value(value.clone()));
    let mut buf = BytesMut::from(&frame[..]);
    let start = buf.as_ptr() as usize;
    let req = ServerCodec::new().decode(&mut buf).unwrap().unwrap();
    let got = req.value.unwrap();
    assert_eq!(got, value);
    let at = got.as_ptr() as usize;
    assert!(at > start && at < start + frame.len(), "value was copied");
}
