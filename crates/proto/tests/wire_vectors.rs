//! Every request and response captured from the original doozerd 0.9.0-alpha
//! (`tests/data/doozer-wire-vectors.json`, a copy of `shared/testdata/`) must decode to the
//! listed fields and re-encode to exactly the same bytes.

use bytes::{Bytes, BytesMut};
use doozer_proto::codec::{decode_frame, encode_frame, ClientCodec, ServerCodec};
use doozer_proto::msg::{ErrCode, Request, Response, Verb};
use prost::Message;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

fn unhex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}

fn vectors() -> Vec<Value> {
    let text = include_str!("data/doozer-wire-vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

/// Reads only the keys we know, and fails on any other, so a new field in the file cannot be
/// silently ignored.
fn expected_request(v: &Value) -> Request {
    let mut r = Request::default();
    for (k, x) in v.as_object().unwrap() {
        match k.as_str() {
            "tag" => r.tag = Some(x.as_i64().unwrap() as i32),
            "verb" => {
                r.verb = Some(match x {
                    Value::String(s) => s.parse::<Verb>().unwrap() as i32,
                    n => n.as_i64().unwrap() as i32,
                })
            }
            "path" => r.path = Some(x.as_str().unwrap().to_owned()),
            "value" => r.value = Some(Bytes::from(x.as_str().unwrap().to_owned())),
            "other_tag" => r.other_tag = Some(x.as_i64().unwrap() as i32),
            "offset" => r.offset = Some(x.as_i64().unwrap() as i32),
            "rev" => r.rev = Some(x.as_i64().unwrap()),
            other => panic!("unexpected request key {other}"),
        }
    }
    r
}

fn expected_response(v: &Value) -> Response {
    let mut r = Response::default();
    for (k, x) in v.as_object().unwrap() {
        match k.as_str() {
            "tag" => r.tag = Some(x.as_i64().unwrap() as i32),
            "flags" => r.flags = Some(x.as_i64().unwrap() as i32),
            "rev" => r.rev = Some(x.as_i64().unwrap()),
            "path" => r.path = Some(x.as_str().unwrap().to_owned()),
            "value" => r.value = Some(Bytes::from(x.as_str().unwrap().to_owned())),
            "len" => r.len = Some(x.as_i64().unwrap() as i32),
            "err_code" => r.err_code = Some(x.as_str().unwrap().parse::<ErrCode>().unwrap() as i32),
            "err_detail" => r.err_detail = Some(x.as_str().unwrap().to_owned()),
            other => panic!("unexpected response key {other}"),
        }
    }
    r
}

#[test]
fn every_vector_decodes_and_reencodes_exactly() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 34);
    for v in &vectors {
        let name = v["name"].as_str().unwrap();

        let frame = unhex(v["request_frame_hex"].as_str().unwrap());
        let want_req = expected_request(&v["request"]);
        let req: Request = decode_frame(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req, want_req, "{name}: request");
        assert_eq!(encode_frame(&req), frame, "{name}: request bytes");
        assert_eq!(
            encode_frame(&want_req),
            frame,
            "{name}: built request bytes"
        );

        // The same bytes through the async codec.
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(
            ServerCodec::new().decode(&mut buf).unwrap(),
            Some(want_req.clone()),
            "{name}: codec"
        );
        assert!(buf.is_empty());

        let body = unhex(v["response_hex"].as_str().unwrap());
        let want_resp = expected_response(&v["response"]);
        let resp = Response::decode(&body[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp, want_resp, "{name}: response");
        assert_eq!(resp.encode_to_vec(), body, "{name}: response bytes");

        let mut out = BytesMut::new();
        ServerCodec::new().encode(want_resp, &mut out).unwrap();
        assert_eq!(&out[..4], &(body.len() as u32).to_be_bytes(), "{name}");
        assert_eq!(&out[4..], &body[..], "{name}: codec response bytes");
        assert_eq!(
            ClientCodec::new().decode(&mut out).unwrap(),
            Some(resp),
            "{name}"
        );
    }
}

#[test]
fn vectors_cover_the_interesting_shapes() {
    // Guard against a truncated copy of the file: spot-check a few known vectors.
    let vectors = vectors();
    let find = |name: &str| {
        vectors
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("missing vector {name}"))
    };
    let unknown = find("unknown verb");
    let req: Request =
        decode_frame(&unhex(unknown["request_frame_hex"].as_str().unwrap())).unwrap();
    assert_eq!((req.verb, req.known_verb()), (Some(42), None));

    let missing = find("get missing");
    let resp = Response::decode(&unhex(missing["response_hex"].as_str().unwrap())[..]).unwrap();
    assert_eq!(
        resp.value.as_deref(),
        Some(&b""[..]),
        "empty value is present"
    );
    assert_eq!(resp.rev, Some(0));

    let bad_glob = find("wait bad glob");
    let resp = Response::decode(&unhex(bad_glob["response_hex"].as_str().unwrap())[..]).unwrap();
    let err = doozer_proto::glob::Glob::new("/v/[").unwrap_err();
    assert_eq!(Response::from_error(Some(27), &err), resp);

    let del = find("del current");
    let resp = Response::decode(&unhex(del["response_hex"].as_str().unwrap())[..]).unwrap();
    assert_eq!(resp, Response::ok(Some(29)));
}
