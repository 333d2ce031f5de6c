//! The session's writing half: what it writes (`Outgoing`), the WebSocket encoder over a buffer
//! that does not stay large (`ReleasingCodec`), and the socket as actix's `FramedWrite` needs it
//! (`SocketWriter`).
//!
//! It must never let the write buffer grow without bound behind a client that stops reading, and
//! never keep a grown buffer once it has been written out.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use actix::io::FramedWrite;
use actix_http::ws::{self, ProtocolError};
use bytes::{Bytes, BytesMut};
use prometheus::IntGauge;
use tokio::io::AsyncWrite;

use super::direct::Direct;

/// A write buffer a burst grew beyond this (a newcomer's presence list, a picture of 2 MiB or
/// more, a burst of strokes) is given back once it has been written, at the next frame queued:
/// an idle connection must hold next to nothing, however much it was once sent.
pub(super) const WRITE_BUFFER_KEPT_BYTES: usize = 256;

/// The writing half of the socket, whatever it is (TCP, or TLS over TCP).
pub(super) type Writer =
    FramedWrite<Outgoing, SocketWriter<Box<dyn AsyncWrite + Unpin>>, ReleasingCodec>;

/// What the session writes: a message to encode, or the rest of a frame the room began to write
/// directly (see `direct`).
pub(super) enum Outgoing {
    Message(ws::Message),
    Encoded(Bytes),
}

/// actix-http's WebSocket encoder, over a buffer that does not stay large. actix's `FramedWrite`
/// keeps its buffer's allocation for good, so every member would hold the largest burst it was
/// ever sent until it left; this gives a grown buffer back at the first encode after it has been
/// written out (a session sends a `Nop`, which encodes nothing, 100 ms after a frame that grew
/// it, and any frame queued does the same), and counts the connections holding one in
/// `livecanvas_grown_write_buffers`.
///
/// It also counts what it encodes for the socket's direct writes (see `direct`), which wait while
/// the writer holds anything.
pub(super) struct ReleasingCodec {
    pub(super) codec: ws::Codec,
    pub(super) holding_large: bool,
    pub(super) direct: Option<Rc<Direct>>,
    /// `Stats::grown_write_buffers`.
    pub(super) grown: IntGauge,
}

impl ReleasingCodec {
    pub(super) fn new(direct: Option<Rc<Direct>>, grown: IntGauge) -> Self {
        ReleasingCodec {
            codec: ws::Codec::new(),
            holding_large: false,
            direct,
            grown,
        }
    }

    pub(super) fn set_holding(&mut self, holding: bool) {
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
pub(super) struct SocketWriter<W> {
    pub(super) io: W,
    pub(super) half_close: Rc<Cell<bool>>,
    /// Told what the socket took, for direct writes (see `direct`).
    pub(super) direct: Option<Rc<Direct>>,
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
