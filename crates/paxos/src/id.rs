//! Identities and orderings: node ids, slots, ballots, command ids.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};

/// A log position. The first slot is 1; slot 0 means "nothing".
pub type Slot = u64;

/// Bits of randomness in a node id (and the width of its text form: 16 base32 chars).
const NODE_ID_BITS: u32 = 80;
const NODE_ID_BYTES: usize = (NODE_ID_BITS / 8) as usize;

/// A node's identity: 80 random bits, written as 16 base32 characters (`A-Z2-7`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct NodeId(pub u128);

impl NodeId {
    /// A fresh id of 80 random bits from `rng`.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> NodeId {
        let mask = (1u128 << NODE_ID_BITS) - 1;
        NodeId(rng.gen::<u128>() & mask)
    }

    fn to_bytes(self) -> [u8; NODE_ID_BYTES] {
        let all = self.0.to_be_bytes();
        let mut out = [0u8; NODE_ID_BYTES];
        out.copy_from_slice(&all[16 - NODE_ID_BYTES..]);
        out
    }
}

impl fmt::Display for NodeId {
    /// Ids wider than 80 bits cannot be produced by [`NodeId::random`] or [`FromStr`]; only
    /// their low 80 bits would be shown, so they are written in hex instead to stay unambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >> NODE_ID_BITS != 0 {
            return write!(f, "0x{:x}", self.0);
        }
        f.write_str(&BASE32_NOPAD.encode(&self.to_bytes()))
    }
}

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeIdError {
    /// The text is not exactly 16 characters long.
    #[error("node id must be 16 base32 characters, got {0}")]
    Length(usize),
    /// The text holds a character outside `A-Z2-7` (or non-canonical trailing bits).
    #[error("node id is not valid base32: {0}")]
    Encoding(String),
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<NodeId, ParseNodeIdError> {
        if s.len() != 16 {
            return Err(ParseNodeIdError::Length(s.len()));
        }
        let bytes = BASE32_NOPAD
            .decode(s.as_bytes())
            .map_err(|e| ParseNodeIdError::Encoding(e.to_string()))?;
        if bytes.len() != NODE_ID_BYTES {
            return Err(ParseNodeIdError::Length(s.len()));
        }
        let mut all = [0u8; 16];
        all[16 - NODE_ID_BYTES..].copy_from_slice(&bytes);
        Ok(NodeId(u128::from_be_bytes(all)))
    }
}

/// A proposer's ballot, totally ordered by `(round, node)`. A node only uses its own id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Compared first.
    pub round: u64,
    /// Breaks ties between proposers of the same round.
    pub node: NodeId,
}

impl Ballot {
    /// Below every ballot any proposer uses: the promise of a fresh acceptor.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// Identifies one proposed command: the proposing client/node and its sequence number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct CommandId {
    /// The node (or client identity) that created the command.
    pub node: NodeId,
    /// Increasing per `node`.
    pub seq: u64,
}

/// A set of command ids, only ever asked about membership (never iterated, so its order
/// cannot leak into the engine's output). Each command passes through two of these on
/// every node (queued, in flight), and the recently decided ones ([`crate::recent`]); as
/// `BTreeSet`s, the B-tree inserts and removes under `Engine::learn` (these
/// sets with `own` and the log) were 0.9% of the machine in `perf` at 64 clients, and the
/// engine bench ran ~10% faster with hash sets. The fixed seed keeps runs reproducible.
pub(crate) type IdSet = std::collections::HashSet<CommandId, foldhash::fast::FixedState>;
