//! The two client protocol messages, [`Request`] and [`Response`] (doozer-protocol.md §1.3).
//!
//! They are proto2 messages with every field `optional`; we write them by hand with
//! `prost::Message` derives (no build script, no protoc). Every field is an `Option`, so an
//! absent field is not encoded, which keeps our bytes identical to the original server's.
//!
//! Enumerations ([`Verb`], [`ErrCode`]) are kept as raw `i32` in the messages so that an
//! unknown verb such as 42 still decodes and can be answered with [`ErrCode::UnknownVerb`].
//! Use [`Request::known_verb`] and [`Response::error_code`] to read them: prost's generated
//! getters `Request::verb()` and `Response::err_code()` return the *first* variant for an
//! absent or unknown value (GET and TAG_IN_USE), which is almost never what you want.
//!
//! Builders: `Request::new(Verb::Set).with_tag(1).with_path("/a").with_rev(-1).with_value("x")`,
//! `Response::ok(req.tag).with_rev(5)`, `Response::err(req.tag, ErrCode::NoEnt)`.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// Response flag of WAIT and WALK: the file was created or changed.
pub const FLAG_SET: i32 = 4;
/// Response flag of WAIT: the file was deleted.
pub const FLAG_DEL: i32 = 8;

/// Special revision: the file is missing (also "create only" as a SET argument).
pub const REV_MISSING: i64 = 0;
/// Special revision: unconditional SET or DEL.
pub const REV_CLOBBER: i64 = -1;
/// Special revision: STAT's answer for a directory.
pub const REV_DIR: i64 = -2;

/// A client→server message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Chosen by the client, echoed in the response.
    #[prost(int32, optional, tag = "1")]
    pub tag: Option<i32>,
    /// A [`Verb`] as a raw value; see [`Request::known_verb`].
    #[prost(enumeration = "Verb", optional, tag = "2")]
    pub verb: Option<i32>,
    /// A path, or a glob for WAIT and WALK.
    #[prost(string, optional, tag = "4")]
    pub path: Option<String>,
    /// SET's body; ACCESS's secret.
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub value: Option<Bytes>,
    /// Unused (left over from the removed CANCEL verb); decoded, never acted on.
    #[prost(int32, optional, tag = "6")]
    pub other_tag: Option<i32>,
    /// GETDIR and WALK index.
    #[prost(int32, optional, tag = "7")]
    pub offset: Option<i32>,
    /// Compare-and-set rev (SET, DEL), snapshot rev (GET, GETDIR, WALK, STAT), start rev (WAIT).
    #[prost(int64, optional, tag = "9")]
    pub rev: Option<i64>,
}

/// A server→client message.
// prost generates a `len()` getter for the STAT field `len`; it is not a collection length.
#[allow(clippy::len_without_is_empty)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// The request's tag; absent when the request had none.
    #[prost(int32, optional, tag = "1")]
    pub tag: Option<i32>,
    /// [`FLAG_SET`], [`FLAG_DEL`] or 0; set only by WAIT and WALK.
    #[prost(int32, optional, tag = "2")]
    pub flags: Option<i32>,
    /// A revision; its meaning depends on the verb.
    #[prost(int64, optional, tag = "3")]
    pub rev: Option<i64>,
    /// A path (WAIT, WALK) or a name (GETDIR).
    #[prost(string, optional, tag = "5")]
    pub path: Option<String>,
    /// A file body (GET, WAIT, WALK) or the node ID (SELF).
    #[prost(bytes = "bytes", optional, tag = "6")]
    pub value: Option<Bytes>,
    /// STAT only: byte length of a file, or number of entries of a directory.
    #[prost(int32, optional, tag = "8")]
    pub len: Option<i32>,
    /// An [`ErrCode`] as a raw value; present means the request failed. See
    /// [`Response::error_code`].
    #[prost(enumeration = "ErrCode", optional, tag = "100")]
    pub err_code: Option<i32>,
    /// Free text, set with [`ErrCode::Other`].
    #[prost(string, optional, tag = "101")]
    pub err_detail: Option<String>,
}

/// The request verbs (`Request.Verb`). Historical values (CHECKIN=0, ESET=4, WATCH=8,
/// CANCEL=10, MONITOR=11, SYNCPATH=12) are deliberately absent: they get UNKNOWN_VERB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Verb {
    /// Read a file.
    Get = 1,
    /// Write a file (compare-and-set on rev).
    Set = 2,
    /// Delete a file (compare-and-set on rev).
    Del = 3,
    /// The node's applied revision.
    Rev = 5,
    /// Wait for the first matching event at or after a rev.
    Wait = 6,
    /// Propose a no-op through consensus.
    Nop = 7,
    /// The offset-th file matching a glob.
    Walk = 9,
    /// The offset-th entry of a directory.
    Getdir = 14,
    /// A file's rev and length, or a directory's entry count.
    Stat = 16,
    /// The node's ID.
    SelfId = 20,
    /// Present a secret.
    Access = 99,
}

/// All verbs, in wire-value order.
const VERBS: [Verb; 11] = [
    Verb::Get,
    Verb::Set,
    Verb::Del,
    Verb::Rev,
    Verb::Wait,
    Verb::Nop,
    Verb::Walk,
    Verb::Getdir,
    Verb::Stat,
    Verb::SelfId,
    Verb::Access,
];

impl Verb {
    /// Every verb, in wire-value order.
    pub const ALL: &'static [Verb] = &VERBS;

    /// The protocol name: `"GET"`, `"SELF"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Set => "SET",
            Verb::Del => "DEL",
            Verb::Rev => "REV",
            Verb::Wait => "WAIT",
            Verb::Nop => "NOP",
            Verb::Walk => "WALK",
            Verb::Getdir => "GETDIR",
            Verb::Stat => "STAT",
            Verb::SelfId => "SELF",
            Verb::Access => "ACCESS",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown protocol name given to [`Verb::from_str`] or [`ErrCode::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} name: {name:?}")]
pub struct UnknownName {
    /// `"verb"` or `"error code"`.
    pub kind: &'static str,
    /// The name that was not recognised.
    pub name: String,
}

impl FromStr for Verb {
    type Err = UnknownName;
    /// Parses the protocol name (`"GET"`, exact case).
    fn from_str(s: &str) -> Result<Verb, UnknownName> {
        VERBS
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "verb",
                name: s.to_owned(),
            })
    }
}

/// The error codes (`Response.Err`). This is the one place Doozer error codes live: other
/// crates' errors map to it through [`ToErrCode`]. Value 0 is reserved and never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrCode {
    /// Defined but never sent (duplicate tags are not detected).
    TagInUse = 1,
    /// Missing or unknown verb.
    UnknownVerb = 2,
    /// This connection cannot write (historically REDIRECT).
    Readonly = 3,
    /// The rev is older than the retained history.
    TooLate = 4,
    /// Compare-and-set failed (historically CAS_MISMATCH).
    RevMismatch = 5,
    /// Invalid path.
    BadPath = 6,
    /// A required request field is absent.
    MissingArg = 7,
    /// Offset out of range.
    Range = 8,
    /// A path component is a file.
    NotDir = 20,
    /// The path is a directory.
    IsDir = 21,
    /// No such file or directory.
    NoEnt = 22,
    /// Anything else; details in `err_detail`.
    Other = 127,
}

const ERR_CODES: [ErrCode; 12] = [
    ErrCode::TagInUse,
    ErrCode::UnknownVerb,
    ErrCode::Readonly,
    ErrCode::TooLate,
    ErrCode::RevMismatch,
    ErrCode::BadPath,
    ErrCode::MissingArg,
    ErrCode::Range,
    ErrCode::NotDir,
    ErrCode::IsDir,
    ErrCode::NoEnt,
    ErrCode::Other,
];

impl ErrCode {
    /// Every code, in wire-value order.
    pub const ALL: &'static [ErrCode] = &ERR_CODES;

    /// The protocol name: `"REV_MISMATCH"`, `"NOENT"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrCode::TagInUse => "TAG_IN_USE",
            ErrCode::UnknownVerb => "UNKNOWN_VERB",
            ErrCode::Readonly => "READONLY",
            ErrCode::TooLate => "TOO_LATE",
            ErrCode::RevMismatch => "REV_MISMATCH",
            ErrCode::BadPath => "BAD_PATH",
            ErrCode::MissingArg => "MISSING_ARG",
            ErrCode::Range => "RANGE",
            ErrCode::NotDir => "NOTDIR",
            ErrCode::IsDir => "ISDIR",
            ErrCode::NoEnt => "NOENT",
            ErrCode::Other => "OTHER",
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrCode {
    type Err = UnknownName;
    /// Parses the protocol name (`"REV_MISMATCH"`, exact case). The historical names
    /// `REDIRECT` and `CAS_MISMATCH` are accepted too.
    fn from_str(s: &str) -> Result<ErrCode, UnknownName> {
        match s {
            "REDIRECT" => return Ok(ErrCode::Readonly),
            "CAS_MISMATCH" => return Ok(ErrCode::RevMismatch),
            _ => {}
        }
        ERR_CODES
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "error code",
                name: s.to_owned(),
            })
    }
}

/// An error that has a Doozer error code: how other crates' errors become a [`Response`].
///
/// ```
/// use doozer_proto::msg::{ErrCode, Response, ToErrCode};
/// let err = doozer_proto::glob::Glob::new("/v/[").unwrap_err();
/// let resp = Response::from_error(Some(7), &err);
/// assert_eq!(resp.error_code(), Some(ErrCode::Other));
/// assert_eq!(resp.err_detail.as_deref(), Some("invalid glob pattern: /v/["));
/// ```
pub trait ToErrCode {
    /// The code to send.
    fn err_code(&self) -> ErrCode;
    /// Text for `err_detail`, if any. The original only sent detail with OTHER.
    fn err_detail(&self) -> Option<String> {
        None
    }
}

impl ToErrCode for ErrCode {
    fn err_code(&self) -> ErrCode {
        *self
    }
}

impl Request {
    /// A request for `verb` with no other field set.
    pub fn new(verb: Verb) -> Request {
        Request {
            verb: Some(verb as i32),
            ..Request::default()
        }
    }

    /// The verb, if present and known.
    pub fn known_verb(&self) -> Option<Verb> {
        self.verb.and_then(|v| Verb::try_from(v).ok())
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: i32) -> Request {
        self.tag = Some(tag);
        self
    }

    /// Sets the path (or glob).
    pub fn with_path(mut self, path: impl Into<String>) -> Request {
        self.path = Some(path.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Request {
        self.value = Some(value.into());
        self
    }

    /// Sets the rev.
    pub fn with_rev(mut self, rev: i64) -> Request {
        self.rev = Some(rev);
        self
    }

    /// Sets the offset.
    pub fn with_offset(mut self, offset: i32) -> Request {
        self.offset = Some(offset);
        self
    }
}

impl Response {
    /// A success carrying only `tag` (which is absent if the request had none).
    pub fn ok(tag: Option<i32>) -> Response {
        Response {
            tag,
            ..Response::default()
        }
    }

    /// A failure with `code` and no detail.
    pub fn err(tag: Option<i32>, code: ErrCode) -> Response {
        Response {
            tag,
            err_code: Some(code as i32),
            ..Response::default()
        }
    }

    /// A failure with `code` and `err_detail` text (the original used detail only with OTHER).
    pub fn err_with_detail(tag: Option<i32>, code: ErrCode, detail: impl Into<String>) -> Response {
        Response {
            tag,
            err_code: Some(code as i32),
            err_detail: Some(detail.into()),
            ..Response::default()
        }
    }

    /// A failure built from any error that knows its Doozer code.
    pub fn from_error(tag: Option<i32>, err: &(impl ToErrCode + ?Sized)) -> Response {
        Response {
            tag,
            err_code: Some(err.err_code() as i32),
            err_detail: err.err_detail(),
            ..Response::default()
        }
    }

    /// Did the request fail?
    pub fn is_err(&self) -> bool {
        self.err_code.is_some()
    }

    /// The error code, if the request failed. A code this library does not know is reported
    /// as [`ErrCode::Other`]; the raw value stays in `err_code`.
    pub fn error_code(&self) -> Option<ErrCode> {
        self.err_code
            .map(|c| ErrCode::try_from(c).unwrap_or(ErrCode::Other))
    }

    /// Sets flags.
    pub fn with_flags(mut self, flags: i32) -> Response {
        self.flags = Some(flags);
        self
    }

    /// Sets rev.
    pub fn with_rev(mut self, rev: i64) -> Response {
        self.rev = Some(rev);
        self
    }

    /// Sets path.
    pub fn with_path(mut self, path: impl Into<String>) -> Response {
        self.path = Some(path.into());
        self
    }

    /// Sets value.
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Response {
        self.value = Some(value.into());
        self
    }

    /// Sets len.
    pub fn with_len(mut self, len: i32) -> Response {
        self.len = Some(len);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn verb_values_and_names() {
        let expect = [
            (Verb::Get, 1, "GET"),
            (Verb::Set, 2, "SET"),
            (Verb::Del, 3, "DEL"),
            (Verb::Rev, 5, "REV"),
            (Verb::Wait, 6, "WAIT"),
            (Verb::Nop, 7, "NOP"),
            (Verb::Walk, 9, "WALK"),
            (Verb::Getdir, 14, "GETDIR"),
            (Verb::Stat, 16, "STAT"),
            (Verb::SelfId, 20, "SELF"),
            (Verb::Access, 99, "ACCESS"),
        ];
        assert_eq!(Verb::ALL.len(), expect.len());
        for (v, n, s) in expect {
            assert_eq!(v as i32, n);
            assert_eq!(Verb::try_from(n), Ok(v));
            assert_eq!(v.as_str(), s);
            assert_eq!(v.to_string(), s);
            assert_eq!(s.parse::<Verb>(), Ok(v));
        }
        for old in [0, 4, 8, 10, 11, 12, 42] {
            assert!(Verb::try_from(old).is_err(), "{old}");
        }
        assert!("get".parse::<Verb>().is_err());
        assert_eq!(
            "CHECKIN".parse::<Verb>().unwrap_err().to_string(),
            "unknown verb name: \"CHECKIN\""
        );
    }

    #[test]
    fn err_code_values_and_names() {
        let expect = [
            (ErrCode::TagInUse, 1, "TAG_IN_USE"),
            (ErrCode::UnknownVerb, 2, "UNKNOWN_VERB"),
            (ErrCode::Readonly, 3, "READONLY"),
            (ErrCode::TooLate, 4, "TOO_LATE"),
            (ErrCode::RevMismatch, 5, "REV_MISMATCH"),
            (ErrCode::BadPath, 6, "BAD_PATH"),
            (ErrCode::MissingArg, 7, "MISSING_ARG"),
            (ErrCode::Range, 8, "RANGE"),
            (ErrCode::NotDir, 20, "NOTDIR"),
            (ErrCode::IsDir, 21, "ISDIR"),
            (ErrCode::NoEnt, 22, "NOENT"),
            (ErrCode::Other, 127, "OTHER"),
        ];
        assert_eq!(ErrCode::ALL.len(), expect.len());
        for (c, n, s) in expect {
            assert_eq!(c as i32, n);
            assert_eq!(ErrCode::try_from(n), Ok(c));
            assert_eq!(c.as_str(), s);
            assert_eq!(c.to_string(), s);
            assert_eq!(s.parse::<ErrCode>(), Ok(c));
            assert_eq!(c.err_code(), c);
        }
        assert!(ErrCode::try_from(0).is_err());
        assert_eq!("REDIRECT".parse::<ErrCode>(), Ok(ErrCode::Readonly));
        assert_eq!("CAS_MISMATCH".parse::<ErrCode>(), Ok(ErrCode::RevMismatch));
        assert!("NOPE".parse::<ErrCode>().is_err());
    }

    #[test]
    fn absent_fields_are_not_encoded() {
        assert!(Request::default().encode_to_vec().is_empty());
        assert!(Response::default().encode_to_vec().is_empty());
        // An empty value is present, so it is encoded (GET of a missing file sends `value: ""`).
        let r = Response::ok(Some(15)).with_rev(0).with_value("");
        assert_eq!(r.encode_to_vec(), [0x08, 0x0f, 0x18, 0x00, 0x32, 0x00]);
    }

    #[test]
    fn unknown_verb_decodes_and_keeps_raw_value() {
        let bytes = [0x08, 0x22, 0x10, 0x2a]; // tag 34, verb 42
        let req = Request::decode(&bytes[..]).unwrap();
        assert_eq!(req.tag, Some(34));
        assert_eq!(req.verb, Some(42));
        assert_eq!(req.known_verb(), None);
        assert_eq!(req.encode_to_vec(), bytes);
        assert_eq!(Request::default().known_verb(), None);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // Field 8 (the removed `limit`) as a varint, then tag 1.
        let req = Request::decode(&[0x40, 0x05, 0x08, 0x01][..]).unwrap();
        assert_eq!(req, Request::default().with_tag(1));
    }

    #[test]
    fn builders_and_constructors() {
        let req = Request::new(Verb::Set)
            .with_tag(3)
            .with_path("/v/a")
            .with_value("hello")
            .with_rev(0)
            .with_offset(2);
        assert_eq!(req.known_verb(), Some(Verb::Set));
        assert_eq!(req.tag, Some(3));
        assert_eq!(req.path.as_deref(), Some("/v/a"));
        assert_eq!(req.value.as_deref(), Some(&b"hello"[..]));
        assert_eq!((req.rev, req.offset), (Some(0), Some(2)));

        let ok = Response::ok(None);
        assert_eq!(ok, Response::default());
        assert!(!ok.is_err());
        assert_eq!(ok.error_code(), None);

        let e = Response::err(Some(4), ErrCode::RevMismatch);
        assert_eq!(e.encode_to_vec(), [0x08, 0x04, 0xa0, 0x06, 0x05]);
        assert!(e.is_err());
        assert_eq!(e.error_code(), Some(ErrCode::RevMismatch));

        let d = Response::err_with_detail(Some(36), ErrCode::Other, "permission denied");
        assert_eq!(d.err_detail.as_deref(), Some("permission denied"));
        assert_eq!(
            Response::from_error(Some(36), &ErrCode::Other),
            Response::err(Some(36), ErrCode::Other)
        );

        let unknown = Response {
            err_code: Some(55),
            ..Response::default()
        };
        assert_eq!(unknown.error_code(), Some(ErrCode::Other));

        let w = Response::ok(Some(24))
            .with_flags(FLAG_SET)
            .with_rev(63)
            .with_path("/v/a")
            .with_value("world")
            .with_len(5);
        assert_eq!(
            (w.flags, w.rev, w.path.as_deref(), w.len),
            (Some(4), Some(63), Some("/v/a"), Some(5))
        );
    }
}
