//! `RoomRegistry`: the actor that knows which rooms are alive.
//!
//! It owns the map from room name to `CanvasServer` address: it spawns a room on its first join,
//! spreading rooms over a fixed set of arbiters (threads) so that busy rooms use every core, and it
//! stops a room once it is empty and no join is on its way; once a burst of rooms has closed, it
//! gives the heap's free memory back to the system. It must never hold per-message state: after
//! a join it is out of the path, and draws go straight from sessions to their room.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::Settings;
use crate::room::{CanvasServer, CloseAll, Drain, Join, JoinAnswer, Shutdown};
use crate::session::WsSession;
use crate::stats::Stats;
use crate::storage::Store;

/// The health probe's room (see `health`). No client can name it (`~` is not allowed in room
/// names); it lives in memory, is not counted among the rooms, and is exempt from `--max-rooms`.
pub const PROBE_ROOM: &str = "~probe";

/// A session asks to enter `room`; the answer is the room's address, for its later messages, and
/// where the room will answer the join.
#[derive(Message)]
#[rtype(result = "Result<Joining, TooManyRooms>")]
pub struct JoinRoom {
    pub room: Arc<str>,
    pub id: Uuid,
    pub session: Addr<WsSession>,
    /// The client asked for batched delivery.
    pub batched: bool,
}

/// The server is stopping: every room closes its members with 1001. Answers once all rooms have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAllRooms;

/// Answers once every open room has handled everything sent to it before: after the connections
/// are gone, every accepted operation has then reached the store's queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainRooms;

/// The address of `room` if it is open (for reading its canvas); rooms are not opened for this.
#[derive(Message)]
#[rtype(result = "Option<Addr<CanvasServer>>")]
pub struct FindRoom {
    pub room: Arc<str>,
}

/// A join on its way to its room.
pub struct Joining {
    pub room: Addr<CanvasServer>,
    /// The room's answer; it comes once the room has read its canvas.
    pub answer: oneshot::Receiver<JoinAnswer>,
}

/// The join would open a room beyond `--max-rooms`.
#[derive(Debug)]
pub struct TooManyRooms;

/// A room became empty after having seen `joins_seen` joins.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomIdle {
    pub room: Arc<str>,
    pub joins_seen: u64,
}

struct RoomEntry {
    addr: Addr<CanvasServer>,
    /// Joins forwarded to the room. A room that reports being idle with fewer joins seen has a join
    /// still in its mailbox and must live on.
    joins_sent: u64,
}

pub struct RoomRegistry {
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    store: Store,
    rooms: HashMap<Arc<str>, RoomEntry>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    /// Counts room closures, so that only the last of a burst schedules a trim that runs.
    closures: u64,
}

/// How long after the last room of a burst closed the heap is trimmed (see [`trim_heap`]).
const TRIM_AFTER_QUIET: Duration = Duration::from_secs(2);

impl RoomRegistry {
    pub fn new(settings: Arc<Settings>, stats: Arc<Stats>, store: Store) -> Self {
        let arbiters = (0..settings.room_threads).map(|_| Arbiter::new()).collect();
        RoomRegistry {
            settings,
            stats,
            store,
            rooms: HashMap::new(),
            arbiters,
            next_arbiter: 0,
            closures: 0,
        }
    }

    /// A room closed: once no other has closed for `TRIM_AFTER_QUIET`, give the memory a crowd
    /// used back to the system.
    fn trim_when_quiet(&mut self, ctx: &mut Context<Self>) {
        self.closures += 1;
        let closures = self.closures;
        ctx.run_later(TRIM_AFTER_QUIET, move |registry, _| {
            if registry.closures == closures {
                actix::spawn(async {
                    let _ = tokio::task::spawn_blocking(trim_heap).await;
                });
            }
        });
    }
}

/// Returns the heap's free memory to the system. glibc keeps what a thread freed in that thread's
/// arena: after a crowd of thousands left (their sessions, rooms and renders freed on a dozen
/// threads), an idle server kept 280 MiB it no longer used, of which `malloc_trim` gave back 230
/// (measured with bench/crowd-soak.sh). It walks every arena, so it runs on a blocking thread.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only releases free memory.
        let released = unsafe { libc::malloc_trim(0) };
        log::debug!("heap trimmed (memory released: {})", released != 0);
    }
}

/// Starts a room on the next arbiter, round-robin. An arbiter whose thread has died (a room panicked
/// on it) is replaced first, so one failure does not take later rooms with it.
fn start_room(
    arbiters: &mut [Arbiter],
    next_arbiter: &mut usize,
    name: Arc<str>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    store: Store,
    registry: Addr<RoomRegistry>,
) -> Addr<CanvasServer> {
    let index = *next_arbiter % arbiters.len();
    *next_arbiter = next_arbiter.wrapping_add(1);
    if !arbiters[index].spawn(async {}) {
        log::error!("room thread {index} had stopped; starting a new one");
        arbiters[index] = Arbiter::new();
    }
    CanvasServer::start_in_arbiter(&arbiters[index].handle(), move |_| {
        CanvasServer::new(name, settings, stats, registry, store)
    })
}

/// Counts a room opened (+1) or closed (-1) in the rooms gauge; the probe room is not a room.
fn count_room(stats: &Stats, room: &str, change: i8) {
    if room == PROBE_ROOM {
        return;
    }
    if change > 0 {
        stats.rooms.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.rooms.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Actor for RoomRegistry {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<JoinRoom> for RoomRegistry {
    type Result = MessageResult<JoinRoom>;

    fn handle(&mut self, join: JoinRoom, ctx: &mut Context<Self>) -> Self::Result {
        if self
            .rooms
            .get(&join.room)
            .is_some_and(|entry| !entry.addr.connected())
        {
            log::error!(
                "room={} had stopped unexpectedly; starting it afresh",
                join.room
            );
            self.rooms.remove(&join.room);
            count_room(&self.stats, &join.room, -1);
        }
        let is_probe = &*join.room == PROBE_ROOM;
        if !is_probe
            && !self.rooms.contains_key(&join.room)
            && self.rooms.len() >= self.settings.max_rooms
        {
            return MessageResult(Err(TooManyRooms));
        }
        let RoomRegistry {
            settings,
            stats,
            store,
            rooms,
            arbiters,
            next_arbiter,
            ..
        } = self;
        let entry = rooms.entry(join.room.clone()).or_insert_with(|| {
            count_room(stats, &join.room, 1);
            let store = if is_probe {
                Store::memory()
            } else {
                store.clone()
            };
            let addr = start_room(
                arbiters,
                next_arbiter,
                join.room,
                settings.clone(),
                stats.clone(),
                store,
                ctx.address(),
            );
            RoomEntry {
                addr,
                joins_sent: 0,
            }
        });
        entry.joins_sent += 1;
        let (answer, answered) = oneshot::channel();
        entry.addr.do_send(Join {
            id: join.id,
            session: join.session,
            batched: join.batched,
            answer,
        });
        MessageResult(Ok(Joining {
            room: entry.addr.clone(),
            answer: answered,
        }))
    }
}

impl Handler<FindRoom> for RoomRegistry {
    type Result = Option<Addr<CanvasServer>>;

    fn handle(&mut self, find: FindRoom, _ctx: &mut Context<Self>) -> Self::Result {
        self.rooms.get(&find.room).map(|entry| entry.addr.clone())
    }
}

impl Handler<RoomIdle> for RoomRegistry {
    type Result = ();

    fn handle(&mut self, idle: RoomIdle, ctx: &mut Context<Self>) {
        let Some(entry) = self.rooms.get(&idle.room) else {
            return;
        };
        if entry.joins_sent != idle.joins_seen {
            return;
        }
        if let Some(entry) = self.rooms.remove(&idle.room) {
            entry.addr.do_send(Shutdown);
            count_room(&self.stats, &idle.room, -1);
            if &*idle.room != PROBE_ROOM {
                self.trim_when_quiet(ctx);
            }
        }
    }
}

impl Handler<CloseAllRooms> for RoomRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: CloseAllRooms, _ctx: &mut Context<Self>) -> Self::Result {
        let closing: Vec<_> = self
            .rooms
            .values()
            .map(|room| room.addr.send(CloseAll))
            .collect();
        Box::pin(async move {
            for room in closing {
                // A room that already stopped has nobody to close.
                let _ = room.await;
            }
        })
    }
}

impl Handler<DrainRooms> for RoomRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainRooms, _ctx: &mut Context<Self>) -> Self::Result {
        let draining: Vec<_> = self
            .rooms
            .values()
            .map(|room| room.addr.send(Drain))
            .collect();
        Box::pin(async move {
            for room in draining {
                // A room that already stopped has stored what it accepted.
                let _ = room.await;
            }
        })
    }
}
