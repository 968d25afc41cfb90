//! The replicated state machine of doozer-rs and everything a node keeps on disk.
//!
//! A [`Store`] is one redb file holding:
//! * the tree of files with their revisions (Doozer's data model: implicit directories,
//!   byte-ordered listings, compare-and-set by revision, one global revision per command);
//! * the history WAIT and reads at past revisions need, trimmed to
//!   [`StoreOptions::hist_revs`] revisions;
//! * the Paxos acceptor's durable records (promise, accepted values), the decided log tail,
//!   the membership history, recently applied command ids, and the server's metadata.
//!
//! Writes come from one place, the server's storage thread: [`Store::commit`] takes a
//! [`Batch`] (acceptor records plus decided slots) and writes it in **one** redb transaction
//! with **one** fsync (group commit), returning what each command did, the new events and any
//! membership change. Reads ([`Store::get`], [`Store::getdir`], [`Store::stat`],
//! [`Store::walk`], [`Store::wait`]) run from any thread against the last commit.
//!
//! ```
//! use doozer_paxos::{Command, CommandId, NodeId, Value};
//! use doozer_proto::Glob;
//! use doozer_store::{codec::encode_op, ApplyResult, Batch, Op, Store, StoreError, StoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(&dir.path().join("doozer.redb"), StoreOptions::default()).unwrap();
//!
//! // Slot 1 decides two commands: create /app/x, then a compare-and-set that must fail.
//! let cmd = |seq, op: Op| Command { id: CommandId { node: NodeId(7), seq }, data: encode_op(&op) };
//! let slot1 = Value::Batch(vec![
//!     cmd(1, Op::Set { path: "/app/x".into(), rev: 0, value: "1".into() }),
//!     cmd(2, Op::Set { path: "/app/x".into(), rev: 0, value: "2".into() }),
//! ]);
//! let commit = store.commit(Batch { records: vec![], decided: vec![(1, slot1)] }).unwrap();
//! assert_eq!(commit.results[0].1, ApplyResult::Ok { rev: 1 });
//! assert!(matches!(commit.results[1].1, ApplyResult::Err { rev: 2, .. })); // REV_MISMATCH
//! assert_eq!((commit.rev, commit.applied), (2, 1));
//!
//! // Reads: the file, its directory, the failure recorded at /ctl/err, a past revision.
//! assert_eq!(store.get("/app/x", None).unwrap(), ("1".into(), 1));
//! assert_eq!(store.getdir("/", 0, None).unwrap(), "app");
//! assert_eq!(store.get("/ctl/err", None).unwrap(), ("rev mismatch".into(), 2));
//! assert_eq!(store.get("/app/x", Some(0)).unwrap(), ("".into(), 0));
//! assert!(matches!(store.get("/app", None), Err(StoreError::IsDir(_))));
//!
//! // WAIT: the first matching event at or after a revision.
//! let ev = store.wait(&Glob::new("/app/**").unwrap(), 1).unwrap().unwrap();
//! assert_eq!((ev.rev, ev.path.as_str(), &ev.value[..]), (1, "/app/x", &b"1"[..]));
//! ```

mod apply;
mod checkpoint;
#[doc(hidden)]
pub mod ckpt_fs;
pub mod codec;
mod error;
mod keys;
mod log;
mod mem;
mod op;
mod revs;
mod snapshot;
mod store;
mod tables;
mod view;

pub use apply::{DEDUP_WINDOW_REVS, ERR_PATH};
pub use error::{Result, StoreError};
pub use op::{
    ApplyResult, Batch, Commit, Event, Op, SnapshotMeta, StoreOptions, FLAG_DEL, FLAG_NOP, FLAG_SET,
};
pub use snapshot::{SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_MIN};
pub use store::Store;
