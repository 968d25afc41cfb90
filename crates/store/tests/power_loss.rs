//! Simulated power loss: the store's redb file lives on a storage backend that keeps what
//! was synced apart from what was only written. At a random operation the "power fails":
//! the disk keeps everything synced plus an arbitrary subset of the 512-byte sectors written
//! since the last sync (the order writes reach the platter is not the order they were
//! issued), the length of the file either before or after the unsynced resizes, and every
//! later operation fails as if the process had died. The store is then reopened on that
//! image and must hold every commit that returned, with the tree, revision and acceptor
//! records of its last commit. (SIGKILL tests in crash.rs keep the page cache; this one
//! does not.) `POWER_RUNS` sets the number of power failures (default 60), `SEED` the
//! random choices.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::{check_log, leader_batch};
use doozer_store::{Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECTOR: usize = 512;

fn opts() -> StoreOptions {
    StoreOptions {
        hist_revs: 300,
        retain_slots: 50,
        cache_bytes: 4 << 20,
        // Checkpoint files are written with std::fs and fsynced (not simulated here); they
        // are on, every few hundred revisions, so that the log is trimmed behind them.
        checkpoint_revs: 300,
        // Small log tables, so that dropping them is among what the power cuts hit.
        log_gen_slots: 16,
    }
}

/// The disk under one store file.
#[derive(Debug, Default)]
struct Disk {
    /// What survives a power failure for sure.
    durable: Vec<u8>,
    /// What reads see: `durable` plus the writes and resizes since the last sync.
    current: Vec<u8>,
    /// Sectors written since the last sync: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
    /// Operations left before the power fails (`None`: never).
    ops_left: Option<u64>,
    /// Set once the power failed: the image the disk kept.
    image: Option<Vec<u8>>,
    rng: Option<StdRng>,
}

impl Disk {
    fn tick(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(io::Error::other("power failed"));
        }
        if let Some(n) = self.ops_left.as_mut() {
            if *n == 0 {
                self.image = Some(self.crash_image());
                return Err(io::Error::other("power failed"));
            }
            *n -= 1;
        }
        Ok(())
    }

    /// The durable bytes plus a random subset of the unsynced sectors, at one of the two
    /// lengths.
    fn crash_image(&mut self) -> Vec<u8> {
        let rng = self.rng.as_mut().expect("a crashing disk has an rng");
        let len = if rng.gen_bool(0.5) {
            self.durable.len()
        } else {
            self.current.len()
        };
        let mut img = self.durable.clone();
        img.resize(len, 0);
        for (off, data) in &self.pending {
            if rng.gen_bool(0.5) {
                let off = *off as usize;
                let end = (off + data.len()).min(len);
                if off < end {
                    img[off..end].copy_from_slice(&data[..end - off]);
                }
            }
        }
        img
    }
}

/// The redb storage backend on a shared [`Disk`].
#[derive(Debug, Clone)]
struct Backend(Arc<Mutex<Disk>>);

impl redb::StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        Ok(d.current.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        let off = offset as usize;
        d.current
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.durable = d.current.clone();
        d.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        let off = offset as usize;
        if d.current.len() < off + data.len() {
            d.current.resize(off + data.len(), 0);
        }
        d.current[off..off + data.len()].copy_from_slice(data);
        // Sectors reach the disk independently of each other.
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            d.pending
                .push((offset + (i * SECTOR) as u64, chunk.to_vec()));
        }
        Ok(())
    }
}

#[test]
fn power_loss_at_random_moments_loses_no_commit() {
    let runs: u32 = common::env_or("POWER_RUNS", 60);
    let seed: u64 = common::env_or("SEED", 0x90E2);
    eprintln!("power loss test: {runs} runs, SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doozer.redb");
    // The image the last power failure left (empty: a new disk).
    let mut image = Vec::new();
    let mut applied = 0;
    let mut failed_mid_commit = 0;
    for run in 0..runs {
        let disk = Arc::new(Mutex::new(Disk {
            durable: image.clone(),
            current: image.clone(),
            rng: Some(StdRng::seed_from_u64(rng.gen())),
            ..Disk::default()
        }));
        let store = Store::open_with_backend(&path, Backend(disk.clone()), opts())
            .unwrap_or_else(|e| panic!("run {run}: reopen after power loss: {e}"));
        let now = check_log(&store, applied, opts().retain_slots);
        assert!(
            now >= applied,
            "run {run}: went back from {applied} to {now}"
        );
        // Commit until the power fails somewhere in the next few hundred disk operations.
        disk.lock().unwrap().ops_left = Some(rng.gen_range(0..400));
        let mut reported = now;
        loop {
            let first = store.applied_slot() + 1;
            let last = first + rng.gen_range(0..3);
            match store.commit(leader_batch(first, last)) {
                Ok(c) => reported = c.applied,
                Err(_) => break,
            }
        }
        if !disk.lock().unwrap().pending.is_empty() {
            failed_mid_commit += 1;
        }
        drop(store);
        image = disk.lock().unwrap().image.take().expect("the power failed");
        applied = reported;
    }
    // The last image too.
    let disk = Arc::new(Mutex::new(Disk {
        durable: image.clone(),
        current: image,
        ..Disk::default()
    }));
    let store = Store::open_with_backend(&path, Backend(disk), opts()).unwrap();
    let end = check_log(&store, applied, opts().retain_slots);
    eprintln!("power loss test: applied slot {end}; {failed_mid_commit} failures mid-commit");
    assert!(end > 50, "the runs made progress (slot {end})");
    // Most failures should come with unsynced writes on the disk (others hit a read, or the
    // moment after a sync).
    assert!(
        failed_mid_commit > runs / 8,
        "only {failed_mid_commit} of {runs} failures hit unsynced writes"
    );
}
