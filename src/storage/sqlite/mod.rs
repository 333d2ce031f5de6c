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
//!   checkpoint), `updated_at` the Unix time of its last checkpoint or of its last opening (a room
//!   actor loading it; with `--room-ttl`, every sweep also sets it for the rooms open then). A
//!   row exists from the room's first
//!   load on, so it counts toward `max_rooms` even before anything is drawn, until `forget`.
//! - `ops(room TEXT NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL, PRIMARY KEY(room, seq))
//!   WITHOUT ROWID`: every accepted op after the checkpoint, as the JSON text that was broadcast
//!   (`{"type":"draw",...}`, `{"type":"clear"}`). A checkpoint deletes the ops it covers in the
//!   same transaction.
//! - `room_access(room TEXT PRIMARY KEY, edit_hash BLOB NOT NULL, view_hash BLOB NOT NULL,
//!   created_at INTEGER, owner_hash BLOB NULL, locked INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID`:
//!   the private rooms, with the SHA-256 digests of their edit, view and owner tokens (never the
//!   tokens; no owner digest for a room made before rooms had owners) and whether the owner locked
//!   the room. Created if missing when a database is opened, and its later columns added (older
//!   code ignores them). Forgetting a blank room's picture never deletes a row (that must not
//!   turn a private room public); a row is deleted only with the room's other rows, by the
//!   operator's delete or by retention (`--room-ttl`), both through the writer's `delete_rows`.
//!   Every row is read into memory at open, so the check on a WebSocket upgrade never waits for
//!   the disk; the writer changes that map once a change is committed. Rows count toward
//!   `max_rooms` of their own.
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

use super::types::{
    lock, Creation, RoomAccess, RoomListing, StoreError, StoreHealth, StoreOptions, StoredRoom,
};
use crate::http::access::{AccessHashes, Digest32};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

/// The database's file name inside the data directory.
pub const FILE_NAME: &str = "livecanvas.db";

mod backup;
pub use backup::{copy_unheld, BackupDone};

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
/// How long a backup may take before its requester stops waiting (the copy goes on): a database
/// of gigabytes on a slow disk.
const BACKUP_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);
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
        created_at INTEGER,
        owner_hash BLOB NULL,
        locked INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
";

/// The columns of `room_access` added after it was first made, and how to add each.
const ACCESS_COLUMNS_ADDED: [(&str, &str); 2] = [
    (
        "owner_hash",
        "ALTER TABLE room_access ADD COLUMN owner_hash BLOB NULL",
    ),
    (
        "locked",
        "ALTER TABLE room_access ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
    ),
];

/// Private rooms a memory store (`--storage memory`) keeps at most.
const MAX_MEMORY_PRIVATE_ROOMS: usize = 10_000;

/// Every private room's token digests, by room: shared by the handles and the writer.
type AccessMap = Arc<RwLock<HashMap<Arc<str>, RoomAccess>>>;

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
    /// New edit and view digests for a private room; answers whether there is such a room.
    ReplaceLinks {
        room: Arc<str>,
        edit: Digest32,
        view: Digest32,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    SetLocked {
        room: Arc<str>,
        locked: bool,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Deletes every row of a room; answers whether there was any.
    Delete {
        room: Arc<str>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<RoomListing>, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Deletes the rooms nobody opened since `cutoff` (Unix seconds), except those in `open`, whose
    /// time is set to now (retention, `--room-ttl`).
    Expire {
        cutoff: i64,
        open: Vec<Arc<str>>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// A consistent copy of the database into a directory (see `backup`).
    Backup {
        dir: PathBuf,
        reply: oneshot::Sender<Result<BackupDone, StoreError>>,
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
    pub fn without_persistence() -> Store {
        Store {
            inner: None,
            health: Arc::new(StoreHealth::default()),
            access: AccessMap::default(),
        }
    }

    /// A private room's token digests and lock; `None` for a public room. Read from memory:
    /// never waits.
    pub fn room_access(&self, room: &str) -> Option<RoomAccess> {
        self.access
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(room)
            .copied()
    }

    /// Replaces a private room's edit and view digests; `false` if there is no such room.
    /// Answered once committed.
    pub fn replace_links(
        &self,
        room: Arc<str>,
        edit: Digest32,
        view: Digest32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let memory = self.inner.is_none().then(|| {
            self.change_in_memory(&room, |access| {
                access.hashes.edit = edit;
                access.hashes.view = view;
            })
        });
        let queued = self.request(|reply| Command::ReplaceLinks {
            room,
            edit,
            view,
            reply,
        });
        async move {
            match memory {
                Some(changed) => Ok(changed),
                None => queued.answer(false).await,
            }
        }
    }

    /// Locks or unlocks a private room; `false` if there is no such room. Answered once committed.
    pub fn set_locked(
        &self,
        room: Arc<str>,
        locked: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let memory = self
            .inner
            .is_none()
            .then(|| self.change_in_memory(&room, |access| access.locked = locked));
        let queued = self.request(|reply| Command::SetLocked {
            room,
            locked,
            reply,
        });
        async move {
            match memory {
                Some(changed) => Ok(changed),
                None => queued.answer(false).await,
            }
        }
    }

    /// Deletes everything kept of a room (its picture, operations and private room's row, held
    /// ops included); `true` if anything was. Answered once committed.
    pub fn delete_room(
        &self,
        room: Arc<str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let memory = self.inner.is_none().then(|| {
            self.access
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&room)
                .is_some()
        });
        let queued = self.request(|reply| Command::Delete { room, reply });
        async move {
            match memory {
                Some(deleted) => Ok(deleted),
                None => queued.answer(false).await,
            }
        }
    }

    /// Every stored room (a memory store: its private rooms).
    pub fn list_rooms(
        &self,
    ) -> impl Future<Output = Result<Vec<RoomListing>, StoreError>> + Send + 'static {
        let memory: Vec<RoomListing> = self
            .access
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .map(|room| RoomListing {
                room: room.to_string(),
                private: true,
                members: None,
                stored_bytes: 0,
                changed_ms: None,
            })
            .collect();
        let queued = self.request(|reply| Command::List { reply });
        queued.answer(memory)
    }

    fn change_in_memory(&self, room: &str, change: impl FnOnce(&mut RoomAccess)) -> bool {
        let mut access = self
            .access
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        access.get_mut(room).map(change).is_some()
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
        access.insert(
            room,
            RoomAccess {
                hashes,
                locked: false,
            },
        );
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

    /// Copies the database, with everything committed before this call, into `dir/livecanvas.db`
    /// while serving (SQLite's online backup, on the writer thread; writes wait meanwhile). A
    /// memory store has nothing to copy: `Err(NothingToBackUp)`.
    pub fn backup(
        &self,
        dir: PathBuf,
    ) -> impl Future<Output = Result<BackupDone, StoreError>> + Send + 'static {
        let queued = self.request(|reply| Command::Backup { dir, reply });
        async move {
            match queued {
                Request::Memory => Err(StoreError::NothingToBackUp),
                Request::Stopped(err) => Err(err),
                Request::Queued(inner, answer) => {
                    match tokio::time::timeout(BACKUP_ANSWER_TIMEOUT, answer).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(_)) => Err(inner.stopped()),
                        Err(_) => Err(StoreError::NoAnswer {
                            path: inner.path.clone(),
                            waited: BACKUP_ANSWER_TIMEOUT,
                        }),
                    }
                }
            }
        }
    }

    /// Deletes every room, with its picture, operations and tokens, that nobody opened within `ttl`
    /// and that is not in `open` (the rooms open now, whose time becomes now, so that a room's age
    /// counts from when its last member left, give or take one sweep); the number deleted.
    pub fn expire(
        &self,
        ttl: Duration,
        open: Vec<Arc<str>>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send + 'static {
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let cutoff = unix_now().saturating_sub(ttl_secs);
        let queued = self.request(|reply| Command::Expire {
            cutoff,
            open,
            reply,
        });
        queued.answer(0)
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
    add_access_columns(&conn).map_err(fail("cannot add columns to"))?;
    Ok(conn)
}

/// Adds the columns `room_access` gained since a database was made (see the module doc).
fn add_access_columns(conn: &Connection) -> rusqlite::Result<()> {
    let present: HashSet<String> = conn
        .prepare("SELECT name FROM pragma_table_info('room_access')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, add) in ACCESS_COLUMNS_ADDED {
        if !present.contains(column) {
            conn.execute_batch(add)?;
        }
    }
    Ok(())
}

/// Every private room's digests (at open; the writer keeps the map up to date afterwards).
fn read_access(
    conn: &Connection,
    path: &Path,
) -> Result<HashMap<Arc<str>, RoomAccess>, StoreError> {
    let fail = |err| open_error(path, "cannot read", err);
    let mut statement = conn
        .prepare("SELECT room, edit_hash, view_hash, owner_hash, locked FROM room_access")
        .map_err(fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, Option<Vec<u8>>>(3)?,
                row.get::<_, bool>(4)?,
            ))
        })
        .map_err(fail)?;
    let mut access = HashMap::new();
    for row in rows {
        let (room, edit, view, owner, locked) = row.map_err(fail)?;
        let Some(hashes) = AccessHashes::from_slices(&edit, &view, owner.as_deref()) else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the token digests of private room {room:?} are damaged"),
            });
        };
        access.insert(Arc::from(room), RoomAccess { hashes, locked });
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

mod writer;
use writer::*;

#[cfg(test)]
mod tests;
