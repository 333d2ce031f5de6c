//! `WsSession`: the actor behind one WebSocket connection.
//!
//! It owns the connection's socket once the upgrade is done (reading frames with actix-http's
//! WebSocket codec, writing through an actix `FramedWrite`), its framing (joining fragmented
//! messages, size limits, close codes), its heartbeat, and the decoding and validation of what the
//! client sends, so that its room only ever receives typed, valid messages. It must never forward a
//! message it has not validated, never panic on what a client sends, and always leave its room when
//! it stops, whatever the reason.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::io::WriteHandler;
use actix::prelude::*;
use actix_http::ws::{self, CloseCode, CloseReason, Item, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::Settings;
use crate::history::AuthorId;
use crate::http::limits::{ConnectionPermit, CursorLimiter, DrawLimiter, Throttle};
use crate::moderation::Standing;
use crate::protocol::{
    batch_frame, check_png_snapshot, decode_client_message, ClientMessage, Rejection,
};
use crate::registry::{JoinRoom, RoomRegistry, TooManyRooms};
use crate::room::direct::{self, Direct};
use crate::room::{
    CanvasServer, Clear, CursorMove, Draw, Figure, JoinAnswer, Leave, Place, SetName,
    SnapshotReply, Toggle,
};
use crate::stats::Stats;

mod admitted;
mod handlers;
mod reader;
pub(crate) mod utf8_guard;
mod writer;

pub use admitted::{connect_in_memory, Admitted};
use reader::Incoming;
use writer::{Outgoing, Writer, WRITE_BUFFER_KEPT_BYTES};

/// Heartbeat pings are due only on multiples of this, so that many share one wake-up; a ping is
/// at most this much later than `--heartbeat-interval` says.
const HEARTBEAT_SLOT: Duration = Duration::from_millis(250);
/// How long a newcomer waits for its room to answer (the room may first read its canvas from
/// disk) before it is closed with 1013 and [`JOIN_TIMED_OUT`].
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The close reason of a join that got no answer in time.
const JOIN_TIMED_OUT: &str = "the room did not answer in time; try again";
/// After its close frame is written, a session keeps reading (and discarding) what the client still
/// sends, for at most this long or [`LINGER_MAX_BYTES`], until the client's own close frame or the
/// end of its stream: closing a socket with unread bytes makes the kernel send a reset, and the
/// client would never see the close frame (a flooder never learnt it was closed with 1008).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`LINGER_TIMEOUT`].
const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long a closing session waits for its close frame (and what precedes it) to reach the
/// socket before it lets go of a client that does not read.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon after queuing a frame that grew the write buffer (a newcomer's presence list, a
/// picture) the session looks whether it has been written, to give the buffer back. Not at the
/// next frame, which for an idle member is the next heartbeat ping: a join storm would keep every
/// newcomer's buffer until then and free them all together, leaving holes between the members'
/// own allocations that the allocator cannot return (1.6 KiB a member in rooms of 20).
const WRITE_BUFFER_RELEASE_DELAY: Duration = Duration::from_millis(100);

pub struct WsSession {
    id: Uuid,
    /// Who the browser is, for undo rights.
    author: AuthorId,
    /// Frames for the client: encoded into its buffer and written as the socket takes them.
    out: Writer,
    /// Set once a close frame is queued: nothing more is written, and nothing read is handled
    /// (but while `handing_over`).
    closing: bool,
    /// Closed because the server is stopping: what the client sent before it read the close
    /// (strokes on the wire) is still handed to the room, up to the client's own close frame, so
    /// that a rolling restart loses no stroke.
    handing_over: bool,
    /// Where the closing handshake stands (see [`LINGER_TIMEOUT`]).
    linger: Linger,
    /// Set to end the socket's writing half right after the close frame (see [`SocketWriter`]).
    half_close: Rc<Cell<bool>>,
    /// For a TCP socket: what its room needs to write to it directly (see `direct`).
    direct: Option<Rc<Direct>>,
    /// This connection's place in the server's connection counts, released when the actor drops.
    _permit: Option<ConnectionPermit>,
    /// Made at the first draw: a member who only watches (most of a big room) never pays for it.
    draws: Option<Box<DrawLimiter>>,
    /// Cursor moves beyond their rate are dropped silently (see `presence::CURSORS_PER_SECOND`).
    /// Made at the first move, as `draws` is.
    cursors: Option<Box<CursorLimiter>>,
    room_name: Arc<str>,
    peer: String,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    registry: Addr<RoomRegistry>,
    /// Known once the registry has answered the join.
    room: Option<Addr<CanvasServer>>,
    last_seen: Instant,
    /// A fragmented text message being joined, and how much of it is known to be valid UTF-8.
    fragments: Option<(Vec<u8>, usize)>,
    invalid_in_a_row: u32,
    /// For a client that asked for batched delivery: the frames gathered for the next tick.
    batch: Option<Vec<ByteString>>,
    /// `canvasRequest`s sent to this client and not yet answered: while there is one, the client may
    /// send one message up to the snapshot size limit.
    snapshot_requests_open: usize,
    /// What its link makes of it (a view link's: what would change the picture is refused
    /// here, `read_only`; a locked room's rule is the room's).
    standing: Standing,
    /// See [`Admitted::refuse`].
    refuse: Option<(CloseCode, &'static str)>,
    /// A look at the write buffer is due (see [`WRITE_BUFFER_RELEASE_DELAY`]).
    release_due: bool,
}

impl WsSession {
    fn new(
        admitted: Admitted,
        out: Writer,
        half_close: Rc<Cell<bool>>,
        direct: Option<Rc<Direct>>,
    ) -> Self {
        let Admitted {
            room_name,
            peer,
            permit,
            batched,
            author,
            standing,
            refuse,
            settings,
            stats,
            registry,
        } = admitted;
        WsSession {
            id: Uuid::new_v4(),
            author: author.unwrap_or_else(AuthorId::random),
            out,
            closing: false,
            handing_over: false,
            linger: Linger::default(),
            half_close,
            direct,
            _permit: permit,
            draws: None,
            cursors: None,
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
            standing,
            refuse,
            release_due: false,
        }
    }

    /// Queues a frame for the client, unless the session is closing.
    fn send(&mut self, message: ws::Message) {
        if !self.closing {
            self.take_gathered();
            self.out.write(Outgoing::Message(message));
        }
    }

    /// Whether the room may write to the socket directly (see `direct`).
    fn set_direct_open(&self, open: bool) {
        if let Some(direct) = &self.direct {
            direct.set_open(open && !self.closing);
        }
    }

    /// What the room gathered for the socket goes before anything the session writes itself.
    fn take_gathered(&mut self) {
        if let Some(gathered) = self
            .direct
            .as_ref()
            .and_then(|direct| direct.take_gathered())
        {
            self.out.write(Outgoing::Encoded(gathered));
        }
    }

    /// A message from the room is being handled: the room's direct writes wait for that.
    fn handling_room_message(&self) {
        if let Some(direct) = &self.direct {
            direct.handled_from_mailbox();
        }
    }

    fn text(&mut self, frame: impl Into<ByteString>) {
        self.send(ws::Message::Text(frame.into()));
    }

    /// After a frame that grows the write buffer past its idle size, gives the buffer back once
    /// it is written: a `Nop` encodes nothing but lets [`ReleasingCodec`] see the buffer empty.
    /// (If the client is still reading then, the next frame it is sent does the same.) One look
    /// at a time, however many such frames come.
    fn release_when_written(&mut self, frame_bytes: usize, ctx: &mut Context<Self>) {
        if frame_bytes > WRITE_BUFFER_KEPT_BYTES && !self.release_due {
            self.release_due = true;
            ctx.run_later(WRITE_BUFFER_RELEASE_DELAY, |session, _| {
                session.release_due = false;
                session.send(ws::Message::Nop)
            });
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
    fn flush_batch(&mut self) {
        let Some(pending) = self.batch.as_mut() else {
            return;
        };
        let frame = batch_frame(pending.iter());
        pending.clear();
        if let Some(frame) = frame {
            self.text(frame);
        }
    }

    /// Sends a close frame after whatever is queued, and stops once it is written (or after
    /// `CLOSE_FLUSH_TIMEOUT`, for a client that does not read).
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        if self.closing {
            return;
        }
        self.flush_batch();
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
        self.send(ws::Message::Close(Some(CloseReason {
            code,
            description: Some(reason.to_owned()),
        })));
        self.finish_writing(ctx);
    }

    /// Writes nothing more. The actor stops once what is queued has reached the socket
    /// (`WriteHandler::finished`) and the client has answered the close or gone (lingering at
    /// most `LINGER_TIMEOUT` for that), or after `CLOSE_FLUSH_TIMEOUT` whatever the client does.
    fn finish_writing(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.set_direct_open(false);
        self.out.close();
        ctx.run_later(CLOSE_FLUSH_TIMEOUT, |_, ctx| ctx.stop());
    }

    /// The client answered the close (or its stream ended): nothing more will be read.
    fn peer_done(&mut self, ctx: &mut Context<Self>) {
        self.linger.peer_done = true;
        if self.linger.written {
            ctx.stop();
        }
    }

    /// While closing, what the client sends is read and thrown away, up to a bound.
    fn linger_on(&mut self, frame: &ws::Frame, ctx: &mut Context<Self>) {
        if let ws::Frame::Close(_) = frame {
            return self.peer_done(ctx);
        }
        self.linger.discarded += match frame {
            ws::Frame::Text(bytes) | ws::Frame::Binary(bytes) => bytes.len(),
            ws::Frame::Continuation(
                Item::FirstText(bytes)
                | Item::FirstBinary(bytes)
                | Item::Continue(bytes)
                | Item::Last(bytes),
            ) => bytes.len(),
            ws::Frame::Ping(bytes) | ws::Frame::Pong(bytes) => bytes.len(),
            ws::Frame::Close(_) => 0,
        };
        if self.linger.discarded >= LINGER_MAX_BYTES {
            ctx.stop();
        }
    }

    /// Pings on `--heartbeat-interval`, at instants shared by every session (see
    /// [`heartbeat_start`]), so that a worker wakes up once for many pings rather than once per
    /// connection: with 19,000 idle clients, per-connection timers kept both threads waking
    /// thousands of times a second.
    fn start_heartbeat(&mut self, ctx: &mut Context<Self>) {
        let interval = self.settings.heartbeat_interval;
        ctx.run_interval_at(heartbeat_start(interval), interval, |session, ctx| {
            if session.last_seen.elapsed() > session.settings.client_timeout {
                session.close(ctx, CloseCode::Normal, "heartbeat timeout");
            } else {
                session.send(ws::Message::Ping(Bytes::new()));
            }
        });
    }

    fn on_protocol_error(&mut self, error: ProtocolError, ctx: &mut Context<Self>) {
        match protocol_close(&error) {
            Some((code, reason)) => {
                self.half_close.set(true);
                self.close(ctx, code, &reason);
            }
            // The connection is already gone.
            None => ctx.stop(),
        }
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut Context<Self>) {
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
        let (buffer, valid_up_to) = match (&mut self.fragments, first) {
            (None, true) => self.fragments.insert((Vec::new(), 0)),
            (Some(fragments), false) => fragments,
            _ => return self.close(ctx, CloseCode::Protocol, "unexpected continuation frame"),
        };
        if buffer.len() + bytes.len() > limit {
            return self.close(ctx, CloseCode::Size, "message too big");
        }
        buffer.extend_from_slice(&bytes);
        // Fail fast: invalid UTF-8 closes the connection in the fragment that carries it, not when
        // the message ends (RFC 6455 8.1). Only what is new is checked; a character cut by the end
        // of a fragment is not an error until the message ends.
        match std::str::from_utf8(&buffer[*valid_up_to..]) {
            Ok(_) => *valid_up_to = buffer.len(),
            Err(err) if err.error_len().is_none() && !last => *valid_up_to += err.valid_up_to(),
            Err(_) => return self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8"),
        }
        if !last {
            return;
        }
        let (joined, _) = self.fragments.take().unwrap_or_default();
        match String::from_utf8(joined) {
            Ok(text) => self.on_text(&text, ctx),
            Err(_) => self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8"),
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
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

    fn forward(&mut self, message: ClientMessage, ctx: &mut Context<Self>) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let from = self.id;
        let message_kind = match &message {
            ClientMessage::Undo(_) => "undo",
            ClientMessage::Redo(_) => "redo",
            _ => "",
        };
        if self.standing.read_only() && message.changes_canvas() {
            // Throttled like the draws it stands for, so a flood of refusals is closed as one.
            if self.throttle(ctx) {
                self.send_error(&Rejection::read_only());
            }
            return;
        }
        match message {
            ClientMessage::Draw(segment) => {
                if self.throttle(ctx) {
                    self.stats.messages_in.with_label_values(&["draw"]).inc();
                    room.do_send(Draw {
                        from,
                        author: self.author,
                        segment,
                        received: Instant::now(),
                    });
                }
            }
            ClientMessage::Shape(shape) => self.place(Figure::Shape(shape), "shape", &room, ctx),
            ClientMessage::Text(text) => self.place(Figure::Text(text), "text", &room, ctx),
            ClientMessage::Clear(stroke_id) => {
                if self.throttle(ctx) {
                    self.stats.messages_in.with_label_values(&["clear"]).inc();
                    room.do_send(Clear {
                        from,
                        author: self.author,
                        stroke_id,
                    });
                }
            }
            ClientMessage::Undo(stroke_id) | ClientMessage::Redo(stroke_id) => {
                let undo = matches!(message_kind, "undo");
                if self.throttle(ctx) {
                    self.stats
                        .messages_in
                        .with_label_values(&[message_kind])
                        .inc();
                    room.do_send(Toggle {
                        from,
                        author: self.author,
                        stroke_id,
                        undo,
                    });
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
            // A name counts against the drawing rate: a flood of renames is throttled (and
            // closed) like a flood of strokes, and the room coalesces the announcements.
            ClientMessage::Name(name) => {
                if self.throttle(ctx) {
                    self.stats.messages_in.with_label_values(&["name"]).inc();
                    room.do_send(SetName { from, name });
                }
            }
            ClientMessage::Cursor { x, y } => {
                let cursors = self.cursors.get_or_insert_with(Box::default);
                if cursors.allow() {
                    self.stats.messages_in.with_label_values(&["cursor"]).inc();
                    room.do_send(CursorMove { from, x, y });
                }
            }
        }
    }

    /// Sends a shape or text to the room, counted against the drawing rate like a segment.
    fn place(
        &mut self,
        figure: Figure,
        kind: &'static str,
        room: &Addr<CanvasServer>,
        ctx: &mut Context<Self>,
    ) {
        if self.throttle(ctx) {
            self.stats.messages_in.with_label_values(&[kind]).inc();
            room.do_send(Place {
                from: self.id,
                author: self.author,
                figure,
            });
        }
    }

    /// Whether a draw or clear may go to the room now; reminds a flooder now and then, and closes
    /// one that keeps on.
    fn throttle(&mut self, ctx: &mut Context<Self>) -> bool {
        let draws = self
            .draws
            .get_or_insert_with(|| Box::new(DrawLimiter::new(&self.settings)));
        match draws.check() {
            Throttle::Allow => true,
            Throttle::Drop { warn } => {
                if warn {
                    let message = format!(
                        "too many drawing messages (limit {} per second); some were dropped",
                        self.settings.draws_per_second
                    );
                    self.text(
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

    fn reject(&mut self, rejection: Rejection, ctx: &mut Context<Self>) {
        self.invalid_in_a_row += 1;
        if self.invalid_in_a_row >= self.settings.max_invalid_messages {
            return self.close(ctx, CloseCode::Policy, "too many invalid messages");
        }
        self.send_error(&rejection);
    }

    fn send_error(&mut self, rejection: &Rejection) {
        self.stats
            .errors
            .with_label_values(&[rejection.code.as_str()])
            .inc();
        self.text(rejection.to_server_message().encode());
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

impl WsSession {
    /// The room's answer to the join, or why there was none.
    fn joined(
        &mut self,
        answer: Result<Result<JoinAnswer, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
        ctx: &mut Context<Self>,
    ) {
        match answer {
            Ok(Ok(JoinAnswer::Welcome(frame))) => {
                self.text(frame);
                // From now on the room may write to the socket itself, after this welcome.
                self.set_direct_open(true);
            }
            Ok(Ok(JoinAnswer::Refused { code, reason })) => {
                // The room has already let this session go; do not tell it again.
                self.room = None;
                self.close(ctx, code, reason);
            }
            Ok(Err(_)) => {
                log::error!(
                    "room={} client={} the room stopped without answering the join",
                    self.room_name,
                    self.id
                );
                self.room = None;
                self.close(ctx, CloseCode::Error, "room unavailable");
            }
            Err(_) => {
                log::error!(
                    "room={} client={} no answer to the join within {}s",
                    self.room_name,
                    self.id,
                    JOIN_TIMEOUT.as_secs()
                );
                self.close(ctx, CloseCode::Again, JOIN_TIMED_OUT);
            }
        }
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

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
        if let Some((code, reason)) = self.refuse.take() {
            return self.close(ctx, code, reason);
        }
        if let Some(direct) = &self.direct {
            direct::register(self.id, direct);
        }
        self.start_heartbeat(ctx);
        let join = JoinRoom {
            room: self.room_name.clone(),
            id: self.id,
            session: ctx.address().recipient(),
            batched: self.batch.is_some(),
            standing: self.standing,
        };
        // Nothing the client sends is handled before the room has answered, so `welcome` is
        // always the client's first frame. Both waits are bounded, and neither depends on this
        // actor's own mailbox or spawned futures: the registry answers at once, and the room
        // answers through a channel of its own.
        let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
        self.registry
            .send(join)
            .timeout(JOIN_TIMEOUT)
            .into_actor(self)
            .map(move |joined, session, ctx| match joined {
                Ok(Ok(joining)) => {
                    session.room = Some(joining.room);
                    let answer = tokio::time::timeout_at(deadline, joining.answer);
                    ctx.wait(
                        answer
                            .into_actor(session)
                            .map(|answer, session, ctx| session.joined(answer, ctx)),
                    );
                }
                Ok(Err(TooManyRooms)) => {
                    session.close(ctx, CloseCode::Again, "the server has too many rooms")
                }
                Err(err) => {
                    log::error!(
                        "room={} client={} the room registry did not take the join: {err}",
                        session.room_name,
                        session.id
                    );
                    match err {
                        MailboxError::Timeout => {
                            session.close(ctx, CloseCode::Again, JOIN_TIMED_OUT)
                        }
                        MailboxError::Closed => {
                            session.close(ctx, CloseCode::Error, "room unavailable")
                        }
                    }
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.direct.is_some() {
            self.set_direct_open(false);
            direct::unregister(self.id);
        }
        if let Some(room) = &self.room {
            room.do_send(Leave { id: self.id });
        }
        log::info!("disconnect room={} client={}", self.room_name, self.id);
    }
}

impl StreamHandler<Result<Incoming, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<Incoming, ProtocolError>, ctx: &mut Self::Context) {
        let frame = match item {
            Ok(Incoming::InvalidUtf8) if self.closing => return,
            Ok(Incoming::InvalidUtf8) => {
                return self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8")
            }
            Ok(Incoming::Frame(frame)) if self.closing => {
                if let (true, ws::Frame::Text(bytes)) = (self.handing_over, &frame) {
                    if let Ok(text) = std::str::from_utf8(bytes) {
                        self.on_text(text, ctx);
                    }
                }
                return self.linger_on(&frame, ctx);
            }
            Ok(Incoming::Frame(frame)) => frame,
            // What a closing session cannot parse ends its reading (see `ClientFrames`).
            Err(_) if self.closing => return,
            Err(error) => return self.on_protocol_error(error, ctx),
        };
        self.last_seen = Instant::now();
        match frame {
            ws::Frame::Text(bytes) => match ByteString::try_from(bytes) {
                Ok(text) => self.on_text(&text, ctx),
                Err(_) => self.close(ctx, CloseCode::Invalid, "text is not valid UTF-8"),
            },
            ws::Frame::Continuation(item) => self.on_fragment(item, ctx),
            ws::Frame::Binary(_) => self.close(
                ctx,
                CloseCode::Unsupported,
                "binary messages are not supported",
            ),
            ws::Frame::Ping(payload) => self.send(ws::Message::Pong(payload)),
            ws::Frame::Pong(_) => {}
            ws::Frame::Close(reason) => {
                // Answer with the client's own code, as RFC 6455 asks; the client has said all
                // it will.
                self.send(ws::Message::Close(reason));
                self.linger.peer_done = true;
                self.finish_writing(ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            // Half-closed after (or instead of) its close frame: once ours is out, stop.
            self.peer_done(ctx);
        } else {
            // The client is gone: nobody reads what is queued.
            ctx.stop();
        }
    }
}

/// The writer stops the session when the socket fails. Once a close has been written, the session
/// lingers until the client answers (see [`LINGER_TIMEOUT`]).
impl WriteHandler<ProtocolError> for WsSession {
    fn error(&mut self, err: ProtocolError, ctx: &mut Self::Context) -> Running {
        log::debug!(
            "room={} client={} write failed: {err}",
            self.room_name,
            self.id
        );
        // actix calls `finished` next; the connection is gone, so there is nothing to linger for.
        ctx.stop();
        Running::Stop
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.linger.written = true;
        if self.linger.peer_done {
            ctx.stop();
        } else {
            ctx.run_later(LINGER_TIMEOUT, |_, ctx| ctx.stop());
        }
    }
}

/// The closing handshake, seen from a session that is closing.
#[derive(Default)]
struct Linger {
    /// The close frame (and everything before it) has been written.
    written: bool,
    /// The client sent its close frame, or its stream ended.
    peer_done: bool,
    /// Bytes read and thrown away since the close.
    discarded: usize,
}

/// The close code and an honest reason for a frame the codec refused; `None` when the
/// connection itself failed (there is nobody to tell).
fn protocol_close(error: &ProtocolError) -> Option<(CloseCode, String)> {
    let reason = match error {
        ProtocolError::Overflow => return Some((CloseCode::Size, "message too big".into())),
        // actix-http reports reserved bits as an I/O error of kind InvalidData (its TODO for a
        // variant of their own); any other I/O error is the connection failing.
        ProtocolError::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            "reserved bits set, but no extension was negotiated".into()
        }
        ProtocolError::Io(_) => return None,
        // The codec's name for a close frame it refused (its TODO for variants of their own).
        ProtocolError::BadOpCode => {
            "invalid close frame: a reserved close code, or a reason that is not UTF-8".into()
        }
        ProtocolError::InvalidOpcode(opcode) => format!("reserved opcode {opcode}"),
        ProtocolError::InvalidLength(_) => "a control frame longer than 125 bytes".into(),
        ProtocolError::UnmaskedFrame => "client frames must be masked".into(),
        other => other.to_string(),
    };
    Some((CloseCode::Protocol, reason))
}
