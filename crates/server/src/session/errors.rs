//! How failures become Doozer responses.
//!
//! Error codes themselves live in `doozer_proto::msg::ErrCode`; store errors carry their
//! code (`ToErrCode`). Node failures (deadline, no quorum, shutdown) have no code of their
//! own in the protocol, so they are OTHER with a detail that says what happened, and for a
//! write, that its outcome is unknown.

use doozer_proto::msg::{ErrCode, Response, ToErrCode};

use crate::handle::NodeError;

/// The answer to a read whose barrier or wait failed.
pub fn read_failed(tag: Option<i32>, e: &NodeError) -> Response {
    Response::err_with_detail(tag, ErrCode::Other, e.to_string())
}

/// The answer to a write that did not complete. A write that timed out may still be
/// applied later, and the client has to know that it is not a clean failure.
pub fn write_failed(tag: Option<i32>, e: &NodeError) -> Response {
    let detail = match e {
        NodeError::Timeout => format!("{e}: the write may or may not have been applied"),
        other => other.to_string(),
    };
    Response::err_with_detail(tag, ErrCode::Other, detail)
}

/// The answer to a store error.
pub fn store_failed(tag: Option<i32>, e: &doozer_store::StoreError) -> Response {
    let code = e.err_code();
    if code == ErrCode::Other {
        // Unexpected: disk trouble or a bug, worth a line in the log.
        tracing::warn!(error = %e, "store read failed");
    }
    Response::from_error(tag, e)
}
