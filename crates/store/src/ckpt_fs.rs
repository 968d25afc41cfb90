//! Where checkpoint files live: the directory of the store file, or, for fault-injection
//! tests, a simulation of one (the power-loss test keeps the synced and unsynced state of
//! each file and of the directory apart, as it does for the redb file).

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A checkpoint file being written.
pub trait CkptWrite: Write + Send {
    /// Makes the file's contents durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Before [`CkptWrite::sync`] of a background checkpoint: writes the contents back
    /// gently, so that the `fsync` finds little left (best effort; nothing by default).
    fn write_back(&mut self) {}
}

/// The directory checkpoint files are written to, renamed in, read from and removed from.
/// Names are file names within it.
pub trait CkptDir: Debug + Send + Sync {
    /// Opens `name` for reading: `None` if there is no such file.
    fn open(&self, name: &str) -> io::Result<Option<Box<dyn Read + Send>>>;
    /// Whether `name` exists.
    fn exists(&self, name: &str) -> bool;
    /// Creates (or truncates) `name` for writing.
    fn create(&self, name: &str) -> io::Result<Box<dyn CkptWrite>>;
    /// Renames `from` over `to`, atomically.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The path of `name`, for messages.
    fn display(&self, name: &str) -> PathBuf;
}

/// A directory of the real file system.
#[derive(Debug, Clone)]
pub struct RealDir {
    dir: PathBuf,
}

impl RealDir {
    /// The directory of the file at `path` (the current directory for a bare name).
    pub fn of(path: &Path) -> RealDir {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        RealDir { dir }
    }
}

impl CkptWrite for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }

    fn write_back(&mut self) {
        write_back_paced(self);
    }
}

/// Bytes written back per step by [`write_back_paced`], and the pause after each.
const WRITEBACK_STEP: u64 = 1 << 20;
const WRITEBACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Writes the file's dirty pages back a step at a time, pausing between steps, so that the
/// final `fsync` finds little left. A checkpoint is ~25 MB at 64,000 files: written back by
/// one `fsync`, it held up the commits' fsyncs on the same disk for 15-20 ms, and every
/// window's slowest client request fell there (`dzbench --every`). Best effort: the
/// `fsync` that follows is what makes the file durable. Only background checkpoints do
/// this: a snapshot install writes its checkpoint on the storage thread, which must not
/// sleep.
fn write_back_paced(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return;
        };
        if len <= WRITEBACK_STEP {
            return; // nothing to spread out
        }
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let mut off = 0;
        while off < len {
            // SAFETY: a plain syscall on an open descriptor; it touches no memory of ours.
            let r = unsafe {
                libc::sync_file_range(
                    f.as_raw_fd(),
                    off as libc::off64_t,
                    WRITEBACK_STEP as libc::off64_t,
                    flags,
                )
            };
            if r != 0 {
                return;
            }
            off += WRITEBACK_STEP;
            std::thread::sleep(WRITEBACK_PAUSE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

impl CkptDir for RealDir {
    fn open(&self, name: &str) -> io::Result<Option<Box<dyn Read + Send>>> {
        match File::open(self.dir.join(name)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn CkptWrite>> {
        Ok(Box::new(File::create(self.dir.join(name))?))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn display(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
