//! `doozer-paxos`: a sans-IO Multi-Paxos engine (proposer, acceptor and learner in one).
//!
//! The engine never touches sockets, disks, clocks or global randomness. Its driver feeds it
//! client commands ([`Engine::propose`]), peer messages ([`Engine::step`]), time
//! ([`Engine::tick`]) and read requests ([`Engine::read_index`]), and after each input drains
//! [`Engine::ready`]:
//! 1. persist every [`Record`] of `persist`, in order (one fsync for the batch);
//! 2. send `send_now` at once, and `send_after_persist` only once step 1 is durable; messages
//!    addressed to this node itself are fed back with `step(self_id, msg)`;
//! 3. apply `decided` in order, then report [`Engine::applied`] with the membership after
//!    each slot (it governs slot `s + alpha`);
//! 4. answer `reads`, and install a snapshot when `snapshot` asks
//!    ([`Engine::snapshot_installed`]).
//!
//! The protocol: a stable leader with ballots `(round, node)`; phase 1 once for every slot
//! from the leader's first unknown one (adopting the highest-ballot accepted value of each
//! slot and filling holes with no-ops); phase 2 per slot with up to `alpha` slots in flight
//! and many commands batched per slot; leader stickiness, pre-vote, and randomized, backed-off
//! election timeouts; commit index on accepts and heartbeats, catch-up by asking peers; membership per
//! slot by the alpha rule; read index by one batched heartbeat round.
//!
//! A one-node cluster, driven by hand:
//! ```
//! use bytes::Bytes;
//! use doozer_paxos::*;
//!
//! let me = NodeId(1);
//! let config = Config::with_voters([me]);
//! let opts = Options { id: me, ..Options::default() };
//! let mut engine = Engine::new(opts, PersistentState::empty(config.clone()));
//! let mut decided = Vec::new();
//! let mut drive = |engine: &mut Engine, decided: &mut Vec<(Slot, Value)>| loop {
//!     let ready = engine.ready();
//!     if ready.is_empty() {
//!         break;
//!     }
//!     // (persist `ready.persist` here; this example keeps nothing)
//!     for (to, msg) in ready.send_now.into_iter().chain(ready.send_after_persist) {
//!         assert_eq!(to, me, "a one-node cluster only talks to itself");
//!         engine.step(me, msg);
//!     }
//!     for (slot, value) in ready.decided {
//!         engine.applied(slot, &config);
//!         decided.push((slot, value));
//!     }
//! };
//! while !engine.status().is_leader {
//!     engine.tick();
//!     drive(&mut engine, &mut decided);
//! }
//! let cmd = Command { id: CommandId { node: me, seq: 1 }, data: Bytes::from_static(b"set") };
//! engine.propose(cmd.clone()).unwrap();
//! drive(&mut engine, &mut decided);
//! assert_eq!(decided, vec![(1, Value::Batch(vec![cmd]))]);
//! ```

mod acceptor;
pub mod config;
pub mod engine;
pub mod id;
mod learner;
mod membership;
pub mod message;
pub mod options;
mod prevote;
mod proposals;
mod proposer;
mod reads;
pub mod ready;
mod recent;
pub mod state;
#[cfg(test)]
mod testnet;
pub mod value;

pub use config::Config;
pub use engine::Engine;
pub use id::{Ballot, CommandId, NodeId, ParseNodeIdError, Slot};
pub use message::Message;
pub use options::{Faults, Options};
pub use ready::{ProposeError, ReadError, Ready, SnapshotRequest, Status};
pub use state::{PersistentState, Record};
pub use value::{Command, Value};
