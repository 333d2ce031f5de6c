//! The room's picture over time: reading it from the store when the room starts, checkpoints
//! (rendered off the room's thread, stored with the operations they cover dropped), and the
//! store's back-pressure (strokes refused past `--max-unstored-bytes`, members told once).
//!
//! It must never render or touch the disk on the room's thread, never bake in a stroke that may
//! still be undone, and never start blank over a stored picture it could not read.

use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use crate::canvas::{CanvasError, Op};
use crate::history::{self};
use crate::picture::{self, Picture, Priority, RenderFailed, Restored};
use crate::protocol::Rejection;
use crate::storage::StoreError;
use actix_http::ws::CloseCode;

use super::{
    Availability, CanvasServer, LoadError, Recorded, UNREACHABLE_REASON, UNREACHABLE_REFUSED_NOTICE,
};

/// While strokes are refused because the store cannot keep more, a member who keeps drawing is
/// told so at most this often, not once per stroke.
const REFUSAL_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// What a cluster's members are told, once, when their node loses Redis.
const UNREACHABLE_NOTICE: &str = "the server lost its connection to the shared store; drawing \
    pauses until it is back (nothing drawn before is lost)";

/// What a cluster member is told when its node has as many strokes on their way to Redis as it
/// may (Redis, or the machine, cannot keep up with what is drawn).
const SATURATED_NOTICE: &str = "the server is saving strokes as fast as it can; this stroke was \
    not kept, try again in a moment";

/// A cluster node that was refused a room's checkpoint lease asks again no sooner than this.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// What the members are told, once, when the store stops writing.
const UNSTORED_NOTICE: &str = "the server cannot save drawings right now; strokes are kept in \
    memory and saved as soon as it can, and drawing pauses if too many are waiting";

/// What a member whose stroke was refused is told.
const REFUSED_NOTICE: &str = "the server cannot save drawings right now and has as many waiting \
    as it may keep; this stroke was not kept, try again in a moment";

impl CanvasServer {
    pub(super) fn loaded(&mut self, result: Result<Restored, LoadError>, ctx: &mut Context<Self>) {
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
    pub(super) fn storable(&mut self, from: Uuid, ctx: &mut Context<Self>) -> bool {
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
    pub(super) fn refuse_now_and_then(
        &mut self,
        from: Uuid,
        notice: &str,
        ctx: &mut Context<Self>,
    ) {
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
    pub(super) fn warn_if_unstored(&mut self, ctx: &mut Context<Self>) {
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

    /// How many of `recorded` a checkpoint may bake now (nothing that may still be undone).
    pub(super) fn settled_count(&self) -> usize {
        let ops: Vec<(u64, &Op)> = self.recorded.iter().map(|r| (r.seq, &r.op)).collect();
        self.history.settled_count(&ops, history::now_ms())
    }

    /// Checkpoints once drawing has paused for `--checkpoint-idle`. Armed by drawing, not
    /// periodic: a thousand quiet rooms each waking every two seconds to find nothing to do were
    /// among the wake-ups that made context switches a quarter of an idle server's CPU.
    pub(super) fn arm_idle_checkpoint(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn arm_settling(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn start_checkpoint(&mut self, ctx: &mut Context<Self>) {
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

    pub(super) fn render_and_checkpoint(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn render_checkpoint(
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

    pub(super) fn checkpointed(&mut self, picture: Picture, ctx: &mut Context<Self>) {
        self.store_checkpoint(&picture);
        self.adopt(picture);
        self.unsettled = self.recorded.len().saturating_sub(self.settled_count());
        if self.recorded.len() >= self.unsettled + self.settings.storage.checkpoint_ops {
            self.start_checkpoint(ctx);
        }
    }

    /// Takes `picture` as the room's checkpoint: the operations it covers are dropped.
    pub(super) fn adopt(&mut self, picture: Picture) {
        self.recorded.retain(|r| r.seq > picture.seq);
        self.history.forget_through(picture.seq);
        self.picture = picture;
        self.count_stored_bytes();
    }

    pub(super) fn count_stored_bytes(&mut self) {
        self.stored_bytes = self.picture.stored_len()
            + self
                .recorded
                .iter()
                .map(|r| r.frame.len() as u64)
                .sum::<u64>();
    }

    pub(super) fn store_checkpoint(&self, picture: &Picture) {
        if self.deleted {
            return;
        }
        let size = self.settings.canvas;
        self.store.checkpoint(
            &self.name,
            picture.seq,
            size.width,
            size.height,
            picture.png.to_vec(),
        );
    }
}
