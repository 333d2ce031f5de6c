//! The newcomer's picture: the checkpoint (or `canvasEmpty`) and the operations after it, or,
//! with `--newcomer-picture peer`, a snapshot asked of a member that has the whole picture.
//!
//! It must never send a newcomer anything live before its picture, and never trust a member's
//! claim about who asked it for a snapshot: only the peer asked may answer, once.

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::ToMember;
use crate::canvas::Op;
use crate::protocol::{ErrorCode, Rejection, ServerMessage};

use super::{CanvasServer, Evict, PendingSnapshot, Recorded};

/// A newcomer's operations after its picture up to this many go one by one (directly to its
/// socket when they can); more go in one message.
const FEW_OPS_AFTER_PICTURE: usize = 64;

impl CanvasServer {
    pub(super) fn is_waiting(&self, id: Uuid) -> bool {
        self.pending.iter().any(|p| p.newcomer == id)
    }

    /// Asks the next peer that has a complete picture and has not been asked for this newcomer yet;
    /// when there is none, the newcomer starts from a blank canvas.
    pub(super) fn ask_next_peer(
        &mut self,
        newcomer: Uuid,
        mut tried: Vec<Uuid>,
        ctx: &mut Context<Self>,
    ) {
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
            member.tell(ToMember::RequestSnapshot { newcomer });
        }
        ctx.run_later(self.settings.snapshot_timeout, move |room, ctx| {
            room.snapshot_timed_out(newcomer, ask_id, ctx)
        });
    }

    pub(super) fn snapshot_timed_out(
        &mut self,
        newcomer: Uuid,
        ask_id: u64,
        ctx: &mut Context<Self>,
    ) {
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.newcomer == newcomer && p.ask_id == ask_id)
        else {
            return; // answered, or the newcomer left
        };
        let pending = self.pending.swap_remove(index);
        if let Some(member) = self.member(pending.asked) {
            member.tell(ToMember::WithdrawSnapshotRequest);
        }
        log::debug!(
            "room={} client={} did not send the snapshot for {} in time",
            self.name,
            pending.asked,
            newcomer
        );
        self.ask_next_peer(newcomer, pending.tried, ctx);
    }

    pub(super) fn refuse_snapshot(&self, from: Uuid, ctx: &mut Context<Self>) {
        let rejection = Rejection {
            code: ErrorCode::UnexpectedSnapshot,
            field: None,
            message: "no canvasRequest for that client is waiting on you".into(),
            stroke_id: None,
        };
        self.reject(from, &rejection, ctx);
    }

    /// What the canvas is now: whether it starts blank (no picture, or a clear nobody can undo
    /// since), and the operations to draw over that start (undone ones and their undos included:
    /// a newcomer may see them redone).
    pub(super) fn current(&self) -> (bool, &[Recorded]) {
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
    pub(super) fn is_blank(&self) -> bool {
        let (from_blank, since) = self.current();
        from_blank && since.is_empty()
    }

    /// Sends a newcomer the room as it stands: the checkpoint (or `canvasEmpty`), then every
    /// operation after it, in order, before anything live.
    pub(super) fn send_picture(&self, id: Uuid, ctx: &mut Context<Self>) {
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
        if !member.try_tell(ToMember::DeliverMany(frames)) {
            ctx.notify(Evict { id: member.id });
        }
    }
}

/// `{"type":"canvasState","clientId":…,"data":…}` made by joining strings: the data URL is megabytes
/// of base64, which needs no escaping, so there is no need to run the JSON encoder over it per
/// newcomer.
pub(super) fn canvas_state_frame(client_id: Uuid, data_url: &str) -> ByteString {
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
