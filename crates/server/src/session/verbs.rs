//! One request: the quick checks done in line by the reader ([`plan`]), and the part that
//! may block, run in its own task ([`Job::run`]).
//!
//! The checks come in the original's order: unknown verb, access rights, missing
//! arguments, then path or glob syntax (doozer-protocol.md §2.4). Where the original
//! crashed or guessed (an empty or relative path for GET and GETDIR) we answer BAD_PATH.

use std::sync::Arc;

use bytes::Bytes;
use doozer_proto::msg::{ErrCode, Request, Response, Verb, REV_MISSING};
use doozer_proto::{path, Glob};
use doozer_store::Op;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::access::Rights;
use super::config::SessionConfig;
use super::errors;
use super::{reads, wait};
use crate::handle::{NodeHandle, WriteResult};

/// What the original says about an ACCESS refused or a verb not allowed.
pub const PERMISSION_DENIED: &str = "permission denied";

/// Work that may block, with everything the reader already checked.
#[derive(Debug)]
pub enum Job {
    /// GET.
    Get { path: String, rev: Option<i64> },
    /// GETDIR.
    Getdir {
        path: String,
        offset: i32,
        rev: Option<i64>,
    },
    /// STAT of a valid path.
    Stat { path: String, rev: Option<i64> },
    /// WALK.
    Walk {
        glob: Glob,
        offset: i32,
        rev: Option<i64>,
    },
    /// WAIT from `from` (already raised to at least 1).
    Wait { glob: Glob, from: i64 },
    /// SET or DEL (`value` is `None` for DEL) or NOP, through consensus.
    Write { op: Op, verb: Verb },
}

/// What the reader does with a request.
#[derive(Debug)]
pub enum Plan {
    /// Answer now.
    Reply(Response),
    /// Hand to a task.
    Run(Job),
}

impl Job {
    /// Whether this job may wait with no deadline: a WAIT, or a read at an explicit
    /// revision (which waits for the node to reach it). Such jobs are cancelled when the
    /// client closes its side; the others are let finish, since their deadline bounds them.
    pub fn unbounded(&self) -> bool {
        match self {
            Job::Wait { .. } => true,
            Job::Get { rev, .. }
            | Job::Getdir { rev, .. }
            | Job::Stat { rev, .. }
            | Job::Walk { rev, .. } => rev.is_some(),
            Job::Write { .. } => false,
        }
    }

    /// Does the work and builds the answer. `value_reads` gates reads that load file bodies
    /// (and WAIT's history scans); the permit returned with such an answer must be held
    /// until the answer is queued.
    pub async fn run<H: NodeHandle>(
        self,
        h: &H,
        cfg: &SessionConfig,
        value_reads: &Arc<Semaphore>,
        tag: Option<i32>,
    ) -> (Response, Option<OwnedSemaphorePermit>) {
        match self {
            Job::Get { path, rev } => reads::get(h, cfg, value_reads, tag, path, rev).await,
            Job::Walk { glob, offset, rev } => {
                reads::walk(h, cfg, value_reads, tag, glob, offset, rev).await
            }
            Job::Getdir { path, offset, rev } => {
                (reads::getdir(h, cfg, tag, path, offset, rev).await, None)
            }
            Job::Stat { path, rev } => (reads::stat(h, cfg, tag, path, rev).await, None),
            Job::Wait { glob, from } => (wait::wait(h, value_reads, tag, glob, from).await, None),
            Job::Write { op, verb } => (write(h, cfg, tag, op, verb).await, None),
        }
    }
}

async fn write<H: NodeHandle>(
    h: &H,
    cfg: &SessionConfig,
    tag: Option<i32>,
    op: Op,
    verb: Verb,
) -> Response {
    match h.write_answered(op, cfg.deadline).await {
        // SET answers the new rev; DEL and NOP answer with the tag only.
        Ok(WriteResult::Ok { rev }) if verb == Verb::Set => Response::ok(tag).with_rev(rev),
        Ok(WriteResult::Ok { .. }) => Response::ok(tag),
        Ok(WriteResult::Err { code, .. }) => Response::err(tag, code),
        Err(e) => {
            tracing::debug!(error = %e, "write failed");
            errors::write_failed(tag, &e)
        }
    }
}

/// The reader's in-line part of a request: checks, and the answers that need no waiting
/// (REV, SELF, ACCESS, and every error found by looking at the request alone). ACCESS
/// updates `rights`, which the reader passes on to later requests.
pub fn plan<H: NodeHandle>(h: &H, cfg: &SessionConfig, rights: &mut Rights, req: Request) -> Plan {
    let tag = req.tag;
    let reply = Plan::Reply;
    let err = |code| Plan::Reply(Response::err(tag, code));
    let Some(verb) = req.known_verb() else {
        return err(ErrCode::UnknownVerb);
    };
    if !rights.allow(verb) {
        return reply(Response::err_with_detail(
            tag,
            ErrCode::Other,
            PERMISSION_DENIED,
        ));
    }
    let Request {
        path,
        value,
        offset,
        rev,
        ..
    } = req;
    match verb {
        Verb::Rev => reply(Response::ok(tag).with_rev(h.rev())),
        Verb::SelfId => reply(Response::ok(tag).with_value(Bytes::from(h.self_id()))),
        Verb::Access => {
            // A missing value is the empty secret, as Go's nil []byte was.
            match cfg.secrets.grant(value.as_deref().unwrap_or_default()) {
                Some(granted) => {
                    *rights = rights.union(granted);
                    reply(Response::ok(tag))
                }
                None => reply(Response::err_with_detail(
                    tag,
                    ErrCode::Other,
                    PERMISSION_DENIED,
                )),
            }
        }
        Verb::Nop => Plan::Run(Job::Write { op: Op::Nop, verb }),
        Verb::Set | Verb::Del => {
            let (Some(path), Some(rev)) = (path, rev) else {
                return err(ErrCode::MissingArg);
            };
            if let Err(e) = path::validate(&path) {
                return reply(Response::from_error(tag, &e));
            }
            let op = if verb == Verb::Set {
                let value = value.unwrap_or_default();
                if value.len() > cfg.max_value {
                    return reply(Response::err_with_detail(
                        tag,
                        ErrCode::Other,
                        format!(
                            "value of {} bytes exceeds the limit of {} bytes",
                            value.len(),
                            cfg.max_value
                        ),
                    ));
                }
                Op::Set { path, rev, value }
            } else {
                Op::Del { path, rev }
            };
            Plan::Run(Job::Write { op, verb })
        }
        Verb::Get => {
            let Some(path) = path else {
                return err(ErrCode::MissingArg);
            };
            if let Err(e) = path::validate(&path) {
                return reply(Response::from_error(tag, &e));
            }
            Plan::Run(Job::Get { path, rev })
        }
        Verb::Getdir => {
            let (Some(path), Some(offset)) = (path, offset) else {
                return err(ErrCode::MissingArg);
            };
            if let Err(e) = path::validate(&path) {
                return reply(Response::from_error(tag, &e));
            }
            if offset < 0 {
                return err(ErrCode::Range);
            }
            Plan::Run(Job::Getdir { path, offset, rev })
        }
        Verb::Stat => {
            // No path means "", and an invalid path is simply missing: rev 0, len 0.
            match path {
                Some(p) if path::is_valid(&p) => Plan::Run(Job::Stat { path: p, rev }),
                _ => reply(Response::ok(tag).with_rev(REV_MISSING).with_len(0)),
            }
        }
        Verb::Walk => {
            let (Some(pattern), Some(offset)) = (path, offset) else {
                return err(ErrCode::MissingArg);
            };
            let glob = match Glob::new(&pattern) {
                Ok(g) => g,
                Err(e) => return reply(Response::from_error(tag, &e)),
            };
            if offset < 0 {
                return err(ErrCode::Range);
            }
            Plan::Run(Job::Walk { glob, offset, rev })
        }
        Verb::Wait => {
            let (Some(pattern), Some(rev)) = (path, rev) else {
                return err(ErrCode::MissingArg);
            };
            let glob = match Glob::new(&pattern) {
                Ok(g) => g,
                Err(e) => return reply(Response::from_error(tag, &e)),
            };
            Plan::Run(Job::Wait {
                glob,
                from: rev.max(1),
            })
        }
    }
}
