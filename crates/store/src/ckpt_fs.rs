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
