//! Simulated power loss: the store's redb file and its checkpoint directory live on a
//! simulated disk that keeps what was synced apart from what was only written. At a random
//! operation (of the storage thread or of the background checkpoint) the "power fails":
//! - each file keeps everything synced plus an arbitrary subset of the 512-byte sectors
//!   written since its last sync (the order writes reach the platter is not the order they
//!   were issued), at the length either before or after the unsynced resizes;
//! - the checkpoint directory keeps either its entries as of its last sync or its current
//!   ones (creates, renames and removes not yet synced may or may not have reached it);
//! - every later operation fails as if the process had died.
//!
//! The store is then reopened on that image and must hold every commit that returned, with
//! the tree, revision and acceptor records of its last commit. (SIGKILL tests in crash.rs
//! keep the page cache; this one does not.) `POWER_RUNS` sets the number of power failures
//! (default 60), `SEED` the random choices (the checkpoint thread's timing varies too).

mod common;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{check_log, leader_batch};
use doozer_store::ckpt_fs::{CkptDir, CkptWrite};
use doozer_store::{Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECTOR: usize = 512;

fn opts() -> StoreOptions {
    StoreOptions {
        hist_revs: 300,
        retain_slots: 50,
        cache_bytes: 4 << 20,
        // Checkpoints every few hundred revisions, so that the log is trimmed behind them
        // and power fails during their writes, renames and directory syncs too.
        checkpoint_revs: 300,
        // Small log tables, so that dropping them is among what the power cuts hit.
        log_gen_slots: 16,
    }
}

/// One file's bytes on the simulated disk.
#[derive(Debug, Default, Clone)]
struct FileState {
    /// What survives a power failure for sure.
    durable: Vec<u8>,
    /// What reads see: `durable` plus the writes and resizes since the last sync.
    current: Vec<u8>,
    /// Sectors written since the last sync: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

impl FileState {
    fn new(bytes: Vec<u8>) -> FileState {
        FileState {
            durable: bytes.clone(),
            current: bytes,
            pending: Vec::new(),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let off = offset as usize;
        if self.current.len() < off + data.len() {
            self.current.resize(off + data.len(), 0);
        }
        self.current[off..off + data.len()].copy_from_slice(data);
        // Sectors reach the disk independently of each other.
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            self.pending
                .push((offset + (i * SECTOR) as u64, chunk.to_vec()));
        }
    }

    fn sync(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
    }

    /// The durable bytes plus a random subset of the unsynced sectors, at one of the two
    /// lengths.
    fn crash_image(&self, rng: &mut StdRng) -> Vec<u8> {
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

/// What a power failure left: the redb file and the checkpoint directory's files.
#[derive(Debug, Default, Clone)]
struct Image {
    db: Vec<u8>,
    dir: BTreeMap<String, Vec<u8>>,
}

/// The simulated disk: the redb file, and a directory of files (by inode) for checkpoints.
#[derive(Debug, Default)]
struct Disk {
    db: FileState,
    files: BTreeMap<u64, FileState>,
    /// Directory entries (name -> inode) as of the last directory sync.
    dir_durable: BTreeMap<String, u64>,
    /// Directory entries as operations see them.
    dir_current: BTreeMap<String, u64>,
    next_inode: u64,
    /// Operations left before the power fails (`None`: never).
    ops_left: Option<u64>,
    /// Set once the power failed: the image the disk kept.
    image: Option<Image>,
    rng: Option<StdRng>,
    /// Checkpoint files renamed into place (not counting their temporary names).
    renames: u64,
}

impl Disk {
    fn from_image(img: &Image, rng: Option<StdRng>) -> Disk {
        let mut d = Disk {
            db: FileState::new(img.db.clone()),
            rng,
            ..Disk::default()
        };
        for (name, bytes) in &img.dir {
            let ino = d.new_inode(FileState::new(bytes.clone()));
            d.dir_current.insert(name.clone(), ino);
        }
        d.dir_durable = d.dir_current.clone();
        d
    }

    fn new_inode(&mut self, f: FileState) -> u64 {
        self.next_inode += 1;
        self.files.insert(self.next_inode, f);
        self.next_inode
    }

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

    fn crash_image(&mut self) -> Image {
        let rng = self.rng.as_mut().expect("a crashing disk has an rng");
        let entries = if rng.gen_bool(0.5) {
            &self.dir_durable
        } else {
            &self.dir_current
        };
        let dir = entries
            .iter()
            .map(|(name, ino)| (name.clone(), self.files[ino].crash_image(rng)))
            .collect();
        Image {
            db: self.db.crash_image(rng),
            dir,
        }
    }

    /// Whether anything written was not yet synced: a file's bytes or the directory.
    fn unsynced(&self) -> (bool, bool) {
        let files = self.files.values().any(|f| !f.pending.is_empty())
            || self.dir_durable != self.dir_current;
        (!self.db.pending.is_empty(), files)
    }
}

type Shared = Arc<Mutex<Disk>>;

/// The redb storage backend on the shared [`Disk`].
#[derive(Debug, Clone)]
struct Backend(Shared);

impl redb::StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        Ok(d.db.current.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        let off = offset as usize;
        d.db.current
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.db.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.db.sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.db.write(offset, data);
        Ok(())
    }
}

/// The checkpoint directory on the shared [`Disk`].
#[derive(Debug, Clone)]
struct Dir(Shared);

/// A checkpoint file being written on the shared [`Disk`].
struct DirFile {
    disk: Shared,
    inode: u64,
    pos: u64,
}

impl Write for DirFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.disk.lock().unwrap();
        d.tick()?;
        let f = d.files.get_mut(&self.inode).expect("an open file's inode");
        f.write(self.pos, buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CkptWrite for DirFile {
    fn sync(&mut self) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.tick()?;
        d.files.get_mut(&self.inode).expect("inode").sync();
        Ok(())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, name.to_owned())
}

impl CkptDir for Dir {
    fn open(&self, name: &str) -> io::Result<Option<Box<dyn Read + Send>>> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        Ok(d.dir_current.get(name).map(|ino| {
            let bytes = d.files[ino].current.clone();
            Box::new(io::Cursor::new(bytes)) as Box<dyn Read + Send>
        }))
    }

    fn exists(&self, name: &str) -> bool {
        self.0.lock().unwrap().dir_current.contains_key(name)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn CkptWrite>> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        let inode = d.new_inode(FileState::default());
        d.dir_current.insert(name.to_owned(), inode);
        Ok(Box::new(DirFile {
            disk: self.0.clone(),
            inode,
            pos: 0,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        let ino = d.dir_current.remove(from).ok_or_else(|| not_found(from))?;
        d.dir_current.insert(to.to_owned(), ino);
        if !to.contains(".tmp") {
            d.renames += 1;
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.dir_durable = d.dir_current.clone();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        d.dir_current.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut d = self.0.lock().unwrap();
        d.tick()?;
        Ok(d.dir_current.keys().cloned().collect())
    }

    fn display(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

fn open(path: &std::path::Path, disk: &Shared) -> doozer_store::Result<Store> {
    Store::open_with_backends(
        path,
        Backend(disk.clone()),
        Arc::new(Dir(disk.clone())),
        opts(),
    )
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
    let mut image = Image::default();
    let mut applied = 0;
    let (mut failed_mid_commit, mut failed_mid_ckpt, mut renames, mut reopened_ckpt) = (0, 0, 0, 0);
    for run in 0..runs {
        let disk = Arc::new(Mutex::new(Disk::from_image(
            &image,
            Some(StdRng::seed_from_u64(rng.gen())),
        )));
        let store = open(&path, &disk)
            .unwrap_or_else(|e| panic!("run {run}: reopen after power loss: {e}"));
        if image.dir.contains_key("doozer.redb.ckpt") {
            reopened_ckpt += 1;
        }
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
        drop(store);
        let mut d = disk.lock().unwrap();
        let (db, files) = d.unsynced();
        failed_mid_commit += u32::from(db);
        failed_mid_ckpt += u32::from(files);
        renames += d.renames;
        image = d.image.take().expect("the power failed");
        applied = reported;
    }
    // The last image too.
    let disk = Arc::new(Mutex::new(Disk::from_image(&image, None)));
    let store = open(&path, &disk).unwrap();
    let end = check_log(&store, applied, opts().retain_slots);
    eprintln!(
        "power loss test: applied slot {end}; {failed_mid_commit} failures mid-commit, \
         {failed_mid_ckpt} with checkpoint files or entries unsynced; {renames} checkpoints \
         renamed into place, {reopened_ckpt} reopens from a checkpoint"
    );
    assert!(end > 50, "the runs made progress (slot {end})");
    // Most failures should come with unsynced writes on the disk (others hit a read, or the
    // moment after a sync).
    assert!(
        failed_mid_commit > runs / 8,
        "only {failed_mid_commit} of {runs} failures hit unsynced writes"
    );
    // The checkpoint path was exercised: files put in place, and stores reopened from them.
    assert!(
        renames > 0 && reopened_ckpt > 0,
        "no checkpoint was written and reloaded"
    );
}
