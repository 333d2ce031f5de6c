//! What the room accepts: a member's operation checked against the undo history and stroke ids,
//! then broadcast and recorded (or, in a cluster, handed to Redis first).
//!
//! It must never relay or keep an operation it refused, and never accept one the store cannot
//! keep (see `checkpoints`).

use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use crate::canvas::Op;
use crate::history::Meta;

use super::{CanvasServer, Recorded};

impl CanvasServer {
    /// Accepts an operation: stored, and kept until the next checkpoint covers it.
    pub(super) fn record(
        &mut self,
        op: Op,
        meta: Option<Meta>,
        frame: ByteString,
        ctx: &mut Context<Self>,
    ) {
        let seq = self.last_seq + 1;
        self.store
            .append(&self.name, seq, stored_form(meta.as_ref(), &frame));
        self.keep(seq, op, meta, frame, ctx);
    }

    /// Keeps operation `seq` until a checkpoint covers it.
    pub(super) fn keep(
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
    pub(super) fn accept(
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
    pub(super) fn admissible(
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
}

/// What the store keeps of an operation: its frame, after its meta when it has one.
fn stored_form(meta: Option<&Meta>, frame: &ByteString) -> ByteString {
    match meta {
        None => frame.clone(),
        Some(_) => ByteString::from(Meta::stored(meta, frame)),
    }
}
