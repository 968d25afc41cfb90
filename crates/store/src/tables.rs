//! The redb tables of a store and the byte layout of their rows.
//!
//! | table | key | value |
//! |---|---|---|
//! | `state` | name | the store's own counters and acceptor state (see the `S_*` names) |
//! | `meta` | name | the server's metadata ([`crate::Store::meta_put`]) |
//! | `slot_meta.<g>` | slot | accepted at a ballot (slots above the applied one), or decided (kept `retain_slots` below it, and every slot above the last checkpoint) |
//! | `slot_values.<g>` | (slot, chunk) | the slot's encoded `Value`: accepted, then decided |
//! | `configs` | slot | encoded `Config`: the membership after that slot, where it changed |
//!
//! `<g>` is the slot's generation ([`crate::log`]): the log is split into tables of
//! consecutive slots so that the slots a checkpoint lets go are dropped table by table.
//!
//! The tree and its history are not here: they live in memory ([`crate::mem`]) and on disk as
//! the last checkpoint (a snapshot stream in a file beside this one) plus the decided slots
//! after it, which [`crate::Store::open`] applies again. A commit writes only the acceptor
//! records, the decided values and a few counters: a few sequential pages, where keeping the
//! tree in redb rewrote a leaf and its branches for nearly every command.
//!
//! Slot values are stored in chunks of [`CHUNK_BYTES`]: redb copies a whole leaf on every
//! change, and a leaf holding one large value next to the one being appended made each commit
//! rewrite the previous slot's value too (measured: ~90 KiB written per 256-command commit for
//! a 36 KiB value). Small rows appended in key order fill leaves densely instead. A value
//! accepted and then decided unchanged is written once: deciding it only flips its
//! `slot_meta` row.

use redb::TableDefinition;

use crate::error::StoreError;

pub(crate) type Bin = &'static [u8];

pub(crate) const STATE: TableDefinition<&str, Bin> = TableDefinition::new("state");
pub(crate) const META: TableDefinition<&str, Bin> = TableDefinition::new("meta");
/// Format 4's single pair of slot tables, read once to move them into generations.
pub(crate) const LEGACY_SLOT_META: TableDefinition<u64, Bin> = TableDefinition::new("slot_meta");
pub(crate) const LEGACY_SLOT_VALUES: TableDefinition<(u64, u32), Bin> =
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

/// `state` row: the applied slot of the checkpoint file (u64); decided slots above it are kept.
pub(crate) const S_CKPT_SLOT: &str = "ckpt_slot";
/// `state` row: the revision of the checkpoint file (i64).
pub(crate) const S_CKPT_REV: &str = "ckpt_rev";

/// `state` row: slots per generation of the log (u64), fixed when the file is created.
pub(crate) const S_LOG_GEN: &str = "log_gen";

/// The on-disk format this code writes. 1: unchunked `accepted`/`decided` slot tables;
/// 2: chunked `accepted`/`decided`; 3: `slot_meta` + `slot_values`, the tree in redb tables;
/// 4: the tree in memory with checkpoint files; 5: the slot tables split into generations.
/// Format 4 files are moved to format 5 when opened; any other format is
/// [`StoreError::UnsupportedFormat`].
pub(crate) const FORMAT: u64 = 5;
/// The older format this code still opens (and converts).
pub(crate) const FORMAT_V4: u64 = 4;

pub(crate) fn u64_row(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn read_u64(raw: &[u8]) -> Result<u64, StoreError> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("counter row of {} bytes", raw.len())))
}
