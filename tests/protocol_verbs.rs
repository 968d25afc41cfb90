//! Every verb and every error code of the Doozer client protocol, against a real `doozerd`
//! process, in raw frames (doozer-protocol.md §1–§2, checklist §11).

#[path = "protocol_support.rs"]
mod support;

use doozer_proto::msg::{ErrCode, Request, Response, Verb, FLAG_DEL, FLAG_SET};
use support::{req, Server};

fn err(tag: i32, code: ErrCode) -> Response {
    Response::err(Some(tag), code)
}

#[test]
fn every_verb_and_error_code() {
    let s = Server::start();
    let mut c = s.raw();

    // REV and SELF.
    let r = c.call(&req(Verb::Rev, 1));
    assert!(r.rev.unwrap() > 0 && !r.is_err(), "{r:?}");
    let r = c.call(&req(Verb::SelfId, 2));
    assert_eq!(r, Response::ok(Some(2)).with_value(s.id.clone()));
    assert_eq!(s.id.len(), 16);

    // SET and its errors.
    let r = c.call(
        &req(Verb::Set, 3)
            .with_path("/p/a")
            .with_rev(0)
            .with_value("hello"),
    );
    assert!(!r.is_err(), "{r:?}");
    let a = r.rev.unwrap();
    let set = |t: i32| req(Verb::Set, t);
    for (q, code) in [
        (
            set(4).with_path("/p/a").with_rev(0).with_value("x"),
            ErrCode::RevMismatch,
        ),
        (
            set(5).with_path("/p/a").with_rev(a - 1).with_value("x"),
            ErrCode::RevMismatch,
        ),
        (
            set(6).with_path("/p/c").with_rev(-5).with_value("x"),
            ErrCode::RevMismatch,
        ),
        (
            set(7).with_path("/p/c").with_value("x"),
            ErrCode::MissingArg,
        ),
        (set(8).with_rev(-1).with_value("x"), ErrCode::MissingArg),
        (set(9).with_path("/p/a_b").with_rev(-1), ErrCode::BadPath),
        (set(10).with_path("").with_rev(-1), ErrCode::BadPath),
        (set(11).with_path("/p").with_rev(-1), ErrCode::IsDir),
        (set(12).with_path("/p/a/x").with_rev(-1), ErrCode::NotDir),
    ] {
        let t = q.tag.unwrap();
        assert_eq!(c.call(&q), err(t, code), "tag {t}");
    }
    let r = c.call(&set(13).with_path("/p/a").with_rev(a).with_value("world"));
    let a2 = r.rev.unwrap();
    assert!(a2 > a, "{r:?}");
    // Failed mutations used revisions and wrote /ctl/err.
    let r = c.call(&req(Verb::Get, 14).with_path("/ctl/err"));
    assert!(r.rev.unwrap() > a && !r.value.unwrap().is_empty());

    // GET.
    let r = c.call(&req(Verb::Get, 20).with_path("/p/a"));
    assert_eq!(r, Response::ok(Some(20)).with_rev(a2).with_value("world"));
    let r = c.call(&req(Verb::Get, 21).with_path("/p/a").with_rev(a));
    assert_eq!(r, Response::ok(Some(21)).with_rev(a).with_value("hello"));
    let r = c.call(&req(Verb::Get, 22).with_path("/p/nope"));
    assert_eq!(r, Response::ok(Some(22)).with_rev(0).with_value(""));
    assert_eq!(
        c.call(&req(Verb::Get, 23).with_path("/p")),
        err(23, ErrCode::IsDir)
    );
    assert_eq!(c.call(&req(Verb::Get, 24)), err(24, ErrCode::MissingArg));
    // The original crashed on an empty path.
    assert_eq!(
        c.call(&req(Verb::Get, 25).with_path("")),
        err(25, ErrCode::BadPath)
    );
    assert_eq!(
        c.call(&req(Verb::Get, 26).with_path("ctl/name")),
        err(26, ErrCode::BadPath)
    );

    // GETDIR.
    c.call(&set(30).with_path("/p/b").with_rev(-1).with_value(""));
    let r = c.call(&req(Verb::Getdir, 31).with_path("/p").with_offset(0));
    assert_eq!(r, Response::ok(Some(31)).with_path("a"));
    let r = c.call(&req(Verb::Getdir, 32).with_path("/p").with_offset(1));
    assert_eq!(r, Response::ok(Some(32)).with_path("b"));
    for (q, code) in [
        (
            req(Verb::Getdir, 33).with_path("/p").with_offset(2),
            ErrCode::Range,
        ),
        (
            req(Verb::Getdir, 34).with_path("/p").with_offset(-1),
            ErrCode::Range,
        ),
        (
            req(Verb::Getdir, 35).with_path("/p/a").with_offset(0),
            ErrCode::NotDir,
        ),
        (
            req(Verb::Getdir, 36).with_path("/nope").with_offset(0),
            ErrCode::NoEnt,
        ),
        (req(Verb::Getdir, 37).with_path("/p"), ErrCode::MissingArg),
        (
            req(Verb::Getdir, 38).with_path("").with_offset(0),
            ErrCode::BadPath,
        ),
    ] {
        let t = q.tag.unwrap();
        assert_eq!(c.call(&q), err(t, code), "tag {t}");
    }

    // STAT.
    let r = c.call(&req(Verb::Stat, 40).with_path("/p/a"));
    assert_eq!(r, Response::ok(Some(40)).with_rev(a2).with_len(5));
    let r = c.call(&req(Verb::Stat, 41).with_path("/p"));
    assert_eq!(r, Response::ok(Some(41)).with_rev(-2).with_len(2));
    for (t, p) in [
        (42, Some("/nope")),
        (43, Some("/a_b")),
        (44, Some("")),
        (45, None),
    ] {
        let mut q = req(Verb::Stat, t);
        q.path = p.map(String::from);
        assert_eq!(
            c.call(&q),
            Response::ok(Some(t)).with_rev(0).with_len(0),
            "{p:?}"
        );
    }

    // WALK.
    let r = c.call(&req(Verb::Walk, 50).with_path("/p/**").with_offset(0));
    assert_eq!(
        r,
        Response::ok(Some(50))
            .with_flags(FLAG_SET)
            .with_rev(a2)
            .with_path("/p/a")
            .with_value("world")
    );
    let r = c.call(&req(Verb::Walk, 51).with_path("/p/*").with_offset(1));
    assert_eq!((r.path.as_deref(), r.flags), (Some("/p/b"), Some(FLAG_SET)));
    assert_eq!(
        c.call(&req(Verb::Walk, 52).with_path("/p/**").with_offset(2)),
        err(52, ErrCode::Range)
    );
    assert_eq!(
        c.call(&req(Verb::Walk, 53).with_path("/p/**")),
        err(53, ErrCode::MissingArg)
    );
    let r = c.call(&req(Verb::Walk, 54).with_path("/p/[").with_offset(0));
    assert_eq!(
        r,
        Response::err_with_detail(Some(54), ErrCode::Other, "invalid glob pattern: /p/[")
    );

    // WAIT, from history.
    let r = c.call(&req(Verb::Wait, 60).with_path("/p/*").with_rev(a));
    assert_eq!(
        r,
        Response::ok(Some(60))
            .with_flags(FLAG_SET)
            .with_rev(a)
            .with_path("/p/a")
            .with_value("hello")
    );
    assert_eq!(
        c.call(&req(Verb::Wait, 61).with_path("/p/*")),
        err(61, ErrCode::MissingArg)
    );
    assert_eq!(
        c.call(&req(Verb::Wait, 62).with_rev(1)),
        err(62, ErrCode::MissingArg)
    );
    let r = c.call(&req(Verb::Wait, 63).with_path("/p/{").with_rev(1));
    assert_eq!(
        r,
        Response::err_with_detail(Some(63), ErrCode::Other, "invalid glob pattern: /p/{")
    );

    // DEL, and WAIT seeing it.
    assert_eq!(
        c.call(&req(Verb::Del, 70).with_path("/p/a").with_rev(a)),
        err(70, ErrCode::RevMismatch)
    );
    assert_eq!(
        c.call(&req(Verb::Del, 71).with_path("/p/a")),
        err(71, ErrCode::MissingArg)
    );
    assert_eq!(
        c.call(&req(Verb::Del, 72).with_path("/p").with_rev(-1)),
        err(72, ErrCode::IsDir)
    );
    let before = c.call(&req(Verb::Rev, 73)).rev.unwrap();
    assert_eq!(
        c.call(&req(Verb::Del, 74).with_path("/p/a").with_rev(a2)),
        Response::ok(Some(74))
    );
    let r = c.call(&req(Verb::Wait, 75).with_path("/p/**").with_rev(before + 1));
    assert_eq!(
        (r.path.as_deref(), r.flags, r.value.as_deref()),
        (Some("/p/a"), Some(FLAG_DEL), Some(&b""[..]))
    );

    // NOP: an empty answer and an event at "/".
    let before = c.call(&req(Verb::Rev, 80)).rev.unwrap();
    assert_eq!(c.call(&req(Verb::Nop, 81)), Response::ok(Some(81)));
    let r = c.call(&req(Verb::Wait, 82).with_path("/").with_rev(before + 1));
    assert_eq!((r.path.as_deref(), r.flags), (Some("/"), Some(0)));

    // Unknown verbs, ACCESS without secrets.
    for (t, v) in [(90, Some(0)), (91, Some(42)), (92, None)] {
        let q = Request {
            tag: Some(t),
            verb: v,
            ..Request::default()
        };
        assert_eq!(c.call(&q), err(t, ErrCode::UnknownVerb));
    }
    let r = c.call(&req(Verb::Access, 93).with_value("nope"));
    assert_eq!(
        r,
        Response::err_with_detail(Some(93), ErrCode::Other, "permission denied")
    );
    assert_eq!(c.call(&req(Verb::Access, 94)), Response::ok(Some(94)));

    // No tag in, no tag out.
    let r = c.call(&Request::new(Verb::Rev));
    assert_eq!(r.tag, None);
}

#[test]
fn too_late_below_the_history() {
    let s = Server::start_with(&["--hist", "3"], &[]);
    let mut c = s.raw();
    for i in 0..10 {
        let r = c.call(
            &req(Verb::Set, i)
                .with_path("/h")
                .with_rev(-1)
                .with_value("x"),
        );
        assert!(!r.is_err(), "{r:?}");
    }
    for q in [
        req(Verb::Get, 20).with_path("/h").with_rev(1),
        req(Verb::Stat, 21).with_path("/h").with_rev(1),
        req(Verb::Getdir, 22)
            .with_path("/")
            .with_offset(0)
            .with_rev(1),
        req(Verb::Walk, 23)
            .with_path("/**")
            .with_offset(0)
            .with_rev(1),
        req(Verb::Wait, 24).with_path("/**").with_rev(1),
    ] {
        let t = q.tag.unwrap();
        assert_eq!(c.call(&q), err(t, ErrCode::TooLate), "tag {t}");
    }
}

/// The original server's recorded exchanges, replayed byte for byte. The original was at
/// rev 59 when they start and the requests carry absolute revisions, so the node is first
/// brought to rev 59 with NOPs; from there every rev lines up (failed writes use up a rev in
/// both).
#[test]
fn wire_vectors_replayed_byte_for_byte() {
    let s = Server::start();
    let mut c = s.raw();
    loop {
        let rev = c.call(&req(Verb::Rev, 1)).rev.unwrap();
        assert!(rev <= 59, "a fresh node is already at rev {rev}");
        if rev == 59 {
            break;
        }
        assert_eq!(c.call(&req(Verb::Nop, 1)), Response::ok(Some(1)));
    }
    let text = include_str!("../crates/proto/tests/data/doozer-wire-vectors.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let hex = data_encoding::HEXLOWER_PERMISSIVE;
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let frame = hex
            .decode(v["request_frame_hex"].as_str().unwrap().as_bytes())
            .unwrap();
        let want = v["response_hex"].as_str().unwrap();
        c.write_raw(&frame);
        let got = data_encoding::HEXLOWER.encode(&c.recv_raw());
        assert_eq!(got, want, "vector {name:?}");
    }
}

/// The tree rules of doozer-protocol.md §2.2, §2.3 and §2.7 over the wire: byte-ordered
/// listings, any rev at or above the current one, no DEL through a file (the original's bug
/// deleted the file), and failed mutations as events on `/ctl/err`.
#[test]
fn tree_rules_over_the_wire() {
    let s = Server::start();
    let mut c = s.raw();
    for (t, p) in [
        (1, "/o/b"),
        (2, "/o/B"),
        (3, "/o/a-"),
        (4, "/o/1"),
        (5, "/o/a"),
    ] {
        let q = req(Verb::Set, t).with_path(p).with_rev(-1).with_value(p);
        assert!(!c.call(&q).is_err());
    }
    // Byte order: digits, then upper case, then lower case; a prefix first.
    let mut names = Vec::new();
    for off in 0.. {
        let r = c.call(&req(Verb::Getdir, 10).with_path("/o").with_offset(off));
        if r.is_err() {
            assert_eq!(r, err(10, ErrCode::Range));
            break;
        }
        names.push(r.path.unwrap());
    }
    assert_eq!(names, ["1", "B", "a", "a-", "b"]);
    let walked: Vec<String> = (0..5)
        .map(|off| {
            let r = c.call(&req(Verb::Walk, 11).with_path("/o/*").with_offset(off));
            r.path.unwrap()
        })
        .collect();
    assert_eq!(walked, ["/o/1", "/o/B", "/o/a", "/o/a-", "/o/b"]);

    // Any rev at or above the file's current one works.
    let cur = c.call(&req(Verb::Stat, 20).with_path("/o/b")).rev.unwrap();
    let r = c.call(
        &req(Verb::Set, 21)
            .with_path("/o/b")
            .with_rev(cur + 1_000_000)
            .with_value("far"),
    );
    assert!(!r.is_err(), "{r:?}");

    // DEL below a file is NOTDIR and the file stays.
    let before = c.call(&req(Verb::Get, 30).with_path("/o/a"));
    let r = c.call(&req(Verb::Del, 31).with_path("/o/a/x").with_rev(-1));
    assert_eq!(r, err(31, ErrCode::NotDir));
    let after = c.call(&req(Verb::Get, 30).with_path("/o/a"));
    assert_eq!((after.rev, after.value), (before.rev, before.value));

    // That failed DEL used up a rev: a set of /ctl/err at it, seen by WAIT.
    let failed = c.call(&req(Verb::Get, 40).with_path("/ctl/err"));
    let r = c.call(
        &req(Verb::Wait, 41)
            .with_path("/ctl/err")
            .with_rev(failed.rev.unwrap()),
    );
    assert_eq!(
        r,
        Response::ok(Some(41))
            .with_flags(FLAG_SET)
            .with_rev(failed.rev.unwrap())
            .with_path("/ctl/err")
            .with_value(failed.value.unwrap())
    );
    assert!(r.rev.unwrap() > after.rev.unwrap());
}
