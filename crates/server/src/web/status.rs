//! `GET /health` and `GET /metrics`: what this node knows of itself and the cluster, from
//! the state the driver publishes (no consensus round, no store scan).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Web;
use crate::handle::NodeHandle;

/// A snapshot of the node's state.
struct Status {
    id: String,
    cluster: String,
    is_leader: bool,
    leader: Option<String>,
    /// A leader is known and is a voter of the membership in force.
    leader_known: bool,
    rev: i64,
    oldest_rev: i64,
    applied: u64,
    voters: Vec<String>,
    learners: Vec<String>,
    voter: bool,
    /// Storage failed: the node applies nothing any more.
    failed: Option<String>,
    stopping: bool,
}

impl Status {
    fn of(web: &Web) -> Status {
        let core = &web.h.core;
        let c = web.h.consensus();
        let a = web.h.applied();
        let failed = core.failed.lock().expect("failed lock").clone();
        Status {
            id: core.id.to_string(),
            cluster: core.cluster.clone(),
            is_leader: c.is_leader,
            leader: c.leader.map(|l| l.to_string()),
            leader_known: c.leader.is_some_and(|l| c.in_force.voters.contains(&l)),
            rev: a.rev,
            oldest_rev: web.h.store().oldest_rev(),
            applied: a.slot,
            voters: c.in_force.voters.iter().map(|v| v.to_string()).collect(),
            learners: c.in_force.learners.iter().map(|v| v.to_string()).collect(),
            voter: c.in_force.voters.contains(&core.id),
            failed,
            stopping: core.stop.is_cancelled(),
        }
    }

    /// Serving: it knows a leader of a membership with voters, and its storage works.
    fn healthy(&self) -> bool {
        self.leader_known && self.failed.is_none() && !self.stopping
    }
}

/// `GET /health`: 200 when the node knows a leader (so a quorum of voters elected one) and
/// can apply, 503 otherwise; the body says why either way.
pub(super) async fn health(State(web): State<Web>) -> Response {
    let s = Status::of(&web);
    let code = if s.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "healthy": s.healthy(),
        "id": s.id,
        "cluster": s.cluster,
        "leader": s.is_leader,
        "leader_id": s.leader,
        "rev": s.rev,
        "applied": s.applied,
        "voter": s.voter,
        "voters": s.voters,
        "learners": s.learners,
        "storage_error": s.failed,
        "stopping": s.stopping,
    });
    (code, Json(body)).into_response()
}

/// `GET /metrics`: gauges in the Prometheus text exposition format (0.0.4).
pub(super) async fn metrics(State(web): State<Web>) -> Response {
    let s = Status::of(&web);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: i128| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "doozer_rev",
        "Last applied revision of the store.",
        s.rev.into(),
    );
    gauge(
        "doozer_oldest_rev",
        "Oldest revision still readable (older ones are TOO_LATE).",
        s.oldest_rev.into(),
    );
    gauge(
        "doozer_checkpoint_rev",
        "Revision at which this node's last checkpoint started (0: none yet); a restart replays the log after it.",
        web.h.store().checkpoint_started_rev().into(),
    );
    gauge(
        "doozer_applied_slot",
        "Last applied consensus slot.",
        s.applied.into(),
    );
    gauge(
        "doozer_is_leader",
        "1 if this node is the leader.",
        s.is_leader.into(),
    );
    gauge(
        "doozer_leader_known",
        "1 if this node knows a leader among the voters.",
        s.leader_known.into(),
    );
    gauge(
        "doozer_is_voter",
        "1 if this node is a voter.",
        s.voter.into(),
    );
    gauge(
        "doozer_voters",
        "Voters of the membership in force.",
        s.voters.len() as i128,
    );
    gauge(
        "doozer_learners",
        "Learners of the membership in force.",
        s.learners.len() as i128,
    );
    gauge(
        "doozer_storage_failed",
        "1 if storage failed and the node stopped applying.",
        s.failed.is_some().into(),
    );
    gauge(
        "doozer_web_event_streams",
        "Open /v1/events streams of the web view.",
        web.open_streams() as i128,
    );
    gauge(
        "doozer_web_connections",
        "Open connections to the web view.",
        web.open_conns() as i128,
    );
    gauge(
        "doozer_client_connections",
        "Open Doozer protocol client connections (peer links not counted).",
        web.clients.get() as i128,
    );
    let _ = writeln!(
        out,
        "# HELP doozer_node_info This node's id and cluster.\n# TYPE doozer_node_info gauge\n\
         doozer_node_info{{id=\"{}\",cluster=\"{}\"}} 1",
        label(&s.id),
        label(&s.cluster)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// A label value, escaped as the exposition format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
