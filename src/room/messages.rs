//! What the room takes in: the messages the registry, its members and the HTTP side send a
//! `CanvasServer`, and the two it sends itself.
//!
//! It owns no behaviour: what the room does with each is in `handlers` and the files it calls.
//! It must never hold anything a member could use to reach the room other than its address.

use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::canvas::Op;
use crate::history::AuthorId;
use crate::moderation::{Moderation, Standing};
use crate::picture::Picture;
use crate::protocol::{Segment, Shape, StrokeId, Text};
use actix_http::ws::CloseCode;

/// A session enters the room. Sent by the registry only, so the registry can count joins.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: Uuid,
    pub session: Recipient<super::ToMember>,
    /// The client asked for batched delivery.
    pub batched: bool,
    /// What its link makes of it here (a view link's is said in its `welcome`).
    pub standing: Standing,
    /// Where the room answers, before it sends the member anything else. Not a message to the
    /// session's mailbox: the session waits for this answer with its mailbox held (so that its
    /// `welcome` comes first), and an answer queued behind that wait would never arrive.
    pub answer: oneshot::Sender<JoinAnswer>,
}

/// The room's answer to a [`Join`].
#[derive(Debug)]
pub enum JoinAnswer {
    /// The session is a member; this is its `welcome` frame.
    Welcome(ByteString),
    /// The room cannot take the session, which is closed with this code and reason.
    Refused {
        code: CloseCode,
        reason: &'static str,
    },
}

/// A session left (closed, timed out, or failed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: Uuid,
}

/// A validated segment from member `from`, which arrived at `received`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Draw {
    pub from: Uuid,
    pub author: AuthorId,
    pub segment: Segment,
    pub received: Instant,
}

/// A validated shape or text from member `from`: a whole stroke in one operation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Place {
    pub from: Uuid,
    pub author: AuthorId,
    pub figure: Figure,
}

/// What a [`Place`] puts on the canvas.
pub enum Figure {
    Shape(Shape),
    Text(Text),
}

/// Member `from` undoes (or redoes) a stroke of theirs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Toggle {
    pub from: Uuid,
    pub author: AuthorId,
    pub stroke_id: StrokeId,
    /// `false`: redo.
    pub undo: bool,
}

/// Member `from` names itself (the name is already validated).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetName {
    pub from: Uuid,
    pub name: String,
}

/// Member `from`'s pointer is at (`x`, `y`) (validated logical coordinates).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CursorMove {
    pub from: Uuid,
    pub x: f64,
    pub y: f64,
}

/// The server is stopping: close every member with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

/// Member `from` cleared the canvas.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Clear {
    pub from: Uuid,
    pub author: AuthorId,
    /// With one, the clear can be undone by whoever cleared.
    pub stroke_id: Option<StrokeId>,
}

/// Member `from` answers a `canvasRequest` for newcomer `for_client`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotReply {
    pub from: Uuid,
    pub for_client: Uuid,
    pub data: String,
}

/// A member's mailbox is full: it stopped reading, so it is dropped rather than queued for.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Evict {
    pub(super) id: Uuid,
}

/// The registry confirmed that no join is on its way: the room may stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The room's owner or the operator acted on the room (on a single node; a cluster's rooms hear
/// it on their channel). Answered once the members it closes have been told.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Moderate(pub Moderation);

/// The operator deletes this room (sent by the registry, see `registry::DeleteRoom`): the room
/// carries out [`Moderation::Deleted`] and queues the store's deletion before it handles anything
/// else; answered with the store's answer (whether anything was kept).
#[derive(Message)]
#[rtype(result = "Result<bool, crate::storage::StoreError>")]
pub struct DeleteNow;

/// Answered once everything sent to the room before it has been handled (mailboxes are in order).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// What the room's canvas looks like now: a picture and the operations drawn after it (for
/// `GET /api/rooms/{room}/canvas.png`; the caller renders them off the room's thread).
#[derive(Message)]
#[rtype(result = "Option<(Picture, Vec<Op>)>")]
pub struct CurrentCanvas;

/// The room has handled what its mailbox held: write what it gathered for its members' sockets.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct WriteGathered;
