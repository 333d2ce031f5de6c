//! Fail-fast UTF-8 checking of text messages while their frames are still arriving.
//!
//! RFC 6455 (8.1) asks an endpoint to fail the connection as soon as it sees that a text message
//! is not valid UTF-8. actix-http's `ws::Codec` yields whole frames only, so a single large text
//! frame whose bad byte arrives early (Autobahn 6.4.3 and 6.4.4) would be judged only once its
//! last byte is in. A [`Utf8Guard`] reads the client's bytes as they arrive, parses the frame
//! headers itself, unmasks the text payloads and validates them incrementally, so the session
//! can close with 1007 at the read that brings the bad byte.
//!
//! # Contract
//!
//! * One guard per connection, created when the connection is upgraded: the first byte it is fed
//!   is the first byte of the client's first frame.
//! * [`Utf8Guard::feed`] must see every byte the client sends, exactly once, in the order sent,
//!   with no gap. How the bytes are cut into calls does not matter: the verdict depends only on
//!   the bytes, and each byte is looked at once (work is proportional to the new bytes).
//! * `feed` returns `Err` as soon as the bytes fed so far prove that a text message is invalid:
//!   a byte sequence that nothing can complete, or a final frame that ends inside a character. A
//!   character cut by the end of what has arrived, or by the end of a non-final frame, is not an
//!   error. Once `feed` has returned `Err`, every later call returns the same error.
//! * Frames the guard does not understand (reserved bits or opcodes, an unmasked frame, a control
//!   frame that is fragmented or longer than 125 bytes, a 64-bit length with its top bit set, a
//!   continuation with no message open, a new message inside an open one) make it stop checking
//!   for good: `feed` returns `Ok` from then on, and the error is the codec's to report.
//! * The guard is an early warning, not the only check: the session still validates every text
//!   frame and message it decodes.
//!
//! # With tokio-util's `FramedRead`
//!
//! `FramedRead::poll_next` reads and decodes in one call, so a frame can be read and removed from
//! the read buffer before anything outside the reader looks at the buffer: a check after
//! `poll_next` would miss the end of such a frame, and with it a character cut at its end. The
//! one place that sees each read before the codec consumes it is the decoder, which `FramedRead`
//! calls after every read: the session's `ClientCodec` wraps `ws::Codec`, feeds the guard the part
//! of the read buffer it has not seen yet (the codec removes bytes from the front only, so the
//! buffer's length after each `decode` is what the guard has been fed), and reports invalid text
//! as an event of its own once no complete frame is left to hand out before it.

use std::fmt;

/// The longest client frame header: 2 bytes, a 64-bit length, a 4-byte masking key.
const MAX_HEADER_BYTES: usize = 14;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Payload is unmasked into a stack buffer of this size before it is validated (a multiple of
/// 4, so every piece starts at the same place in the masking key).
const SCRATCH_BYTES: usize = 512;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0F;
const MASK: u8 = 0x80;
const LENGTH: u8 = 0x7F;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PONG: u8 = 0xA;

/// Why a text message is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidUtf8 {
    /// A byte sequence that no following bytes can make valid.
    InvalidSequence,
    /// The message's final frame ends inside a character.
    Truncated,
}

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidUtf8::InvalidSequence => "text is not valid UTF-8",
            InvalidUtf8::Truncated => "text ends inside a UTF-8 character",
        })
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Watches the bytes a client sends and tells, as early as they show it, that a text message is
/// not valid UTF-8. See the [module documentation](self) for the contract.
#[derive(Debug, Default)]
pub struct Utf8Guard {
    phase: Phase,
    /// The data message open across frames, if any.
    message: Message,
    /// The start of a character cut by the end of what has been validated of the open text
    /// message (its previous frame, or the bytes that have arrived of this one).
    carry: Carry,
}

#[derive(Debug)]
enum Phase {
    /// Reading a frame header; `bytes[..len]` have arrived.
    Header {
        bytes: [u8; MAX_HEADER_BYTES],
        len: u8,
    },
    /// Reading a frame's payload.
    Payload(Payload),
    /// The stream is malformed; the codec will reject it. Nothing more is checked.
    Stopped,
    /// A text message was found invalid; sticky.
    Failed(InvalidUtf8),
}

impl Default for Phase {
    fn default() -> Self {
        Phase::Header {
            bytes: [0; MAX_HEADER_BYTES],
            len: 0,
        }
    }
}

#[derive(Debug)]
struct Payload {
    /// Payload bytes of this frame not yet arrived.
    remaining: u64,
    /// The masking key, rotated so that `key[0]` applies to the next payload byte.
    key: [u8; 4],
    /// Whether this payload is text to validate (a text frame, or a continuation of one).
    text: bool,
    /// Whether this frame ends a data message (FIN on a data frame).
    ends_message: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Message {
    #[default]
    None,
    Text,
    Binary,
}

impl Utf8Guard {
    /// A guard for a connection whose next byte starts a frame.
    pub fn new() -> Utf8Guard {
        Utf8Guard::default()
    }

    /// Takes the next bytes the client sent (any number, including none) and says whether
    /// everything fed so far is still possibly valid (`Ok`) or proves a text message invalid.
    /// Never panics and never allocates; see the [module documentation](self) for the contract.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        loop {
            match self.phase {
                Phase::Failed(invalid) => return Err(invalid),
                Phase::Stopped => return Ok(()),
                _ if bytes.is_empty() => return Ok(()),
                Phase::Header { .. } => bytes = self.read_header(bytes),
                Phase::Payload(_) => bytes = self.read_payload(bytes),
            }
        }
    }

    /// Takes header bytes from `bytes`; returns what follows them.
    fn read_header<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let Phase::Header { bytes: header, len } = &mut self.phase else {
            return bytes;
        };
        let have = usize::from(*len);
        // The header's length is known from its second byte: read two bytes first, then the rest.
        let total = if have < 2 { 2 } else { header_len(header[1]) };
        let take = total.saturating_sub(have).min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        header[have..have + take].copy_from_slice(now);
        let have = have + take;
        *len = have as u8;
        if have < total {
            return rest;
        }
        if total == 2 {
            if !plausible_start(header[0], header[1]) {
                self.phase = Phase::Stopped;
            }
            return rest;
        }
        let header = *header;
        self.start_frame(&header[..total]);
        rest
    }

    /// A whole header has arrived: check it against the message state and start its payload.
    fn start_frame(&mut self, header: &[u8]) {
        let Some(frame) = parse_header(header) else {
            self.phase = Phase::Stopped;
            return;
        };
        let text = match frame.opcode {
            CLOSE..=PONG => {
                if !frame.fin || frame.length > MAX_CONTROL_PAYLOAD {
                    self.phase = Phase::Stopped;
                    return;
                }
                false
            }
            CONTINUATION => match self.message {
                Message::None => {
                    self.phase = Phase::Stopped;
                    return;
                }
                open => open == Message::Text,
            },
            TEXT | BINARY => {
                if self.message != Message::None {
                    self.phase = Phase::Stopped;
                    return;
                }
                self.message = if frame.opcode == TEXT {
                    Message::Text
                } else {
                    Message::Binary
                };
                frame.opcode == TEXT
            }
            _ => {
                self.phase = Phase::Stopped;
                return;
            }
        };
        self.phase = Phase::Payload(Payload {
            remaining: frame.length,
            key: frame.key,
            text,
            ends_message: frame.fin && frame.opcode < CLOSE,
        });
        if frame.length == 0 {
            self.end_frame();
        }
    }

    /// Takes payload bytes from `bytes`, validating them if they are text; returns what follows.
    fn read_payload<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let Phase::Payload(payload) = &mut self.phase else {
            return bytes;
        };
        let take = match usize::try_from(payload.remaining) {
            Ok(remaining) => remaining.min(bytes.len()),
            Err(_) => bytes.len(),
        };
        let (now, rest) = bytes.split_at(take);
        if payload.text {
            let mut scratch = [0u8; SCRATCH_BYTES];
            for piece in now.chunks(SCRATCH_BYTES) {
                let plain = &mut scratch[..piece.len()];
                for ((out, byte), key) in
                    plain.iter_mut().zip(piece).zip(payload.key.iter().cycle())
                {
                    *out = byte ^ key;
                }
                if self.carry.validate(plain).is_err() {
                    self.phase = Phase::Failed(InvalidUtf8::InvalidSequence);
                    return &[];
                }
            }
        }
        payload.key.rotate_left(take % 4);
        payload.remaining -= take as u64;
        if payload.remaining == 0 {
            self.end_frame();
        }
        rest
    }

    /// The current frame's payload has all arrived: close its message if it is a final frame.
    fn end_frame(&mut self) {
        let Phase::Payload(payload) = &self.phase else {
            return;
        };
        if payload.ends_message {
            let truncated = payload.text && !self.carry.is_empty();
            self.message = Message::None;
            self.carry = Carry::default();
            if truncated {
                self.phase = Phase::Failed(InvalidUtf8::Truncated);
                return;
            }
        }
        self.phase = Phase::default();
    }
}

/// The fields of a complete client frame header.
struct FrameHeader {
    fin: bool,
    opcode: u8,
    length: u64,
    key: [u8; 4],
}

/// Whether a frame starting with these two bytes can be one the codec accepts: no reserved bits,
/// masked, a known opcode. Anything else makes the guard stop.
fn plausible_start(first: u8, second: u8) -> bool {
    first & RSV == 0
        && second & MASK != 0
        && matches!(first & OPCODE, CONTINUATION | TEXT | BINARY | CLOSE..=PONG)
}

/// The length of a masked client header whose second byte is `second`.
fn header_len(second: u8) -> usize {
    let extended = match second & LENGTH {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + 4
}

/// Reads a complete masked header (`header.len() == header_len(header[1])`); `None` if it is not
/// one the codec accepts.
fn parse_header(header: &[u8]) -> Option<FrameHeader> {
    let (&first, &second) = (header.first()?, header.get(1)?);
    if !plausible_start(first, second) {
        return None;
    }
    let (length, rest) = announced_length(header)?;
    // RFC 6455 5.2: the most significant bit of a 64-bit length must be 0.
    if length > i64::MAX as u64 {
        return None;
    }
    let key = *rest.first_chunk::<4>()?;
    Some(FrameHeader {
        fin: first & FIN != 0,
        opcode: first & OPCODE,
        length,
        key,
    })
}

/// The payload length a frame starting at `frame` announces (7 bits, or 16 or 64 after them) and
/// the bytes after the length field; `None` until the whole length field is in. Client and server
/// frames alike (the masking key, if any, starts the bytes returned).
pub(crate) fn announced_length(frame: &[u8]) -> Option<(u64, &[u8])> {
    let second = *frame.get(1)?;
    let rest = frame.get(2..)?;
    match second & LENGTH {
        126 => {
            let (bytes, rest) = rest.split_first_chunk::<2>()?;
            Some((u64::from(u16::from_be_bytes(*bytes)), rest))
        }
        127 => {
            let (bytes, rest) = rest.split_first_chunk::<8>()?;
            Some((u64::from_be_bytes(*bytes), rest))
        }
        short => Some((u64::from(short), rest)),
    }
}

/// The valid start (1 to 3 bytes) of a character whose end has not arrived yet.
#[derive(Debug, Default, Clone, Copy)]
struct Carry {
    bytes: [u8; 4],
    len: usize,
}

impl Carry {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Validates `bytes`, which follow the carried bytes in the message; on success, carries
    /// whatever character `bytes` leave unfinished. `Err` if the sequence is invalid.
    fn validate(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        if self.len > 0 {
            // Finish the carried character first, from at most 3 more bytes.
            let need = sequence_len(self.bytes[0]).saturating_sub(self.len);
            let take = need.min(bytes.len()).min(self.bytes.len() - self.len);
            let mut joined = self.bytes;
            joined[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            let joined_len = self.len + take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&joined[..joined_len]) {
                Ok(_) => self.len = 0,
                Err(error) if error.error_len().is_some() => return Err(()),
                // Still unfinished: `bytes` was too short to finish it, so nothing is left.
                Err(_) => {
                    self.bytes = joined;
                    self.len = joined_len;
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_some() => Err(()),
            Err(error) => {
                // std guarantees 1 to 3 bytes here; `min` only keeps the copy in bounds.
                let tail = &bytes[error.valid_up_to()..];
                let len = tail.len().min(3);
                self.bytes[..len].copy_from_slice(&tail[..len]);
                self.len = len;
                Ok(())
            }
        }
    }
}

/// How many bytes the character led by `lead` takes (for a lead byte that can start a valid one).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    /// Autobahn 6.4.x: valid text, a code point above U+10FFFF, valid text.
    const KOSME: &str = "κόσμε";
    const TOO_HIGH: [u8; 4] = [0xF4, 0x90, 0x80, 0x80];

    /// How a test frame writes its payload length.
    #[derive(Clone, Copy, Debug)]
    enum Length {
        Minimal,
        Extended16,
        Extended64,
    }

    /// A masked client frame.
    fn frame_with(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4], length: Length) -> Vec<u8> {
        let mut out = vec![if fin { FIN | opcode } else { opcode }];
        let len = payload.len();
        match length {
            Length::Minimal if len < 126 => out.push(MASK | len as u8),
            Length::Minimal | Length::Extended16 if len <= 0xFFFF => {
                out.push(MASK | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(MASK | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame_with(fin, opcode, payload, KEY, Length::Minimal)
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Feeds `chunks` in turn to a new guard: the index of the first chunk answered with an error.
    fn first_error(chunks: &[&[u8]]) -> Option<(usize, InvalidUtf8)> {
        let mut guard = Utf8Guard::new();
        chunks
            .iter()
            .enumerate()
            .find_map(|(i, chunk)| guard.feed(chunk).err().map(|e| (i, e)))
    }

    /// Feeds `stream` one byte at a time: the index of the first byte answered with an error.
    fn first_error_bytewise(stream: &[u8]) -> Option<(usize, InvalidUtf8)> {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        first_error(&bytes)
    }

    fn header_len_of(frame: &[u8]) -> usize {
        header_len(frame[1])
    }

    #[test]
    fn autobahn_6_4_3_fails_in_the_chunk_that_brings_the_bad_bytes() {
        let payload = concat(&[KOSME.as_bytes(), &TOO_HIGH, b"edited"]);
        let stream = frame(true, TEXT, &payload);
        let cut = header_len_of(&stream) + KOSME.len();
        let (first, rest) = stream.split_at(cut);
        let (bad, last) = rest.split_at(TOO_HIGH.len());
        // The frame's last chunk has not been fed when the error is reported.
        assert_eq!(
            first_error(&[first, bad, last]),
            Some((1, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn autobahn_6_4_4_fails_at_the_single_byte_that_makes_the_sequence_invalid() {
        let payload = concat(&[KOSME.as_bytes(), &TOO_HIGH, b"edited"]);
        let stream = frame(true, TEXT, &payload);
        let cut = header_len_of(&stream) + KOSME.len() + 1;
        // The first chunk ends with 0xF4, which may still start a character.
        let chunks = [&stream[..cut], &stream[cut..cut + 1], &stream[cut + 1..]];
        assert_eq!(
            first_error(&chunks),
            Some((1, InvalidUtf8::InvalidSequence))
        );
        // Byte by byte: at 0x90, the first byte no character can follow 0xF4 with.
        assert_eq!(
            first_error_bytewise(&stream),
            Some((cut, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn a_character_split_across_chunks_is_valid() {
        let stream = frame(true, TEXT, "a€𝄞é κόσμε".as_bytes());
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(first_error(&[a, b]), None, "cut at {cut}");
        }
        assert_eq!(first_error_bytewise(&stream), None);
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        let clef = "𝄞".as_bytes();
        let stream = concat(&[
            &frame(false, TEXT, &concat(&[b"ab", &clef[..2]])),
            &frame(false, CONTINUATION, &clef[2..3]),
            &frame(false, CONTINUATION, b""),
            &frame(true, CONTINUATION, &concat(&[&clef[3..], b"z"])),
        ]);
        assert_eq!(first_error(&[&stream]), None);
        assert_eq!(first_error_bytewise(&stream), None);
    }

    #[test]
    fn an_invalid_sequence_across_fragments_fails_in_the_later_fragment() {
        let first = frame(false, TEXT, &[b'a', 0xF0, 0x9D]);
        let second = frame(true, CONTINUATION, b"A");
        let stream = concat(&[&first, &second]);
        assert_eq!(first_error(&[&first]), None);
        assert_eq!(
            first_error_bytewise(&stream),
            Some((
                first.len() + header_len_of(&second),
                InvalidUtf8::InvalidSequence
            ))
        );
    }

    #[test]
    fn a_final_frame_ending_inside_a_character_is_truncated() {
        let stream = frame(true, TEXT, &[b'a', 0xE2, 0x82]);
        assert_eq!(
            first_error_bytewise(&stream),
            Some((stream.len() - 1, InvalidUtf8::Truncated))
        );
        // Not final: still incomplete. An empty final continuation then ends it at its header.
        let open = frame(false, TEXT, &[b'a', 0xE2, 0x82]);
        let end = frame(true, CONTINUATION, b"");
        assert_eq!(first_error(&[&open]), None);
        assert_eq!(
            first_error(&[&open, &end]),
            Some((1, InvalidUtf8::Truncated))
        );
    }

    #[test]
    fn control_frames_inside_a_fragmented_text_message_are_skipped() {
        let clef = "𝄞".as_bytes();
        // Not UTF-8 once unmasked; a control payload is not checked here.
        let junk = [0xFF, 0xFE, 0xC0, 0x80, 0xF0];
        let stream = concat(&[
            &frame(false, TEXT, &concat(&[b"x", &clef[..2]])),
            &frame(true, 0x9, &junk),
            &frame(true, PONG, &junk),
            &frame(true, 0x9, b""),
            &frame(true, CONTINUATION, &clef[2..]),
        ]);
        assert_eq!(first_error_bytewise(&stream), None);
        // The message state survived: a following text message is still checked.
        let bad = frame(true, TEXT, &[0xFF]);
        assert_eq!(
            first_error(&[&stream, &bad]),
            Some((1, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn binary_messages_are_not_checked() {
        let stream = concat(&[
            &frame(true, BINARY, &[0xFF, 0xFE]),
            &frame(false, BINARY, &[0xF0, 0x9D]),
            &frame(true, 0x9, b"ping"),
            &frame(true, CONTINUATION, &[0xC0, 0x80]),
        ]);
        assert_eq!(first_error_bytewise(&stream), None);
        let bad = frame(true, TEXT, &[b'a', 0xC0]);
        assert_eq!(
            first_error(&[&stream, &bad]),
            Some((1, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn a_16_bit_length_is_read() {
        let payload = "é".repeat(150).into_bytes();
        let long = frame_with(true, TEXT, &payload, KEY, Length::Minimal);
        assert_eq!(header_len_of(&long), 8);
        // Minimal and non-minimal encodings (the codec accepts both) are followed by a frame
        // whose bad byte is found where it is.
        let short = frame_with(true, TEXT, b"hello", KEY, Length::Extended16);
        let bad = frame(true, TEXT, &[b'a', 0xFF]);
        let stream = concat(&[&long, &short, &bad]);
        assert_eq!(
            first_error_bytewise(&stream),
            Some((
                long.len() + short.len() + header_len_of(&bad) + 1,
                InvalidUtf8::InvalidSequence
            ))
        );
        // A bad byte in the middle of a 300-byte payload, before the frame is complete.
        let mut payload = payload;
        payload[200] = 0xFF;
        let stream = frame(true, TEXT, &payload);
        assert_eq!(
            first_error_bytewise(&stream),
            Some((8 + 200, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn a_64_bit_length_is_read() {
        let payload = "€ab".repeat(14_000).into_bytes();
        assert!(payload.len() > 0xFFFF);
        let long = frame(true, TEXT, &payload);
        assert_eq!(header_len_of(&long), 14);
        let short = frame_with(true, TEXT, b"hi", KEY, Length::Extended64);
        let bad = frame(true, TEXT, &[0x80]);
        let stream = concat(&[&long, &short, &bad]);
        for size in [1, 7, 4096, 65_537] {
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            let failing = stream.len() - 1;
            assert_eq!(
                first_error(&chunks),
                Some((failing / size, InvalidUtf8::InvalidSequence)),
                "chunks of {size}"
            );
        }
        let mut payload = payload;
        payload[66_000] = 0xC0;
        let stream = frame(true, TEXT, &payload);
        assert_eq!(
            first_error_bytewise(&stream),
            Some((14 + 66_000, InvalidUtf8::InvalidSequence))
        );
    }

    #[test]
    fn characters_straddling_the_scratch_buffer_are_valid() {
        // Odd offsets put characters across every piece boundary of the unmasking buffer.
        let text = format!("a{}", "€".repeat(700));
        let stream = frame(true, TEXT, text.as_bytes());
        let whole = stream.len();
        for size in [1, 2, 3, 5, SCRATCH_BYTES - 1, SCRATCH_BYTES + 1, whole] {
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(first_error(&chunks), None, "chunks of {size}");
        }
    }

    #[test]
    fn frames_the_codec_refuses_stop_the_checking() {
        let bad_text = frame(true, TEXT, &[0xFF]);
        let mut unmasked = frame(true, TEXT, b"ok");
        unmasked[1] &= !MASK;
        let mut rsv = frame(true, TEXT, b"ok");
        rsv[0] |= 0x40;
        let mut msb = frame_with(true, TEXT, b"ok", KEY, Length::Extended64);
        msb[2] |= 0x80;
        let refused = [
            unmasked,
            rsv,
            frame(true, 0x3, b"ok"),
            frame(true, 0xB, b"ok"),
            frame(false, 0x9, b"ok"),
            frame(true, 0x9, &[b'x'; 126]),
            msb,
            frame(true, CONTINUATION, b"ok"),
            concat(&[&frame(false, TEXT, b"a"), &frame(true, TEXT, b"b")]),
        ];
        for (i, refused) in refused.iter().enumerate() {
            assert_eq!(first_error(&[refused, &bad_text]), None, "case {i}");
            let stream = concat(&[refused, &bad_text]);
            assert_eq!(first_error_bytewise(&stream), None, "case {i}, bytewise");
        }
    }

    #[test]
    fn an_error_is_sticky() {
        let mut guard = Utf8Guard::new();
        let invalid = Err(InvalidUtf8::InvalidSequence);
        assert_eq!(guard.feed(&frame(true, TEXT, &[0xC3, 0x28])), invalid);
        assert_eq!(guard.feed(&frame(true, TEXT, b"fine")), invalid);
        assert_eq!(guard.feed(&[]), invalid);
        assert_eq!(Utf8Guard::new().feed(&[]), Ok(()));
    }

    /// A small deterministic PRNG (SplitMix64): reproducible cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }

        /// `stream` cut at random places, into small pieces and large ones.
        fn chunks<'a>(&mut self, mut stream: &'a [u8]) -> Vec<&'a [u8]> {
            let mut chunks = Vec::new();
            while !stream.is_empty() {
                let size = match self.below(3) {
                    0 => 1 + self.below(4),
                    1 => 1 + self.below(40),
                    _ => 1 + self.below(2 * SCRATCH_BYTES),
                };
                let (chunk, rest) = stream.split_at(size.min(stream.len()));
                chunks.push(chunk);
                stream = rest;
            }
            chunks
        }
    }

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_change_the_verdict() {
        let mut rng = Rng(0x5EED);
        for case in 0..3_000 {
            let len = rng.below(300);
            let mut stream: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            // Half the cases start like a plausible client frame, to get past the first header.
            if case % 2 == 0 && stream.len() >= 2 {
                stream[0] &= !RSV;
                stream[0] = (stream[0] & !OPCODE) | [0, 1, 2, 8, 9, 10][rng.below(6)];
                stream[1] = MASK | rng.below(130) as u8;
            }
            let whole = Utf8Guard::new().feed(&stream);
            let chunks = rng.chunks(&stream);
            let mut guard = Utf8Guard::new();
            let mut chunked = Ok(());
            for chunk in chunks {
                chunked = guard.feed(chunk);
            }
            assert_eq!(whole, chunked, "case {case}: {stream:02x?}");
        }
    }

    /// A well-formed client stream of random messages, and where a guard must first fail on it.
    struct Scenario {
        stream: Vec<u8>,
        expected: Option<(usize, InvalidUtf8)>,
    }

    /// A random payload: mostly valid text, sometimes a piece that is not.
    fn random_payload(rng: &mut Rng) -> Vec<u8> {
        const PIECES: [&[u8]; 14] = [
            b"a",
            b"z ",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            "κόσμε".as_bytes(),
            b"{\"type\":1}",
            &[0xFF],
            &[0x80],
            &[0xC0, 0x80],
            &[0xED, 0xA0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xE2, 0x82],
            &[0xF0],
        ];
        let mut payload = Vec::new();
        for _ in 0..rng.below(12) {
            // Valid pieces 9 times in 10.
            let piece = if rng.below(10) == 0 {
                PIECES[7 + rng.below(7)]
            } else {
                PIECES[rng.below(7)]
            };
            payload.extend_from_slice(piece);
        }
        payload
    }

    fn random_length(rng: &mut Rng) -> Length {
        match rng.below(6) {
            0 => Length::Extended16,
            1 => Length::Extended64,
            _ => Length::Minimal,
        }
    }

    fn random_key(rng: &mut Rng) -> [u8; 4] {
        [rng.byte(), rng.byte(), rng.byte(), rng.byte()]
    }

    /// Builds a scenario; `expected` comes from checking, with `std::str::from_utf8`, every
    /// prefix of each text message as its bytes are placed in the stream.
    fn scenario(rng: &mut Rng) -> Scenario {
        let mut stream = Vec::new();
        let mut expected = None;
        for _ in 0..1 + rng.below(4) {
            let text = rng.below(4) != 0;
            let payload = random_payload(rng);
            let mut cuts: Vec<usize> = (0..rng.below(4))
                .map(|_| rng.below(payload.len() + 1))
                .collect();
            cuts.sort_unstable();
            cuts.push(payload.len());
            let mut message = Vec::new();
            let mut from = 0;
            for (i, &to) in cuts.iter().enumerate() {
                if i > 0 && rng.below(3) == 0 {
                    let control: Vec<u8> = (0..rng.below(20)).map(|_| rng.byte()).collect();
                    let opcode = if rng.below(2) == 0 { 0x9 } else { PONG };
                    let key = random_key(rng);
                    stream.extend(frame_with(true, opcode, &control, key, Length::Minimal));
                }
                let fragment = &payload[from..to];
                from = to;
                let fin = i == cuts.len() - 1;
                let opcode = match (i, text) {
                    (0, true) => TEXT,
                    (0, false) => BINARY,
                    _ => CONTINUATION,
                };
                let bytes = frame_with(fin, opcode, fragment, random_key(rng), random_length(rng));
                let payload_at = stream.len() + bytes.len() - fragment.len();
                stream.extend(bytes);
                if !text || expected.is_some() {
                    continue;
                }
                for (j, &byte) in fragment.iter().enumerate() {
                    message.push(byte);
                    if let Err(e) = std::str::from_utf8(&message) {
                        if e.error_len().is_some() {
                            expected = Some((payload_at + j, InvalidUtf8::InvalidSequence));
                            break;
                        }
                    }
                }
                if expected.is_none() && fin && std::str::from_utf8(&message).is_err() {
                    expected = Some((stream.len() - 1, InvalidUtf8::Truncated));
                }
            }
        }
        Scenario { stream, expected }
    }

    #[test]
    fn random_messages_fail_exactly_where_their_text_first_becomes_invalid() {
        let mut rng = Rng(0xC0FFEE);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..2_000 {
            let Scenario { stream, expected } = scenario(&mut rng);
            match expected {
                Some(_) => invalid += 1,
                None => valid += 1,
            }
            assert_eq!(first_error_bytewise(&stream), expected, "case {case}");
            // Any chunking: the first error comes with the chunk that holds that byte.
            let chunks = rng.chunks(&stream);
            let mut ends = chunks.iter().scan(0, |end, chunk| {
                *end += chunk.len();
                Some(*end)
            });
            let expected_chunk =
                expected.map(|(at, e)| (ends.position(|end| end > at).unwrap(), e));
            assert_eq!(first_error(&chunks), expected_chunk, "case {case}, chunked");
        }
        // Both kinds were exercised.
        assert!(
            valid > 300 && invalid > 300,
            "{valid} valid, {invalid} invalid"
        );
    }

    /// The length of the complete frame at the start of `buffer`, as the codec would take it.
    fn complete_frame(buffer: &[u8]) -> Option<usize> {
        let second = *buffer.get(1)?;
        let header = header_len(second);
        let parsed = parse_header(buffer.get(..header)?)?;
        let total = header + usize::try_from(parsed.length).ok()?;
        (buffer.len() >= total).then_some(total)
    }

    /// The recipe of the module documentation, with a codec that removes whole frames from the
    /// front of the read buffer (one per decode, as `ws::Codec` does) and `FramedRead`'s order:
    /// after each read, decode until nothing is complete.
    #[test]
    fn a_codec_consuming_frames_between_reads_hides_no_byte_from_the_guard() {
        let mut rng = Rng(0xF4A3ED);
        for case in 0..1_000 {
            let Scenario { stream, expected } = scenario(&mut rng);
            let mut guard = Utf8Guard::new();
            let (mut buffer, mut fed, mut read) = (Vec::new(), 0, 0);
            let mut failed = None;
            let chunks = rng.chunks(&stream);
            'reads: for chunk in &chunks {
                buffer.extend_from_slice(chunk);
                read += chunk.len();
                loop {
                    let verdict = guard.feed(buffer.get(fed..).unwrap_or_default());
                    let frame = complete_frame(&buffer);
                    if let Some(len) = frame {
                        buffer.drain(..len);
                    }
                    fed = buffer.len();
                    match (frame, verdict) {
                        (Some(_), _) => continue,
                        (None, Err(e)) => {
                            failed = Some((read, e));
                            break 'reads;
                        }
                        (None, Ok(())) => break,
                    }
                }
            }
            match (expected, failed) {
                (None, None) => {}
                // Failed at the read that brought the bad byte.
                (Some((at, e)), Some((read, got))) => {
                    let mut ends = chunks.iter().scan(0, |end, chunk| {
                        *end += chunk.len();
                        Some(*end)
                    });
                    assert_eq!(e, got, "case {case}");
                    assert_eq!(ends.find(|&end| end > at), Some(read), "case {case}");
                }
                other => panic!("case {case}: {other:?}"),
            }
        }
    }
}
