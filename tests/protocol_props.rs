//! Property tests for the client-message decoder and validator in `livecanvas::protocol`.
//!
//! The decoder's contract: it never panics on client input, never lets an out-of-range value
//! through, accepts every valid draw unchanged (colour lowercased, defaults filled in), names the
//! offending field when it refuses one, and reads back what the server itself encodes.

use base64::Engine as _;
use livecanvas::protocol::{
    check_png_snapshot, decode_client_message, is_valid_room_name, is_valid_stroke_id, CanvasSize,
    ClientMessage, ErrorCode, Rejection, Segment, ServerMessage, Tool, COORDINATE_MARGIN_PX,
    DEFAULT_SIZE_PX, MAX_ROOM_NAME_CHARS, MAX_SIZE_PX, MIN_SIZE_PX, PNG_DATA_URL_PREFIX,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Every field name the protocol knows.
const PROTOCOL_FIELDS: [&str; 21] = [
    "type", "color", "startX", "startY", "endX", "endY", "size", "tool", "clientId", "data",
    "strokeId", "name", "x", "y", "shape", "x1", "y1", "x2", "y2", "fill", "text",
];
/// The fields of a draw that a value can be out of range in.
const DRAW_FIELDS: [&str; 7] = ["startX", "startY", "endX", "endY", "size", "color", "tool"];

/// Enough cases to explore each property while the whole file stays at a few seconds in debug.
/// Shrinking is capped in time too, so that a failing property still fails in seconds. Failures
/// are not persisted to disk: a bug found here becomes a named example test at the end.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 1024,
        max_shrink_time: 3_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Reference checks, written by hand from the protocol's documentation.

/// `^#([0-9a-f]{3}|[0-9a-f]{6})$`
fn is_lowercase_hex_color(color: &str) -> bool {
    color.strip_prefix('#').is_some_and(|hex| {
        matches!(hex.len(), 3 | 6) && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    })
}

/// `^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$`
fn is_any_case_hex_color(color: &str) -> bool {
    is_lowercase_hex_color(&color.to_ascii_lowercase())
}

/// `^[A-Za-z0-9_-]{1,64}$`
fn is_room_name_by_hand(name: &str) -> bool {
    let count = name.chars().count();
    (1..=64).contains(&count)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn x_limit(canvas: CanvasSize) -> f64 {
    f64::from(canvas.width) + COORDINATE_MARGIN_PX
}

fn y_limit(canvas: CanvasSize) -> f64 {
    f64::from(canvas.height) + COORDINATE_MARGIN_PX
}

fn within(value: f64, limit: f64) -> bool {
    value.is_finite() && value >= -COORDINATE_MARGIN_PX && value <= limit
}

fn assert_segment_in_range(seg: &Segment, canvas: CanvasSize) -> Result<(), TestCaseError> {
    let (xs, ys) = (x_limit(canvas), y_limit(canvas));
    prop_assert!(
        within(seg.start_x, xs),
        "startX {} out of range",
        seg.start_x
    );
    prop_assert!(
        within(seg.start_y, ys),
        "startY {} out of range",
        seg.start_y
    );
    prop_assert!(within(seg.end_x, xs), "endX {} out of range", seg.end_x);
    prop_assert!(within(seg.end_y, ys), "endY {} out of range", seg.end_y);
    prop_assert!(
        seg.size.is_finite() && seg.size >= MIN_SIZE_PX && seg.size <= MAX_SIZE_PX,
        "size {} out of range",
        seg.size
    );
    prop_assert!(is_lowercase_hex_color(&seg.color), "color {:?}", seg.color);
    prop_assert!(matches!(seg.tool, Tool::Pen | Tool::Eraser));
    Ok(())
}

/// What every refusal must look like, whatever the input.
fn assert_rejection_well_formed(rejection: &Rejection) -> Result<(), TestCaseError> {
    if let Some(field) = rejection.field {
        prop_assert!(PROTOCOL_FIELDS.contains(&field), "unknown field {field:?}");
        prop_assert_eq!(rejection.code, ErrorCode::InvalidField);
    }
    let encoded = rejection.to_server_message().encode();
    let json: Value = serde_json::from_str(&encoded)
        .map_err(|err| TestCaseError::fail(format!("error frame is not JSON: {err}")))?;
    prop_assert_eq!(json["type"].as_str(), Some("error"));
    Ok(())
}

/// Checks the decoder's safety contract on one input: no panic (proptest catches and reports
/// one), nothing out of range accepted, every refusal well formed.
fn check_decoder_contract(text: &str, canvas: CanvasSize) -> Result<(), TestCaseError> {
    match decode_client_message(text, canvas) {
        Ok(ClientMessage::Draw(seg)) => assert_segment_in_range(&seg, canvas)?,
        Ok(ClientMessage::Shape(shape)) => {
            let (xs, ys) = (x_limit(canvas), y_limit(canvas));
            prop_assert!(within(shape.x1, xs) && within(shape.x2, xs), "{shape:?}");
            prop_assert!(within(shape.y1, ys) && within(shape.y2, ys), "{shape:?}");
            prop_assert!(
                (MIN_SIZE_PX..=MAX_SIZE_PX).contains(&shape.size),
                "{shape:?}"
            );
            prop_assert!(is_lowercase_hex_color(&shape.color), "{shape:?}");
            prop_assert!(
                shape
                    .fill
                    .as_deref()
                    .is_none_or(|fill| shape.shape.fillable() && is_lowercase_hex_color(fill)),
                "{shape:?}"
            );
            prop_assert!(is_valid_stroke_id(&shape.stroke_id), "{shape:?}");
        }
        Ok(ClientMessage::Text(text)) => {
            prop_assert!(within(text.x, x_limit(canvas)), "{text:?}");
            prop_assert!(within(text.y, y_limit(canvas)), "{text:?}");
            prop_assert!((8.0..=200.0).contains(&text.size), "{text:?}");
            let chars = text.text.chars().count();
            prop_assert!((1..=500).contains(&chars), "{text:?}");
            prop_assert!(!text.text.chars().any(char::is_control), "{text:?}");
            prop_assert!(is_lowercase_hex_color(&text.color), "{text:?}");
            prop_assert!(is_valid_stroke_id(&text.stroke_id), "{text:?}");
        }
        Ok(ClientMessage::CanvasState { data, .. }) => {
            prop_assert!(data.starts_with(PNG_DATA_URL_PREFIX), "data {data:?}");
        }
        Ok(ClientMessage::Clear(id)) => {
            prop_assert!(
                id.as_deref().is_none_or(is_valid_stroke_id),
                "strokeId {id:?}"
            );
        }
        Ok(ClientMessage::Undo(id) | ClientMessage::Redo(id)) => {
            prop_assert!(is_valid_stroke_id(&id), "strokeId {id:?}");
        }
        Ok(ClientMessage::Name(name)) => {
            let chars = name.chars().count();
            prop_assert!((1..=32).contains(&chars), "name {name:?}");
            prop_assert!(!name.chars().any(char::is_control), "name {name:?}");
        }
        Ok(ClientMessage::Cursor { x, y }) => {
            let margin = livecanvas::protocol::COORDINATE_MARGIN_PX;
            prop_assert!(x.is_finite() && x >= -margin && x <= f64::from(canvas.width) + margin);
            prop_assert!(y.is_finite() && y >= -margin && y <= f64::from(canvas.height) + margin);
        }
        Err(rejection) => assert_rejection_well_formed(&rejection)?,
    }
    Ok(())
}

/// A JSON object as text, keeping the order (and any duplicates) of `pairs`.
fn render_object(pairs: &[(String, Value)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
        .collect();
    format!("{{{}}}", body.join(","))
}

// ---------------------------------------------------------------------------------------------
// Generators.

fn canvas_side() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        8 => 1u32..=4096,
        1 => Just(0u32),
        1 => any::<u32>(),
        1 => Just(u32::MAX),
    ]
}

fn canvas_size() -> impl Strategy<Value = CanvasSize> {
    (canvas_side(), canvas_side()).prop_map(|(width, height)| CanvasSize { width, height })
}

/// Numbers of every kind: integers of any size and sign, fractions, huge and tiny floats, and the
/// values at the edges of the protocol's ranges.
fn any_number() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-300i64..5000).prop_map(Value::from),
        (-300.0..5000.0f64).prop_map(Value::from),
        select(vec![
            0.0,
            -0.0,
            -COORDINATE_MARGIN_PX,
            (-COORDINATE_MARGIN_PX).next_down(),
            0.5,
            MIN_SIZE_PX,
            MIN_SIZE_PX.next_down(),
            MAX_SIZE_PX,
            MAX_SIZE_PX.next_up(),
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            4_294_967_395.0,
        ])
        .prop_map(Value::from),
    ]
}

fn uuid_string() -> impl Strategy<Value = String> + Clone {
    any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string())
}

/// Strings that the protocol cares about, near misses of them, and anything at all.
fn protocolish_string() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        any::<String>(),
        select(vec![
            "draw",
            "shape",
            "text",
            "rect",
            "ellipse",
            "arrow",
            "line",
            "clear",
            "canvasState",
            "canvasRequest",
            "welcome",
            "Draw",
            "pen",
            "eraser",
            "Pen",
            "ERASER",
            "",
            "#000",
            "#ABCDEF",
            "#abcd",
            "#ggg",
            "red",
            "#ａｂｃ",
            "data:image/png;base64,",
            "data:text/html,<b>",
        ])
        .prop_map(String::from),
        "#[0-9a-fA-Fg-zG-Z]{0,7}",
        uuid_string(),
        "data:image/png;base64,[A-Za-z0-9+/=]{0,40}",
        "[dD][aA][tT][aA]:[a-zA-Z/;,+]{0,30}",
    ]
}

fn leaf_value() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => any_number(),
        3 => protocolish_string().prop_map(Value::String),
    ]
}

/// An object key: mostly the protocol's own field names, sometimes anything.
fn object_key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => select(PROTOCOL_FIELDS.to_vec()).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON trees of modest depth, objects keyed mostly by protocol field names.
fn json_value() -> impl Strategy<Value = Value> + Clone {
    leaf_value().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((object_key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object whose keys are mostly protocol fields, each mapped to any JSON value.
fn protocolish_object() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec((object_key(), json_value()), 0..12)
}

/// Raw number spellings that a serialiser would never produce but a client may send.
fn raw_number_literal() -> impl Strategy<Value = String> {
    select(vec![
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "0e0",
        "1E+2",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.000000000000000000000000000000000000001",
        "NaN",
        "Infinity",
        "-Infinity",
        "01",
        "1.",
        ".5",
        "+1",
        "0x10",
    ])
    .prop_map(String::from)
}

/// Object text built by hand: duplicate keys and non-serialiser number spellings included.
fn raw_object_text() -> impl Strategy<Value = String> {
    let raw_value = prop_oneof![
        raw_number_literal(),
        json_value().prop_map(|value| value.to_string()),
    ];
    prop::collection::vec((object_key(), raw_value), 0..12).prop_map(|pairs| {
        let body: Vec<String> = pairs
            .iter()
            .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

/// A number near the valid range `[-margin, limit]`, on either side of it.
fn number_near_range(low: f64, high: f64) -> BoxedStrategy<Value> {
    let (low_int, high_int) = (low.floor() as i64, high.ceil() as i64);
    prop_oneof![
        select(vec![
            low,
            low.next_down(),
            low.next_up(),
            high,
            high.next_up(),
            high.next_down(),
            0.0,
            (low + high) / 2.0,
        ])
        .prop_map(Value::from),
        (low - 50.0..high + 50.0).prop_map(Value::from),
        (low_int - 50..high_int + 50).prop_map(Value::from),
    ]
    .boxed()
}

/// `Some(value)` for a present field, `None` for an absent one.
fn maybe(strategy: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        8 => strategy.prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// A field that is mostly valid, sometimes odd (near its range, or of any type), sometimes absent.
fn mostly(
    valid: impl Strategy<Value = Value> + 'static,
    odd: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        16 => valid.prop_map(Some),
        2 => odd.prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// Draws that are often valid and often just off: each field valid, or near or at the edge of its
/// range, or of any type, or absent.
fn near_valid_draw(canvas: CanvasSize) -> impl Strategy<Value = String> {
    let coordinate = |limit: f64| {
        mostly(
            valid_coordinate(limit).prop_map(|(json, _)| json),
            prop_oneof![
                3 => number_near_range(-COORDINATE_MARGIN_PX, limit),
                1 => json_value(),
            ],
        )
    };
    let fields = (
        mostly(
            Just(Value::from("draw")),
            protocolish_string().prop_map(Value::String),
        ),
        coordinate(x_limit(canvas)),
        coordinate(y_limit(canvas)),
        coordinate(x_limit(canvas)),
        coordinate(y_limit(canvas)),
        mostly(
            "#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})".prop_map(Value::String),
            prop_oneof![protocolish_string().prop_map(Value::String), json_value()],
        ),
        mostly(
            valid_size().prop_map(|(json, _)| json),
            prop_oneof![
                3 => number_near_range(MIN_SIZE_PX, MAX_SIZE_PX),
                1 => json_value(),
            ],
        ),
        mostly(
            select(vec!["pen", "eraser"]).prop_map(Value::from),
            prop_oneof![protocolish_string().prop_map(Value::String), json_value()],
        ),
    );
    fields.prop_map(|(kind, sx, sy, ex, ey, color, size, tool)| {
        let names = [
            "type", "startX", "startY", "endX", "endY", "color", "size", "tool",
        ];
        let pairs: Vec<(String, Value)> = names
            .into_iter()
            .zip([kind, sx, sy, ex, ey, color, size, tool])
            .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
            .collect();
        render_object(&pairs)
    })
}

/// Canvas-state answers that are often valid and often just off.
fn near_valid_canvas_state() -> impl Strategy<Value = String> {
    let client_id = maybe(prop_oneof![
        3 => uuid_string().prop_map(Value::String),
        1 => json_value(),
    ]);
    let data = maybe(prop_oneof![
        3 => "data:image/png;base64,[A-Za-z0-9+/=]{0,40}".prop_map(Value::String),
        1 => select(vec![
            "DATA:IMAGE/PNG;BASE64,AA==",
            " data:image/png;base64,AA==",
            "data:image/png;base64",
            "data:image/svg+xml;base64,AA==",
            "data:text/html,<b>",
        ])
        .prop_map(Value::from),
        1 => json_value(),
    ]);
    (client_id, data).prop_map(|(client_id, data)| {
        let mut pairs = vec![("type".to_owned(), Value::from("canvasState"))];
        pairs.extend(client_id.map(|v| ("clientId".to_owned(), v)));
        pairs.extend(data.map(|v| ("data".to_owned(), v)));
        render_object(&pairs)
    })
}

/// A valid draw for its canvas: the frame's fields in random order (plus unknown fields, which
/// are ignored), and the segment it must decode to.
#[derive(Debug, Clone)]
struct ValidDraw {
    canvas: CanvasSize,
    pairs: Vec<(String, Value)>,
    expected: Segment,
}

/// A valid coordinate up to `limit`, as a JSON integer or float, with its value.
fn valid_coordinate(limit: f64) -> impl Strategy<Value = (Value, f64)> {
    let margin = COORDINATE_MARGIN_PX as i64;
    prop_oneof![
        (-margin..=limit as i64).prop_map(|n| (Value::from(n), n as f64)),
        (-COORDINATE_MARGIN_PX..=limit).prop_map(|f| (Value::from(f), f)),
        select(vec![-COORDINATE_MARGIN_PX, limit, 0.0, -0.0]).prop_map(|f| (Value::from(f), f)),
    ]
}

/// A valid line width, as a JSON integer or float, with its value.
fn valid_size() -> impl Strategy<Value = (Value, f64)> {
    let (min_int, max_int) = (MIN_SIZE_PX as i64, MAX_SIZE_PX as i64);
    prop_oneof![
        (min_int..=max_int).prop_map(|n| (Value::from(n), n as f64)),
        (MIN_SIZE_PX..=MAX_SIZE_PX).prop_map(|f| (Value::from(f), f)),
        select(vec![MIN_SIZE_PX, MAX_SIZE_PX]).prop_map(|f| (Value::from(f), f)),
    ]
}

/// An unknown field name, never one of the protocol's.
fn unknown_key() -> impl Strategy<Value = String> {
    "[a-zA-Z_]{1,10}".prop_filter("not a protocol field", |key| {
        !PROTOCOL_FIELDS.contains(&key.as_str())
    })
}

fn valid_draw() -> impl Strategy<Value = ValidDraw> {
    canvas_size().prop_flat_map(|canvas| {
        let (xs, ys) = (x_limit(canvas), y_limit(canvas));
        let size = prop_oneof![
            1 => Just(None),
            3 => valid_size().prop_map(Some),
        ];
        (
            any::<bool>(),
            valid_coordinate(xs),
            valid_coordinate(ys),
            valid_coordinate(xs),
            valid_coordinate(ys),
            "#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})",
            size,
            select(vec![None, Some("pen"), Some("eraser")]),
            prop::collection::vec((unknown_key(), json_value()), 0..3),
            // Sort keys that put the (at most 10) fields in a random order.
            prop::collection::vec(any::<u8>(), 16),
        )
            .prop_map(
                move |(with_type, sx, sy, ex, ey, color, size, tool, extra, order)| {
                    let mut pairs = vec![
                        ("startX".to_owned(), sx.0),
                        ("startY".to_owned(), sy.0),
                        ("endX".to_owned(), ex.0),
                        ("endY".to_owned(), ey.0),
                        ("color".to_owned(), Value::from(color.as_str())),
                    ];
                    if with_type {
                        pairs.push(("type".to_owned(), Value::from("draw")));
                    }
                    if let Some((json, _)) = &size {
                        pairs.push(("size".to_owned(), json.clone()));
                    }
                    if let Some(tool) = tool {
                        pairs.push(("tool".to_owned(), Value::from(tool)));
                    }
                    pairs.extend(extra);
                    let mut keyed: Vec<_> = order.into_iter().zip(pairs).collect();
                    keyed.sort_by_key(|(key, _)| *key);
                    let pairs = keyed.into_iter().map(|(_, pair)| pair).collect();
                    let expected = Segment {
                        color: color.to_ascii_lowercase(),
                        start_x: sx.1,
                        start_y: sy.1,
                        end_x: ex.1,
                        end_y: ey.1,
                        size: size.map_or(DEFAULT_SIZE_PX, |(_, value)| value),
                        tool: if tool == Some("eraser") {
                            Tool::Eraser
                        } else {
                            Tool::Pen
                        },
                        stroke_id: None,
                    };
                    ValidDraw {
                        canvas,
                        pairs,
                        expected,
                    }
                },
            )
    })
}

/// Any JSON value inside an array or an object: never a number or a string itself.
fn wrapped_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value().prop_map(|v| Value::Array(vec![v])),
        json_value().prop_map(|v| {
            let mut object = Map::new();
            object.insert("value".to_owned(), v);
            Value::Object(object)
        }),
    ]
}

/// Values of the wrong JSON type for a field that wants a number.
fn not_a_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        protocolish_string().prop_map(Value::String),
        (-1000i64..1000).prop_map(|n| Value::String(n.to_string())),
        any::<bool>().prop_map(Value::Bool),
        wrapped_value(),
    ]
}

/// Values of the wrong JSON type for a field that wants a string.
fn not_a_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_number(),
        any::<bool>().prop_map(Value::Bool),
        wrapped_value(),
    ]
}

/// A finite number strictly below `low` or strictly above `high`.
fn number_outside(low: f64, high: f64) -> impl Strategy<Value = Value> {
    let (low_int, high_int) = (low.ceil() as i64, high.floor() as i64);
    prop_oneof![
        select(vec![
            low.next_down(),
            high.next_up(),
            low - 0.5,
            high + 0.5,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
        ])
        .prop_map(Value::from),
        (1.0..1e12f64).prop_map(move |d| Value::from(low - d)),
        (1.0..1e12f64).prop_map(move |d| Value::from(high + d)),
        (i64::MIN..low_int).prop_map(Value::from),
        (high_int + 1..=i64::MAX).prop_map(Value::from),
        ((high_int + 1).max(0) as u64..=u64::MAX).prop_map(Value::from),
    ]
}

/// A value that makes `field` out of range; `None` means the field is left out.
fn bad_value(field: &'static str, canvas: CanvasSize) -> BoxedStrategy<Option<Value>> {
    match field {
        "startX" | "endX" | "startY" | "endY" => {
            let limit = if field.ends_with('X') {
                x_limit(canvas)
            } else {
                y_limit(canvas)
            };
            prop_oneof![
                4 => number_outside(-COORDINATE_MARGIN_PX, limit).prop_map(Some),
                2 => not_a_number().prop_map(Some),
                1 => Just(Some(Value::Null)),
                1 => Just(None),
            ]
            .boxed()
        }
        // An absent or null size is the default, not an error.
        "size" => prop_oneof![
            4 => number_outside(MIN_SIZE_PX, MAX_SIZE_PX).prop_map(Some),
            1 => select(vec![0.0, -0.0, 0.5]).prop_map(|f| Some(Value::from(f))),
            2 => not_a_number().prop_map(Some),
        ]
        .boxed(),
        "color" => prop_oneof![
            4 => protocolish_string()
                .prop_filter("not a hex colour", |s| !is_any_case_hex_color(s))
                .prop_map(|s| Some(Value::String(s))),
            2 => select(vec![
                "abc", "#abcd", "#ggg", "#", "", "#ａｂｃ", " #abc", "#abc ", "#abcdef0", "#12345",
                "#\u{0}bc", "red", "rgb(0,0,0)",
            ])
            .prop_map(|s| Some(Value::from(s))),
            2 => not_a_string().prop_map(Some),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
        ]
        .boxed(),
        // An absent or null tool is the pen, not an error.
        "tool" => prop_oneof![
            4 => protocolish_string()
                .prop_filter("not a tool", |s| s != "pen" && s != "eraser")
                .prop_map(|s| Some(Value::String(s))),
            2 => select(vec!["Pen", "PEN", " pen", "pen ", "erase", "laser", "", "pen\u{0}"])
                .prop_map(|s| Some(Value::from(s))),
            2 => not_a_string().prop_map(Some),
        ]
        .boxed(),
        other => unreachable!("not a draw field: {other}"),
    }
}

/// A valid draw with exactly one field made out of range.
fn draw_with_one_bad_field() -> impl Strategy<Value = (ValidDraw, &'static str, Option<Value>)> {
    (valid_draw(), select(DRAW_FIELDS.to_vec())).prop_flat_map(|(draw, field)| {
        let bad = bad_value(field, draw.canvas);
        (Just(draw), Just(field), bad)
    })
}

fn room_name_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,70}",
        "[A-Za-z0-9_./ %\\\\\u{e9}\u{0}-]{0,70}",
        (0usize..=70).prop_map(|n| "x".repeat(n)),
        // Multi-byte letters, so that byte and character counts differ.
        "[a\u{e9}\u{2603}]{60,66}",
    ]
}

/// A real RGBA PNG of the given size.
fn png_bytes(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("a PNG header");
    writer.write_image_data(pixels).expect("PNG pixels");
    writer.finish().expect("a whole PNG");
    out
}

fn png_data_url(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("{PNG_DATA_URL_PREFIX}{encoded}")
}

/// A small valid PNG and its size.
fn small_png() -> impl Strategy<Value = (u32, u32, Vec<u8>)> {
    (1u32..=16, 1u32..=16).prop_flat_map(|(width, height)| {
        let len = (width * height * 4) as usize;
        prop::collection::vec(any::<u8>(), len)
            .prop_map(move |pixels| (width, height, png_bytes(width, height, &pixels)))
    })
}

/// A `canvasState` data string that is broken in some way, with the canvas to check it against
/// (the size of the PNG it came from, so that a corrupted picture gets past the size check).
fn broken_snapshot() -> impl Strategy<Value = (CanvasSize, String)> {
    let corrupted = (
        small_png(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|((width, height, mut bytes), flips, cut)| {
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] ^= byte | 1;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            (CanvasSize { width, height }, png_data_url(&bytes))
        });
    let truncated = small_png().prop_flat_map(|(width, height, bytes)| {
        let len = bytes.len();
        (0..len).prop_map(move |cut| (CanvasSize { width, height }, png_data_url(&bytes[..cut])))
    });
    let arbitrary_bytes = (canvas_size(), prop::collection::vec(any::<u8>(), 0..128))
        .prop_map(|(canvas, bytes)| (canvas, png_data_url(&bytes)));
    let arbitrary_text = (canvas_size(), protocolish_string());
    prop_oneof![
        4 => corrupted,
        2 => truncated,
        1 => arbitrary_bytes,
        1 => arbitrary_text,
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties.

// Cheap inputs: more cases.
proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decoding_never_panics_on_arbitrary_text(text in any::<String>(), canvas in canvas_size()) {
        check_decoder_contract(&text, canvas)?;
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_bytes_read_as_lossy_utf8(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        canvas in canvas_size(),
    ) {
        check_decoder_contract(&String::from_utf8_lossy(&bytes), canvas)?;
    }

    #[test]
    fn decoding_never_panics_on_arbitrary_json_values(value in json_value(), canvas in canvas_size()) {
        check_decoder_contract(&value.to_string(), canvas)?;
    }

    #[test]
    fn an_accepted_canvas_state_always_holds_a_png_data_url(
        text in near_valid_canvas_state(),
        canvas in canvas_size(),
    ) {
        check_decoder_contract(&text, canvas)?;
    }

    #[test]
    fn an_encoded_canvas_state_decodes_back_to_the_same_picture(
        id in any::<u128>(),
        data in "data:image/png;base64,[A-Za-z0-9+/=]{0,64}",
        canvas in canvas_size(),
    ) {
        let client_id = Uuid::from_u128(id);
        let encoded = ServerMessage::CanvasState { client_id, data: &data }.encode();
        prop_assert_eq!(
            decode_client_message(&encoded, canvas),
            Ok(ClientMessage::CanvasState { client_id, data })
        );
    }

    #[test]
    fn room_names_are_exactly_one_to_sixty_four_url_safe_ascii_characters(
        name in room_name_candidate(),
    ) {
        prop_assert_eq!(is_valid_room_name(&name), is_room_name_by_hand(&name), "{:?}", name);
    }
}

// Whole draw frames, costlier to generate: fewer cases.
proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn decoding_never_panics_on_objects_of_protocol_fields_with_arbitrary_values(
        pairs in protocolish_object(),
        canvas in canvas_size(),
    ) {
        check_decoder_contract(&render_object(&pairs), canvas)?;
    }

    #[test]
    fn decoding_never_panics_on_duplicate_keys_and_unusual_number_spellings(
        text in raw_object_text(),
        canvas in canvas_size(),
    ) {
        check_decoder_contract(&text, canvas)?;
    }

    #[test]
    fn an_accepted_draw_never_holds_an_out_of_range_value(
        (canvas, text) in canvas_size().prop_flat_map(|canvas| (Just(canvas), near_valid_draw(canvas))),
    ) {
        check_decoder_contract(&text, canvas)?;
    }

    #[test]
    fn every_valid_draw_is_accepted_with_its_values(draw in valid_draw()) {
        let text = render_object(&draw.pairs);
        prop_assert_eq!(
            decode_client_message(&text, draw.canvas),
            Ok(ClientMessage::Draw(draw.expected)),
            "frame {}", text
        );
    }

    #[test]
    fn a_single_out_of_range_field_is_refused_by_its_name(
        (draw, field, bad) in draw_with_one_bad_field(),
    ) {
        let mut pairs = draw.pairs;
        pairs.retain(|(key, _)| key != field);
        if let Some(bad) = bad {
            pairs.push((field.to_owned(), bad));
        }
        let text = render_object(&pairs);
        let rejection = decode_client_message(&text, draw.canvas)
            .err()
            .ok_or_else(|| TestCaseError::fail(format!("accepted {text}")))?;
        prop_assert_eq!(rejection.field, Some(field), "frame {} gave {:?}", text, rejection);
        prop_assert_eq!(rejection.code, ErrorCode::InvalidField);
    }

    #[test]
    fn an_encoded_draw_decodes_back_to_the_same_segment(draw in valid_draw()) {
        let encoded = ServerMessage::Draw(&draw.expected).encode();
        prop_assert_eq!(
            decode_client_message(&encoded, draw.canvas),
            Ok(ClientMessage::Draw(draw.expected)),
            "frame {}", &*encoded
        );
    }

    #[test]
    fn a_snapshot_is_accepted_exactly_when_it_is_a_png_of_the_canvas_size(
        (width, height, bytes) in small_png(),
        other in (1u32..=16, 1u32..=16),
        same_size in any::<bool>(),
    ) {
        let canvas = if same_size {
            CanvasSize { width, height }
        } else {
            CanvasSize { width: other.0, height: other.1 }
        };
        let result = check_png_snapshot(&png_data_url(&bytes), canvas);
        if (canvas.width, canvas.height) == (width, height) {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result.map_err(|r| r.field), Err(Some("data")));
        }
    }

    #[test]
    fn the_snapshot_check_never_panics_and_names_data_on_broken_pictures(
        (canvas, data) in broken_snapshot(),
    ) {
        match check_png_snapshot(&data, canvas) {
            Ok(()) => prop_assert!(data.starts_with(PNG_DATA_URL_PREFIX)),
            Err(rejection) => {
                prop_assert_eq!(rejection.code, ErrorCode::InvalidField);
                prop_assert_eq!(rejection.field, Some("data"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Examples that pin the edges the properties rely on.

#[test]
fn the_reference_room_name_check_matches_the_documented_limit() {
    assert_eq!(MAX_ROOM_NAME_CHARS, 64);
    assert!(is_room_name_by_hand(&"a".repeat(64)));
    assert!(!is_room_name_by_hand(&"a".repeat(65)));
    assert!(!is_room_name_by_hand(""));
}

#[test]
fn coordinates_exactly_on_the_margin_are_accepted() {
    let canvas = CanvasSize {
        width: 1600,
        height: 900,
    };
    let text = r##"{"color":"#ABC","startX":-100,"startY":-100.0,"endX":1700,"endY":1000.0}"##;
    assert_eq!(
        decode_client_message(text, canvas),
        Ok(ClientMessage::Draw(Segment {
            color: "#abc".into(),
            start_x: -100.0,
            start_y: -100.0,
            end_x: 1700.0,
            end_y: 1000.0,
            size: DEFAULT_SIZE_PX,
            tool: Tool::Pen,
            stroke_id: None,
        }))
    );
}

// Known bugs, pinned by the minimal inputs that the properties above found. Each fails until fixed.

const CANVAS: CanvasSize = CanvasSize {
    width: 1600,
    height: 900,
};

/// Found by `every_valid_draw_is_accepted_with_its_values` and
/// `an_encoded_draw_decodes_back_to_the_same_segment`: serde_json's default float parser can be
/// one ulp off, so the server does not read back the shortest form of the number it (or a
/// browser) wrote.
#[test]
fn a_float_is_read_to_the_last_bit() {
    let text =
        r##"{"color":"#000","startX":0,"startY":0,"endX":0,"endY":0,"size":11.802502267600001}"##;
    let Ok(ClientMessage::Draw(seg)) = decode_client_message(text, CANVAS) else {
        panic!("refused {text}");
    };
    assert_eq!(
        seg.size.to_bits(),
        11.802_502_267_600_001_f64.to_bits(),
        "read {}",
        seg.size
    );
}

/// Found by `a_single_out_of_range_field_is_refused_by_its_name`: the same parser rounds a value
/// one ulp outside the margin onto the margin, so it is accepted.
#[test]
fn a_coordinate_one_ulp_outside_the_margin_is_refused() {
    let text = r##"{"color":"#000","startX":-100.00000000000001,"startY":0,"endX":0,"endY":0}"##;
    assert_eq!(
        (-100.000_000_000_000_01_f64).to_bits(),
        (-100.0f64).next_down().to_bits()
    );
    assert_eq!(
        decode_client_message(text, CANVAS).map_err(|r| r.field),
        Err(Some("startX"))
    );
}

/// A number beyond f64 (valid JSON) is out of range, so `invalid_field` naming it, per docs/protocol.md,
/// rather than `invalid_json` ("not valid JSON: number out of range").
#[test]
fn a_number_too_large_for_a_double_is_refused_by_its_field_name() {
    for (field, text) in [
        (
            "startX",
            r##"{"color":"#000","startX":1e400,"startY":0,"endX":0,"endY":0}"##,
        ),
        (
            "endY",
            r##"{"color":"#000","startX":0,"startY":0,"endX":0,"endY":-1e400}"##,
        ),
        (
            "size",
            r##"{"color":"#000","startX":0,"startY":0,"endX":0,"endY":0,"size":1e400}"##,
        ),
    ] {
        let rejection = decode_client_message(text, CANVAS).unwrap_err();
        assert_eq!(
            (rejection.code, rejection.field),
            (ErrorCode::InvalidField, Some(field)),
            "{text} gave {rejection:?}"
        );
    }
}
