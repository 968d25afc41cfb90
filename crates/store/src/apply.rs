//! Applying decided commands to the tree inside one write transaction.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use bytes::Bytes;
use doozer_paxos::{Command, Config, NodeId};
use doozer_proto::{path, ErrCode};
use redb::{ReadableTable, Table};

use crate::codec;
use crate::error::Result;
use crate::keys::{self, child_prefix, path_key, prefix_end};
use crate::op::{ApplyResult, Event, Op, FLAG_DEL, FLAG_NOP, FLAG_SET};
use crate::tables::{self, Bin, FileRec};
use crate::view::View;

/// Where failed commands leave their error text.
pub const ERR_PATH: &str = "/ctl/err";

/// The write-side tables of one transaction.
pub(crate) struct Tree<'txn> {
    pub files: Table<'txn, Bin, Bin>,
    pub undo: Table<'txn, Bin, Bin>,
    pub events: Table<'txn, u64, Bin>,
    pub cmds: Table<'txn, Bin, Bin>,
    pub cmd_revs: Table<'txn, u64, Bin>,
}

/// Why a command failed: the code for the client, the text for `/ctl/err`.
type Failure = (ErrCode, &'static str);

impl Tree<'_> {
    fn current(&self) -> View<'_, Table<'_, Bin, Bin>, Table<'_, Bin, Bin>> {
        View {
            files: &self.files,
            undo: &self.undo,
            at: None,
        }
    }

    /// Checks that `path` (which has no file of its own) could hold a file: it is not a
    /// directory and no ancestor is a file.
    fn check_place(&self, path: &str) -> Result<Option<Failure>> {
        if path == "/" {
            return Ok(Some((ErrCode::IsDir, "is a directory")));
        }
        let pre = child_prefix(path);
        if self
            .current()
            .first_key(&pre, prefix_end(&pre).as_deref())?
            .is_some()
        {
            return Ok(Some((ErrCode::IsDir, "is a directory")));
        }
        let key = path_key(path);
        for (i, &b) in key.iter().enumerate().skip(1) {
            if b == 0x01 && self.files.get(&key[..i])?.is_some() {
                return Ok(Some((ErrCode::NotDir, "not a directory")));
            }
        }
        Ok(None)
    }

    /// Sets or deletes `path` at `rev` if the compare-and-set revision `cas` allows it.
    fn mutate(
        &mut self,
        path: &str,
        cas: i64,
        value: Option<&[u8]>,
        rev: i64,
    ) -> Result<Option<Failure>> {
        let key = path_key(path);
        let old: Option<Vec<u8>> = self.files.get(key.as_slice())?.map(|g| g.value().to_vec());
        let cur_rev = match &old {
            Some(raw) => FileRec::decode(raw)?.rev,
            None => {
                if let Some(fail) = self.check_place(path)? {
                    return Ok(Some(fail));
                }
                doozer_proto::msg::REV_MISSING
            }
        };
        // Doozer's rule: -1 always, otherwise at least the current rev (0 = only if missing).
        let allowed = cas == doozer_proto::msg::REV_CLOBBER || (cas >= 0 && cas >= cur_rev);
        if !allowed {
            return Ok(Some((ErrCode::RevMismatch, "rev mismatch")));
        }
        match value {
            Some(v) => {
                self.files
                    .insert(key.as_slice(), FileRec::encode(rev, v).as_slice())?;
            }
            None if old.is_some() => {
                self.files.remove(key.as_slice())?;
            }
            // Deleting a missing file changes nothing: no undo record needed.
            None => return Ok(None),
        }
        let uk = keys::undo_key(&key, rev as u64);
        self.undo
            .insert(uk.as_slice(), old.as_deref().unwrap_or(&[]))?;
        Ok(None)
    }

    /// Applies one command at revision `rev` (or answers a duplicate). Returns the result,
    /// the event if the command took `rev`, and whether membership files may have changed.
    pub fn apply(&mut self, cmd: &Command, rev: i64) -> Result<Applied> {
        let id_key = tables::cmd_key(&cmd.id);
        if let Some(prev) = self.cmds.get(id_key.as_slice())? {
            let (rev, code) = tables::read_cmd_row(prev.value())?;
            let result = match code {
                None => ApplyResult::Ok { rev },
                Some(code) => ApplyResult::Err { rev, code },
            };
            return Ok(Applied {
                result,
                event: None,
                membership: false,
            });
        }
        let (fail, mut event) = match codec::decode_op(&cmd.data) {
            Err(_) => (Some((ErrCode::Other, "bad mutation")), None),
            Ok(Op::Nop) => (None, Some(nop_event(rev))),
            Ok(Op::Set {
                path,
                rev: cas,
                value,
            }) => {
                if path::validate(&path).is_err() {
                    (Some((ErrCode::BadPath, "bad path")), None)
                } else {
                    let fail = self.mutate(&path, cas, Some(&value), rev)?;
                    (
                        fail,
                        Some(Event {
                            rev,
                            path,
                            value,
                            flags: FLAG_SET,
                        }),
                    )
                }
            }
            Ok(Op::Del { path, rev: cas }) => {
                if path::validate(&path).is_err() {
                    (Some((ErrCode::BadPath, "bad path")), None)
                } else {
                    let fail = self.mutate(&path, cas, None, rev)?;
                    (
                        fail,
                        Some(Event {
                            rev,
                            path,
                            value: Bytes::new(),
                            flags: FLAG_DEL,
                        }),
                    )
                }
            }
        };
        let result = match fail {
            None => ApplyResult::Ok { rev },
            Some((code, text)) => {
                // The original records the failure as a clobbering set of /ctl/err. If even
                // that cannot be written (someone made /ctl a file), the revision is a nop.
                let err = self.mutate(
                    ERR_PATH,
                    doozer_proto::msg::REV_CLOBBER,
                    Some(text.as_bytes()),
                    rev,
                )?;
                event = Some(match err {
                    None => Event {
                        rev,
                        path: ERR_PATH.into(),
                        value: Bytes::from_static(text.as_bytes()),
                        flags: FLAG_SET,
                    },
                    Some(_) => nop_event(rev),
                });
                ApplyResult::Err { rev, code }
            }
        };
        let event = event.expect("every applied command makes an event");
        self.events.insert(
            rev as u64,
            tables::event_row(event.flags, &path_key(&event.path)).as_slice(),
        )?;
        let code = match result {
            ApplyResult::Ok { .. } => None,
            ApplyResult::Err { code, .. } => Some(code),
        };
        self.cmds
            .insert(id_key.as_slice(), tables::cmd_row(rev, code).as_slice())?;
        self.cmd_revs.insert(rev as u64, id_key.as_slice())?;
        let membership = is_membership_path(&event.path);
        Ok(Applied {
            result,
            event: Some(event),
            membership,
        })
    }

    /// Drops history at revisions `(from, to]`: their events and undo records.
    pub fn trim_history(&mut self, from: i64, to: i64) -> Result<()> {
        for r in (from.max(0) + 1)..=to {
            let Some(row) = self.events.remove(r as u64)? else {
                continue;
            };
            let (flags, pkey) = tables::read_event_row(row.value())?;
            if flags != FLAG_NOP {
                let uk = keys::undo_key(pkey, r as u64);
                drop(row);
                self.undo.remove(uk.as_slice())?;
            }
        }
        Ok(())
    }

    /// Forgets the command ids applied at revisions `<= to`.
    pub fn trim_commands(&mut self, to: i64) -> Result<()> {
        if to < 1 {
            return Ok(());
        }
        let ids: Vec<Vec<u8>> = self
            .cmd_revs
            .extract_from_if(..=(to as u64), |_, _| true)?
            .map(|item| item.map(|(_, id)| id.value().to_vec()))
            .collect::<std::result::Result<_, _>>()?;
        for id in ids {
            self.cmds.remove(id.as_slice())?;
        }
        Ok(())
    }

    /// The membership the tree describes: voters are the ids in non-empty `/ctl/cal/*`,
    /// learners the other ids under `/ctl/node/`. With no voter left, `prev`'s voters stay
    /// (the last voter is never removed, as in Doozer).
    pub fn derive_config(&self, prev: &Config) -> Result<Config> {
        derive_config(&self.current(), prev)
    }
}

/// Derives the membership from a view of the tree (see [`Tree::derive_config`]).
pub(crate) fn derive_config<F, U>(view: &View<'_, F, U>, prev: &Config) -> Result<Config>
where
    F: ReadableTable<Bin, Bin>,
    U: ReadableTable<Bin, Bin>,
{
    let mut voters = BTreeSet::new();
    let cal = child_prefix("/ctl/cal");
    view.scan(&cal, prefix_end(&cal).as_deref(), |k, _, value| {
        let direct = !k[cal.len()..].contains(&0x01);
        if direct && !value.is_empty() {
            match std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<NodeId>().ok()) {
                Some(id) => {
                    voters.insert(id);
                }
                None => tracing::warn!(path = %keys::key_path(k), "ignoring a calendar slot that holds no node id"),
            }
        }
        ControlFlow::Continue(())
    })?;
    let mut learners = BTreeSet::new();
    view.entries("/ctl/node", |name| {
        let id = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse::<NodeId>().ok());
        if let Some(id) = id.filter(|id| !voters.contains(id)) {
            learners.insert(id);
        }
        ControlFlow::Continue(())
    })?;
    if voters.is_empty() {
        voters = prev.voters.clone();
        learners.retain(|l| !voters.contains(l));
    }
    Ok(Config { voters, learners })
}

fn nop_event(rev: i64) -> Event {
    Event {
        rev,
        path: "/".into(),
        value: Bytes::new(),
        flags: FLAG_NOP,
    }
}

fn is_membership_path(p: &str) -> bool {
    p == "/ctl" || p.starts_with("/ctl/cal") || p.starts_with("/ctl/node")
}

/// The outcome of one command.
pub(crate) struct Applied {
    pub result: ApplyResult,
    /// `None` for a duplicate, which takes no revision.
    pub event: Option<Event>,
    pub membership: bool,
}
