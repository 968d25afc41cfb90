//! A sans-IO Multi-Paxos engine.
pub mod config;
pub mod engine;
pub mod id;
pub mod message;
pub mod options;
pub mod ready;
pub mod state;
pub mod value;

pub use config::Config;
pub use engine::Engine;
pub use id::{Ballot, CommandId, NodeId, ParseNodeIdError, Slot};
pub use message::Message;
pub use options::{Faults, Options};
pub use ready::{ProposeError, ReadError, Ready, SnapshotRequest, Status};
pub use state::{PersistentState, Record};
pub use value::{Command, Value};
