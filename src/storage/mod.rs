//! `Store`: where every room's canvas is kept, and how its operations reach the other nodes.
//!
//! Two backends behind one handle: SQLite (`sqlite`, one node: the room orders its own operations
//! and the store writes them) and Redis (`redis`, a cluster: Redis orders each room's operations
//! and every node's room follows that order). Rooms, the registry and the HTTP routes hold a
//! `Store` and ask it; only where the order comes from differs, and [`Store::cluster`] says which.
//! It must never block the caller: every method queues or returns a future.

mod redis;
mod sqlite;
mod types;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytestring::ByteString;

use crate::http::access::{AccessHashes, Digest32};

pub use self::redis::{
    figures as redis_figures, CatchUp, Cluster, RedisFigures, Relayed, RelayedOp,
    MAX_APPENDS_IN_FLIGHT,
};
pub use sqlite::{copy_unheld, BackupDone};
pub use types::{
    Creation, RoomAccess, RoomListing, StoreError, StoreHealth, StoreOptions, StoredRoom,
};

/// The handle every room and handler shares: cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// One node: an SQLite database (or nothing, with `--storage memory`).
    Sqlite(sqlite::Store),
    /// One node of a cluster sharing rooms through Redis.
    Redis(Cluster),
}

type Answer<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

impl Store {
    /// Opens the SQLite database in `data_dir` (see [`sqlite::Store::open`]).
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        sqlite::Store::open(data_dir, options).map(Store::Sqlite)
    }

    /// Nothing kept: a room's canvas lives while the room is open.
    pub fn without_persistence() -> Store {
        Store::Sqlite(sqlite::Store::without_persistence())
    }

    /// The cluster this node belongs to, if any: its rooms publish operations through it and
    /// apply them as Redis orders them.
    pub fn cluster(&self) -> Option<&Cluster> {
        match self {
            Store::Sqlite(_) => None,
            Store::Redis(cluster) => Some(cluster),
        }
    }

    /// Whether operations can be kept now (what `/readyz`, the metrics and the rooms check).
    pub fn health(&self) -> &StoreHealth {
        match self {
            Store::Sqlite(store) => store.health(),
            Store::Redis(cluster) => cluster.health(),
        }
    }

    /// Whether a room's picture outlives the room (not with `--storage memory`).
    pub fn keeps_pictures(&self) -> bool {
        match self {
            Store::Sqlite(store) => store.path().is_some(),
            Store::Redis(_) => true,
        }
    }

    /// Deletes the rooms nobody opened within `ttl` (`--room-ttl`); `open` are the rooms open on
    /// this node now, never deleted. A cluster node sweeps the whole cluster (see
    /// [`Cluster::expire`]). The number deleted.
    pub fn expire(&self, ttl: std::time::Duration, open: Vec<Arc<str>>) -> Answer<usize> {
        match self {
            Store::Sqlite(store) => Box::pin(store.expire(ttl, open)),
            Store::Redis(cluster) => Box::pin(cluster.expire(ttl)),
        }
    }

    /// A consistent copy of a single node's database into `dir` while serving (see
    /// [`sqlite::Store::backup`]); a cluster's canvases are Redis's to back up.
    pub fn backup(&self, dir: std::path::PathBuf) -> Answer<BackupDone> {
        match self {
            Store::Sqlite(store) => Box::pin(store.backup(dir)),
            Store::Redis(_) => Box::pin(async { Err(StoreError::NothingToBackUp) }),
        }
    }

    /// The database file, for SQLite on disk.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Store::Sqlite(store) => store.path(),
            Store::Redis(_) => None,
        }
    }

    /// Queues an operation a single node accepted (a cluster's rooms append through
    /// [`Cluster::append`] instead, which gives the number).
    pub fn append(&self, room: &Arc<str>, seq: u64, op: ByteString) {
        if let Store::Sqlite(store) = self {
            store.append(room, seq, op);
        }
    }

    /// Stores a checkpoint (the picture after operation `seq`; empty `png`: blank).
    pub fn checkpoint(&self, room: &Arc<str>, seq: u64, width: u32, height: u32, png: Vec<u8>) {
        match self {
            Store::Sqlite(store) => store.checkpoint(room, seq, width, height, png),
            Store::Redis(cluster) => cluster.checkpoint(room, seq, png),
        }
    }

    /// Frees a blank, emptied room's place. A cluster keeps it: another node may still have
    /// members in it, and its operation numbers must never start again.
    pub fn forget(&self, room: &Arc<str>, up_to_seq: u64) {
        if let Store::Sqlite(store) = self {
            store.forget(room, up_to_seq);
        }
    }

    /// Loads a room, creating its entry (or `TooManyRooms`).
    pub fn load(&self, room: Arc<str>) -> Answer<StoredRoom> {
        match self {
            Store::Sqlite(store) => Box::pin(store.load(room)),
            Store::Redis(cluster) => Box::pin(cluster.load(room)),
        }
    }

    /// Reads a room without creating it.
    pub fn read(&self, room: Arc<str>) -> Answer<Option<StoredRoom>> {
        match self {
            Store::Sqlite(store) => Box::pin(store.read(room)),
            Store::Redis(cluster) => Box::pin(cluster.read(room)),
        }
    }

    /// Resolves once everything queued is written.
    pub fn flush(&self) -> Answer<()> {
        match self {
            Store::Sqlite(store) => Box::pin(store.flush()),
            Store::Redis(cluster) => {
                let flushed = cluster.flush();
                Box::pin(async move {
                    flushed.await;
                    Ok(())
                })
            }
        }
    }

    /// Records a new private room's token digests (durably: answered once kept).
    pub fn create_private_room(&self, room: Arc<str>, hashes: AccessHashes) -> Answer<Creation> {
        match self {
            Store::Sqlite(store) => Box::pin(store.create_private_room(room, hashes)),
            Store::Redis(cluster) => Box::pin(cluster.create_private_room(&room, hashes)),
        }
    }

    /// A private room's token digests and lock, `None` for a public room. SQLite answers from
    /// memory at once; a cluster asks Redis (bounded by its answer timeout).
    pub fn room_access(&self, room: &str) -> Answer<Option<RoomAccess>> {
        match self {
            Store::Sqlite(store) => {
                let access = store.room_access(room);
                Box::pin(async move { Ok(access) })
            }
            Store::Redis(cluster) => Box::pin(cluster.room_access(room)),
        }
    }

    /// Replaces a private room's edit and view digests (`false`: no such private room). In a
    /// cluster every node hears of it on the room's channel; a single node's caller tells its room.
    pub fn replace_links(&self, room: Arc<str>, edit: Digest32, view: Digest32) -> Answer<bool> {
        match self {
            Store::Sqlite(store) => Box::pin(store.replace_links(room, edit, view)),
            Store::Redis(cluster) => Box::pin(cluster.replace_links(&room, edit, view)),
        }
    }

    /// Locks or unlocks a private room (`false`: no such private room); told as `replace_links`.
    pub fn set_locked(&self, room: Arc<str>, locked: bool) -> Answer<bool> {
        match self {
            Store::Sqlite(store) => Box::pin(store.set_locked(room, locked)),
            Store::Redis(cluster) => Box::pin(cluster.set_locked(&room, locked)),
        }
    }

    /// Deletes everything kept of a room (`false`: nothing was); told as `replace_links`.
    pub fn delete_room(&self, room: Arc<str>) -> Answer<bool> {
        match self {
            Store::Sqlite(store) => Box::pin(store.delete_room(room)),
            Store::Redis(cluster) => Box::pin(cluster.delete_room(&room)),
        }
    }

    /// Every room stored, for the operator.
    pub fn list_rooms(&self) -> Answer<Vec<RoomListing>> {
        match self {
            Store::Sqlite(store) => Box::pin(store.list_rooms()),
            Store::Redis(cluster) => Box::pin(cluster.list_rooms()),
        }
    }

    /// Number of rooms stored.
    pub fn room_count(&self) -> Answer<usize> {
        match self {
            Store::Sqlite(store) => Box::pin(store.room_count()),
            Store::Redis(cluster) => Box::pin(cluster.room_count()),
        }
    }

    /// Writes what is queued and closes (SQLite); hands what a cluster node accepted to Redis.
    pub fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self {
            Store::Sqlite(store) => Box::pin(store.close()),
            Store::Redis(cluster) => Box::pin(cluster.close()),
        }
    }
}
