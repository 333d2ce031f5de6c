//! Direct delivery: a room writes the frames for a member whose session runs on the room's own
//! thread straight into that member's socket, without a message to the session.
//!
//! A relayed stroke is one frame per recipient, and on loopback its `send` is about 5.5 µs; the
//! actor path around it (a mailbox push, the session's task woken and polled, its writer's task
//! polled, the frame copied into the writer's buffer) was most of the rest (`bench/profile.sh`).
//! The room gathers a member's frames while it handles its mailbox and writes them with one `send`
//! when it has handled what was there (a room's senders often draw at the same instants, and the
//! actor path sent their frames together too: writing each at once was slower, see docs/architecture.md).
//!
//! It owns the shared TCP socket of a session ([`SharedTcp`], both its halves) and the small state
//! that says when a direct write keeps the socket's byte order: the session has sent its
//! `welcome` and is not closing, its own writer holds nothing unwritten, and no message from the
//! room waits in its mailbox. Whatever the socket does not take at once goes through the session,
//! and the session takes what the room gathered before it writes anything itself. It must never
//! write anything but whole text frames, or anything while the session's own bytes or the room's
//! earlier messages are still on their way: the session stays the one that owns the connection
//! (heartbeat, reading, closing, eviction).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Frames larger than this always go through the session (pictures: it gives their buffer back).
const DIRECT_MAX_BYTES: usize = 32 * 1024;

/// A TCP socket shared by its session's reader, its writer and [`Direct`]: tokio's socket reads
/// and writes through `&self`, so no lock is needed (as `tokio::io::split` has).
#[derive(Clone)]
pub struct SharedTcp(Rc<TcpStream>);

impl SharedTcp {
    pub fn new(socket: TcpStream) -> SharedTcp {
        SharedTcp(Rc::new(socket))
    }

    pub fn socket(&self) -> &TcpStream {
        &self.0
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `poll_read_ready` registers for the next.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let socket = socket2::SockRef::from(&*self.0);
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

/// What a room may know about a member's socket to write to it directly.
pub struct Direct {
    socket: SharedTcp,
    /// The session has written its `welcome` and is not closing.
    open: Cell<bool>,
    /// Bytes the session's own writer has taken and the socket has not.
    queued: Cell<usize>,
    /// Messages from the room in the session's mailbox, not handled yet.
    in_mailbox: Cell<usize>,
    /// Frames the room gathered for the socket and has not written yet.
    gathered: RefCell<Vec<u8>>,
}

/// What became of gathered frames.
pub enum Written {
    /// The socket took all of them (or there were none).
    All,
    /// The socket took a part, or nothing; the rest (already encoded) must go through the
    /// session, before anything else.
    Rest(Bytes),
}

impl Direct {
    pub fn new(socket: SharedTcp) -> Direct {
        Direct {
            socket,
            open: Cell::new(false),
            queued: Cell::new(0),
            in_mailbox: Cell::new(0),
            gathered: RefCell::new(Vec::new()),
        }
    }

    /// Adds `frame` to what the room writes at the end of its turn, if that keeps the socket's byte
    /// order; `Some(true)` if it is the first frame gathered since the last write, `None` if the
    /// frame must go through the session.
    pub fn gather(&self, frame: &ByteString) -> Option<bool> {
        let clear = self.open.get() && self.queued.get() == 0 && self.in_mailbox.get() == 0;
        if !clear || frame.len() > DIRECT_MAX_BYTES {
            return None;
        }
        let mut gathered = self.gathered.borrow_mut();
        let first = gathered.is_empty();
        let mut header = [0u8; 4];
        gathered.extend_from_slice(text_frame_header(frame.len(), &mut header));
        gathered.extend_from_slice(frame.as_bytes());
        Some(first)
    }

    /// Writes what was gathered, with one `send`.
    pub fn write_gathered(&self) -> Written {
        // Given back at once: an idle member holds no gathering buffer.
        let gathered = std::mem::take(&mut *self.gathered.borrow_mut());
        if gathered.is_empty() {
            return Written::All;
        }
        // Full (or failing): the session's writer waits for the socket, or reports the error.
        let written = self.socket.0.try_write(&gathered).unwrap_or(0);
        if written == gathered.len() {
            return Written::All;
        }
        let mut rest = gathered;
        rest.drain(..written);
        Written::Rest(Bytes::from(rest))
    }

    /// What the room gathered and has not written, for the session to write before its own.
    pub fn take_gathered(&self) -> Option<Bytes> {
        let mut gathered = self.gathered.borrow_mut();
        if gathered.is_empty() {
            return None;
        }
        Some(Bytes::from(std::mem::take(&mut *gathered)))
    }

    /// The room sent the session a message: direct writes wait until it is handled.
    pub fn sent_to_mailbox(&self) {
        self.in_mailbox.set(self.in_mailbox.get() + 1);
    }

    /// The session handled a message from the room.
    pub fn handled_from_mailbox(&self) {
        self.in_mailbox.set(self.in_mailbox.get().saturating_sub(1));
    }

    pub fn set_open(&self, open: bool) {
        self.open.set(open);
    }

    /// The session's writer took `bytes` more to write.
    pub fn queue(&self, bytes: usize) {
        self.queued.set(self.queued.get() + bytes);
    }

    /// The socket took `bytes` of what the session's writer held.
    pub fn written(&self, bytes: usize) {
        self.queued.set(self.queued.get().saturating_sub(bytes));
    }
}

/// The header of an unmasked, final text frame of `len` bytes (`len` ≤ 65,535).
fn text_frame_header(len: usize, header: &mut [u8; 4]) -> &[u8] {
    header[0] = 0x81;
    if len < 126 {
        header[1] = len as u8;
        &header[..2]
    } else {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        &header[..4]
    }
}

thread_local! {
    /// The sessions running on this thread that can be written to directly, by client id: a room
    /// on this thread finds its member here at join (a member on another thread is not here).
    static ON_THIS_THREAD: RefCell<HashMap<Uuid, Weak<Direct>>> = RefCell::new(HashMap::new());
}

/// A session on this thread offers `direct` to its room.
pub fn register(id: Uuid, direct: &Rc<Direct>) {
    ON_THIS_THREAD.with(|sessions| sessions.borrow_mut().insert(id, Rc::downgrade(direct)));
}

pub fn unregister(id: Uuid) {
    ON_THIS_THREAD.with(|sessions| sessions.borrow_mut().remove(&id));
}

/// The direct handle of session `id`, if it runs on this thread. The room keeps it weak: the socket
/// closes when its session ends, whatever the room still holds.
pub fn find(id: Uuid) -> Option<Weak<Direct>> {
    ON_THIS_THREAD.with(|sessions| sessions.borrow().get(&id).cloned())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A connected pair on loopback: the server's end as a `Direct`, and the client's end.
    async fn pair() -> (Direct, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let client = TcpStream::connect(address).await.expect("connects");
        let (server, _) = listener.accept().await.expect("accepts");
        (Direct::new(SharedTcp::new(server)), client)
    }

    fn text(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[tokio::test]
    async fn frames_gathered_in_a_turn_leave_in_order_as_whole_frames() {
        let (direct, mut client) = pair().await;
        direct.set_open(true);
        assert_eq!(direct.gather(&text("one")), Some(true));
        assert_eq!(direct.gather(&text("two")), Some(false));
        assert!(matches!(direct.write_gathered(), Written::All));
        let mut read = [0u8; 10];
        client.read_exact(&mut read).await.expect("both frames");
        assert_eq!(&read, b"\x81\x03one\x81\x03two");
    }

    #[tokio::test]
    async fn nothing_is_gathered_before_welcome_while_the_session_writes_or_after_a_room_message() {
        let (direct, _client) = pair().await;
        assert_eq!(direct.gather(&text("early")), None, "before the welcome");
        direct.set_open(true);
        direct.queue(10);
        assert_eq!(
            direct.gather(&text("x")),
            None,
            "the session's writer holds bytes"
        );
        direct.written(10);
        direct.sent_to_mailbox();
        assert_eq!(
            direct.gather(&text("x")),
            None,
            "a room message is in the mailbox"
        );
        direct.handled_from_mailbox();
        assert_eq!(direct.gather(&text("x")), Some(true));
        direct.set_open(false);
        assert_eq!(direct.gather(&text("y")), None, "closing");
    }

    #[tokio::test]
    async fn a_picture_goes_through_the_session() {
        let (direct, _client) = pair().await;
        direct.set_open(true);
        let large = ByteString::from("a".repeat(DIRECT_MAX_BYTES + 1));
        assert_eq!(direct.gather(&large), None);
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_handed_back_whole() {
        let (direct, _client) = pair().await;
        // The client reads nothing: fill the socket until it takes no more.
        let filler = vec![0u8; 64 * 1024];
        while direct.socket.0.try_write(&filler).is_ok() {}
        direct.set_open(true);
        direct.gather(&text("late"));
        let Written::Rest(rest) = direct.write_gathered() else {
            panic!("a full socket cannot take the frame");
        };
        assert_eq!(&rest[..], b"\x81\x04late");
        assert_eq!(direct.take_gathered(), None, "handed back once, not kept");
    }

    #[test]
    fn a_short_frame_has_a_one_byte_length() {
        let mut header = [0u8; 4];
        assert_eq!(text_frame_header(5, &mut header), &[0x81, 5]);
        assert_eq!(text_frame_header(125, &mut header), &[0x81, 125]);
    }

    #[test]
    fn a_longer_frame_has_a_16_bit_length() {
        let mut header = [0u8; 4];
        assert_eq!(text_frame_header(126, &mut header), &[0x81, 126, 0, 126]);
        assert_eq!(
            text_frame_header(DIRECT_MAX_BYTES, &mut header),
            &[0x81, 126, 0x80, 0x00]
        );
    }
}
