//! `RoomRegistry`: the actor that knows which rooms are alive.
//!
//! It owns the map from room name to `CanvasServer` address: it spawns a room on its first join,
//! spreading rooms over a fixed set of arbiters (threads) so that busy rooms use every core; it
//! tells each new connection which thread to start its session on (its room's, while the room is
//! small, so that a delivery never crosses threads; any, round-robin, once it is large); and it
//! stops a room once it is empty and no join is on its way; once a burst of rooms has closed, it
//! gives the heap's free memory back to the system; with `--room-ttl` it has the store delete the
//! rooms nobody opened for that long, never one open now. It must never hold per-message state: after
//! a join it is out of the path, and draws go straight from sessions to their room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::Settings;
use crate::moderation::Standing;
use crate::room::{CanvasServer, CloseAll, DeleteNow, Drain, Join, JoinAnswer, Shutdown};
use crate::stats::Stats;
use crate::storage::{Store, StoreError};

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
    pub session: Recipient<crate::room::ToMember>,
    /// The client asked for batched delivery.
    pub batched: bool,
    /// What its link makes of it in the room.
    pub standing: Standing,
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

/// The operator deletes `room` for good: the open room (if any) closes its members, lets go of
/// everything and has the store delete it; else the store deletes it at once. Either way the
/// deletion is queued to the store before any later join can open the room again, so that no
/// newcomer's room reads what is being deleted. `true` if anything was kept or the room was open.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct DeleteRoom {
    pub room: Arc<str>,
}

/// The open rooms and their member counts on this node (the probe room left out), for the
/// operator's listing.
#[derive(Message)]
#[rtype(result = "HashMap<Arc<str>, usize>")]
pub struct OpenRooms;

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
    /// Which of `arbiters` runs it (and its first members' sessions).
    arbiter: usize,
    /// Its member count, kept by the room.
    population: Arc<AtomicUsize>,
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
    /// Threads promised to rooms that are not open yet: every newcomer of a room about to open
    /// (a crowd arriving at once) is placed on the thread the room will open on.
    placements: HashMap<Arc<str>, Placement>,
    /// Counts room closures, so that only the last of a burst schedules a trim that runs.
    closures: u64,
    /// A retention sweep is on its way (`--room-ttl`).
    sweeping: bool,
    /// The server is stopping (`CloseAllRooms`): a room opened from now on is closed at once, so a
    /// join that raced the stop is answered 1001 instead of being left open.
    stopping: bool,
}

/// How long a thread stays promised to a room that has not opened; far longer than the join a
/// placed session makes at once.
const PLACEMENT_TTL: Duration = Duration::from_secs(30);

/// A room's thread, chosen before the room opened.
struct Placement {
    arbiter: usize,
    /// Sessions placed for it so far (its first joins are on their way).
    placed: usize,
    at: Instant,
}

/// A room keeps the sessions of up to this many members on its own thread; later newcomers stay
/// on the HTTP worker that accepted them (see `RoomRegistry::arbiter_for`).
pub const LOCAL_MEMBERS: usize = 32;

/// A new connection asks on which thread to start its session: the one that runs (or will run)
/// its room, so that the room's deliveries to it never cross threads; `None`: where it is.
#[derive(Message)]
#[rtype(result = "Option<ArbiterHandle>")]
pub struct PlaceSession {
    pub room: Arc<str>,
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
            stopping: false,
            placements: HashMap::new(),
            closures: 0,
            sweeping: false,
        }
    }

    /// The arbiter for a session of `room`: the one the room runs on (or will open on), while the
    /// room is small; `None` once it is large: the session then stays on the HTTP worker that
    /// accepted it.
    ///
    /// Why: a delivery to a session on the room's own thread costs no cross-thread wake-up, which
    /// is much of what a delivery costs above the kernel's write when each frame travels alone
    /// (many small rooms). A large room is the opposite case. On its own thread, one core would
    /// write every member's frames (unbatched busy-room at 60/s: p99 0.7-1.2 s). Spread over the
    /// room threads, the room thread and the others woke each other per delivery (busy-room at
    /// 5/s: 0.23 context switches per delivery against 0.02). On the HTTP workers, as every
    /// session was before, its frames are written on every core and its costs are those measured
    /// before (0.02 per delivery; busy-room at 60/s: 1.4 million deliveries/s, p99 35 ms).
    fn arbiter_for(&mut self, room: &Arc<str>, ctx: &mut Context<Self>) -> Option<usize> {
        let (home, members) = match self.rooms.get(room).filter(|entry| entry.addr.connected()) {
            Some(entry) => (entry.arbiter, entry.population.load(Ordering::Relaxed)),
            None => self.promised_arbiter(room, ctx),
        };
        (members < LOCAL_MEMBERS).then_some(home)
    }

    /// The arbiter promised to a room not open yet, and how many sessions were placed there.
    fn promised_arbiter(&mut self, room: &Arc<str>, ctx: &mut Context<Self>) -> (usize, usize) {
        if let Some(placement) = self.placements.get_mut(room) {
            placement.placed += 1;
            return (placement.arbiter, placement.placed - 1);
        }
        let arbiter = self.next_round_robin();
        if self.placements.is_empty() {
            ctx.run_later(PLACEMENT_TTL, |registry, ctx| {
                registry.forget_placements(ctx)
            });
        }
        self.placements.insert(
            room.clone(),
            Placement {
                arbiter,
                placed: 1,
                at: Instant::now(),
            },
        );
        (arbiter, 0)
    }

    /// The next room thread, in turn.
    fn next_round_robin(&mut self) -> usize {
        let arbiter = self.next_arbiter % self.arbiters.len();
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        arbiter
    }

    /// Drops the promises whose room never opened (every session placed there failed before its
    /// join), so that the map stays as small as the rooms about to open.
    fn forget_placements(&mut self, ctx: &mut Context<Self>) {
        self.placements
            .retain(|_, placement| placement.at.elapsed() < PLACEMENT_TTL);
        if !self.placements.is_empty() {
            ctx.run_later(PLACEMENT_TTL, |registry, ctx| {
                registry.forget_placements(ctx)
            });
        }
    }

    /// Opens `room` on the thread its newcomers were placed on.
    fn open_room(&mut self, room: &Arc<str>, ctx: &mut Context<Self>) -> RoomEntry {
        let arbiter = match self.placements.remove(room) {
            Some(placement) => placement.arbiter,
            None => self.next_round_robin(),
        };
        let population = Arc::new(AtomicUsize::new(0));
        let thread = self.live_arbiter(arbiter);
        count_room(&self.stats, room, 1);
        let store = if &**room == PROBE_ROOM {
            Store::without_persistence()
        } else {
            self.store.clone()
        };
        let addr = start_room(
            &thread,
            room.clone(),
            self.settings.clone(),
            self.stats.clone(),
            store,
            ctx.address(),
            population.clone(),
        );
        if self.stopping {
            // Before any join: the room's mailbox handles this first.
            addr.do_send(CloseAll);
        }
        RoomEntry {
            addr,
            arbiter,
            population,
            joins_sent: 0,
        }
    }

    /// The handle of arbiter `index`, replacing its thread first if it has died (a room panicked on
    /// it), so that one failure does not take later rooms and sessions with it.
    fn live_arbiter(&mut self, index: usize) -> ArbiterHandle {
        if !self.arbiters[index].spawn(async {}) {
            log::error!("room thread {index} had stopped; starting a new one");
            self.arbiters[index] = Arbiter::new();
        }
        self.arbiters[index].handle()
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

/// Starts a room on `thread`.
fn start_room(
    thread: &ArbiterHandle,
    name: Arc<str>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    store: Store,
    registry: Addr<RoomRegistry>,
    population: Arc<AtomicUsize>,
) -> Addr<CanvasServer> {
    CanvasServer::start_in_arbiter(thread, move |_| {
        CanvasServer::new(name, settings, stats, registry, store, population)
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

/// How often retention looks for rooms to delete: a tenth of `--room-ttl`, between these bounds
/// (a room outlives its time by at most one interval).
const RETENTION_SWEEP_MIN: Duration = Duration::from_secs(1);
const RETENTION_SWEEP_MAX: Duration = Duration::from_secs(3600);

fn retention_sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(RETENTION_SWEEP_MIN, RETENTION_SWEEP_MAX)
}

impl RoomRegistry {
    /// Retention (`--room-ttl`): asks the store to delete the rooms nobody opened within the time,
    /// never one open here now. One sweep at a time: a slow one delays the next.
    fn sweep(&mut self, ttl: Duration, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let open: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        let expired = self.store.expire(ttl, open);
        ctx.spawn(
            actix::fut::wrap_future(expired).map(|result, registry: &mut Self, _| {
                registry.sweeping = false;
                match result {
                    Ok(0) => {}
                    Ok(deleted) => log::info!("retention deleted {deleted} rooms"),
                    Err(err) => log::error!("retention could not delete old rooms: {err}"),
                }
            }),
        );
    }
}

impl Actor for RoomRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(ttl) = self.settings.storage.room_ttl {
            if self.store.keeps_pictures() {
                ctx.run_interval(retention_sweep_interval(ttl), move |registry, ctx| {
                    registry.sweep(ttl, ctx)
                });
            }
        }
    }

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
        let mut entry = match self.rooms.remove(&join.room) {
            Some(entry) => entry,
            None => self.open_room(&join.room, ctx),
        };
        entry.joins_sent += 1;
        let (answer, answered) = oneshot::channel();
        entry.addr.do_send(Join {
            id: join.id,
            session: join.session,
            batched: join.batched,
            standing: join.standing,
            answer,
        });
        let room = entry.addr.clone();
        self.rooms.insert(join.room, entry);
        MessageResult(Ok(Joining {
            room,
            answer: answered,
        }))
    }
}

impl Handler<PlaceSession> for RoomRegistry {
    type Result = MessageResult<PlaceSession>;

    fn handle(&mut self, place: PlaceSession, ctx: &mut Context<Self>) -> Self::Result {
        let arbiter = self.arbiter_for(&place.room, ctx);
        MessageResult(arbiter.map(|arbiter| self.live_arbiter(arbiter)))
    }
}

impl Handler<FindRoom> for RoomRegistry {
    type Result = Option<Addr<CanvasServer>>;

    fn handle(&mut self, find: FindRoom, _ctx: &mut Context<Self>) -> Self::Result {
        self.rooms.get(&find.room).map(|entry| entry.addr.clone())
    }
}

impl Handler<DeleteRoom> for RoomRegistry {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, delete: DeleteRoom, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.rooms.get(&delete.room) else {
            return Box::pin(self.store.delete_room(delete.room));
        };
        let (open, store) = (entry.addr.clone(), self.store.clone());
        Box::pin(async move {
            match open.send(DeleteNow).await {
                Ok(deleted) => deleted.map(|_| true),
                // It stopped meanwhile, after storing what it had: delete that.
                Err(_) => store.delete_room(delete.room).await,
            }
        })
    }
}

impl Handler<OpenRooms> for RoomRegistry {
    type Result = MessageResult<OpenRooms>;

    fn handle(&mut self, _: OpenRooms, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.rooms
                .iter()
                .filter(|(name, _)| &***name != PROBE_ROOM)
                .map(|(name, entry)| (name.clone(), entry.population.load(Ordering::Relaxed)))
                .collect(),
        )
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
        self.stopping = true;
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

#[cfg(test)]
mod tests {
    use std::thread::ThreadId;

    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::session::connect_in_memory;

    /// Runs `test` with a registry of two room threads, on an actix system.
    fn with_registry<F, Fut>(test: F)
    where
        F: FnOnce(Arc<Settings>, Arc<Stats>, Addr<RoomRegistry>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let args = ["--room-threads", "2", "--storage", "memory"];
        let settings = Arc::new(crate::config::parse_for_tests(&args).expect("valid settings"));
        let stats = Arc::new(Stats::new());
        actix::System::new().block_on(async move {
            let registry = RoomRegistry::new(
                settings.clone(),
                stats.clone(),
                Store::without_persistence(),
            );
            test(settings, stats, registry.start()).await;
        });
    }

    /// The thread a placement names, if it names one.
    async fn placement(registry: &Addr<RoomRegistry>, room: &str) -> Option<ThreadId> {
        let place = PlaceSession {
            room: Arc::from(room),
        };
        let thread = registry.send(place).await.expect("the registry answers")?;
        let (tell, told) = oneshot::channel();
        thread.spawn_fn(move || {
            let _ = tell.send(std::thread::current().id());
        });
        Some(told.await.expect("the thread runs what it is given"))
    }

    /// The thread a placement names, for a room that must have one.
    async fn thread_of(registry: &Addr<RoomRegistry>, room: &str) -> ThreadId {
        let thread = placement(registry, room).await;
        thread.expect("a small room's sessions are placed on its thread")
    }

    /// A member of `room` over an in-memory socket, started where the server starts one, once
    /// its room has welcomed it. Keep the socket: dropping it is the member's leave.
    async fn member_of(
        room: &str,
        settings: &Arc<Settings>,
        stats: &Arc<Stats>,
        registry: &Addr<RoomRegistry>,
    ) -> DuplexStream {
        let mut client_end =
            connect_in_memory(room, "test", settings, stats, registry, 64 * 1024).await;
        let mut first = [0u8; 2];
        let read = client_end.read_exact(&mut first);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("welcomed in time")
            .expect("the session writes its welcome");
        assert_eq!(first[0], 0x81, "the first frame is a text frame (welcome)");
        client_end
    }

    #[test]
    fn every_newcomer_of_a_room_about_to_open_is_placed_on_one_thread() {
        with_registry(|_, _, registry| async move {
            let first = thread_of(&registry, "a").await;
            for _ in 0..5 {
                assert_eq!(thread_of(&registry, "a").await, first);
            }
        });
    }

    #[test]
    fn rooms_are_spread_over_the_room_threads() {
        with_registry(|_, _, registry| async move {
            let a = thread_of(&registry, "a").await;
            let b = thread_of(&registry, "b").await;
            assert_ne!(a, b, "two rooms, two threads");
        });
    }

    #[test]
    fn newcomers_of_an_open_room_are_placed_on_its_thread() {
        with_registry(|settings, stats, registry| async move {
            let placed = thread_of(&registry, "a").await;
            let _member = member_of("a", &settings, &stats, &registry).await;
            // Other rooms opening meanwhile do not move it.
            let _other = member_of("b", &settings, &stats, &registry).await;
            for _ in 0..4 {
                assert_eq!(thread_of(&registry, "a").await, placed);
            }
        });
    }

    #[test]
    fn a_large_room_leaves_its_later_newcomers_on_the_threads_that_accepted_them() {
        with_registry(|settings, stats, registry| async move {
            let home = thread_of(&registry, "big").await;
            let mut members = Vec::new();
            for _ in 0..LOCAL_MEMBERS {
                members.push(member_of("big", &settings, &stats, &registry).await);
            }
            assert_eq!(placement(&registry, "big").await, None);
            // A member leaving makes it small again.
            drop(members.pop());
            let deadline = Instant::now() + Duration::from_secs(10);
            while placement(&registry, "big").await.is_none() && Instant::now() < deadline {
                actix::clock::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(placement(&registry, "big").await, Some(home));
        });
    }
}
