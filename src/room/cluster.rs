//! The cluster room: operations go to Redis first and are applied in Redis's order on every node
//! (`follow`, `catch_up`), the room-wide count and presence (`publish_presence`, `show_roster`),
//! remote cursors and checkpoints another node stored.
//!
//! It must never apply an operation out of Redis's order, nor keep one Redis did not take.

use std::sync::atomic::Ordering;

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::{Kick, ToMember};
use crate::history::{self};
use crate::picture::{self, Priority};
use crate::presence::{self};
use crate::protocol::ServerMessage;
use crate::storage::{CatchUp, Cluster, Relayed, RelayedOp, StoredRoom};
use actix_http::ws::CloseCode;

use super::{Availability, CanvasServer, UNREACHABLE_REFUSED_NOTICE};

/// A cluster room: operations go to Redis first and are applied in the order Redis gives them,
/// on every node alike (this one included, when they come back on the room's channel).
impl CanvasServer {
    /// Hands an accepted operation to Redis. Nothing is relayed or kept here until it comes
    /// back numbered; if Redis does not take it, the sender is told it was not kept.
    pub(super) fn publish(
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
    pub(super) fn follow(&mut self, op: RelayedOp, ctx: &mut Context<Self>) {
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

    pub(super) fn apply(&mut self, relayed: RelayedOp, ctx: &mut Context<Self>) {
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
    pub(super) fn catch_up(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn start_again(&mut self, why: &str) {
        log::warn!("room={} starts again from Redis: {why}", self.name);
        self.availability = Availability::Refused {
            code: CloseCode::Again,
            reason: "the room is reloading; try again",
        };
        for member in std::mem::take(&mut self.members) {
            member.tell(ToMember::Kick(Kick {
                code: CloseCode::Restart,
                reason: "the room is reloading from the cluster; reconnect",
                hand_over: false,
            }));
        }
        self.population.store(0, Ordering::Relaxed);
        self.pending.clear();
        self.idle_if_empty();
    }

    /// Tells Redis how many members this node has here and who they are; the room-wide count
    /// and presence list come back.
    pub(super) fn publish_presence(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster().filter(|_| !self.deleted) else {
            // A deleted room's count would bring its keys back.
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
    pub(super) fn show_roster(&mut self, version: u64, rosters: &str, ctx: &mut Context<Self>) {
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
    pub(super) fn show_remote_cursors(
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
    pub(super) fn show_count(&mut self, version: u64, total: u64, ctx: &mut Context<Self>) {
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
    pub(super) fn adopt_checkpoint(&mut self, seq: u64, ctx: &mut Context<Self>) {
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
        if !matches!(self.availability, Availability::Ready) || self.deleted {
            return;
        }
        match relayed {
            Relayed::Op { seq, from, frame } => self.follow(RelayedOp { seq, from, frame }, ctx),
            Relayed::Count { version, total } => self.show_count(version, total, ctx),
            Relayed::Roster { version, rosters } => self.show_roster(version, &rosters, ctx),
            Relayed::Cursors { node, frames } => self.show_remote_cursors(&node, frames, ctx),
            Relayed::Checkpoint(seq) => self.adopt_checkpoint(seq, ctx),
            Relayed::Moderated(action) => self.moderate(action, ctx),
            Relayed::Resync => {
                self.warn_if_unstored(ctx);
                self.catch_up(ctx);
                self.publish_presence(ctx);
            }
            Relayed::Lost => self.warn_if_unstored(ctx),
        }
    }
}
