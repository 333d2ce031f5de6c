//! The wire protocol: what clients may send, what the server answers, and the checks between them.
//!
//! This module owns decoding and validating client frames into typed [`ClientMessage`]s and encoding
//! [`ServerMessage`]s to JSON text. It is pure (no actors, no I/O) so that it can be tested alone.
//! It must never panic on client input and never let an out-of-range value through.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use serde_json::error::Category;
use serde_json::value::RawValue;
use uuid::Uuid;

/// How far outside the canvas a segment may reach, in logical pixels: a stroke that leaves the
/// canvas mid-drag still draws its visible part.
pub const COORDINATE_MARGIN_PX: f64 = 100.0;
/// Line width bounds and default, in logical pixels.
pub const MIN_SIZE_PX: f64 = 1.0;
pub const MAX_SIZE_PX: f64 = 64.0;
pub const DEFAULT_SIZE_PX: f64 = 2.0;
pub const MAX_ROOM_NAME_CHARS: usize = 64;
/// A `strokeId` is 1-64 characters of `A-Z a-z 0-9 _ -`, chosen by the client.
pub const MAX_STROKE_ID_CHARS: usize = 64;
/// A display name's length bounds after trimming, in characters (Unicode scalar values).
pub const MIN_DISPLAY_NAME_CHARS: usize = 1;
pub const MAX_DISPLAY_NAME_CHARS: usize = 32;
/// A shape's line width bounds, in logical pixels (a pen's).
pub const MIN_SHAPE_SIZE_PX: f64 = MIN_SIZE_PX;
pub const MAX_SHAPE_SIZE_PX: f64 = MAX_SIZE_PX;
/// A text's font size bounds, in logical pixels.
pub const MIN_FONT_SIZE_PX: f64 = 8.0;
pub const MAX_FONT_SIZE_PX: f64 = 200.0;
/// A text's length bounds, in characters (Unicode scalar values).
pub const MIN_TEXT_CHARS: usize = 1;
pub const MAX_TEXT_CHARS: usize = 500;
/// The largest canvas side the server accepts, in logical pixels.
pub const MAX_CANVAS_SIDE_PX: u32 = 8192;
/// The only accepted form of a picture in `canvasState`.
pub const PNG_DATA_URL_PREFIX: &str = "data:image/png;base64,";

/// The fixed logical size of a room's canvas; every coordinate is in this space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanvasSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Pen,
    Eraser,
}

/// One validated line segment, as broadcast to the room.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub color: String,
    pub start_x: f64,
    pub start_y: f64,
    pub end_x: f64,
    pub end_y: f64,
    pub size: f64,
    pub tool: Tool,
    /// The stroke (one pointer press) this segment belongs to, for undo; relayed as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stroke_id: Option<StrokeId>,
}

/// What a `shape` draws between its two corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    /// From (x1, y1) to (x2, y2).
    Line,
    /// The rectangle with opposite corners (x1, y1) and (x2, y2).
    Rect,
    /// The ellipse inscribed in that rectangle.
    Ellipse,
    /// A line with a head at (x2, y2), the head's size proportional to the line's width.
    Arrow,
}

impl ShapeKind {
    /// Only closed shapes can be filled.
    pub fn fillable(self) -> bool {
        matches!(self, ShapeKind::Rect | ShapeKind::Ellipse)
    }
}

/// One validated shape, as broadcast to the room: a stroke of its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub shape: ShapeKind,
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    /// The outline's colour, `#rrggbb` or `#rgb`, lower case.
    pub color: String,
    /// The outline's width in logical pixels.
    pub size: f64,
    /// The inside's colour (rect and ellipse only); always sent, `null` for none.
    pub fill: Option<String>,
    pub stroke_id: StrokeId,
}

/// One validated line of text, as broadcast to the room: a stroke of its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Text {
    /// The left edge of the text.
    pub x: f64,
    /// The top of the text's line box: its baseline is the font's ascent below.
    pub y: f64,
    pub text: String,
    pub color: String,
    /// The font size (em) in logical pixels.
    pub size: f64,
    pub stroke_id: StrokeId,
}

/// A client-chosen stroke name, already checked by [`is_valid_stroke_id`].
pub type StrokeId = Box<str>;

/// A client frame after decoding and validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Draw(Segment),
    Shape(Shape),
    Text(Text),
    /// With a `strokeId`, the one who cleared may undo it.
    Clear(Option<StrokeId>),
    /// Removes the sender's own stroke (or clear) for everyone.
    Undo(StrokeId),
    /// Brings back the sender's own undone stroke.
    Redo(StrokeId),
    /// A peer's answer to a `canvasRequest`: the picture for newcomer `client_id`.
    CanvasState {
        client_id: Uuid,
        data: String,
    },
    /// The sender's display name, trimmed and checked (see [`validate_display_name`]).
    Name(String),
    /// Where the sender's pointer is, in logical canvas coordinates (margin included).
    Cursor {
        x: f64,
        y: f64,
    },
}

/// One member as listed in a `presence` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceMember {
    pub client_id: Uuid,
    pub name: String,
    pub color: String,
}

impl ClientMessage {
    /// Whether this message changes the room's picture: what a view-only member may not send.
    /// Every new kind of message that alters the canvas belongs here.
    pub fn changes_canvas(&self) -> bool {
        match self {
            ClientMessage::Draw(_)
            | ClientMessage::Shape(_)
            | ClientMessage::Text(_)
            | ClientMessage::Clear(_)
            | ClientMessage::Undo(_)
            | ClientMessage::Redo(_) => true,
            // A viewer may still name itself and point.
            ClientMessage::CanvasState { .. }
            | ClientMessage::Name(_)
            | ClientMessage::Cursor { .. } => false,
        }
    }
}

/// Machine-readable reason for an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownType,
    InvalidField,
    UnexpectedSnapshot,
    RateLimited,
    /// The room's stored canvas reached `--max-room-bytes`: only a clear is accepted.
    RoomFull,
    /// The server cannot store drawing now (disk full, I/O errors): strokes are kept in memory
    /// until it can, and refused once too many are waiting.
    StorageUnavailable,
    /// Undo or redo of a stroke someone else drew.
    NotYours,
    /// Undo or redo of a stroke that is past the undo history, unknown, or already in that state.
    CannotUndo,
    /// The member joined a private room with its view link: it may not change the picture.
    ReadOnly,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnexpectedSnapshot => "unexpected_snapshot",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::NotYours => "not_yours",
            ErrorCode::CannotUndo => "cannot_undo",
            ErrorCode::ReadOnly => "read_only",
        }
    }
}

/// Why a client frame was refused; sent back to that client as an `error` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub field: Option<&'static str>,
    pub message: String,
    /// The stroke an undo, redo or draw was refused for, so the page knows which to put back.
    pub stroke_id: Option<StrokeId>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            field: None,
            message: message.into(),
            stroke_id: None,
        }
    }

    fn field(field: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            code: ErrorCode::InvalidField,
            field: Some(field),
            message: message.into(),
            stroke_id: None,
        }
    }

    /// Names the stroke this refusal is about.
    pub fn about_stroke(mut self, id: &str) -> Self {
        self.stroke_id = Some(id.into());
        self
    }

    pub fn rate_limited(message: String) -> Self {
        Rejection::new(ErrorCode::RateLimited, message)
    }

    pub fn room_full(message: String) -> Self {
        Rejection::new(ErrorCode::RoomFull, message)
    }

    pub fn not_yours(message: &str) -> Self {
        Rejection::new(ErrorCode::NotYours, message)
    }

    pub fn cannot_undo(message: &str) -> Self {
        Rejection::new(ErrorCode::CannotUndo, message)
    }

    pub fn stroke_id(message: &str) -> Self {
        Rejection::field("strokeId", message)
    }

    pub fn storage_unavailable(message: &str) -> Self {
        Rejection::new(ErrorCode::StorageUnavailable, message)
    }

    pub fn read_only() -> Self {
        Rejection::new(
            ErrorCode::ReadOnly,
            "this is a view-only link: drawing and clearing are not allowed",
        )
    }

    /// A change refused because the room's owner locked the room.
    pub fn locked() -> Self {
        Rejection::new(
            ErrorCode::ReadOnly,
            "the room's owner has locked it: only the owner can change the canvas now",
        )
    }

    pub fn to_server_message(&self) -> ServerMessage<'_> {
        ServerMessage::Error {
            code: self.code,
            field: self.field,
            message: &self.message,
            stroke_id: self.stroke_id.as_deref(),
        }
    }
}

/// Everything the server sends. Encoded once per broadcast, whatever the number of recipients.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    Welcome {
        client_id: Uuid,
        room: &'a str,
        width: u32,
        height: u32,
        awaiting_snapshot: bool,
        /// Joined with a private room's view link: the server refuses what would change the
        /// picture. Always sent, so a client never has to guess.
        read_only: bool,
        /// The room's owner locked it: only the owner may change the picture until it unlocks.
        locked: bool,
        /// Joined with the private room's owner link.
        owner: bool,
    },
    /// The room's owner locked or unlocked the room (to everyone in it).
    Locked {
        locked: bool,
    },
    ClientCount {
        client_count: usize,
    },
    Draw(&'a Segment),
    Shape(&'a Shape),
    Text(&'a Text),
    Clear {
        #[serde(skip_serializing_if = "Option::is_none")]
        stroke_id: Option<&'a str>,
    },
    Undo {
        stroke_id: &'a str,
    },
    Redo {
        stroke_id: &'a str,
    },
    CanvasRequest {
        client_id: Uuid,
    },
    CanvasState {
        client_id: Uuid,
        data: &'a str,
    },
    CanvasEmpty {
        client_id: Uuid,
    },
    /// Who is in the room, for a newcomer: at most `MAX_PRESENCE_MEMBERS` of them (in join
    /// order), and how many there are in all (`total`).
    Presence {
        members: &'a [PresenceMember],
        total: usize,
    },
    /// What changed in the list since the last `presence` or `presenceChange`, for everyone who
    /// has it: a change costs each member its own size, not the list's.
    PresenceChange {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        joined: &'a [PresenceMember],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        left: &'a [Uuid],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        renamed: &'a [PresenceMember],
        total: usize,
    },
    /// Another member's pointer moved (never sent to its owner, never stored).
    Cursor {
        client_id: Uuid,
        name: &'a str,
        x: f64,
        y: f64,
    },
    Error {
        code: ErrorCode,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'static str>,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        stroke_id: Option<&'a str>,
    },
}

impl ServerMessage<'_> {
    /// The `type` field, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Locked { .. } => "locked",
            ServerMessage::ClientCount { .. } => "clientCount",
            ServerMessage::Draw(_) => "draw",
            ServerMessage::Shape(_) => "shape",
            ServerMessage::Text(_) => "text",
            ServerMessage::Clear { .. } => "clear",
            ServerMessage::Undo { .. } => "undo",
            ServerMessage::Redo { .. } => "redo",
            ServerMessage::CanvasRequest { .. } => "canvasRequest",
            ServerMessage::CanvasState { .. } => "canvasState",
            ServerMessage::CanvasEmpty { .. } => "canvasEmpty",
            ServerMessage::Presence { .. } => "presence",
            ServerMessage::PresenceChange { .. } => "presenceChange",
            ServerMessage::Cursor { .. } => "cursor",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// The JSON text frame for this message.
    pub fn encode(&self) -> ByteString {
        match serde_json::to_string(self) {
            Ok(json) => ByteString::from(json),
            // Only our own types are serialised here, none of which can fail; keep the server up anyway.
            Err(err) => {
                log::error!("could not encode a server message: {err}");
                ByteString::from_static(
                    r#"{"type":"error","code":"internal","message":"encoding failed"}"#,
                )
            }
        }
    }
}

/// The frame a batched client gets for `frames` (already-encoded messages, in order): the message
/// itself when there is one, `{"type":"batch","messages":[...]}` when there are more, `None` when
/// there are none. Made by joining the encoded texts: nothing is encoded again per recipient.
pub fn batch_frame<'a, I>(frames: I) -> Option<ByteString>
where
    I: IntoIterator<Item = &'a ByteString>,
    I::IntoIter: Clone,
{
    const HEAD: &str = r#"{"type":"batch","messages":["#;
    const TAIL: &str = "]}";
    let frames = frames.into_iter();
    let mut counting = frames.clone();
    let first = counting.next()?;
    let Some(second) = counting.next() else {
        return Some(first.clone());
    };
    let body = first.len() + second.len() + 2 + counting.map(|f| f.len() + 1).sum::<usize>();
    let mut joined = String::with_capacity(HEAD.len() + body + TAIL.len());
    joined.push_str(HEAD);
    for (i, frame) in frames.enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(frame);
    }
    joined.push_str(TAIL);
    Some(ByteString::from(joined))
}

/// The fast path: every field the protocol knows, typed. Unknown fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    color: Option<String>,
    start_x: Option<f64>,
    start_y: Option<f64>,
    end_x: Option<f64>,
    end_y: Option<f64>,
    size: Option<f64>,
    tool: Option<String>,
    client_id: Option<String>,
    data: Option<String>,
    stroke_id: Option<String>,
    name: Option<String>,
    x: Option<f64>,
    y: Option<f64>,
    shape: Option<String>,
    x1: Option<f64>,
    y1: Option<f64>,
    x2: Option<f64>,
    y2: Option<f64>,
    fill: Option<String>,
    text: Option<String>,
}

/// Decodes and validates one client text frame.
pub fn decode_client_message(text: &str, canvas: CanvasSize) -> Result<ClientMessage, Rejection> {
    let incoming: Incoming = match serde_json::from_str(text) {
        Ok(incoming) => incoming,
        Err(err) => return Err(explain_decode_failure(text, &err)),
    };
    match incoming.kind.as_deref() {
        // The original demo's clients send draws without a type.
        None | Some("draw") => validate_draw(&incoming, canvas).map(ClientMessage::Draw),
        Some("shape") => validate_shape(&incoming, canvas).map(ClientMessage::Shape),
        Some("text") => validate_text(incoming, canvas).map(ClientMessage::Text),
        Some("clear") => optional_stroke_id(&incoming).map(ClientMessage::Clear),
        Some("undo") => required_stroke_id(&incoming).map(ClientMessage::Undo),
        Some("redo") => required_stroke_id(&incoming).map(ClientMessage::Redo),
        Some("canvasState") => validate_canvas_state(incoming),
        Some("name") => validate_display_name(incoming.name.as_deref()).map(ClientMessage::Name),
        Some("cursor") => validate_cursor(&incoming, canvas),
        Some(other) => Err(Rejection::new(
            ErrorCode::UnknownType,
            format!("unknown message type {:?}", truncate(other, 32)),
        )),
    }
}

/// The slow path, taken only for bad frames: find which field made the typed decode fail. Fields
/// are first split as raw JSON, so that even a number no double can hold is blamed on its field.
fn explain_decode_failure(text: &str, typed_error: &serde_json::Error) -> Rejection {
    let fields: HashMap<String, Box<RawValue>> = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(err) if err.classify() == Category::Data => {
            return Rejection::new(ErrorCode::InvalidJson, "expected a JSON object");
        }
        Err(err) => {
            return Rejection::new(ErrorCode::InvalidJson, format!("not valid JSON: {err}"));
        }
    };
    const STRING_FIELDS: [&str; 10] = [
        "type", "color", "tool", "clientId", "data", "strokeId", "name", "shape", "fill", "text",
    ];
    const NUMBER_FIELDS: [&str; 11] = [
        "startX", "startY", "endX", "endY", "size", "x", "y", "x1", "y1", "x2", "y2",
    ];
    let raw = |field: &str| fields.get(field).map(|value| value.get());
    for field in STRING_FIELDS {
        if raw(field).is_some_and(|v| serde_json::from_str::<Option<String>>(v).is_err()) {
            return Rejection::field(field, format!("{field} must be a string"));
        }
    }
    for field in NUMBER_FIELDS {
        if raw(field).is_some_and(|v| serde_json::from_str::<Option<f64>>(v).is_err()) {
            return Rejection::field(field, format!("{field} must be a finite number"));
        }
    }
    // Every field is fine alone: the object itself is at fault (a duplicated field, say).
    Rejection::new(
        ErrorCode::InvalidJson,
        format!("could not decode the message: {typed_error}"),
    )
}

/// A coordinate checked against the canvas and its margin, blamed on `field` when it is missing
/// or out of range.
fn coordinate(
    field: &'static str,
    value: Option<f64>,
    range: &std::ops::RangeInclusive<f64>,
) -> Result<f64, Rejection> {
    let value = value.ok_or_else(|| Rejection::field(field, format!("{field} is required")))?;
    if value.is_finite() && range.contains(&value) {
        Ok(value)
    } else {
        Err(Rejection::field(
            field,
            format!(
                "{field} must be between {} and {}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// The accepted ranges of x and y: the canvas and `COORDINATE_MARGIN_PX` around it.
fn coordinate_ranges(
    canvas: CanvasSize,
) -> (std::ops::RangeInclusive<f64>, std::ops::RangeInclusive<f64>) {
    (
        -COORDINATE_MARGIN_PX..=f64::from(canvas.width) + COORDINATE_MARGIN_PX,
        -COORDINATE_MARGIN_PX..=f64::from(canvas.height) + COORDINATE_MARGIN_PX,
    )
}

fn validate_cursor(incoming: &Incoming, canvas: CanvasSize) -> Result<ClientMessage, Rejection> {
    let (x_range, y_range) = coordinate_ranges(canvas);
    let x = coordinate("x", incoming.x, &x_range)?;
    let y = coordinate("y", incoming.y, &y_range)?;
    Ok(ClientMessage::Cursor { x, y })
}

/// A display name, trimmed: 1-32 characters, none of them control characters or invisible
/// formatting that could disguise it or reorder the text around it where it is shown (bidi
/// overrides and isolates, zero-width characters, the BOM).
pub fn validate_display_name(name: Option<&str>) -> Result<String, Rejection> {
    let name = name.ok_or_else(|| Rejection::field("name", "name is required"))?;
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if !(MIN_DISPLAY_NAME_CHARS..=MAX_DISPLAY_NAME_CHARS).contains(&chars) {
        return Err(Rejection::field(
            "name",
            format!(
                "name must be {MIN_DISPLAY_NAME_CHARS} to {MAX_DISPLAY_NAME_CHARS} characters \
                 after trimming spaces"
            ),
        ));
    }
    if trimmed.chars().any(is_hidden_char) {
        return Err(Rejection::field(
            "name",
            "name must not contain control or invisible formatting characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// Characters a display name may not hold: controls, and the invisible ones that change how
/// text around them looks or reads.
fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                  // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
            | '\u{115F}' | '\u{1160}'   // Hangul fillers (look blank)
            | '\u{180E}'                // Mongolian vowel separator
            | '\u{200B}'                // zero-width space (ZWNJ/ZWJ stay: scripts and emoji need them)
            | '\u{200E}' | '\u{200F}'   // LRM, RLM
            | '\u{2028}'..='\u{202E}'   // line/paragraph separators, bidi embeddings/overrides
            | '\u{2060}'..='\u{206F}'   // word joiner, invisible operators, bidi isolates
            | '\u{3164}'                // Hangul filler
            | '\u{FEFF}'                // BOM / zero-width no-break space
            | '\u{FFA0}'                // halfwidth Hangul filler
            | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotations
        )
}

fn validate_draw(incoming: &Incoming, canvas: CanvasSize) -> Result<Segment, Rejection> {
    let (x_range, y_range) = coordinate_ranges(canvas);
    let start_x = coordinate("startX", incoming.start_x, &x_range)?;
    let start_y = coordinate("startY", incoming.start_y, &y_range)?;
    let end_x = coordinate("endX", incoming.end_x, &x_range)?;
    let end_y = coordinate("endY", incoming.end_y, &y_range)?;

    let color = match incoming.color.as_deref() {
        Some(color) if is_hex_color(color) => color.to_ascii_lowercase(),
        Some(_) => return Err(Rejection::field("color", "color must be #rgb or #rrggbb")),
        None => return Err(Rejection::field("color", "color is required")),
    };
    let size = match incoming.size {
        None => DEFAULT_SIZE_PX,
        Some(size) if size.is_finite() && (MIN_SIZE_PX..=MAX_SIZE_PX).contains(&size) => size,
        Some(_) => {
            return Err(Rejection::field(
                "size",
                format!("size must be between {MIN_SIZE_PX} and {MAX_SIZE_PX}"),
            ))
        }
    };
    let tool = match incoming.tool.as_deref() {
        None | Some("pen") => Tool::Pen,
        Some("eraser") => Tool::Eraser,
        Some(_) => {
            return Err(Rejection::field(
                "tool",
                "tool must be \"pen\" or \"eraser\"",
            ))
        }
    };
    Ok(Segment {
        color,
        start_x,
        start_y,
        end_x,
        end_y,
        size,
        tool,
        stroke_id: optional_stroke_id(incoming)?,
    })
}

fn validate_shape(incoming: &Incoming, canvas: CanvasSize) -> Result<Shape, Rejection> {
    let shape = match incoming.shape.as_deref() {
        Some("line") => ShapeKind::Line,
        Some("rect") => ShapeKind::Rect,
        Some("ellipse") => ShapeKind::Ellipse,
        Some("arrow") => ShapeKind::Arrow,
        Some(_) => {
            return Err(Rejection::field(
                "shape",
                "shape must be \"line\", \"rect\", \"ellipse\" or \"arrow\"",
            ))
        }
        None => return Err(Rejection::field("shape", "shape is required")),
    };
    let (x_range, y_range) = coordinate_ranges(canvas);
    let x1 = coordinate("x1", incoming.x1, &x_range)?;
    let y1 = coordinate("y1", incoming.y1, &y_range)?;
    let x2 = coordinate("x2", incoming.x2, &x_range)?;
    let y2 = coordinate("y2", incoming.y2, &y_range)?;
    let color = required_color("color", incoming.color.as_deref())?;
    let size = coordinate(
        "size",
        incoming.size,
        &(MIN_SHAPE_SIZE_PX..=MAX_SHAPE_SIZE_PX),
    )?;
    let fill = match incoming.fill.as_deref() {
        None => None,
        Some(_) if !shape.fillable() => {
            return Err(Rejection::field(
                "fill",
                "fill is only for rect and ellipse; send null",
            ))
        }
        Some(fill) => Some(required_color("fill", Some(fill))?),
    };
    Ok(Shape {
        shape,
        x1,
        y1,
        x2,
        y2,
        color,
        size,
        fill,
        stroke_id: required_stroke_id(incoming)?,
    })
}

fn validate_text(incoming: Incoming, canvas: CanvasSize) -> Result<Text, Rejection> {
    let (x_range, y_range) = coordinate_ranges(canvas);
    let x = coordinate("x", incoming.x, &x_range)?;
    let y = coordinate("y", incoming.y, &y_range)?;
    let color = required_color("color", incoming.color.as_deref())?;
    let size = coordinate(
        "size",
        incoming.size,
        &(MIN_FONT_SIZE_PX..=MAX_FONT_SIZE_PX),
    )?;
    let stroke_id = required_stroke_id(&incoming)?;
    let text = incoming
        .text
        .ok_or_else(|| Rejection::field("text", "text is required"))?;
    let chars = text.chars().count();
    if !(MIN_TEXT_CHARS..=MAX_TEXT_CHARS).contains(&chars) {
        return Err(Rejection::field(
            "text",
            format!("text must be {MIN_TEXT_CHARS} to {MAX_TEXT_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Rejection::field(
            "text",
            "text must not contain control characters (one line, no tabs)",
        ));
    }
    Ok(Text {
        x,
        y,
        text,
        color,
        size,
        stroke_id,
    })
}

/// A `#rgb`/`#rrggbb` colour in `field`, lower-cased.
fn required_color(field: &'static str, color: Option<&str>) -> Result<String, Rejection> {
    match color {
        Some(color) if is_hex_color(color) => Ok(color.to_ascii_lowercase()),
        Some(_) => Err(Rejection::field(
            field,
            format!("{field} must be #rgb or #rrggbb"),
        )),
        None => Err(Rejection::field(field, format!("{field} is required"))),
    }
}

fn optional_stroke_id(incoming: &Incoming) -> Result<Option<StrokeId>, Rejection> {
    match incoming.stroke_id.as_deref() {
        None => Ok(None),
        Some(id) if is_valid_stroke_id(id) => Ok(Some(id.into())),
        Some(_) => Err(Rejection::stroke_id(
            "strokeId must be 1-64 characters of A-Z a-z 0-9 _ -",
        )),
    }
}

fn required_stroke_id(incoming: &Incoming) -> Result<StrokeId, Rejection> {
    optional_stroke_id(incoming)?.ok_or_else(|| Rejection::stroke_id("strokeId is required"))
}

/// Stroke ids share room names' alphabet: safe in JSON, logs and URLs without escaping.
pub fn is_valid_stroke_id(id: &str) -> bool {
    (1..=MAX_STROKE_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate_canvas_state(incoming: Incoming) -> Result<ClientMessage, Rejection> {
    let client_id = incoming
        .client_id
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            Rejection::field("clientId", "clientId must be the uuid from canvasRequest")
        })?;
    let data = incoming
        .data
        .filter(|data| data.starts_with(PNG_DATA_URL_PREFIX))
        .ok_or_else(|| {
            Rejection::field(
                "data",
                format!("data must be a {PNG_DATA_URL_PREFIX}... URL"),
            )
        })?;
    Ok(ClientMessage::CanvasState { client_id, data })
}

/// Decoding a snapshot may allocate at most this much (an RGBA 8192x8192 canvas is 256 MiB; the
/// default 1600x900 needs under 6 MiB).
const PNG_DECODE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// A `canvasState` picture must be a PNG of exactly the room's size that decodes completely: a peer
/// cannot hand a newcomer a broken image or one of another size.
pub fn check_png_snapshot(data: &str, canvas: CanvasSize) -> Result<(), Rejection> {
    use base64::Engine as _;
    let invalid = |why: &str| Rejection::field("data", format!("data {why}"));
    let encoded = data
        .strip_prefix(PNG_DATA_URL_PREFIX)
        .ok_or_else(|| invalid("must be a PNG data URL"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| invalid("is not valid base64"))?;
    let limits = png::Limits {
        bytes: PNG_DECODE_LIMIT_BYTES,
    };
    let decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    let mut reader = decoder
        .read_info()
        .map_err(|_| invalid("is not a readable PNG"))?;
    let (width, height) = reader.info().size();
    if (width, height) != (canvas.width, canvas.height) {
        return Err(invalid(&format!(
            "must be a {}x{} PNG, not {width}x{height}",
            canvas.width, canvas.height
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| invalid("is too large to decode"))?;
    let mut pixels = vec![0; size];
    reader
        .next_frame(&mut pixels)
        .map_err(|_| invalid("is a PNG that does not decode"))?;
    Ok(())
}

/// Room names are 1-64 characters of `A-Z a-z 0-9 _ -`, so they are safe in a URL, a log line and a
/// file name alike.
pub fn is_valid_room_name(name: &str) -> bool {
    (1..=MAX_ROOM_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `#rgb` or `#rrggbb`, hex digits in either case.
fn is_hex_color(color: &str) -> bool {
    let Some(hex) = color.strip_prefix('#') else {
        return false;
    };
    matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Keeps echoed client text short in error messages, cutting on a character boundary.
fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANVAS: CanvasSize = CanvasSize {
        width: 1600,
        height: 900,
    };

    fn decode(text: &str) -> Result<ClientMessage, Rejection> {
        decode_client_message(text, CANVAS)
    }

    fn rejected_field(text: &str) -> Option<&'static str> {
        decode(text).err().and_then(|r| r.field)
    }

    #[test]
    fn a_batch_of_one_is_the_message_itself_and_of_many_a_json_array() {
        let a = ByteString::from_static(r#"{"type":"clear"}"#);
        let b = ByteString::from_static(r#"{"type":"clientCount","clientCount":2}"#);
        assert_eq!(batch_frame(std::iter::empty::<&ByteString>()), None);
        assert_eq!(batch_frame([&a]), Some(a.clone()));
        let joined = batch_frame([&a, &b, &a]).unwrap();
        let value: serde_json::Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "batch", "messages": [
                {"type": "clear"}, {"type": "clientCount", "clientCount": 2}, {"type": "clear"}
            ]})
        );
        assert_eq!(joined.len(), 28 + a.len() * 2 + b.len() + 2 + 2);
    }

    #[test]
    fn a_demo_draw_without_type_is_a_pen_segment_of_default_size() {
        let msg =
            decode(r##"{"color":"#000000","startX":450,"startY":202,"endX":484,"endY":202}"##);
        assert_eq!(
            msg,
            Ok(ClientMessage::Draw(Segment {
                color: "#000000".into(),
                start_x: 450.0,
                start_y: 202.0,
                end_x: 484.0,
                end_y: 202.0,
                size: DEFAULT_SIZE_PX,
                tool: Tool::Pen,
                stroke_id: None,
            }))
        );
    }

    #[test]
    fn a_draw_is_encoded_with_its_type_and_every_field() {
        let segment = Segment {
            color: "#abc".into(),
            start_x: 1.5,
            start_y: 2.0,
            end_x: 3.0,
            end_y: 4.0,
            size: 8.0,
            tool: Tool::Eraser,
            stroke_id: None,
        };
        let json: serde_json::Value =
            serde_json::from_str(&ServerMessage::Draw(&segment).encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"draw","color":"#abc","startX":1.5,"startY":2.0,
                "endX":3.0,"endY":4.0,"size":8.0,"tool":"eraser"})
        );
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let base = r##""color":"#000","startY":1,"endX":1,"endY":1"##;
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":1e9}}"#)),
            Some("startX")
        );
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":-101}}"#)),
            Some("startX")
        );
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":"1"}}"#)),
            Some("startX")
        );
        assert_eq!(rejected_field(&format!(r#"{{{base}}}"#)), Some("startX"));
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":1,"size":65}}"#)),
            Some("size")
        );
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":1,"size":0.5}}"#)),
            Some("size")
        );
        assert_eq!(
            rejected_field(&format!(r#"{{{base},"startX":1,"tool":"laser"}}"#)),
            Some("tool")
        );
    }

    #[test]
    fn colours_must_be_short_or_long_hex() {
        for good in ["#abc", "#ABCDEF", "#012345"] {
            assert!(is_hex_color(good), "{good}");
        }
        for bad in [
            "abc",
            "#abcd",
            "#ggg",
            "red",
            "#",
            "",
            "#ａｂｃ",
            "javascript:",
        ] {
            assert!(!is_hex_color(bad), "{bad}");
        }
    }

    #[test]
    fn non_objects_and_broken_json_are_invalid_json() {
        for text in ["", "nope", "[1,2]", "42", "{\"color\":", "null"] {
            assert_eq!(
                decode(text).map_err(|r| r.code),
                Err(ErrorCode::InvalidJson),
                "{text}"
            );
        }
    }

    #[test]
    fn room_names_are_short_url_safe_words() {
        for good in ["main", "a", "Team_42-b", &"x".repeat(64)] {
            assert!(is_valid_room_name(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "../etc",
            "caf\u{e9}",
            "a/b",
            "a.b",
            "%2e",
        ] {
            assert!(!is_valid_room_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_draw_and_clear_change_the_canvas() {
        assert!(decode(r#"{"type":"clear"}"#).unwrap().changes_canvas());
        assert!(
            decode(r##"{"color":"#000","startX":1,"startY":1,"endX":2,"endY":2}"##)
                .unwrap()
                .changes_canvas()
        );
        let snapshot = ClientMessage::CanvasState {
            client_id: uuid::Uuid::nil(),
            data: String::new(),
        };
        assert!(!snapshot.changes_canvas());
        assert_eq!(ErrorCode::ReadOnly.as_str(), "read_only");
    }

    #[test]
    fn unknown_types_are_refused_by_name() {
        let rejection = decode(r#"{"type":"teleport"}"#).unwrap_err();
        assert_eq!(rejection.code, ErrorCode::UnknownType);
        assert!(rejection.message.contains("teleport"));
    }

    #[test]
    fn canvas_state_needs_a_uuid_and_a_png_data_url() {
        let id = Uuid::new_v4();
        let ok = format!(
            r#"{{"type":"canvasState","clientId":"{id}","data":"data:image/png;base64,AA=="}}"#
        );
        assert!(
            matches!(decode(&ok), Ok(ClientMessage::CanvasState { client_id, .. }) if client_id == id)
        );
        let html =
            format!(r#"{{"type":"canvasState","clientId":"{id}","data":"data:text/html,<b>"}}"#);
        assert_eq!(rejected_field(&html), Some("data"));
        assert_eq!(
            rejected_field(
                r#"{"type":"canvasState","clientId":"me","data":"data:image/png;base64,"}"#
            ),
            Some("clientId")
        );
    }
}
