//! What a room sends its members, defined on the room's side: the room holds each member as a
//! `Recipient<ToMember>` (the session handles it), so the room never names the session actor and
//! the dependency runs one way, from the session to the room.
//!
//! It owns no behaviour; nothing here may carry more than the room already encoded.

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytes::Bytes;
use bytestring::ByteString;
use uuid::Uuid;

/// A message from the room to one member.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToMember {
    /// A text frame for the client, already encoded (and shared with the rest of the room).
    Deliver(ByteString),
    /// Many text frames for the client at once, in order (a newcomer's operations after its
    /// picture, which may be thousands while strokes can still be undone): one mailbox slot
    /// however many.
    DeliverMany(Vec<ByteString>),
    /// The rest of a frame the room began to write to the socket itself (see `direct`): already
    /// encoded, and written before anything else.
    DeliverRest(Bytes),
    /// For a batched client: the room's broadcasts of one tick, already joined into one frame.
    /// Sent as it is, after whatever the session gathered before it (so the order is the room's).
    DeliverTick(ByteString),
    /// The room asks this client for its picture, for `newcomer`.
    RequestSnapshot { newcomer: Uuid },
    /// The room no longer waits for this client's picture (it timed out and asked someone else).
    WithdrawSnapshotRequest,
    /// The room closes this connection.
    Kick(Kick),
}

/// Why the room closes a member: it fell too far behind, the room is reloading, or the server is
/// stopping.
pub struct Kick {
    pub code: CloseCode,
    pub reason: &'static str,
    /// The server is stopping: strokes the client sent before it saw the close still go to the
    /// room (see `WsSession::handing_over`).
    pub hand_over: bool,
}
