//! `WsSession`: the actor behind one WebSocket connection.
//!
//! It owns the connection's framing (joining fragmented messages, size limits, close codes), its
//! heartbeat, and the decoding and validation of what the client sends, so that its room only ever
//! receives typed, valid messages. It must never forward a message it has not validated, never
//! panic on what a client sends, and always leave its room when it stops, whatever the reason.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use uuid::Uuid;

use crate::config::Settings;
use crate::limits::{ConnectionPermit, DrawLimiter, Throttle};
use crate::protocol::{
    batch_frame, check_png_snapshot, decode_client_message, ClientMessage, Rejection, ServerMessage,
};
use crate::registry::{JoinRoom, RoomRegistry, TooManyRooms};
use crate::room::{CanvasServer, Clear, Draw, Leave, SnapshotReply};
use crate::stats::Stats;

/// Heartbeat pings are due only on multiples of this, so that many share one wake-up; a ping is
/// at most this much later than `--heartbeat-interval` says.
const HEARTBEAT_SLOT: Duration = Duration::from_millis(250);

/// A text frame for the client, already encoded (and shared with the rest of the room).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub ByteString);

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
}

pub struct WsSession {
    id: Uuid,
    /// This connection's place in the server's connection counts, released when the actor drops.
    _permit: ConnectionPermit,
    draws: DrawLimiter,
    room_name: Arc<str>,
    peer: String,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    registry: Addr<RoomRegistry>,
    /// Known once the registry has answered the join.
    room: Option<Addr<CanvasServer>>,
    last_seen: Instant,
    /// A fragmented text message being joined.
    fragments: Option<Vec<u8>>,
    invalid_in_a_row: u32,
    /// For a client that asked for batched delivery: the frames gathered for the next tick.
    batch: Option<Vec<ByteString>>,
    /// `canvasRequest`s sent to this client and not yet answered: while there is one, the client may
    /// send one message up to the snapshot size limit.
    snapshot_requests_open: usize,
}

impl WsSession {
    pub fn new(
        room_name: Arc<str>,
        peer: String,
        permit: ConnectionPermit,
        batched: bool,
        settings: Arc<Settings>,
        stats: Arc<Stats>,
        registry: Addr<RoomRegistry>,
    ) -> Self {
        WsSession {
            id: Uuid::new_v4(),
            _permit: permit,
            draws: DrawLimiter::new(&settings),
            room_name,
            peer,
            settings,
            stats,
            registry,
            room: None,
            last_seen: Instant::now(),
            fragments: None,
            invalid_in_a_row: 0,
            batch: batched.then(Vec::new),
            snapshot_requests_open: 0,
        }
    }

    fn message_limit(&self) -> usize {
        if self.snapshot_requests_open > 0 {
            self.settings.max_snapshot_bytes
        } else {
            self.settings.max_message_bytes
        }
    }

    /// Sends what a batched client has gathered as one frame (see [`batch_frame`]).
    fn flush_batch(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(pending) = self.batch.as_mut() else {
            return;
        };
        if let Some(frame) = batch_frame(pending.iter()) {
            ctx.text(frame);
        }
        pending.clear();
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, reason: &str) {
        self.flush_batch(ctx);
        log::info!(
            "closing room={} client={} code={} reason={reason}",
            self.room_name,
            self.id,
            u16::from(code)
        );
        self.stats
            .closes
            .with_label_values(&[&u16::from(code).to_string()])
            .inc();
        ctx.close(Some(CloseReason {
            code,
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    /// Pings on `--heartbeat-interval`, at instants shared by every session (see
    /// [`heartbeat_start`]), so that a worker wakes up once for many pings rather than once per
    /// connection: with 19,000 idle clients, per-connection timers kept both threads waking
    /// thousands of times a second.
    fn start_heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let interval = self.settings.heartbeat_interval;
        ctx.run_interval_at(heartbeat_start(interval), interval, |session, ctx| {
            if session.last_seen.elapsed() > session.settings.client_timeout {
                session.close(ctx, CloseCode::Normal, "heartbeat timeout");
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn on_protocol_error(&mut self, error: ProtocolError, ctx: &mut ws::WebsocketContext<Self>) {
        match error {
            ProtocolError::Overflow => self.close(ctx, CloseCode::Size, "message too big"),
            // actix-web-actors reports a text frame that is not UTF-8 as an I/O error; any other
            // I/O error means the connection is already gone.
            ProtocolError::Io(err) if err.to_string().contains("utf-8") => {
                self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8")
            }
            ProtocolError::Io(_) => ctx.stop(),
            other => self.close(ctx, CloseCode::Protocol, &other.to_string()),
        }
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (first, bytes, last) = match item {
            Item::FirstText(bytes) => (true, bytes, false),
            Item::FirstBinary(_) => {
                return self.close(
                    ctx,
                    CloseCode::Unsupported,
                    "binary messages are not supported",
                )
            }
            Item::Continue(bytes) => (false, bytes, false),
            Item::Last(bytes) => (false, bytes, true),
        };
        let limit = self.message_limit();
        let buffer = match (&mut self.fragments, first) {
            (None, true) => self.fragments.insert(Vec::new()),
            (Some(buffer), false) => buffer,
            _ => return self.close(ctx, CloseCode::Protocol, "unexpected continuation frame"),
        };
        if buffer.len() + bytes.len() > limit {
            return self.close(ctx, CloseCode::Size, "message too big");
        }
        buffer.extend_from_slice(&bytes);
        if !last {
            return;
        }
        let joined = self.fragments.take().unwrap_or_default();
        match String::from_utf8(joined) {
            Ok(text) => self.on_text(&text, ctx),
            Err(_) => self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8"),
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.stats.bytes_in.inc_by(text.len() as u64);
        if text.len() > self.message_limit() {
            return self.close(ctx, CloseCode::Size, "message too big");
        }
        match decode_client_message(text, self.settings.canvas) {
            Ok(message) => {
                self.invalid_in_a_row = 0;
                self.forward(message, ctx);
            }
            Err(rejection) => self.reject(rejection, ctx),
        }
    }

    fn forward(&mut self, message: ClientMessage, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let from = self.id;
        match message {
            ClientMessage::Draw(segment) => {
                if self.throttle(ctx) {
                    self.stats.messages_in.with_label_values(&["draw"]).inc();
                    room.do_send(Draw {
                        from,
                        segment,
                        received: Instant::now(),
                    });
                }
            }
            ClientMessage::Clear => {
                if self.throttle(ctx) {
                    self.stats.messages_in.with_label_values(&["clear"]).inc();
                    room.do_send(Clear { from });
                }
            }
            ClientMessage::CanvasState { client_id, data } => {
                if let Err(rejection) = check_png_snapshot(&data, self.settings.canvas) {
                    return self.reject(rejection, ctx);
                }
                self.snapshot_requests_open = self.snapshot_requests_open.saturating_sub(1);
                self.stats
                    .messages_in
                    .with_label_values(&["canvasState"])
                    .inc();
                room.do_send(SnapshotReply {
                    from,
                    for_client: client_id,
                    data,
                });
            }
        }
    }

    /// Whether a draw or clear may go to the room now; reminds a flooder now and then, and closes
    /// one that keeps on.
    fn throttle(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        match self.draws.check() {
            Throttle::Allow => true,
            Throttle::Drop { warn } => {
                if warn {
                    let message = format!(
                        "too many drawing messages (limit {} per second); some were dropped",
                        self.settings.draws_per_second
                    );
                    ctx.text(
                        Rejection::rate_limited(message)
                            .to_server_message()
                            .encode(),
                    );
                }
                false
            }
            Throttle::Close => {
                self.close(ctx, CloseCode::Policy, "rate limit exceeded");
                false
            }
        }
    }

    fn reject(&mut self, rejection: Rejection, ctx: &mut ws::WebsocketContext<Self>) {
        self.invalid_in_a_row += 1;
        if self.invalid_in_a_row >= self.settings.max_invalid_messages {
            return self.close(ctx, CloseCode::Policy, "too many invalid messages");
        }
        self.send_error(&rejection, ctx);
    }

    fn send_error(&self, rejection: &Rejection, ctx: &mut ws::WebsocketContext<Self>) {
        self.stats
            .errors
            .with_label_values(&[rejection.code.as_str()])
            .inc();
        ctx.text(rejection.to_server_message().encode());
    }
}

/// Heartbeats start on the next multiple of `HEARTBEAT_SLOT` (counted from the first call), one full
/// interval from now at least; pings of connections made within one slot then fire together.
fn heartbeat_start(interval: Duration) -> tokio::time::Instant {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let earliest = tokio::time::Instant::now() + interval;
    let slot = HEARTBEAT_SLOT.as_nanos().max(1);
    let since = earliest.saturating_duration_since(epoch).as_nanos();
    let slots = since.div_ceil(slot);
    let offset = u64::try_from(slots * slot).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        log::info!(
            "connect room={} client={} peer={}",
            self.room_name,
            self.id,
            self.peer
        );
        // A client that stops reading stops this actor being polled, so its mailbox fills: the room
        // sees that (its sends fail) and drops it instead of queueing without bound.
        ctx.set_mailbox_capacity(self.settings.max_queued_messages);
        self.start_heartbeat(ctx);
        let join = JoinRoom {
            room: self.room_name.clone(),
            id: self.id,
            session: ctx.address(),
            batched: self.batch.is_some(),
        };
        // Nothing the client sends is handled before the session is in its room.
        self.registry
            .send(join)
            .into_actor(self)
            .then(|joined, session, ctx| {
                match joined {
                    Ok(Ok(room)) => session.room = Some(room),
                    Ok(Err(TooManyRooms)) => {
                        session.close(ctx, CloseCode::Again, "the server has too many rooms")
                    }
                    Err(_) => session.close(ctx, CloseCode::Error, "room unavailable"),
                }
                fut::ready(())
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(room) = &self.room {
            room.do_send(Leave { id: self.id });
        }
        log::info!("disconnect room={} client={}", self.room_name, self.id);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        let message = match item {
            Ok(message) => message,
            Err(error) => return self.on_protocol_error(error, ctx),
        };
        self.last_seen = Instant::now();
        match message {
            ws::Message::Text(text) => self.on_text(&text, ctx),
            ws::Message::Continuation(item) => self.on_fragment(item, ctx),
            ws::Message::Binary(_) => self.close(
                ctx,
                CloseCode::Unsupported,
                "binary messages are not supported",
            ),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, Deliver(frame): Deliver, ctx: &mut Self::Context) {
        let Some(pending) = self.batch.as_mut() else {
            return ctx.text(frame);
        };
        if pending.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, ctx| {
                session.flush_batch(ctx)
            });
        }
        pending.push(frame);
    }
}

impl Handler<DeliverTick> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverTick(frame): DeliverTick, ctx: &mut Self::Context) {
        self.flush_batch(ctx);
        ctx.text(frame);
    }
}

impl Handler<RequestSnapshot> for WsSession {
    type Result = ();

    fn handle(&mut self, request: RequestSnapshot, ctx: &mut Self::Context) {
        self.snapshot_requests_open += 1;
        let message = ServerMessage::CanvasRequest {
            client_id: request.newcomer,
        };
        ctx.text(message.encode());
    }
}

impl Handler<WithdrawSnapshotRequest> for WsSession {
    type Result = ();

    fn handle(&mut self, _: WithdrawSnapshotRequest, _ctx: &mut Self::Context) {
        self.snapshot_requests_open = self.snapshot_requests_open.saturating_sub(1);
    }
}

impl Handler<Kick> for WsSession {
    type Result = ();

    fn handle(&mut self, kick: Kick, ctx: &mut Self::Context) {
        // The room has already let this session go; do not tell it again.
        self.room = None;
        self.close(ctx, kick.code, kick.reason);
    }
}
