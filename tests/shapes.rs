//! Shapes (line, rectangle, ellipse, arrow) and texts against the real server: relayed to the
//! others and never echoed, refused by field, drawn into `canvas.png` where and as large as sent,
//! kept across a restart and a cluster, and undone and redone by their author.

mod common;

use std::path::Path;

use common::{data_dir, http_get, wait_for_status, Client, Image, Redis, Server, EVENT_DEADLINE};
use serde_json::{json, Value};

const ADA: &str = "ada-secret-0123456789abcdef";
const BOB: &str = "bob-secret-0123456789abcdef";
const BLUE: [u8; 3] = [0x00, 0x00, 0xff];
const GREEN: [u8; 3] = [0x00, 0xff, 0x00];
const RED: [u8; 3] = [0xff, 0x00, 0x00];

/// DejaVu Sans (frontend/fonts/), in font units per em: its ascent, and a capital H's advance,
/// side bearing and height.
const UNITS_PER_EM: f64 = 2048.0;
const ASCENT: f64 = 1901.0;
const H_ADVANCE: f64 = 1540.0;
const H_BEARING: f64 = 201.0;
const CAP_HEIGHT: f64 = 1493.0;

fn shape(kind: &str, from: (f64, f64), to: (f64, f64), size: f64, id: &str) -> Value {
    json!({"type":"shape","shape":kind,"x1":from.0,"y1":from.1,"x2":to.0,"y2":to.1,
           "color":"#0000ff","size":size,"fill":null,"strokeId":id})
}

fn filled(mut shape: Value, fill: &str) -> Value {
    shape["fill"] = json!(fill);
    shape
}

fn text(content: &str, at: (f64, f64), size: f64, id: &str) -> Value {
    json!({"type":"text","x":at.0,"y":at.1,"text":content,"color":"#ff0000","size":size,
           "strokeId":id})
}

async fn join(server: &Server, room: &str, author: &str) -> Client {
    let mut client = Client::join(&format!("{}?author={author}", server.ws_url(room))).await;
    let picture = client.next_event().await;
    assert!(
        picture["type"] == "canvasEmpty" || picture["type"] == "canvasState",
        "{picture}"
    );
    client
}

/// Two members of `room`, each having seen the other come.
async fn pair(server: &Server, room: &str) -> (Client, Client) {
    let ada = join(server, room, ADA).await;
    let mut bob = join(server, room, BOB).await;
    bob.wait_for_count(2).await;
    (ada, bob)
}

/// `sender` sends `message`, which `watcher` must get exactly as `relayed`.
async fn relay(sender: &mut Client, watcher: &mut Client, message: Value, relayed: &Value) {
    sender.send_json(message).await;
    assert_eq!(&watcher.next_event().await, relayed);
}

/// The next thing `client` hears is the answer to a probe of its own, not an echo of what it sent.
async fn assert_nothing_pending(client: &mut Client) {
    client.send_json(json!({"type":"teleport"})).await;
    let next = client.next_event().await;
    assert_eq!(
        next["code"], "unknown_type",
        "something came before the probe's answer: {next}"
    );
}

/// The room's picture as the server renders it, transparent where nothing is; `None` for a room
/// that has nothing kept.
fn picture(server: &Server, room: &str) -> Option<Image> {
    let (status, _, body) = http_get(&server.http_url(&format!(
        "/api/rooms/{room}/canvas.png?background=transparent"
    )));
    match status {
        200 => Some(Image::decode(&body)),
        404 => None,
        other => panic!("canvas.png: {other}"),
    }
}

fn is(px: [u8; 4], rgb: [u8; 3]) -> bool {
    px == [rgb[0], rgb[1], rgb[2], 255]
}

/// The smallest box holding every pixel of `image` that is at least half opaque: left, top,
/// right, bottom (inclusive).
fn painted_box(image: &Image) -> Option<(u32, u32, u32, u32)> {
    let mut found: Option<(u32, u32, u32, u32)> = None;
    for y in 0..image.height {
        for x in 0..image.width {
            if image.pixel(x, y)[3] >= 128 {
                found = Some(match found {
                    None => (x, y, x, y),
                    Some((l, t, r, b)) => (l.min(x), t.min(y), r.max(x), b.max(y)),
                });
            }
        }
    }
    found
}

/// A room with only `message` drawn in it (by Ada, seen by Bob), and its picture.
async fn drawn_alone(server: &Server, room: &str, message: Value) -> Image {
    let (mut ada, mut bob) = pair(server, room).await;
    ada.send_json(message).await;
    let got = bob.next_event().await;
    assert!(got["type"] == "shape" || got["type"] == "text", "{got}");
    picture(server, room).expect("a picture")
}

// ---- relayed, never echoed ----

#[tokio::test]
async fn each_shape_reaches_the_others_as_sent_and_never_comes_back_to_its_sender() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "shapes-relay").await;
    for (i, kind) in ["line", "rect", "ellipse", "arrow"].into_iter().enumerate() {
        let id = format!("s{i}");
        let sent = shape(kind, (10.0, 20.5), (300.0, 200.0), 6.0, &id);
        relay(&mut ada, &mut bob, sent.clone(), &sent).await;
    }
    let sent = filled(shape("RECT", (1.0, 2.0), (3.0, 4.0), 2.0, "upper"), "#ABC");
    ada.send_json(sent).await;
    assert_eq!(
        ada.next_event().await["field"],
        "shape",
        "shape names are lower case"
    );
    // Colours are relayed lower case, as a draw's are.
    let sent = filled(
        shape("ellipse", (1.0, 2.0), (3.0, 4.0), 2.0, "filled"),
        "#ABC",
    );
    let mut relayed = sent.clone();
    relayed["fill"] = json!("#abc");
    relay(&mut ada, &mut bob, sent, &relayed).await;
    assert_nothing_pending(&mut ada).await;
}

#[tokio::test]
async fn a_text_reaches_the_others_as_sent_and_never_comes_back_to_its_sender() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "text-relay").await;
    let sent = text("Grüße, <b>world</b> 😀", (40.0, 60.0), 32.0, "t1");
    relay(&mut ada, &mut bob, sent.clone(), &sent).await;
    assert_nothing_pending(&mut ada).await;
}

// ---- refused by field, reaching nobody ----

/// Sends each bad message and checks the `invalid_field` error names the field; then that Bob
/// got none of them and nothing was kept.
async fn assert_refused_by_field(room: &str, cases: Vec<(Value, &str)>) {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, room).await;
    for (message, field) in cases {
        ada.send_json(message.clone()).await;
        let error = ada.next_event().await;
        assert_eq!(error["type"], "error", "{message} was not refused: {error}");
        assert_eq!(error["code"], "invalid_field", "{message}: {error}");
        assert_eq!(error["field"], field, "{message}: {error}");
    }
    assert_nothing_pending(&mut bob).await;
    assert!(
        picture(&server, room).is_none_or(|image| painted_box(&image).is_none()),
        "something was drawn"
    );
}

#[tokio::test]
async fn each_bad_field_of_a_shape_is_refused_by_name_and_reaches_nobody() {
    let good = shape("rect", (10.0, 10.0), (50.0, 50.0), 4.0, "good");
    let with = |field: &str, value: Value| {
        let mut message = good.clone();
        message[field] = value;
        message
    };
    let without = |field: &str| {
        let mut message = good.clone();
        message.as_object_mut().unwrap().remove(field);
        message
    };
    let cases = vec![
        (without("shape"), "shape"),
        (with("shape", json!("star")), "shape"),
        (with("shape", json!(3)), "shape"),
        (without("x1"), "x1"),
        (with("x1", json!(1e9)), "x1"),
        (with("y1", json!(-101)), "y1"),
        (with("x2", json!("50")), "x2"),
        (with("y2", json!(1001)), "y2"),
        (without("color"), "color"),
        (with("color", json!("blue")), "color"),
        (without("size"), "size"),
        (with("size", json!(0.5)), "size"),
        (with("size", json!(65)), "size"),
        (with("fill", json!("#12")), "fill"),
        (with("fill", json!(true)), "fill"),
        (
            filled(shape("line", (1.0, 1.0), (9.0, 9.0), 2.0, "l"), "#000"),
            "fill",
        ),
        (
            filled(shape("arrow", (1.0, 1.0), (9.0, 9.0), 2.0, "a"), "#000"),
            "fill",
        ),
        (without("strokeId"), "strokeId"),
        (with("strokeId", json!("no spaces")), "strokeId"),
    ];
    assert_refused_by_field("shape-fields", cases).await;
}

#[tokio::test]
async fn each_bad_field_of_a_text_is_refused_by_name_and_reaches_nobody() {
    let good = text("Hi", (10.0, 10.0), 20.0, "good");
    let with = |field: &str, value: Value| {
        let mut message = good.clone();
        message[field] = value;
        message
    };
    let without = |field: &str| {
        let mut message = good.clone();
        message.as_object_mut().unwrap().remove(field);
        message
    };
    let cases = vec![
        (without("text"), "text"),
        (with("text", json!("")), "text"),
        (with("text", json!("x".repeat(501))), "text"),
        (with("text", json!("two\nlines")), "text"),
        (with("text", json!("tab\there")), "text"),
        (with("text", json!("bell\u{7}")), "text"),
        (with("text", json!(42)), "text"),
        (without("x"), "x"),
        (with("x", json!(-200)), "x"),
        (with("y", json!(2000)), "y"),
        (with("color", json!("#1234567")), "color"),
        (without("size"), "size"),
        (with("size", json!(7)), "size"),
        (with("size", json!(201)), "size"),
        (without("strokeId"), "strokeId"),
    ];
    assert_refused_by_field("text-fields", cases).await;
}

#[tokio::test]
async fn five_hundred_characters_of_any_script_are_a_text() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "long-text").await;
    let sent = text(&"é😀".repeat(250), (0.0, 0.0), 8.0, "long");
    relay(&mut ada, &mut bob, sent.clone(), &sent).await;
}

#[tokio::test]
async fn a_shape_or_text_reusing_a_stroke_id_is_refused_and_reaches_nobody() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "reused-id").await;
    let first = shape("line", (10.0, 10.0), (50.0, 50.0), 4.0, "same");
    relay(&mut ada, &mut bob, first.clone(), &first).await;
    for again in [
        shape("rect", (60.0, 60.0), (90.0, 90.0), 4.0, "same"),
        text("again", (60.0, 60.0), 20.0, "same"),
    ] {
        ada.send_json(again).await;
        let error = ada.next_event().await;
        assert_eq!(error["field"], "strokeId", "{error}");
        assert_eq!(error["strokeId"], "same", "{error}");
    }
    assert_nothing_pending(&mut bob).await;
}

#[tokio::test]
async fn a_view_only_member_cannot_place_shapes_or_texts() {
    let server = Server::start();
    let (status, _, body) = {
        let url = server.http_url("/api/rooms");
        tokio::task::spawn_blocking(move || {
            let response = ureq::post(&url).call().expect("POST /api/rooms");
            let status = response.status();
            let body = response.into_string().expect("a body");
            (status, (), body)
        })
        .await
        .expect("the request ran")
    };
    assert_eq!(status, 201);
    let created: Value = serde_json::from_str(&body).expect("JSON");
    let room = created["room"].as_str().expect("a room");
    let view = created["viewToken"].as_str().expect("a view token");
    let mut viewer = Client::join(&format!("{}?token={view}", server.ws_url(room))).await;
    viewer.next_event().await;
    for message in [
        shape("rect", (1.0, 1.0), (9.0, 9.0), 2.0, "v1"),
        text("no", (1.0, 1.0), 20.0, "v2"),
    ] {
        viewer.send_json(message).await;
        assert_eq!(viewer.next_event().await["code"], "read_only");
    }
}

// ---- in canvas.png ----

#[tokio::test]
async fn a_filled_rectangle_covers_its_area_and_its_outline_surrounds_it() {
    let server = Server::start();
    let rect = filled(
        shape("rect", (100.0, 100.0), (300.0, 200.0), 4.0, "r"),
        "#00ff00",
    );
    let image = drawn_alone(&server, "rect-pixels", rect).await;
    // Inside: the fill, all of it, up to the outline's inner edge (2 px in from the corners).
    let mut inside = 0;
    for y in 103..198 {
        for x in 103..298 {
            assert!(
                is(image.pixel(x, y), GREEN),
                "({x}, {y}): {:?}",
                image.pixel(x, y)
            );
            inside += 1;
        }
    }
    assert_eq!(inside, 195 * 95);
    // The outline, 4 px wide, centred on the rectangle's edges.
    for (x, y) in [(100, 150), (300, 150), (200, 100), (200, 200), (99, 99)] {
        assert!(
            is(image.pixel(x, y), BLUE),
            "({x}, {y}): {:?}",
            image.pixel(x, y)
        );
    }
    assert_eq!(painted_box(&image), Some((98, 98, 301, 201)));
}

#[tokio::test]
async fn an_ellipse_stays_inside_its_box_and_touches_each_side_at_its_middle() {
    let server = Server::start();
    let ellipse = shape("ellipse", (400.0, 100.0), (600.0, 300.0), 4.0, "e");
    let image = drawn_alone(&server, "ellipse-pixels", ellipse).await;
    assert_eq!(painted_box(&image), Some((398, 98, 601, 301)));
    for (x, y) in [(500, 100), (500, 299), (400, 200), (599, 200)] {
        assert!(
            is(image.pixel(x, y), BLUE),
            "({x}, {y}): {:?}",
            image.pixel(x, y)
        );
    }
    // Not filled, and round: the box's corners and its centre stay empty.
    for (x, y) in [(500, 200), (405, 105), (595, 295)] {
        assert_eq!(image.pixel(x, y)[3], 0, "({x}, {y})");
    }
}

#[tokio::test]
async fn a_line_is_as_long_and_as_thick_as_sent() {
    let server = Server::start();
    let line = shape("line", (100.0, 500.0), (500.0, 500.0), 10.0, "l");
    let image = drawn_alone(&server, "line-pixels", line).await;
    // Round caps reach half the width past each end; the line is 10 px thick.
    assert_eq!(painted_box(&image), Some((95, 495, 504, 504)));
    for x in (100..=500).step_by(20) {
        for y in 496..504 {
            assert!(is(image.pixel(x, y), BLUE), "({x}, {y})");
        }
    }
}

#[tokio::test]
async fn an_arrow_has_a_head_at_its_end_sized_by_its_width() {
    let server = Server::start();
    let arrow = shape("arrow", (700.0, 500.0), (1000.0, 500.0), 4.0, "a");
    let image = drawn_alone(&server, "arrow-pixels", arrow).await;
    // The head: 16 px (4 x the width) long sides at 30 degrees back from the tip, so it spans
    // 16 sin 30 = 8 px above and below the shaft, 16 cos 30 = 13.9 px back from the tip.
    let (_, top, right, bottom) = painted_box(&image).expect("something drawn");
    assert_eq!((top, bottom), (490, 509));
    assert_eq!(right, 1001);
    for (x, y) in [(990, 494), (990, 506), (987, 492), (987, 508)] {
        assert!(image.pixel(x, y)[3] > 128, "({x}, {y}) is on the head");
    }
    // Back along the shaft, only the shaft.
    for (x, y) in [(950, 494), (950, 506), (800, 497)] {
        assert_eq!(image.pixel(x, y)[3], 0, "({x}, {y})");
    }
    let thicker = drawn_alone(
        &server,
        "thick-arrow",
        shape("arrow", (700.0, 500.0), (1000.0, 500.0), 10.0, "a"),
    )
    .await;
    let (_, top, _, bottom) = painted_box(&thicker).expect("something drawn");
    // 40 px sides: 20 px each way, plus half the 10 px width.
    assert_eq!((top, bottom), (475, 524));
}

#[tokio::test]
async fn a_text_spans_its_glyphs_advance_widths_from_its_top_left() {
    let server = Server::start();
    let (x, y, size) = (100.0, 600.0, 100.0);
    let image = drawn_alone(&server, "text-pixels", text("HHHH", (x, y), size, "t")).await;
    let scale = size / UNITS_PER_EM;
    let baseline = y + ASCENT * scale;
    let (left, top, right, bottom) = painted_box(&image).expect("something drawn");
    let near = |got: u32, want: f64| (f64::from(got) - want).abs() <= 1.5;
    assert!(near(left, x + H_BEARING * scale), "left {left}");
    assert!(
        near(right, x + (4.0 * H_ADVANCE - H_BEARING) * scale - 1.0),
        "right {right}"
    );
    assert!(near(top, baseline - CAP_HEIGHT * scale), "top {top}");
    assert!(near(bottom, baseline - 1.0), "bottom {bottom}");
    // Solid inside a stem.
    let stem = (x + (H_BEARING + 60.0) * scale) as u32;
    assert!(is(image.pixel(stem, (baseline - 20.0) as u32), RED));
}

// ---- kept ----

/// One of each, with a filled rectangle and a text, each in a place of its own.
fn one_of_each() -> Vec<Value> {
    vec![
        shape("line", (100.0, 50.0), (400.0, 50.0), 6.0, "k-line"),
        filled(
            shape("rect", (100.0, 100.0), (300.0, 200.0), 4.0, "k-rect"),
            "#00ff00",
        ),
        shape("ellipse", (400.0, 100.0), (600.0, 300.0), 4.0, "k-ellipse"),
        shape("arrow", (700.0, 150.0), (1000.0, 150.0), 4.0, "k-arrow"),
        text("Kept", (100.0, 400.0), 60.0, "k-text"),
    ]
}

/// A pixel that each of `one_of_each` paints, and its colour.
const ONE_OF_EACH_PIXELS: [((u32, u32), [u8; 3]); 5] = [
    ((250, 50), BLUE),
    ((200, 150), GREEN),
    ((500, 101), BLUE),
    ((990, 145), BLUE),
    ((110, 440), RED),
];

fn shows_one_of_each(image: &Image) -> bool {
    ONE_OF_EACH_PIXELS
        .iter()
        .all(|&((x, y), rgb)| image.pixel(x, y)[3] > 200 && image.pixel(x, y)[..3] == rgb)
}

async fn draw_one_of_each(ada: &mut Client, bob: &mut Client) {
    for message in one_of_each() {
        relay(ada, bob, message.clone(), &message).await;
    }
}

fn start_on(dir: &Path) -> Server {
    Server::start_with(&["--data-dir", dir.to_str().expect("a UTF-8 path")])
}

#[tokio::test]
async fn shapes_and_texts_survive_a_restart_pixel_for_pixel() {
    let dir = data_dir();
    let server = start_on(dir.path());
    let (mut ada, mut bob) = pair(&server, "kept").await;
    draw_one_of_each(&mut ada, &mut bob).await;
    let before = picture(&server, "kept").expect("a picture");
    assert!(shows_one_of_each(&before));
    let mut server = server;
    server.terminate();
    assert!(server
        .wait_for_exit(EVENT_DEADLINE)
        .is_some_and(|s| s.success()));

    let server = start_on(dir.path());
    let after = picture(&server, "kept").expect("a picture after the restart");
    assert!(before == after, "canvas.png changed across the restart");
    // A newcomer gets the picture, then the operations that may still be undone: all five.
    let mut newcomer = server.join("kept").await;
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let message = newcomer.next_event().await;
        if message["type"] == "shape" || message["type"] == "text" {
            kinds.push(message["strokeId"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        kinds,
        ["k-line", "k-rect", "k-ellipse", "k-arrow", "k-text"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_and_texts_cross_a_cluster_and_every_node_serves_the_same_picture() {
    let redis = Redis::start();
    let node = |name: &str| {
        let url = redis.url();
        let server = Server::start_with(&["--redis-url", &url, "--node-id", name]);
        wait_for_status(
            &server.http_url("/readyz"),
            200,
            std::time::Duration::from_secs(20),
        );
        server
    };
    let (n1, n2, n3) = (node("n1"), node("n2"), node("n3"));
    let mut ada = join(&n1, "cluster-shapes", ADA).await;
    let mut bob = join(&n2, "cluster-shapes", BOB).await;
    bob.wait_for_count(2).await;
    draw_one_of_each(&mut ada, &mut bob).await;
    assert_nothing_pending(&mut ada).await;
    // A newcomer on the third node gets them all, in order.
    let mut newcomer = join(&n3, "cluster-shapes", "eve-secret-0123456789abcdef").await;
    for message in one_of_each() {
        assert_eq!(
            newcomer
                .next_of_type(message["type"].as_str().unwrap())
                .await,
            message
        );
    }
    let pictures = tokio::task::spawn_blocking(move || {
        [&n1, &n2, &n3].map(|n| picture(n, "cluster-shapes").expect("a picture"))
    })
    .await
    .expect("the requests ran");
    assert!(shows_one_of_each(&pictures[0]));
    assert!(pictures[0] == pictures[1] && pictures[1] == pictures[2]);
}

// ---- undo and redo ----

#[tokio::test]
async fn the_author_undoes_and_redoes_each_shape_and_text_for_everyone() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "undo-shapes").await;
    draw_one_of_each(&mut ada, &mut bob).await;
    for (message, ((x, y), _)) in one_of_each().into_iter().zip(ONE_OF_EACH_PIXELS) {
        let id = message["strokeId"].clone();
        let undo = json!({"type":"undo","strokeId":id});
        relay(&mut ada, &mut bob, undo.clone(), &undo).await;
        let image = picture(&server, "undo-shapes").expect("a picture");
        assert_eq!(image.pixel(x, y)[3], 0, "{id} still drawn after its undo");
        let redo = json!({"type":"redo","strokeId":id});
        relay(&mut ada, &mut bob, redo.clone(), &redo).await;
        let image = picture(&server, "undo-shapes").expect("a picture");
        assert!(image.pixel(x, y)[3] > 200, "{id} not back after its redo");
    }
    assert!(shows_one_of_each(
        &picture(&server, "undo-shapes").expect("a picture")
    ));
}

#[tokio::test]
async fn nobody_else_may_undo_a_shape_or_a_text() {
    let server = Server::start();
    let (mut ada, mut bob) = pair(&server, "undo-not-yours").await;
    draw_one_of_each(&mut ada, &mut bob).await;
    for id in ["k-rect", "k-text"] {
        bob.send_json(json!({"type":"undo","strokeId":id})).await;
        let error = bob.next_event().await;
        assert_eq!(error["code"], "not_yours", "{error}");
    }
    assert_nothing_pending(&mut ada).await;
    assert!(shows_one_of_each(
        &picture(&server, "undo-not-yours").expect("a picture")
    ));
}

// ---- limits ----

#[tokio::test]
async fn shapes_and_texts_count_against_the_drawing_rate_with_draws() {
    let server = Server::start_with(&["--draws-per-second", "1", "--draw-burst", "3"]);
    let (mut ada, mut bob) = pair(&server, "rate").await;
    let draw = common::draw_at(10.0, 10.0);
    ada.send_json(draw.clone()).await;
    ada.send_json(shape("rect", (1.0, 1.0), (9.0, 9.0), 2.0, "r1"))
        .await;
    ada.send_json(text("third", (1.0, 1.0), 20.0, "t1")).await;
    // The burst is spent: the fourth is dropped, and its sender told.
    ada.send_json(shape("line", (1.0, 1.0), (9.0, 9.0), 2.0, "l1"))
        .await;
    assert_eq!(ada.next_event().await["code"], "rate_limited");
    for kind in ["draw", "shape", "text"] {
        assert_eq!(bob.next_event().await["type"], kind);
    }
    assert_nothing_pending(&mut bob).await;
}

#[tokio::test]
async fn shapes_and_texts_fill_the_room_and_are_refused_once_it_is_full() {
    let server = Server::start_with(&["--max-room-bytes", "1500", "--checkpoint-idle", "1h"]);
    let (mut ada, mut bob) = pair(&server, "full").await;
    let mut refused = None;
    for i in 0..40 {
        let message = if i % 2 == 0 {
            shape("ellipse", (1.0, 1.0), (90.0, 90.0), 2.0, &format!("e{i}"))
        } else {
            text("some words", (10.0, 10.0), 20.0, &format!("t{i}"))
        };
        ada.send_json(message.clone()).await;
        let answer = tokio::select! {
            relayed = bob.next_event() => Ok(relayed),
            error = ada.next_event() => Err(error),
        };
        match answer {
            Ok(relayed) => assert_eq!(relayed, message),
            Err(error) => {
                refused = Some((i, error));
                break;
            }
        }
    }
    let (at, error) = refused.expect("the room filled up");
    assert!(at > 3, "refused already at {at}");
    assert_eq!(error["code"], "room_full", "{error}");
    assert_nothing_pending(&mut bob).await;
}
