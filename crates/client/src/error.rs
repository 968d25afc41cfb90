//! [`ClientError`]: everything a client call can fail with.

use doozer_proto::msg::ErrCode;

/// Why a client call failed.
///
/// The `Display` forms match what the original Go client printed, because the `doozer` CLI
/// prints them after `Error: ` and scripts grep for them: `REV_MISMATCH`,
/// `OTHER: permission denied`, `invalid uri`, `dial tcp 127.0.0.1:8046: connection refused`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Doozer error code.
    #[error("{}", doozer_display(*code, detail.as_deref()))]
    Doozer {
        /// The code.
        code: ErrCode,
        /// The server's `err_detail`, if it sent one (it does with `OTHER`).
        detail: Option<String>,
    },
    /// A write was sent but the connection was lost or its deadline passed before the
    /// answer came, or the server answered that it could not tell (`OTHER: timed out`
    /// after proposing it): it may or may not have been applied. It was not retried,
    /// because a retry could apply it twice. Read the data to find out.
    #[error("unknown outcome of {verb}: {reason}")]
    Unknown {
        /// The verb (`"SET"`, `"DEL"`, `"NOP"`).
        verb: &'static str,
        /// What happened: a lost connection or a deadline.
        reason: String,
    },
    /// The call's deadline passed before an answer (for a read, or a write that was never
    /// sent).
    #[error("timeout after {0:?}")]
    Timeout(std::time::Duration),
    /// No address of the cluster could be reached.
    #[error("dial tcp {addr}: {}", io_text(source))]
    Connect {
        /// The last address tried.
        addr: String,
        /// The last error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on an established connection, or a malformed frame from the server.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The `doozer:` URI is not usable. `Display` is exactly `invalid uri`, as in the
    /// original; the reason is in `reason`.
    #[error("invalid uri")]
    InvalidUri {
        /// What is wrong with it.
        reason: String,
    },
    /// TLS files could not be read or are not usable.
    #[error("tls: {0}")]
    Tls(String),
    /// The request would not fit in one frame (value too large).
    #[error("request too large: {len} bytes, the limit is {max}")]
    TooLarge {
        /// Encoded size of the request.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// The server's answer is missing a field the verb must carry.
    #[error("malformed response to {verb}: {what}")]
    Malformed {
        /// The verb.
        verb: &'static str,
        /// What was missing or wrong.
        what: &'static str,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// The Doozer error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrCode> {
        match self {
            ClientError::Doozer { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Is this the server's `REV_MISMATCH`?
    pub fn is_rev_mismatch(&self) -> bool {
        self.code() == Some(ErrCode::RevMismatch)
    }

    /// Shorthand for a [`ClientError::Doozer`] without detail.
    pub fn doozer(code: ErrCode) -> ClientError {
        ClientError::Doozer { code, detail: None }
    }
}

fn doozer_display(code: ErrCode, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!("{}: {d}", code.as_str()),
        _ => code.as_str().to_owned(),
    }
}

/// Go's wording for the common dial errors, the OS text otherwise.
fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset by peer".to_owned(),
        K::TimedOut => "i/o timeout".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_the_original_client() {
        assert_eq!(
            ClientError::doozer(ErrCode::RevMismatch).to_string(),
            "REV_MISMATCH"
        );
        let e = ClientError::Doozer {
            code: ErrCode::Other,
            detail: Some("permission denied".into()),
        };
        assert_eq!(e.to_string(), "OTHER: permission denied");
        let e = ClientError::InvalidUri {
            reason: "no ca".into(),
        };
        assert_eq!(e.to_string(), "invalid uri");
        let e = ClientError::Connect {
            addr: "127.0.0.1:8046".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(e.to_string(), "dial tcp 127.0.0.1:8046: connection refused");
        assert!(ClientError::doozer(ErrCode::RevMismatch).is_rev_mismatch());
        assert_eq!(ClientError::Closed.code(), None);
    }
}
