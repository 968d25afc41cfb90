//! Whole-state snapshots: export at one revision, install replacing the applied state.
//!
//! Format: the magic `DZSNAP01`, then frames of a 4-byte big-endian length and a
//! [`codec`]-encoded [`Item`]: one `Header`, the files in key order, the remembered command
//! ids, the membership changes, and an `End` carrying the number of items before it and a
//! CRC-32 of every byte before the `End` frame. History is not included: a store installed
//! from a snapshot answers reads and waits from the snapshot's revision on.

use std::io::{self, Read, Write};

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, Slot};
use doozer_proto::{path, ErrCode};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use crate::apply::DEDUP_WINDOW_REVS;
use crate::codec;
use crate::error::{Result, StoreError};
use crate::keys::{key_path, path_key};
use crate::op::SnapshotMeta;
use crate::store::{DedupUpdate, Store, Writer};
use crate::tables::{self, FileRec, RevEntry};

const MAGIC: &[u8; 8] = b"DZSNAP01";

/// The version of the snapshot stream (its header's `format`), independent of the on-disk
/// format: the stream carries no slot tables, so stores of formats 2 and 3 exchange
/// snapshots of version 2.
const SNAPSHOT_FORMAT: u64 = 2;

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
    /// membership) as of one commit to `out`. Consistent: it reads one redb snapshot while
    /// commits go on.
    pub fn export_snapshot(&self, out: &mut impl Write) -> Result<SnapshotMeta> {
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
        let config: Config = match state.get(tables::S_CONFIG)? {
            Some(v) => codec::decode(v.value())?,
            None => Config::default(),
        };
        let _span = info_span!("export_snapshot", rev, applied).entered();
        let mut w = Writer_ {
            out,
            crc: crc32fast::Hasher::new(),
            items: 0,
        };
        w.raw(MAGIC)?;
        w.item(&Item::Header {
            format: SNAPSHOT_FORMAT,
            rev,
            applied,
            config,
        })?;
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
        // The command ids a replica at this revision still answers duplicates for.
        let window = rev - DEDUP_WINDOW_REVS;
        for item in txn.open_table(tables::REVS)?.iter()? {
            let (k, row) = item?;
            for (i, e) in RevEntry::decode_row(row.value())?.into_iter().enumerate() {
                let r = (k.value() + i as u64) as i64;
                if r > window && r <= rev {
                    let code = e.code.map(|c| c as i32).unwrap_or(0);
                    w.item(&Item::Cmd {
                        id: e.id,
                        rev: r,
                        code,
                    })?;
                }
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
    /// snapshot's, history starts afresh at the snapshot's revision. The promise and the
    /// accepted values of slots above the snapshot are kept. A malformed, truncated or
    /// corrupted stream changes nothing; a snapshot older than the applied state is refused.
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
        let (rev, applied, config) = match r.item()?.0 {
            Item::Header {
                format: SNAPSHOT_FORMAT,
                rev,
                applied,
                config,
            } => (rev, applied, config),
            Item::Header { format, .. } => {
                return Err(StoreError::BadSnapshot(format!(
                    "unsupported format {format}"
                )))
            }
            _ => return Err(StoreError::BadSnapshot("no header".into())),
        };
        let _span = info_span!("install_snapshot", rev, applied).entered();
        self.write(|txn, st, _| {
            if applied < st.applied {
                return Err(StoreError::StaleSnapshot {
                    snapshot: applied,
                    applied: st.applied,
                });
            }
            let (files, ids) = fill(txn, &mut r)?;
            // Slots up to the snapshot's are settled by it; accepts above stay.
            txn.open_table(tables::SLOT_META)?
                .retain_in(..=applied, |_, _| false)?;
            txn.open_table(tables::SLOT_VALUES)?
                .retain_in(..=(applied, u32::MAX), |_, _| false)?;
            let mut state = txn.open_table(tables::STATE)?;
            state.insert(tables::S_REV, tables::u64_row(rev as u64).as_slice())?;
            state.insert(tables::S_APPLIED, tables::u64_row(applied).as_slice())?;
            state.insert(tables::S_FLOOR, tables::u64_row(rev as u64).as_slice())?;
            state.insert(tables::S_CONFIG, codec::try_encode(&config)?.as_slice())?;
            *st = Writer {
                rev,
                applied,
                floor: rev,
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

/// Empties the applied-state tables and fills them from the items after the header. Returns
/// the number of files and the remembered command ids.
fn fill<R: Read>(txn: &WriteTransaction, r: &mut Reader_<'_, R>) -> Result<(u64, Ids)> {
    for t in [tables::FILES, tables::UNDO] {
        txn.delete_table(t)?;
    }
    for t in [tables::REVS, tables::CONFIGS] {
        txn.delete_table(t)?;
    }
    let mut files_t = txn.open_table(tables::FILES)?;
    let mut revs = txn.open_table(tables::REVS)?;
    let mut configs = txn.open_table(tables::CONFIGS)?;
    txn.open_table(tables::UNDO)?;
    let mut ids = Ids::default();
    let mut files = 0;
    loop {
        let (item, crc_before) = r.item()?;
        match item {
            Item::File { path, rev, value } => {
                path::validate(&path).map_err(|e| StoreError::BadSnapshot(e.to_string()))?;
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
            Item::Cmd { id, rev, code } => {
                let code = match code {
                    0 => None,
                    c => Some(
                        ErrCode::try_from(c)
                            .map_err(|_| StoreError::BadSnapshot(format!("error code {c}")))?,
                    ),
                };
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
            Item::ConfigAt { slot, config } => {
                configs.insert(slot, codec::try_encode(&config)?.as_slice())?;
            }
            Item::End { items, crc } => {
                if items != r.items - 1 || crc != crc_before {
                    return Err(StoreError::BadSnapshot(
                        "checksum or item count mismatch".into(),
                    ));
                }
                return Ok((files, ids));
            }
            Item::Header { .. } => return Err(StoreError::BadSnapshot("second header".into())),
        }
    }
}
