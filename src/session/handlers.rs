//! The session's mailbox: how it handles what its room sends it (frames, snapshot asks, kicks).
//!
//! It must never write a frame out of the room's order, nor wait on the room.

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use uuid::Uuid;

use crate::protocol::ServerMessage;

use super::writer::Outgoing;
use super::WsSession;
use crate::room::{Kick, ToMember};

impl WsSession {
    fn deliver(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.release_when_written(frame.len(), ctx);
        let Some(pending) = self.batch.as_mut() else {
            return self.text(frame);
        };
        if pending.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, _| session.flush_batch());
        }
        pending.push(frame);
    }

    fn deliver_many(&mut self, frames: Vec<ByteString>, ctx: &mut Context<Self>) {
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

    fn deliver_rest(&mut self, rest: Bytes) {
        if !self.closing {
            self.take_gathered();
            self.out.write(Outgoing::Encoded(rest));
        }
    }

    fn deliver_tick(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        self.release_when_written(frame.len(), ctx);
        self.flush_batch();
        self.text(frame);
    }

    fn request_snapshot(&mut self, newcomer: Uuid) {
        self.snapshot_requests_open += 1;
        let message = ServerMessage::CanvasRequest {
            client_id: newcomer,
        };
        self.text(message.encode());
    }

    fn withdraw_snapshot_request(&mut self) {
        self.snapshot_requests_open = self.snapshot_requests_open.saturating_sub(1);
    }

    fn kick(&mut self, kick: Kick, ctx: &mut Context<Self>) {
        if kick.hand_over {
            self.handing_over = true;
        } else {
            // The room has already let this session go; do not tell it again.
            self.room = None;
        }
        self.close(ctx, kick.code, kick.reason);
    }
}

impl Handler<ToMember> for WsSession {
    type Result = ();

    fn handle(&mut self, message: ToMember, ctx: &mut Self::Context) {
        self.handling_room_message();
        match message {
            ToMember::Deliver(frame) => self.deliver(frame, ctx),
            ToMember::DeliverMany(frames) => self.deliver_many(frames, ctx),
            ToMember::DeliverRest(rest) => self.deliver_rest(rest),
            ToMember::DeliverTick(frame) => self.deliver_tick(frame, ctx),
            ToMember::RequestSnapshot { newcomer } => self.request_snapshot(newcomer),
            ToMember::WithdrawSnapshotRequest => self.withdraw_snapshot_request(),
            ToMember::Kick(kick) => self.kick(kick, ctx),
        }
    }
}
