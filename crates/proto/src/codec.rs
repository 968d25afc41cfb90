//! Framing: each message is a 4-byte big-endian length N followed by N bytes of protobuf
//! (doozer-protocol.md §1.2).
//!
//! The original read the length as a signed int32 and allocated whatever it said, so a
//! negative length crashed it and a huge one exhausted memory. We cap N at a maximum
//! ([`MAX_FRAME`] by default) and check the header *before* reserving any space, so a
//! hostile header costs nothing.
//!
//! * Async: [`FrameCodec<In, Out>`] is a `tokio_util::codec` [`Decoder`] of `In` messages and
//!   an [`Encoder`] of `Out` messages; [`ServerCodec`] reads [`Request`]s and writes
//!   [`Response`]s, [`ClientCodec`] the reverse. (One `Out` type, not any message, so that
//!   `SinkExt::flush` on a `Framed` needs no type annotation.)
//! * Sync: [`encode_frame`], [`decode_frame`], [`read_frame`] and [`write_frame`].
//!
//! ```
//! use doozer_proto::codec::{decode_frame, encode_frame};
//! use doozer_proto::msg::{Request, Verb};
//! let frame = encode_frame(&Request::new(Verb::Rev).with_tag(2));
//! assert_eq!(frame, [0, 0, 0, 4, 0x08, 0x02, 0x10, 0x05]);
//! let req: Request = decode_frame(&frame).unwrap();
//! assert_eq!(req.known_verb(), Some(Verb::Rev));
//! ```

use std::fmt;
use std::io::{Read, Write};
use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::msg::{Request, Response};

/// Default largest message body (the N of a frame): 1 MiB of value plus 4 KiB for the path and
/// the other fields.
pub const MAX_FRAME: usize = 1024 * 1024 + 4 * 1024;

/// Bytes of the length header.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
///
/// After [`FrameError::TooLarge`] or [`FrameError::Negative`] from a decoder the stream is out
/// of step and must be closed. After [`FrameError::Decode`] the bad frame has been consumed,
/// but there is no tag to answer, so closing is the sensible reaction too.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length exceeds the maximum frame size (on read or on write).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The claimed (read) or actual (write) body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The length header has its sign bit set: negative as the original's int32.
    #[error("negative frame length {len}")]
    Negative {
        /// The header read as a signed 32-bit integer.
        len: i32,
    },
    /// The body is not a valid protobuf message of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The message could not be encoded (only possible with a full fixed-size buffer).
    #[error("unencodable message: {0}")]
    Encode(#[from] prost::EncodeError),
    /// [`decode_frame`] was given fewer bytes than the frame needs.
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the whole frame needs (header included, as far as known).
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// [`decode_frame`] was given bytes after the end of the frame.
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The underlying reader or writer failed (including end of stream mid-frame).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks a length header against `max`; returns the body length.
fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(header);
    if len < 0 {
        return Err(FrameError::Negative { len });
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// A length-prefixed protobuf codec that decodes `In` messages and encodes `Out` messages.
///
/// ```
/// use bytes::BytesMut;
/// use doozer_proto::codec::{ClientCodec, ServerCodec};
/// use doozer_proto::msg::{Request, Response, Verb};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut buf = BytesMut::new();
/// ClientCodec::new().encode(Request::new(Verb::Rev).with_tag(1), &mut buf).unwrap();
/// let req = ServerCodec::new().decode(&mut buf).unwrap().unwrap();
/// assert_eq!(req.tag, Some(1));
/// assert!(buf.is_empty());
/// ```
pub struct FrameCodec<In, Out> {
    max_frame: usize,
    // fn(Out) -> In: the codec owns no message, so it is Send + Sync whatever the types are.
    _types: PhantomData<fn(Out) -> In>,
}

/// The server side: decodes [`Request`]s, encodes [`Response`]s.
pub type ServerCodec = FrameCodec<Request, Response>;
/// The client side: decodes [`Response`]s, encodes [`Request`]s.
pub type ClientCodec = FrameCodec<Response, Request>;

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the default limit, [`MAX_FRAME`].
    pub fn new() -> Self {
        Self::with_max_frame(MAX_FRAME)
    }

    /// A codec whose frames (in both directions) carry at most `max_frame` body bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            _types: PhantomData,
        }
    }

    /// The limit in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        Self::with_max_frame(self.max_frame)
    }
}

impl<In, Out> fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("decodes", &std::any::type_name::<In>())
            .field("encodes", &std::any::type_name::<Out>())
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl<In: Message + Default, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header: [u8; HEADER_LEN] = [header[0], header[1], header[2], header[3]];
        // Checked before any reserve: the claimed size is only trusted once it is within limits.
        let len = body_len(header, self.max_frame)?;
        let total = HEADER_LEN + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        // Freezing lets prost hand out `Bytes` fields that share this buffer instead of copies.
        let body = src.split_to(len).freeze();
        Ok(Some(In::decode(body)?))
    }
}

impl<In, Out: Message> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        if len > self.max_frame || len > i32::MAX as usize {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        dst.reserve(HEADER_LEN + len);
        dst.put_u32(len as u32);
        msg.encode(dst)?;
        Ok(())
    }
}

/// One whole frame (header and body) holding `msg`.
///
/// Does not enforce a limit; [`write_frame`] and [`FrameCodec`] do.
pub fn encode_frame(msg: &impl Message) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    // A Vec grows on demand, so encoding into it cannot run out of space.
    msg.encode_raw(&mut out);
    out
}

/// Decodes `frame`, which must hold exactly one whole frame of at most [`MAX_FRAME`] body
/// bytes.
pub fn decode_frame<M: Message + Default>(frame: &[u8]) -> Result<M, FrameError> {
    let Some(header) = frame.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated {
            need: HEADER_LEN,
            have: frame.len(),
        });
    };
    let len = body_len([header[0], header[1], header[2], header[3]], MAX_FRAME)?;
    let total = HEADER_LEN + len;
    match frame.len().cmp(&total) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated {
            need: total,
            have: frame.len(),
        }),
        std::cmp::Ordering::Greater => Err(FrameError::TrailingBytes {
            extra: frame.len() - total,
        }),
        std::cmp::Ordering::Equal => Ok(M::decode(&frame[HEADER_LEN..])?),
    }
}

/// Reads one frame of at most `max_frame` body bytes from a blocking reader.
///
/// End of stream before the first header byte, or mid-frame, is `FrameError::Io` with kind
/// `UnexpectedEof`.
pub fn read_frame<M: Message + Default>(
    r: &mut impl Read,
    max_frame: usize,
) -> Result<M, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = body_len(header, max_frame)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(M::decode(&body[..])?)
}

/// Writes `msg` as one frame to a blocking writer, refusing bodies over `max_frame` bytes.
/// Does not flush.
pub fn write_frame(
    w: &mut impl Write,
    msg: &impl Message,
    max_frame: usize,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > max_frame || len > i32::MAX as usize {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    w.write_all(&encode_frame(msg))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ErrCode, Verb};
    use bytes::Bytes;

    fn rev_req(tag: i32) -> Request {
        Request::new(Verb::Rev).with_tag(tag)
    }

    #[test]
    fn round_trip_through_codec() {
        let mut buf = BytesMut::new();
        let mut client = ClientCodec::new();
        let mut server = ServerCodec::new();
        let set = Request::new(Verb::Set)
            .with_tag(3)
            .with_path("/v/a")
            .with_value("hello")
            .with_rev(0);
        client.encode(set.clone(), &mut buf).unwrap();
        client.encode(rev_req(4), &mut buf).unwrap();
        assert_eq!(server.decode(&mut buf).unwrap(), Some(set));
        assert_eq!(server.decode(&mut buf).unwrap(), Some(rev_req(4)));
        assert_eq!(server.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());

        server
            .encode(Response::err(Some(4), ErrCode::NoEnt), &mut buf)
            .unwrap();
        let resp = client.decode(&mut buf).unwrap().unwrap();
        assert_eq!(resp.error_code(), Some(ErrCode::NoEnt));
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let frame = encode_frame(&Request::new(Verb::Get).with_tag(9).with_path("/a/b"));
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::new();
        for (i, &b) in frame.iter().enumerate() {
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "after {i} bytes");
            buf.put_u8(b);
        }
        let req = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(req.path.as_deref(), Some("/a/b"));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_body_is_an_empty_message() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(
            ServerCodec::new().decode(&mut buf).unwrap(),
            Some(Request::default())
        );
        assert_eq!(encode_frame(&Response::ok(None)), [0, 0, 0, 0]);
    }

    #[test]
    fn negative_length_is_rejected() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe, 1, 2][..]);
        match codec.decode(&mut buf) {
            Err(FrameError::Negative { len: -2 }) => {}
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&[0x80, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Negative { len: i32::MIN })
        ));
        assert!(matches!(
            decode_frame::<Request>(&[0x80, 0, 0, 1]),
            Err(FrameError::Negative { .. })
        ));
    }

    #[test]
    fn oversized_length_is_rejected_without_allocating() {
        let mut codec = ServerCodec::new();
        // 0x7fffffff: 2 GiB claimed.
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, i32::MAX as usize);
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());

        // Exactly at the limit is fine; one more is not.
        let mut small = ServerCodec::with_max_frame(10);
        let mut buf = BytesMut::from(&[0, 0, 0, 10][..]);
        assert_eq!(small.decode(&mut buf).unwrap(), None);
        let mut buf = BytesMut::from(&[0, 0, 0, 11][..]);
        assert!(matches!(
            small.decode(&mut buf),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            decode_frame::<Request>(&huge),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let mut codec = ServerCodec::with_max_frame(16);
        let mut buf = BytesMut::new();
        let big = Response::ok(Some(1)).with_value(Bytes::from(vec![7u8; 100]));
        assert!(matches!(
            codec.encode(big.clone(), &mut buf),
            Err(FrameError::TooLarge { len: 104, max: 16 })
        ));
        assert!(buf.is_empty(), "nothing written on error");
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(&mut out, &big, 16),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty());

        // A 1 MiB value fits the default limit.
        let mib = Response::ok(Some(1))
            .with_rev(1)
            .with_value(Bytes::from(vec![0u8; 1024 * 1024]));
        ServerCodec::new().encode(mib.clone(), &mut buf).unwrap();
        assert_eq!(ClientCodec::new().decode(&mut buf).unwrap(), Some(mib));
    }

    #[test]
    fn bad_protobuf_is_a_decode_error_and_consumes_the_frame() {
        let mut codec = ServerCodec::new();
        // Field 1 varint with a truncated varint body, then a good frame.
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 0x08, 0xff][..]);
        buf.extend_from_slice(&encode_frame(&rev_req(5)));
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Decode(_))));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(rev_req(5)));
        // A string field that is not UTF-8.
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0x22, 0x01, 0xff][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Decode(_))));
    }

    #[test]
    fn decode_frame_wants_exactly_one_frame() {
        let frame = encode_frame(&rev_req(2));
        assert_eq!(decode_frame::<Request>(&frame).unwrap(), rev_req(2));
        assert!(matches!(
            decode_frame::<Request>(&frame[..3]),
            Err(FrameError::Truncated { need: 4, have: 3 })
        ));
        assert!(matches!(
            decode_frame::<Request>(&frame[..6]),
            Err(FrameError::Truncated { need: 8, have: 6 })
        ));
        let mut long = frame.clone();
        long.push(0);
        assert!(matches!(
            decode_frame::<Request>(&long),
            Err(FrameError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn sync_read_and_write() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &rev_req(1), MAX_FRAME).unwrap();
        write_frame(&mut wire, &rev_req(2), MAX_FRAME).unwrap();
        let mut r = &wire[..];
        assert_eq!(
            read_frame::<Request>(&mut r, MAX_FRAME).unwrap(),
            rev_req(1)
        );
        assert_eq!(
            read_frame::<Request>(&mut r, MAX_FRAME).unwrap(),
            rev_req(2)
        );
        match read_frame::<Request>(&mut r, MAX_FRAME) {
            Err(FrameError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        let mut r = &[0u8, 0, 1, 0][..];
        assert!(matches!(
            read_frame::<Request>(&mut r, 255),
            Err(FrameError::TooLarge { len: 256, max: 255 })
        ));
        let mut r = &[0u8, 0, 0, 5, 0x08][..];
        assert!(matches!(
            read_frame::<Request>(&mut r, MAX_FRAME),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn codec_debug_names_its_type() {
        let s = format!("{:?}", ServerCodec::new());
        assert!(
            s.contains("Request") && s.contains(&MAX_FRAME.to_string()),
            "{s}"
        );
        assert_eq!(ClientCodec::default().clone().max_frame(), MAX_FRAME);
    }
}
