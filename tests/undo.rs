//! Undo and redo of one's own strokes, against the real server: who may undo what, what everyone
//! else receives, and what the stored picture (`canvas.png`, a newcomer's picture, a restarted
//! server's) shows afterwards.

mod common;

use std::time::Duration;

use common::{data_dir, http_get, Client, Image, Server};
use serde_json::{json, Value};

/// A page's per-browser secret (the `?author=` it sends when connecting).
const ADA: &str = "ada-secret-0123456789abcdef";
const BOB: &str = "bob-secret-0123456789abcdef";

/// Where test strokes go: one horizontal line per stroke number, in a colour of its own.
fn stroke_y(n: u32) -> f64 {
    100.0 + f64::from(n) * 60.0
}

/// A pixel on stroke `n`'s line.
fn on_stroke(n: u32) -> (u32, u32) {
    (300, stroke_y(n) as u32)
}

const RGB: [u8; 3] = [0x22, 0x88, 0x44];

/// Segment `part` of stroke `id` (number `n`): two segments make a line from x=200 to x=400.
fn segment(id: &str, n: u32, part: u32) -> Value {
    let x = 200.0 + f64::from(part) * 100.0;
    json!({"type":"draw","strokeId":id,"color":"#228844","startX":x,"startY":stroke_y(n),
           "endX":x + 100.0,"endY":stroke_y(n),"size":12,"tool":"pen"})
}

async fn join(server: &Server, room: &str, author: &str) -> Client {
    enter(&format!("{}?author={author}", server.ws_url(room))).await
}

/// Joins, and reads the picture the server sends first.
async fn enter(url: &str) -> Client {
    let mut client = Client::join(url).await;
    let picture = client.next_event().await;
    assert!(
        picture["type"] == "canvasEmpty" || picture["type"] == "canvasState",
        "{picture}"
    );
    client
}

/// Sends both segments of stroke `id`, and waits until `watcher` has them (so the room took them).
async fn draw_stroke(drawer: &mut Client, watcher: &mut Client, id: &str, n: u32) {
    for part in 0..2 {
        drawer.send_json(segment(id, n, part)).await;
        let got = watcher.next_event().await;
        assert_eq!(got["strokeId"], id, "{got}");
    }
}

/// The room's picture as the server renders it, transparent where nothing is.
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

fn shows(server: &Server, room: &str, n: u32) -> bool {
    let (x, y) = on_stroke(n);
    picture(server, room).is_some_and(|image| {
        let [r, g, b, a] = image.pixel(x, y);
        a == 255 && [r, g, b] == RGB
    })
}

/// Sends `message` and returns the error it gets (skipping the operations a rejoining member is
/// sent with its picture).
async fn error_for(client: &mut Client, message: Value) -> Value {
    client.send_json(message).await;
    client.next_of_type("error").await
}

#[tokio::test]
async fn the_author_undoes_a_stroke_for_everyone_and_redoes_it() {
    let server = Server::start();
    let mut ada = join(&server, "undo-basic", ADA).await;
    let mut bob = join(&server, "undo-basic", BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    draw_stroke(&mut ada, &mut bob, "s2", 2).await;
    assert!(shows(&server, "undo-basic", 1) && shows(&server, "undo-basic", 2));

    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(
        bob.next_event().await,
        json!({"type":"undo","strokeId":"s1"})
    );
    assert!(
        !shows(&server, "undo-basic", 1),
        "undone stroke still drawn"
    );
    assert!(shows(&server, "undo-basic", 2), "the other stroke went too");

    ada.send_json(json!({"type":"redo","strokeId":"s1"})).await;
    assert_eq!(
        bob.next_event().await,
        json!({"type":"redo","strokeId":"s1"})
    );
    assert!(shows(&server, "undo-basic", 1), "redone stroke not drawn");
}

#[tokio::test]
async fn the_author_does_not_get_its_own_undo_back() {
    let server = Server::start();
    let mut ada = join(&server, "undo-echo", ADA).await;
    let mut bob = join(&server, "undo-echo", BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    bob.next_event().await;
    // Bob's next draw is the next thing Ada hears: nothing of her own came back before it.
    bob.send_json(segment("b1", 3, 0)).await;
    let next = ada.next_event().await;
    assert_eq!(next["strokeId"], "b1", "{next}");
}

#[tokio::test]
async fn someone_elses_stroke_cannot_be_undone_or_drawn_into() {
    let server = Server::start();
    let mut ada = join(&server, "undo-forged", ADA).await;
    let mut bob = join(&server, "undo-forged", BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;

    let error = error_for(&mut bob, json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(error["code"], "not_yours", "{error}");
    assert_eq!(
        error["strokeId"], "s1",
        "the refusal names the stroke: {error}"
    );
    let error = error_for(&mut bob, segment("s1", 2, 0)).await;
    assert_eq!(
        (&error["code"], &error["field"]),
        (&json!("invalid_field"), &json!("strokeId")),
        "{error}"
    );
    // Nothing reached Ada, and the picture still has the stroke and not Bob's segment.
    bob.send_json(segment("b1", 3, 0)).await;
    assert_eq!(ada.next_event().await["strokeId"], "b1");
    assert!(shows(&server, "undo-forged", 1));
    assert!(!shows(&server, "undo-forged", 2));
}

#[tokio::test]
async fn an_unknown_or_already_undone_stroke_gets_cannot_undo() {
    let server = Server::start();
    let mut ada = join(&server, "undo-cannot", ADA).await;
    let mut bob = join(&server, "undo-cannot", BOB).await;
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":"nope"})).await;
    assert_eq!(error["code"], "cannot_undo", "{error}");

    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    let error = error_for(&mut ada, json!({"type":"redo","strokeId":"s1"})).await;
    assert_eq!(
        error["code"], "cannot_undo",
        "redo of a shown stroke: {error}"
    );
    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    bob.next_event().await;
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(error["code"], "cannot_undo", "second undo: {error}");
    let error = error_for(&mut ada, segment("s1", 1, 1)).await;
    assert_eq!(
        error["field"], "strokeId",
        "drawing into an undone stroke: {error}"
    );
}

#[tokio::test]
async fn stroke_ids_are_checked() {
    let server = Server::start();
    let mut ada = join(&server, "undo-ids", ADA).await;
    let too_long = "x".repeat(65);
    for bad in [
        json!(""),
        json!(too_long),
        json!("a b"),
        json!("<i>"),
        json!(7),
    ] {
        let mut draw = segment("ok", 1, 0);
        draw["strokeId"] = bad.clone();
        let error = error_for(&mut ada, draw).await;
        assert_eq!(error["field"], "strokeId", "{bad}: {error}");
        let error = error_for(&mut ada, json!({"type":"undo","strokeId":bad})).await;
        assert_eq!(error["field"], "strokeId", "undo {bad}: {error}");
    }
    let error = error_for(&mut ada, json!({"type":"redo"})).await;
    assert_eq!(error["field"], "strokeId", "{error}");
    let longest = "y".repeat(64);
    ada.send_json(segment(&longest, 1, 0)).await;
    ada.send_json(json!({"type":"undo","strokeId":longest}))
        .await;
    // Both were taken: an unknown one would answer cannot_undo.
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":longest})).await;
    assert_eq!(error["message"], "that stroke is already undone", "{error}");
}

#[tokio::test]
async fn a_bad_author_secret_is_refused_before_the_upgrade() {
    let server = Server::start();
    for bad in ["short", "has%20space-0123456789", &"z".repeat(129)] {
        let url = server.http_url(&format!("/ws/room?author={bad}"));
        let status = common::http_status(&url);
        assert_eq!(status, 400, "author={bad}");
    }
}

#[tokio::test]
async fn an_author_who_reconnects_can_still_undo_and_another_secret_cannot() {
    let server = Server::start();
    let mut ada = join(&server, "undo-again", ADA).await;
    let mut bob = join(&server, "undo-again", BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    drop(ada);
    bob.wait_for_count(1).await;

    let mut stranger = join(&server, "undo-again", "stranger-0123456789abcdef").await;
    let error = error_for(&mut stranger, json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(error["code"], "not_yours", "{error}");

    let mut ada = join(&server, "undo-again", ADA).await;
    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(bob.next_event().await["type"], "undo");
    assert!(!shows(&server, "undo-again", 1));
}

#[tokio::test]
async fn a_connection_without_a_secret_can_undo_only_while_connected() {
    let server = Server::start();
    let mut anon = enter(&server.ws_url("undo-anon")).await;
    let mut bob = join(&server, "undo-anon", BOB).await;
    draw_stroke(&mut anon, &mut bob, "s1", 1).await;
    draw_stroke(&mut anon, &mut bob, "s2", 2).await;
    anon.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(bob.next_event().await["type"], "undo");
    drop(anon);
    let mut again = enter(&server.ws_url("undo-anon")).await;
    let error = error_for(&mut again, json!({"type":"undo","strokeId":"s2"})).await;
    assert_eq!(error["code"], "not_yours", "{error}");
}

#[tokio::test]
async fn undoing_a_clear_brings_the_picture_back_whoever_of_the_room_undoes_it() {
    let server = Server::start();
    let room = "undo-clear";
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    draw_stroke(&mut bob, &mut ada, "b2", 2).await;
    bob.send_json(json!({"type":"clear","strokeId":"c1"})).await;
    assert_eq!(
        ada.next_event().await,
        json!({"type":"clear","strokeId":"c1"})
    );
    assert!(!shows(&server, room, 1) && !shows(&server, room, 2));

    // Ada restores Bob's clear; Bob's stroke stays his own to undo.
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":"b2"})).await;
    assert_eq!(error["code"], "not_yours", "{error}");
    ada.send_json(json!({"type":"undo","strokeId":"c1"})).await;
    assert_eq!(
        bob.next_event().await,
        json!({"type":"undo","strokeId":"c1"})
    );
    assert!(shows(&server, room, 1) && shows(&server, room, 2));
}

#[tokio::test]
async fn a_newcomer_gets_the_strokes_and_the_undos_in_order() {
    let server = Server::start();
    let room = "undo-newcomer";
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    draw_stroke(&mut ada, &mut bob, "s2", 2).await;
    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    bob.next_event().await;

    let mut newcomer = Client::join(&server.ws_url(room)).await;
    let first = newcomer.next_event().await;
    assert_eq!(first["type"], "canvasEmpty", "{first}");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = newcomer.next_event().await;
        seen.push(format!("{}:{}", event["type"], event["strokeId"]).replace('"', ""));
    }
    assert_eq!(
        seen,
        ["draw:s1", "draw:s1", "draw:s2", "draw:s2", "undo:s1"],
        "what a newcomer replays"
    );
}

#[tokio::test]
async fn a_stroke_past_the_authors_history_cannot_be_undone() {
    let server = Server::start_with(&["--undo-strokes", "2"]);
    let room = "undo-limit";
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    for n in 1..=3 {
        draw_stroke(&mut ada, &mut bob, &format!("s{n}"), n).await;
    }
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(error["code"], "cannot_undo", "{error}");
    ada.send_json(json!({"type":"undo","strokeId":"s2"})).await;
    assert_eq!(bob.next_event().await["strokeId"], "s2");
}

#[tokio::test]
async fn a_stroke_deeper_than_the_rooms_history_cannot_be_undone_and_is_checkpointed() {
    let server = Server::start_with(&["--undo-max-ops", "3", "--checkpoint-ops", "1"]);
    let room = "undo-depth";
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    draw_stroke(&mut bob, &mut ada, "b2", 2).await;
    draw_stroke(&mut bob, &mut ada, "b3", 3).await;
    let error = error_for(&mut ada, json!({"type":"undo","strokeId":"s1"})).await;
    assert_eq!(error["code"], "cannot_undo", "{error}");
    // A newcomer gets a picture with the settled stroke in it, not all of it as operations.
    let mut newcomer = Client::join(&server.ws_url(room)).await;
    let deadline = tokio::time::Instant::now() + common::EVENT_DEADLINE;
    loop {
        let first = newcomer.next_event().await;
        if first["type"] == "canvasState" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint");
        drop(newcomer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        newcomer = Client::join(&server.ws_url(room)).await;
    }
}

#[tokio::test]
async fn undo_works_across_a_restart_and_the_undone_stroke_stays_gone() {
    let dir = data_dir();
    let path = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let args = ["--data-dir", path.as_str(), "--checkpoint-ops", "1"];
    let room = "undo-restart";
    let server = Server::start_with(&args);
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    draw_stroke(&mut ada, &mut bob, "s1", 1).await;
    draw_stroke(&mut ada, &mut bob, "s2", 2).await;
    drop((ada, bob));
    stop(server);

    // The last checkpoint of the stop must not have baked the strokes in.
    let server = Server::start_with(&args);
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    ada.send_json(json!({"type":"undo","strokeId":"s1"})).await;
    // Bob first gets the strokes the room keeps after its picture, then the undo.
    assert_eq!(bob.next_of_type("undo").await["strokeId"], "s1");
    assert!(!shows(&server, room, 1) && shows(&server, room, 2));
    drop((ada, bob));
    stop(server);

    let server = Server::start_with(&args);
    assert!(!shows(&server, room, 1), "the undone stroke came back");
    assert!(shows(&server, room, 2));
}

fn stop(mut server: Server) {
    server.terminate();
    server
        .wait_for_exit(Duration::from_secs(20))
        .expect("the server stops");
}

/// Draws `ops` into `room` from one client, each acknowledged by a watcher.
async fn draw_all(server: &Server, room: &str, ops: &[Value]) {
    let mut drawer = join(server, room, ADA).await;
    let mut watcher = join(server, room, BOB).await;
    for op in ops {
        drawer.send_json(op.clone()).await;
        watcher.next_event().await;
    }
}

fn line(id: &str, y: f64, tool: &str, size: u32) -> Value {
    json!({"type":"draw","strokeId":id,"color":"#cc2233","startX":100.0,"startY":y,
           "endX":900.0,"endY":y + 300.0,"size":size,"tool":tool})
}

#[tokio::test]
async fn an_undone_eraser_stroke_leaves_exactly_the_picture_drawn_without_it() {
    let server = Server::start();
    let pen = line("p", 100.0, "pen", 30);
    let eraser = json!({"type":"draw","strokeId":"e","color":"#000000","startX":100.0,
        "startY":400.0,"endX":900.0,"endY":100.0,"size":20,"tool":"eraser"});
    let later = line("q", 150.0, "pen", 8);
    draw_all(
        &server,
        "undo-exact",
        &[
            pen.clone(),
            eraser,
            later.clone(),
            json!({"type":"undo","strokeId":"e"}),
        ],
    )
    .await;
    draw_all(&server, "undo-never", &[pen, later]).await;
    let undone = picture(&server, "undo-exact").expect("a picture");
    let never = picture(&server, "undo-never").expect("a picture");
    assert!(
        undone == never,
        "undoing the eraser must give the picture drawn without it, pixel for pixel"
    );
}

#[tokio::test]
async fn a_newcomer_gets_an_undoable_history_larger_than_its_queue() {
    // Every segment is one stroke, so none of it may go into a checkpoint.
    let server = Server::start_with(&["--max-queued-messages", "64", "--draw-burst", "1000"]);
    let room = "undo-long";
    let mut ada = join(&server, room, ADA).await;
    let mut bob = join(&server, room, BOB).await;
    const SEGMENTS: usize = 300;
    for i in 0..SEGMENTS {
        let mut draw = segment("long", 1, 0);
        draw["startY"] = json!(100.0 + (i % 500) as f64);
        ada.send_json(draw).await;
    }
    for _ in 0..SEGMENTS {
        bob.next_of_type("draw").await;
    }
    for batched in [false, true] {
        let url = format!(
            "{}{}",
            server.ws_url(room),
            if batched { "?batch=1" } else { "" }
        );
        let mut newcomer = Client::join(&url).await;
        let mut draws = 0;
        while draws < SEGMENTS {
            let message = newcomer.next_json().await;
            draws += match message["type"].as_str() {
                Some("draw") => 1,
                Some("batch") => message["messages"]
                    .as_array()
                    .map_or(0, |all| all.iter().filter(|m| m["type"] == "draw").count()),
                _ => 0,
            };
        }
        assert_eq!(draws, SEGMENTS, "batched: {batched}");
    }
}
