//! The session's mailbox: how it handles what its room sends it (frames, snapshot asks, kicks).
//!
//! It must never write a frame out of the room's order, nor wait on the room.

use actix::prelude::*;

use crate::protocol::ServerMessage;

use super::messages::{
    Deliver, DeliverMany, DeliverRest, DeliverTick, Kick, RequestSnapshot, WithdrawSnapshotRequest,
};
use super::writer::Outgoing;
use super::WsSession;

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, Deliver(frame): Deliver, ctx: &mut Self::Context) {
        self.handling_room_message();
        self.release_after_large(frame.len(), ctx);
        let Some(pending) = self.batch.as_mut() else {
            return self.text(frame);
        };
        if pending.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, _| session.flush_batch());
        }
        pending.push(frame);
    }
}

impl Handler<DeliverMany> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverMany(frames): DeliverMany, ctx: &mut Self::Context) {
        self.handling_room_message();
        let Some(pending) = self.batch.as_mut() else {
            for frame in frames {
                self.text(frame);
            }
            return;
        };
        if pending.is_empty() && !frames.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, _| session.flush_batch());
        }
        pending.extend(frames);
    }
}

impl Handler<DeliverRest> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverRest(rest): DeliverRest, _ctx: &mut Self::Context) {
        self.handling_room_message();
        if !self.closing {
            self.take_gathered();
            self.out.write(Outgoing::Encoded(rest));
        }
    }
}

impl Handler<DeliverTick> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverTick(frame): DeliverTick, ctx: &mut Self::Context) {
        self.handling_room_message();
        self.release_after_large(frame.len(), ctx);
        self.flush_batch();
        self.text(frame);
    }
}

impl Handler<RequestSnapshot> for WsSession {
    type Result = ();

    fn handle(&mut self, request: RequestSnapshot, _ctx: &mut Self::Context) {
        self.handling_room_message();
        self.snapshot_requests_open += 1;
        let message = ServerMessage::CanvasRequest {
            client_id: request.newcomer,
        };
        self.text(message.encode());
    }
}

impl Handler<WithdrawSnapshotRequest> for WsSession {
    type Result = ();

    fn handle(&mut self, _: WithdrawSnapshotRequest, _ctx: &mut Self::Context) {
        self.handling_room_message();
        self.snapshot_requests_open = self.snapshot_requests_open.saturating_sub(1);
    }
}

impl Handler<Kick> for WsSession {
    type Result = ();

    fn handle(&mut self, kick: Kick, ctx: &mut Self::Context) {
        self.handling_room_message();
        if kick.hand_over {
            self.handing_over = true;
        } else {
            // The room has already let this session go; do not tell it again.
            self.room = None;
        }
        self.close(ctx, kick.code, kick.reason);
    }
}
