//! `Store` on SQLite: the persistence of every room's canvas for a single node, in one database.
//!
//! It owns `<data_dir>/livecanvas.db` and the one thread ("livecanvas-store") that holds the
//! connection to it. Rooms and HTTP handlers never touch the disk: they buffer ops and queue
//! commands on a channel (`append`, `checkpoint`, `forget` return at once) and await the answers of the few that have
//! one (`load`, `read`, `flush`, `close`, `room_count`; each is queued when called, and its future
//! borrows nothing). It must never be called on the hot path synchronously, never block an actor
//! or an executor thread on the disk, and never overwrite, truncate or "repair" a database it
//! could not verify: every check runs before the first write, and a refused file is left byte for
//! byte as it was found.
//!
//! # Data model
//!
//! A room's picture is its latest checkpoint (a PNG of the whole canvas after op `checkpoint_seq`)
//! followed by the ops accepted after it, replayed in `seq` order:
//!
//! - `rooms(name TEXT PRIMARY KEY, width INTEGER, height INTEGER, checkpoint BLOB NULL,
//!   checkpoint_seq INTEGER NOT NULL DEFAULT 0, updated_at INTEGER)`: one row per room on disk.
//!   `checkpoint` is a PNG (NULL until the first checkpoint; `width`/`height` are those of the
//!   checkpoint), `updated_at` the Unix time of its last write. A row exists from the room's first
//!   load on, so it counts toward `max_rooms` even before anything is drawn, until `forget`.
//! - `ops(room TEXT NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL, PRIMARY KEY(room, seq))
//!   WITHOUT ROWID`: every accepted op after the checkpoint, as the JSON text that was broadcast
//!   (`{"type":"draw",...}`, `{"type":"clear"}`). A checkpoint deletes the ops it covers in the
//!   same transaction.
//! - `room_access(room TEXT PRIMARY KEY, edit_hash BLOB NOT NULL, view_hash BLOB NOT NULL,
//!   created_at INTEGER) WITHOUT ROWID`: the private rooms, with the SHA-256 digests of their
//!   edit and view tokens (never the tokens). Created if missing when a database is opened (it
//!   was added after version 1, and older code ignores it). A row is never deleted: forgetting a
//!   blank room's picture must not turn a private room public. Every row is read into memory at
//!   open, so the check on a WebSocket upgrade never waits for the disk; the writer adds a row to
//!   that map once it is committed. Rows count toward `max_rooms` of their own.
//! - `PRAGMA user_version` is the schema version, 1. A database with another version (or with
//!   tables but no version: not ours) is refused.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous=NORMAL`. A committed transaction survives the
//! process being killed (`kill -9`, a panic, the OOM killer): it is in the WAL, which the next open
//! replays. An OS crash or power cut may lose the last transactions since the latest WAL
//! checkpoint, but never leaves the database inconsistent. Appended ops are gathered in memory
//! and committed together at least every `flush_interval` (250 ms by default), and before any
//! other command is executed, so a process kill loses at most the ops of the last interval.
//! `close` (the graceful stop) commits everything and folds the WAL back into the database.
//!
//! # Write failures
//!
//! A commit that fails (disk full, an I/O error, a read-only file system) drops nothing: its ops
//! are held in memory, in order, with every op appended after them, and the writer tries again
//! with backoff (`RETRY_FIRST` doubling to `RETRY_MAX`) until a commit succeeds, which writes them
//! all in order. While ops are held, [`StoreHealth`] says so (rooms tell their members, `/readyz`
//! answers 503, metrics count the failures and the bytes held) and checkpoints are not written, so
//! the ops stay in place; once `max_held_bytes` are held, rooms refuse further draws rather than
//! keep what they cannot store. Only a process that ends while ops are held loses them (logged).
//!
//! # Exclusivity
//!
//! The connection runs with `locking_mode=EXCLUSIVE` and takes the write lock while opening, so a
//! second livecanvas on the same data directory fails at start-up ("is another livecanvas using
//! it?") instead of interleaving its writes; the lock lasts until `close` or the process ends.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use rusqlite::config::DbConfig;
use std::sync::RwLock;

use super::types::{lock, Creation, StoreError, StoreHealth, StoreOptions, StoredRoom};
use crate::http::access::AccessHashes;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

/// The database's file name inside the data directory.
pub const FILE_NAME: &str = "livecanvas.db";

/// The schema this code reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Every PNG file starts with these 8 bytes.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// `PNG_SIGNATURE` as SQLite's `hex()` spells it.
const PNG_SIGNATURE_HEX: &str = "89504E470D0A1A0A";

/// How long opening waits for a lock held by someone else before calling the file locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Appended ops kept in memory before they are committed regardless of the flush interval, so a
/// flood costs bounded memory (a few MiB) and bounded transactions. Large, because a commit costs
/// about one page per room it touches: the more ops per room in a commit, the fewer bytes written
/// per op (with 1,000 busy rooms, 4,096 made 3.7 KiB of writes per 150-byte op).
const MAX_PENDING_OPS: usize = 32_768;

/// WAL pages before SQLite copies them back into the database. Pages rewritten by successive
/// commits (a busy room's last leaf) are copied once per checkpoint, so fewer, larger checkpoints
/// write less. 8,192 pages of 4 KiB: the WAL stays under about 32 MiB.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 8_192;

/// SQLite's page cache, in KiB. A commit touches the last leaf of every busy room; with the default
/// 2 MiB, a thousand busy rooms did not fit, and every insert read its page back from the file
/// (pread and a WAL lookup per op: most of the store thread's time).
const PAGE_CACHE_KIB: u32 = 64 * 1024;

const THREAD_NAME: &str = "livecanvas-store";

/// After a failed commit, the next attempt waits this long, doubling after each failure up to
/// `RETRY_MAX`: space may come back at any moment, but a full disk must not be hammered.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often, at most, the writer compares the WAL's size with the space left on its volume (see
/// [`Writer::fold_wal_if_short_of_space`]).
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// A WAL smaller than this is never folded early: there is nothing worth freeing.
const WAL_FOLD_MIN_BYTES: u64 = 1024 * 1024;

/// How long a caller waits for the store thread's answer (a load, a read, a flush) before it gives
/// up with [`StoreError::NoAnswer`].
const STORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// While commits fail, the error is logged at the first failure and then at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

const CREATE_SCHEMA: &str = "
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        width INTEGER,
        height INTEGER,
        checkpoint BLOB NULL,
        checkpoint_seq INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER
    );
    CREATE TABLE ops (
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        op TEXT NOT NULL,
        PRIMARY KEY (room, seq)
    ) WITHOUT ROWID;
    PRAGMA user_version = 1;
";

/// The private rooms' table; added to a version-1 database that lacks it (see the module doc).
const CREATE_ACCESS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS room_access (
        room TEXT PRIMARY KEY,
        edit_hash BLOB NOT NULL,
        view_hash BLOB NOT NULL,
        created_at INTEGER
    ) WITHOUT ROWID;
";

/// Private rooms a memory store (`--storage memory`) keeps at most.
const MAX_MEMORY_PRIVATE_ROOMS: usize = 10_000;

/// Every private room's token digests, by room: shared by the handles and the writer.
type AccessMap = Arc<RwLock<HashMap<Arc<str>, AccessHashes>>>;

/// The handle to the store: cheap to clone, shared by every room and handler.
#[derive(Clone)]
pub struct Store {
    /// `None`: persistence is off.
    inner: Option<Arc<Inner>>,
    health: Arc<StoreHealth>,
    /// The private rooms (see `room_access` in the module doc).
    access: AccessMap,
}

struct Inner {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    /// Appended ops, handed to the writer without a channel message each (see [`Appends`]).
    appends: Arc<Mutex<Appends>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Queues a command; false if the writer thread is gone.
    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Buffers one op; false once the store is closed. Wakes the writer only when the buffer
    /// stops being empty (it then commits within the flush interval) or reaches
    /// `MAX_PENDING_OPS`: a message per op made one thread wake-up per op, the store thread's
    /// largest cost with a thousand busy rooms.
    fn append(&self, op: PendingOp) -> bool {
        let wake = {
            let mut appends = lock(&self.appends);
            if appends.closed {
                return false;
            }
            appends.ops.push(op);
            appends.ops.len() == 1 || appends.ops.len() == MAX_PENDING_OPS
        };
        if wake && !self.send(Command::Wake) {
            // The writer is gone: stop buffering what nobody will commit.
            let mut appends = lock(&self.appends);
            appends.closed = true;
            appends.ops.clear();
            return false;
        }
        true
    }

    fn stopped(&self) -> StoreError {
        StoreError::Stopped {
            path: self.path.clone(),
        }
    }
}

enum Command {
    /// Ops are waiting in [`Appends`].
    Wake,
    Checkpoint {
        room: Arc<str>,
        seq: i64,
        width: u32,
        height: u32,
        png: Vec<u8>,
    },
    Forget {
        room: Arc<str>,
        up_to_seq: i64,
    },
    Load {
        room: Arc<str>,
        reply: oneshot::Sender<Result<StoredRoom, StoreError>>,
    },
    Read {
        room: Arc<str>,
        reply: oneshot::Sender<Result<Option<StoredRoom>, StoreError>>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    RoomCount {
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    CreatePrivate {
        room: Arc<str>,
        hashes: AccessHashes,
        reply: oneshot::Sender<Result<Creation, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Tests: SQLite's `max_page_count`, to make the database full and then not.
    #[cfg(test)]
    SetMaxPageCount(u32),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Store({})", inner.path.display()),
            None => f.write_str("Store(memory)"),
        }
    }
}

impl Store {
    /// Opens (or creates) `<data_dir>/livecanvas.db`, verifies it, and starts the writer thread.
    ///
    /// This blocks (for up to about a second when the file is locked, plus the integrity check):
    /// call it at start-up, before serving. Nothing is written to a file that fails a check.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let path = data_dir.join(FILE_NAME);
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            action: "cannot create the data directory",
            source,
        })?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(StoreError::NotAFile {
                    path,
                    found: "a directory",
                })
            }
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::NotAFile {
                    path,
                    found: "not a regular file",
                })
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    action: "cannot inspect",
                    source,
                })
            }
        }
        let conn = open_verified(&path)?;
        if let Some(pages) = options.max_page_count {
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|source| open_error(&path, "cannot limit the size of", source))?;
        }
        let access: AccessMap = Arc::new(RwLock::new(read_access(&conn, &path)?));
        let (commands, receiver) = mpsc::channel();
        let appends = Arc::new(Mutex::new(Appends::default()));
        let health = Arc::new(StoreHealth::new(options.max_held_bytes));
        let writer = Writer {
            conn,
            path: path.clone(),
            options,
            appends: appends.clone(),
            pending: Vec::new(),
            first_pending: None,
            held: Vec::new(),
            held_bytes: 0,
            held_since: None,
            retry: None,
            last_failure_log: None,
            health: health.clone(),
            space_checked: None,
            access: access.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                action: "cannot start the storage thread for",
                source,
            })?;
        Ok(Store {
            inner: Some(Arc::new(Inner {
                path,
                commands,
                appends,
                thread: Mutex::new(Some(thread)),
            })),
            health,
            access,
        })
    }

    /// Persistence off: nothing is written; `load` returns an empty room that did not exist;
    /// `flush` and `close` return at once.
    pub fn memory() -> Store {
        Store {
            inner: None,
            health: Arc::new(StoreHealth::default()),
            access: AccessMap::default(),
        }
    }

    /// A private room's token digests; `None` for a public room. Read from memory: never waits.
    pub fn room_access(&self, room: &str) -> Option<AccessHashes> {
        self.access
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room)
            .copied()
    }

    /// Records a new private room; answers once it is committed (a room announced to its creator
    /// must survive a restart). A memory store keeps it in memory only.
    pub fn create_private_room(
        &self,
        room: Arc<str>,
        hashes: AccessHashes,
    ) -> impl Future<Output = Result<Creation, StoreError>> + Send + 'static {
        let memory = self
            .inner
            .is_none()
            .then(|| self.create_in_memory(room.clone(), hashes));
        let queued = self.request(|reply| Command::CreatePrivate {
            room,
            hashes,
            reply,
        });
        async move {
            match memory {
                Some(created) => created,
                None => queued.answer(Creation::NameTaken).await,
            }
        }
    }

    fn create_in_memory(
        &self,
        room: Arc<str>,
        hashes: AccessHashes,
    ) -> Result<Creation, StoreError> {
        let mut access = self
            .access
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if access.contains_key(&room) {
            return Ok(Creation::NameTaken);
        }
        if access.len() >= MAX_MEMORY_PRIVATE_ROOMS {
            return Err(StoreError::TooManyRooms {
                limit: MAX_MEMORY_PRIVATE_ROOMS,
            });
        }
        access.insert(room, hashes);
        Ok(Creation::Created)
    }

    /// Whether the store can write (always so for [`Store::memory`]).
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// The database file, `None` for [`Store::memory`].
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_deref().map(|inner| inner.path.as_path())
    }

    /// Queues one accepted op (`seq` strictly increasing per room; a repeated `(room, seq)`
    /// replaces the stored op). Never blocks. Dropped, with a debug log, once the store is closed.
    pub fn append(&self, room: &Arc<str>, seq: u64, op: ByteString) {
        let Some(inner) = &self.inner else { return };
        let Some(seq) = sql_seq(seq, room) else {
            return;
        };
        if !inner.append(PendingOp {
            room: room.clone(),
            seq,
            op,
        }) {
            log::debug!(
                "storage of {} has stopped: op {seq} of room={room} dropped",
                inner.path.display()
            );
        }
    }

    /// Queues a checkpoint: `png` is the whole picture after op `seq` (empty: a blank canvas, stored
    /// as no picture); the ops with
    /// `seq <= seq` are deleted in the same transaction. Ignored if the stored checkpoint is
    /// already at `seq` or later (an old and a new incarnation of a room may both checkpoint), and
    /// refused (logged) if `png` does not start with the PNG signature. Never blocks.
    pub fn checkpoint(&self, room: &Arc<str>, seq: u64, width: u32, height: u32, png: Vec<u8>) {
        let Some(inner) = &self.inner else { return };
        // An empty picture is a blank canvas (after a clear): stored as no checkpoint picture.
        if !png.is_empty() && !png.starts_with(&PNG_SIGNATURE) {
            log::error!(
                "room={room}: checkpoint at op {seq} is not a PNG ({} bytes); not stored",
                png.len()
            );
            return;
        }
        let Some(seq) = sql_seq(seq, room) else {
            return;
        };
        if !inner.send(Command::Checkpoint {
            room: room.clone(),
            seq,
            width,
            height,
            png,
        }) {
            log::debug!(
                "storage of {} has stopped: checkpoint {seq} of room={room} dropped",
                inner.path.display()
            );
        }
    }

    /// Queues deleting the room and its ops, freeing its slot (for an emptied room whose canvas is
    /// blank). Done only if nothing newer than `up_to_seq` is stored (no op after it, no
    /// checkpoint after it): a new incarnation of the room may already have written. Never blocks.
    pub fn forget(&self, room: &Arc<str>, up_to_seq: u64) {
        let Some(inner) = &self.inner else { return };
        let Some(up_to_seq) = sql_seq(up_to_seq, room) else {
            return;
        };
        if !inner.send(Command::Forget {
            room: room.clone(),
            up_to_seq,
        }) {
            log::debug!(
                "storage of {} has stopped: forgetting room={room} dropped",
                inner.path.display()
            );
        }
    }

    /// Loads a room. Every op queued before this call is committed first, so a room reloaded
    /// right after it unloaded sees all of them. A room that is not on disk gets its row now
    /// (`existed: false`), or [`StoreError::TooManyRooms`] if `max_rooms` are stored.
    ///
    /// The request is queued when this is called, not when the future is first polled: every op
    /// appended before the call is in the answer (ops appended after it, before the writer gets
    /// to the request, may be too). The future does not borrow the store.
    pub fn load(
        &self,
        room: Arc<str>,
    ) -> impl Future<Output = Result<StoredRoom, StoreError>> + Send + 'static {
        let queued = self.request(|reply| Command::Load { room, reply });
        queued.answer(StoredRoom::default())
    }

    /// Reads a room without creating it: `None` if it is not on disk (for a room that is not
    /// open, e.g. an HTTP download). Like `load`, every op queued before this call is committed
    /// first; `existed` is always true in an answer. `None` for [`Store::memory`].
    pub fn read(
        &self,
        room: Arc<str>,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send + 'static {
        let queued = self.request(|reply| Command::Read { room, reply });
        queued.answer(None)
    }

    /// Commits everything queued before this call; resolves once it is on disk (in the WAL). An
    /// error (`WriteFailed`) while ops are held because commits fail: they are not lost, but not
    /// on disk either.
    pub fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let queued = self.request(|reply| Command::Flush { reply });
        queued.answer(())
    }

    /// Tests: lets the database grow to `pages` pages (see [`StoreOptions::max_page_count`]).
    #[cfg(test)]
    fn set_max_page_count(&self, pages: u32) {
        if let Some(inner) = &self.inner {
            inner.send(Command::SetMaxPageCount(pages));
        }
    }

    /// Number of rooms stored (0 for [`Store::memory`]).
    pub fn room_count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send + 'static {
        let queued = self.request(|reply| Command::RoomCount { reply });
        queued.answer(0)
    }

    /// Commits everything queued, folds the WAL into the database (`wal_checkpoint(TRUNCATE)`),
    /// closes it (releasing the lock) and joins the thread. Later appends are dropped with a debug
    /// log; later loads and flushes fail with [`StoreError::Stopped`]. Idempotent.
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        let queued = self.request(|reply| Command::Close { reply });
        async move {
            let inner = match queued {
                Request::Memory => return,
                Request::Stopped(_) => return,
                Request::Queued(inner, answer) => {
                    // An error means the thread is already gone (an earlier close, or it died).
                    let _ = tokio::time::timeout(STORE_ANSWER_TIMEOUT, answer).await;
                    inner
                }
            };
            let handle = match inner.thread.lock() {
                Ok(mut thread) => thread.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            // The thread answers as its very last act, so this join does not wait on the disk.
            if let Some(handle) = handle {
                if handle.join().is_err() {
                    log::error!("the storage thread of {} panicked", inner.path.display());
                }
            }
        }
    }

    fn request<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Request<T> {
        let Some(inner) = &self.inner else {
            return Request::Memory;
        };
        let (reply, answer) = oneshot::channel();
        if inner.send(command(reply)) {
            Request::Queued(inner.clone(), answer)
        } else {
            Request::Stopped(inner.stopped())
        }
    }
}

/// A request on its way to the writer thread.
enum Request<T> {
    Memory,
    Queued(Arc<Inner>, oneshot::Receiver<T>),
    Stopped(StoreError),
}

impl<T> Request<Result<T, StoreError>> {
    /// The writer's answer (`memory` for a memory store), within `STORE_ANSWER_TIMEOUT`: a writer
    /// stuck on a dying disk must not keep a room or a request waiting for ever.
    async fn answer(self, memory: T) -> Result<T, StoreError> {
        match self {
            Request::Memory => Ok(memory),
            Request::Queued(inner, answer) => {
                match tokio::time::timeout(STORE_ANSWER_TIMEOUT, answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(inner.stopped()),
                    Err(_) => Err(StoreError::NoAnswer {
                        path: inner.path.clone(),
                        waited: STORE_ANSWER_TIMEOUT,
                    }),
                }
            }
            Request::Stopped(err) => Err(err),
        }
    }
}

/// `seq` as SQLite stores it; `None` (logged) beyond `i64::MAX`.
fn sql_seq(seq: u64, room: &str) -> Option<i64> {
    match i64::try_from(seq) {
        Ok(seq) => Some(seq),
        Err(_) => {
            log::error!("room={room}: op sequence number {seq} is too large to store; dropped");
            None
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Maps an SQLite error met while opening or checking `path` to what it means.
fn open_error(path: &Path, action: &'static str, err: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            detail: err.to_string(),
        },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path },
        _ => StoreError::Sqlite {
            path,
            action,
            source: err,
        },
    }
}

/// Opens the database, verifies it without writing a byte, then (only then) switches it to WAL,
/// creates the schema if the file is new, and holds the lock.
fn open_verified(path: &Path) -> Result<Connection, StoreError> {
    let fail = |action| move |err| open_error(path, action, err);
    // No URI interpretation of the path, no shared cache: a plain file.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(fail("cannot open"))?;
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(fail("cannot open"))?
    {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    // Reading a WAL database opens (creates) its -wal file: a refused file must not even leave
    // that behind, so note the side files that do not exist yet.
    let absent: Vec<PathBuf> = ["-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            PathBuf::from(side)
        })
        .filter(|side| !side.exists())
        .collect();
    let fresh = match verify(&conn, path) {
        Ok(fresh) => fresh,
        Err(err) => {
            if !matches!(err, StoreError::Locked { .. }) {
                // Not locked by anyone else, so the side files that appeared are this
                // connection's: remove them while it still holds its lock, if they are empty. It
                // will not write them again: it closes without a checkpoint.
                for side in &absent {
                    if std::fs::metadata(side).is_ok_and(|meta| meta.is_file() && meta.len() == 0) {
                        let _ = std::fs::remove_file(side);
                    }
                }
            }
            return Err(err);
        }
    };

    // Verified: from here on the file may be written.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
        .map_err(fail("cannot configure"))?;
    let journal: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(fail("cannot switch to WAL"))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("it cannot be put in WAL mode (journal_mode stayed {journal})"),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}; \
         PRAGMA cache_size = -{PAGE_CACHE_KIB};"
    ))
    .map_err(fail("cannot configure"))?;
    let schema = if fresh {
        format!("BEGIN IMMEDIATE; {CREATE_SCHEMA} {CREATE_ACCESS_TABLE} COMMIT;")
    } else {
        format!("BEGIN IMMEDIATE; {CREATE_ACCESS_TABLE} COMMIT;")
    };
    conn.execute_batch(&schema)
        .map_err(fail("cannot create the schema in"))?;
    Ok(conn)
}

/// Every private room's digests (at open; the writer keeps the map up to date afterwards).
fn read_access(
    conn: &Connection,
    path: &Path,
) -> Result<HashMap<Arc<str>, AccessHashes>, StoreError> {
    let fail = |err| open_error(path, "cannot read", err);
    let mut statement = conn
        .prepare("SELECT room, edit_hash, view_hash FROM room_access")
        .map_err(fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(fail)?;
    let mut access = HashMap::new();
    for row in rows {
        let (room, edit, view) = row.map_err(fail)?;
        let Some(hashes) = AccessHashes::from_slices(&edit, &view) else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the token digests of private room {room:?} are damaged"),
            });
        };
        access.insert(Arc::from(room), hashes);
    }
    Ok(access)
}

/// Locks the database and runs [`check`], writing nothing. `Ok(true)`: the database is new.
fn verify(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    let fail = |action| move |err| open_error(path, action, err);
    // A refused database must not even be checkpointed when this connection closes.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(fail("cannot configure"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(fail("cannot configure"))?;
    // Set before the first access, so a WAL database is never shared through a -shm file and the
    // first read already takes the exclusive lock.
    let mode: String = conn
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |row| row.get(0))
        .map_err(fail("cannot lock"))?;
    if !mode.eq_ignore_ascii_case("exclusive") {
        return Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("it cannot be locked exclusively (locking_mode stayed {mode})"),
        });
    }
    // Takes the lock (or fails after BUSY_TIMEOUT) and reads the header; writes nothing.
    conn.execute_batch("BEGIN EXCLUSIVE")
        .map_err(fail("cannot lock"))?;
    let fresh = check(conn, path)?;
    // Nothing was written: ending the transaction writes nothing either.
    conn.execute_batch("COMMIT").map_err(fail("cannot read"))?;
    Ok(fresh)
}

/// The checks a database must pass before anything is written to it. `Ok(true)`: it is empty (new).
fn check(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    let fail = |err| open_error(path, "cannot read", err);
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(fail)?;
    match version {
        0 if objects == 0 => return Ok(true),
        0 => {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
            })
        }
        SCHEMA_VERSION => {}
        found => {
            return Err(StoreError::UnknownVersion {
                path: path.to_path_buf(),
                found,
            })
        }
    }
    let problems: Vec<String> = {
        let mut statement = conn.prepare("PRAGMA quick_check(5)").map_err(fail)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)?
    };
    if problems != ["ok"] {
        return Err(corrupt(format!("integrity check: {}", problems.join("; "))));
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('rooms', 'ops')",
            [],
            |row| row.get(0),
        )
        .map_err(fail)?;
    if tables != 2 {
        return Err(corrupt("the rooms or ops table is missing".to_string()));
    }
    let not_png: Option<String> = conn
        .query_row(
            &format!(
                "SELECT name FROM rooms WHERE checkpoint IS NOT NULL \
                 AND hex(substr(checkpoint, 1, 8)) <> '{PNG_SIGNATURE_HEX}' LIMIT 1"
            ),
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(fail)?;
    if let Some(room) = not_png {
        return Err(corrupt(format!(
            "the checkpoint of room {room:?} is not a PNG image"
        )));
    }
    Ok(false)
}

/// Ops appended since the writer last took them. Appends and commands keep their relative order:
/// the writer takes every buffered op before it executes any command, and an op is buffered
/// before its caller can queue a later command.
#[derive(Default)]
struct Appends {
    ops: Vec<PendingOp>,
    /// Set by `close` (or the writer's end): later appends are dropped.
    closed: bool,
}

/// An op waiting for the next commit.
struct PendingOp {
    room: Arc<str>,
    seq: i64,
    op: ByteString,
}

/// The writer thread's state: the only owner of the connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
    appends: Arc<Mutex<Appends>>,
    /// The ops being committed (taken from `appends`; kept to reuse its allocation).
    pending: Vec<PendingOp>,
    /// When the writer learned of the oldest uncommitted op.
    first_pending: Option<Instant>,
    /// Ops whose commit failed, oldest first, followed by every op appended since: written, in
    /// this order, by the first commit that succeeds.
    held: Vec<PendingOp>,
    held_bytes: u64,
    /// When the first of the held ops failed to commit.
    held_since: Option<Instant>,
    /// While ops are held: the backoff, and when the next attempt is due.
    retry: Option<(Duration, Instant)>,
    last_failure_log: Option<Instant>,
    health: Arc<StoreHealth>,
    /// When the WAL's size was last compared with the space left.
    space_checked: Option<Instant>,
    /// The private rooms, in memory: a committed row is added here.
    access: AccessMap,
}

impl Writer {
    /// Executes commands in arrival order until `Close`, or until every `Store` is dropped.
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            let flush_due = self
                .first_pending
                .map(|first| first + self.options.flush_interval);
            let retry_due = self.retry.map(|(_, at)| at);
            // While ops are held, a flush only counts new ops among them (so that rooms see
            // the bound in time); the retry itself waits for its own time.
            let due = match (flush_due, retry_due) {
                (Some(flush), Some(retry)) => Some(flush.min(retry)),
                (flush, retry) => flush.or(retry),
            };
            let received = match due {
                Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
                None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Command::Wake) => {
                    let buffered = lock(&self.appends).ops.len();
                    if buffered >= MAX_PENDING_OPS {
                        self.commit_pending();
                    } else if buffered > 0 {
                        self.first_pending.get_or_insert_with(Instant::now);
                    }
                }
                Ok(Command::Close { reply }) => {
                    lock(&self.appends).closed = true;
                    self.last_attempt();
                    self.finish();
                    let _ = reply.send(());
                    return;
                }
                Ok(command) => {
                    // Every op appended before this command was queued is on disk first.
                    self.commit_pending();
                    self.execute(command);
                }
                Err(RecvTimeoutError::Timeout) => self.commit_pending(),
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle was dropped without close: still commit what was queued.
                    lock(&self.appends).closed = true;
                    self.last_attempt();
                    self.finish();
                    return;
                }
            }
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Wake => {
                // `run` handles wake-ups; the next commit takes the buffered ops either way.
            }
            // While ops are held, a checkpoint would delete stored ops below held ones; it is
            // left out, and the ops it would have covered stay in place.
            Command::Checkpoint { room, seq, .. } if !self.held.is_empty() => {
                log::debug!("room={room}: checkpoint at op {seq} not written, ops are held");
            }
            Command::Forget { room, .. } if !self.held.is_empty() => {
                log::debug!("room={room}: not forgotten, ops are held");
            }
            Command::Checkpoint {
                room,
                seq,
                width,
                height,
                png,
            } => match self.write_checkpoint(&room, seq, width, height, &png) {
                Ok(true) => log::debug!("room={room}: checkpoint at op {seq} stored"),
                Ok(false) => log::debug!(
                    "room={room}: checkpoint at op {seq} ignored, a later one is stored"
                ),
                Err(err) => self.log_failure(
                    &err,
                    format_args!(
                        "the checkpoint of room={room} at op {seq} was not written; \
                         the ops it covers stay in place"
                    ),
                ),
            },
            Command::Forget { room, up_to_seq } => match self.forget(&room, up_to_seq) {
                Ok(true) => log::debug!("room={room}: forgotten"),
                Ok(false) => log::debug!(
                    "room={room}: not forgotten, something after op {up_to_seq} is stored"
                ),
                Err(err) => self.log_failure(&err, format_args!("room={room} was not forgotten")),
            },
            Command::Load { room, reply } => {
                // With `create`, the answer is always `Some`.
                let loaded = self.load(&room, true).map(Option::unwrap_or_default);
                let _ = reply.send(loaded.map(|stored| self.with_held(&room, stored)));
            }
            Command::Read { room, reply } => {
                let read = self.load(&room, false);
                let read = read.map(|stored| stored.map(|stored| self.with_held(&room, stored)));
                let _ = reply.send(read);
            }
            Command::Flush { reply } => {
                let result = match self.health.failure() {
                    Some(last) if !self.held.is_empty() => Err(StoreError::WriteFailed {
                        path: self.path.clone(),
                        held: self.held.len(),
                        last,
                    }),
                    _ => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::RoomCount { reply } => {
                let count = self
                    .conn
                    .query_row("SELECT count(*) FROM rooms", [], |row| row.get::<_, i64>(0))
                    .map(|count| usize::try_from(count).unwrap_or(0))
                    .map_err(|source| self.sqlite_error("cannot read", source));
                let _ = reply.send(count);
            }
            Command::CreatePrivate {
                room,
                hashes,
                reply,
            } => {
                let created = self
                    .create_private(&room, &hashes)
                    .map_err(|source| self.sqlite_error("cannot write to", source))
                    .and_then(|created| created);
                if let Ok(Creation::Created) = created {
                    self.access
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(room, hashes);
                }
                let _ = reply.send(created);
            }
            Command::Close { reply } => {
                // Handled by `run`, which owns the connection's end.
                let _ = reply.send(());
            }
            #[cfg(test)]
            Command::SetMaxPageCount(pages) => {
                let set = format!("PRAGMA max_page_count = {pages}");
                if let Err(err) = self.conn.query_row(&set, [], |_| Ok(())) {
                    log::error!("{set}: {err}");
                }
            }
        }
    }

    fn sqlite_error(&self, action: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Folds the WAL into the database and truncates it when it takes more than the space left on
    /// its volume (checked every `SPACE_CHECK_EVERY`). The WAL grows to `WAL_AUTOCHECKPOINT_PAGES`
    /// between folds, mostly pages that later commits rewrote: on a small volume it filled the
    /// disk by itself (a chaos run on 16 MiB, with 2 MiB of strokes in a 16 MiB WAL), and folding
    /// then needed the very space the WAL held. Folding early, while there is room, frees it.
    fn fold_wal_if_short_of_space(&mut self) {
        if self
            .space_checked
            .is_some_and(|at| at.elapsed() < SPACE_CHECK_EVERY)
        {
            return;
        }
        self.space_checked = Some(Instant::now());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        if wal_bytes < WAL_FOLD_MIN_BYTES {
            return;
        }
        let Some(free_bytes) = self.path.parent().and_then(free_space) else {
            return;
        };
        if free_bytes > wal_bytes {
            return;
        }
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            Ok(()) => log::warn!(
                "{}: {} bytes free, less than its WAL's {wal_bytes}: folded the WAL early",
                self.path.display(),
                free_bytes
            ),
            Err(err) => log::debug!(
                "{}: folding the WAL early failed: {err}",
                self.path.display()
            ),
        }
    }

    /// `stored` with the room's held ops after it: what was accepted is part of the room, whether
    /// or not it could be written yet.
    fn with_held(&self, room: &str, mut stored: StoredRoom) -> StoredRoom {
        let after = stored
            .ops
            .last()
            .map_or(stored.checkpoint_seq, |(seq, _)| *seq);
        for op in self.held.iter().filter(|op| &*op.room == room) {
            let seq = u64::try_from(op.seq).unwrap_or(0);
            if seq > after {
                stored.stored_bytes += op.op.len() as u64;
                stored.ops.push((seq, op.op.to_string()));
            }
        }
        stored
    }

    /// Logs a failed write (a checkpoint, a forget) that loses nothing: what it would have
    /// replaced is still stored.
    fn log_failure(&mut self, err: &rusqlite::Error, consequence: fmt::Arguments<'_>) {
        log::error!(
            "cannot write to {}: {err}; {consequence}",
            self.path.display()
        );
    }

    /// Commits every buffered op in one transaction, after the held ones; while ops are held,
    /// only once the retry is due.
    fn commit_pending(&mut self) {
        self.first_pending = None;
        // Swapped, not drained: both vectors keep their capacity.
        std::mem::swap(&mut lock(&self.appends).ops, &mut self.pending);
        if self.held.is_empty() {
            if self.pending.is_empty() {
                return;
            }
            self.fold_wal_if_short_of_space();
            if let Err(err) = write_ops(&mut self.conn, &self.pending) {
                std::mem::swap(&mut self.held, &mut self.pending);
                self.held_bytes = op_bytes(&self.held);
                self.held_since = Some(Instant::now());
                self.commit_failed(&err);
            }
            self.pending.clear();
            return;
        }
        self.held_bytes += op_bytes(&self.pending);
        self.held.append(&mut self.pending);
        self.health.holding(self.held_bytes);
        if self.retry.is_some_and(|(_, at)| Instant::now() < at) {
            return;
        }
        self.retry_held();
    }

    /// Tries to write every held op, in order.
    fn retry_held(&mut self) {
        // Folding the WAL may be what makes room (a WAL holds every page a commit rewrote).
        self.space_checked = None;
        self.fold_wal_if_short_of_space();
        match write_ops(&mut self.conn, &self.held) {
            Ok(()) => {
                let waited = self
                    .held_since
                    .map_or(Duration::ZERO, |since| since.elapsed());
                log::warn!(
                    "{} is writable again: {} ops ({} bytes) held for {:.1}s are written",
                    self.path.display(),
                    self.held.len(),
                    self.held_bytes,
                    waited.as_secs_f64()
                );
                self.held.clear();
                self.held_bytes = 0;
                self.held_since = None;
                self.retry = None;
                self.last_failure_log = None;
                self.health.recovered();
            }
            Err(err) => self.commit_failed(&err),
        }
    }

    /// A commit failed: its ops are held; the next attempt waits longer.
    fn commit_failed(&mut self, err: &rusqlite::Error) {
        let backoff = match self.retry {
            Some((backoff, _)) => (backoff * 2).min(RETRY_MAX),
            None => RETRY_FIRST,
        };
        self.retry = Some((backoff, Instant::now() + backoff));
        let reason = format!("cannot write to {}: {err}", self.path.display());
        let log_due = self
            .last_failure_log
            .is_none_or(|last| last.elapsed() >= FAILURE_LOG_EVERY);
        if log_due {
            self.last_failure_log = Some(Instant::now());
            log::error!(
                "{reason}; {} ops ({} bytes) are held in memory and retried",
                self.held.len(),
                self.held_bytes
            );
        }
        self.health.failed(reason, self.held_bytes);
    }

    /// The thread is ending: one more try for what is held, whatever the backoff says.
    fn last_attempt(&mut self) {
        self.retry = None;
        self.commit_pending();
        if !self.held.is_empty() {
            log::error!(
                "{} could not be written: {} accepted ops ({} bytes) are lost",
                self.path.display(),
                self.held.len(),
                self.held_bytes
            );
        }
    }

    fn write_checkpoint(
        &mut self,
        room: &str,
        seq: i64,
        width: u32,
        height: u32,
        png: &[u8],
    ) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction()?;
        let stored: Option<i64> = tx
            .prepare_cached("SELECT checkpoint_seq FROM rooms WHERE name = ?1")?
            .query_row([room], |row| row.get(0))
            .optional()?;
        if stored.is_some_and(|stored| stored >= seq) {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO rooms (name, width, height, checkpoint, checkpoint_seq, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (name) DO UPDATE SET width = excluded.width, height = excluded.height, \
             checkpoint = excluded.checkpoint, checkpoint_seq = excluded.checkpoint_seq, \
             updated_at = excluded.updated_at",
        )?
        .execute(params![
            room,
            width,
            height,
            (!png.is_empty()).then_some(png),
            seq,
            unix_now()
        ])?;
        tx.prepare_cached("DELETE FROM ops WHERE room = ?1 AND last_seq <= ?2")?
            .execute(params![room, seq])?;
        tx.commit()?;
        Ok(true)
    }

    fn forget(&mut self, room: &str, up_to_seq: i64) -> rusqlite::Result<bool> {
        let tx = self.conn.transaction()?;
        let stored: Option<i64> = tx
            .prepare_cached("SELECT checkpoint_seq FROM rooms WHERE name = ?1")?
            .query_row([room], |row| row.get(0))
            .optional()?;
        let later_op: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM ops WHERE room = ?1 AND last_seq > ?2)")?
            .query_row(params![room, up_to_seq], |row| row.get(0))?;
        if later_op || stored.is_some_and(|stored| stored > up_to_seq) {
            return Ok(false);
        }
        tx.prepare_cached("DELETE FROM ops WHERE room = ?1 AND last_seq <= ?2")?
            .execute(params![room, up_to_seq])?;
        tx.prepare_cached("DELETE FROM rooms WHERE name = ?1")?
            .execute([room])?;
        tx.commit()?;
        Ok(true)
    }

    /// Inserts a private room's row unless a room of that name exists; `TooManyRooms` once
    /// `max_rooms` private rooms are stored.
    fn create_private(
        &mut self,
        room: &str,
        hashes: &AccessHashes,
    ) -> rusqlite::Result<Result<Creation, StoreError>> {
        let max_rooms = self.options.max_rooms;
        let tx = self.conn.transaction()?;
        let (private, taken): (i64, bool) = tx.query_row(
            "SELECT (SELECT count(*) FROM room_access), \
                    EXISTS (SELECT 1 FROM rooms WHERE name = ?1) \
                    OR EXISTS (SELECT 1 FROM room_access WHERE room = ?1)",
            [room],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if taken {
            return Ok(Ok(Creation::NameTaken));
        }
        if usize::try_from(private).unwrap_or(usize::MAX) >= max_rooms {
            return Ok(Err(StoreError::TooManyRooms { limit: max_rooms }));
        }
        tx.execute(
            "INSERT INTO room_access (room, edit_hash, view_hash, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![room, &hashes.edit[..], &hashes.view[..], unix_now()],
        )?;
        tx.commit()?;
        Ok(Ok(Creation::Created))
    }

    /// Reads a room; one that is not on disk is created if `create` (within `max_rooms`), else
    /// `Ok(None)`.
    fn load(&mut self, room: &str, create: bool) -> Result<Option<StoredRoom>, StoreError> {
        let path = self.path.clone();
        let max_rooms = self.options.max_rooms;
        let read = |source| StoreError::Sqlite {
            path: path.clone(),
            action: "cannot read",
            source,
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail,
        };
        let tx = self.conn.transaction().map_err(read)?;
        let row: Option<(Option<Vec<u8>>, i64)> = tx
            .prepare_cached("SELECT checkpoint, checkpoint_seq FROM rooms WHERE name = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([room], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(read)?;
        let existed = row.is_some();
        if !existed && !create {
            return Ok(None);
        }
        if !existed {
            let stored: i64 = tx
                .prepare_cached("SELECT count(*) FROM rooms")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .map_err(read)?;
            if usize::try_from(stored).unwrap_or(usize::MAX) >= max_rooms {
                return Err(StoreError::TooManyRooms { limit: max_rooms });
            }
            let created = tx
                .prepare_cached("INSERT INTO rooms (name, updated_at) VALUES (?1, ?2)")
                .and_then(|mut statement| statement.execute(params![room, unix_now()]));
            if let Err(err) = created {
                // A new room opens all the same (disk full, say): its ops are held like any
                // others, and their commit creates its row.
                log::warn!(
                    "room={room}: cannot record it in {} ({err}); it opens all the same",
                    path.display()
                );
                return Ok(Some(StoredRoom::default()));
            }
        }
        let (checkpoint, checkpoint_seq) = row.unwrap_or((None, 0));
        let rows: Vec<(i64, i64, String)> = tx
            .prepare_cached(
                "SELECT seq, last_seq, op FROM ops WHERE room = ?1 AND last_seq > ?2 ORDER BY seq",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![room, checkpoint_seq], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect()
            })
            .map_err(read)?;
        let ops = ungroup(rows, checkpoint_seq)
            .map_err(|why| corrupt(format!("room {room:?} has damaged ops: {why}")))?;
        tx.commit().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            action: "cannot write to",
            source,
        })?;
        let checkpoint_seq = u64::try_from(checkpoint_seq)
            .map_err(|_| corrupt(format!("room {room:?} has checkpoint_seq {checkpoint_seq}")))?;
        let mut stored_bytes = checkpoint.as_ref().map_or(0, |png| png.len() as u64);
        let ops = ops
            .into_iter()
            .map(|(seq, op)| {
                stored_bytes += op.len() as u64;
                // seq > checkpoint_seq >= 0, so the conversion cannot fail.
                (u64::try_from(seq).unwrap_or(0), op)
            })
            .collect();
        Ok(Some(StoredRoom {
            checkpoint,
            checkpoint_seq,
            ops,
            stored_bytes,
            existed,
        }))
    }

    /// The graceful end: fold the WAL into the database and close it.
    fn finish(self) {
        if let Err(err) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            log::error!(
                "{}",
                StoreError::Sqlite {
                    path: self.path.clone(),
                    action: "cannot checkpoint the WAL of",
                    source: err,
                }
            );
        }
        if let Err((_, err)) = self.conn.close() {
            log::error!(
                "{}",
                StoreError::Sqlite {
                    path: self.path.clone(),
                    action: "cannot close",
                    source: err,
                }
            );
        }
        log::info!("closed {}", self.path.display());
    }
}

/// Bytes an unprivileged process may still write on the volume holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stats` is writable memory of the
    // right type; statvfs fills it when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits wide on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Some(blocks.saturating_mul(block_size))
}

/// The bytes of `ops`' text: what holding them costs.
fn op_bytes(ops: &[PendingOp]) -> u64 {
    ops.iter().map(|op| op.op.len() as u64).sum()
}

/// Commits `ops` in one transaction, creating (or touching) the row of each room they belong to,
/// so that every room with ops on disk counts toward `max_rooms`.
fn write_ops(conn: &mut Connection, ops: &[PendingOp]) -> rusqlite::Result<()> {
    let now = unix_now();
    let tx = conn.transaction()?;
    {
        let mut touch = tx.prepare_cached(
            // Only a missing row is written: rewriting every touched room's row on each commit
            // dirtied the whole rooms table every time.
            "INSERT INTO rooms (name, updated_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO ops (room, seq, last_seq, op) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut touched: HashSet<&str> = HashSet::new();
        for group in group_ops(ops) {
            if touched.insert(group.room) {
                touch.execute(params![group.room, now])?;
            }
            insert.execute(params![group.room, group.first, group.last, group.ops])?;
        }
    }
    tx.commit()
}

/// Consecutive ops of one room, stored as one row: with many busy rooms, a row per op cost an
/// insert per op; a row per room per commit costs one.
struct OpGroup<'a> {
    room: &'a str,
    first: i64,
    last: i64,
    /// The ops' JSON, one per line (JSON text from serde never holds a raw newline).
    ops: String,
}

/// Groups `ops` (in arrival order) into runs of consecutive sequence numbers per room.
fn group_ops(ops: &[PendingOp]) -> Vec<OpGroup<'_>> {
    let mut groups: Vec<OpGroup<'_>> = Vec::new();
    let mut open: HashMap<&str, usize> = HashMap::new();
    for op in ops {
        let room: &str = &op.room;
        match open.get(room).map(|&index| &mut groups[index]) {
            Some(group) if group.last + 1 == op.seq => {
                group.ops.push('\n');
                group.ops.push_str(&op.op);
                group.last = op.seq;
            }
            _ => {
                open.insert(room, groups.len());
                groups.push(OpGroup {
                    room,
                    first: op.seq,
                    last: op.seq,
                    ops: op.op.to_string(),
                });
            }
        }
    }
    groups
}

/// The ops stored in grouped rows, one by one, without those a checkpoint at `after` covers.
fn ungroup(rows: Vec<(i64, i64, String)>, after: i64) -> Result<Vec<(i64, String)>, String> {
    let mut ops = Vec::new();
    for (first, last, joined) in rows {
        let count = joined.split('\n').count() as i64;
        if last - first + 1 != count {
            return Err(format!("row {first}..={last} holds {count} ops"));
        }
        for (seq, op) in (first..).zip(joined.split('\n')) {
            if seq > after {
                ops.push((seq, op.to_owned()));
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use tempfile::TempDir;

    fn options() -> StoreOptions {
        StoreOptions {
            flush_interval: Duration::from_millis(20),
            max_rooms: 100,
            ..StoreOptions::default()
        }
    }

    /// A store whose database cannot grow (SQLite's own limit: a full disk without root).
    fn full(max_held_bytes: u64) -> (TempDir, Store) {
        let dir = TempDir::new().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                max_page_count: Some(1),
                max_held_bytes,
                ..options()
            },
        )
        .unwrap();
        (dir, store)
    }

    /// An op big enough that a few of them need a new page.
    fn big_draw(n: u64) -> String {
        format!(r#"{{"type":"draw","n":{n},"pad":"{}"}}"#, "x".repeat(1500))
    }

    /// Waits (polling `flush`) until every held op is written.
    async fn until_written(store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.flush().await.is_err() {
            assert!(Instant::now() < deadline, "the held ops were never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ops_that_cannot_be_written_are_held_and_written_in_order_once_space_is_back() {
        let (_dir, store) = full(u64::MAX);
        let main = room("main");
        for n in 1..=20 {
            store.append(&main, n, ByteString::from(big_draw(n)));
        }
        let err = store.flush().await.unwrap_err();
        assert!(
            matches!(err, StoreError::WriteFailed { held: 20, .. }),
            "{err}"
        );
        assert!(store.health().is_failing());
        assert!(store.health().held_bytes() > 20 * 1500);
        assert!(store
            .health()
            .failure()
            .is_some_and(|why| why.contains("full")));
        // Appended while failing: held behind the others, in order.
        for n in 21..=30 {
            store.append(&main, n, ByteString::from(big_draw(n)));
        }
        store.set_max_page_count(100_000);
        until_written(&store).await;
        assert!(!store.health().is_failing());
        assert_eq!(store.health().held_bytes(), 0);
        assert!(store.health().failures() >= 1);
        let stored = store.load(main).await.unwrap();
        assert_eq!(seqs(&stored), (1..=30).collect::<Vec<_>>());
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_load_while_ops_are_held_includes_them() {
        let (_dir, store) = full(u64::MAX);
        let main = room("main");
        for n in 1..=10 {
            store.append(&main, n, ByteString::from(big_draw(n)));
        }
        assert!(store.flush().await.is_err());
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(seqs(&stored), (1..=10).collect::<Vec<_>>());
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_checkpoint_while_ops_are_held_leaves_them_in_place() {
        let (_dir, store) = full(u64::MAX);
        let main = room("main");
        for n in 1..=10 {
            store.append(&main, n, ByteString::from(big_draw(n)));
        }
        store.checkpoint(&main, 10, 10, 10, fake_png(1));
        assert!(store.flush().await.is_err());
        store.set_max_page_count(100_000);
        until_written(&store).await;
        let stored = store.load(main).await.unwrap();
        assert_eq!(stored.checkpoint_seq, 0, "the checkpoint was not written");
        assert_eq!(seqs(&stored), (1..=10).collect::<Vec<_>>());
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn beyond_the_bound_new_ops_must_be_refused() {
        let (_dir, store) = full(4 * 1024);
        let main = room("main");
        store.append(&main, 1, ByteString::from(big_draw(1)));
        assert!(store.flush().await.is_err());
        assert!(!store.health().must_refuse(), "one op is under the bound");
        for n in 2..=5 {
            store.append(&main, n, ByteString::from(big_draw(n)));
        }
        // The bound is checked as the writer takes the ops in.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !store.health().must_refuse() {
            assert!(Instant::now() < deadline, "the bound was never reached");
            let _ = store.flush().await;
        }
        store.set_max_page_count(100_000);
        until_written(&store).await;
        assert!(!store.health().must_refuse());
        store.close().await;
    }

    /// A flush interval that never elapses during a test: only ordering commits.
    fn lazy() -> StoreOptions {
        StoreOptions {
            flush_interval: Duration::from_secs(3600),
            ..options()
        }
    }

    fn room(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn draw(n: u64) -> String {
        format!(r##"{{"type":"draw","x0":{n},"y0":0,"x1":1,"y1":1,"color":"#000000","size":4}}"##)
    }

    fn append_draws(store: &Store, room: &Arc<str>, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            store.append(room, seq, ByteString::from(draw(seq)));
        }
    }

    fn seqs(stored: &StoredRoom) -> Vec<u64> {
        stored.ops.iter().map(|(seq, _)| *seq).collect()
    }

    fn fake_png(tag: u8) -> Vec<u8> {
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend([tag; 24]);
        png
    }

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join(FILE_NAME)
    }

    /// Opens the file with plain rusqlite (the store must be closed), runs `sql`, closes it.
    fn tamper(dir: &TempDir, sql: &str) {
        let conn = Connection::open(db_path(dir)).unwrap();
        conn.execute_batch(sql).unwrap();
        conn.close().unwrap();
    }

    /// The error message names the file, and the file is exactly as it was.
    fn assert_refused_untouched(dir: &TempDir, err: &StoreError, before: &[u8]) {
        let path = db_path(dir);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err} does not name {}",
            path.display()
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{err}: file modified"
        );
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = dir.path().join(format!("{FILE_NAME}{suffix}"));
            assert!(!side.exists(), "{err}: {} was created", side.display());
        }
    }

    #[test]
    fn the_handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Store>();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn appended_ops_load_in_order() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(store.path(), Some(db_path(&dir).as_path()));
        let main = room("main");
        let fresh = store.load(main.clone()).await.unwrap();
        assert!(!fresh.existed);
        assert_eq!(fresh, StoredRoom::default());
        append_draws(&store, &main, 1..=10);
        store.append(&main, 11, ByteString::from_static(r#"{"type":"clear"}"#));
        store.flush().await.unwrap();
        let stored = store.load(main.clone()).await.unwrap();
        assert!(stored.existed);
        assert_eq!(seqs(&stored), (1..=11).collect::<Vec<_>>());
        assert_eq!(stored.ops[3].1, draw(4));
        assert_eq!(stored.ops[10].1, r#"{"type":"clear"}"#);
        let bytes: usize = stored.ops.iter().map(|(_, op)| op.len()).sum();
        assert_eq!(stored.stored_bytes, bytes as u64);
        assert_eq!(stored.checkpoint, None);
        assert_eq!(stored.checkpoint_seq, 0);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ops_queued_before_a_load_are_visible_to_it() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        append_draws(&store, &main, 1..=5);
        // No flush, and the interval is an hour: the load itself must commit them first.
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(seqs(&stored), vec![1, 2, 3, 4, 5]);
        // The request is queued by the call, not by the first poll: what was appended before it
        // is there even if the future is polled later.
        append_draws(&store, &main, 6..=6);
        let load = store.load(main.clone());
        append_draws(&store, &main, 7..=7);
        assert_eq!(seqs(&load.await.unwrap())[..6], [1, 2, 3, 4, 5, 6]);
        let read = store.read(main.clone()).await.unwrap().unwrap();
        assert_eq!(seqs(&read), vec![1, 2, 3, 4, 5, 6, 7]);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn appended_ops_are_committed_within_the_flush_interval() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), options()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        let wal = dir.path().join(format!("{FILE_NAME}-wal"));
        let wal_len = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        let before = wal_len();
        append_draws(&store, &main, 1..=100);
        // Nothing asks for a commit: the 20 ms interval alone must write them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while wal_len() <= before {
            assert!(Instant::now() < deadline, "no commit within 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seqs(&store.load(main.clone()).await.unwrap()).len(), 100);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_and_reopen_keeps_everything() {
        let dir = TempDir::new().unwrap();
        let (a, b) = (room("a"), room("b"));
        {
            let store = Store::open(dir.path(), lazy()).unwrap();
            store.load(a.clone()).await.unwrap();
            store.load(b.clone()).await.unwrap();
            append_draws(&store, &a, 1..=4);
            store.checkpoint(&a, 2, 1600, 900, fake_png(7));
            append_draws(&store, &b, 1..=3);
            append_draws(&store, &a, 5..=6);
            // No flush: close commits what is queued.
            store.close().await;
            store.close().await;
        }
        let wal = dir.path().join(format!("{FILE_NAME}-wal"));
        assert!(
            std::fs::metadata(&wal).map_or(true, |meta| meta.len() == 0),
            "close leaves the WAL folded in"
        );
        let store = Store::open(dir.path(), lazy()).unwrap();
        let stored_a = store.load(a.clone()).await.unwrap();
        assert!(stored_a.existed);
        assert_eq!(stored_a.checkpoint, Some(fake_png(7)));
        assert_eq!(stored_a.checkpoint_seq, 2);
        assert_eq!(seqs(&stored_a), vec![3, 4, 5, 6]);
        let stored_b = store.load(b.clone()).await.unwrap();
        assert_eq!(seqs(&stored_b), vec![1, 2, 3]);
        assert_eq!(store.room_count().await.unwrap(), 2);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_checkpoint_prunes_the_ops_it_covers() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        append_draws(&store, &main, 1..=5);
        store.checkpoint(&main, 3, 1600, 900, fake_png(1));
        append_draws(&store, &main, 6..=7);
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(stored.checkpoint, Some(fake_png(1)));
        assert_eq!(stored.checkpoint_seq, 3);
        assert_eq!(seqs(&stored), vec![4, 5, 6, 7]);
        let ops: usize = stored.ops.iter().map(|(_, op)| op.len()).sum();
        assert_eq!(stored.stored_bytes, (fake_png(1).len() + ops) as u64);
        // The covered ops are gone from disk, not just filtered.
        store.close().await;
        let conn = Connection::open(db_path(&dir)).unwrap();
        let (count, min): (i64, Option<i64>) = conn
            .query_row(
                "SELECT count(*), min(seq) FROM ops WHERE last_seq <= 3",
                [],
                |row| Ok((row.get(0)?, row.get::<_, Option<i64>>(1)?)),
            )
            .unwrap();
        assert_eq!((count, min), (0, None));
        let (width, height): (i64, i64) = conn
            .query_row("SELECT width, height FROM rooms", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((width, height), (1600, 900));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_older_checkpoint_arriving_late_is_ignored() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        append_draws(&store, &main, 1..=8);
        store.checkpoint(&main, 6, 1600, 900, fake_png(6));
        // From an older incarnation of the room: must neither replace nor prune.
        store.checkpoint(&main, 4, 1600, 900, fake_png(4));
        store.checkpoint(&main, 6, 1600, 900, fake_png(9));
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(stored.checkpoint, Some(fake_png(6)));
        assert_eq!(stored.checkpoint_seq, 6);
        assert_eq!(seqs(&stored), vec![7, 8]);
        // Not a PNG: refused before it is queued (it would make the file unopenable).
        store.checkpoint(&main, 8, 1600, 900, b"not a png".to_vec());
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(stored.checkpoint_seq, 6);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn forget_removes_a_room_unless_something_newer_is_stored() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let (main, other) = (room("main"), room("other"));
        store.load(main.clone()).await.unwrap();
        store.load(other.clone()).await.unwrap();
        append_draws(&store, &main, 1..=3);
        append_draws(&store, &other, 1..=2);
        assert_eq!(store.room_count().await.unwrap(), 2);
        // A new incarnation already wrote op 3: forgetting up to 2 must keep everything.
        store.forget(&main, 2);
        assert_eq!(
            seqs(&store.load(main.clone()).await.unwrap()),
            vec![1, 2, 3]
        );
        store.checkpoint(&main, 3, 10, 10, fake_png(3));
        store.forget(&main, 2);
        assert!(store.load(main.clone()).await.unwrap().existed);
        store.forget(&main, 3);
        assert_eq!(store.room_count().await.unwrap(), 1);
        assert_eq!(store.read(main.clone()).await.unwrap(), None);
        let reloaded = store.load(main.clone()).await.unwrap();
        assert!(!reloaded.existed);
        assert_eq!(reloaded, StoredRoom::default());
        assert_eq!(seqs(&store.load(other.clone()).await.unwrap()), vec![1, 2]);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn max_rooms_refuses_new_rooms_but_loads_stored_ones() {
        let dir = TempDir::new().unwrap();
        let limited = StoreOptions {
            max_rooms: 2,
            ..lazy()
        };
        let store = Store::open(dir.path(), limited.clone()).unwrap();
        let (a, b, c) = (room("a"), room("b"), room("c"));
        assert!(!store.load(a.clone()).await.unwrap().existed);
        assert!(!store.load(b.clone()).await.unwrap().existed);
        append_draws(&store, &a, 1..=2);
        let err = store.load(c.clone()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyRooms { limit: 2 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("limit is 2"), "{err}");
        assert_eq!(store.room_count().await.unwrap(), 2);
        assert_eq!(seqs(&store.load(a.clone()).await.unwrap()), vec![1, 2]);
        assert!(store.load(b.clone()).await.unwrap().existed);
        // The limit holds across restarts, and forgetting frees a slot.
        store.close().await;
        let store = Store::open(dir.path(), limited).unwrap();
        assert!(matches!(
            store.load(c.clone()).await,
            Err(StoreError::TooManyRooms { .. })
        ));
        store.forget(&b, 0);
        assert!(!store.load(c.clone()).await.unwrap().existed);
        store.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_store_answers_with_errors_not_panics() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let clone = store.clone();
        store.close().await;
        clone.close().await;
        let main = room("main");
        clone.append(&main, 1, ByteString::from(draw(1)));
        clone.checkpoint(&main, 1, 10, 10, fake_png(1));
        clone.forget(&main, 1);
        assert!(matches!(
            clone.load(main.clone()).await,
            Err(StoreError::Stopped { .. })
        ));
        let err = clone.flush().await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&db_path(&dir).display().to_string()),
            "{err}"
        );
        assert!(clone.room_count().await.is_err());
        // The lock was released: the directory opens again.
        Store::open(dir.path(), lazy()).unwrap().close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_memory_store_keeps_nothing() {
        let store = Store::memory();
        assert_eq!(store.path(), None);
        let main = room("main");
        store.append(&main, 1, ByteString::from(draw(1)));
        store.checkpoint(&main, 1, 10, 10, fake_png(1));
        let stored = store.load(main.clone()).await.unwrap();
        assert_eq!(stored, StoredRoom::default());
        assert!(!stored.existed);
        assert_eq!(store.read(main.clone()).await.unwrap(), None);
        store.flush().await.unwrap();
        assert_eq!(store.room_count().await.unwrap(), 0);
        store.close().await;
    }

    #[test]
    fn a_garbage_file_is_refused_and_left_alone() {
        let dir = TempDir::new().unwrap();
        let garbage = b"these are not the pages you are looking for\n".repeat(200);
        std::fs::write(db_path(&dir), &garbage).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
        assert!(err.to_string().contains("not an SQLite database"), "{err}");
        assert_refused_untouched(&dir, &err, &garbage);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_damaged_database_is_refused_and_left_alone() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        let main = room("main");
        store.load(main.clone()).await.unwrap();
        append_draws(&store, &main, 1..=50);
        store.close().await;
        let mut bytes = std::fs::read(db_path(&dir)).unwrap();
        let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        assert!(bytes.len() >= 3 * page);
        // Every page after the schema page becomes noise.
        for (i, byte) in bytes[page..].iter_mut().enumerate() {
            *byte = (i * 7 + 13) as u8;
        }
        std::fs::write(db_path(&dir), &bytes).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert_refused_untouched(&dir, &err, &bytes);
    }

    #[test]
    fn a_directory_where_the_file_should_be_is_refused() {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir(db_path(&dir)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::NotAFile { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&db_path(&dir).display().to_string()),
            "{message}"
        );
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_refused() {
        let dir = TempDir::new().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::write(&data_dir, b"").unwrap();
        let err = Store::open(&data_dir, options()).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&data_dir.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root reads anything: nothing to test.
            return;
        }
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_server_on_the_same_directory_is_refused() {
        let dir = TempDir::new().unwrap();
        // Once on a new file, once on an existing one.
        for _ in 0..2 {
            let first = Store::open(dir.path(), lazy()).unwrap();
            let main = room("main");
            first.load(main.clone()).await.unwrap();
            append_draws(&first, &main, 1..=3);
            first.flush().await.unwrap();
            let err = Store::open(dir.path(), lazy()).unwrap_err();
            assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains(&db_path(&dir).display().to_string()),
                "{message}"
            );
            assert!(message.contains("another livecanvas"), "{message}");
            // The first one is unharmed.
            append_draws(&first, &main, 4..=4);
            assert_eq!(
                seqs(&first.load(main.clone()).await.unwrap()).last(),
                Some(&4)
            );
            first.forget(&main, 4);
            first.close().await;
        }
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let dir = TempDir::new().unwrap();
        tamper(
            &dir,
            "CREATE TABLE rooms (name TEXT PRIMARY KEY); PRAGMA user_version = 2;",
        );
        let before = std::fs::read(db_path(&dir)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownVersion { found: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("schema version 2"), "{err}");
        assert_refused_untouched(&dir, &err, &before);
    }

    #[test]
    fn a_database_that_is_not_ours_is_refused() {
        let dir = TempDir::new().unwrap();
        tamper(&dir, "CREATE TABLE invoices (id INTEGER PRIMARY KEY);");
        let before = std::fs::read(db_path(&dir)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
        assert_refused_untouched(&dir, &err, &before);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_checkpoint_that_is_not_a_png_is_refused_at_open() {
        let dir = TempDir::new().unwrap();
        let store = Store::open(dir.path(), lazy()).unwrap();
        store.load(room("fine")).await.unwrap();
        store.checkpoint(&room("fine"), 1, 10, 10, fake_png(1));
        store.load(room("broken")).await.unwrap();
        store.close().await;
        tamper(
            &dir,
            "UPDATE rooms SET checkpoint = x'FFD8FFE000104A46494600', checkpoint_seq = 1 \
             WHERE name = 'broken';",
        );
        let before = std::fs::read(db_path(&dir)).unwrap();
        let err = Store::open(dir.path(), options()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("\"broken\""), "{message}");
        assert!(message.contains("not a PNG"), "{message}");
        assert_refused_untouched(&dir, &err, &before);
    }

    const CRASH_DIR_ENV: &str = "LIVECANVAS_STORAGE_CRASH_DIR";
    const CRASH_READY: &str = "livecanvas-storage-crash-child: flushed";

    /// The victim of `a_kill_after_a_flush_loses_nothing_flushed`, run in a child process.
    #[test]
    #[ignore = "run by a_kill_after_a_flush_loses_nothing_flushed in a child process"]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Store::open(Path::new(&dir), lazy()).unwrap();
            let main = room("main");
            store.load(main.clone()).await.unwrap();
            append_draws(&store, &main, 1..=40);
            store.checkpoint(&main, 20, 1600, 900, fake_png(20));
            append_draws(&store, &main, 41..=50);
            store.flush().await.unwrap();
            println!("{CRASH_READY}");
            std::io::stdout().flush().unwrap();
            // Queued but never committed: the kill may lose these (within the flush interval).
            append_draws(&store, &main, 51..=60);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_kill_after_a_flush_loses_nothing_flushed() {
        let dir = TempDir::new().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "storage::sqlite::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                match line {
                    Ok(line) if line.contains(CRASH_READY) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(60));
        // While it runs, another process cannot open the directory.
        let second = Store::open(dir.path(), lazy());
        // SIGKILL: no destructor, no close, no WAL checkpoint.
        child.kill().unwrap();
        child.wait().unwrap();
        ready.expect("the child never reported its flush");
        let err = second.unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

        let store = Store::open(dir.path(), lazy()).unwrap();
        let stored = store.load(room("main")).await.unwrap();
        assert!(stored.existed);
        assert_eq!(stored.checkpoint, Some(fake_png(20)));
        assert_eq!(stored.checkpoint_seq, 20);
        let seqs = seqs(&stored);
        assert_eq!(seqs[..30], (21..=50).collect::<Vec<_>>()[..]);
        store.close().await;
    }
}
