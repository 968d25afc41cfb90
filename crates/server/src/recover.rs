//! `doozerd recover`: offline, make this node the only voter.
//!
//! For the operator who knows the other voters are gone for good and the survivors cannot
//! reach a quorum. It appends, as decided slots applied straight to the local store (no
//! consensus: the node is stopped), one batch that gives this node the first `/ctl/cal` slot
//! it held (else slot 0), empties every other slot and deletes the other nodes'
//! `/ctl/node/<id>` files, then `alpha` no-op slots so the new membership is in force from
//! the next slot on (membership governs slots `alpha` later). Every acknowledged write this
//! node has applied is kept; writes only the lost nodes knew about are lost.

use bytes::Bytes;
use doozer_paxos::{Command, CommandId, NodeId, Value};
use doozer_store::{Batch, Op};

use crate::cluster::list_dir;
use crate::config::{meta, NodeConfig};
use crate::node::{open_store, StartError};

/// What `recover` did.
#[derive(Debug)]
pub struct Recovered {
    /// This node's id.
    pub id: String,
    /// The slot holding the membership rewrite.
    pub slot: u64,
    /// Revision after it.
    pub rev: i64,
}

/// Rewrites the membership in `cfg.data_dir` to this node alone.
pub fn recover(cfg: &NodeConfig) -> Result<Recovered, StartError> {
    let store = open_store(cfg)?;
    let err = |e: &dyn std::fmt::Display| StartError::Store {
        path: cfg.data_dir.display().to_string(),
        detail: e.to_string(),
    };
    let id_s = store
        .meta_get(meta::ID)
        .map_err(|e| err(&e))?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| StartError::Config("no node in this data directory".into()))?;
    let id: NodeId = id_s
        .parse()
        .map_err(|_| StartError::Config(format!("stored node id {id_s:?} is invalid")))?;

    let mut ops = Vec::new();
    let slots: Vec<(String, String, i64)> = list_dir(&store, "/ctl/cal")
        .into_iter()
        .filter_map(|n| {
            let p = format!("/ctl/cal/{n}");
            let (v, rev) = store.get(&p, None).ok()?;
            Some((p, String::from_utf8_lossy(&v).into_owned(), rev))
        })
        .collect();
    let mine = slots
        .iter()
        .find(|(_, v, _)| *v == id_s)
        .map(|(p, _, _)| p.clone())
        .unwrap_or_else(|| "/ctl/cal/0".to_string());
    ops.push(Op::Set {
        path: mine.clone(),
        rev: -1,
        value: Bytes::from(id_s.clone()),
    });
    for (p, v, _) in &slots {
        if *p != mine && !v.is_empty() {
            ops.push(Op::Set {
                path: p.clone(),
                rev: -1,
                value: Bytes::new(),
            });
        }
    }
    for node in list_dir(&store, "/ctl/node") {
        if node == id_s {
            continue;
        }
        for f in list_dir(&store, &format!("/ctl/node/{node}")) {
            ops.push(Op::Del {
                path: format!("/ctl/node/{node}/{f}"),
                rev: -1,
            });
        }
    }
    let seq0 = rand::random::<u64>() >> 1;
    let cmds = ops
        .iter()
        .enumerate()
        .map(|(i, op)| Command {
            id: CommandId {
                node: id,
                seq: seq0 + i as u64,
            },
            data: doozer_store::codec::encode_op(op),
        })
        .collect();
    let first = store.applied_slot() + 1;
    let mut decided = vec![(first, Value::Batch(cmds))];
    for s in 1..=cfg.alpha {
        decided.push((first + s, Value::Noop));
    }
    let commit = store
        .commit(Batch {
            records: Vec::new(),
            decided,
        })
        .map_err(|e| err(&e))?;
    tracing::info!(%id, slot = first, rev = commit.rev, "membership rewritten to this node alone");
    Ok(Recovered {
        id: id_s,
        slot: first,
        rev: commit.rev,
    })
}
