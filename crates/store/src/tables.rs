//! The redb tables of a store and the byte layout of their rows.
//!
//! | table | key | value |
//! |---|---|---|
//! | `files` | path key ([`crate::keys`]) | [`FileRec`]: rev (8 bytes BE) + body |
//! | `undo` | path key, `0x00`, rev (8 bytes BE) | the file's state before the change at rev, when the change replaced or deleted an existing file: a [`FileRec`] |
//! | `revs` | first rev of the row | [`RevEntry`]s of consecutive revisions (command id, result, event flags, path key), up to ~[`crate::apply::REV_ROW_BYTES`] per row |
//! | `state` | name | the store's own counters and acceptor state (see the `S_*` names) |
//! | `meta` | name | the server's metadata ([`crate::Store::meta_put`]) |
//! | `slot_meta` | slot | accepted at a ballot (slots above the applied one), or decided (kept `retain_slots` below it) |
//! | `slot_values` | (slot, chunk) | the slot's encoded `Value`: accepted, then decided |
//! | `configs` | slot | encoded `Config`: the membership after that slot, where it changed |
//!
//! The current tree is `files` alone; history is `undo` + `revs`. Creating a file writes no
//! undo record (the common case costs one insert). A read at a past revision `R` takes, for a
//! path, the first undo record after `R`, else the current row; either way the state is the
//! path's state at `R` only if its rev is `<= R`, otherwise the file was created after `R` and
//! was missing then (a change of an existing file after `R` would have left an earlier undo
//! record). Trimming history at floor `F` drops the undo records of revisions `<= F`: only
//! reads at `>= F` need them. `revs` rows live until both the history and the duplicate window
//! ([`crate::DEDUP_WINDOW_REVS`]) have passed them.
//!
//! Slot values are stored in chunks of [`CHUNK_BYTES`]: redb copies a whole leaf on every
//! change, and a leaf holding one large value next to the one being appended made each commit
//! rewrite the previous slot's value too (measured: ~90 KiB written per 256-command commit for
//! a 36 KiB value). Small rows appended in key order fill leaves densely instead. A value
//! accepted and then decided unchanged is written once: deciding it only flips its
//! `slot_meta` row.

use doozer_paxos::CommandId;
use doozer_proto::ErrCode;
use redb::TableDefinition;

use crate::error::StoreError;

pub(crate) type Bin = &'static [u8];

pub(crate) const FILES: TableDefinition<Bin, Bin> = TableDefinition::new("files");
pub(crate) const UNDO: TableDefinition<Bin, Bin> = TableDefinition::new("undo");
pub(crate) const REVS: TableDefinition<u64, Bin> = TableDefinition::new("revs");
pub(crate) const STATE: TableDefinition<&str, Bin> = TableDefinition::new("state");
pub(crate) const META: TableDefinition<&str, Bin> = TableDefinition::new("meta");
pub(crate) const SLOT_META: TableDefinition<u64, Bin> = TableDefinition::new("slot_meta");
pub(crate) const SLOT_VALUES: TableDefinition<(u64, u32), Bin> =
    TableDefinition::new("slot_values");

/// A `slot_meta` row: the slot's value was accepted at a ballot (encoded after this byte).
pub(crate) const SLOT_ACCEPTED: u8 = 1;
/// A `slot_meta` row: the slot's value is the decided one.
pub(crate) const SLOT_DECIDED: u8 = 2;
pub(crate) const CONFIGS: TableDefinition<u64, Bin> = TableDefinition::new("configs");

/// Size of the pieces slot values are stored in.
pub(crate) const CHUNK_BYTES: usize = 2000;

/// Stores `data` as the chunks of `slot`, replacing any previous ones.
pub(crate) fn put_chunks(
    t: &mut redb::Table<'_, (u64, u32), Bin>,
    slot: u64,
    data: &[u8],
    replace: bool,
) -> Result<(), StoreError> {
    if replace {
        remove_chunks(t, slot)?;
    }
    if data.is_empty() {
        t.insert((slot, 0), &[][..])?;
    }
    for (i, c) in data.chunks(CHUNK_BYTES).enumerate() {
        t.insert((slot, i as u32), c)?;
    }
    Ok(())
}

/// Removes the chunks of `slot`.
pub(crate) fn remove_chunks(
    t: &mut redb::Table<'_, (u64, u32), Bin>,
    slot: u64,
) -> Result<(), StoreError> {
    t.retain_in((slot, 0)..=(slot, u32::MAX), |_, _| false)?;
    Ok(())
}

/// Removes the rows of slots up to `cut` from the start of a `slot_meta` table. Unlike
/// `retain_in`, which copies every leaf it deletes from, this modifies pages in place.
pub(crate) fn trim_slot_meta(
    t: &mut redb::Table<'_, u64, Bin>,
    cut: u64,
) -> Result<(), StoreError> {
    use redb::ReadableTable;
    while t.first()?.is_some_and(|(k, _)| k.value() <= cut) {
        t.pop_first()?;
    }
    Ok(())
}

/// Removes the chunks of slots up to `cut` from the start of a `slot_values` table.
pub(crate) fn trim_slot_values(
    t: &mut redb::Table<'_, (u64, u32), Bin>,
    cut: u64,
) -> Result<(), StoreError> {
    use redb::ReadableTable;
    while t.first()?.is_some_and(|(k, _)| k.value().0 <= cut) {
        t.pop_first()?;
    }
    Ok(())
}

/// The values of every slot in `slots`, reassembled, in slot order.
pub(crate) fn read_chunks(
    t: &impl redb::ReadableTable<(u64, u32), Bin>,
    slots: impl std::ops::RangeBounds<u64>,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    use std::ops::Bound;
    let lo = match slots.start_bound() {
        Bound::Included(&s) => Bound::Included((s, 0)),
        Bound::Excluded(&s) => Bound::Excluded((s, u32::MAX)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let hi = match slots.end_bound() {
        Bound::Included(&s) => Bound::Included((s, u32::MAX)),
        Bound::Excluded(&s) => Bound::Excluded((s, 0)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for item in t.range::<(u64, u32)>((lo, hi))? {
        let (k, v) = item?;
        let (slot, i) = k.value();
        match out.last_mut() {
            Some((s, buf)) if *s == slot => buf.extend_from_slice(v.value()),
            _ if i == 0 => out.push((slot, v.value().to_vec())),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "slot {slot} misses its first chunk"
                )))
            }
        }
    }
    Ok(out)
}

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

/// The on-disk format this code reads and writes. 1: unchunked `accepted`/`decided` slot
/// tables; 2: chunked `accepted`/`decided`; 3: `slot_meta` + `slot_values`. Opening a file
/// of another format is [`StoreError::UnsupportedFormat`].
pub(crate) const FORMAT: u64 = 3;

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

/// Flag bit of a [`RevEntry`]: the change wrote an undo record (it changed an existing file).
pub(crate) const HAS_UNDO: u8 = 0x80;

/// One revision's entry in a `revs` row: which command took it, how it ended, what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevEntry<'a> {
    pub id: CommandId,
    pub code: Option<ErrCode>,
    /// Event flags (4 set, 8 del, 0 nop), possibly with [`HAS_UNDO`].
    pub flags: u8,
    /// The key of the path of the event.
    pub pkey: &'a [u8],
}

const ENTRY_FIXED: usize = 16 + 8 + 4 + 1 + 4;

impl<'a> RevEntry<'a> {
    /// Appends this entry to a row.
    pub fn encode_into(&self, row: &mut Vec<u8>) {
        row.extend_from_slice(&self.id.node.0.to_be_bytes());
        row.extend_from_slice(&self.id.seq.to_be_bytes());
        row.extend_from_slice(&self.code.map(|c| c as i32).unwrap_or(0).to_be_bytes());
        row.push(self.flags);
        row.extend_from_slice(&(self.pkey.len() as u32).to_be_bytes());
        row.extend_from_slice(self.pkey);
    }

    /// The event flags without the undo bit.
    pub fn event_flags(&self) -> i32 {
        (self.flags & !HAS_UNDO) as i32
    }

    /// Decodes every entry of a row.
    pub fn decode_row(mut raw: &'a [u8]) -> Result<Vec<RevEntry<'a>>, StoreError> {
        let corrupt = || StoreError::Corrupt("revision row".into());
        let mut out = Vec::new();
        while !raw.is_empty() {
            if raw.len() < ENTRY_FIXED {
                return Err(corrupt());
            }
            let node = u128::from_be_bytes(raw[..16].try_into().expect("16"));
            let seq = u64::from_be_bytes(raw[16..24].try_into().expect("8"));
            let code = i32::from_be_bytes(raw[24..28].try_into().expect("4"));
            let flags = raw[28];
            let len = u32::from_be_bytes(raw[29..33].try_into().expect("4")) as usize;
            let rest = &raw[ENTRY_FIXED..];
            if rest.len() < len {
                return Err(corrupt());
            }
            let code = match code {
                0 => None,
                c => Some(ErrCode::try_from(c).map_err(|_| corrupt())?),
            };
            out.push(RevEntry {
                id: CommandId {
                    node: doozer_paxos::NodeId(node),
                    seq,
                },
                code,
                flags,
                pkey: &rest[..len],
            });
            raw = &rest[len..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_rows_round_trip_and_reject_damage() {
        let a = RevEntry {
            id: CommandId {
                node: doozer_paxos::NodeId(5),
                seq: 9,
            },
            code: Some(ErrCode::RevMismatch),
            flags: 4 | HAS_UNDO,
            pkey: b"\x01a",
        };
        let b = RevEntry {
            id: CommandId::default(),
            code: None,
            flags: 0,
            pkey: b"\x01",
        };
        let mut row = Vec::new();
        a.encode_into(&mut row);
        b.encode_into(&mut row);
        assert_eq!(RevEntry::decode_row(&row).unwrap(), vec![a.clone(), b]);
        assert_eq!(a.event_flags(), 4);
        for cut in 1..row.len() {
            let r = RevEntry::decode_row(&row[..cut]);
            assert!(r.is_err() || r.unwrap().len() == 1, "cut {cut}");
        }
    }
}
