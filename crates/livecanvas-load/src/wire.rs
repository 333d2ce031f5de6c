//! What goes on the wire: the draw a sender sends, with its sender and sequence number hidden in the
//! coordinates, and the cheapest reading of what the server relays.
//!
//! Only the original demo's draw fields are relied on (`color`, `startX`, `startY`, `endX`, `endY`),
//! so any server that relays those works. The encoding stays inside the canvas `[0,1600]x[0,900]`:
//!
//! - `startX` = the sender's index within its room (0..S, S at most 1600);
//! - `endX` = seq % 1000, `startY` = (seq / 1000) % 900, `endY` = seq / 900 000 (at most 900).

use std::borrow::Cow;

use serde::Deserialize;

/// Highest index a sender may have within a room (`startX` <= canvas width).
pub const MAX_SENDERS_PER_ROOM: usize = 1600;
/// Sequence numbers below this fit the encoding (`endY` <= 900).
pub const SEQ_LIMIT: u64 = 901 * 900 * 1000;

/// The draw message for segment `seq` of sender `sender` (within its room).
/// A cursor message of client `local`, moving along a line as `seq` grows.
pub fn encode_cursor(local: usize, seq: u64) -> String {
    let x = (seq * 7 % 1600) as f64;
    let y = (local as u64 * 9 % 900) as f64;
    format!(r#"{{"type":"cursor","x":{x},"y":{y}}}"#)
}

/// How many cursor messages a frame holds (a batch's included), by their type field as the
/// server writes it.
pub fn count_cursors(text: &str) -> u64 {
    text.matches(r#"{"type":"cursor","#).count() as u64
}

pub fn encode_draw(sender: usize, seq: u64) -> String {
    debug_assert!(sender <= MAX_SENDERS_PER_ROOM && seq < SEQ_LIMIT);
    let end_x = seq % 1000;
    let start_y = (seq / 1000) % 900;
    let end_y = seq / 900_000;
    format!(
        r##"{{"color":"#e53935","startX":{sender},"startY":{start_y},"endX":{end_x},"endY":{end_y}}}"##
    )
}

/// Recovers `(sender, seq)` from a relayed draw's coordinates; `None` for a draw that is not one of
/// ours (fractional, negative or out of the encoding's range).
pub fn decode_coords(start_x: f64, start_y: f64, end_x: f64, end_y: f64) -> Option<(usize, u64)> {
    fn whole(value: f64, below: f64) -> Option<u64> {
        (value >= 0.0 && value < below && value.fract() == 0.0).then_some(value as u64)
    }
    let sender = whole(start_x, MAX_SENDERS_PER_ROOM as f64 + 1.0)?;
    let low = whole(end_x, 1000.0)?;
    let mid = whole(start_y, 900.0)?;
    let high = whole(end_y, 901.0)?;
    Some((sender as usize, high * 900_000 + mid * 1000 + low))
}

/// A server frame, reduced to what the load generator looks at. Every other field (`color`, `size`,
/// a snapshot's `data`, …) is skipped by the parser without being kept.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "startX")]
    start_x: Option<f64>,
    #[serde(rename = "startY")]
    start_y: Option<f64>,
    #[serde(rename = "endX")]
    end_x: Option<f64>,
    #[serde(rename = "endY")]
    end_y: Option<f64>,
    /// The contents of a `{"type":"batch","messages":[…]}` frame, in order.
    #[serde(borrow)]
    messages: Option<Vec<Frame<'a>>>,
}

impl Frame<'_> {
    fn visit(&self, on_draw: &mut impl FnMut(usize, u64)) {
        match self.kind.as_deref() {
            Some("batch") => {
                for message in self.messages.iter().flatten() {
                    message.visit(on_draw);
                }
            }
            // The demo relayed draws without a `type`; this server adds `"type":"draw"`.
            None | Some("draw") => {
                if let (Some(sx), Some(sy), Some(ex), Some(ey)) =
                    (self.start_x, self.start_y, self.end_x, self.end_y)
                {
                    if let Some((sender, seq)) = decode_coords(sx, sy, ex, ey) {
                        on_draw(sender, seq);
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// Calls `on_draw(sender, seq)` for every draw in a text frame (a plain message or a batch), in
/// order. Returns false for a frame that is not a JSON object (it is ignored).
pub fn for_each_draw(text: &str, mut on_draw: impl FnMut(usize, u64)) -> bool {
    if let Some(found) = scan_draws(text) {
        found
            .into_iter()
            .flatten()
            .for_each(|(sender, seq)| on_draw(sender, seq));
        return true;
    }
    match serde_json::from_str::<Frame<'_>>(text) {
        Ok(frame) => {
            frame.visit(&mut on_draw);
            true
        }
        Err(_) => false,
    }
}

/// The fast path of [`for_each_draw`], for the frames the servers measured here send: every draw
/// spells `"startX":…,"startY":…,"endX":…,"endY":…` in that order (this server and the demo's
/// relay both do), and the only types are draws, batches and counts. It finds the four numbers
/// without building anything, which halves the load generator's CPU per delivery; a frame that
/// does not fit returns `None` and is parsed in full. Inside a JSON string a quote is escaped, so
/// `"startX":` can only be a key.
fn scan_draws(text: &str) -> Option<Vec<Option<(usize, u64)>>> {
    use memchr::memmem;
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') {
        return None;
    }
    for at in memmem::find_iter(bytes, br#""type":""#) {
        let kind = &bytes[at + 8..];
        if ![&b"draw\""[..], b"batch\"", b"clientCount\""]
            .iter()
            .any(|known| kind.starts_with(known))
        {
            return None;
        }
    }
    let mut found = Vec::new();
    for at in memmem::find_iter(bytes, br#""startX":"#) {
        let rest = &text[at + 9..];
        let (start_x, rest) = number(rest)?;
        let (start_y, rest) = number(rest.strip_prefix(r#","startY":"#)?)?;
        let (end_x, rest) = number(rest.strip_prefix(r#","endX":"#)?)?;
        let (end_y, _) = number(rest.strip_prefix(r#","endY":"#)?)?;
        found.push(decode_coords(start_x, start_y, end_x, end_y));
    }
    Some(found)
}

/// A JSON number at the start of `text`, and what follows it.
fn number(text: &str) -> Option<(f64, &str)> {
    let end = text
        .bytes()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(text.len());
    let value = text[..end].parse().ok()?;
    Some((value, &text[end..]))
}

/// The sender index of the join-latency mode's marker draws: `encode_draw(MARKER_SENDER, round)`
/// marks the end of what was drawn into a room (the scribbles use half-pixel coordinates, which
/// never decode).
pub const MARKER_SENDER: usize = MAX_SENDERS_PER_ROOM;

/// One server message, as the join-latency mode sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Welcome {
        width: u32,
        height: u32,
    },
    /// `canvasState`: `data_len` is the length of its `data` (the PNG data URL).
    CanvasState {
        data_len: usize,
    },
    CanvasEmpty,
    /// A draw; `coded` is `(sender, seq)` when its coordinates carry them.
    Draw {
        coded: Option<(usize, u64)>,
    },
    /// An `error` message and its code.
    Error {
        code: &'a str,
    },
    Other,
}

/// Everything the join-latency mode reads; `data` (megabytes of base64) is borrowed, not copied.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    width: Option<u32>,
    height: Option<u32>,
    #[serde(rename = "startX")]
    start_x: Option<f64>,
    #[serde(rename = "startY")]
    start_y: Option<f64>,
    #[serde(rename = "endX")]
    end_x: Option<f64>,
    #[serde(rename = "endY")]
    end_y: Option<f64>,
    #[serde(borrow)]
    messages: Option<Vec<Message<'a>>>,
}

impl Message<'_> {
    fn visit(&self, on_event: &mut impl FnMut(Event<'_>)) {
        let event = match self.kind.as_deref() {
            Some("batch") => {
                for message in self.messages.iter().flatten() {
                    message.visit(on_event);
                }
                return;
            }
            None | Some("draw") => {
                let coded = match (self.start_x, self.start_y, self.end_x, self.end_y) {
                    (Some(sx), Some(sy), Some(ex), Some(ey)) => decode_coords(sx, sy, ex, ey),
                    _ => None,
                };
                Event::Draw { coded }
            }
            Some("welcome") => Event::Welcome {
                width: self.width.unwrap_or(1600),
                height: self.height.unwrap_or(900),
            },
            Some("canvasState") => Event::CanvasState {
                data_len: self.data.as_deref().map_or(0, str::len),
            },
            Some("canvasEmpty") => Event::CanvasEmpty,
            Some("error") => Event::Error {
                code: self.code.as_deref().unwrap_or("?"),
            },
            Some(_) => Event::Other,
        };
        on_event(event);
    }
}

/// Calls `on_event` for every message of a text frame (a plain message or a batch), in order.
/// Returns false for a frame that is not a JSON object (it is ignored).
pub fn for_each_event(text: &str, mut on_event: impl FnMut(Event<'_>)) -> bool {
    match serde_json::from_str::<Message<'_>>(text) {
        Ok(message) => {
            message.visit(&mut on_event);
            true
        }
        Err(_) => false,
    }
}

/// Draws that look like people's: strokes of short segments wandering over the canvas, in a
/// palette of colours and sizes, some with the eraser. Deterministic for a seed. Every coordinate
/// is on a half pixel, so no scribble decodes as one of the load generator's coded draws.
pub struct Scribbler {
    state: u64,
    width: f64,
    height: f64,
    x: f64,
    y: f64,
    heading: f64,
    left: u32,
    color: &'static str,
    size: u32,
    eraser: bool,
    /// `Some(prefix)`: every segment carries a `strokeId` (`prefix-<stroke number>`), as the page's
    /// do, so the server keeps the strokes undoable.
    stroke_ids: Option<String>,
    strokes: u64,
}

const PALETTE: [&str; 12] = [
    "#000000", "#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#fb8c00", "#00acc1",
    "#6d4c41", "#546e7a", "#d81b60", "#ffffff",
];
const SIZES: [u32; 8] = [2, 2, 3, 4, 6, 8, 12, 20];

impl Scribbler {
    pub fn new(seed: u64, width: u32, height: u32) -> Scribbler {
        Scribbler {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03,
            width: f64::from(width.max(2)),
            height: f64::from(height.max(2)),
            x: 0.5,
            y: 0.5,
            heading: 0.0,
            left: 0,
            color: PALETTE[0],
            size: 2,
            eraser: false,
            stroke_ids: None,
            strokes: 0,
        }
    }

    /// From now on, gives every stroke an id starting with `prefix`.
    pub fn give_stroke_ids(&mut self, prefix: String) {
        self.stroke_ids = Some(prefix);
    }

    /// splitmix64
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// Onto the half-pixel grid, inside the canvas (reflected at its edges).
    fn place(value: f64, limit: f64) -> f64 {
        let mut v = value;
        if v < 0.0 {
            v = -v;
        }
        if v > limit {
            v = (2.0 * limit - v).max(0.0);
        }
        (v.floor() + 0.5).min(limit - 0.5)
    }

    /// The next segment, as the JSON a client sends.
    pub fn next_draw(&mut self) -> String {
        if self.left == 0 {
            self.left = 20 + (self.next_u64() % 60) as u32;
            self.x = Self::place(self.unit() * self.width, self.width);
            self.y = Self::place(self.unit() * self.height, self.height);
            self.heading = self.unit() * std::f64::consts::TAU;
            self.eraser = self.next_u64().is_multiple_of(20);
            self.color = self.pick(&PALETTE);
            self.size = self.pick(&SIZES) * if self.eraser { 2 } else { 1 };
            self.strokes += 1;
        }
        self.left -= 1;
        self.heading += (self.unit() - 0.5) * 0.9;
        let step = 3.0 + self.unit() * 9.0;
        let (x0, y0) = (self.x, self.y);
        self.x = Self::place(x0 + step * self.heading.cos(), self.width);
        self.y = Self::place(y0 + step * self.heading.sin(), self.height);
        let tool = if self.eraser { "eraser" } else { "pen" };
        let stroke = match &self.stroke_ids {
            Some(prefix) => format!(r#","strokeId":"{prefix}-{}""#, self.strokes),
            None => String::new(),
        };
        format!(
            r#"{{"type":"draw","color":"{}","startX":{x0},"startY":{y0},"endX":{},"endY":{},"size":{},"tool":"{tool}"{stroke}}}"#,
            self.color, self.x, self.y, self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(text: &str) -> Vec<(usize, u64)> {
        let mut seen = Vec::new();
        for_each_draw(text, |sender, seq| seen.push((sender, seq)));
        seen
    }

    /// Turns a sent message into what this server relays: the same fields plus type, size, tool.
    fn relayed(sent: &str) -> String {
        format!(
            r#"{{"type":"draw",{},"size":2,"tool":"pen"}}"#,
            &sent[1..sent.len() - 1]
        )
    }

    #[test]
    fn every_sender_and_sequence_number_round_trips_within_the_canvas() {
        let seqs = [
            0,
            1,
            999,
            1000,
            899_999,
            900_000,
            123_456_789,
            SEQ_LIMIT - 1,
        ];
        for sender in [0, 1, 49, MAX_SENDERS_PER_ROOM] {
            for seq in seqs {
                let sent = encode_draw(sender, seq);
                let value: serde_json::Value = serde_json::from_str(&sent).unwrap();
                for (field, limit) in [
                    ("startX", 1600.0),
                    ("startY", 900.0),
                    ("endX", 1600.0),
                    ("endY", 900.0),
                ] {
                    let v = value[field].as_f64().unwrap();
                    assert!((0.0..=limit).contains(&v), "{field}={v} in {sent}");
                }
                assert_eq!(draws(&sent), [(sender, seq)], "demo-style relay of {sent}");
                assert_eq!(draws(&relayed(&sent)), [(sender, seq)]);
            }
        }
    }

    #[test]
    fn coordinates_relayed_as_floats_still_decode() {
        let text = r##"{"type":"draw","color":"#e53935","startX":3.0,"startY":12.0,"endX":345.0,"endY":1.0,"size":2,"tool":"pen"}"##;
        assert_eq!(draws(text), [(3, 900_000 + 12_345)]);
    }

    #[test]
    fn a_batch_yields_its_draws_in_order_and_skips_other_messages() {
        let a = relayed(&encode_draw(0, 7));
        let b = relayed(&encode_draw(1, 8));
        let text = format!(
            r#"{{"type":"batch","messages":[{a},{{"type":"clientCount","clientCount":4}},{b},{{"type":"clear"}}]}}"#
        );
        assert_eq!(draws(&text), [(0, 7), (1, 8)]);
    }

    fn events(text: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for_each_event(text, |event| seen.push(format!("{event:?}")));
        seen
    }

    #[test]
    fn the_join_latency_events_are_read_from_plain_and_batched_frames() {
        let marker = relayed(&encode_draw(MARKER_SENDER, 2));
        let text = format!(
            r#"{{"type":"batch","messages":[{{"type":"welcome","clientId":"x","room":"r","width":800,"height":600,"awaitingSnapshot":true}},{{"type":"clientCount","clientCount":2}},{{"type":"canvasState","clientId":"x","data":"data:image/png;base64,AAAA"}},{marker},{{"type":"error","code":"rate_limited","message":"m"}}]}}"#
        );
        assert_eq!(
            events(&text),
            [
                "Welcome { width: 800, height: 600 }",
                "Other",
                "CanvasState { data_len: 26 }",
                "Draw { coded: Some((1600, 2)) }",
                "Error { code: \"rate_limited\" }",
            ]
        );
        assert_eq!(
            events(r#"{"type":"canvasEmpty","clientId":"x"}"#),
            ["CanvasEmpty"]
        );
        assert!(!for_each_event("[1]", |_| {}));
    }

    #[test]
    fn scribbles_are_valid_draws_inside_the_canvas_that_never_decode() {
        let mut scribbler = Scribbler::new(7, 1600, 900);
        for _ in 0..5000 {
            let text = scribbler.next_draw();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            for (field, limit) in [
                ("startX", 1600.0),
                ("startY", 900.0),
                ("endX", 1600.0),
                ("endY", 900.0),
            ] {
                let v = value[field].as_f64().unwrap();
                assert!((0.0..limit).contains(&v), "{field}={v} in {text}");
                assert_eq!(v.fract(), 0.5, "{text}");
            }
            let size = value["size"].as_f64().unwrap();
            assert!((1.0..=64.0).contains(&size), "{text}");
            assert_eq!(events(&text), ["Draw { coded: None }"], "{text}");
        }
        let again = Scribbler::new(7, 1600, 900).next_draw();
        assert_eq!(again, Scribbler::new(7, 1600, 900).next_draw());
    }

    #[test]
    fn frames_the_fast_path_cannot_read_are_parsed_in_full() {
        // Fields in another order, spaces, and a type the fast path does not know.
        let reordered = r##"{"type":"draw","startY":0,"startX":2,"endX":5,"endY":0}"##;
        assert_eq!(scan_draws(reordered), None);
        assert_eq!(draws(reordered), [(2, 5)]);
        let spaced = r##"{"type": "draw", "startX": 2, "startY": 0, "endX": 5, "endY": 0}"##;
        assert_eq!(draws(spaced), [(2, 5)]);
        let unknown = r##"{"type":"stamp","startX":2,"startY":0,"endX":5,"endY":0}"##;
        assert_eq!(scan_draws(unknown), None);
        assert_eq!(draws(unknown), []);
        // Both paths agree on what the servers send.
        let batch = format!(
            r#"{{"type":"batch","messages":[{},{{"type":"clientCount","clientCount":4}},{}]}}"#,
            relayed(&encode_draw(3, 1_234_567)),
            encode_draw(4, 8)
        );
        assert_eq!(
            scan_draws(&batch),
            Some(vec![Some((3, 1_234_567)), Some((4, 8))])
        );
    }

    #[test]
    fn other_messages_and_foreign_draws_are_ignored() {
        for text in [
            r#"{"type":"welcome","clientId":"x","room":"main","width":1600,"height":900,"awaitingSnapshot":true}"#,
            r#"{"type":"clientCount","clientCount":4}"#,
            r#"{"type":"canvasRequest","clientId":"9a2e"}"#,
            r#"{"type":"canvasState","clientId":"9a2e","data":"data:image/png;base64,AAAA"}"#,
            r##"{"type":"draw","color":"#000","startX":1.5,"startY":2,"endX":3,"endY":4}"##,
            r##"{"type":"draw","color":"#000","startX":-1,"startY":2,"endX":3,"endY":4}"##,
            r##"{"type":"draw","color":"#000","startX":1,"startY":2,"endX":1200,"endY":4}"##,
            "[1,2,3]",
            "not json",
        ] {
            assert_eq!(draws(text), [], "{text}");
        }
    }
}
