//! Checkpoints: the applied state written to a file beside the redb file, so that the
//! decided slots before it can be dropped and a restart replays only the slots after it.
//!
//! A checkpoint is a snapshot stream ([`crate::snapshot`], with history and CRC) of one
//! published state, written by a background thread to a temporary file, fsynced, renamed over
//! `<store file>.ckpt`, and the directory fsynced. Only then does the next commit record its
//! slot in the `state` table, which lets later commits drop the decided values at or below
//! it. A crash at any point leaves either the old or the new file, and the decided slots
//! after whichever it is. Renames happen under one lock and only move the file's slot
//! forward, so a slow background checkpoint never replaces a newer one (an installed
//! snapshot writes its checkpoint on the storage thread through the same path).

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use doozer_paxos::Slot;
use tracing::{info, warn};

use crate::ckpt_fs::CkptDir;
use crate::error::{Result, StoreError};
use crate::mem::Mem;
use crate::snapshot::{read_stream, write_stream, SNAPSHOT_FORMAT};
use crate::store::Shared as State_;

/// The name of the checkpoint file of the store file at `store`, in the same directory.
/// The store file needs a UTF-8 name: converted lossily, two different names could share
/// one checkpoint.
pub(crate) fn checkpoint_name(store: &Path) -> Result<String> {
    match store.file_name().map(|n| n.to_str()) {
        Some(Some(name)) => Ok(format!("{name}.ckpt")),
        _ => Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "store file {}: the path must end in a file name in UTF-8",
                store.display()
            ),
        ))),
    }
}

/// Reads the checkpoint `name` in `dir`: `None` if there is none.
pub(crate) fn load(dir: &dyn CkptDir, name: &str) -> Result<Option<Mem>> {
    let Some(f) = dir.open(name).map_err(StoreError::from_io)? else {
        return Ok(None);
    };
    let (mem, _) = read_stream(&mut BufReader::with_capacity(1 << 20, f)).map_err(|e| match e {
        StoreError::BadSnapshot(why) => {
            StoreError::Corrupt(format!("checkpoint {}: {why}", dir.display(name).display()))
        }
        other => other,
    })?;
    Ok(Some(mem))
}

/// Removes the temporary files of checkpoint `name` a crash left behind.
pub(crate) fn remove_leftovers(dir: &dyn CkptDir, name: &str) {
    let prefix = format!("{name}.tmp");
    if let Ok(names) = dir.list() {
        for n in names.iter().filter(|n| n.starts_with(&prefix)) {
            let _ = dir.remove(n);
        }
    }
}

struct State {
    /// A checkpoint written but not yet recorded by a commit: (slot, rev).
    done: Option<(Slot, i64)>,
    /// The slot of the file now at the checkpoint path.
    file_slot: Slot,
    /// The revision the last checkpoint was started at.
    started_rev: i64,
}

struct Ckpt {
    dir: Arc<dyn CkptDir>,
    /// The checkpoint's file name in `dir`.
    name: String,
    cancel: AtomicBool,
    state: Mutex<State>,
    tmp_seq: AtomicU64,
}

/// Lowers the calling thread's scheduling priority (nice 10): a checkpoint is background
/// work, and at full priority it took CPU from the commits and peer links that clients
/// wait on.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread (Linux applies `nice` per thread).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("cannot lower the checkpoint thread's priority");
        }
    }
}

/// CPU time of the calling thread so far, in ms (0 where unknown): a checkpoint's own cost,
/// which its wall time (at nice 10, on a busy machine) does not show.
fn thread_cpu_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes only `ts`, which outlives the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
        }
    }
    0
}

/// Starts, tracks and stops the background checkpoint.
pub(crate) struct Checkpointer {
    shared: Arc<Ckpt>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Revisions between checkpoints (at least the number of files).
    every: u64,
    /// Where in each interval this store's checkpoints fall: a fraction of it, in units of
    /// 2^-32 (see [`due`]).
    phase: AtomicU32,
}

/// Whether a checkpoint is due at revision `rev`, the last one having started at `last`.
/// Checkpoints fall where a grid of `every` revisions, shifted back by `phase` (a fraction
/// of `every` in units of 2^-32), is crossed, and at least `every / 2` apart. Replicas apply
/// the same revisions: with one phase, all of them wrote their checkpoint at once, and with
/// two followers slowed together the leader found no quick quorum (max latency 44 ms
/// against 20-22 ms with one node checkpointing, 40 s runs of `scripts/bench.sh`). A node
/// gives itself a phase by its place among the members ([`crate::Store::set_checkpoint_phase`]).
pub(crate) fn due(rev: i64, last: i64, every: i64, phase: u32) -> bool {
    let every = i128::from(every.max(1));
    let shift = (every * i128::from(phase)) >> 32;
    let (rev, last) = (i128::from(rev), i128::from(last));
    rev - last >= (every + 1) / 2
        && (rev + shift).div_euclid(every) > (last + shift).div_euclid(every)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ckpt {
    /// Writes `mem` to a temporary file and renames it over the checkpoint unless a newer one
    /// is there already.
    /// Returns the (slot, rev) of the checkpoint renamed into place, `None` if a newer one
    /// was there. A `background` write can be cancelled, and writes the file back in steps
    /// before its `fsync`.
    fn write(&self, sh: &State_, background: bool) -> Result<Option<(Slot, i64)>> {
        let tmp = format!(
            "{}.tmp.{}.{}",
            self.name,
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        );
        let io = StoreError::from_io;
        let result = (|| {
            let f = self.dir.create(&tmp).map_err(io)?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let flag = background.then_some(&self.cancel);
            let meta = write_stream(sh, &mut w, SNAPSHOT_FORMAT, flag)?;
            let mut f = w.into_inner().map_err(|e| io(e.into_error()))?;
            if background {
                // Spare the commits' fsyncs one big writeback.
                f.write_back();
            }
            f.sync().map_err(io)?;
            drop(f);
            let mut st = lock(&self.state);
            if st.file_slot > meta.slot
                || (st.file_slot == meta.slot && self.dir.exists(&self.name))
            {
                return Ok(None);
            }
            self.dir.rename(&tmp, &self.name).map_err(io)?;
            // The rename is durable once the directory is.
            self.dir.sync_dir().map_err(io)?;
            st.file_slot = meta.slot;
            Ok(Some((meta.slot, meta.rev)))
        })();
        if !matches!(result, Ok(Some(_))) {
            let _ = self.dir.remove(&tmp);
        }
        result
    }
}

impl Checkpointer {
    pub fn new(
        dir: Arc<dyn CkptDir>,
        name: String,
        file_slot: Slot,
        started_rev: i64,
        every: u64,
    ) -> Checkpointer {
        Checkpointer {
            shared: Arc::new(Ckpt {
                dir,
                name,
                cancel: AtomicBool::new(false),
                state: Mutex::new(State {
                    done: None,
                    file_slot,
                    started_rev,
                }),
                tmp_seq: AtomicU64::new(0),
            }),
            thread: Mutex::new(None),
            every,
            phase: AtomicU32::new(0),
        }
    }

    /// Sets the phase of later checkpoints: `part` of `of` parts of the interval.
    pub fn set_phase(&self, part: u64, of: u64) {
        let of = u128::from(of.max(1));
        // Rounded up, so that a third of 300 revisions is 100, not 99.
        let phase = ((u128::from(part) % of) << 32)
            .div_ceil(of)
            .min(u128::from(u32::MAX));
        self.phase.store(phase as u32, Ordering::Relaxed);
    }

    /// The revision the last checkpoint started at (or the one the file holds, at open).
    pub fn started_rev(&self) -> i64 {
        lock(&self.shared.state).started_rev
    }

    /// A checkpoint written since the last commit that recorded one.
    pub fn done(&self) -> Option<(Slot, i64)> {
        lock(&self.shared.state).done
    }

    /// A commit recorded the checkpoint of `slot`.
    pub fn recorded(&self, slot: Slot) {
        let mut st = lock(&self.shared.state);
        if st.done.is_some_and(|(s, _)| s <= slot) {
            st.done = None;
        }
    }

    /// Writes a checkpoint of `sh` now, on this thread (an installed snapshot: the decided
    /// slots before it are not in the log).
    pub fn write_now(&self, sh: &State_) -> Result<()> {
        self.shared.write(sh, false)?;
        let mut st = lock(&self.shared.state);
        st.started_rev = st.started_rev.max(sh.visible_rev());
        st.done = None;
        Ok(())
    }

    /// Starts a background checkpoint of the visible state of `sh` if enough revisions were
    /// applied since the last one (`recorded_rev`) and none is running.
    pub fn maybe_start(&self, sh: &Arc<State_>, recorded_rev: i64) {
        let mut thread = lock(&self.thread);
        if thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
        {
            // A checkpoint waits for at least as many revisions as it has files and undo
            // records, so that writing it costs about what the log it lets go did.
            let (rev, applied, items) = {
                let mem = sh.read();
                let items = mem.files_len() + mem.undo_len();
                (mem.rev, mem.applied, items as u64)
            };
            let mut st = lock(&self.shared.state);
            let every = self.every.max(items).min(i64::MAX as u64) as i64;
            let phase = self.phase.load(Ordering::Relaxed);
            if !due(rev, recorded_rev.max(st.started_rev), every, phase)
                || applied <= st.file_slot
                || st.done.is_some()
            {
                return;
            }
            st.started_rev = rev;
        }
        let (shared, sh) = (self.shared.clone(), sh.clone());
        let spawned = std::thread::Builder::new()
            .name("doozer-checkpoint".into())
            .spawn(move || {
                lower_priority();
                let t0 = std::time::Instant::now();
                match shared.write(&sh, true) {
                    Ok(Some((slot, rev))) => {
                        lock(&shared.state).done = Some((slot, rev));
                        let ms = t0.elapsed().as_millis() as u64;
                        let cpu_ms = thread_cpu_ms();
                        info!(slot, rev, ms, cpu_ms, "checkpoint written");
                    }
                    Ok(None) | Err(StoreError::Cancelled) | Err(StoreError::Replaced) => {}
                    Err(e) => {
                        warn!(error = %e, "checkpoint failed; the log is kept until the next one")
                    }
                }
            });
        match spawned {
            Ok(t) => *thread = Some(t),
            Err(e) => warn!(error = %e, "cannot start a checkpoint thread"),
        }
    }

    /// Stops a running checkpoint and waits for its thread.
    pub fn stop(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    /// The revisions in `1..=to` at which checkpoints start, each one taken when due.
    fn starts(every: i64, phase: u32, to: i64) -> Vec<i64> {
        let mut last = 0;
        let mut out = Vec::new();
        for rev in 1..=to {
            if due(rev, last, every, phase) {
                out.push(rev);
                last = rev;
            }
        }
        out
    }

    #[test]
    fn checkpoints_fall_on_a_grid_shifted_by_the_phase() {
        // No phase: every `every` revisions from the start.
        assert_eq!(starts(100, 0, 450), [100, 200, 300, 400]);
        // A third and two thirds of the interval earlier: three replicas spread out.
        assert_eq!(starts(99, 1 << 30, 400), [75, 174, 273, 372]);
        let third = ((1u64 << 32) / 3) as u32;
        assert_eq!(starts(99, third, 300), [67, 166, 265]);
        assert_eq!(starts(99, 2 * third, 300), [50, 133, 232]);
        // The first comes no sooner than half an interval.
        assert_eq!(starts(100, u32::MAX, 250), [50, 101, 201]);
        // A new phase moves the next one, never closer than half an interval to the last.
        assert!(!due(130, 100, 100, 1 << 31));
        assert!(due(150, 100, 100, 1 << 31));
        // Huge intervals (checkpoints off) and revisions do not overflow.
        assert!(!due(1 << 50, 0, i64::MAX, u32::MAX));
        assert!(!due(1_000_000, 0, i64::MAX, 0));
        assert!(due(i64::MAX, i64::MAX - 100, 100, u32::MAX));
    }
}
