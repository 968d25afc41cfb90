//! What slots decide: commands and batches of them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::CommandId;

/// One proposed command. `data` is opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per command; the state machine uses it to apply a retried command once.
    pub id: CommandId,
    /// The payload, interpreted only by the state machine.
    pub data: Bytes,
}

/// The value one slot decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a hole; the state machine skips it.
    Noop,
    /// Commands to apply in order.
    Batch(Vec<Command>),
}

impl Value {
    /// Approximate size in bytes, for batching and catch-up chunk limits.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Noop => 1,
            Value::Batch(cmds) => cmds.iter().map(|c| c.data.len() + 32).sum::<usize>() + 8,
        }
    }
}
