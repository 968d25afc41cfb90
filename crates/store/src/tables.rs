//! The redb tables of a store and the byte layout of their rows.
//!
//! | table | key | value |
//! |---|---|---|
//! | `files` | path key ([`crate::keys`]) | [`FileRec`]: rev (8 bytes BE) + body |
//! | `undo` | path key, `0x00`, rev (8 bytes BE) | the file's state before the change at rev: empty = missing, else a [`FileRec`] |
//! | `events` | rev | flags (1 byte) + path key |
//! | `cmds` | command id (24 bytes) | rev (8) + error code (4, 0 = ok) |
//! | `cmd_revs` | rev | command id: to forget old ids in revision order |
//! | `state` | name | the store's own counters and acceptor state (see the `S_*` names) |
//! | `meta` | name | the server's metadata ([`crate::Store::meta_put`]) |
//! | `accepted` | slot | encoded `(Ballot, Value)` for slots above the applied one |
//! | `decided` | slot | encoded `Value`, kept `retain_slots` below the applied slot |
//! | `configs` | slot | encoded `Config`: the membership after that slot, where it changed |
//!
//! The current tree is `files` alone; history is `undo` + `events`. A read at a past revision
//! `R` takes, for each path, the first undo record after `R` (the state the path had at `R`), or
//! the current row if the path has not changed since. Trimming history at floor `F` drops the
//! undo record and event of each revision `<= F`: only reads at `>= F` need them.

use doozer_paxos::CommandId;
use doozer_proto::ErrCode;
use redb::TableDefinition;

use crate::error::StoreError;

pub(crate) type Bin = &'static [u8];

pub(crate) const FILES: TableDefinition<Bin, Bin> = TableDefinition::new("files");
pub(crate) const UNDO: TableDefinition<Bin, Bin> = TableDefinition::new("undo");
pub(crate) const EVENTS: TableDefinition<u64, Bin> = TableDefinition::new("events");
pub(crate) const CMDS: TableDefinition<Bin, Bin> = TableDefinition::new("cmds");
pub(crate) const CMD_REVS: TableDefinition<u64, Bin> = TableDefinition::new("cmd_revs");
pub(crate) const STATE: TableDefinition<&str, Bin> = TableDefinition::new("state");
pub(crate) const META: TableDefinition<&str, Bin> = TableDefinition::new("meta");
pub(crate) const ACCEPTED: TableDefinition<u64, Bin> = TableDefinition::new("accepted");
pub(crate) const DECIDED: TableDefinition<u64, Bin> = TableDefinition::new("decided");
pub(crate) const CONFIGS: TableDefinition<u64, Bin> = TableDefinition::new("configs");

/// `state` row: on-disk format version.
pub(crate) const S_FORMAT: &str = "format";
/// `state` row: current revision (i64).
pub(crate) const S_REV: &str = "rev";
/// `state` row: last applied slot (u64).
pub(crate) const S_APPLIED: &str = "applied";
/// `state` row: history floor: reads at revisions `>=` it are answerable (i64).
pub(crate) const S_FLOOR: &str = "floor";
/// `state` row: promised ballot (encoded).
pub(crate) const S_PROMISED: &str = "promised";
/// `state` row: current membership (encoded).
pub(crate) const S_CONFIG: &str = "config";

/// The on-disk format this code writes.
pub(crate) const FORMAT: u64 = 1;

/// A file row: its revision and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRec<'a> {
    pub rev: i64,
    pub value: &'a [u8],
}

impl<'a> FileRec<'a> {
    pub fn encode(rev: i64, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + value.len());
        v.extend_from_slice(&rev.to_be_bytes());
        v.extend_from_slice(value);
        v
    }

    pub fn decode(raw: &'a [u8]) -> Result<FileRec<'a>, StoreError> {
        if raw.len() < 8 {
            return Err(StoreError::Corrupt(format!(
                "file row of {} bytes",
                raw.len()
            )));
        }
        let (r, value) = raw.split_at(8);
        Ok(FileRec {
            rev: i64::from_be_bytes(r.try_into().expect("8 bytes")),
            value,
        })
    }

    /// Decodes an undo row: `None` when the path was missing.
    pub fn decode_undo(raw: &'a [u8]) -> Result<Option<FileRec<'a>>, StoreError> {
        if raw.is_empty() {
            Ok(None)
        } else {
            FileRec::decode(raw).map(Some)
        }
    }
}

pub(crate) fn u64_row(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn read_u64(raw: &[u8]) -> Result<u64, StoreError> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("counter row of {} bytes", raw.len())))
}

pub(crate) fn cmd_key(id: &CommandId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&id.node.0.to_be_bytes());
    k[16..].copy_from_slice(&id.seq.to_be_bytes());
    k
}

pub(crate) fn cmd_from_key(k: &[u8]) -> Result<CommandId, StoreError> {
    if k.len() != 24 {
        return Err(StoreError::Corrupt(format!(
            "command id of {} bytes",
            k.len()
        )));
    }
    Ok(CommandId {
        node: doozer_paxos::NodeId(u128::from_be_bytes(k[..16].try_into().expect("16"))),
        seq: u64::from_be_bytes(k[16..].try_into().expect("8")),
    })
}

/// The remembered outcome of a command: its rev and error code (`None` = ok).
pub(crate) fn cmd_row(rev: i64, code: Option<ErrCode>) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&rev.to_be_bytes());
    v[8..].copy_from_slice(&code.map(|c| c as i32).unwrap_or(0).to_be_bytes());
    v
}

pub(crate) fn read_cmd_row(raw: &[u8]) -> Result<(i64, Option<ErrCode>), StoreError> {
    if raw.len() != 12 {
        return Err(StoreError::Corrupt(format!(
            "command row of {} bytes",
            raw.len()
        )));
    }
    let rev = i64::from_be_bytes(raw[..8].try_into().expect("8"));
    let code = i32::from_be_bytes(raw[8..].try_into().expect("4"));
    if code == 0 {
        return Ok((rev, None));
    }
    let code = ErrCode::try_from(code)
        .map_err(|_| StoreError::Corrupt(format!("unknown error code {code}")))?;
    Ok((rev, Some(code)))
}

/// An event row: flags and path key.
pub(crate) fn event_row(flags: i32, pkey: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + pkey.len());
    v.push(flags as u8);
    v.extend_from_slice(pkey);
    v
}

pub(crate) fn read_event_row(raw: &[u8]) -> Result<(i32, &[u8]), StoreError> {
    match raw.split_first() {
        Some((f, p)) => Ok((*f as i32, p)),
        None => Err(StoreError::Corrupt("empty event row".into())),
    }
}
