//! Reading the tree at a revision: the current one, or a past one through the undo records.
//!
//! The verbs (GET, GETDIR, STAT, WALK) are written once against [`View`], which answers "the
//! file at this key" and "files in this key range, in order" at its revision.

use std::ops::ControlFlow;

use bytes::Bytes;
use doozer_proto::{path, Glob};

use crate::error::{Result, StoreError};
use crate::keys::{self, child_prefix, entry_name, path_key, prefix_end, skip_subtree};
use crate::mem::Mem;

/// The tree as of one revision.
pub(crate) struct View<'m> {
    pub mem: &'m Mem,
    /// `None`: the current revision (undo records ignored); `Some(r)`: as of revision `r`.
    pub at: Option<u64>,
}

impl View<'_> {
    /// The file at `key` (rev, body), if it exists at this view's revision.
    pub fn file(&self, key: &[u8]) -> Option<(i64, Bytes)> {
        self.mem
            .file_at(key, self.at)
            .map(|f| (f.rev, f.value.clone()))
    }

    /// Calls `f(key, rev, body)` for each file with a key in `[start, end)` existing at this
    /// view's revision, in key order, until it breaks.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&[u8], i64, &Bytes) -> ControlFlow<()>,
    ) {
        for k in self.mem.keys_in(start, end) {
            if let Some(file) = self.mem.file_at(k, self.at) {
                if f(k, file.rev, &file.value).is_break() {
                    break;
                }
            }
        }
    }

    /// The first existing file in `[start, end)`: its key.
    pub fn first_key(&self, start: &[u8], end: Option<&[u8]>) -> Option<Vec<u8>> {
        let mut found = None;
        self.scan(start, end, |k, _, _| {
            found = Some(k.to_vec());
            ControlFlow::Break(())
        });
        found
    }

    /// Whether `path` is a directory (the root always is).
    pub fn is_dir(&self, path: &str) -> bool {
        if path == "/" {
            return true;
        }
        if self.at.is_none() {
            return self.mem.is_dir_now(&crate::keys::path_key(path));
        }
        let pre = child_prefix(path);
        self.first_key(&pre, prefix_end(&pre).as_deref()).is_some()
    }

    /// Calls `f(name)` for each entry of directory `path` in byte order, until it breaks.
    /// Each entry costs one seek: a directory's subtree is skipped in one step.
    pub fn entries(&self, path: &str, mut f: impl FnMut(&[u8]) -> ControlFlow<()>) {
        let pre = child_prefix(path);
        let end = prefix_end(&pre);
        let mut cursor = pre.clone();
        while let Some(k) = self.first_key(&cursor, end.as_deref()) {
            let name = entry_name(&pre, &k);
            if f(&name).is_break() {
                break;
            }
            let mut entry = pre.clone();
            entry.extend_from_slice(&name);
            cursor = skip_subtree(&entry);
        }
    }

    /// GET: the body and rev of a file; missing is `(empty, 0)`; a directory is ISDIR.
    pub fn get(&self, path: &str) -> Result<(Bytes, i64)> {
        path::validate(path)?;
        if path != "/" {
            if let Some((rev, value)) = self.file(&path_key(path)) {
                return Ok((value, rev));
            }
        }
        if self.is_dir(path) {
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
        if path != "/" && self.file(&path_key(path)).is_some() {
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
        });
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
            if let Some((rev, value)) = self.file(&path_key(path)) {
                return Ok((rev, i32::try_from(value.len()).unwrap_or(i32::MAX)));
            }
        }
        let mut n = 0i32;
        self.entries(path, |_| {
            n = n.saturating_add(1);
            ControlFlow::Continue(())
        });
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
                    found = Some((p, value.clone(), rev));
                    return ControlFlow::Break(());
                }
                n += 1;
            }
            ControlFlow::Continue(())
        });
        found.ok_or(StoreError::Range(offset))
    }
}
