//! What a session takes in from its room: frames to write (`Deliver`, `DeliverMany`,
//! `DeliverRest`, `DeliverTick`), asks for its picture, and `Kick`.
//!
//! It owns no behaviour (see `handlers`); nothing here may carry more than the room already encoded.

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytes::Bytes;
use bytestring::ByteString;
use uuid::Uuid;

/// A text frame for the client, already encoded (and shared with the rest of the room).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub ByteString);

/// Many text frames for the client at once, in order (a newcomer's operations after its picture,
/// which may be thousands while strokes can still be undone): one mailbox slot however many.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverMany(pub Vec<ByteString>);

/// The rest of a frame the room began to write to the socket itself (see `direct`): already
/// encoded, and written before anything else.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverRest(pub Bytes);

/// For a batched client: the room's broadcasts of one tick, already joined into one frame. Sent as
/// it is, after whatever the session gathered before it (so the order is the room's).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverTick(pub ByteString);

/// The room asks this client for its picture, for `newcomer`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestSnapshot {
    pub newcomer: Uuid,
}

/// The room no longer waits for this client's picture (it timed out and asked someone else).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WithdrawSnapshotRequest;

/// The room closes this connection: it fell too far behind, the room is full, or the server is
/// stopping.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick {
    pub code: CloseCode,
    pub reason: &'static str,
    /// The server is stopping: strokes the client sent before it saw the close still go to the
    /// room (see `WsSession::handing_over`).
    pub hand_over: bool,
}
