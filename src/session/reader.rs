//! The session's reading half: actix-http's WebSocket decoder with its early checks
//! (`ClientCodec`: UTF-8 as the bytes arrive, sizes as soon as a header announces them) and the
//! frames a client sends read into a buffer that does not stay large (`ClientFrames`).
//!
//! It must never wait for a whole oversized frame before refusing it, never keep a buffer a
//! snapshot grew once it is empty, and never hold a buffer for a TCP client that sends nothing.

use std::io::Cursor;
use std::pin::Pin;
use std::task::Poll;

use actix_http::ws::{self, ProtocolError};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, Chain, ReadHalf};
use tokio_util::codec::FramedRead;

use crate::room::direct::SharedTcp;

use super::utf8_guard::{announced_length, Utf8Guard};

use super::LINGER_MAX_BYTES;

/// What a connection reads into once bytes arrive. Clients send small messages (a stroke is ~150
/// bytes); a snapshot grows it as far as it needs.
pub(super) const READ_BUFFER_BYTES: usize = 256;
/// Room for the JSON envelope around the largest accepted PNG data URL: the codec's frame limit is
/// `--max-snapshot-bytes` plus this.
pub(super) const SNAPSHOT_ENVELOPE_BYTES: usize = 4 * 1024;
/// A read buffer a snapshot grew beyond this is given back once it is empty, rather than kept for
/// the rest of the connection.
pub(super) const READ_BUFFER_KEPT_BYTES: usize = 16 * 1024;

/// actix-http's WebSocket decoder with two checks it makes too late for a server that must not be
/// made to wait or to buffer:
///
/// - text is checked for UTF-8 as its bytes arrive ([`Utf8Guard`]), so that a frame whose bad byte
///   comes early fails at once (RFC 6455 8.1: fail fast) rather than when its last byte is in;
/// - a frame that announces more than the size limit is refused as soon as its header is in: the
///   codec itself waits for the whole frame before it compares, and meanwhile the read buffer grew
///   to whatever the client chose to send.
pub(super) struct ClientCodec {
    pub(super) codec: ws::Codec,
    pub(super) max_frame_bytes: usize,
    /// `None` once it has found invalid text: it has said what it had to.
    pub(super) guard: Option<Utf8Guard>,
    /// How much of the read buffer the guard has seen (the codec only removes from the front).
    pub(super) fed: usize,
    /// The guard found invalid text that no complete frame has carried out yet.
    pub(super) invalid_pending: bool,
}

/// What the codec reads from a client.
pub(super) enum Incoming {
    Frame(ws::Frame),
    /// Text that is not UTF-8, found before the frame carrying it is complete. Not a codec error:
    /// the frames stay parseable, so the client's answer to the 1007 close can still be read.
    InvalidUtf8,
}

impl ClientCodec {
    pub(super) fn new(max_frame_bytes: usize) -> ClientCodec {
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
pub(super) struct ClientFrames<R> {
    pub(super) frames: FramedRead<R, ClientCodec>,
    /// Bytes discarded since the codec failed; `None` while it parses.
    pub(super) draining: Option<usize>,
}

impl<R: AsyncRead + ReadReady + Unpin> ClientFrames<R> {
    /// Reads and discards until the end of the stream or the byte bound; never yields a frame.
    pub(super) fn drain(
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

impl<R: AsyncRead + ReadReady + Unpin> futures_util::Stream for ClientFrames<R> {
    type Item = Result<Incoming, ProtocolError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        if self.draining.is_some() {
            return self.drain(cx);
        }
        let frames = &mut self.frames;
        if frames.read_buffer().capacity() == 0 {
            // Idle: a buffer only once the socket has bytes for it.
            if frames.get_ref().poll_read_ready(cx).is_pending() {
                return Poll::Pending;
            }
            *frames.read_buffer_mut() = BytesMut::with_capacity(READ_BUFFER_BYTES);
        }
        let polled = Pin::new(&mut *frames).poll_next(cx);
        let buffer = frames.read_buffer_mut();
        if buffer.is_empty() {
            if polled.is_pending() && R::TELLS_READINESS {
                // Everything read was handled: wait for more without a buffer (most members of a
                // big room only watch).
                *buffer = BytesMut::new();
            } else if buffer.capacity() > READ_BUFFER_KEPT_BYTES {
                *buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
            }
        }
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.frames.read_buffer_mut().clear();
            self.draining = Some(0);
        }
        polled
    }
}

/// A reader that can tell, without being read, that bytes (or the end) have arrived: a session on
/// such a reader holds no read buffer while its client is quiet.
pub(crate) trait ReadReady {
    /// Whether [`ReadReady::poll_read_ready`] can wait; `false`: it is always ready, and the
    /// session keeps its buffer.
    const TELLS_READINESS: bool;

    /// `Ready` once a read would not block; `Pending` arranges a wake-up when one would not.
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()>;
}

/// A plain TCP socket: the reactor says when it is readable.
impl ReadReady for SharedTcp {
    const TELLS_READINESS: bool = true;

    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        // An error is ready too: the read that follows reports it.
        self.socket().poll_read_ready(cx).map(|_| ())
    }
}

/// Any other stream (TLS): rustls may hold decrypted bytes the socket no longer shows.
impl<T> ReadReady for ReadHalf<T> {
    const TELLS_READINESS: bool = false;

    fn poll_read_ready(&self, _: &mut std::task::Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// What the HTTP side read ahead, then the socket.
impl<R: AsyncRead + ReadReady> ReadReady for Chain<Cursor<Bytes>, R> {
    const TELLS_READINESS: bool = R::TELLS_READINESS;

    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let (read_ahead, socket) = self.get_ref();
        if read_ahead.has_remaining() {
            return Poll::Ready(());
        }
        socket.poll_read_ready(cx)
    }
}
