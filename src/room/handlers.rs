//! The room's mailbox: one handler per message in `messages`, and the members coming and going
//! (joins refused, the registry told when the room is empty).
//!
//! It must never block, and never `ctx.wait` on anything its own mailbox or spawned futures must
//! do first: a room that waits on itself never stops, nor does the server's shutdown.

use std::sync::atomic::Ordering;

use actix::prelude::*;
use uuid::Uuid;

use super::direct;
use super::{Kick, ToMember};
use crate::canvas::Op;
use crate::config::PictureSource;
use crate::history::{self, Meta};
use crate::moderation::{self, Standing};
use crate::presence::{self, Identity, CURSOR_TICK};
use crate::protocol::{Rejection, ServerMessage};
use crate::registry::RoomIdle;
use actix_http::ws::CloseCode;

use super::{
    Availability, CanvasServer, Clear, CloseAll, CurrentCanvas, CursorMove, Drain, Draw, Figure,
    Join, JoinAnswer, Leave, Member, Place, SetName, Shutdown, SnapshotReply, Toggle,
    UNREACHABLE_REASON,
};

impl CanvasServer {
    /// Takes a member out of the room: its pending asks move on, the others hear the new count.
    pub(super) fn remove_member(&mut self, id: Uuid, ctx: &mut Context<Self>) -> Option<Member> {
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

    /// A join the room cannot take: the newcomer is closed, and an empty room lets the registry
    /// stop it so that the next join starts afresh.
    pub(super) fn refuse_join(&self, join: Join, code: CloseCode, reason: &'static str) {
        let _ = join.answer.send(JoinAnswer::Refused { code, reason });
        self.idle_if_empty();
    }

    /// Tells the registry that the room is empty, so that it stops the room unless a join is on
    /// its way.
    pub(super) fn idle_if_empty(&self) {
        if self.members.is_empty() {
            self.registry.do_send(RoomIdle {
                room: self.name.clone(),
                joins_seen: self.joins_seen,
            });
        }
    }

    pub(super) fn refuse_draw(&self, from: Uuid, ctx: &mut Context<Self>) {
        let rejection = Rejection::room_full(format!(
            "this room's canvas is at its size limit ({} bytes); clear it to draw again",
            self.settings.storage.max_room_bytes
        ));
        self.reject(from, &rejection, ctx);
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
        if self.deleted {
            return self.refuse_join(
                join,
                CloseCode::Other(moderation::DELETED_CODE),
                moderation::DELETED_REASON,
            );
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
            read_only: join.standing.read_only(),
            locked: self.locked,
            owner: join.standing == Standing::Owner,
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
        if self.members.is_empty() {
            // Most rooms have one member: room for exactly one, not the four a first push makes.
            self.members.reserve_exact(1);
        }
        self.members.push(Member {
            id: join.id,
            session: join.session,
            batched: join.batched,
            // Broadcasts before the join are not for it (in server mode its picture holds them).
            tick_from: self.tick.frames.len(),
            refused_at: None,
            direct: direct::find(join.id),
            identity: Identity::default(),
            standing: join.standing,
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

impl Handler<Draw> for CanvasServer {
    type Result = ();

    fn handle(&mut self, draw: Draw, ctx: &mut Context<Self>) {
        if self.locked_out(draw.from, None, ctx) {
            return;
        }
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

impl Handler<Place> for CanvasServer {
    type Result = ();

    /// Held to the same limits as a segment: the room's stored bytes, the store's back-pressure.
    fn handle(&mut self, place: Place, ctx: &mut Context<Self>) {
        if self.stored_bytes >= self.settings.storage.max_room_bytes {
            return self.refuse_draw(place.from, ctx);
        }
        if !self.storable(place.from, ctx) {
            return;
        }
        let (op, frame) = match place.figure {
            Figure::Shape(shape) => {
                let frame = ServerMessage::Shape(&shape).encode();
                (Op::Shape(shape), frame)
            }
            Figure::Text(text) => {
                let frame = ServerMessage::Text(&text).encode();
                (Op::Text(text), frame)
            }
        };
        self.accept(place.from, op, Some(Meta::now(place.author)), frame, ctx);
    }
}

impl Handler<Toggle> for CanvasServer {
    type Result = ();

    fn handle(&mut self, toggle: Toggle, ctx: &mut Context<Self>) {
        if self.locked_out(toggle.from, Some(&toggle.stroke_id), ctx) {
            return;
        }
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
        if self.locked_out(clear.from, None, ctx) {
            return;
        }
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
        if member.identity.rename(set.from, set.name) {
            self.announce(ctx);
        }
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
        if self.deleted {
            // Nothing of it may be written again (a count would bring its keys back).
            return ctx.stop();
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
        // hold it (and whatever it holds) unpolled until this one finished, and a room waiting on itself never stops. The
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
            member.tell(ToMember::Kick(Kick {
                code: CloseCode::Away,
                reason: "server restarting",
                hand_over: true,
            }));
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
