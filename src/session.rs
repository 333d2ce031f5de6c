//! `WsSession`: the actor behind one WebSocket connection.
//!
//! It owns the connection's socket once the upgrade is done (reading frames with actix-http's
//! WebSocket codec, writing through an actix `FramedWrite`), its framing (joining fragmented
//! messages, size limits, close codes), its heartbeat, and the decoding and validation of what the
//! client sends, so that its room only ever receives typed, valid messages. It must never forward a
//! message it has not validated, never panic on what a client sends, and always leave its room when
//! it stops, whatever the reason.

use std::cell::Cell;
use std::io::Cursor;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use actix_http::ws::{self, CloseCode, CloseReason, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use uuid::Uuid;

use crate::config::Settings;
use crate::direct::{self, Direct, SharedTcp};
use crate::history::AuthorId;
use crate::limits::{ConnectionPermit, CursorLimiter, DrawLimiter, Throttle};
use crate::protocol::{
    batch_frame, check_png_snapshot, decode_client_message, ClientMessage, Rejection, ServerMessage,
};
use crate::registry::{JoinRoom, PlaceSession, RoomRegistry, TooManyRooms};
use crate::room::{
    CanvasServer, Clear, CursorMove, Draw, JoinAnswer, Leave, SetName, SnapshotReply, Toggle,
};
use crate::stats::Stats;
use crate::utf8_guard::{announced_length, Utf8Guard};

/// Heartbeat pings are due only on multiples of this, so that many share one wake-up; a ping is
/// at most this much later than `--heartbeat-interval` says.
const HEARTBEAT_SLOT: Duration = Duration::from_millis(250);
/// What a connection reads into at first. Clients send small messages (a stroke is ~150 bytes), and
/// an idle connection keeps this buffer, so it is small; a snapshot grows it as far as it needs.
const READ_BUFFER_BYTES: usize = 256;
/// Room for the JSON envelope around the largest accepted PNG data URL: the codec's frame limit is
/// `--max-snapshot-bytes` plus this.
const SNAPSHOT_ENVELOPE_BYTES: usize = 4 * 1024;
/// A read buffer a snapshot grew beyond this is given back once it is empty, rather than kept for
/// the rest of the connection.
const READ_BUFFER_KEPT_BYTES: usize = 16 * 1024;
/// How long a newcomer waits for its room to answer (the room may first read its canvas from
/// disk) before it is closed with 1013 and [`JOIN_TIMED_OUT`].
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The close reason of a join that got no answer in time.
/// How long a new connection waits to learn its room's thread before it starts where it is (its
/// deliveries then cross threads, which costs CPU, not correctness).
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(5);
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
/// A write buffer a burst grew beyond this (a newcomer's presence list, a picture of 2 MiB or
/// more, a burst of strokes) is given back once it has been written, at the next frame queued:
/// an idle connection must hold next to nothing, however much it was once sent.
const WRITE_BUFFER_KEPT_BYTES: usize = 256;
/// Above this, a frame's buffer is given back this soon after it is queued rather than at the
/// next frame (which for an idle connection is the next heartbeat ping).
const LARGE_FRAME_BYTES: usize = 64 * 1024;
/// How soon after queuing a large frame the session looks whether it has been written, to give
/// its buffer back.
const WRITE_BUFFER_RELEASE_DELAY: Duration = Duration::from_millis(100);

/// The writing half of the socket, whatever it is (TCP, or TLS over TCP).
type Writer = FramedWrite<Outgoing, SocketWriter<Box<dyn AsyncWrite + Unpin>>, ReleasingCodec>;

/// What the session writes: a message to encode, or the rest of a frame the room began to write
/// directly (see `direct`).
enum Outgoing {
    Message(ws::Message),
    Encoded(Bytes),
}

/// actix-http's WebSocket encoder, over a buffer that does not stay large. actix's `FramedWrite`
/// keeps its buffer's allocation for good, so every member would hold the largest burst it was
/// ever sent until it left; this gives a grown buffer back at the first encode after it has been
/// written out (a session sends a `Nop`, which encodes nothing, soon after a large frame; after a
/// smaller burst the next frame does, at the latest the next heartbeat ping), and counts the
/// connections holding one in `livecanvas_grown_write_buffers`.
///
/// It also counts what it encodes for the socket's direct writes (see `direct`), which wait while
/// the writer holds anything.
struct ReleasingCodec {
    codec: ws::Codec,
    holding_large: bool,
    direct: Option<Rc<Direct>>,
    /// `Stats::grown_write_buffers`.
    grown: IntGauge,
}

impl ReleasingCodec {
    fn new(direct: Option<Rc<Direct>>, grown: IntGauge) -> Self {
        ReleasingCodec {
            codec: ws::Codec::new(),
            holding_large: false,
            direct,
            grown,
        }
    }

    fn set_holding(&mut self, holding: bool) {
        if holding != self.holding_large {
            self.holding_large = holding;
            if holding {
                self.grown.inc();
            } else {
                self.grown.dec();
            }
        }
    }
}

impl Drop for ReleasingCodec {
    fn drop(&mut self) {
        self.set_holding(false);
    }
}

impl tokio_util::codec::Encoder<Outgoing> for ReleasingCodec {
    type Error = ProtocolError;

    fn encode(&mut self, outgoing: Outgoing, buffer: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.holding_large && buffer.is_empty() {
            *buffer = BytesMut::new();
            self.set_holding(false);
        }
        let before = buffer.len();
        match outgoing {
            Outgoing::Message(message) => self.codec.encode(message, buffer)?,
            Outgoing::Encoded(bytes) => buffer.extend_from_slice(&bytes),
        }
        if let Some(direct) = &self.direct {
            direct.queue(buffer.len() - before);
        }
        if buffer.capacity() > WRITE_BUFFER_KEPT_BYTES {
            self.set_holding(true);
        }
        Ok(())
    }
}

/// The socket's writing half as actix's `FramedWrite` needs it.
///
/// `FramedWrite` holds back its actor only when a write fails with `WouldBlock` (as its sockets
/// once did); tokio's sockets answer `Pending` instead, and the writer's buffer would then grow
/// without bound behind a client that stops reading. This answers `WouldBlock` when the socket is
/// full, so that the session stops taking messages, its mailbox fills, and its room drops it. The
/// socket has registered the wake-up when it answered `Pending`.
///
/// `FramedWrite` never shuts its writer down; once `half_close` is set, the next flush (the one
/// after the close frame) also ends the writing half (a FIN), for a client whose frames can no
/// longer be parsed: its close frame could not be recognised, so the server closes TCP first
/// without waiting for it, as RFC 6455 7.1.1 asks, and drains until the client closes too.
struct SocketWriter<W> {
    io: W,
    half_close: Rc<Cell<bool>>,
    /// Told what the socket took, for direct writes (see `direct`).
    direct: Option<Rc<Direct>>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SocketWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => Poll::Ready(Err(std::io::ErrorKind::WouldBlock.into())),
            Poll::Ready(Ok(written)) => {
                if let Some(direct) = &self.direct {
                    direct.written(written);
                }
                Poll::Ready(Ok(written))
            }
            failed => failed,
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        if self.half_close.get() {
            return Pin::new(&mut self.io).poll_shutdown(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

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

/// A connection the HTTP side has admitted to a room and answered with 101; it becomes a
/// `WsSession` once the upgrade has its socket (see `websocket`).
pub struct Admitted {
    pub room_name: Arc<str>,
    pub peer: String,
    /// The connection's place in the server's counts; `None` for the health probe, which is not
    /// a client.
    pub permit: Option<ConnectionPermit>,
    pub batched: bool,
    /// Who this browser is, for undo (`?author=`); `None`: a new author per connection.
    pub author: Option<AuthorId>,
    /// Joined a private room with its view link: nothing that changes the picture is forwarded.
    pub read_only: bool,
    /// Closed with 1013 and this reason as soon as it starts, without joining: the store is down,
    /// so whether the room is private cannot be known (and every join is refused meanwhile).
    pub refuse: Option<&'static str>,
    pub settings: Arc<Settings>,
    pub stats: Arc<Stats>,
    pub registry: Addr<RoomRegistry>,
}

impl Admitted {
    /// Starts the session on the thread that runs its room (or will, once its first member
    /// joins; here, on the HTTP worker, if the room is large: see `RoomRegistry::arbiter_for`), so that every delivery from the room to it, and every draw from it to the room, stays
    /// on one thread: no cross-thread wake-up per frame. `socket` travels there as it is, and
    /// `begin` starts the session with it on that thread (a TCP socket first registers with that
    /// thread's reactor).
    pub async fn start_near_room<S>(
        self,
        socket: S,
        begin: fn(Admitted, S, &[u8]) -> std::io::Result<()>,
        read_ahead: Bytes,
    ) where
        S: Send + 'static,
    {
        let place = self.registry.send(PlaceSession {
            room: self.room_name.clone(),
        });
        let thread = match tokio::time::timeout(PLACEMENT_TIMEOUT, place).await {
            Ok(Ok(thread)) => thread,
            _ => None,
        };
        let peer = self.peer.clone();
        let start = move || {
            if let Err(error) = begin(self, socket, &read_ahead) {
                log::warn!("peer={peer} socket lost on its way to its room: {error}");
            }
        };
        match thread {
            Some(thread) => {
                if !thread.spawn_fn(start) {
                    log::error!("the room thread stopped before a session could start on it");
                }
            }
            None => start(),
        }
    }

    /// Starts the session's actor on this thread, owning `io`; `read_ahead` is what the client
    /// sent after its upgrade request and the HTTP side had already read.
    pub fn start<T>(self, io: T, read_ahead: &[u8]) -> Addr<WsSession>
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (reader, writer) = tokio::io::split(io);
        self.start_with(reader, Box::new(writer), None, read_ahead)
    }

    /// `start`, as `start_near_room` calls it.
    pub fn begin<T>(self, io: T, read_ahead: &[u8]) -> std::io::Result<()>
    where
        T: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        self.start(io, read_ahead);
        Ok(())
    }

    /// Like `start`, for a plain TCP socket: its room, if it runs on this thread, may write to it
    /// directly (see `direct`).
    pub fn start_tcp(self, socket: TcpStream, read_ahead: &[u8]) -> Addr<WsSession> {
        let socket = SharedTcp::new(socket);
        let direct = Rc::new(Direct::new(socket.clone()));
        self.start_with(socket.clone(), Box::new(socket), Some(direct), read_ahead)
    }

    fn start_with<R>(
        self,
        reader: R,
        writer: Box<dyn AsyncWrite + Unpin>,
        direct: Option<Rc<Direct>>,
        read_ahead: &[u8],
    ) -> Addr<WsSession>
    where
        R: AsyncRead + Unpin + 'static,
    {
        // A copy: the HTTP side's buffer is 8 KiB, and the reader keeps what it chains for good.
        let reader = Cursor::new(Bytes::copy_from_slice(read_ahead)).chain(reader);
        // The codec must let a requested snapshot through; the session enforces the small limit
        // on everything else.
        let frame_limit = self.settings.max_snapshot_bytes + SNAPSHOT_ENVELOPE_BYTES;
        let frames =
            FramedRead::with_capacity(reader, ClientCodec::new(frame_limit), READ_BUFFER_BYTES);
        WsSession::create(move |ctx| {
            ctx.add_stream(ClientFrames {
                frames,
                draining: None,
            });
            let codec = ReleasingCodec::new(direct.clone(), self.stats.grown_write_buffers.clone());
            let half_close = Rc::new(Cell::new(false));
            let writer = SocketWriter {
                io: writer,
                half_close: half_close.clone(),
                direct: direct.clone(),
            };
            let out = FramedWrite::new(writer, codec, ctx);
            WsSession::new(self, out, half_close, direct)
        })
    }
}

/// Connects to `room` over an in-memory socket of `buffer_bytes`, through the same placement and
/// join as a client's connection, for the server itself (the health probe): not counted among the
/// connections, unbatched. Returns the client's end; dropping it is the disconnect.
pub async fn connect_in_memory(
    room: &str,
    peer: &str,
    settings: &Arc<Settings>,
    stats: &Arc<Stats>,
    registry: &Addr<RoomRegistry>,
    buffer_bytes: usize,
) -> tokio::io::DuplexStream {
    let (server_end, client_end) = tokio::io::duplex(buffer_bytes);
    let admitted = Admitted {
        room_name: Arc::from(room),
        peer: peer.to_owned(),
        permit: None,
        batched: false,
        author: None,
        read_only: false,
        refuse: None,
        settings: settings.clone(),
        stats: stats.clone(),
        registry: registry.clone(),
    };
    admitted
        .start_near_room(server_end, Admitted::begin, Bytes::new())
        .await;
    client_end
}

/// actix-http's WebSocket decoder with two checks it makes too late for a server that must not be
/// made to wait or to buffer:
///
/// - text is checked for UTF-8 as its bytes arrive ([`Utf8Guard`]), so that a frame whose bad byte
///   comes early fails at once (RFC 6455 8.1: fail fast) rather than when its last byte is in;
/// - a frame that announces more than the size limit is refused as soon as its header is in: the
///   codec itself waits for the whole frame before it compares, and meanwhile the read buffer grew
///   to whatever the client chose to send.
struct ClientCodec {
    codec: ws::Codec,
    max_frame_bytes: usize,
    /// `None` once it has found invalid text: it has said what it had to.
    guard: Option<Utf8Guard>,
    /// How much of the read buffer the guard has seen (the codec only removes from the front).
    fed: usize,
    /// The guard found invalid text that no complete frame has carried out yet.
    invalid_pending: bool,
}

/// What the codec reads from a client.
enum Incoming {
    Frame(ws::Frame),
    /// Text that is not UTF-8, found before the frame carrying it is complete. Not a codec error:
    /// the frames stay parseable, so the client's answer to the 1007 close can still be read.
    InvalidUtf8,
}

impl ClientCodec {
    fn new(max_frame_bytes: usize) -> ClientCodec {
        ClientCodec {
            codec: ws::Codec::new().max_size(max_frame_bytes),
            max_frame_bytes,
            guard: Some(Utf8Guard::new()),
            fed: 0,
            invalid_pending: false,
        }
    }
}

impl tokio_util::codec::Decoder for ClientCodec {
    type Item = Incoming;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        if let Some(guard) = &mut self.guard {
            if guard.feed(src.get(self.fed..).unwrap_or_default()).is_err() {
                self.guard = None;
                self.invalid_pending = true;
            }
        }
        if announced_length(src).is_some_and(|(bytes, _)| bytes > self.max_frame_bytes as u64) {
            return Err(ProtocolError::Overflow);
        }
        let frame = self.codec.decode(src)?;
        self.fed = src.len();
        // Complete frames go out first: they were sent before the bad bytes (and if one holds
        // them, the session's own check of it closes with 1007).
        match frame {
            Some(frame) => Ok(Some(Incoming::Frame(frame))),
            None if std::mem::take(&mut self.invalid_pending) => Ok(Some(Incoming::InvalidUtf8)),
            None => Ok(None),
        }
    }
}

/// The frames a client sends, read into a buffer that does not stay large after a snapshot.
///
/// After a frame it cannot parse, the codec can find no further frame boundary, so the bytes that
/// follow are read and thrown away (up to [`LINGER_MAX_BYTES`]) until the client closes: the
/// session is closing the connection by then, and unread bytes would turn its close into a reset.
struct ClientFrames<R> {
    frames: FramedRead<R, ClientCodec>,
    /// Bytes discarded since the codec failed; `None` while it parses.
    draining: Option<usize>,
}

impl<R: AsyncRead + Unpin> ClientFrames<R> {
    /// Reads and discards until the end of the stream or the byte bound; never yields a frame.
    fn drain(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<<Self as futures_util::Stream>::Item>> {
        let mut scratch = [0u8; 4096];
        loop {
            let discarded = self.draining.get_or_insert(0);
            if *discarded >= LINGER_MAX_BYTES {
                return Poll::Ready(None);
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(self.frames.get_mut()).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(None),
                Poll::Ready(Ok(())) => *discarded += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<R: AsyncRead + Unpin> futures_util::Stream for ClientFrames<R> {
    type Item = Result<Incoming, ProtocolError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        if self.draining.is_some() {
            return self.drain(cx);
        }
        let frames = &mut self.frames;
        let polled = Pin::new(&mut *frames).poll_next(cx);
        let buffer = frames.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEPT_BYTES {
            *buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
        }
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.frames.read_buffer_mut().clear();
            self.draining = Some(0);
        }
        polled
    }
}

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
    draws: DrawLimiter,
    /// Cursor moves beyond their rate are dropped silently (see `presence::CURSORS_PER_SECOND`).
    cursors: CursorLimiter,
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
    /// Joined with a view link: what would change the picture is refused (`read_only`).
    read_only: bool,
    /// See [`Admitted::refuse`].
    refuse: Option<&'static str>,
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
            read_only,
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
            draws: DrawLimiter::new(&settings),
            cursors: CursorLimiter::new(),
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
            read_only,
            refuse,
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

    /// After a large frame (a picture), gives the write buffer back once it is written: a `Nop`
    /// encodes nothing but lets [`ReleasingCodec`] see the buffer empty. (If the client is still
    /// reading the picture then, the next frame it is sent does the same.)
    fn release_after_large(&mut self, frame_bytes: usize, ctx: &mut Context<Self>) {
        if frame_bytes > LARGE_FRAME_BYTES {
            ctx.run_later(WRITE_BUFFER_RELEASE_DELAY, |session, _| {
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
        if self.read_only && message.changes_canvas() {
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
                if self.cursors.allow() {
                    self.stats.messages_in.with_label_values(&["cursor"]).inc();
                    room.do_send(CursorMove { from, x, y });
                }
            }
        }
    }

    /// Whether a draw or clear may go to the room now; reminds a flooder now and then, and closes
    /// one that keeps on.
    fn throttle(&mut self, ctx: &mut Context<Self>) -> bool {
        match self.draws.check() {
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
        if let Some(reason) = self.refuse.take() {
            return self.close(ctx, CloseCode::Again, reason);
        }
        if let Some(direct) = &self.direct {
            direct::register(self.id, direct);
        }
        self.start_heartbeat(ctx);
        let join = JoinRoom {
            room: self.room_name.clone(),
            id: self.id,
            session: ctx.address(),
            batched: self.batch.is_some(),
            read_only: self.read_only,
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

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, Deliver(frame): Deliver, ctx: &mut Self::Context) {
        self.handling_room_message();
        self.release_after_large(frame.len(), ctx);
        let Some(pending) = self.batch.as_mut() else {
            return self.text(frame);
        };
        if pending.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, _| session.flush_batch());
        }
        pending.push(frame);
    }
}

impl Handler<DeliverMany> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverMany(frames): DeliverMany, ctx: &mut Self::Context) {
        self.handling_room_message();
        let Some(pending) = self.batch.as_mut() else {
            for frame in frames {
                self.text(frame);
            }
            return;
        };
        if pending.is_empty() && !frames.is_empty() {
            ctx.run_later(self.settings.batch_tick, |session, _| session.flush_batch());
        }
        pending.extend(frames);
    }
}

impl Handler<DeliverRest> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverRest(rest): DeliverRest, _ctx: &mut Self::Context) {
        self.handling_room_message();
        if !self.closing {
            self.take_gathered();
            self.out.write(Outgoing::Encoded(rest));
        }
    }
}

impl Handler<DeliverTick> for WsSession {
    type Result = ();

    fn handle(&mut self, DeliverTick(frame): DeliverTick, ctx: &mut Self::Context) {
        self.handling_room_message();
        self.release_after_large(frame.len(), ctx);
        self.flush_batch();
        self.text(frame);
    }
}

impl Handler<RequestSnapshot> for WsSession {
    type Result = ();

    fn handle(&mut self, request: RequestSnapshot, _ctx: &mut Self::Context) {
        self.handling_room_message();
        self.snapshot_requests_open += 1;
        let message = ServerMessage::CanvasRequest {
            client_id: request.newcomer,
        };
        self.text(message.encode());
    }
}

impl Handler<WithdrawSnapshotRequest> for WsSession {
    type Result = ();

    fn handle(&mut self, _: WithdrawSnapshotRequest, _ctx: &mut Self::Context) {
        self.handling_room_message();
        self.snapshot_requests_open = self.snapshot_requests_open.saturating_sub(1);
    }
}

impl Handler<Kick> for WsSession {
    type Result = ();

    fn handle(&mut self, kick: Kick, ctx: &mut Self::Context) {
        self.handling_room_message();
        if kick.hand_over {
            self.handing_over = true;
        } else {
            // The room has already let this session go; do not tell it again.
            self.room = None;
        }
        self.close(ctx, kick.code, kick.reason);
    }
}
