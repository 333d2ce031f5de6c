//! RFC 6455 conformance, case by case, for what Autobahn|Testsuite found: a frame with
//! reserved bits gets a 1002 close frame, invalid UTF-8 fails fast in the fragment that carries it,
//! a refused close frame is named honestly, and `welcome` is always the first message. Frames are
//! written byte by byte here, as a broken client would write them.

mod common;

use std::time::Duration;

use common::{Server, EVENT_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection written and read at the byte level.
struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// A frame from the server: its opcode and payload.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl ServerFrame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    fn text(&self) -> String {
        let from = if self.opcode == 0x8 { 2 } else { 0 };
        String::from_utf8_lossy(self.payload.get(from..).unwrap_or_default()).into_owned()
    }
}

/// A masked client frame: `first` is the FIN/RSV/opcode byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let length = u8::try_from(payload.len()).expect("a short frame");
    assert!(length < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first, 0x80 | length];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

const TEXT: u8 = 0x81;
const RSV1: u8 = 0x40;

impl RawClient {
    /// Upgrades, sending `along` in the same write as the request.
    async fn connect(server: &Server, along: &[u8]) -> RawClient {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut bytes = b"GET /ws/main HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        bytes.extend_from_slice(along);
        stream.write_all(&bytes).await.expect("write");
        let mut client = RawClient {
            stream,
            buffer: Vec::new(),
        };
        let head_end = loop {
            if let Some(at) = client.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            client.fill().await;
        };
        assert!(
            client.buffer.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&client.buffer)
        );
        client.buffer.drain(..head_end);
        client
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(EVENT_DEADLINE, self.stream.read(&mut chunk))
            .await
            .expect("bytes before the deadline")
            .expect("read");
        assert!(read > 0, "the connection ended");
        self.buffer.extend_from_slice(&chunk[..read]);
    }

    async fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.expect("write");
    }

    /// The next frame from the server (unmasked, lengths up to 16 bits are enough here).
    async fn next_frame(&mut self) -> ServerFrame {
        loop {
            if self.buffer.len() >= 2 {
                let (length, start) = match self.buffer[1] & 0x7f {
                    126 if self.buffer.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                        4,
                    ),
                    126 => (usize::MAX, 0),
                    short => (usize::from(short), 2),
                };
                if length != usize::MAX && self.buffer.len() >= start + length {
                    let opcode = self.buffer[0] & 0x0f;
                    let payload = self.buffer[start..start + length].to_vec();
                    self.buffer.drain(..start + length);
                    return ServerFrame { opcode, payload };
                }
            }
            self.fill().await;
        }
    }

    /// Skips frames until the server's close frame.
    async fn next_close(&mut self) -> ServerFrame {
        loop {
            let frame = self.next_frame().await;
            if frame.opcode == 0x8 {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn a_frame_with_reserved_bits_gets_a_1002_close_frame_that_says_so() {
    let server = Server::start();
    let mut client = RawClient::connect(&server, &[]).await;
    client.send(&client_frame(TEXT | RSV1, b"{}")).await;
    let close = client.next_close().await;
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert!(close.text().contains("reserved bits"), "{}", close.text());
}

#[tokio::test]
async fn a_close_frame_with_a_reserved_code_gets_1002_and_an_honest_reason() {
    let server = Server::start();
    let mut client = RawClient::connect(&server, &[]).await;
    client
        .send(&client_frame(0x88, &5000u16.to_be_bytes()))
        .await;
    let close = client.next_close().await;
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert!(close.text().contains("close code"), "{}", close.text());
    assert!(!close.text().contains("opcode"), "{}", close.text());
}

#[tokio::test]
async fn invalid_utf8_in_a_middle_fragment_closes_at_once_with_1007() {
    let server = Server::start();
    let mut client = RawClient::connect(&server, &[]).await;
    // A first fragment, then one with a byte that is never UTF-8; the message is never finished,
    // so only a server that checks each fragment answers.
    client.send(&client_frame(0x01, br#"{"type":"#)).await;
    client.send(&client_frame(0x00, &[b'"', 0xff, b'"'])).await;
    let close = tokio::time::timeout(Duration::from_secs(5), client.next_close())
        .await
        .expect("closed before the message ends");
    assert_eq!(close.close_code(), Some(1007), "{close:?}");
}

/// The header of a masked text frame that announces `length` bytes (16-bit length), with its key.
fn long_text_header(length: u16) -> (Vec<u8>, [u8; 4]) {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut header = vec![TEXT, 0x80 | 126];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&key);
    (header, key)
}

#[tokio::test]
async fn invalid_utf8_early_in_a_frame_closes_at_once_with_1007_before_the_frame_ends() {
    let server = Server::start();
    let mut client = RawClient::connect(&server, &[]).await;
    // Autobahn 6.4.3: one frame of 1,000 bytes whose bad byte is among the first; the rest never
    // comes, so only a server that checks bytes as they arrive answers.
    let (mut bytes, key) = long_text_header(1000);
    let start: &[u8] = &[b'{', b'"', 0xce, 0xba, 0xf4, 0x90, 0x80, 0x80];
    bytes.extend(start.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    client.send(&bytes).await;
    let close = tokio::time::timeout(Duration::from_secs(5), client.next_close())
        .await
        .expect("closed before the frame ends");
    assert_eq!(close.close_code(), Some(1007), "{close:?}");
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_limit_is_refused_before_its_payload_arrives() {
    let server = Server::start_with(&["--max-snapshot-bytes", "100000"]);
    let mut client = RawClient::connect(&server, &[]).await;
    // A 64-bit length far past the frame limit, then only the key: a server that waits for the
    // payload would buffer whatever the client chose to send.
    let mut header = vec![TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    client.send(&header).await;
    let close = tokio::time::timeout(Duration::from_secs(5), client.next_close())
        .await
        .expect("closed before the payload");
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
}

#[tokio::test]
async fn a_character_split_across_fragments_is_not_invalid() {
    let server = Server::start();
    let mut client = RawClient::connect(&server, &[]).await;
    let message = r#"{"type":"nonsense","note":"é"}"#.as_bytes();
    // Split inside the two bytes of "é".
    let cut = message.iter().position(|&b| b == 0xc3).expect("é") + 1;
    client.send(&client_frame(0x01, &message[..cut])).await;
    client.send(&client_frame(0x80, &message[cut..])).await;
    loop {
        let frame = client.next_frame().await;
        assert_ne!(frame.opcode, 0x8, "closed: {}", frame.text());
        if frame.text().contains(r#""type":"error""#) {
            assert!(frame.text().contains("nonsense"), "{}", frame.text());
            break;
        }
    }
}

#[tokio::test]
async fn welcome_is_the_first_message_even_when_a_bad_frame_comes_with_the_upgrade() {
    let server = Server::start();
    // The race was on the order of a few in a hundred; a handful of tries shows it.
    for attempt in 0..20 {
        let mut client = RawClient::connect(&server, &client_frame(TEXT, b"not json")).await;
        let first = client.next_frame().await;
        assert!(
            first.text().contains(r#""type":"welcome""#),
            "attempt {attempt}: the first message was {}",
            first.text()
        );
        loop {
            let frame = client.next_frame().await;
            if frame.text().contains(r#""type":"error""#) {
                break;
            }
        }
    }
}
