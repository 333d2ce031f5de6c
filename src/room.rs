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
//! must do first (issue 12), and never trust a member's claim about who asked it for a snapshot
//! (the original demo's peer flow, `--newcomer-picture peer`): only the peer it asked may answer,
//! once.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::canvas::{CanvasError, Op};
use crate::config::{PictureSource, Settings};
use crate::direct::{self, Direct, Written};
use crate::history::{self, AuthorId, History, Meta};
use crate::picture::{self, Picture, Priority, RenderFailed, Restored};
use crate::presence::{self, CursorBuffer, Identity, ShownPresence, CURSOR_TICK};
use crate::protocol::{batch_frame, ErrorCode, Rejection, Segment, ServerMessage, StrokeId};
use crate::registry::{RoomIdle, RoomRegistry};
use crate::session::{
    Deliver, DeliverMany, DeliverRest, DeliverTick, Kick, RequestSnapshot, WithdrawSnapshotRequest,
    WsSession,
};
use crate::stats::Stats;
use crate::storage::{CatchUp, Cluster, Relayed, RelayedOp, Store, StoreError, StoredRoom};
use actix_http::ws::CloseCode;

/// A session enters the room. Sent by the registry only, so the registry can count joins.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: Uuid,
    pub session: Addr<WsSession>,
    /// The client asked for batched delivery.
    pub batched: bool,
    /// The client joined with a view link (said in its `welcome`).
    pub read_only: bool,
    /// Where the room answers, before it sends the member anything else. Not a message to the
    /// session's mailbox: the session waits for this answer with its mailbox held (so that its
    /// `welcome` comes first), and an answer queued behind that wait would never arrive.
    pub answer: oneshot::Sender<JoinAnswer>,
}

/// The room's answer to a [`Join`].
#[derive(Debug)]
pub enum JoinAnswer {
    /// The session is a member; this is its `welcome` frame.
    Welcome(ByteString),
    /// The room cannot take the session, which is closed with this code and reason.
    Refused {
        code: CloseCode,
        reason: &'static str,
    },
}

/// A session left (closed, timed out, or failed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: Uuid,
}

/// A validated segment from member `from`, which arrived at `received`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Draw {
    pub from: Uuid,
    pub author: AuthorId,
    pub segment: Segment,
    pub received: Instant,
}

/// Member `from` undoes (or redoes) a stroke of theirs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Toggle {
    pub from: Uuid,
    pub author: AuthorId,
    pub stroke_id: StrokeId,
    /// `false`: redo.
    pub undo: bool,
}

/// Member `from` names itself (the name is already validated).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetName {
    pub from: Uuid,
    pub name: String,
}

/// Member `from`'s pointer is at (`x`, `y`) (validated logical coordinates).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CursorMove {
    pub from: Uuid,
    pub x: f64,
    pub y: f64,
}

/// The server is stopping: close every member with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

/// Member `from` cleared the canvas.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Clear {
    pub from: Uuid,
    pub author: AuthorId,
    /// With one, the clear can be undone by whoever cleared.
    pub stroke_id: Option<StrokeId>,
}

/// Member `from` answers a `canvasRequest` for newcomer `for_client`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotReply {
    pub from: Uuid,
    pub for_client: Uuid,
    pub data: String,
}

/// A member's mailbox is full: it stopped reading, so it is dropped rather than queued for.
#[derive(Message)]
#[rtype(result = "()")]
struct Evict {
    id: Uuid,
}

/// The registry confirmed that no join is on its way: the room may stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Answered once everything sent to the room before it has been handled (mailboxes are in order).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// What the room's canvas looks like now: a picture and the operations drawn after it (for
/// `GET /api/rooms/{room}/canvas.png`; the caller renders them off the room's thread).
#[derive(Message)]
#[rtype(result = "Option<(Picture, Vec<Op>)>")]
pub struct CurrentCanvas;

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

/// The room has handled what its mailbox held: write what it gathered for its members' sockets.
#[derive(Message)]
#[rtype(result = "()")]
struct WriteGathered;

struct Member {
    id: Uuid,
    session: Addr<WsSession>,
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
}

impl Member {
    fn direct(&self) -> Option<Rc<Direct>> {
        self.direct.as_ref().and_then(Weak::upgrade)
    }

    /// Sends the session a message whatever its queue holds (for the few that must arrive).
    fn tell<M>(&self, message: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        WsSession: Handler<M>,
    {
        self.session.do_send(message);
        self.went_by_mailbox();
    }

    /// Sends the session a message unless its queue is full (`false`: the member falls behind).
    fn try_tell<M>(&self, message: M) -> bool
    where
        M: Message + Send + 'static,
        M::Result: Send,
        WsSession: Handler<M>,
    {
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

/// While strokes are refused because the store cannot keep more, a member who keeps drawing is
/// told so at most this often, not once per stroke.
const REFUSAL_NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// What a cluster's members are told, once, when their node loses Redis.
const UNREACHABLE_NOTICE: &str = "the server lost its connection to the shared store; drawing \
    pauses until it is back (nothing drawn before is lost)";
/// What a cluster member whose stroke could not be kept is told.
const UNREACHABLE_REFUSED_NOTICE: &str = "the server cannot reach its shared store right now; \
    this stroke was not kept, try again in a moment";
/// What a cluster member is told when its node has as many strokes on their way to Redis as it
/// may (Redis, or the machine, cannot keep up with what is drawn).
const SATURATED_NOTICE: &str = "the server is saving strokes as fast as it can; this stroke was \
    not kept, try again in a moment";
/// Why a cluster node refuses joins while it cannot reach Redis.
pub(crate) const UNREACHABLE_REASON: &str = "the server cannot reach its shared store; try again";
/// A cluster node that was refused a room's checkpoint lease asks again no sooner than this.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// What the members are told, once, when the store stops writing.
const UNSTORED_NOTICE: &str = "the server cannot save drawings right now; strokes are kept in \
    memory and saved as soon as it can, and drawing pauses if too many are waiting";
/// What a member whose stroke was refused is told.
const REFUSED_NOTICE: &str = "the server cannot save drawings right now and has as many waiting \
    as it may keep; this stroke was not kept, try again in a moment";

/// A newcomer's operations after its picture up to this many go one by one (directly to its
/// socket when they can); more go in one message.
const FEW_OPS_AFTER_PICTURE: usize = 64;

/// Count updates go out at most this often: the first change at once, later ones gathered, so
/// that a crowd joining at once costs a few frames per member, not one per join.
const CLIENT_COUNT_INTERVAL: Duration = Duration::from_millis(100);

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
        }
    }

    fn cluster(&self) -> Option<Cluster> {
        self.shared.as_ref().map(|shared| shared.cluster.clone())
    }

    fn member(&self, id: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Queues a frame for a member without ever waiting; a member whose queue is full is evicted.
    /// Queues a frame for a member without ever waiting; a member whose queue is full is evicted.
    /// An unbatched member on this thread whose socket has nothing else waiting gets it written
    /// directly, with whatever else the room has for it this turn (see `direct`).
    fn deliver(member: &Member, frame: ByteString, to_write: &ToWrite, ctx: &mut Context<Self>) {
        if let Some(direct) = member.direct().filter(|_| !member.batched) {
            if let Some(first) = direct.gather(&frame) {
                if first {
                    let mut to_write = to_write.borrow_mut();
                    if to_write.is_empty() {
                        ctx.notify(WriteGathered);
                    }
                    to_write.push((member.id, Rc::downgrade(&direct)));
                }
                return;
            }
        }
        if !member.try_tell(Deliver(frame)) {
            ctx.notify(Evict { id: member.id });
        }
    }

    /// Like `deliver`, for a batched member's tick frame.
    fn deliver_tick(member: &Member, frame: ByteString, ctx: &mut Context<Self>) {
        if !member.try_tell(DeliverTick(frame)) {
            ctx.notify(Evict { id: member.id });
        }
    }

    /// Tells member `to` why what it sent was not taken (and counts it).
    fn reject(&self, to: Uuid, rejection: &Rejection, ctx: &mut Context<Self>) {
        self.stats
            .errors
            .with_label_values(&[rejection.code.as_str()])
            .inc();
        self.send_to(to, &rejection.to_server_message(), ctx);
    }

    fn send_to(&self, id: Uuid, message: &ServerMessage<'_>, ctx: &mut Context<Self>) {
        if let Some(member) = self.member(id) {
            let frame = message.encode();
            self.count_out(message.kind(), &frame, 1);
            Self::deliver(member, frame, &self.to_write, ctx);
        }
    }

    /// One encoding, shared by every recipient; returned for the record. Unbatched members get it
    /// now, batched ones at the end of the tick.
    fn broadcast(
        &mut self,
        message: &ServerMessage<'_>,
        except: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) -> ByteString {
        let frame = message.encode();
        self.broadcast_frame(message.kind(), frame, except, ctx)
    }

    /// Like `broadcast`, for a frame already encoded (one Redis relayed).
    fn broadcast_frame(
        &mut self,
        kind: &'static str,
        frame: ByteString,
        except: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) -> ByteString {
        let mut recipients = 0;
        let mut batched = false;
        for member in self.members.iter().filter(|m| Some(m.id) != except) {
            if member.batched {
                batched = true;
            } else {
                Self::deliver(member, frame.clone(), &self.to_write, ctx);
            }
            recipients += 1;
        }
        self.count_out(kind, &frame, recipients);
        if batched {
            self.queue_for_tick(frame.clone(), except, ctx);
        }
        frame
    }

    fn queue_for_tick(&mut self, frame: ByteString, sender: Option<Uuid>, ctx: &mut Context<Self>) {
        self.tick.frames.push(frame);
        self.tick.senders.push(sender);
        if !self.tick.scheduled {
            self.tick.scheduled = true;
            ctx.run_later(self.settings.batch_tick, |room, ctx| room.flush_tick(ctx));
        }
    }

    /// Ends the tick: one frame, built once, for every batched member that sent nothing in it and
    /// was there from its start; a frame of its own for each of the others.
    fn flush_tick(&mut self, ctx: &mut Context<Self>) {
        self.tick.scheduled = false;
        let frames = std::mem::take(&mut self.tick.frames);
        let senders = std::mem::take(&mut self.tick.senders);
        let mut sent_something: Vec<Uuid> = senders.iter().flatten().copied().collect();
        sent_something.sort_unstable();
        sent_something.dedup();
        let mut shared: Option<Option<ByteString>> = None;
        for member in self.members.iter_mut().filter(|m| m.batched) {
            let from = std::mem::take(&mut member.tick_from);
            let frame = if from == 0 && sent_something.binary_search(&member.id).is_err() {
                shared.get_or_insert_with(|| batch_frame(&frames)).clone()
            } else {
                let id = Some(member.id);
                let theirs = frames[from.min(frames.len())..]
                    .iter()
                    .zip(&senders[from.min(senders.len())..])
                    .filter(|&(_, &sender)| sender != id)
                    .map(|(frame, _)| frame);
                batch_frame(theirs)
            };
            if let Some(frame) = frame {
                Self::deliver_tick(member, frame, ctx);
            }
        }
    }

    fn count_out(&self, kind: &str, frame: &ByteString, recipients: u64) {
        self.stats
            .messages_out
            .with_label_values(&[kind])
            .inc_by(recipients);
        self.stats.bytes_out.inc_by(frame.len() as u64 * recipients);
        self.stats
            .bytes_out_by_type
            .with_label_values(&[kind])
            .inc_by(frame.len() as u64 * recipients);
    }

    fn count_changed(&mut self, ctx: &mut Context<Self>) {
        self.count_dirty = true;
        self.announce(ctx);
    }

    fn announce(&mut self, ctx: &mut Context<Self>) {
        self.announce_except(None, ctx);
    }

    /// Sends the count (when members came or went) and what changed in the presence list,
    /// coalesced: at once if nothing went out in the last `CLIENT_COUNT_INTERVAL`, else once it
    /// ends, with whatever changed meanwhile. A `newcomer` is left out of the change: it is sent
    /// the whole list next.
    fn announce_except(&mut self, newcomer: Option<Uuid>, ctx: &mut Context<Self>) {
        if self.count_throttled {
            self.count_stale = true;
            return;
        }
        if self.shared.is_some() {
            self.count_dirty = false;
            self.publish_presence(ctx);
        } else {
            if std::mem::take(&mut self.count_dirty) {
                let count = ServerMessage::ClientCount {
                    client_count: self.members.len(),
                };
                self.broadcast(&count, None, ctx);
            }
            let listed = self.local_roster();
            if let Some(change) = self.shown.update(listed, self.members.len()) {
                self.broadcast_frame("presenceChange", change, newcomer, ctx);
            }
        }
        self.count_throttled = true;
        ctx.run_later(CLIENT_COUNT_INTERVAL, |room, ctx| {
            room.count_throttled = false;
            if std::mem::take(&mut room.count_stale) {
                room.announce(ctx);
            }
        });
    }

    /// This node's members as `presence` lists them (capped), and how many there are.
    fn local_roster(&self) -> Vec<crate::protocol::PresenceMember> {
        presence::roster(self.members.iter().map(|m| (m.id, &m.identity)))
    }

    /// A newcomer gets the list the others were shown, whole, right after its welcome (and its
    /// count): it lists the newcomer unless announcements are throttled, and the next
    /// `presenceChange` applies to it as to everyone.
    fn presence_for_newcomer(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let frame = self.shown.full_frame();
        if let Some(member) = self.member(id) {
            self.count_out("presence", &frame, 1);
            Self::deliver(member, frame, &self.to_write, ctx);
        }
    }

    /// Sends the cursors of the tick that ends: to the members here (never to their owner) and,
    /// in a cluster, to the other nodes in one message.
    fn flush_cursors(&mut self, ctx: &mut Context<Self>) {
        let moved = self.cursors.take();
        if moved.is_empty() {
            return;
        }
        if let Some(cluster) = self.cluster() {
            let payload = presence::cursors_payload(moved.iter().map(|(_, frame)| frame));
            cluster.publish_cursors(&self.name, payload);
        }
        for (from, frame) in moved {
            self.broadcast_frame("cursor", frame, Some(from), ctx);
        }
    }

    /// Takes a member out of the room: its pending asks move on, the others hear the new count.
    fn remove_member(&mut self, id: Uuid, ctx: &mut Context<Self>) -> Option<Member> {
        let index = self.members.iter().position(|m| m.id == id)?;
        let member = self.members.remove(index);
        self.population.store(self.members.len(), Ordering::Relaxed);
        self.pending.retain(|p| p.newcomer != id);
        self.cursors.forget(id);
        // Newcomers who were waiting on the leaver go to the next peer at once.
        let (orphaned, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.asked == id);
        self.pending = kept;
        for pending in orphaned {
            self.ask_next_peer(pending.newcomer, pending.tried, ctx);
        }
        self.count_changed(ctx);
        self.idle_if_empty();
        Some(member)
    }

    fn is_waiting(&self, id: Uuid) -> bool {
        self.pending.iter().any(|p| p.newcomer == id)
    }

    /// Asks the next peer that has a complete picture and has not been asked for this newcomer yet;
    /// when there is none, the newcomer starts from a blank canvas.
    fn ask_next_peer(&mut self, newcomer: Uuid, mut tried: Vec<Uuid>, ctx: &mut Context<Self>) {
        let candidate = self
            .members
            .iter()
            .map(|m| m.id)
            .find(|&id| id != newcomer && !tried.contains(&id) && !self.is_waiting(id));
        let Some(peer) = candidate else {
            let empty = ServerMessage::CanvasEmpty {
                client_id: newcomer,
            };
            self.send_to(newcomer, &empty, ctx);
            return;
        };
        tried.push(peer);
        self.next_ask_id += 1;
        let ask_id = self.next_ask_id;
        self.pending.push(PendingSnapshot {
            newcomer,
            asked: peer,
            tried,
            ask_id,
        });
        if let Some(member) = self.member(peer) {
            member.tell(RequestSnapshot { newcomer });
        }
        ctx.run_later(self.settings.snapshot_timeout, move |room, ctx| {
            room.snapshot_timed_out(newcomer, ask_id, ctx)
        });
    }

    fn snapshot_timed_out(&mut self, newcomer: Uuid, ask_id: u64, ctx: &mut Context<Self>) {
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.newcomer == newcomer && p.ask_id == ask_id)
        else {
            return; // answered, or the newcomer left
        };
        let pending = self.pending.swap_remove(index);
        if let Some(member) = self.member(pending.asked) {
            member.tell(WithdrawSnapshotRequest);
        }
        log::debug!(
            "room={} client={} did not send the snapshot for {} in time",
            self.name,
            pending.asked,
            newcomer
        );
        self.ask_next_peer(newcomer, pending.tried, ctx);
    }

    fn refuse_snapshot(&self, from: Uuid, ctx: &mut Context<Self>) {
        let rejection = Rejection {
            code: ErrorCode::UnexpectedSnapshot,
            field: None,
            message: "no canvasRequest for that client is waiting on you".into(),
            stroke_id: None,
        };
        self.reject(from, &rejection, ctx);
    }

    fn loaded(&mut self, result: Result<Restored, LoadError>, ctx: &mut Context<Self>) {
        match result {
            Ok(restored) => {
                self.last_seq = restored.last_seq;
                if restored.replayed > 0 && !restored.picture.blank && self.shared.is_none() {
                    // Fold what a crash or stop left after the checkpoint into a new one.
                    self.store_checkpoint(&restored.picture);
                }
                self.picture = restored.picture;
                self.history = restored.history;
                self.recorded = restored
                    .tail
                    .into_iter()
                    .map(|stored| Recorded {
                        seq: stored.seq,
                        op: stored.op,
                        frame: ByteString::from(stored.json),
                    })
                    .collect();
                self.unsettled = self.recorded.len();
                self.count_stored_bytes();
                self.arm_idle_checkpoint(ctx);
                self.availability = Availability::Ready;
                if self.shared.is_some() {
                    // Every node refreshes its entry each heartbeat, so that one that died drops
                    // out of the count when its entry expires.
                    ctx.run_interval(self.settings.heartbeat_interval, |room, ctx| {
                        if !room.members.is_empty() {
                            room.publish_presence(ctx);
                        }
                    });
                }
            }
            Err(err @ LoadError::Store(StoreError::Redis { .. })) => {
                log::error!("room={} cannot be opened now: {err}", self.name);
                self.availability = Availability::Refused {
                    code: CloseCode::Again,
                    reason: UNREACHABLE_REASON,
                };
            }
            Err(LoadError::Store(StoreError::TooManyRooms { limit })) => {
                log::warn!(
                    "room={} refused: {limit} rooms are stored (--max-stored-rooms)",
                    self.name
                );
                self.availability = Availability::Refused {
                    code: CloseCode::Again,
                    reason: "the server keeps as many rooms as it may; join an existing room",
                };
            }
            Err(err @ (LoadError::Render(RenderFailed::Busy) | LoadError::TimedOut)) => {
                log::error!("room={} cannot be opened now: {err}", self.name);
                self.availability = Availability::Refused {
                    code: CloseCode::Again,
                    reason: "the server is too busy to open this room; try again",
                };
            }
            Err(err) => {
                log::error!(
                    "room={} cannot be opened: {err}; its stored data is left as it is",
                    self.name
                );
                self.availability = Availability::Refused {
                    code: CloseCode::Error,
                    reason: "this room's saved canvas could not be read",
                };
            }
        }
    }

    /// Whether an operation may be accepted now: not while the store holds as much as it may
    /// (the sender is told, now and then). Nothing refused is relayed or kept.
    fn storable(&mut self, from: Uuid, ctx: &mut Context<Self>) -> bool {
        let notice = if self.store.health().must_refuse() {
            if self.shared.is_some() {
                UNREACHABLE_REFUSED_NOTICE
            } else {
                REFUSED_NOTICE
            }
        } else if self.shared.as_ref().is_some_and(|s| s.cluster.saturated()) {
            SATURATED_NOTICE
        } else {
            return true;
        };
        self.refuse_now_and_then(from, notice, ctx);
        false
    }

    /// Tells `from` that its stroke was not kept, at most once per `REFUSAL_NOTICE_INTERVAL`
    /// (a member who keeps drawing is not sent one error per stroke).
    fn refuse_now_and_then(&mut self, from: Uuid, notice: &str, ctx: &mut Context<Self>) {
        let Some(member) = self.members.iter_mut().find(|m| m.id == from) else {
            return;
        };
        if member
            .refused_at
            .is_some_and(|at| at.elapsed() < REFUSAL_NOTICE_INTERVAL)
        {
            return;
        }
        member.refused_at = Some(Instant::now());
        self.reject(from, &Rejection::storage_unavailable(notice), ctx);
    }

    /// Tells every member, once per outage, that what they draw is not on disk yet.
    fn warn_if_unstored(&mut self, ctx: &mut Context<Self>) {
        let failing = self.store.health().is_failing();
        if failing && !self.told_unstorable {
            let notice = if self.shared.is_some() {
                UNREACHABLE_NOTICE
            } else {
                UNSTORED_NOTICE
            };
            let rejection = Rejection::storage_unavailable(notice);
            self.stats
                .errors
                .with_label_values(&[rejection.code.as_str()])
                .inc_by(self.members.len() as u64);
            self.broadcast(&rejection.to_server_message(), None, ctx);
        }
        self.told_unstorable = failing;
    }

    /// Accepts an operation: stored, and kept until the next checkpoint covers it.
    fn record(&mut self, op: Op, meta: Option<Meta>, frame: ByteString, ctx: &mut Context<Self>) {
        let seq = self.last_seq + 1;
        self.store
            .append(&self.name, seq, stored_form(meta.as_ref(), &frame));
        self.keep(seq, op, meta, frame, ctx);
    }

    /// Keeps operation `seq` until a checkpoint covers it.
    fn keep(
        &mut self,
        seq: u64,
        op: Op,
        meta: Option<Meta>,
        frame: ByteString,
        ctx: &mut Context<Self>,
    ) {
        self.last_seq = seq;
        self.stored_bytes += frame.len() as u64;
        self.history.record(seq, &op, meta.as_ref());
        // A clear nobody can undo makes everything before it moot: checkpoint at once.
        let final_clear = matches!(op, Op::Clear(None));
        self.recorded.push(Recorded { seq, op, frame });
        self.last_op_at = Instant::now();
        self.warn_if_unstored(ctx);
        if final_clear
            || self.recorded.len() >= self.unsettled + self.settings.storage.checkpoint_ops
        {
            self.start_checkpoint(ctx);
        }
        self.arm_idle_checkpoint(ctx);
    }

    /// Takes member `from`'s operation (`frame` is its message): checked against the undo
    /// history, then handed to Redis in a cluster, or else broadcast to the others and recorded.
    /// Whether it was broadcast here.
    fn accept(
        &mut self,
        from: Uuid,
        op: Op,
        meta: Option<Meta>,
        frame: ByteString,
        ctx: &mut Context<Self>,
    ) -> bool {
        if !self.admissible(from, &op, meta.as_ref(), ctx) {
            return false;
        }
        if let Some(cluster) = self.cluster() {
            self.publish(cluster, from, stored_form(meta.as_ref(), &frame), ctx);
            return false;
        }
        let frame = self.broadcast_frame(op.kind(), frame, Some(from), ctx);
        self.record(op, meta, frame, ctx);
        true
    }

    /// Whether `op` from `author` may be the room's next operation (undo rights, stroke ids);
    /// the sender is told why not.
    fn admissible(
        &self,
        from: Uuid,
        op: &Op,
        meta: Option<&Meta>,
        ctx: &mut Context<Self>,
    ) -> bool {
        match self.history.check(self.last_seq + 1, op, meta) {
            Ok(()) => true,
            Err(rejection) => {
                self.reject(from, &rejection, ctx);
                false
            }
        }
    }

    /// How many of `recorded` a checkpoint may bake now (nothing that may still be undone).
    fn settled_count(&self) -> usize {
        let ops: Vec<(u64, &Op)> = self.recorded.iter().map(|r| (r.seq, &r.op)).collect();
        self.history.settled_count(&ops, history::now_ms())
    }

    /// Checkpoints once drawing has paused for `--checkpoint-idle`. Armed by drawing, not
    /// periodic: a thousand quiet rooms each waking every two seconds to find nothing to do were
    /// among the wake-ups that made context switches a quarter of an idle server's CPU.
    fn arm_idle_checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.idle_check_armed {
            return;
        }
        self.idle_check_armed = true;
        let every = self.settings.storage.checkpoint_idle;
        let quiet = self.last_op_at.elapsed();
        let wait = if quiet < every { every - quiet } else { every };
        ctx.run_later(wait, move |room, ctx| {
            room.idle_check_armed = false;
            if room.recorded.is_empty() {
                return;
            }
            if room.settled_count() == 0 {
                // Everything left may still be undone: wake when time settles the oldest stroke
                // (count and depth settle it only with new operations, which arm this again).
                return room.arm_settling(ctx);
            }
            if room.last_op_at.elapsed() >= every {
                room.start_checkpoint(ctx);
            }
            // Until a checkpoint covers everything settled (one may be rendering, or have failed).
            room.arm_idle_checkpoint(ctx);
        });
    }

    /// Checkpoints when the oldest stroke's undo window ends, if nothing else does first. Apart
    /// from the idle timer, so that new drawing (which may settle strokes by count) still gets
    /// its idle checkpoint meanwhile.
    fn arm_settling(&mut self, ctx: &mut Context<Self>) {
        if self.settling_armed {
            return;
        }
        let Some(at_ms) = self.history.next_settling_at_ms() else {
            return;
        };
        self.settling_armed = true;
        let wait = Duration::from_millis(at_ms.saturating_sub(history::now_ms()));
        ctx.run_later(wait, |room, ctx| {
            room.settling_armed = false;
            room.arm_idle_checkpoint(ctx);
        });
    }

    /// Renders a new checkpoint from the last one and the operations since, on a blocking thread.
    fn start_checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.composing || self.recorded.is_empty() {
            return;
        }
        if self.settled_count() == 0 {
            self.unsettled = self.recorded.len();
            return;
        }
        if let Some(shared) = &mut self.shared {
            // One node renders a cluster room's checkpoint: the one holding its lease. The
            // others adopt it when they hear it was stored.
            if shared
                .lease_asked_at
                .is_some_and(|at| at.elapsed() < LEASE_RETRY)
            {
                return;
            }
            shared.lease_asked_at = Some(Instant::now());
            let lease = shared.cluster.lease(&self.name);
            self.composing = true;
            ctx.spawn(lease.into_actor(self).map(|won, room, ctx| {
                room.composing = false;
                if won {
                    room.render_and_checkpoint(ctx);
                }
            }));
            return;
        }
        self.render_and_checkpoint(ctx);
    }

    fn render_and_checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.composing || self.recorded.is_empty() {
            return;
        }
        let Some(render) = self.render_checkpoint() else {
            return;
        };
        self.composing = true;
        log::debug!(
            "room={} checkpointing {} operations",
            self.name,
            self.recorded.len()
        );
        ctx.spawn(render.into_actor(self).map(|result, room, ctx| {
            room.composing = false;
            match result {
                Ok(Ok(picture)) => room.checkpointed(picture, ctx),
                Ok(Err(err)) => log::error!("room={} checkpoint failed: {err}", room.name),
                Err(err) => log::error!("room={} checkpoint not rendered: {err}", room.name),
            }
        }));
    }

    /// The next checkpoint, rendered off this thread: the last one with every settled operation
    /// since (`None`: nothing is settled yet). Strokes undone by then are left out for good.
    fn render_checkpoint(
        &self,
    ) -> Option<
        impl std::future::Future<Output = Result<Result<Picture, CanvasError>, RenderFailed>> + 'static,
    > {
        let settled = self.settled_count();
        let last = self.recorded.get(settled.checked_sub(1)?)?;
        let base = self.picture.clone();
        let all: Vec<Op> = self.recorded.iter().map(|r| r.op.clone()).collect();
        let (seq, size) = (last.seq, self.settings.canvas);
        Some(picture::render_off_thread(
            Priority::Background,
            move || {
                let hidden = picture::undone(&all);
                picture::compose(&base, &all[..settled], &hidden, seq, size)
            },
        ))
    }

    fn checkpointed(&mut self, picture: Picture, ctx: &mut Context<Self>) {
        self.store_checkpoint(&picture);
        self.adopt(picture);
        self.unsettled = self.recorded.len().saturating_sub(self.settled_count());
        if self.recorded.len() >= self.unsettled + self.settings.storage.checkpoint_ops {
            self.start_checkpoint(ctx);
        }
    }

    /// Takes `picture` as the room's checkpoint: the operations it covers are dropped.
    fn adopt(&mut self, picture: Picture) {
        self.recorded.retain(|r| r.seq > picture.seq);
        self.history.forget_through(picture.seq);
        self.picture = picture;
        self.count_stored_bytes();
    }

    fn count_stored_bytes(&mut self) {
        self.stored_bytes = self.picture.stored_len()
            + self
                .recorded
                .iter()
                .map(|r| r.frame.len() as u64)
                .sum::<u64>();
    }

    fn store_checkpoint(&self, picture: &Picture) {
        let size = self.settings.canvas;
        self.store.checkpoint(
            &self.name,
            picture.seq,
            size.width,
            size.height,
            picture.png.to_vec(),
        );
    }

    /// What the canvas is now: whether it starts blank (no picture, or a clear nobody can undo
    /// since), and the operations to draw over that start (undone ones and their undos included:
    /// a newcomer may see them redone).
    fn current(&self) -> (bool, &[Recorded]) {
        match self
            .recorded
            .iter()
            .rposition(|r| matches!(r.op, Op::Clear(None)))
        {
            Some(index) => (true, &self.recorded[index + 1..]),
            None => (self.picture.blank, &self.recorded[..]),
        }
    }

    /// Nothing visible: no picture and nothing drawn since, or a clear with nothing after it.
    fn is_blank(&self) -> bool {
        let (from_blank, since) = self.current();
        from_blank && since.is_empty()
    }

    /// Sends a newcomer the room as it stands: the checkpoint (or `canvasEmpty`), then every
    /// operation after it, in order, before anything live.
    fn send_picture(&self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(member) = self.member(id) else {
            return;
        };
        let (from_blank, since) = self.current();
        let (first, frame) = if from_blank {
            let empty = ServerMessage::CanvasEmpty { client_id: id };
            let frame = empty.encode();
            (empty, frame)
        } else {
            let state = ServerMessage::CanvasState {
                client_id: id,
                data: &self.picture.data_url,
            };
            let frame = canvas_state_frame(id, &self.picture.data_url);
            (state, frame)
        };
        self.count_out(first.kind(), &frame, 1);
        Self::deliver(member, frame, &self.to_write, ctx);
        if since.len() <= FEW_OPS_AFTER_PICTURE {
            for recorded in since {
                Self::deliver(member, recorded.frame.clone(), &self.to_write, ctx);
            }
            return;
        }
        // Thousands of undoable operations would not fit the member's mailbox one by one.
        let frames = since.iter().map(|r| r.frame.clone()).collect();
        if !member.try_tell(DeliverMany(frames)) {
            ctx.notify(Evict { id: member.id });
        }
    }

    /// A join the room cannot take: the newcomer is closed, and an empty room lets the registry
    /// stop it so that the next join starts afresh.
    fn refuse_join(&self, join: Join, code: CloseCode, reason: &'static str) {
        let _ = join.answer.send(JoinAnswer::Refused { code, reason });
        self.idle_if_empty();
    }

    /// Tells the registry that the room is empty, so that it stops the room unless a join is on
    /// its way.
    fn idle_if_empty(&self) {
        if self.members.is_empty() {
            self.registry.do_send(RoomIdle {
                room: self.name.clone(),
                joins_seen: self.joins_seen,
            });
        }
    }

    fn refuse_draw(&self, from: Uuid, ctx: &mut Context<Self>) {
        let rejection = Rejection::room_full(format!(
            "this room's canvas is at its size limit ({} bytes); clear it to draw again",
            self.settings.storage.max_room_bytes
        ));
        self.reject(from, &rejection, ctx);
    }
}

/// A cluster room: operations go to Redis first and are applied in the order Redis gives them,
/// on every node alike (this one included, when they come back on the room's channel).
impl CanvasServer {
    /// Hands an accepted operation to Redis. Nothing is relayed or kept here until it comes
    /// back numbered; if Redis does not take it, the sender is told it was not kept.
    fn publish(
        &mut self,
        cluster: Cluster,
        from: Uuid,
        frame: ByteString,
        ctx: &mut Context<Self>,
    ) {
        let append = cluster.append(&self.name, Some(from), &frame);
        ctx.spawn(append.into_actor(self).map(move |result, room, ctx| {
            if let Err(err) = result {
                log::warn!("room={} client={from} stroke not kept: {err}", room.name);
                room.refuse_now_and_then(from, UNREACHABLE_REFUSED_NOTICE, ctx);
            }
        }));
    }

    /// Takes the next operation in Redis's order; one out of order means some were missed.
    fn follow(&mut self, op: RelayedOp, ctx: &mut Context<Self>) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        if shared.catching_up {
            shared.early.push(op);
        } else if op.seq <= self.last_seq {
            // Already applied (read while catching up, or with the picture).
        } else if op.seq == self.last_seq + 1 {
            self.apply(op, ctx);
        } else {
            shared.early.push(op);
            self.catch_up(ctx);
        }
    }

    fn apply(&mut self, relayed: RelayedOp, ctx: &mut Context<Self>) {
        match picture::parse_stored_op(&relayed.frame) {
            Ok((op, meta, json)) => {
                let json = relayed.frame.slice_ref(json);
                if let Err(rejection) = self.history.check(relayed.seq, &op, meta.as_ref()) {
                    // Lost a race on another node (its stroke settled, or was taken): every node
                    // leaves it out alike, and its sender, if here, is told.
                    if let Some(from) = relayed.from {
                        self.reject(from, &rejection, ctx);
                    }
                    self.last_seq = relayed.seq;
                    return;
                }
                let frame = self.broadcast_frame(op.kind(), json, relayed.from, ctx);
                self.keep(relayed.seq, op, meta, frame, ctx);
            }
            Err(why) => {
                // Not ours to repair; skipping it keeps the order of everything after it.
                log::error!(
                    "room={} operation {} from Redis is unreadable ({why}); skipped",
                    self.name,
                    relayed.seq
                );
                self.last_seq = relayed.seq;
            }
        }
    }

    /// Reads what the room's channel missed (after a reconnection, or a gap) and applies it,
    /// then whatever arrived meanwhile.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        if shared.catching_up {
            return;
        }
        shared.catching_up = true;
        let after = shared.cluster.after(&self.name, self.last_seq);
        ctx.spawn(after.into_actor(self).map(|result, room, ctx| {
            let Some(shared) = &mut room.shared else {
                return;
            };
            shared.catching_up = false;
            match result {
                Ok(CatchUp::Ops(ops)) => {
                    let mut early = std::mem::take(&mut shared.early);
                    early.sort_by_key(|op| op.seq);
                    for op in ops.into_iter().chain(early) {
                        room.follow(op, ctx);
                    }
                }
                Ok(CatchUp::Behind) => room.start_again("a checkpoint covers what it missed"),
                Ok(CatchUp::Ahead) => room.start_again("Redis has lost its last operations"),
                // Redis is gone again; its return brings another `Resync`.
                Err(err) => log::warn!("room={} cannot catch up: {err}", room.name),
            }
        }));
    }

    /// The room's members cannot be brought up to date in place: they reconnect (the page does
    /// by itself) and get the room as Redis has it, from a fresh room actor.
    fn start_again(&mut self, why: &str) {
        log::warn!("room={} starts again from Redis: {why}", self.name);
        self.availability = Availability::Refused {
            code: CloseCode::Again,
            reason: "the room is reloading; try again",
        };
        for member in std::mem::take(&mut self.members) {
            member.tell(Kick {
                code: CloseCode::Restart,
                reason: "the room is reloading from the cluster; reconnect",
                hand_over: false,
            });
        }
        self.population.store(0, Ordering::Relaxed);
        self.pending.clear();
        self.idle_if_empty();
    }

    /// Tells Redis how many members this node has here and who they are; the room-wide count
    /// and presence list come back.
    fn publish_presence(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let roster = serde_json::to_string(&self.local_roster()).unwrap_or_else(|_| "[]".into());
        let presence = cluster.presence(&self.name, self.members.len(), roster);
        ctx.spawn(
            presence
                .into_actor(self)
                .map(|result, room, ctx| match result {
                    Ok(answer) => {
                        room.show_count(answer.version, answer.total, ctx);
                        room.show_roster(answer.roster_version, &answer.rosters, ctx);
                    }
                    Err(err) => log::debug!("room={} count not published: {err}", room.name),
                }),
        );
    }

    /// Sends the members what changed in the room-wide presence list (`rosters`: every live
    /// node's list), unless they were shown it (or a newer one) already.
    fn show_roster(&mut self, version: u64, rosters: &str, ctx: &mut Context<Self>) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        if shared.shown_roster.is_some_and(|shown| version <= shown) {
            return;
        }
        let Some(members) = presence::merge_rosters(rosters) else {
            log::warn!(
                "room={}: an unreadable presence list was ignored",
                self.name
            );
            return;
        };
        shared.shown_roster = Some(version);
        let counted = shared.shown_count.map_or(0, |(_, total)| total);
        let total = usize::try_from(counted)
            .unwrap_or(usize::MAX)
            .max(members.len());
        if let Some(change) = self.shown.update(members, total) {
            self.broadcast_frame("presenceChange", change, None, ctx);
        }
    }

    /// Cursors another node gathered in one tick: relayed to the members here as they are.
    fn show_remote_cursors(
        &mut self,
        node: &str,
        frames: Vec<ByteString>,
        ctx: &mut Context<Self>,
    ) {
        if self.cluster().is_none_or(|cluster| cluster.node() == node) {
            return; // this node's own, already delivered here
        }
        for frame in frames {
            self.broadcast_frame("cursor", frame, None, ctx);
        }
    }

    /// Sends the members the room-wide count, unless they have it (or a newer one) already.
    fn show_count(&mut self, version: u64, total: u64, ctx: &mut Context<Self>) {
        let Some(shared) = &mut self.shared else {
            return;
        };
        match shared.shown_count {
            Some((shown, _)) if version < shown => return,
            Some(shown) if shown == (version, total) && !shared.count_owed => return,
            _ => {}
        }
        shared.shown_count = Some((version, total));
        shared.count_owed = false;
        let count = ServerMessage::ClientCount {
            client_count: usize::try_from(total).unwrap_or(usize::MAX),
        };
        self.broadcast(&count, None, ctx);
    }

    /// Another node stored a checkpoint at `seq`: take it instead of rendering one here.
    fn adopt_checkpoint(&mut self, seq: u64, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if seq <= self.picture.seq || seq > self.last_seq || self.composing {
            return;
        }
        self.composing = true;
        let read = cluster.stored_checkpoint(&self.name);
        let size = self.settings.canvas;
        let limits = self.settings.storage.undo;
        let restore = async move {
            let (checkpoint_seq, png) = read.await.map_err(|err| err.to_string())?;
            let stored = StoredRoom {
                checkpoint: (!png.is_empty()).then_some(png),
                checkpoint_seq,
                ..StoredRoom::default()
            };
            picture::render_off_thread(Priority::Background, move || {
                picture::restore(&stored, size, limits, history::now_ms())
            })
            .await
            .map_err(|err| err.to_string())?
        };
        ctx.spawn(restore.into_actor(self).map(|result, room, _ctx| {
            room.composing = false;
            match result {
                Ok(restored)
                    if restored.picture.seq > room.picture.seq
                        && restored.picture.seq <= room.last_seq =>
                {
                    room.adopt(restored.picture)
                }
                Ok(_) => {}
                Err(why) => log::warn!("room={} stored checkpoint not taken: {why}", room.name),
            }
        }));
    }
}

impl Handler<Relayed> for CanvasServer {
    type Result = ();

    fn handle(&mut self, relayed: Relayed, ctx: &mut Context<Self>) {
        if !matches!(self.availability, Availability::Ready) {
            return;
        }
        match relayed {
            Relayed::Op { seq, from, frame } => self.follow(RelayedOp { seq, from, frame }, ctx),
            Relayed::Count { version, total } => self.show_count(version, total, ctx),
            Relayed::Roster { version, rosters } => self.show_roster(version, &rosters, ctx),
            Relayed::Cursors { node, frames } => self.show_remote_cursors(&node, frames, ctx),
            Relayed::Checkpoint(seq) => self.adopt_checkpoint(seq, ctx),
            Relayed::Resync => {
                self.warn_if_unstored(ctx);
                self.catch_up(ctx);
                self.publish_presence(ctx);
            }
            Relayed::Lost => self.warn_if_unstored(ctx),
        }
    }
}

/// What the store keeps of an operation: its frame, after its meta when it has one.
fn stored_form(meta: Option<&Meta>, frame: &ByteString) -> ByteString {
    match meta {
        None => frame.clone(),
        Some(_) => ByteString::from(Meta::stored(meta, frame)),
    }
}

/// `{"type":"canvasState","clientId":…,"data":…}` made by joining strings: the data URL is megabytes
/// of base64, which needs no escaping, so there is no need to run the JSON encoder over it per
/// newcomer.
fn canvas_state_frame(client_id: Uuid, data_url: &str) -> ByteString {
    const HEAD: &str = r#"{"type":"canvasState","clientId":""#;
    const MIDDLE: &str = r#"","data":""#;
    const TAIL: &str = r#""}"#;
    let mut frame = String::with_capacity(HEAD.len() + 36 + MIDDLE.len() + data_url.len() + 2);
    frame.push_str(HEAD);
    frame.push_str(&client_id.hyphenated().to_string());
    frame.push_str(MIDDLE);
    frame.push_str(data_url);
    frame.push_str(TAIL);
    ByteString::from(frame)
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
            let stored = store.load(name).await.map_err(LoadError::Store)?;
            if !picture::needs_render(&stored) {
                return picture::restore(&stored, size, limits, history::now_ms())
                    .map_err(LoadError::Damaged);
            }
            picture::render_off_thread(Priority::Foreground, move || {
                picture::restore(&stored, size, limits, history::now_ms())
            })
            .await
            .map_err(LoadError::Render)?
            .map_err(LoadError::Damaged)
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

impl Handler<WriteGathered> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: WriteGathered, ctx: &mut Context<Self>) {
        let mut to_write = std::mem::take(&mut *self.to_write.borrow_mut());
        for (id, direct) in to_write.drain(..) {
            let Some(direct) = direct.upgrade() else {
                continue; // its session has ended
            };
            if let Written::Rest(rest) = direct.write_gathered() {
                // The socket is full: the rest waits in the session's writer, before anything
                // else, and the session's queue decides whether this member keeps up.
                if let Some(member) = self.member(id) {
                    if !member.try_tell(DeliverRest(rest)) {
                        ctx.notify(Evict { id });
                    }
                }
            }
        }
        *self.to_write.borrow_mut() = to_write;
    }
}

impl Handler<Join> for CanvasServer {
    type Result = ();

    fn handle(&mut self, join: Join, ctx: &mut Context<Self>) {
        self.joins_seen += 1;
        if self.closing {
            return self.refuse_join(join, CloseCode::Away, "server restarting");
        }
        if let Availability::Refused { code, reason } = self.availability {
            return self.refuse_join(join, code, reason);
        }
        if self.members.len() >= self.settings.max_clients_per_room {
            return self.refuse_join(join, CloseCode::Again, "the room is full");
        }
        if self.shared.is_some() && self.store.health().is_failing() {
            return self.refuse_join(join, CloseCode::Again, UNREACHABLE_REASON);
        }
        let from_server = self.settings.newcomer_picture == PictureSource::Server;
        let awaiting_snapshot = from_server || !self.members.is_empty();
        let welcome = ServerMessage::Welcome {
            client_id: join.id,
            room: &self.name,
            width: self.settings.canvas.width,
            height: self.settings.canvas.height,
            awaiting_snapshot,
            read_only: join.read_only,
        };
        if join
            .answer
            .send(JoinAnswer::Welcome(welcome.encode()))
            .is_err()
        {
            // The session gave up waiting (or is gone): it is not a member.
            log::warn!(
                "room={} client={} left before its join was answered",
                self.name,
                join.id
            );
            return self.idle_if_empty();
        }
        self.members.push(Member {
            id: join.id,
            session: join.session,
            batched: join.batched,
            // Broadcasts before the join are not for it (in server mode its picture holds them).
            tick_from: self.tick.frames.len(),
            refused_at: None,
            direct: direct::find(join.id),
            identity: Identity::default_for(join.id),
        });
        self.population.store(self.members.len(), Ordering::Relaxed);
        if let Some(shared) = &mut self.shared {
            shared.count_owed = true;
        }
        self.count_dirty = true;
        self.announce_except(Some(join.id), ctx);
        self.presence_for_newcomer(join.id, ctx);
        if from_server {
            self.send_picture(join.id, ctx);
        } else if awaiting_snapshot {
            self.ask_next_peer(join.id, Vec::new(), ctx);
        }
    }
}

impl Handler<Leave> for CanvasServer {
    type Result = ();

    fn handle(&mut self, leave: Leave, ctx: &mut Context<Self>) {
        self.remove_member(leave.id, ctx);
    }
}

impl Handler<Evict> for CanvasServer {
    type Result = ();

    fn handle(&mut self, evict: Evict, ctx: &mut Context<Self>) {
        if let Some(member) = self.remove_member(evict.id, ctx) {
            log::warn!(
                "room={} client={} evicted: it stopped reading",
                self.name,
                evict.id
            );
            member.tell(Kick {
                code: CloseCode::Policy,
                reason: "too slow: stopped reading",
                hand_over: false,
            });
        }
    }
}

impl Handler<Draw> for CanvasServer {
    type Result = ();

    fn handle(&mut self, draw: Draw, ctx: &mut Context<Self>) {
        if self.stored_bytes >= self.settings.storage.max_room_bytes {
            return self.refuse_draw(draw.from, ctx);
        }
        if !self.storable(draw.from, ctx) {
            return;
        }
        let meta = draw
            .segment
            .stroke_id
            .is_some()
            .then(|| Meta::now(draw.author));
        let frame = ServerMessage::Draw(&draw.segment).encode();
        if self.accept(draw.from, Op::Draw(draw.segment), meta, frame, ctx) {
            self.stats
                .broadcast_seconds
                .observe(draw.received.elapsed().as_secs_f64());
        }
    }
}

impl Handler<Toggle> for CanvasServer {
    type Result = ();

    fn handle(&mut self, toggle: Toggle, ctx: &mut Context<Self>) {
        if !self.storable(toggle.from, ctx) {
            return;
        }
        let stroke_id = &toggle.stroke_id;
        let frame = if toggle.undo {
            ServerMessage::Undo { stroke_id }.encode()
        } else {
            ServerMessage::Redo { stroke_id }.encode()
        };
        let op = if toggle.undo {
            Op::Undo(toggle.stroke_id)
        } else {
            Op::Redo(toggle.stroke_id)
        };
        self.accept(toggle.from, op, Some(Meta::now(toggle.author)), frame, ctx);
    }
}

impl Handler<Clear> for CanvasServer {
    type Result = ();

    fn handle(&mut self, clear: Clear, ctx: &mut Context<Self>) {
        if !self.storable(clear.from, ctx) {
            return;
        }
        let meta = clear.stroke_id.is_some().then(|| Meta::now(clear.author));
        let frame = ServerMessage::Clear {
            stroke_id: clear.stroke_id.as_deref(),
        }
        .encode();
        self.accept(clear.from, Op::Clear(clear.stroke_id), meta, frame, ctx);
    }
}

impl Handler<SetName> for CanvasServer {
    type Result = ();

    fn handle(&mut self, set: SetName, ctx: &mut Context<Self>) {
        let Some(member) = self.members.iter_mut().find(|m| m.id == set.from) else {
            return;
        };
        if member.identity.name == set.name {
            return;
        }
        member.identity.name = set.name;
        self.announce(ctx);
    }
}

impl Handler<CursorMove> for CanvasServer {
    type Result = ();

    fn handle(&mut self, moved: CursorMove, ctx: &mut Context<Self>) {
        let Some(member) = self.member(moved.from) else {
            return;
        };
        let frame = presence::cursor_frame(moved.from, &member.identity, moved.x, moved.y);
        self.cursors.put(moved.from, frame);
        if !self.cursors.scheduled {
            self.cursors.scheduled = true;
            ctx.run_later(CURSOR_TICK, |room, ctx| room.flush_cursors(ctx));
        }
    }
}

impl Handler<SnapshotReply> for CanvasServer {
    type Result = ();

    fn handle(&mut self, reply: SnapshotReply, ctx: &mut Context<Self>) {
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.newcomer == reply.for_client && p.asked == reply.from)
        else {
            self.refuse_snapshot(reply.from, ctx);
            return;
        };
        self.pending.swap_remove(index);
        let state = ServerMessage::CanvasState {
            client_id: reply.for_client,
            data: &reply.data,
        };
        self.send_to(reply.for_client, &state, ctx);
    }
}

impl Handler<Shutdown> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if !self.members.is_empty() {
            return;
        }
        if let Some(cluster) = self.cluster() {
            // This node's members leave the room-wide count now, not when its entry expires.
            let presence = cluster.presence(&self.name, 0, String::new());
            actix::spawn(async move {
                let _ = presence.await;
            });
        }
        log::debug!(
            "room={} unloading: {} operations since the checkpoint, blank: {}",
            self.name,
            self.recorded.len(),
            self.is_blank()
        );
        if !matches!(self.availability, Availability::Ready) {
            return ctx.stop();
        }
        // A blank room frees its place on disk (unless an undo could bring something back).
        if self.is_blank() && !self.history.has_undoable(self.last_seq, history::now_ms()) {
            self.store.forget(&self.name, self.last_seq);
            return ctx.stop();
        }
        // With nothing on disk (--storage memory) the room's picture goes with it.
        if self.recorded.is_empty() || !self.store.keeps_pictures() {
            return ctx.stop();
        }
        // Every operation is already stored; folding them into a last checkpoint keeps what the
        // next load replays short. Nothing else is waiting on this room: the registry forgot it.
        // Spawned, not `wait`ed: an idle checkpoint may still be in flight, and a `wait` would
        // hold it (and whatever it holds) unpolled until this one finished (issue 12). The
        // spawned future keeps the actor alive until it ends.
        let Some(render) = self.render_checkpoint() else {
            // All of it may still be undone: it stays stored as operations.
            return ctx.stop();
        };
        ctx.spawn(render.into_actor(self).map(move |result, room, ctx| {
            match result {
                Ok(Ok(picture)) => room.store_checkpoint(&picture),
                Ok(Err(err)) => log::error!("room={} last checkpoint failed: {err}", room.name),
                Err(err) => log::error!("room={} last checkpoint not rendered: {err}", room.name),
            }
            ctx.stop();
        }));
    }
}

impl Handler<CloseAll> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: CloseAll, ctx: &mut Context<Self>) {
        self.closing = true;
        // What the members were sent before the close reaches them before it.
        self.flush_tick(ctx);
        self.pending.clear();
        for member in self.members.drain(..) {
            member.tell(Kick {
                code: CloseCode::Away,
                reason: "server restarting",
                hand_over: true,
            });
        }
    }
}

impl Handler<CurrentCanvas> for CanvasServer {
    type Result = MessageResult<CurrentCanvas>;

    fn handle(&mut self, _: CurrentCanvas, _ctx: &mut Context<Self>) -> Self::Result {
        if !matches!(self.availability, Availability::Ready) {
            return MessageResult(None);
        }
        let ops = self.recorded.iter().map(|r| r.op.clone()).collect();
        MessageResult(Some((self.picture.clone(), ops)))
    }
}

impl Handler<Drain> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_for_tests;
    use crate::protocol::Tool;

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

    /// Issue 12: a room emptied while its checkpoint waited for a render permit waited, in its
    /// `Shutdown`, for a permit of its own; the one its checkpoint then got was never used, and
    /// with the other permits busy the room (and the server's shutdown) never finished.
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
