//! `CanvasServer`: the actor that owns one room.
//!
//! It owns the room's member list, routes draws and clears to every member but the sender, keeps the
//! count up to date, and brokers a newcomer's picture from a peer (ask one, time out, ask the next,
//! give up with `canvasEmpty`). Every broadcast is encoded once and the same bytes go to each member.
//! It must never block, never wait on a member, and never trust a member's claim about who asked it
//! for a snapshot: only the peer it asked may answer, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use crate::config::Settings;
use crate::protocol::{ErrorCode, Rejection, Segment, ServerMessage};
use crate::registry::{RoomIdle, RoomRegistry};
use crate::session::{Deliver, Kick, RequestSnapshot, WithdrawSnapshotRequest, WsSession};
use crate::stats::Stats;
use actix_web_actors::ws::CloseCode;

/// A session enters the room. Sent by the registry only, so the registry can count joins.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: Uuid,
    pub session: Addr<WsSession>,
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
    pub segment: Segment,
    pub received: Instant,
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

struct Member {
    id: Uuid,
    session: Addr<WsSession>,
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

/// Count updates go out at most this often: the first change at once, later ones gathered, so
/// that a crowd joining at once costs a few frames per member, not one per join.
const CLIENT_COUNT_INTERVAL: Duration = Duration::from_millis(100);

pub struct CanvasServer {
    name: Arc<str>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    registry: Addr<RoomRegistry>,
    /// In join order: the longest-present member is asked for snapshots first.
    members: Vec<Member>,
    pending: Vec<PendingSnapshot>,
    joins_seen: u64,
    next_ask_id: u64,
    /// A count update went out less than `CLIENT_COUNT_INTERVAL` ago.
    count_throttled: bool,
    /// The count changed while throttled: send it when the interval ends.
    count_stale: bool,
}

impl CanvasServer {
    pub fn new(
        name: Arc<str>,
        settings: Arc<Settings>,
        stats: Arc<Stats>,
        registry: Addr<RoomRegistry>,
    ) -> Self {
        CanvasServer {
            name,
            settings,
            stats,
            registry,
            members: Vec::new(),
            pending: Vec::new(),
            joins_seen: 0,
            next_ask_id: 0,
            count_throttled: false,
            count_stale: false,
        }
    }

    fn member(&self, id: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Queues a frame for a member without ever waiting; a member whose queue is full is evicted.
    fn deliver(member: &Member, frame: ByteString, ctx: &mut Context<Self>) {
        if member.session.try_send(Deliver(frame)).is_err() {
            ctx.notify(Evict { id: member.id });
        }
    }

    fn send_to(&self, id: Uuid, message: &ServerMessage<'_>, ctx: &mut Context<Self>) {
        if let Some(member) = self.member(id) {
            let frame = message.encode();
            self.count_out(message, &frame, 1);
            Self::deliver(member, frame, ctx);
        }
    }

    /// One encoding, shared by every recipient.
    fn broadcast(
        &self,
        message: &ServerMessage<'_>,
        except: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let frame = message.encode();
        let mut recipients = 0;
        for member in self.members.iter().filter(|m| Some(m.id) != except) {
            Self::deliver(member, frame.clone(), ctx);
            recipients += 1;
        }
        self.count_out(message, &frame, recipients);
    }

    fn count_out(&self, message: &ServerMessage<'_>, frame: &ByteString, recipients: u64) {
        self.stats
            .messages_out
            .with_label_values(&[message.kind()])
            .inc_by(recipients);
        self.stats.bytes_out.inc_by(frame.len() as u64 * recipients);
    }

    fn count_changed(&mut self, ctx: &mut Context<Self>) {
        if self.count_throttled {
            self.count_stale = true;
            return;
        }
        let count = ServerMessage::ClientCount {
            client_count: self.members.len(),
        };
        self.broadcast(&count, None, ctx);
        self.count_throttled = true;
        ctx.run_later(CLIENT_COUNT_INTERVAL, |room, ctx| {
            room.count_throttled = false;
            if std::mem::take(&mut room.count_stale) {
                room.count_changed(ctx);
            }
        });
    }

    /// Takes a member out of the room: its pending asks move on, the others hear the new count.
    fn remove_member(&mut self, id: Uuid, ctx: &mut Context<Self>) -> Option<Member> {
        let index = self.members.iter().position(|m| m.id == id)?;
        let member = self.members.remove(index);
        self.pending.retain(|p| p.newcomer != id);
        // Newcomers who were waiting on the leaver go to the next peer at once.
        let (orphaned, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.asked == id);
        self.pending = kept;
        for pending in orphaned {
            self.ask_next_peer(pending.newcomer, pending.tried, ctx);
        }
        self.count_changed(ctx);
        if self.members.is_empty() {
            self.registry.do_send(RoomIdle {
                room: self.name.clone(),
                joins_seen: self.joins_seen,
            });
        }
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
            member.session.do_send(RequestSnapshot { newcomer });
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
            member.session.do_send(WithdrawSnapshotRequest);
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
        };
        self.stats
            .errors
            .with_label_values(&[rejection.code.as_str()])
            .inc();
        self.send_to(from, &rejection.to_server_message(), ctx);
    }
}

impl Actor for CanvasServer {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        log::debug!("room={} started", self.name);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        log::debug!("room={} stopped", self.name);
    }
}

impl Handler<Join> for CanvasServer {
    type Result = ();

    fn handle(&mut self, join: Join, ctx: &mut Context<Self>) {
        self.joins_seen += 1;
        if self.members.len() >= self.settings.max_clients_per_room {
            join.session.do_send(Kick {
                code: CloseCode::Again,
                reason: "the room is full",
            });
            return;
        }
        let awaiting_snapshot = !self.members.is_empty();
        let welcome = ServerMessage::Welcome {
            client_id: join.id,
            room: &self.name,
            width: self.settings.canvas.width,
            height: self.settings.canvas.height,
            awaiting_snapshot,
        };
        join.session.do_send(Deliver(welcome.encode()));
        self.members.push(Member {
            id: join.id,
            session: join.session,
        });
        self.count_changed(ctx);
        if awaiting_snapshot {
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
            member.session.do_send(Kick {
                code: CloseCode::Policy,
                reason: "too slow: stopped reading",
            });
        }
    }
}

impl Handler<Draw> for CanvasServer {
    type Result = ();

    fn handle(&mut self, draw: Draw, ctx: &mut Context<Self>) {
        self.broadcast(&ServerMessage::Draw(&draw.segment), Some(draw.from), ctx);
        self.stats
            .broadcast_seconds
            .observe(draw.received.elapsed().as_secs_f64());
    }
}

impl Handler<Clear> for CanvasServer {
    type Result = ();

    fn handle(&mut self, clear: Clear, ctx: &mut Context<Self>) {
        self.broadcast(&ServerMessage::Clear, Some(clear.from), ctx);
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
        if self.members.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<CloseAll> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: CloseAll, _ctx: &mut Context<Self>) {
        self.pending.clear();
        for member in self.members.drain(..) {
            member.session.do_send(Kick {
                code: CloseCode::Away,
                reason: "server restarting",
            });
        }
    }
}
