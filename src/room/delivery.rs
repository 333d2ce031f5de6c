//! How frames reach the members: `deliver` (through the mailbox, or written directly to a socket
//! on this thread), `broadcast` (encoded once for everyone), the tick that batches broadcasts for
//! batched members, and the eviction of a member whose mailbox is full.
//!
//! It must never wait on a member: a member that stopped reading is evicted, never queued for.

use std::rc::Rc;

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::direct::Written;
use super::{Kick, ToMember};
use crate::protocol::{batch_frame, Rejection, ServerMessage};
use actix_http::ws::CloseCode;

use super::{CanvasServer, Evict, Member, ToWrite, WriteGathered};

impl CanvasServer {
    /// Queues a frame for a member without ever waiting; a member whose queue is full is evicted.
    /// An unbatched member on this thread whose socket has nothing else waiting gets it written
    /// directly, with whatever else the room has for it this turn (see `direct`).
    pub(super) fn deliver(
        member: &Member,
        frame: ByteString,
        to_write: &ToWrite,
        ctx: &mut Context<Self>,
    ) {
        if let Some(direct) = member.direct().filter(|_| !member.batched) {
            if let Some(first) = direct.gather(&frame) {
                if first {
                    let mut to_write = to_write.borrow_mut();
                    if to_write.is_empty() {
                        ctx.notify(WriteGathered);
                    }
                    to_write.push((member.id, Rc::downgrade(&direct)));
                }
                return;
            }
        }
        if !member.try_tell(ToMember::Deliver(frame)) {
            ctx.notify(Evict { id: member.id });
        }
    }

    /// Like `deliver`, for a batched member's tick frame.
    pub(super) fn deliver_tick(member: &Member, frame: ByteString, ctx: &mut Context<Self>) {
        if !member.try_tell(ToMember::DeliverTick(frame)) {
            ctx.notify(Evict { id: member.id });
        }
    }

    /// Tells member `to` why what it sent was not taken (and counts it).
    pub(super) fn reject(&self, to: Uuid, rejection: &Rejection, ctx: &mut Context<Self>) {
        self.stats
            .errors
            .with_label_values(&[rejection.code.as_str()])
            .inc();
        self.send_to(to, &rejection.to_server_message(), ctx);
    }

    pub(super) fn send_to(&self, id: Uuid, message: &ServerMessage<'_>, ctx: &mut Context<Self>) {
        if let Some(member) = self.member(id) {
            let frame = message.encode();
            self.count_out(message.kind(), &frame, 1);
            Self::deliver(member, frame, &self.to_write, ctx);
        }
    }

    /// One encoding, shared by every recipient; returned for the record. Unbatched members get it
    /// now, batched ones at the end of the tick.
    pub(super) fn broadcast(
        &mut self,
        message: &ServerMessage<'_>,
        except: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) -> ByteString {
        let frame = message.encode();
        self.broadcast_frame(message.kind(), frame, except, ctx)
    }

    /// Like `broadcast`, for a frame already encoded (one Redis relayed).
    pub(super) fn broadcast_frame(
        &mut self,
        kind: &'static str,
        frame: ByteString,
        except: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) -> ByteString {
        let mut recipients = 0;
        let mut batched = false;
        for member in self.members.iter().filter(|m| Some(m.id) != except) {
            if member.batched {
                batched = true;
            } else {
                Self::deliver(member, frame.clone(), &self.to_write, ctx);
            }
            recipients += 1;
        }
        self.count_out(kind, &frame, recipients);
        if batched {
            self.queue_for_tick(frame.clone(), except, ctx);
        }
        frame
    }

    pub(super) fn queue_for_tick(
        &mut self,
        frame: ByteString,
        sender: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        self.tick.frames.push(frame);
        self.tick.senders.push(sender);
        if !self.tick.scheduled {
            self.tick.scheduled = true;
            ctx.run_later(self.settings.batch_tick, |room, ctx| room.flush_tick(ctx));
        }
    }

    /// Ends the tick: one frame, built once, for every batched member that sent nothing in it and
    /// was there from its start; a frame of its own for each of the others.
    pub(super) fn flush_tick(&mut self, ctx: &mut Context<Self>) {
        self.tick.scheduled = false;
        let frames = std::mem::take(&mut self.tick.frames);
        let senders = std::mem::take(&mut self.tick.senders);
        let mut sent_something: Vec<Uuid> = senders.iter().flatten().copied().collect();
        sent_something.sort_unstable();
        sent_something.dedup();
        let mut shared: Option<Option<ByteString>> = None;
        for member in self.members.iter_mut().filter(|m| m.batched) {
            let from = std::mem::take(&mut member.tick_from);
            let frame = if from == 0 && sent_something.binary_search(&member.id).is_err() {
                shared.get_or_insert_with(|| batch_frame(&frames)).clone()
            } else {
                let id = Some(member.id);
                let theirs = frames[from.min(frames.len())..]
                    .iter()
                    .zip(&senders[from.min(senders.len())..])
                    .filter(|&(_, &sender)| sender != id)
                    .map(|(frame, _)| frame);
                batch_frame(theirs)
            };
            if let Some(frame) = frame {
                Self::deliver_tick(member, frame, ctx);
            }
        }
    }

    pub(super) fn count_out(&self, kind: &str, frame: &ByteString, recipients: u64) {
        self.stats
            .messages_out
            .with_label_values(&[kind])
            .inc_by(recipients);
        self.stats.bytes_out.inc_by(frame.len() as u64 * recipients);
        self.stats
            .bytes_out_by_type
            .with_label_values(&[kind])
            .inc_by(frame.len() as u64 * recipients);
    }
}

impl Handler<WriteGathered> for CanvasServer {
    type Result = ();

    fn handle(&mut self, _: WriteGathered, ctx: &mut Context<Self>) {
        let mut to_write = std::mem::take(&mut *self.to_write.borrow_mut());
        for (id, direct) in to_write.drain(..) {
            let Some(direct) = direct.upgrade() else {
                continue; // its session has ended
            };
            if let Written::Rest(rest) = direct.write_gathered() {
                // The socket is full: the rest waits in the session's writer, before anything
                // else, and the session's queue decides whether this member keeps up.
                if let Some(member) = self.member(id) {
                    if !member.try_tell(ToMember::DeliverRest(rest)) {
                        ctx.notify(Evict { id });
                    }
                }
            }
        }
        *self.to_write.borrow_mut() = to_write;
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
            member.tell(ToMember::Kick(Kick {
                code: CloseCode::Policy,
                reason: "too slow: stopped reading",
                hand_over: false,
            }));
        }
    }
}
