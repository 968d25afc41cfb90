//! The Doozer client protocol, shared by the server, the client library and the CLI.
//!
//! doozer-rs speaks the original Doozer client protocol byte for byte
//! (`shared/doc/doozer-protocol.md`). This crate holds everything about that protocol that
//! does not need a network or a store:
//!
//! * [`msg`]: the [`Request`] and [`Response`] protobuf messages, the [`Verb`]s, the
//!   [`ErrCode`]s (the one place Doozer error codes live) and [`ToErrCode`], through which
//!   other crates' errors become responses;
//! * [`codec`]: framing (4-byte big-endian length + protobuf), as a `tokio_util` codec
//!   ([`codec::ServerCodec`], [`codec::ClientCodec`]) and as sync helpers, bounded by
//!   [`codec::MAX_FRAME`];
//! * [`path`]: path validation ([`path::validate`]) and splitting;
//! * [`glob`]: the WAIT/WALK glob language ([`Glob`]);
//! * [`uri`]: `doozer:?ca=...&sk=...&cn=...` URIs ([`DoozerUri`]).
//!
//! A server's view of one exchange:
//!
//! ```
//! use doozer_proto::codec::{decode_frame, encode_frame};
//! use doozer_proto::{path, ErrCode, Glob, Request, Response, Verb};
//!
//! // A client sends SET /v/a = "hello" if the file is missing (rev 0), tag 3.
//! let frame = encode_frame(
//!     &Request::new(Verb::Set).with_tag(3).with_path("/v/a").with_value("hello").with_rev(0),
//! );
//! let req: Request = decode_frame(&frame).unwrap();
//!
//! let resp = match (req.known_verb(), req.path.as_deref()) {
//!     (Some(Verb::Set), Some(p)) => match path::validate(p) {
//!         Ok(()) => Response::ok(req.tag).with_rev(60), // the store applied it at rev 60
//!         Err(e) => Response::from_error(req.tag, &e),  // BAD_PATH
//!     },
//!     (Some(_), None) => Response::err(req.tag, ErrCode::MissingArg),
//!     _ => Response::err(req.tag, ErrCode::UnknownVerb),
//! };
//! // Byte for byte what doozerd 0.9 answered (see tests/data/doozer-wire-vectors.json).
//! assert_eq!(encode_frame(&resp), [0, 0, 0, 4, 0x08, 0x03, 0x18, 0x3c]);
//!
//! // Watchers name files with globs; `/**` sees everything, including nop events at `/`.
//! assert!(Glob::new("/v/*").unwrap().matches("/v/a"));
//! assert!(Glob::new("/**").unwrap().matches("/"));
//! ```
//!
//! Every decoder here takes bytes from outside and answers bad input with a typed error,
//! never a panic or an allocation the input asked for.

pub mod codec;
pub mod glob;
pub mod msg;
pub mod path;
pub mod uri;

pub use codec::{FrameCodec, FrameError, MAX_FRAME};
pub use glob::{Glob, GlobError};
pub use msg::{ErrCode, Request, Response, ToErrCode, Verb, FLAG_DEL, FLAG_SET};
pub use path::PathError;
/// Re-exported so users can call `encode_to_vec`/`decode` without depending on prost.
pub use prost::Message;
pub use uri::{DoozerUri, UriError};

/// Any error of this crate, for callers that want one type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// An invalid glob.
    #[error(transparent)]
    Glob(#[from] GlobError),
    /// A frame that could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// An invalid `doozer:` URI.
    #[error(transparent)]
    Uri(#[from] UriError),
}

impl ToErrCode for Error {
    /// Paths give BAD_PATH; globs give OTHER with `invalid glob pattern: <pat>` as the
    /// original did; anything else is OTHER with the error's text.
    fn err_code(&self) -> ErrCode {
        match self {
            Error::Path(e) => e.err_code(),
            Error::Glob(e) => e.err_code(),
            Error::Frame(_) | Error::Uri(_) => ErrCode::Other,
        }
    }

    fn err_detail(&self) -> Option<String> {
        match self {
            Error::Path(e) => e.err_detail(),
            Error::Glob(e) => e.err_detail(),
            Error::Frame(_) | Error::Uri(_) => Some(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes() {
        let e = Error::from(path::validate("/a_b").unwrap_err());
        assert_eq!((e.err_code(), e.err_detail()), (ErrCode::BadPath, None));
        let e = Error::from(Glob::new("/v/[").unwrap_err());
        assert_eq!(e.err_code(), ErrCode::Other);
        assert_eq!(
            e.err_detail().as_deref(),
            Some("invalid glob pattern: /v/[")
        );
        let e = Error::from(DoozerUri::parse("x").unwrap_err());
        assert_eq!(e.err_code(), ErrCode::Other);
        assert_eq!(e.err_detail().unwrap(), e.to_string());
        let e = Error::from(FrameError::Negative { len: -1 });
        assert_eq!(e.err_code(), ErrCode::Other);
        assert_eq!(e.to_string(), "negative frame length -1");
    }
}
