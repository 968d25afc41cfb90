//! Reading the tree at a revision: the current one, or a past one through the undo records.
//!
//! The verbs (GET, GETDIR, STAT, WALK) are written once against [`View`], which answers "the
//! file at this key" and "files in this key range, in order" at its revision.

use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use doozer_proto::{path, Glob};
use redb::ReadableTable;

use crate::error::{Result, StoreError};
use crate::keys::{self, child_prefix, entry_name, path_key, prefix_end, skip_subtree};
use crate::tables::{Bin, FileRec};

/// The tree as of one revision, over a `files` and an `undo` table of one transaction.
pub(crate) struct View<'t, F, U> {
    pub files: &'t F,
    pub undo: &'t U,
    /// `None`: the current revision (undo records ignored); `Some(r)`: as of revision `r`.
    pub at: Option<u64>,
}

type Guard<'a> = (redb::AccessGuard<'a, Bin>, redb::AccessGuard<'a, Bin>);

fn bounds<'a>(start: &'a [u8], end: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        Bound::Included(start),
        end.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// Takes the next item of a peekable range, surfacing a storage error.
fn peek_key(it: &mut std::iter::Peekable<redb::Range<'_, Bin, Bin>>) -> Result<Option<Vec<u8>>> {
    match it.peek() {
        None => Ok(None),
        Some(Ok((k, _))) => Ok(Some(k.value().to_vec())),
        Some(Err(_)) => match it.next() {
            Some(Err(e)) => Err(e.into()),
            _ => unreachable!("peeked an error"),
        },
    }
}

impl<'t, F, U> View<'t, F, U>
where
    F: ReadableTable<Bin, Bin>,
    U: ReadableTable<Bin, Bin>,
{
    /// The file at `key` (rev, body), if it exists at this view's revision.
    pub fn file(&self, key: &[u8]) -> Result<Option<(i64, Bytes)>> {
        if let Some(at) = self.at {
            let lo = keys::undo_key(key, at + 1);
            let hi = keys::undo_key(key, u64::MAX);
            if let Some(first) = self
                .undo
                .range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
                .next()
            {
                let (_, v) = first?;
                return Ok(FileRec::decode_undo(v.value())?
                    .filter(|r| r.rev as u64 <= at)
                    .map(|r| (r.rev, Bytes::copy_from_slice(r.value))));
            }
        }
        match self.files.get(key)? {
            Some(v) => {
                let r = FileRec::decode(v.value())?;
                if self.at.is_some_and(|at| r.rev as u64 > at) {
                    return Ok(None); // created after `at`
                }
                Ok(Some((r.rev, Bytes::copy_from_slice(r.value))))
            }
            None => Ok(None),
        }
    }

    /// Calls `f(key, rev, body)` for each file with a key in `[start, end)` existing at this
    /// view's revision, in key order, until it breaks.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&[u8], i64, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        let Some(at) = self.at else {
            for item in self.files.range::<&[u8]>(bounds(start, end))? {
                let (k, v) = item?;
                let r = FileRec::decode(v.value())?;
                if f(k.value(), r.rev, r.value).is_break() {
                    break;
                }
            }
            return Ok(());
        };
        // Merge the current rows with the undo records, path by path.
        let mut fi = self.files.range::<&[u8]>(bounds(start, end))?.peekable();
        let mut ui = self.undo.range::<&[u8]>(bounds(start, end))?.peekable();
        loop {
            let fk = peek_key(&mut fi)?;
            let uk = match peek_key(&mut ui)? {
                Some(k) => Some(
                    keys::split_undo_key(&k)
                        .ok_or_else(|| StoreError::Corrupt("undo key".into()))?
                        .0
                        .to_vec(),
                ),
                None => None,
            };
            let p = match (&fk, &uk) {
                (None, None) => return Ok(()),
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (Some(a), Some(b)) => a.min(b).clone(),
            };
            // The first undo record after `at` holds the path's state at `at`.
            let mut old: Option<Option<(i64, Vec<u8>)>> = None;
            while uk.is_some() {
                let Some(item) = ui.peek() else { break };
                let Ok((k, v)) = item else {
                    return Err(ui.next().expect("peeked").err().expect("error").into());
                };
                let Some((kp, rev)) = keys::split_undo_key(k.value()) else {
                    return Err(StoreError::Corrupt("undo key".into()));
                };
                if kp != p.as_slice() {
                    break;
                }
                if old.is_none() && rev > at {
                    old = Some(FileRec::decode_undo(v.value())?.map(|r| (r.rev, r.value.to_vec())));
                }
                ui.next();
            }
            let cur: Option<Guard<'_>> = if fk.as_deref() == Some(p.as_slice()) {
                Some(fi.next().expect("peeked")?)
            } else {
                None
            };
            // A state whose rev is after `at` was created after `at` (see `tables`).
            let flow = match (old, cur) {
                (Some(Some((rev, value))), _) if rev as u64 <= at => f(&p, rev, &value),
                (Some(_), _) | (None, None) => ControlFlow::Continue(()),
                (None, Some((_, v))) => {
                    let r = FileRec::decode(v.value())?;
                    if r.rev as u64 <= at {
                        f(&p, r.rev, r.value)
                    } else {
                        ControlFlow::Continue(())
                    }
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    /// The first existing file in `[start, end)`: its key.
    pub fn first_key(&self, start: &[u8], end: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.scan(start, end, |k, _, _| {
            found = Some(k.to_vec());
            ControlFlow::Break(())
        })?;
        Ok(found)
    }

    /// Whether `path` is a directory (the root always is).
    pub fn is_dir(&self, path: &str) -> Result<bool> {
        if path == "/" {
            return Ok(true);
        }
        let pre = child_prefix(path);
        Ok(self.first_key(&pre, prefix_end(&pre).as_deref())?.is_some())
    }

    /// Calls `f(name)` for each entry of directory `path` in byte order, until it breaks.
    /// Each entry costs one seek: a directory's subtree is skipped in one step.
    pub fn entries(&self, path: &str, mut f: impl FnMut(&[u8]) -> ControlFlow<()>) -> Result<()> {
        let pre = child_prefix(path);
        let end = prefix_end(&pre);
        let mut cursor = pre.clone();
        while let Some(k) = self.first_key(&cursor, end.as_deref())? {
            let name = entry_name(&pre, &k);
            if f(&name).is_break() {
                break;
            }
            let mut entry = pre.clone();
            entry.extend_from_slice(&name);
            cursor = skip_subtree(&entry);
        }
        Ok(())
    }

    /// GET: the body and rev of a file; missing is `(empty, 0)`; a directory is ISDIR.
    pub fn get(&self, path: &str) -> Result<(Bytes, i64)> {
        path::validate(path)?;
        if path != "/" {
            if let Some((rev, value)) = self.file(&path_key(path))? {
                return Ok((value, rev));
            }
        }
        if self.is_dir(path)? {
            return Err(StoreError::IsDir(path.to_owned()));
        }
        Ok((Bytes::new(), 0))
    }

    /// GETDIR: the name of the `offset`-th entry of a directory.
    pub fn getdir(&self, path: &str, offset: i32) -> Result<String> {
        path::validate(path)?;
        if offset < 0 {
            return Err(StoreError::Range(offset));
        }
        if path != "/" && self.file(&path_key(path))?.is_some() {
            return Err(StoreError::NotDir(path.to_owned()));
        }
        let (mut n, mut found) = (0i32, None);
        self.entries(path, |name| {
            if n == offset {
                found = Some(keys::key_path(name));
                return ControlFlow::Break(());
            }
            n += 1;
            ControlFlow::Continue(())
        })?;
        match found {
            Some(name) => Ok(name),
            None if n == 0 && path != "/" => Err(StoreError::NoEnt(path.to_owned())),
            None => Err(StoreError::Range(offset)),
        }
    }

    /// STAT: `(rev, len)` of a file, `(-2, entries)` of a directory, `(0, 0)` if missing or
    /// invalid.
    pub fn stat(&self, path: &str) -> Result<(i64, i32)> {
        if path::validate(path).is_err() {
            return Ok((0, 0));
        }
        if path != "/" {
            if let Some((rev, value)) = self.file(&path_key(path))? {
                return Ok((rev, i32::try_from(value.len()).unwrap_or(i32::MAX)));
            }
        }
        let mut n = 0i32;
        self.entries(path, |_| {
            n = n.saturating_add(1);
            ControlFlow::Continue(())
        })?;
        if n == 0 && path != "/" {
            return Ok((0, 0));
        }
        Ok((doozer_proto::msg::REV_DIR, n))
    }

    /// WALK: the `offset`-th file matching `glob`, in sorted depth-first order.
    pub fn walk(&self, glob: &Glob, offset: i32) -> Result<(String, Bytes, i64)> {
        if offset < 0 {
            return Err(StoreError::Range(offset));
        }
        let start = path_key(glob.literal_prefix());
        let end = prefix_end(&start);
        let (mut n, mut found) = (0i32, None);
        self.scan(&start, end.as_deref(), |k, rev, value| {
            let p = keys::key_path(k);
            if glob.matches(&p) {
                if n == offset {
                    found = Some((p, Bytes::copy_from_slice(value), rev));
                    return ControlFlow::Break(());
                }
                n += 1;
            }
            ControlFlow::Continue(())
        })?;
        found.ok_or(StoreError::Range(offset))
    }
}
