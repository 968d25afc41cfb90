//! The slot log: accepted and decided slot values, in one pair of redb tables per
//! *generation* of consecutive slots (`slot_meta.<g>` and `slot_values.<g>`, rows as
//! described in [`crate::tables`]).
//!
//! Every decided slot is dropped again once a checkpoint covers it, so the log sees as many
//! deletions as inserts. Deleting rows (one `pop_first` per row, and a slot has a row per
//! 2000-byte chunk) cost as much as writing them: 4.7% of the machine in a 64-client bench
//! profile. A generation is dropped whole with `delete_table`, which frees its pages
//! without touching its rows.
//!
//! The generation size is fixed when the file is created (`S_LOG_GEN`), so that slot to
//! table stays the same whatever later options say.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use crate::error::StoreError;
use crate::tables::{self, Bin};

type Result<T> = std::result::Result<T, StoreError>;

/// Slots per generation for new files.
pub const DEFAULT_GEN_SLOTS: u64 = 512;

/// Slots one commit drops at most, in whole generations (at least one).
pub const DROP_SLOTS: u64 = 256;

const META_PREFIX: &str = "slot_meta.";
const VALUES_PREFIX: &str = "slot_values.";

fn meta_name(g: u64) -> String {
    format!("{META_PREFIX}{g}")
}

fn values_name(g: u64) -> String {
    format!("{VALUES_PREFIX}{g}")
}

/// The generation whose `slot_meta` table has this name, if it is one.
fn gen_of_table(name: &str) -> Option<u64> {
    name.strip_prefix(META_PREFIX)?.parse().ok()
}

/// The generations that have tables, from a transaction's list of tables.
fn generations(tables: impl Iterator<Item = impl TableHandle>) -> BTreeSet<u64> {
    tables.filter_map(|t| gen_of_table(t.name())).collect()
}

/// A slot of the log: `(slot, its slot_meta row, its value)`.
pub(crate) type Row = (u64, Vec<u8>, Vec<u8>);

/// The layout of a file's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Slots per generation.
    pub gen_slots: u64,
}

impl Layout {
    pub fn gen_of(&self, slot: u64) -> u64 {
        slot / self.gen_slots
    }

    /// The last slot of generation `g`.
    fn last_of(&self, g: u64) -> u64 {
        g.saturating_mul(self.gen_slots)
            .saturating_add(self.gen_slots - 1)
    }

    /// Every slot of `lo..=hi` in the log, in order.
    pub fn read(&self, txn: &ReadTransaction, lo: u64, hi: u64) -> Result<Vec<Row>> {
        let gens = generations(txn.list_tables()?);
        let mut out = Vec::new();
        if lo > hi {
            return Ok(out);
        }
        for g in gens.range(self.gen_of(lo)..=self.gen_of(hi)) {
            let name = meta_name(*g);
            let meta = txn.open_table(TableDefinition::<u64, Bin>::new(&name))?;
            let vname = values_name(*g);
            let values = txn.open_table(TableDefinition::<(u64, u32), Bin>::new(&vname))?;
            let mut vals = tables::read_chunks(&values, lo..=hi)?
                .into_iter()
                .peekable();
            for item in meta.range(lo..=hi)? {
                let (slot, m) = item?;
                let slot = slot.value();
                while vals.next_if(|(s, _)| *s < slot).is_some() {}
                let v = match vals.next_if(|(s, _)| *s == slot) {
                    Some((_, v)) => v,
                    None => {
                        return Err(StoreError::Corrupt(format!("slot {slot} has no value")));
                    }
                };
                out.push((slot, m.value().to_vec(), v));
            }
        }
        Ok(out)
    }
}

/// The log's tables within one write transaction, opened as a commit needs them.
pub(crate) struct LogWrite<'t> {
    txn: &'t WriteTransaction,
    layout: Layout,
    /// Open generations: (g, meta, values).
    open: Vec<(u64, GenTables<'t>)>,
}

pub(crate) struct GenTables<'t> {
    pub meta: Table<'t, u64, Bin>,
    pub values: Table<'t, (u64, u32), Bin>,
}

impl<'t> LogWrite<'t> {
    pub fn new(txn: &'t WriteTransaction, layout: Layout) -> LogWrite<'t> {
        LogWrite {
            txn,
            layout,
            open: Vec::new(),
        }
    }

    /// The tables of the generation holding `slot`, created if missing.
    pub fn gen(&mut self, slot: u64) -> Result<&mut GenTables<'t>> {
        let g = self.layout.gen_of(slot);
        let i = match self.open.iter().position(|(x, _)| *x == g) {
            Some(i) => i,
            None => {
                let txn = self.txn;
                let meta = txn.open_table(TableDefinition::<u64, Bin>::new(&meta_name(g)))?;
                let values =
                    txn.open_table(TableDefinition::<(u64, u32), Bin>::new(&values_name(g)))?;
                self.open.push((g, GenTables { meta, values }));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[i].1)
    }

    /// Drops the generations from `floor` on whose slots are all at or below `cut`, as many
    /// as hold [`DROP_SLOTS`] slots together, or one if a generation is larger. Returns the
    /// generation the log may start at now. The bound keeps any one commit short: dropping
    /// ~30,000 slots in one commit under load once stalled a node long enough to lose its
    /// leadership.
    pub fn drop_below(&mut self, mut floor: u64, cut: u64) -> Result<u64> {
        let most = (DROP_SLOTS / self.layout.gen_slots).max(1);
        for _ in 0..most {
            if self.layout.last_of(floor) > cut {
                break;
            }
            let g = floor;
            self.open.retain(|(x, _)| *x != g);
            let t = std::time::Instant::now();
            self.delete(g)?;
            tracing::debug!(
                gen = g,
                us = t.elapsed().as_micros() as u64,
                "dropped a log table"
            );
            floor += 1;
        }
        Ok(floor)
    }

    fn delete(&mut self, g: u64) -> Result<()> {
        self.txn
            .delete_table(TableDefinition::<u64, Bin>::new(&meta_name(g)))?;
        self.txn
            .delete_table(TableDefinition::<(u64, u32), Bin>::new(&values_name(g)))?;
        Ok(())
    }

    /// Removes every slot at or below `slot` (a snapshot installed up to it): whole
    /// generations, then the rows of the one that straddles it. Returns the first generation
    /// that may remain.
    pub fn remove_through(&mut self, slot: u64) -> Result<u64> {
        self.open.clear();
        let gens = generations(self.txn.list_tables()?);
        let straddling = self.layout.gen_of(slot);
        for g in gens.range(..straddling) {
            self.delete(*g)?;
        }
        if gens.contains(&straddling) {
            let t = self.gen(slot)?;
            t.meta.retain_in(..=slot, |_, _| false)?;
            t.values.retain_in(..=(slot, u32::MAX), |_, _| false)?;
        }
        Ok(straddling)
    }
}

/// The first generation that has tables in a write transaction (0 if none).
pub(crate) fn first_generation(txn: &WriteTransaction) -> Result<u64> {
    Ok(generations(txn.list_tables()?)
        .first()
        .copied()
        .unwrap_or(0))
}

/// Moves a format-4 file's single pair of slot tables into generations.
pub(crate) fn migrate_v4(txn: &WriteTransaction, layout: Layout) -> Result<()> {
    let mut log = LogWrite::new(txn, layout);
    {
        let meta = txn.open_table(tables::LEGACY_SLOT_META)?;
        for item in meta.iter()? {
            let (k, v) = item?;
            log.gen(k.value())?.meta.insert(k.value(), v.value())?;
        }
        let values = txn.open_table(tables::LEGACY_SLOT_VALUES)?;
        for item in values.iter()? {
            let (k, v) = item?;
            let (slot, chunk) = k.value();
            log.gen(slot)?.values.insert((slot, chunk), v.value())?;
        }
    }
    drop(log);
    txn.delete_table(tables::LEGACY_SLOT_META)?;
    txn.delete_table(tables::LEGACY_SLOT_VALUES)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_from_table_names() {
        let gens: Vec<Option<u64>> = [
            "state",
            "slot_meta.3",
            "slot_values.3",
            "slot_meta.12",
            "slot_meta.x",
        ]
        .into_iter()
        .map(gen_of_table)
        .collect();
        assert_eq!(gens, [None, Some(3), None, Some(12), None]);
        let l = Layout { gen_slots: 16 };
        assert_eq!((l.gen_of(15), l.gen_of(16), l.last_of(1)), (0, 1, 31));
    }
}
