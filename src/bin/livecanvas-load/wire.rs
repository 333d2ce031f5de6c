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
    match serde_json::from_str::<Frame<'_>>(text) {
        Ok(frame) => {
            frame.visit(&mut on_draw);
            true
        }
        Err(_) => false,
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
