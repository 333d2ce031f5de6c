//! The types both backends share: what a room's stored state is (`StoredRoom`), how a store is
//! configured (`StoreOptions`), its health (`StoreHealth`), its errors (`StoreError`), the answer
//! to a private room's creation (`Creation`), and the poison-tolerant `lock` both use.
//!
//! It must never depend on a backend's workings: SQLite and Redis import from here, never from each
//! other (a `StoreError` names the SQLite schema version it found, the one constant read from there).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::sqlite::SCHEMA_VERSION;
use crate::http::access::AccessHashes;

/// Locks `mutex`, also after a panic elsewhere: what the stores guard this way (a buffer of ops,
/// a link's state) is valid either way, and a store must not stop over another thread's panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the store keeps of a private room besides its canvas: its token digests and its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomAccess {
    pub hashes: AccessHashes,
    /// Only the owner may change the canvas (see `moderation`).
    pub locked: bool,
}

/// One stored room, as the operator's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    pub room: String,
    pub private: bool,
    /// Members in it now: room-wide in a cluster; `None` when the store does not count them
    /// (a single node counts its open rooms itself).
    pub members: Option<u64>,
    /// Bytes its picture and operations take in the store (in a cluster: the checkpoint's bytes
    /// plus Redis's own estimate of the operations' stream).
    pub stored_bytes: u64,
    /// When it last changed (Unix ms), if the store knows.
    pub changed_ms: Option<u64>,
}

/// Whether a private room was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created,
    /// A room of that name exists (public or private): pick another name.
    NameTaken,
}

/// Tuning of a `Store` opened on disk.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Appended ops are committed, in one transaction, at most this long after the first of them
    /// was queued.
    pub flush_interval: Duration,
    /// Rooms on disk. Loading a room that is not on disk while this many are stored fails with
    /// [`StoreError::TooManyRooms`]; rooms already stored always load.
    pub max_rooms: usize,
    /// Bytes of accepted ops held in memory while commits fail, beyond which rooms refuse draws
    /// (see [`StoreHealth::must_refuse`]).
    pub max_held_bytes: u64,
    /// SQLite's `max_page_count` for the database: a database that may grow no further, as on a
    /// full disk (for tests where no small file system can be made).
    pub max_page_count: Option<u32>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush_interval: Duration::from_millis(250),
            max_rooms: 100_000,
            max_held_bytes: 64 * 1024 * 1024,
            max_page_count: None,
        }
    }
}

/// Whether the store can write, shared with the rooms (to warn and refuse), the health checks and
/// the metrics. Plain atomics, read on every draw; the reason text only while failing.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: AtomicBool,
    held_bytes: AtomicU64,
    failures: AtomicU64,
    max_held_bytes: u64,
    reason: Mutex<Option<String>>,
}

impl StoreHealth {
    pub(crate) fn new(max_held_bytes: u64) -> StoreHealth {
        StoreHealth {
            max_held_bytes,
            ..StoreHealth::default()
        }
    }

    /// Accepted ops are waiting in memory because writing them failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Why the store cannot write, while it cannot.
    pub fn failure(&self) -> Option<String> {
        lock(&self.reason).clone()
    }

    /// As many bytes are held as may be: new ops must be refused, not accepted.
    pub fn must_refuse(&self) -> bool {
        self.is_failing() && self.held_bytes() >= self.max_held_bytes
    }

    /// Bytes of accepted ops held in memory, not yet written.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Failed write attempts since the store was opened.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self, reason: String, held_bytes: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.held_bytes.store(held_bytes, Ordering::Relaxed);
        *lock(&self.reason) = Some(reason);
        self.failing.store(true, Ordering::Relaxed);
    }

    pub(super) fn holding(&self, held_bytes: u64) {
        self.held_bytes.store(held_bytes, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self) {
        self.held_bytes.store(0, Ordering::Relaxed);
        *lock(&self.reason) = None;
        self.failing.store(false, Ordering::Relaxed);
    }
}

/// Why the store could not be opened, read or written. Every variant about the file names it.
#[derive(Debug)]
pub enum StoreError {
    /// A file-system operation on `path` failed (creating the data directory, inspecting the file).
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// Something that is not a regular file (`found`: "a directory", ...) is where the database
    /// should be.
    NotAFile { path: PathBuf, found: &'static str },
    /// The file exists but is not an SQLite database.
    NotADatabase { path: PathBuf },
    /// An SQLite database that livecanvas did not create: it has tables but no schema version.
    Foreign { path: PathBuf },
    /// The schema version is not one this code knows (a newer livecanvas wrote it?).
    UnknownVersion { path: PathBuf, found: i64 },
    /// The integrity check failed, the schema is incomplete, or a checkpoint is not a PNG.
    Corrupt { path: PathBuf, detail: String },
    /// Someone else holds the database's lock.
    Locked { path: PathBuf },
    /// SQLite could only open the file read-only (permissions, read-only file system).
    ReadOnly { path: PathBuf },
    /// Another SQLite failure while `action` ("cannot open", "cannot read") on `path`.
    Sqlite {
        path: PathBuf,
        action: &'static str,
        source: rusqlite::Error,
    },
    /// SQLite cannot run the database as livecanvas needs (WAL, exclusive locking).
    Unsupported { path: PathBuf, detail: String },
    /// Commits fail: `held` accepted ops wait in memory to be written.
    WriteFailed {
        path: PathBuf,
        held: usize,
        last: String,
    },
    /// The room is not on disk and `limit` rooms already are.
    TooManyRooms { limit: usize },
    /// The cluster's Redis could not be reached, or did not answer in time.
    Redis { detail: String },
    /// The store was closed, or its thread died: nothing more can be read or written.
    Stopped { path: PathBuf },
    /// The store's thread did not answer within `waited` (a disk that hangs).
    NoAnswer { path: PathBuf, waited: Duration },
    /// A backup could not be written (`why` names the file and the cause).
    BackupFailed { why: String },
    /// This store keeps nothing of its own to back up (`--storage memory`, or a cluster, whose
    /// canvases are Redis's to back up).
    NothingToBackUp,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io {
                path,
                action,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            StoreError::NotAFile { path, found } => write!(
                f,
                "{} is {found}, not a database file; refusing to use it",
                path.display()
            ),
            StoreError::NotADatabase { path } => write!(
                f,
                "{} is not an SQLite database; refusing to touch it \
                 (move it aside to start afresh)",
                path.display()
            ),
            StoreError::Foreign { path } => write!(
                f,
                "{} is an SQLite database that livecanvas did not create; refusing to touch it",
                path.display()
            ),
            StoreError::UnknownVersion { path, found } => write!(
                f,
                "{} has schema version {found}, but this livecanvas only knows version \
                 {SCHEMA_VERSION} (was it written by a newer livecanvas?); refusing to touch it",
                path.display()
            ),
            StoreError::Corrupt { path, detail } => write!(
                f,
                "{} is damaged ({detail}); refusing to touch it \
                 (restore a backup or move it aside)",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "{} is locked: is another livecanvas using {}?",
                path.display(),
                path.display()
            ),
            StoreError::ReadOnly { path } => write!(
                f,
                "{} can only be opened read-only; livecanvas needs to write it",
                path.display()
            ),
            StoreError::Sqlite {
                path,
                action,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            StoreError::Unsupported { path, detail } => {
                write!(f, "{}: {detail}; livecanvas cannot use it", path.display())
            }
            StoreError::WriteFailed { path, held, last } => write!(
                f,
                "{held} ops wait in memory to be written to {}: {last}",
                path.display()
            ),
            StoreError::TooManyRooms { limit } => {
                write!(f, "too many rooms are stored (the limit is {limit})")
            }
            StoreError::Redis { detail } => write!(f, "the cluster's Redis: {detail}"),
            StoreError::BackupFailed { why } => write!(f, "the backup failed: {why}"),
            StoreError::NothingToBackUp => f.write_str(
                "this server keeps no database of its own (--storage memory, or a cluster: back up \
                 Redis instead)",
            ),
            StoreError::NoAnswer { path, waited } => write!(
                f,
                "the storage of {} did not answer within {}s",
                path.display(),
                waited.as_secs()
            ),
            StoreError::Stopped { path } => write!(
                f,
                "the storage of {} has stopped (closed, or its thread died)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What is stored of one room.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredRoom {
    /// PNG bytes, `None` if the room was never checkpointed.
    pub checkpoint: Option<Vec<u8>>,
    /// Ops with `seq <= checkpoint_seq` are covered by the checkpoint (0 if none).
    pub checkpoint_seq: u64,
    /// The ops after the checkpoint, in ascending `seq`.
    pub ops: Vec<(u64, String)>,
    /// The checkpoint's length plus the ops' lengths: what counts toward the room-size limit.
    pub stored_bytes: u64,
    /// `false`: the room was not on disk (its row was created by this load, so it now counts
    /// toward `max_rooms`).
    pub existed: bool,
}
