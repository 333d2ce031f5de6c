//! `Admitted`: a connection the HTTP side admitted to a room, before it has its socket, and the
//! server's own in-memory connection (`connect_in_memory`, for the health probe).
//!
//! It must never start a session for a connection the room has not been asked to take.

use std::cell::Cell;
use std::io::Cursor;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::io::FramedWrite;
use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::config::Settings;
use crate::history::AuthorId;
use crate::http::limits::ConnectionPermit;
use crate::moderation::Standing;
use crate::registry::{PlaceSession, RoomRegistry};
use crate::room::direct::{Direct, SharedTcp};
use crate::stats::Stats;

use super::reader::{ClientCodec, ClientFrames, ReadReady, SNAPSHOT_ENVELOPE_BYTES};
use super::writer::{ReleasingCodec, SocketWriter};
use super::WsSession;

/// How long a new connection waits to learn its room's thread before it starts where it is (its
/// deliveries then cross threads, which costs CPU, not correctness).
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// What its link makes of it in its room (a view link's: nothing that changes the picture is
    /// forwarded).
    pub standing: Standing,
    /// Closed with this code and reason as soon as it starts, without joining: 1013 while the
    /// store is down (whether the room is private cannot be known, and every join is refused
    /// meanwhile), or a page's upgrade to a private room without one of its tokens.
    pub refuse: Option<(CloseCode, &'static str)>,
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
        R: AsyncRead + ReadReady + Unpin + 'static,
    {
        // A copy: the HTTP side's buffer is 8 KiB, and the reader keeps what it chains for good.
        let reader = Cursor::new(Bytes::copy_from_slice(read_ahead)).chain(reader);
        // The codec must let a requested snapshot through; the session enforces the small limit
        // on everything else.
        let frame_limit = self.settings.max_snapshot_bytes + SNAPSHOT_ENVELOPE_BYTES;
        // No buffer yet: `ClientFrames` makes one when the first bytes arrive.
        let frames = FramedRead::with_capacity(reader, ClientCodec::new(frame_limit), 0);
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
        standing: Standing::Anyone,
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
