//! The canvas lives on the server: newcomers get it from the server, it survives a graceful restart
//! whole and a crash (kill -9) but for the last flush interval, and a damaged data file stops
//! start-up rather than being drawn over.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{data_dir, run_binary, Client, Image, Server, EVENT_DEADLINE};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The picture a `canvasState` carries.
fn canvas_state_picture(message: &Value) -> Image {
    Image::from_data_url(message["data"].as_str().expect("canvasState has data"))
}

/// Comparing pictures.
trait Compare {
    fn pixels_differing_from(&self, other: &Image, tolerance: u8) -> usize;
    fn painted_pixels(&self) -> usize;
}

impl Compare for Image {
    /// How many pixels differ by more than `tolerance` in some channel.
    fn pixels_differing_from(&self, other: &Image, tolerance: u8) -> usize {
        assert_eq!((self.width, self.height), (other.width, other.height));
        self.rgba
            .chunks(4)
            .zip(other.rgba.chunks(4))
            .filter(|(a, b)| {
                a.iter()
                    .zip(b.iter())
                    .any(|(x, y)| x.abs_diff(*y) > tolerance)
            })
            .count()
    }

    fn painted_pixels(&self) -> usize {
        self.rgba.chunks(4).filter(|px| px[3] > 0).count()
    }
}

/// Stroke `i` of a test drawing: a short horizontal line in its own place and colour, so that
/// every stroke can be found in the picture afterwards.
fn stroke(i: u32) -> Value {
    let (x, y) = stroke_origin(i);
    json!({
        "type": "draw",
        "color": format!("#{:02x}{:02x}{:02x}", 40 + (i * 7) % 200, (i * 13) % 256, 200 - (i * 3) % 150),
        "startX": x, "startY": y, "endX": x + 20.0, "endY": y,
        "size": 6, "tool": "pen",
    })
}

fn stroke_origin(i: u32) -> (f64, f64) {
    (f64::from(20 + (i % 50) * 30), f64::from(20 + (i / 50) * 20))
}

/// The middle of stroke `i`, where it is opaque in its colour.
fn stroke_middle(i: u32) -> (u32, u32) {
    let (x, y) = stroke_origin(i);
    (x as u32 + 10, y as u32)
}

fn stroke_rgb(i: u32) -> [u8; 3] {
    let color = stroke(i)["color"].as_str().expect("a colour").to_owned();
    let byte = |at: usize| u8::from_str_radix(&color[at..at + 2], 16).expect("hex");
    [byte(1), byte(3), byte(5)]
}

fn assert_has_stroke(image: &Image, i: u32, what: &str) {
    let (x, y) = stroke_middle(i);
    let [r, g, b, a] = image.pixel(x, y);
    assert_eq!(
        [r, g, b, a],
        [stroke_rgb(i)[0], stroke_rgb(i)[1], stroke_rgb(i)[2], 255],
        "{what}: stroke {i} at ({x}, {y})"
    );
}

/// Draws strokes `range` from `drawer`, and returns once `watcher` has received them all: the
/// server accepted (acknowledged) every one.
async fn draw_acknowledged(drawer: &mut Client, watcher: &mut Client, range: std::ops::Range<u32>) {
    for i in range.clone() {
        drawer.send_json(stroke(i)).await;
    }
    for i in range {
        let draw = watcher.next_of_type("draw").await;
        assert_eq!(draw["startX"], stroke(i)["startX"], "stroke {i} in order");
        assert_eq!(draw["startY"], stroke(i)["startY"], "stroke {i} in order");
    }
}

/// What a newcomer is sent: the picture (`canvasState`, or none for `canvasEmpty`), then the
/// strokes the picture does not hold yet, in order.
struct View {
    picture: Option<Image>,
    strokes_after: Vec<Value>,
}

impl View {
    /// Stroke `i` is in the picture or among the strokes sent after it.
    fn assert_sees(&self, i: u32, what: &str) {
        let sent_after = self.strokes_after.iter().any(|draw| {
            draw["startX"] == stroke(i)["startX"] && draw["startY"] == stroke(i)["startY"]
        });
        if !sent_after {
            let picture = self
                .picture
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: stroke {i} is missing"));
            assert_has_stroke(picture, i, what);
        }
    }
}

/// Joins `room` and collects what the newcomer is sent before `expected_strokes` are accounted
/// for: in the picture or sent after it.
async fn newcomer_view(server: &Server, room: &str, expected_strokes: u32) -> View {
    let mut newcomer = server.join(room).await;
    assert_eq!(newcomer.welcome["awaitingSnapshot"], true);
    let first = loop {
        let message = newcomer.next_json().await;
        match message["type"].as_str() {
            Some("canvasState" | "canvasEmpty") => break message,
            Some("clientCount" | "presence" | "presenceChange") => {}
            other => panic!("{other:?} before the picture"),
        }
    };
    assert_eq!(first["clientId"], newcomer.id.as_str());
    let picture = (first["type"] == "canvasState").then(|| canvas_state_picture(&first));
    let mut view = View {
        picture,
        strokes_after: Vec::new(),
    };
    let in_picture = |view: &View, i: u32| {
        let (x, y) = stroke_middle(i);
        view.picture.as_ref().is_some_and(|p| {
            p.pixel(x, y) == [stroke_rgb(i)[0], stroke_rgb(i)[1], stroke_rgb(i)[2], 255]
        })
    };
    let missing = (0..expected_strokes)
        .filter(|&i| !in_picture(&view, i))
        .count();
    while view.strokes_after.len() < missing {
        view.strokes_after.push(newcomer.next_of_type("draw").await);
    }
    view
}

/// A newcomer's picture: the `canvasState` after its welcome. (A room just loaded from disk has
/// folded every stored stroke into it.)
async fn newcomer_picture(server: &Server, room: &str) -> Image {
    let mut newcomer = server.join(room).await;
    assert_eq!(newcomer.welcome["awaitingSnapshot"], true);
    let state = newcomer.next_of_type("canvasState").await;
    assert_eq!(state["clientId"], newcomer.id.as_str());
    canvas_state_picture(&state)
}

/// GET on the server (blocking HTTP, off the test's runtime thread).
async fn get(server: &Server, path: &str) -> (u16, Vec<u8>, String) {
    let addr = server.addr;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http_get_url(addr, &path))
        .await
        .expect("the GET ran")
}

fn http_get_url(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>, String) {
    let (status, content_type, body) = common::http_get(&format!("http://{addr}{path}"));
    (status, body, content_type)
}

/// Waits until the server has closed every room (they unload once empty).
async fn wait_until_no_room_is_open(server: &Server) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let addr = server.addr;
        let (_, body, _) = tokio::task::spawn_blocking(move || http_get_url(addr, "/healthz"))
            .await
            .expect("healthz ran");
        let health: Value = serde_json::from_slice(&body).expect("JSON");
        if health["rooms"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "a room never closed: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stop_gracefully(mut server: Server) {
    server.terminate();
    let status = server.wait_for_exit(EVENT_DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server exits 0 after SIGTERM: {status:?}"
    );
}

fn start_on(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// Connects without expecting a welcome, and returns the close the server answers with.
async fn refused_join(server: &Server, room: &str) -> (CloseCode, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(room))
        .await
        .expect("the upgrade succeeds");
    loop {
        let message = tokio::time::timeout(EVENT_DEADLINE, ws.next())
            .await
            .expect("a message before the deadline")
            .expect("the connection is open")
            .expect("a well-formed message");
        match message {
            Message::Close(Some(frame)) => return (frame.code, frame.reason.to_string()),
            Message::Close(None) => panic!("a close without a code"),
            Message::Text(text) => assert!(
                !text.contains("\"welcome\""),
                "the refused client was welcomed: {text}"
            ),
            _ => {}
        }
    }
}

// ---- newcomers get the picture from the server ----

#[tokio::test]
async fn a_newcomer_to_a_room_everyone_left_gets_the_picture_from_the_server() {
    let server = Server::start();
    let mut alice = server.join("kept").await;
    let mut bob = server.join("kept").await;
    draw_acknowledged(&mut alice, &mut bob, 0..5).await;
    drop(alice);
    drop(bob);
    wait_until_no_room_is_open(&server).await;

    let picture = newcomer_picture(&server, "kept").await;
    for i in 0..5 {
        assert_has_stroke(&picture, i, "the newcomer's picture");
    }
    assert_eq!(
        picture.pixel(1500, 800),
        [0, 0, 0, 0],
        "far from the strokes"
    );
}

#[tokio::test]
async fn a_newcomer_gets_the_strokes_since_the_last_checkpoint_after_the_picture() {
    let server = Server::start_with(&["--checkpoint-ops", "4", "--checkpoint-idle", "1h"]);
    let mut alice = server.join("tail").await;
    let mut bob = server.join("tail").await;
    draw_acknowledged(&mut alice, &mut bob, 0..6).await;
    // Four strokes make a checkpoint (rendered in the background); the rest follow the picture.
    let view = newcomer_view(&server, "tail", 6).await;
    for i in 0..6 {
        view.assert_sees(i, "the newcomer");
    }
    let after: Vec<_> = view
        .strokes_after
        .iter()
        .map(|d| d["startX"].clone())
        .collect();
    let expected: Vec<_> = (6 - after.len() as u32..6)
        .map(|i| stroke(i)["startX"].clone())
        .collect();
    assert_eq!(
        after, expected,
        "the strokes after the picture are the last ones, in order"
    );
}

#[tokio::test]
async fn a_room_where_drawing_pauses_is_checkpointed_so_newcomers_get_one_picture() {
    let server = Server::start_with(&["--checkpoint-ops", "1000", "--checkpoint-idle", "200ms"]);
    let mut alice = server.join("pause").await;
    let mut bob = server.join("pause").await;
    draw_acknowledged(&mut alice, &mut bob, 0..5).await;
    // Nobody leaves (leaving would checkpoint too): only the pause can fold the strokes into the
    // picture. The checkpoint is not observable as an event, so newcomers look until it is there.
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let view = newcomer_view(&server, "pause", 5).await;
        if view.strokes_after.is_empty() {
            for i in 0..5 {
                view.assert_sees(i, "the idle checkpoint");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no idle checkpoint before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_newcomer_after_a_clear_is_told_the_canvas_is_empty() {
    let server = Server::start();
    let mut alice = server.join("cleared").await;
    let mut bob = server.join("cleared").await;
    draw_acknowledged(&mut alice, &mut bob, 0..3).await;
    alice.send_json(json!({"type":"clear"})).await;
    bob.next_of_type("clear").await;
    let mut carol = server.join("cleared").await;
    assert_eq!(
        carol.next_of_type("canvasEmpty").await,
        json!({"type":"canvasEmpty","clientId": carol.id})
    );
}

// ---- surviving restarts ----

#[tokio::test]
async fn a_graceful_restart_keeps_every_stroke_pixel_for_pixel() {
    let dir = data_dir();
    let server = start_on(dir.path(), &[]);
    let mut alice = server.join("studio").await;
    let mut bob = server.join("studio").await;
    draw_acknowledged(&mut alice, &mut bob, 0..300).await;
    let (status, before, _) = get(
        &server,
        "/api/rooms/studio/canvas.png?background=transparent",
    )
    .await;
    assert_eq!(status, 200);
    let before = Image::decode(&before);
    // The clients are still connected when the stop comes.
    stop_gracefully(server);

    let server = start_on(dir.path(), &[]);
    let after = newcomer_picture(&server, "studio").await;
    for i in 0..300 {
        assert_has_stroke(&after, i, "after the restart");
    }
    // Anti-aliased edges may round differently by one step through a PNG round trip.
    assert_eq!(after.pixels_differing_from(&before, 2), 0);
    assert!(after.painted_pixels() > 300 * 20);
}

#[tokio::test]
async fn a_kill_9_loses_nothing_older_than_the_flush_interval() {
    let dir = data_dir();
    let mut server = start_on(dir.path(), &["--flush-interval", "100ms"]);
    let mut alice = server.join("crash").await;
    let mut bob = server.join("crash").await;
    draw_acknowledged(&mut alice, &mut bob, 0..100).await;
    // The promise is about time: wait well past the flush interval, then crash mid-drawing.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for i in 100..150 {
        alice.send_json(stroke(i)).await;
    }
    server.kill_now();

    let server = start_on(dir.path(), &[]);
    let after = newcomer_picture(&server, "crash").await;
    for i in 0..100 {
        assert_has_stroke(&after, i, "after kill -9");
    }
}

#[tokio::test]
async fn an_emptied_and_cleared_room_is_not_kept() {
    let server = Server::start();
    let mut alice = server.join("gone").await;
    let mut bob = server.join("gone").await;
    draw_acknowledged(&mut alice, &mut bob, 1..2).await;
    alice.send_json(json!({"type":"clear"})).await;
    bob.next_of_type("clear").await;
    drop((alice, bob));
    wait_until_no_room_is_open(&server).await;
    let (status, body, _) = get(&server, "/api/rooms/gone/canvas.png").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

// ---- a damaged data directory ----

/// Runs the server on `dir` until it exits (it is expected to refuse to start): code and stderr.
fn start_up_on(dir: &Path) -> (Option<i32>, String) {
    run_binary(&[
        "--bind",
        "127.0.0.1:0",
        "--frontend-dir",
        &common::frontend_dir(),
        "--data-dir",
        dir.to_str().expect("UTF-8"),
    ])
}

#[test]
fn a_corrupt_data_file_stops_start_up_naming_it_and_is_left_untouched() {
    let dir = data_dir();
    let file = dir.path().join("livecanvas.db");
    let garbage = b"this is not a database, but it was someone's canvas".repeat(100);
    std::fs::write(&file, &garbage).expect("write the file");
    let (code, stderr) = start_up_on(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(file.to_str().expect("UTF-8")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).expect("the file is still there"),
        garbage
    );
}

#[test]
fn a_data_file_that_cannot_be_read_stops_start_up_naming_it() {
    let dir = data_dir();
    let file = dir.path().join("livecanvas.db");
    // What the server expects to be a file is a directory.
    std::fs::create_dir(&file).expect("mkdir");
    let (code, stderr) = start_up_on(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(file.to_str().expect("UTF-8")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let dir = data_dir();
    let _first = start_on(dir.path(), &[]);
    let (code, stderr) = start_up_on(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("livecanvas.db"), "{stderr}");
    assert!(stderr.contains("another livecanvas"), "{stderr}");
}

#[tokio::test]
async fn a_room_whose_stored_picture_is_damaged_is_refused_and_kept_as_it_is() {
    let dir = data_dir();
    let server = start_on(dir.path(), &[]);
    let mut alice = server.join("broken").await;
    let mut bob = server.join("broken").await;
    draw_acknowledged(&mut alice, &mut bob, 0..3).await;
    stop_gracefully(server);
    // A room loaded with strokes after its checkpoint stores a new checkpoint at once.
    let server = start_on(dir.path(), &[]);
    assert_has_stroke(
        &newcomer_picture(&server, "broken").await,
        2,
        "after a restart",
    );
    stop_gracefully(server);

    // Damage the picture after its PNG signature, as a bad disk might.
    let file = dir.path().join("livecanvas.db");
    {
        let db = rusqlite::Connection::open(&file).expect("open the database");
        let changed = db
            .execute(
                "UPDATE rooms SET checkpoint = CAST(substr(checkpoint, 1, 8) || zeroblob(64) AS BLOB) \
                 WHERE name = 'broken' AND checkpoint IS NOT NULL",
                [],
            )
            .expect("damage the checkpoint");
        assert_eq!(changed, 1);
    }

    let server = start_on(dir.path(), &[]);
    let (code, reason) = refused_join(&server, "broken").await;
    assert_eq!(code, CloseCode::Error, "{reason}");
    assert!(reason.contains("could not be read"), "{reason}");
    // Other rooms work.
    let mut other = server.join("fine").await;
    other.next_of_type("canvasEmpty").await;
    drop(other);
    wait_until_no_room_is_open(&server).await;
    stop_gracefully(server);
    let db = rusqlite::Connection::open(&file).expect("open the database");
    let kept: Vec<u8> = db
        .query_row(
            "SELECT checkpoint FROM rooms WHERE name = 'broken'",
            [],
            |row| row.get(0),
        )
        .expect("the damaged room is still stored");
    assert_eq!(&kept[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(kept.len(), 8 + 64);
}

// ---- limits ----

#[tokio::test]
async fn draws_beyond_the_room_size_limit_are_refused_until_someone_clears() {
    let server = Server::start_with(&["--max-room-bytes", "2000", "--checkpoint-idle", "1h"]);
    let mut alice = server.join("small").await;
    let mut bob = server.join("small").await;
    let mut refused = None;
    for i in 0..100 {
        alice.send_json(stroke(i)).await;
        // Each stroke is either relayed to Bob or refused to Alice.
        tokio::select! {
            draw = bob.next_of_type("draw") => assert_eq!(draw["startX"], stroke(i)["startX"]),
            error = alice.next_of_type("error") => { refused = Some((i, error)); break; }
        }
    }
    let (at, error) = refused.expect("the room filled up");
    assert!(at > 3, "refused only at stroke {at}");
    assert_eq!(error["code"], "room_full", "{error}");
    assert!(error["message"]
        .as_str()
        .expect("a message")
        .contains("clear"));
    alice.send_json(json!({"type":"clear"})).await;
    bob.next_of_type("clear").await;
    alice.send_json(stroke(7)).await;
    assert_eq!(
        bob.next_of_type("draw").await["startX"],
        stroke(7)["startX"]
    );
}

#[tokio::test]
async fn a_new_room_beyond_the_stored_room_limit_is_refused_with_1013() {
    let server = Server::start_with(&["--max-stored-rooms", "1"]);
    let mut alice = server.join("first").await;
    let mut bob = server.join("first").await;
    draw_acknowledged(&mut alice, &mut bob, 1..2).await;
    drop((alice, bob));
    wait_until_no_room_is_open(&server).await;

    let (code, reason) = refused_join(&server, "second").await;
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(reason.contains("rooms"), "{reason}");
    // The stored room still opens.
    let picture = newcomer_picture(&server, "first").await;
    assert_has_stroke(&picture, 1, "the stored room");
}

// ---- GET /api/rooms/{room}/canvas.png ----

#[tokio::test]
async fn the_canvas_png_of_an_open_room_is_its_current_picture_on_white() {
    let server = Server::start();
    let mut alice = server.join("shared").await;
    let mut bob = server.join("shared").await;
    draw_acknowledged(&mut alice, &mut bob, 0..10).await;
    let (status, body, content_type) = get(&server, "/api/rooms/shared/canvas.png").await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let image = Image::decode(&body);
    assert_eq!((image.width, image.height), (1600, 900));
    for i in 0..10 {
        assert_has_stroke(&image, i, "the PNG");
    }
    assert_eq!(
        image.pixel(1500, 800),
        [255, 255, 255, 255],
        "white background"
    );

    let (_, body, _) = get(
        &server,
        "/api/rooms/shared/canvas.png?background=transparent",
    )
    .await;
    assert_eq!(Image::decode(&body).pixel(1500, 800), [0, 0, 0, 0]);
}

#[tokio::test]
async fn the_canvas_png_of_a_closed_room_comes_from_disk() {
    let server = Server::start();
    let mut alice = server.join("closed").await;
    let mut bob = server.join("closed").await;
    draw_acknowledged(&mut alice, &mut bob, 0..3).await;
    drop((alice, bob));
    wait_until_no_room_is_open(&server).await;
    let (status, body, _) = get(&server, "/api/rooms/closed/canvas.png").await;
    assert_eq!(status, 200);
    assert_has_stroke(&Image::decode(&body), 2, "the PNG of a closed room");
}

#[tokio::test]
async fn the_canvas_png_answers_unknown_rooms_and_bad_requests_clearly() {
    let server = Server::start();
    let (status, body, _) = get(&server, "/api/rooms/nobody-here/canvas.png").await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"], "no_such_room");
    let (status, _, _) = get(&server, "/api/rooms/bad%20name/canvas.png").await;
    assert_eq!(status, 400);
    let (status, body, _) = get(&server, "/api/rooms/main/canvas.png?background=pink").await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"], "invalid_background");
}

#[tokio::test]
async fn with_storage_memory_nothing_is_written_to_the_data_dir() {
    let dir = data_dir();
    let server = start_on(dir.path(), &["--storage", "memory"]);
    let mut alice = server.join("fleeting").await;
    let mut bob = server.join("fleeting").await;
    draw_acknowledged(&mut alice, &mut bob, 0..3).await;
    let view = newcomer_view(&server, "fleeting", 3).await;
    for i in 0..3 {
        view.assert_sees(i, "a newcomer to a room kept in memory");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("the dir").count(),
        0,
        "the data dir stays empty"
    );
}

/// Stroke `i` of noise: a random place, colour and width, so that the picture compresses badly.
fn noisy_stroke(i: u32) -> Value {
    // A fixed sequence (an LCG step per stroke), the same on every run.
    let mut state = u64::from(i).wrapping_mul(6_364_136_223_846_793_005) ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = |below: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    };
    json!({
        "type": "draw",
        "color": format!("#{:06x}", next(0x100_0000)),
        "startX": next(1600), "startY": next(900), "endX": next(1600), "endY": next(900),
        "size": 1 + next(30), "tool": "pen",
    })
}

#[tokio::test]
async fn newcomers_do_not_keep_a_buffer_the_size_of_the_picture_they_were_sent() {
    const STROKES: u32 = 3_000;
    const NEWCOMERS: u64 = 30;
    let server = Server::start_with(&["--draws-per-second", "100000", "--draw-burst", "100000"]);
    let mut drawer = server.join("noise").await;
    let mut watcher = server.join("noise").await;
    for i in 0..STROKES {
        drawer.send_json(noisy_stroke(i)).await;
    }
    for _ in 0..STROKES {
        watcher.next_of_type("draw").await;
    }
    // Everyone leaves, so the room is checkpointed: newcomers get it as one picture.
    drop((drawer, watcher));
    wait_until_no_room_is_open(&server).await;
    // The first newcomer pays for loading the room; measure from after it.
    let mut first = server.join("noise").await;
    let picture_kib = first.next_of_type("canvasState").await["data"]
        .as_str()
        .map_or(0, str::len) as u64
        / 1024;
    assert!(picture_kib > 256, "the picture is only {picture_kib} KiB");
    let rss_before = server.rss_kib();
    let mut newcomers = Vec::new();
    for _ in 0..NEWCOMERS {
        let mut newcomer = server.join("noise").await;
        newcomer.next_of_type("canvasState").await;
        newcomers.push(newcomer);
    }
    // Had every newcomer kept its write buffer, the server would have grown by NEWCOMERS pictures.
    // Giving them back is not an event a client sees, so look until it has happened.
    let budget_kib = NEWCOMERS * picture_kib / 4;
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let growth_kib = server.rss_kib().saturating_sub(rss_before);
        if growth_kib < budget_kib {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{NEWCOMERS} newcomers sent a {picture_kib} KiB picture still hold {growth_kib} KiB"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
