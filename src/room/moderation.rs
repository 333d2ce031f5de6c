//! What the room does when its owner or the operator acts on it (see `crate::moderation`): the
//! lock, checked against a member's standing on each operation; closing the members an action
//! closes; and dropping everything of a deleted room.
//!
//! It must never keep state per member for this (the lock is one flag of the room's), and never
//! let a deleted room store, relay or bring back anything.

use actix::prelude::*;
use uuid::Uuid;

use super::{CanvasServer, DeleteNow, Kick, Moderate, ToMember};
use crate::history::History;
use crate::moderation::{Moderation, Standing};
use crate::picture::Picture;
use crate::protocol::{Rejection, ServerMessage};
use crate::storage::StoreError;

impl CanvasServer {
    /// Whether `from` may not change the canvas now because the owner locked the room (it is told
    /// so, with the stroke it named, so that a page can put back what it had already hidden).
    /// Costs nothing while the room is unlocked.
    pub(super) fn locked_out(
        &self,
        from: Uuid,
        stroke: Option<&str>,
        ctx: &mut Context<Self>,
    ) -> bool {
        if self.deleted {
            return true;
        }
        if !self.locked {
            return false;
        }
        let owner = self
            .member(from)
            .is_some_and(|member| member.standing == Standing::Owner);
        if !owner {
            let rejection = match stroke {
                Some(id) => Rejection::locked().about_stroke(id),
                None => Rejection::locked(),
            };
            self.reject(from, &rejection, ctx);
        }
        !owner
    }

    /// Carries out `action` on this node's members.
    pub(super) fn moderate(&mut self, action: Moderation, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        if let Moderation::Locked(locked) = action {
            if self.locked != locked {
                self.locked = locked;
                self.broadcast(&ServerMessage::Locked { locked }, None, ctx);
            }
            return;
        }
        if action == Moderation::Deleted {
            self.forget_everything();
        }
        // What the members were sent before reaches them before the close.
        self.flush_tick(ctx);
        let closed: Vec<_> = self
            .members
            .iter()
            .filter_map(|member| {
                let (code, reason) = action.closes(member.id, member.standing)?;
                Some((member.id, code, reason))
            })
            .collect();
        for (id, code, reason) in closed {
            if let Some(member) = self.remove_member(id, ctx) {
                member.tell(ToMember::Kick(Kick {
                    code,
                    reason,
                    hand_over: false,
                }));
            }
        }
    }

    /// The room was deleted: its picture, operations and undo history go, so that nothing
    /// (an undo, a checkpoint, a newcomer's picture) can bring a stroke back.
    fn forget_everything(&mut self) {
        self.deleted = true;
        self.recorded.clear();
        self.picture = Picture::blank(0);
        self.history = History::new(self.settings.storage.undo);
        self.stored_bytes = 0;
        self.pending.clear();
    }
}

impl Handler<DeleteNow> for CanvasServer {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, _: DeleteNow, ctx: &mut Context<Self>) -> Self::Result {
        self.moderate(Moderation::Deleted, ctx);
        // Queued now, before the registry can hear that the room is empty and open it afresh.
        Box::pin(self.store.delete_room(self.name.clone()))
    }
}

impl Handler<Moderate> for CanvasServer {
    type Result = ();

    fn handle(&mut self, Moderate(action): Moderate, ctx: &mut Context<Self>) {
        self.moderate(action, ctx);
    }
}
