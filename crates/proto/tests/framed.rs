//! The codecs under `tokio_util::codec::Framed` over an in-memory duplex pipe: pipelined
//! requests, out-of-order answers, and a hostile frame ending the stream with a typed error.

use doozer_proto::codec::{ClientCodec, FrameError, ServerCodec};
use doozer_proto::{ErrCode, Request, Response, Verb};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Framed, FramedRead};

#[tokio::test]
async fn pipelined_requests_and_responses() {
    let (client_io, server_io) = tokio::io::duplex(64);
    let server = tokio::spawn(async move {
        let mut framed = Framed::new(server_io, ServerCodec::new());
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(framed.next().await.unwrap().unwrap());
        }
        // Answer in reverse order, as a server may when requests block.
        for req in got.iter().rev() {
            let resp = match req.known_verb() {
                Some(Verb::Rev) => Response::ok(req.tag).with_rev(7),
                Some(_) => Response::err(req.tag, ErrCode::NoEnt),
                None => Response::err(req.tag, ErrCode::UnknownVerb),
            };
            framed.send(resp).await.unwrap();
        }
        got
    });

    let mut client = Framed::new(client_io, ClientCodec::new());
    let big = Request::new(Verb::Get)
        .with_tag(2)
        .with_path("/a".repeat(500));
    let reqs = [
        Request::new(Verb::Rev).with_tag(1),
        big,
        Request::default().with_tag(3),
    ];
    for r in &reqs {
        client.feed(r.clone()).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut tags = Vec::new();
    for _ in 0..3 {
        let resp = client.next().await.unwrap().unwrap();
        match resp.tag {
            Some(1) => assert_eq!(resp.rev, Some(7)),
            Some(2) => assert_eq!(resp.error_code(), Some(ErrCode::NoEnt)),
            Some(3) => assert_eq!(resp.error_code(), Some(ErrCode::UnknownVerb)),
            other => panic!("tag {other:?}"),
        }
        tags.push(resp.tag.unwrap());
    }
    assert_eq!(tags, [3, 2, 1]);
    assert_eq!(server.await.unwrap(), reqs);
}

#[tokio::test]
async fn hostile_length_ends_the_stream_with_an_error() {
    let (mut client_io, server_io) = tokio::io::duplex(64);
    let mut reader = FramedRead::new(server_io, ServerCodec::new());
    client_io
        .write_all(&[0, 0, 0, 2, 0x08, 0x01])
        .await
        .unwrap();
    client_io
        .write_all(&[0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let first = reader.next().await.unwrap().unwrap();
    assert_eq!(first.tag, Some(1));
    match reader.next().await.unwrap() {
        Err(FrameError::Negative { len: -1 }) => {}
        other => panic!("{other:?}"),
    }

    let (mut client_io, server_io) = tokio::io::duplex(64);
    let mut reader = FramedRead::new(server_io, ServerCodec::with_max_frame(100));
    client_io.write_all(&[0, 0, 0, 101]).await.unwrap();
    match reader.next().await.unwrap() {
        Err(FrameError::TooLarge { len: 101, max: 100 }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn eof_mid_frame_is_an_error_and_clean_eof_is_not() {
    let (mut client_io, server_io) = tokio::io::duplex(64);
    let mut reader = FramedRead::new(server_io, ServerCodec::new());
    client_io.write_all(&[0, 0, 0, 9, 0x08]).await.unwrap();
    drop(client_io);
    assert!(matches!(reader.next().await, Some(Err(FrameError::Io(_)))));

    let (client_io, server_io) = tokio::io::duplex(64);
    let mut reader = FramedRead::new(server_io, ServerCodec::new());
    drop(client_io);
    assert!(reader.next().await.is_none());
}
