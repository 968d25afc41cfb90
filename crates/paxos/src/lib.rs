//! A sans-IO Multi-Paxos engine.
mod acceptor;
pub mod config;
pub mod engine;
pub mod id;
mod learner;
mod membership;
pub mod message;
pub mod options;
mod proposals;
mod proposer;
mod reads;
pub mod ready;
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
