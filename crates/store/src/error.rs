//! The store's one error type, and how it maps to Doozer error codes.

use std::io;

use doozer_proto::{ErrCode, ToErrCode};

/// Everything that can go wrong in the store.
///
/// Variants up to [`StoreError::BadGlob`] are answers to a request (the caller did something the
/// data model forbids); the rest are failures of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The path does not match `^/$|^(/[a-zA-Z0-9.\-]+)+$` or is too long.
    #[error(transparent)]
    BadPath(#[from] doozer_proto::PathError),
    /// The path names a directory where a file was needed.
    #[error("is a directory: {0}")]
    IsDir(String),
    /// A component of the path is a file where a directory was needed.
    #[error("not a directory: {0}")]
    NotDir(String),
    /// The directory does not exist.
    #[error("no such file or directory: {0}")]
    NoEnt(String),
    /// An offset past the end (or negative) for GETDIR or WALK.
    #[error("offset {0} out of range")]
    Range(i32),
    /// The revision is below the retained history.
    #[error("revision {rev} is older than the retained history (oldest {oldest})")]
    TooLate {
        /// The revision asked for.
        rev: i64,
        /// The oldest revision still answerable.
        oldest: i64,
    },
    /// The revision has not been applied yet; the server waits for it and retries.
    #[error("revision {rev} is not applied yet (current {current})")]
    FutureRev {
        /// The revision asked for.
        rev: i64,
        /// The store's current revision.
        current: i64,
    },
    /// An invalid glob pattern (WAIT, WALK).
    #[error(transparent)]
    BadGlob(#[from] doozer_proto::GlobError),

    /// Bytes that should hold an encoded value could not be decoded (a peer frame, an
    /// operation, a snapshot record).
    #[error("decode: {0}")]
    Decode(String),
    /// A value could not be encoded (a type serde/bincode cannot represent).
    #[error("encode: {0}")]
    Encode(String),
    /// A batch decided a slot that does not follow the last applied one.
    #[error("decided slot {got} does not follow applied slot {applied}")]
    SlotGap {
        /// The last applied slot.
        applied: u64,
        /// The slot the batch tried to apply.
        got: u64,
    },
    /// A snapshot stream is malformed, truncated or fails its checksum.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// A snapshot is older than what this store has already applied.
    #[error("snapshot at slot {snapshot} is older than applied slot {applied}")]
    StaleSnapshot {
        /// The snapshot's last applied slot.
        snapshot: u64,
        /// This store's last applied slot.
        applied: u64,
    },
    /// Data on disk that this code did not write, or damaged data.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The file was written in an on-disk format this code does not read (an older or newer
    /// version of doozer-rs). Nothing was changed in it.
    #[error("store file has on-disk format {found}; this build reads format {supported} (and converts format 4 to it)")]
    UnsupportedFormat {
        /// The format recorded in the file.
        found: u64,
        /// The format this code reads and writes.
        supported: u64,
    },
    /// The disk (or the file size limit) is full: nothing of the failed write was kept.
    #[error("disk full: {0}")]
    DiskFull(io::Error),
    /// The file or its file system is read-only, or permission was denied.
    #[error("store is read-only: {0}")]
    ReadOnly(io::Error),
    /// Another process (or another `Store` in this one) has the file open.
    #[error("store file is already open by another process")]
    Locked,
    /// Any other I/O error.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// An error of the storage engine (redb) that is none of the above.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A checkpoint was stopped because the store is closing.
    #[error("checkpoint cancelled: the store is closing")]
    Cancelled,
    /// A snapshot was installed while a long read (an export) was running on the state it
    /// replaced; the read can be started again.
    #[error("the state was replaced by an installed snapshot during the read")]
    Replaced,
    /// A previous write failed; the store refuses further writes until reopened.
    #[error("store is poisoned by an earlier failed write; reopen it")]
    Poisoned,
}

impl StoreError {
    /// Classifies an I/O error: disk full and read-only get their own variants.
    pub fn from_io(e: io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                return StoreError::DiskFull(e)
            }
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                return StoreError::ReadOnly(e)
            }
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge => StoreError::DiskFull(e),
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                StoreError::ReadOnly(e)
            }
            _ => StoreError::Io(e),
        }
    }

    /// Whether this error says something about the request rather than about the store: the
    /// store is fine and the caller may go on.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            StoreError::BadPath(_)
                | StoreError::IsDir(_)
                | StoreError::NotDir(_)
                | StoreError::NoEnt(_)
                | StoreError::Range(_)
                | StoreError::TooLate { .. }
                | StoreError::FutureRev { .. }
                | StoreError::BadGlob(_)
        )
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> StoreError {
        match e {
            redb::Error::Io(io) => StoreError::from_io(io),
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
            redb::Error::Corrupted(s) => StoreError::Corrupt(s),
            redb::Error::PreviousIo => StoreError::Poisoned,
            other => StoreError::Engine(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

impl ToErrCode for StoreError {
    fn err_code(&self) -> ErrCode {
        match self {
            StoreError::BadPath(_) => ErrCode::BadPath,
            StoreError::IsDir(_) => ErrCode::IsDir,
            StoreError::NotDir(_) => ErrCode::NotDir,
            StoreError::NoEnt(_) => ErrCode::NoEnt,
            StoreError::Range(_) => ErrCode::Range,
            StoreError::TooLate { .. } => ErrCode::TooLate,
            _ => ErrCode::Other,
        }
    }

    fn err_detail(&self) -> Option<String> {
        match self.err_code() {
            ErrCode::Other => Some(self.to_string()),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let full = StoreError::from_io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, StoreError::DiskFull(_)), "{full:?}");
        let big = StoreError::from_io(io::Error::from_raw_os_error(libc::EFBIG));
        assert!(matches!(big, StoreError::DiskFull(_)), "{big:?}");
        let ro = StoreError::from_io(io::Error::from_raw_os_error(libc::EROFS));
        assert!(matches!(ro, StoreError::ReadOnly(_)), "{ro:?}");
        let other = StoreError::from_io(io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, StoreError::Io(_)), "{other:?}");
        let via_redb = StoreError::from(redb::StorageError::Io(io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        assert!(matches!(via_redb, StoreError::DiskFull(_)), "{via_redb:?}");
    }

    #[test]
    fn codes_map_to_doozer_errors() {
        assert_eq!(StoreError::IsDir("/a".into()).err_code(), ErrCode::IsDir);
        assert_eq!(StoreError::NotDir("/a".into()).err_code(), ErrCode::NotDir);
        assert_eq!(
            StoreError::TooLate { rev: 1, oldest: 5 }.err_code(),
            ErrCode::TooLate
        );
        let e = StoreError::Locked;
        assert_eq!(e.err_code(), ErrCode::Other);
        assert!(e.err_detail().is_some());
        assert!(!e.is_request_error());
    }
}
