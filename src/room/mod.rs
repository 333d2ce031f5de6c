//! `CanvasServer`: the actor that owns one room.
//!
//! It owns the room's member list and its canvas. It routes draws and clears to every member but the
//! sender, keeps the count and the presence list (names and colours, see `presence`) up to date,
//! relays cursors once per `CURSOR_TICK` (never recording them), records every accepted operation
//! (in memory and, through the [`Store`], on disk), and hands newcomers the picture: the last
//! checkpoint, then the operations after it. Every broadcast is encoded once and the same bytes go to each member and to the store.
//! Checkpoints are rendered off the room's thread (`picture::render_off_thread`); the store writes
//! on its own thread.
//!
//! It must never block (no disk, no rendering on its thread), never wait on a member, never start
//! blank over a stored picture it could not read, never accept a stroke the store cannot keep
//! (past `--max-unstored-bytes`), never `ctx.wait` on anything its own mailbox or spawned futures
//! must do first (a room waiting on itself never stops, nor does the server), and never trust a member's claim about who asked it for a snapshot
//! (the original demo's peer flow, `--newcomer-picture peer`): only the peer it asked may answer,
//! once.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use crate::canvas::Op;
use crate::config::Settings;
use crate::history::{self, History};
use crate::moderation::Standing;
use crate::picture::{self, Picture, Priority, RenderFailed};
use crate::presence::{CursorBuffer, Identity, ShownPresence};
use crate::registry::RoomRegistry;
use crate::stats::Stats;
use crate::storage::{Cluster, RelayedOp, Store, StoreError};
use actix_http::ws::CloseCode;

mod announce;
mod checkpoints;
mod cluster;
mod delivery;
pub(crate) mod direct;
mod handlers;
mod messages;
mod moderation;
mod newcomer;
mod operations;
mod to_member;

use direct::Direct;
pub use messages::*;
pub use to_member::{Kick, ToMember};

/// An operation the room accepted and has not yet folded into a checkpoint.
struct Recorded {
    seq: u64,
    op: Op,
    /// The bytes broadcast for it: sent again to newcomers, and stored after its meta (who sent
    /// it and when, which the history keeps).
    frame: ByteString,
}

/// Whether the room's stored canvas could be read.
enum Availability {
    /// Reading it from the store; the mailbox waits meanwhile.
    Loading,
    Ready,
    /// Joins are refused with this close; the room stops when it is empty, so the next join tries
    /// again.
    Refused {
        code: CloseCode,
        reason: &'static str,
    },
}

/// Members (by id) whose gathered frames the room writes once it has handled its mailbox.
type ToWrite = RefCell<Vec<(Uuid, Weak<Direct>)>>;

struct Member {
    id: Uuid,
    /// Its session, through what the room sends members (see `to_member`).
    session: Recipient<ToMember>,
    /// Gets the room's broadcasts once per tick, as one frame.
    batched: bool,
    /// The first broadcast of the current tick this member gets: one that joined mid-tick was sent
    /// the earlier ones with its picture.
    tick_from: usize,
    /// When this member was last told that a stroke of theirs could not be kept.
    refused_at: Option<Instant>,
    /// Its socket, for writing to it directly, if its session runs on this thread (see `direct`).
    direct: Option<Weak<Direct>>,
    /// Its name and colour in `presence` and on its cursor.
    identity: Identity,
    /// What its link makes of it: whether it may draw while the room is locked, and whether
    /// replacing the links closes it.
    standing: Standing,
}

impl Member {
    fn direct(&self) -> Option<Rc<Direct>> {
        self.direct.as_ref().and_then(Weak::upgrade)
    }

    /// Sends the session a message whatever its queue holds (for the few that must arrive).
    fn tell(&self, message: ToMember) {
        self.session.do_send(message);
        self.went_by_mailbox();
    }

    /// Sends the session a message unless its queue is full (`false`: the member falls behind).
    fn try_tell(&self, message: ToMember) -> bool {
        let sent = self.session.try_send(message).is_ok();
        if sent {
            self.went_by_mailbox();
        }
        sent
    }

    /// Direct writes wait until the session has handled what the room sent it before.
    fn went_by_mailbox(&self) {
        if let Some(direct) = self.direct() {
            direct.sent_to_mailbox();
        }
    }
}

/// Broadcasts gathered for the batched members until the tick ends: with 500 members and 50
/// drawing, one message per member per tick instead of one per member per segment (the
/// per-recipient actor messages were most of the server's time).
#[derive(Default)]
struct Tick {
    frames: Vec<ByteString>,
    /// Who sent each frame, so that nobody gets their own back (`None`: the room itself).
    senders: Vec<Option<Uuid>>,
    scheduled: bool,
}

/// A newcomer waiting for its picture.
struct PendingSnapshot {
    newcomer: Uuid,
    asked: Uuid,
    /// Peers already asked, so a peer that timed out is not asked again for this newcomer.
    tried: Vec<Uuid>,
    /// Identifies this ask, so a timer from an earlier ask does nothing.
    ask_id: u64,
}

/// How long a room may take to read its canvas before it refuses joins (1013) instead of keeping
/// them waiting: a store or a render queue that does not answer must not hang every newcomer.
pub const ROOM_LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// What a cluster member whose stroke could not be kept is told.
const UNREACHABLE_REFUSED_NOTICE: &str = "the server cannot reach its shared store right now; \
    this stroke was not kept, try again in a moment";
/// Why a cluster node refuses joins while it cannot reach Redis.
pub(crate) const UNREACHABLE_REASON: &str = "the server cannot reach its shared store; try again";

pub struct CanvasServer {
    name: Arc<str>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    registry: Addr<RoomRegistry>,
    store: Store,
    availability: Availability,
    /// The last checkpoint.
    picture: Picture,
    /// Operations after `picture`, oldest first.
    recorded: Vec<Recorded>,
    /// The strokes of `recorded`: who may undo what.
    history: History,
    /// How many of `recorded` the last checkpoint had to leave out (they could still be undone):
    /// the next one is due `--checkpoint-ops` operations after them.
    unsettled: usize,
    /// The sequence number of the last accepted operation.
    last_seq: u64,
    /// When the last operation was accepted: a room quiet for `--checkpoint-idle` is checkpointed.
    last_op_at: Instant,
    /// A checkpoint is being rendered.
    composing: bool,
    /// The idle-checkpoint timer is running.
    idle_check_armed: bool,
    /// A timer waits for the oldest undoable stroke's window to close.
    settling_armed: bool,
    /// Bytes the room takes on disk: its checkpoint plus the operations since.
    stored_bytes: u64,
    /// In join order: the longest-present member is asked for snapshots first.
    members: Vec<Member>,
    /// How many members it has, for the registry's placement of newcomers (see `PlaceSession`).
    population: Arc<AtomicUsize>,
    /// Members with frames gathered for a direct write at the end of this turn (see `direct`).
    to_write: ToWrite,
    tick: Tick,
    pending: Vec<PendingSnapshot>,
    joins_seen: u64,
    next_ask_id: u64,
    /// A count update went out less than `CLIENT_COUNT_INTERVAL` ago.
    count_throttled: bool,
    /// Members came or went since the last count update went out.
    count_dirty: bool,
    /// The count or a name changed while throttled: announce when the interval ends.
    count_stale: bool,
    /// The presence list as the members were last shown it (room-wide in a cluster).
    shown: ShownPresence,
    /// Cursor moves of the current `CURSOR_TICK` (never recorded or stored).
    cursors: CursorBuffer,
    /// The members were told that the store cannot write (once per outage).
    told_unstorable: bool,
    /// The cluster state, when this node shares the room through Redis.
    shared: Option<Shared>,
    /// The server is stopping (`CloseAll`): joins are answered 1001.
    closing: bool,
    /// The owner locked the room: only the owner may change the canvas.
    locked: bool,
    /// The operator deleted the room: it keeps, stores and relays nothing more, and stops.
    deleted: bool,
}

/// A cluster room's state: Redis orders its operations, this node follows.
struct Shared {
    cluster: Cluster,
    /// The room's subscription, to end when the room stops.
    token: u64,
    /// Reading what the channel missed; operations that arrive meanwhile wait in `early`.
    catching_up: bool,
    early: Vec<RelayedOp>,
    /// The room-wide count (and its version) the members were last sent.
    shown_count: Option<(u64, u64)>,
    /// A member joined since: send the count even if it did not change.
    count_owed: bool,
    /// The version of the room-wide presence list the members were last shown.
    shown_roster: Option<u64>,
    /// When this node last asked for the checkpoint lease.
    lease_asked_at: Option<Instant>,
}

impl CanvasServer {
    pub fn new(
        name: Arc<str>,
        settings: Arc<Settings>,
        stats: Arc<Stats>,
        registry: Addr<RoomRegistry>,
        store: Store,
        population: Arc<AtomicUsize>,
    ) -> Self {
        let undo_limits = settings.storage.undo;
        CanvasServer {
            name,
            settings,
            stats,
            registry,
            store,
            availability: Availability::Loading,
            picture: Picture::blank(0),
            recorded: Vec::new(),
            history: History::new(undo_limits),
            unsettled: 0,
            last_seq: 0,
            last_op_at: Instant::now(),
            composing: false,
            idle_check_armed: false,
            settling_armed: false,
            stored_bytes: 0,
            members: Vec::new(),
            population,
            to_write: ToWrite::default(),
            tick: Tick::default(),
            pending: Vec::new(),
            joins_seen: 0,
            next_ask_id: 0,
            count_throttled: false,
            count_dirty: false,
            count_stale: false,
            shown: ShownPresence::default(),
            cursors: CursorBuffer::default(),
            told_unstorable: false,
            shared: None,
            closing: false,
            locked: false,
            deleted: false,
        }
    }

    fn cluster(&self) -> Option<Cluster> {
        self.shared.as_ref().map(|shared| shared.cluster.clone())
    }

    fn member(&self, id: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// Why a room's stored canvas could not be opened.
enum LoadError {
    Store(StoreError),
    Damaged(String),
    Render(RenderFailed),
    TimedOut,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Store(err) => write!(f, "{err}"),
            LoadError::Damaged(why) => write!(f, "its stored canvas is damaged: {why}"),
            LoadError::Render(why) => write!(f, "its canvas could not be restored: {why}"),
            LoadError::TimedOut => write!(
                f,
                "reading its canvas took over {}s",
                ROOM_LOAD_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Actor for CanvasServer {
    type Context = Context<Self>;

    /// Reads the room's canvas before anything else: the mailbox (joins first) waits until then.
    fn started(&mut self, ctx: &mut Self::Context) {
        log::debug!("room={} started", self.name);
        let store = self.store.clone();
        let name = self.name.clone();
        let size = self.settings.canvas;
        let limits = self.settings.storage.undo;
        // A cluster room hears its channel before it reads the room: nothing published after the
        // read is missed, and what the read already holds is skipped by its number.
        let subscribed = self.store.cluster().map(|cluster| {
            let (token, subscribed) = cluster.subscribe(name.clone(), ctx.address().recipient());
            self.shared = Some(Shared {
                cluster: cluster.clone(),
                token,
                catching_up: false,
                early: Vec::new(),
                shown_count: None,
                count_owed: false,
                shown_roster: None,
                lease_asked_at: None,
            });
            subscribed
        });
        let load = async move {
            if let Some(subscribed) = subscribed {
                subscribed.await.map_err(LoadError::Store)?;
            }
            // Read after subscribing, like the canvas: a lock changed later is heard.
            let access = store.room_access(&name);
            let stored = store.load(name).await.map_err(LoadError::Store)?;
            let locked = access
                .await
                .map_err(LoadError::Store)?
                .is_some_and(|access| access.locked);
            let restored = if !picture::needs_render(&stored) {
                picture::restore(&stored, size, limits, history::now_ms())
                    .map_err(LoadError::Damaged)?
            } else {
                picture::render_off_thread(Priority::Foreground, move || {
                    picture::restore(&stored, size, limits, history::now_ms())
                })
                .await
                .map_err(LoadError::Render)?
                .map_err(LoadError::Damaged)?
            };
            Ok((restored, locked))
        };
        // The mailbox (joins first) waits for the canvas. This `wait` depends only on the store's
        // thread and the render task, never on this actor's own mailbox or spawned futures (it
        // runs before there are any), and it is bounded.
        let load = async move {
            tokio::time::timeout(ROOM_LOAD_TIMEOUT, load)
                .await
                .unwrap_or(Err(LoadError::TimedOut))
        };
        ctx.wait(load.into_actor(self).map(|result, room, ctx| {
            let result = result.map(|(restored, locked)| {
                room.locked = locked;
                restored
            });
            room.loaded(result, ctx);
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        log::debug!("room={} stopped", self.name);
        if let Some(shared) = &self.shared {
            shared.cluster.unsubscribe(&self.name, shared.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::newcomer::canvas_state_frame;
    use super::*;
    use crate::config::parse_for_tests;
    use crate::history::AuthorId;
    use crate::protocol::{Segment, ServerMessage, Tool};

    fn settings(data_dir: &std::path::Path) -> Arc<Settings> {
        let data_dir = data_dir.to_str().expect("a UTF-8 temporary path");
        let args = ["--data-dir", data_dir, "--checkpoint-ops", "1"];
        Arc::new(parse_for_tests(&args).expect("valid settings"))
    }

    fn segment() -> Segment {
        Segment {
            start_x: 10.0,
            start_y: 10.0,
            end_x: 50.0,
            end_y: 50.0,
            color: "#ff0000".into(),
            size: 4.0,
            tool: Tool::Pen,
            stroke_id: None,
        }
    }

    /// A room must stop even when emptied while its checkpoint is in flight: one whose checkpoint
    /// waited for a render permit once waited, in its `Shutdown`, for a permit of its own; the one
    /// its checkpoint then got was never used, and with the other permits busy the room (and the
    /// server's shutdown) never finished.
    #[test]
    fn a_room_emptied_while_its_checkpoint_is_in_flight_stops() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let settings = settings(dir.path());
        let store = Store::open(dir.path(), Default::default()).expect("a fresh store");
        actix::System::new().block_on(async move {
            let stats = Arc::new(Stats::new());
            let registry =
                RoomRegistry::new(settings.clone(), stats.clone(), store.clone()).start();
            let room = CanvasServer::new(
                Arc::from("room"),
                settings,
                stats,
                registry,
                store.clone(),
                Arc::default(),
            )
            .start();
            // Answered once the room has read its canvas (the mailbox waits for that).
            room.send(Drain).await.expect("the room opens");

            let mut held = picture::hold_every_render_permit(Priority::Background).await;
            // --checkpoint-ops 1: this draw starts a checkpoint, which waits for a permit.
            let draw = Draw {
                from: Uuid::new_v4(),
                author: AuthorId::random(),
                segment: segment(),
                received: Instant::now(),
            };
            room.send(draw).await.expect("the room takes the draw");
            room.do_send(Shutdown);
            // One permit comes free; every other stays busy (other rooms rendering).
            let one = held.split(1).expect("at least one permit");
            drop(one);

            let deadline = Instant::now() + Duration::from_secs(20);
            while room.connected() && Instant::now() < deadline {
                actix::clock::sleep(Duration::from_millis(10)).await;
            }
            let stopped = !room.connected();
            drop(held);
            assert!(
                stopped,
                "the room must stop once its last checkpoint is stored"
            );
            let stored = store.load(Arc::from("room")).await.expect("the room loads");
            assert_eq!(
                stored.checkpoint_seq, 1,
                "the last checkpoint covers the draw"
            );
            store.close().await;
        });
    }

    #[test]
    fn a_joined_canvas_state_frame_is_what_the_encoder_makes() {
        let id = Uuid::new_v4();
        let data = "data:image/png;base64,iVBORw0KGgo+/=";
        let encoded = ServerMessage::CanvasState {
            client_id: id,
            data,
        }
        .encode();
        assert_eq!(canvas_state_frame(id, data), encoded);
    }
}
