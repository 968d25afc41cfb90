//! Whole-state snapshots: export at one revision, install replacing the applied state.
//!
//! Format: the magic `DZSNAP01`, then frames of a 4-byte big-endian length and a
//! [`codec`]-encoded [`Item`]: one `Header`, the files in key order, the remembered command
//! ids, the membership changes, and an `End` carrying the number of items before it and a
//! CRC-32 of every byte before the `End` frame.
//!
//! Version 3 carries the retained history too: after the header, the history `Floor`; the
//! files; one `Rev` per `revs` entry above the lower of the floor and the duplicate window
//! (every revision above the floor has one); one `Undo` per undo record; the membership
//! changes. A store installed from it has the source's floor and answers reads at past
//! revisions and WAITs as the source does. Version 2 (no floor, `Cmd` items for the
//! remembered ids, no history) is still installed: history then starts at its revision.

use std::io::{self, Read, Write};

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, Slot};
use doozer_proto::{path, ErrCode};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use crate::apply::DEDUP_WINDOW_REVS;
use crate::apply::REV_ROW_BYTES;
use crate::codec;
use crate::error::{Result, StoreError};
use crate::keys::{self, key_path, path_key};
use crate::op::SnapshotMeta;
use crate::store::{DedupUpdate, Store, Writer};
use crate::tables::{self, FileRec, RevEntry, HAS_UNDO};

const MAGIC: &[u8; 8] = b"DZSNAP01";

/// The version of the snapshot stream (its header's `format`) that [`Store::export_snapshot`]
/// writes, independent of the on-disk format (the stream carries no slot tables). 3: with
/// history; 2: without.
pub const SNAPSHOT_FORMAT: u64 = 3;

/// The oldest snapshot stream version [`Store::install_snapshot`] accepts.
pub const SNAPSHOT_FORMAT_MIN: u64 = 2;

#[derive(Debug, Serialize, Deserialize)]
enum Item {
    Header {
        format: u64,
        rev: i64,
        applied: Slot,
        config: Config,
    },
    File {
        path: String,
        rev: i64,
        value: Bytes,
    },
    Cmd {
        id: CommandId,
        rev: i64,
        code: i32,
    },
    ConfigAt {
        slot: Slot,
        config: Config,
    },
    End {
        items: u64,
        crc: u32,
    },
    // Version 3 items, appended so that the encoding of the others is unchanged.
    /// The history floor: reads at revisions `>=` it are answerable. Right after the header.
    Floor {
        floor: i64,
    },
    /// One `revs` entry: the command that took `rev`, its result, its event flags (with
    /// [`tables::HAS_UNDO`]) and the path of its event.
    Rev {
        rev: i64,
        id: CommandId,
        code: i32,
        flags: u8,
        path: String,
    },
    /// One undo record: the state of `path` before the change at `rev` (`None`: missing).
    Undo {
        path: String,
        rev: i64,
        prior: Option<(i64, Bytes)>,
    },
}

struct Writer_<'w, W: Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
    items: u64,
}

impl<W: Write> Writer_<'_, W> {
    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.crc.update(b);
        self.out.write_all(b).map_err(StoreError::from_io)
    }

    fn item(&mut self, item: &Item) -> Result<()> {
        let body = codec::try_encode(item)?;
        let len = u32::try_from(body.len())
            .map_err(|_| StoreError::Encode("snapshot item over 4 GiB".into()))?;
        self.raw(&len.to_be_bytes())?;
        self.raw(&body)?;
        self.items += 1;
        Ok(())
    }
}

struct Reader_<'r, R: Read> {
    inp: &'r mut R,
    crc: crc32fast::Hasher,
    items: u64,
}

fn read_err(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        StoreError::BadSnapshot("truncated".into())
    } else {
        StoreError::from_io(e)
    }
}

impl<R: Read> Reader_<'_, R> {
    fn raw(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.inp.read_exact(&mut buf).map_err(read_err)?;
        Ok(buf)
    }

    /// The next item, and the CRC of everything before it.
    fn item(&mut self) -> Result<(Item, u32)> {
        let before = self.crc.clone().finalize();
        let len = self.raw(4)?;
        let n = u32::from_be_bytes(len.as_slice().try_into().expect("4 bytes")) as usize;
        if n > codec::MAX_DECODE_BYTES {
            return Err(StoreError::BadSnapshot(format!("item of {n} bytes")));
        }
        let body = self.raw(n)?;
        self.crc.update(&len);
        self.crc.update(&body);
        let item = codec::decode(&body).map_err(|e| StoreError::BadSnapshot(e.to_string()))?;
        self.items += 1;
        Ok((item, before))
    }
}

impl Store {
    /// Writes the whole applied state (files with their revs, remembered command ids,
    /// membership) and the retained history as of one commit to `out`, as a stream of
    /// version [`SNAPSHOT_FORMAT`]. Consistent: it reads one redb snapshot while commits go on.
    pub fn export_snapshot(&self, out: &mut impl Write) -> Result<SnapshotMeta> {
        self.export_snapshot_version(out, SNAPSHOT_FORMAT)
    }

    /// [`Store::export_snapshot`] in stream version `version`: 3 (with history) or 2 (without,
    /// for a store that only installs version 2). Another version is
    /// [`StoreError::BadSnapshot`].
    pub fn export_snapshot_version(
        &self,
        out: &mut impl Write,
        version: u64,
    ) -> Result<SnapshotMeta> {
        if !(SNAPSHOT_FORMAT_MIN..=SNAPSHOT_FORMAT).contains(&version) {
            return Err(StoreError::BadSnapshot(format!(
                "cannot write version {version}"
            )));
        }
        let history = version >= 3;
        let txn = self.inner.db.begin_read()?;
        let state = txn.open_table(tables::STATE)?;
        let num = |k: &str| -> Result<u64> {
            state
                .get(k)?
                .map(|v| tables::read_u64(v.value()))
                .transpose()
                .map(|v| v.unwrap_or(0))
        };
        let rev = num(tables::S_REV)? as i64;
        let applied = num(tables::S_APPLIED)?;
        let floor = num(tables::S_FLOOR)? as i64;
        let config: Config = match state.get(tables::S_CONFIG)? {
            Some(v) => codec::decode(v.value())?,
            None => Config::default(),
        };
        let _span = info_span!("export_snapshot", rev, applied, floor, version).entered();
        let mut w = Writer_ {
            out,
            crc: crc32fast::Hasher::new(),
            items: 0,
        };
        w.raw(MAGIC)?;
        w.item(&Item::Header {
            format: version,
            rev,
            applied,
            config,
        })?;
        if history {
            w.item(&Item::Floor { floor })?;
        }
        let mut files = 0;
        for item in txn.open_table(tables::FILES)?.iter()? {
            let (k, v) = item?;
            let r = FileRec::decode(v.value())?;
            w.item(&Item::File {
                path: key_path(k.value()),
                rev: r.rev,
                value: Bytes::copy_from_slice(r.value),
            })?;
            files += 1;
        }
        // The command ids a replica at this revision still answers duplicates for, and with
        // history every revision above the floor.
        let window = rev - DEDUP_WINDOW_REVS;
        let lo = if history { window.min(floor) } else { window };
        let revs = txn.open_table(tables::REVS)?;
        let start = revs
            .range(..=(lo.max(0) as u64 + 1))?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| k.value());
        for item in revs.range(start..)? {
            let (k, row) = item?;
            for (i, e) in RevEntry::decode_row(row.value())?.into_iter().enumerate() {
                let r = (k.value() + i as u64) as i64;
                if r <= lo || r > rev {
                    continue;
                }
                let code = e.code.map(|c| c as i32).unwrap_or(0);
                if history {
                    w.item(&Item::Rev {
                        rev: r,
                        id: e.id,
                        code,
                        flags: e.flags,
                        path: key_path(e.pkey),
                    })?;
                } else {
                    w.item(&Item::Cmd {
                        id: e.id,
                        rev: r,
                        code,
                    })?;
                }
            }
        }
        if history {
            for item in txn.open_table(tables::UNDO)?.iter()? {
                let (k, v) = item?;
                let (pkey, r) = keys::split_undo_key(k.value())
                    .ok_or_else(|| StoreError::Corrupt("undo key".into()))?;
                let prior = FileRec::decode_undo(v.value())?
                    .map(|f| (f.rev, Bytes::copy_from_slice(f.value)));
                w.item(&Item::Undo {
                    path: key_path(pkey),
                    rev: r as i64,
                    prior,
                })?;
            }
        }
        for item in txn.open_table(tables::CONFIGS)?.iter()? {
            let (k, v) = item?;
            w.item(&Item::ConfigAt {
                slot: k.value(),
                config: codec::decode(v.value())?,
            })?;
        }
        let end = Item::End {
            items: w.items,
            crc: w.crc.clone().finalize(),
        };
        w.item(&end)?;
        w.out.flush().map_err(StoreError::from_io)?;
        Ok(SnapshotMeta {
            rev,
            slot: applied,
            files,
        })
    }

    /// Replaces the applied state with the snapshot read from `inp`, in one transaction:
    /// every file keeps its revision, the store's revision and applied slot become the
    /// snapshot's, and so do its history and history floor (a version 2 stream has none:
    /// history starts afresh at its revision). The promise and the accepted values of slots
    /// above the snapshot are kept. A malformed, truncated or corrupted stream changes
    /// nothing; a snapshot older than the applied state is refused.
    pub fn install_snapshot(&self, inp: &mut impl Read) -> Result<SnapshotMeta> {
        let mut r = Reader_ {
            inp,
            crc: crc32fast::Hasher::new(),
            items: 0,
        };
        let magic = r.raw(MAGIC.len())?;
        if magic != MAGIC {
            return Err(StoreError::BadSnapshot("not a doozer snapshot".into()));
        }
        r.crc.update(&magic);
        let (version, rev, applied, config) = match r.item()?.0 {
            Item::Header {
                format,
                rev,
                applied,
                config,
            } if (SNAPSHOT_FORMAT_MIN..=SNAPSHOT_FORMAT).contains(&format) => {
                (format, rev, applied, config)
            }
            Item::Header { format, .. } => {
                return Err(StoreError::BadSnapshot(format!(
                    "unsupported format {format}"
                )))
            }
            _ => return Err(StoreError::BadSnapshot("no header".into())),
        };
        if rev < 0 {
            return Err(StoreError::BadSnapshot(format!("revision {rev}")));
        }
        let floor = if version >= 3 {
            match r.item()?.0 {
                Item::Floor { floor } if (0..=rev).contains(&floor) => floor,
                Item::Floor { floor } => {
                    return Err(StoreError::BadSnapshot(format!(
                        "history floor {floor} at revision {rev}"
                    )))
                }
                _ => return Err(StoreError::BadSnapshot("no history floor".into())),
            }
        } else {
            rev
        };
        let _span = info_span!("install_snapshot", rev, applied, floor, version).entered();
        self.write(|txn, st, _| {
            if applied < st.applied {
                return Err(StoreError::StaleSnapshot {
                    snapshot: applied,
                    applied: st.applied,
                });
            }
            let (files, ids) = fill(txn, &mut r, version, rev, floor)?;
            // Slots up to the snapshot's are settled by it; accepts above stay.
            txn.open_table(tables::SLOT_META)?
                .retain_in(..=applied, |_, _| false)?;
            txn.open_table(tables::SLOT_VALUES)?
                .retain_in(..=(applied, u32::MAX), |_, _| false)?;
            let mut state = txn.open_table(tables::STATE)?;
            state.insert(tables::S_REV, tables::u64_row(rev as u64).as_slice())?;
            state.insert(tables::S_APPLIED, tables::u64_row(applied).as_slice())?;
            state.insert(tables::S_FLOOR, tables::u64_row(floor as u64).as_slice())?;
            state.insert(tables::S_CONFIG, codec::try_encode(&config)?.as_slice())?;
            *st = Writer {
                rev,
                applied,
                floor,
                config: config.clone(),
                ..st.clone()
            };
            Ok((
                SnapshotMeta {
                    rev,
                    slot: applied,
                    files,
                },
                DedupUpdate::Replace(ids),
            ))
        })
    }
}

type Ids = crate::apply::IdMap;

/// A `revs` row being filled from `Rev` items, as [`crate::apply`] fills them.
struct RowBuf {
    row: Vec<u8>,
    first: u64,
    next: u64,
}

impl RowBuf {
    fn flush(&mut self, revs: &mut redb::Table<'_, u64, tables::Bin>) -> Result<()> {
        if !self.row.is_empty() {
            revs.insert(self.first, self.row.as_slice())?;
            self.row.clear();
        }
        Ok(())
    }
}

fn code_of(c: i32) -> Result<Option<ErrCode>> {
    match c {
        0 => Ok(None),
        c => ErrCode::try_from(c)
            .map(Some)
            .map_err(|_| StoreError::BadSnapshot(format!("error code {c}"))),
    }
}

fn valid_path(p: &str) -> Result<()> {
    path::validate(p).map_err(|e| StoreError::BadSnapshot(e.to_string()))
}

/// Empties the applied-state tables and fills them from the items after the header (and, in
/// version 3, the floor). Returns the number of files and the remembered command ids.
fn fill<R: Read>(
    txn: &WriteTransaction,
    r: &mut Reader_<'_, R>,
    version: u64,
    snap_rev: i64,
    floor: i64,
) -> Result<(u64, Ids)> {
    let history = version >= 3;
    for t in [tables::FILES, tables::UNDO] {
        txn.delete_table(t)?;
    }
    for t in [tables::REVS, tables::CONFIGS] {
        txn.delete_table(t)?;
    }
    let mut files_t = txn.open_table(tables::FILES)?;
    let mut revs = txn.open_table(tables::REVS)?;
    let mut configs = txn.open_table(tables::CONFIGS)?;
    let mut undo = txn.open_table(tables::UNDO)?;
    let mut ids = Ids::default();
    let mut files = 0;
    let window = snap_rev - DEDUP_WINDOW_REVS;
    let mut row = RowBuf {
        row: Vec::new(),
        first: 0,
        next: 0,
    };
    // Checks of the history: entries in increasing order, one for every revision above the
    // floor, and as many undo records as entries that say they wrote one.
    let (mut last_rev, mut above_floor, mut want_undo, mut undos) = (0i64, 0i64, 0u64, 0u64);
    loop {
        let (item, crc_before) = r.item()?;
        match item {
            Item::File { path, rev, value } => {
                valid_path(&path)?;
                if path == "/" {
                    return Err(StoreError::BadSnapshot("a file at /".into()));
                }
                let key = path_key(&path);
                // A file under a file would make the tree inconsistent.
                for (i, &b) in key.iter().enumerate().skip(1) {
                    if b == 0x01 && files_t.get(&key[..i])?.is_some() {
                        return Err(StoreError::BadSnapshot(format!("{path} lies under a file")));
                    }
                }
                files_t.insert(key.as_slice(), FileRec::encode(rev, &value).as_slice())?;
                files += 1;
            }
            Item::Cmd { id, rev, code } if !history => {
                let code = code_of(code)?;
                if rev < 1 || ids.insert(id, (rev, code)).is_some() {
                    return Err(StoreError::BadSnapshot(format!(
                        "command {id:?} twice or at rev {rev}"
                    )));
                }
                // A row of its own, as a nop: below the history floor, only the id matters.
                let mut row = Vec::new();
                RevEntry {
                    id,
                    code,
                    flags: 0,
                    pkey: b"\x01",
                }
                .encode_into(&mut row);
                if revs.insert(rev as u64, row.as_slice())?.is_some() {
                    return Err(StoreError::BadSnapshot(format!(
                        "two commands at rev {rev}"
                    )));
                }
            }
            Item::Rev {
                rev,
                id,
                code,
                flags,
                path,
            } if history => {
                let code = code_of(code)?;
                valid_path(&path)?;
                if rev <= last_rev || rev > snap_rev {
                    return Err(StoreError::BadSnapshot(format!(
                        "revision {rev} after {last_rev}"
                    )));
                }
                last_rev = rev;
                if rev > window && ids.insert(id, (rev, code)).is_some() {
                    return Err(StoreError::BadSnapshot(format!("command {id:?} twice")));
                }
                if rev > floor {
                    above_floor += 1;
                    if flags & HAS_UNDO != 0 {
                        want_undo += 1;
                    }
                }
                if row.row.len() >= REV_ROW_BYTES || (!row.row.is_empty() && rev as u64 != row.next)
                {
                    row.flush(&mut revs)?;
                }
                if row.row.is_empty() {
                    row.first = rev as u64;
                }
                row.next = rev as u64 + 1;
                RevEntry {
                    id,
                    code,
                    flags,
                    pkey: &path_key(&path),
                }
                .encode_into(&mut row.row);
            }
            Item::Undo { path, rev, prior } if history => {
                valid_path(&path)?;
                if path == "/" || rev <= floor || rev > snap_rev {
                    return Err(StoreError::BadSnapshot(format!(
                        "undo record of {path} at revision {rev}"
                    )));
                }
                let rec = match prior {
                    Some((prev, value)) => FileRec::encode(prev, &value),
                    None => Vec::new(),
                };
                let key = keys::undo_key(&path_key(&path), rev as u64);
                if undo.insert(key.as_slice(), rec.as_slice())?.is_some() {
                    return Err(StoreError::BadSnapshot(format!(
                        "two undo records of {path} at revision {rev}"
                    )));
                }
                undos += 1;
            }
            Item::ConfigAt { slot, config } => {
                configs.insert(slot, codec::try_encode(&config)?.as_slice())?;
            }
            Item::End { items, crc } => {
                if items != r.items - 1 || crc != crc_before {
                    return Err(StoreError::BadSnapshot(
                        "checksum or item count mismatch".into(),
                    ));
                }
                if history && (above_floor != snap_rev - floor || undos != want_undo) {
                    return Err(StoreError::BadSnapshot(format!(
                        "history of {above_floor} revisions and {undos} undo records for \
                         {} revisions and {want_undo} undo records",
                        snap_rev - floor
                    )));
                }
                row.flush(&mut revs)?;
                return Ok((files, ids));
            }
            Item::Header { .. } => return Err(StoreError::BadSnapshot("second header".into())),
            Item::Floor { .. } | Item::Cmd { .. } | Item::Rev { .. } | Item::Undo { .. } => {
                return Err(StoreError::BadSnapshot(format!(
                    "an item out of place in a version {version} stream"
                )))
            }
        }
    }
}
