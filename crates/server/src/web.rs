//! The read-only web view (`-w ADDR`; without `-w`, port 8000 on the `-l` host): HTTP
//! beside the Doozer protocol, as the original doozerd had.
//!
//! * `GET /`: a self-contained HTML page (`web/index.html`) that browses the tree and follows
//!   it live through the event stream;
//! * `GET /v1/tree/<path>?rev=N`: a file or a directory as JSON (`web/tree.rs`);
//! * `GET /v1/events?glob=G&rev=N`: matching changes as server-sent events (`web/events.rs`);
//! * `GET /health` and `GET /metrics`: the node's view of the cluster (`web/status.rs`).
//!
//! Nothing here writes: the tree changes only through the client protocol (an authenticated
//! HTTP/JSON API with writes is planned). Reads go through the same node primitives as a
//! client session's (read barrier, waiting for a revision, the store's history and event
//! broadcast). The view has no login: it gets the rights of an anonymous client
//! connection, so when `DOOZER_RWSECRET` and `DOOZER_ROSECRET` are both set (anonymous
//! clients may not read), the tree and events answer 403.

mod events;
mod limit;
mod status;
mod tree;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use doozer_proto::msg::{ErrCode, ToErrCode};
use doozer_store::StoreError;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::client_conn::ClientCount;
use crate::config::WebView;
use crate::core::Handle;
use crate::handle::NodeError;
use crate::node::StartError;

/// Connections served at once; more wait in the kernel's backlog until one closes.
pub const MAX_CONNS: usize = 2048;
/// Event streams (`/v1/events`) open at once; more get 503.
pub const MAX_EVENT_STREAMS: usize = 1024;
/// Entries of one directory listed by `/v1/tree`; a bigger directory is cut short
/// (`"truncated": true`).
pub const MAX_DIR_ENTRIES: usize = 1000;
/// How long the server waits for open requests to finish once the node stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Interval of keep-alive comments on an idle event stream (they also reveal a client that
/// went away).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What every handler shares.
#[derive(Clone)]
struct Web {
    h: Handle,
    /// May anonymous clients read (no secrets, or only the read-write one)?
    readable: bool,
    /// One permit per open event stream.
    streams: Arc<Semaphore>,
    /// One permit per open connection.
    conns: Arc<Semaphore>,
    /// The node's open client (Doozer protocol) connections.
    clients: ClientCount,
}

impl Web {
    fn check_readable(&self) -> Result<(), ApiError> {
        if self.readable {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrCode::Other,
            "this cluster requires a secret to read; the web view has no login",
        ))
    }

    fn open_streams(&self) -> usize {
        MAX_EVENT_STREAMS - self.streams.available_permits()
    }

    fn open_conns(&self) -> usize {
        MAX_CONNS - self.conns.available_permits()
    }
}

/// Binds the web view's listener as `spec` says, before the node starts serving: `None`
/// when it is off, or when the default address (`default_addr`, computed only then) is
/// taken: that is a warning, not an error, so that a second node on a host runs. An
/// explicit address that cannot be bound fails the start, like `-l`.
pub(crate) async fn bind(
    spec: &WebView,
    default_addr: impl FnOnce() -> String,
) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let addr = match spec {
        WebView::Off => return Ok(None),
        WebView::At(a) => a.clone(),
        WebView::Default => return Ok(bind_default(&default_addr()).await),
    };
    let bind_err = |source| StartError::Bind {
        addr: addr.clone(),
        source,
    };
    let l = TcpListener::bind(&addr).await.map_err(bind_err)?;
    let a = l.local_addr().map_err(bind_err)?;
    Ok(Some((l, a)))
}

/// Binds the default address, or warns and gives up.
async fn bind_default(addr: &str) -> Option<(TcpListener, SocketAddr)> {
    let bound = match TcpListener::bind(addr).await {
        Ok(l) => l.local_addr().map(|a| (l, a)),
        Err(e) => Err(e),
    };
    match bound {
        Ok(b) => Some(b),
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "in use".to_string()
            } else {
                format!("cannot be bound ({e})")
            };
            tracing::warn!("web view not served: {addr} {why}; pass -w ADDR or -w false");
            None
        }
    }
}

/// Serves the web view on `listener` until the node stops.
pub(crate) async fn serve(h: Handle, listener: TcpListener, clients: ClientCount) {
    let addr = listener.local_addr().ok();
    let stop = h.core.stop.clone();
    let web = Web {
        readable: crate::session::Secrets::from_env().initial().read,
        streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        conns: Arc::new(Semaphore::new(MAX_CONNS)),
        clients,
        h,
    };
    let listener = limit::Limited {
        inner: listener,
        slots: web.conns.clone(),
    };
    let app = router(web);
    let graceful =
        axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    tokio::select! {
        r = graceful => if let Err(e) = r {
            tracing::error!(error = %e, ?addr, "web view stopped");
        },
        // Event streams end when the node stops; requests slower than this (a read waiting
        // for its barrier) are not waited for.
        _ = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::debug!(?addr, "web view: requests still open at shutdown; dropped");
        }
    }
}

/// Logs where the web view listens (called once bound).
pub(crate) fn log_listening(addr: SocketAddr) {
    tracing::info!(%addr, "web view listening (read-only HTTP)");
}

fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/v1/tree", get(tree::root))
        .route("/v1/tree/", get(tree::root))
        .route("/v1/tree/{*path}", get(tree::path))
        .route("/v1/events", get(events::stream))
        .route("/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrCode::Other, "no such endpoint")
        })
        .with_state(web)
}

/// The page, built into the binary (no external assets).
const INDEX_HTML: &str = include_str!("web/index.html");

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// A failed request: the HTTP status and the Doozer error code and detail, answered as
/// `{"error": "TOO_LATE", "detail": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: ErrCode,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn bad_request(code: ErrCode, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "web view: internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrCode::Other,
            "internal error",
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code.as_str(), "detail": self.detail })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.json())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let code = e.err_code();
        let status = match code {
            ErrCode::BadPath | ErrCode::Range | ErrCode::MissingArg => StatusCode::BAD_REQUEST,
            ErrCode::TooLate => StatusCode::GONE,
            ErrCode::NoEnt | ErrCode::NotDir => StatusCode::NOT_FOUND,
            _ if matches!(e, StoreError::BadGlob(_)) => StatusCode::BAD_REQUEST,
            _ => {
                tracing::warn!(error = %e, "web view: store read failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let status = match e {
            NodeError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            NodeError::NoLeader | NodeError::Busy | NodeError::Shutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            NodeError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // As in the client protocol: node failures are OTHER with a detail.
        ApiError::new(status, ErrCode::Other, e.to_string())
    }
}

/// Parses the optional `rev` query parameter: a positive revision.
fn parse_rev(raw: Option<&String>) -> Result<Option<i64>, ApiError> {
    match raw.map(|s| s.parse::<i64>()) {
        None => Ok(None),
        Some(Ok(r)) if r > 0 => Ok(Some(r)),
        Some(_) => Err(ApiError::bad_request(
            ErrCode::Other,
            format!("rev must be a positive integer, not {:?}", raw.unwrap()),
        )),
    }
}

/// A file body as JSON: `"value"` as text, plus `"value_b64"` when it is not UTF-8.
fn put_value(obj: &mut serde_json::Map<String, serde_json::Value>, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(s) => {
            obj.insert("value".into(), s.into());
        }
        Err(_) => {
            obj.insert(
                "value".into(),
                String::from_utf8_lossy(value).into_owned().into(),
            );
            obj.insert(
                "value_b64".into(),
                data_encoding::BASE64.encode(value).into(),
            );
        }
    }
}

/// The node's write deadline bounds a read's barrier and its wait for a future revision.
fn deadline(h: &Handle) -> Duration {
    h.write_deadline()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_default_address_is_a_warning_an_explicit_one_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = taken.local_addr().unwrap().to_string();
        // Default: no web view, no error.
        let r = bind(&WebView::Default, || at.clone()).await.unwrap();
        assert!(r.is_none());
        // Explicit: the start fails, naming the address.
        match bind(&WebView::At(at.clone()), || unreachable!()).await {
            Err(StartError::Bind { addr, .. }) => assert_eq!(addr, at),
            other => panic!(
                "expected a bind error, got {:?}",
                other.map(|o| o.map(|b| b.1))
            ),
        }
        // A free default address is served; off is off (the default is not even computed).
        let (_, a) = bind(&WebView::Default, || "127.0.0.1:0".into())
            .await
            .unwrap()
            .expect("bound");
        assert_ne!(a.port(), 0);
        assert!(bind(&WebView::Off, || unreachable!())
            .await
            .unwrap()
            .is_none());
    }
}
