//! Bad input against a real `doozerd`: it answers with a Doozer error or closes the one
//! connection, never crashes and never stalls other clients (doozer-protocol.md §9.5, §11).

#[path = "protocol_support.rs"]
mod support;

use std::io::Write;

use doozer_proto::codec::MAX_FRAME;
use doozer_proto::msg::{ErrCode, Request, Response, Verb};
use support::{req, Server};

/// Asserts the server still answers a fresh client.
fn still_serving(s: &mut Server) {
    assert!(s.is_running(), "doozerd died");
    let r = s.raw().call(&req(Verb::Rev, 1));
    assert!(!r.is_err(), "{r:?}");
}

#[test]
fn bad_frames_close_only_their_connection() {
    let mut s = Server::start();
    let mut bystander = s.raw();
    // A partial frame on one connection stalls nobody else.
    let mut slow = s.raw();
    slow.write_raw(&[0, 0, 0, 20, 0x08]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversize length",
            ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec(),
        ),
        ("2 GiB length", 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ("negative length", (-1i32).to_be_bytes().to_vec()),
        ("undecodable body", vec![0, 0, 0, 2, 0x08, 0xff]),
        (
            "non-UTF-8 path",
            vec![0, 0, 0, 5, 0x08, 0x01, 0x22, 0x01, 0xff],
        ),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: doozer\r\n\r\n".to_vec()),
        (
            "TLS hello",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ],
        ),
    ];
    for (what, bytes) in cases {
        let mut c = s.raw();
        // A good request first: it is answered before the garbage closes the connection.
        c.send(&req(Verb::Rev, 9));
        assert_eq!(c.recv().tag, Some(9), "{what}");
        c.write_raw(&bytes);
        c.expect_closed();
        let r = bystander.call(&req(Verb::Rev, 2));
        assert!(!r.is_err(), "after {what}: {r:?}");
    }
    // Random bytes, seeded.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let mut c = s.raw();
        let mut junk = vec![0u8; 64];
        for b in junk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Either it parses as a frame of some length (and the connection waits for the
        // body, or answers, or closes) or it is refused; the server survives all of it.
        let _ = c.stream.write_all(&junk);
    }
    still_serving(&mut s);
    let r = bystander.call(&req(Verb::Rev, 3));
    assert!(!r.is_err());
    drop(slow);
}

#[test]
fn bad_requests_get_doozer_errors() {
    let mut s = Server::start();
    let mut c = s.raw();
    let err = |t: i32, code| Response::err(Some(t), code);
    for (q, want) in [
        (
            Request {
                tag: Some(1),
                verb: Some(42),
                ..Request::default()
            },
            err(1, ErrCode::UnknownVerb),
        ),
        (
            Request {
                tag: Some(2),
                ..Request::default()
            },
            err(2, ErrCode::UnknownVerb),
        ),
        (req(Verb::Get, 3), err(3, ErrCode::MissingArg)),
        (req(Verb::Get, 4).with_path(""), err(4, ErrCode::BadPath)),
        (
            req(Verb::Getdir, 5).with_path("").with_offset(0),
            err(5, ErrCode::BadPath),
        ),
        (
            req(Verb::Set, 6).with_path("/a b").with_rev(-1),
            err(6, ErrCode::BadPath),
        ),
        (
            req(Verb::Set, 7)
                .with_path(format!("/{}", "x".repeat(5000)))
                .with_rev(-1),
            err(7, ErrCode::BadPath),
        ),
        (
            req(Verb::Del, 8).with_path("/").with_rev(-1),
            err(8, ErrCode::IsDir),
        ),
        (
            req(Verb::Walk, 9).with_path("/**").with_offset(i32::MIN),
            err(9, ErrCode::Range),
        ),
        (
            req(Verb::Walk, 10).with_path("/**").with_offset(i32::MAX),
            err(10, ErrCode::Range),
        ),
    ] {
        assert_eq!(c.call(&q), want);
    }
    // A value above 1 MiB (but inside the frame limit) is refused; 1 MiB exactly works.
    let big = vec![b'v'; 1024 * 1024 + 1];
    let r = c.call(
        &req(Verb::Set, 20)
            .with_path("/big")
            .with_rev(-1)
            .with_value(big),
    );
    assert_eq!(r.error_code(), Some(ErrCode::Other), "{r:?}");
    assert!(r.err_detail.unwrap().contains("exceeds the limit"));
    let mib: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c.call(
        &req(Verb::Set, 21)
            .with_path("/big")
            .with_rev(-1)
            .with_value(mib.clone()),
    );
    assert!(!r.is_err(), "{r:?}");
    let r = c.call(&req(Verb::Get, 22).with_path("/big"));
    assert_eq!(r.value.as_deref(), Some(&mib[..]));
    still_serving(&mut s);
}
