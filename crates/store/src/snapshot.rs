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
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use doozer_paxos::{CommandId, Config, Slot};
use doozer_proto::{path, ErrCode};
use serde::{Deserialize, Serialize};
use tracing::info_span;

use crate::apply::DEDUP_WINDOW_REVS;
use crate::codec;
use crate::error::{Result, StoreError};
use crate::keys::{key_path, path_byte, path_key};
use crate::mem::{FileVal, Mem, RevRec, HAS_UNDO};
use crate::op::SnapshotMeta;
use crate::store::{Shared, Store};
use crate::view::View;

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
    /// [`HAS_UNDO`]) and the path of its event.
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

/// [`Item::File`], [`Item::Rev`] and [`Item::Undo`] borrowed from the state, so that an
/// export encodes them under the read lock straight from the tree: copying keys and values out
/// first (allocations, reference counts, drops) was ~40% of a checkpoint's CPU in `perf`.
/// Each encodes exactly as the owned item (`borrowed_items_encode_as_owned_ones`).
enum ItemRef<'a> {
    File {
        key: &'a [u8],
        rev: i64,
        value: &'a [u8],
    },
    Rev {
        rev: i64,
        id: CommandId,
        code: i32,
        flags: u8,
        key: &'a [u8],
    },
    Undo {
        key: &'a [u8],
        rev: i64,
        prior: Option<(i64, RawBytes<'a>)>,
    },
}

impl Serialize for ItemRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant as _;
        // The variant indexes and field order of `Item`.
        match self {
            ItemRef::File { key, rev, value } => {
                let mut v = s.serialize_struct_variant("Item", 1, "File", 3)?;
                v.serialize_field("path", &KeyPath(key))?;
                v.serialize_field("rev", rev)?;
                v.serialize_field("value", &RawBytes(value))?;
                v.end()
            }
            ItemRef::Rev {
                rev,
                id,
                code,
                flags,
                key,
            } => {
                let mut v = s.serialize_struct_variant("Item", 6, "Rev", 5)?;
                v.serialize_field("rev", rev)?;
                v.serialize_field("id", id)?;
                v.serialize_field("code", code)?;
                v.serialize_field("flags", flags)?;
                v.serialize_field("path", &KeyPath(key))?;
                v.end()
            }
            ItemRef::Undo { key, rev, prior } => {
                let mut v = s.serialize_struct_variant("Item", 7, "Undo", 3)?;
                v.serialize_field("path", &KeyPath(key))?;
                v.serialize_field("rev", rev)?;
                v.serialize_field("prior", prior)?;
                v.end()
            }
        }
    }
}

/// Bytes encoded as `Bytes` are (serde bytes, not a sequence).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A key encoded as the path [`key_path`] makes of it, without allocating for the usual
/// short ASCII path (a longer or non-ASCII one goes through [`key_path`] itself).
struct KeyPath<'a>(&'a [u8]);

impl Serialize for KeyPath<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 256];
        let key = self.0;
        if key.len() <= buf.len() && key.is_ascii() {
            let out = &mut buf[..key.len()];
            for (o, &b) in out.iter_mut().zip(key) {
                *o = path_byte(b);
            }
            if let Ok(p) = std::str::from_utf8(out) {
                return s.serialize_str(p);
            }
        }
        s.serialize_str(&key_path(key))
    }
}

/// Appends `item` to `buf` as one frame: its length (4 bytes, big-endian), then the item.
fn push_frame(buf: &mut Vec<u8>, item: &impl Serialize) -> Result<()> {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    codec::try_encode_into(item, buf)?;
    let len = u32::try_from(buf.len() - at - 4)
        .map_err(|_| StoreError::Encode("snapshot item over 4 GiB".into()))?;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

struct Writer_<'w, W: Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
    items: u64,
    /// One frame (length and item), reused: a checkpoint writes ~10^5 of them.
    frame: Vec<u8>,
}

impl<W: Write> Writer_<'_, W> {
    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.crc.update(b);
        self.out.write_all(b).map_err(StoreError::from_io)
    }

    fn item(&mut self, item: &Item) -> Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let written = push_frame(&mut frame, item).and_then(|()| self.frames(&frame, 1));
        self.frame = frame;
        written
    }

    /// Writes `n` frames made by [`push_frame`].
    fn frames(&mut self, frames: &[u8], n: u64) -> Result<()> {
        self.raw(frames)?;
        self.items += n;
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
    /// version [`SNAPSHOT_FORMAT`]. Consistent: it reads one published state while commits
    /// go on.
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
        write_stream(&self.inner.shared, out, version, None)
    }

    /// Replaces the applied state with the snapshot read from `inp`: every file keeps its
    /// revision, the store's revision and applied slot become the snapshot's, and so do its
    /// history and history floor (a version 2 stream has none: history starts afresh at its
    /// revision). The promise and the accepted values of slots above the snapshot are kept.
    /// A malformed, truncated or corrupted stream changes nothing; a snapshot older than the
    /// applied state is refused.
    pub fn install_snapshot(&self, inp: &mut impl Read) -> Result<SnapshotMeta> {
        let (mem, files) = read_stream(inp)?;
        let _span = info_span!(
            "install_snapshot",
            rev = mem.rev,
            applied = mem.applied,
            floor = mem.floor
        )
        .entered();
        let meta = SnapshotMeta {
            rev: mem.rev,
            slot: mem.applied,
            files,
        };
        self.install_mem(mem)?;
        Ok(meta)
    }
}

/// Items read per lock hold while exporting: the writer waits at most this long.
const CHUNK_ITEMS: usize = 2048;

/// Bytes encoded per lock hold, at most (past the item that crosses it): a chunk is copied
/// out of the state, and 2,048 values of up to 1 MiB would be 2 GiB.
const CHUNK_BYTES: usize = 1 << 20;

/// Whether a chunk of `n` items encoded into `buf` is full.
fn chunk_full(n: usize, buf: &[u8]) -> bool {
    n >= CHUNK_ITEMS || buf.len() >= CHUNK_BYTES
}

/// Writes the visible state of `sh` as a stream of `version`, a chunk of items per read
/// lock so that commits go on meanwhile (the history it reads through is pinned); stops with
/// [`StoreError::Cancelled`] once `cancel` is set.
pub(crate) fn write_stream(
    sh: &Shared,
    out: &mut impl Write,
    version: u64,
    cancel: Option<&AtomicBool>,
) -> Result<SnapshotMeta> {
    let history = version >= 3;
    let (vis, floor, generation, configs, lo, _pin) = {
        let mem = sh.read();
        let vis = sh.visible();
        let window = vis.rev - DEDUP_WINDOW_REVS;
        let lo = if history {
            window.min(mem.floor)
        } else {
            window
        };
        let pin = sh.pin(&mem, lo.min(mem.floor));
        let configs: Vec<(Slot, Config)> = mem
            .configs
            .range(..=vis.applied)
            .map(|(s, c)| (*s, c.clone()))
            .collect();
        (vis, mem.floor, mem.generation, configs, lo, pin)
    };
    let (rev, applied) = (vis.rev, vis.applied);
    let _span = info_span!("export_snapshot", rev, applied, floor, version).entered();
    // Runs `f` on the state read-locked, unless a snapshot replaced it meanwhile.
    let locked = |f: &mut dyn FnMut(&Mem)| -> Result<()> {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StoreError::Cancelled);
        }
        let mem = sh.read();
        if mem.generation != generation {
            return Err(StoreError::Replaced);
        }
        f(&mem);
        Ok(())
    };
    let mut w = Writer_ {
        out,
        crc: crc32fast::Hasher::new(),
        items: 0,
        frame: Vec::new(),
    };
    w.raw(MAGIC)?;
    w.item(&Item::Header {
        format: version,
        rev,
        applied,
        config: vis.config.clone(),
    })?;
    if history {
        w.item(&Item::Floor { floor })?;
    }
    // Each chunk is encoded under the read lock straight from the state, then written
    // without it. An error met under the lock ends the chunk and is returned after it.
    let mut buf: Vec<u8> = Vec::new();
    let mut files = 0;
    let mut next: Vec<u8> = vec![];
    loop {
        buf.clear();
        let (mut n, mut resume, mut err) = (0, None, None);
        locked(&mut |mem| {
            let at = (mem.rev != rev).then_some(rev as u64);
            View { mem, at }.scan(&next, None, |k, r, v| {
                let item = ItemRef::File {
                    key: k,
                    rev: r,
                    value: v,
                };
                if let Err(e) = push_frame(&mut buf, &item) {
                    err = Some(e);
                    return ControlFlow::Break(());
                }
                n += 1;
                if chunk_full(n, &buf) {
                    resume = Some(k.to_vec());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        w.frames(&buf, n as u64)?;
        files += n as u64;
        let Some(last) = resume else {
            break;
        };
        // The first key after `last`.
        next = last;
        next.push(0);
    }
    // The command ids a replica at this revision still answers duplicates for, and with
    // history every revision above the floor.
    let mut from = lo.max(0) as u64 + 1;
    while from <= rev.max(0) as u64 {
        buf.clear();
        let (mut n, mut last, mut err) = (0, None, None);
        locked(&mut |mem| {
            for (r, e) in mem.revs.range(from..=rev as u64) {
                if chunk_full(n, &buf) {
                    break;
                }
                let code = e.code.map(|c| c as i32).unwrap_or(0);
                let pushed = if history {
                    let item = ItemRef::Rev {
                        rev: r as i64,
                        id: e.id,
                        code,
                        flags: e.flags,
                        key: &e.pkey,
                    };
                    push_frame(&mut buf, &item)
                } else {
                    let item = Item::Cmd {
                        id: e.id,
                        rev: r as i64,
                        code,
                    };
                    push_frame(&mut buf, &item)
                };
                if let Err(e) = pushed {
                    err = Some(e);
                    break;
                }
                n += 1;
                last = Some(r);
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        let Some(last) = last else {
            break;
        };
        w.frames(&buf, n as u64)?;
        from = last + 1;
    }
    if history {
        // Undo records of the revisions in (floor, rev]: later ones belong to changes after
        // the exported state. `at`: where the last chunk stopped, a key and, if some of its
        // records are still to be written, the revision of the last one written.
        let mut at: Option<(Bytes, Option<u64>)> = None;
        loop {
            buf.clear();
            let (mut n, mut err, mut stop) = (0, None, None);
            locked(&mut |mem| {
                let (rest_of, after) = match &at {
                    Some((k, Some(r))) => (Some((k, *r)), Some(&k[..])),
                    Some((k, None)) => (None, Some(&k[..])),
                    None => (None, None),
                };
                // (key, revision its records are written through)
                let keys = rest_of
                    .into_iter()
                    .chain(mem.keys_after(after).map(|k| (k, 0)));
                'keys: for (k, mut done) in keys {
                    for (r, prior) in mem.undo_of(k) {
                        if *r <= done || *r as i64 <= floor || *r as i64 > rev {
                            continue;
                        }
                        if chunk_full(n, &buf) {
                            stop = Some((k.clone(), Some(done)));
                            break 'keys;
                        }
                        let item = ItemRef::Undo {
                            key: k,
                            rev: *r as i64,
                            prior: prior.as_ref().map(|f| (f.rev, RawBytes(&f.value))),
                        };
                        if let Err(e) = push_frame(&mut buf, &item) {
                            err = Some(e);
                            break 'keys;
                        }
                        n += 1;
                        done = *r;
                    }
                    if chunk_full(n, &buf) {
                        stop = Some((k.clone(), None));
                        break;
                    }
                }
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            w.frames(&buf, n as u64)?;
            match stop {
                Some(s) => at = Some(s),
                None => break,
            }
        }
    }
    for (slot, config) in configs {
        w.item(&Item::ConfigAt { slot, config })?;
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

/// Reads and checks a whole stream into a new state; returns it and its number of files.
pub(crate) fn read_stream(inp: &mut impl Read) -> Result<(Mem, u64)> {
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
    let mut mem = Mem::default();
    (mem.rev, mem.floor, mem.applied, mem.config) = (rev, floor, applied, config);
    let files = fill(&mut mem, &mut r, version)?;
    Ok((mem, files))
}

/// Fills `mem` from the items after the header (and, in version 3, the floor). Returns the
/// number of files.
fn fill<R: Read>(mem: &mut Mem, r: &mut Reader_<'_, R>, version: u64) -> Result<u64> {
    let history = version >= 3;
    let (snap_rev, floor) = (mem.rev, mem.floor);
    let mut ids = std::collections::HashSet::new();
    let mut files = 0;
    let window = snap_rev - DEDUP_WINDOW_REVS;
    // Checks of the history: entries in increasing order, one for every revision above the
    // floor, and as many undo records as entries that say they wrote one.
    let (mut last_rev, mut above_floor, mut want_undo, mut undos) = (0i64, 0i64, 0u64, 0u64);
    let mut last_file: Option<Bytes> = None;
    loop {
        let (item, crc_before) = r.item()?;
        match item {
            Item::File { path, rev, value } => {
                valid_path(&path)?;
                if path == "/" {
                    return Err(StoreError::BadSnapshot("a file at /".into()));
                }
                let key = Bytes::from(path_key(&path));
                if last_file.as_ref().is_some_and(|l| *l >= key) {
                    return Err(StoreError::BadSnapshot(format!("{path} out of order")));
                }
                // A file under a file would make the tree inconsistent.
                for (i, &b) in key.iter().enumerate().skip(1) {
                    if b == 0x01 && mem.has_file(&key[..i]) {
                        return Err(StoreError::BadSnapshot(format!("{path} lies under a file")));
                    }
                }
                mem.create_file(key.clone(), FileVal { rev, value });
                last_file = Some(key);
                files += 1;
            }
            Item::Cmd { id, rev, code } if !history => {
                let code = code_of(code)?;
                if rev < 1 || rev > snap_rev || !ids.insert(id) {
                    return Err(StoreError::BadSnapshot(format!(
                        "command {id:?} twice or at rev {rev}"
                    )));
                }
                // A writer sends only revisions above the window; one below it would be
                // trimmed at once, and a far one would open a long gap in `mem.revs`.
                if rev <= window {
                    continue;
                }
                // As a nop: below the history floor, only the id matters.
                let rec = RevRec {
                    id,
                    code,
                    flags: 0,
                    pkey: Bytes::from_static(b"\x01"),
                };
                if mem.revs.insert(rev as u64, rec).is_some() {
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
                // Above the floor every revision has its entry (checked in full at the end);
                // a gap there is refused at once, before `mem.revs` allocates for it.
                let gap = rev > floor && rev != last_rev.max(floor) + 1;
                if rev <= last_rev || rev > snap_rev || gap {
                    return Err(StoreError::BadSnapshot(format!(
                        "revision {rev} after {last_rev}"
                    )));
                }
                last_rev = rev;
                // Below both the floor and the window an entry serves nothing (a writer
                // sends none), and a far one would open a long gap in `mem.revs`.
                if rev <= floor.min(window) {
                    continue;
                }
                if rev > window && !ids.insert(id) {
                    return Err(StoreError::BadSnapshot(format!("command {id:?} twice")));
                }
                if rev > floor {
                    above_floor += 1;
                    if flags & HAS_UNDO != 0 {
                        want_undo += 1;
                    }
                }
                let rec = RevRec {
                    id,
                    code,
                    flags,
                    pkey: Bytes::from(path_key(&path)),
                };
                mem.revs.insert(rev as u64, rec);
            }
            Item::Undo { path, rev, prior } if history => {
                valid_path(&path)?;
                if path == "/" || rev <= floor || rev > snap_rev {
                    return Err(StoreError::BadSnapshot(format!(
                        "undo record of {path} at revision {rev}"
                    )));
                }
                let prior = prior.map(|(rev, value)| FileVal { rev, value });
                let key = (Bytes::from(path_key(&path)), rev as u64);
                if !mem.push_undo(key.0, key.1, prior) {
                    return Err(StoreError::BadSnapshot(format!(
                        "two undo records of {path} at revision {rev}"
                    )));
                }
                undos += 1;
            }
            Item::ConfigAt { slot, config } => {
                mem.configs.insert(slot, config);
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
                return Ok(files);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-3 stream at revision `rev` with history floor `floor` and these `Rev` items
    /// (each a nop of its own command), ended correctly.
    fn stream(rev: i64, floor: i64, revs: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer_ {
            out: &mut out,
            crc: crc32fast::Hasher::new(),
            items: 0,
            frame: Vec::new(),
        };
        w.raw(MAGIC).unwrap();
        w.item(&Item::Header {
            format: 3,
            rev,
            applied: 1,
            config: Config::default(),
        })
        .unwrap();
        w.item(&Item::Floor { floor }).unwrap();
        for &r in revs {
            w.item(&Item::Rev {
                rev: r,
                id: CommandId {
                    node: doozer_paxos::NodeId(1),
                    seq: r as u64,
                },
                code: 0,
                flags: 0,
                path: "/".into(),
            })
            .unwrap();
        }
        let (items, crc) = (w.items, w.crc.clone().finalize());
        w.item(&Item::End { items, crc }).unwrap();
        out
    }

    #[test]
    fn a_gap_in_the_history_is_refused_at_once() {
        let (mem, _) = read_stream(&mut &stream(5, 2, &[1, 2, 3, 4, 5])[..]).unwrap();
        assert_eq!(mem.revs.bounds(), Some((1, 5)));
        // Revision 4 missing: refused at 5, not only by the count at the end.
        let e = read_stream(&mut &stream(5, 2, &[3, 5])[..]).unwrap_err();
        assert!(e.to_string().contains("revision 5 after 3"), "{e}");
        // A far revision above the floor would have opened a huge gap in memory.
        let e = read_stream(&mut &stream(1 << 60, 0, &[1, 1 << 60])[..]).unwrap_err();
        assert!(e.to_string().contains("after 1"), "{e}");
    }

    #[test]
    fn entries_below_the_floor_and_the_window_are_skipped() {
        let rev = DEDUP_WINDOW_REVS + 10;
        // Revision 3 is below both the floor (rev 10 back) and the window: it serves
        // nothing and is dropped, so the entries start at the floor's next revision.
        let revs: Vec<i64> = std::iter::once(3).chain(rev - 9..=rev).collect();
        let (mem, _) = read_stream(&mut &stream(rev, rev - 10, &revs)[..]).unwrap();
        assert_eq!(mem.revs.bounds(), Some(((rev - 9) as u64, rev as u64)));
        assert_eq!(mem.revs.len(), 10);
    }

    #[test]
    fn borrowed_items_encode_as_owned_ones() {
        fn enc(item: &impl Serialize) -> Vec<u8> {
            let mut out = Vec::new();
            codec::try_encode_into(item, &mut out).unwrap();
            out
        }
        // Short, long (past the stack buffer) and non-ASCII keys (the fallback).
        let keys: Vec<Vec<u8>> = vec![
            path_key("/a"),
            path_key("/ctl/node/3/addr"),
            path_key(&format!("/{}", "x".repeat(300))),
            vec![crate::keys::SEP, b'a', 0xc3, 0xa9, crate::keys::SEP, 0xff],
        ];
        let id = CommandId {
            node: doozer_paxos::NodeId(7),
            seq: 1 << 40,
        };
        for key in &keys {
            let value = Bytes::from(vec![0xab; 130]);
            let file = ItemRef::File {
                key,
                rev: 12345678901,
                value: &value,
            };
            let owned = Item::File {
                path: key_path(key),
                rev: 12345678901,
                value: value.clone(),
            };
            assert_eq!(enc(&file), enc(&owned));
            for (code, flags) in [(0, 0), (-3, HAS_UNDO), (i32::MAX, 0xff)] {
                let r = ItemRef::Rev {
                    rev: 99,
                    id,
                    code,
                    flags,
                    key,
                };
                let owned = Item::Rev {
                    rev: 99,
                    id,
                    code,
                    flags,
                    path: key_path(key),
                };
                assert_eq!(enc(&r), enc(&owned));
            }
            for prior in [None, Some((5, Bytes::new())), Some((-1, value.clone()))] {
                let u = ItemRef::Undo {
                    key,
                    rev: 1 << 50,
                    prior: prior.as_ref().map(|(r, v)| (*r, RawBytes(v))),
                };
                let owned = Item::Undo {
                    path: key_path(key),
                    rev: 1 << 50,
                    prior: prior.clone(),
                };
                assert_eq!(enc(&u), enc(&owned));
            }
        }
    }
}
