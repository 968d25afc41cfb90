//! Hot paths of the protocol layer: frame decode/encode (every request and response) and glob
//! matching (every history event against every waiting WAIT).
//!
//! `cargo bench -p doozer-proto`

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use doozer_proto::codec::{ClientCodec, ServerCodec};
use doozer_proto::{Glob, Request, Response, Verb};
use tokio_util::codec::{Decoder, Encoder};

fn frames(c: &mut Criterion) {
    let req = Request::new(Verb::Set)
        .with_tag(7)
        .with_path("/app/config/database/primary")
        .with_value(Bytes::from(vec![b'x'; 1024]))
        .with_rev(-1);
    let mut wire = BytesMut::new();
    ClientCodec::new().encode(req.clone(), &mut wire).unwrap();
    let wire = wire.freeze();

    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_set_1KiB", |b| {
        let mut codec = ServerCodec::new();
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            black_box(codec.decode(&mut buf).unwrap().unwrap())
        })
    });
    let resp = Response::ok(Some(7))
        .with_rev(123_456)
        .with_value(Bytes::from(vec![b'y'; 1024]));
    g.bench_function("encode_get_response_1KiB", |b| {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            codec.encode(black_box(resp.clone()), &mut buf).unwrap();
        })
    });
    g.finish();
}

fn globs(c: &mut Criterion) {
    let mut g = c.benchmark_group("glob");
    g.throughput(Throughput::Elements(1));
    let star = Glob::new("/ctl/node/*/addr").unwrap();
    g.bench_function("star_hit", |b| {
        b.iter(|| black_box(&star).matches(black_box("/ctl/node/HZAVFJHCLRH5WCUT/addr")))
    });
    g.bench_function("star_prefix_miss", |b| {
        b.iter(|| black_box(&star).matches(black_box("/app/config/database/primary")))
    });
    let all = Glob::new("/app/**").unwrap();
    g.bench_function("doublestar_hit", |b| {
        b.iter(|| black_box(&all).matches(black_box("/app/config/database/primary")))
    });
    let evil = Glob::new(&format!("/{}b", "a*".repeat(20))).unwrap();
    let long = format!("/{}", "a".repeat(1000));
    g.bench_function("pathological_20_stars_1000_chars", |b| {
        b.iter(|| black_box(&evil).matches(black_box(&long)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = frames, globs
}
criterion_main!(benches);
