//! Count and presence: how many are in the room and who they are, sent to the members coalesced
//! (at most once per `CLIENT_COUNT_INTERVAL`), the whole list for a newcomer, and the cursors
//! gathered in each `CURSOR_TICK`.
//!
//! It must never send a frame per join to every member (a crowd joining at once would cost each
//! member one frame per newcomer), and never record or store a cursor.

use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use crate::presence::{self};
use crate::protocol::ServerMessage;

use super::CanvasServer;

/// Count updates go out at most this often: the first change at once, later ones gathered, so
/// that a crowd joining at once costs a few frames per member, not one per join.
const CLIENT_COUNT_INTERVAL: Duration = Duration::from_millis(100);

/// How long the encoded list is kept for further newcomers: a crowd arriving together shares one
/// encoding, and an idle room keeps no copy of its list.
const PRESENCE_FRAME_KEPT: Duration = Duration::from_secs(1);

impl CanvasServer {
    pub(super) fn count_changed(&mut self, ctx: &mut Context<Self>) {
        self.count_dirty = true;
        self.announce(ctx);
    }

    pub(super) fn announce(&mut self, ctx: &mut Context<Self>) {
        self.announce_except(None, ctx);
    }

    /// Sends the count (when members came or went) and what changed in the presence list,
    /// coalesced: at once if nothing went out in the last `CLIENT_COUNT_INTERVAL`, else once it
    /// ends, with whatever changed meanwhile. A `newcomer` is left out of the change: it is sent
    /// the whole list next.
    pub(super) fn announce_except(&mut self, newcomer: Option<Uuid>, ctx: &mut Context<Self>) {
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
    pub(super) fn local_roster(&self) -> Vec<crate::protocol::PresenceMember> {
        presence::roster(self.members.iter().map(|m| (m.id, &m.identity)))
    }

    /// A newcomer gets the list the others were shown, whole, right after its welcome (and its
    /// count): it lists the newcomer unless announcements are throttled, and the next
    /// `presenceChange` applies to it as to everyone.
    pub(super) fn presence_for_newcomer(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let (frame, encoded) = self.shown.full_frame();
        if encoded {
            ctx.run_later(PRESENCE_FRAME_KEPT, |room, _| room.shown.forget_frame());
        }
        if let Some(member) = self.member(id) {
            self.count_out("presence", &frame, 1);
            Self::deliver(member, frame, &self.to_write, ctx);
        }
    }

    /// Sends the cursors of the tick that ends: to the members here (never to their owner) and,
    /// in a cluster, to the other nodes in one message.
    pub(super) fn flush_cursors(&mut self, ctx: &mut Context<Self>) {
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
}
