//! Names, presence and live cursors, on one node and across a cluster: a real server
//! on an ephemeral port, real WebSockets, real `redis-server` for the cluster cases.

mod common;

use std::time::Duration;

use common::{draw_at, http_get, wait_for_status, Client, Image, Redis, Server};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Members listed in a `presence` message: (clientId, name, color).
fn listed(presence: &Value) -> Vec<(String, String, String)> {
    presence["members"]
        .as_array()
        .expect("presence has members")
        .iter()
        .map(|m| {
            let text = |field: &str| m[field].as_str().expect("a text field").to_owned();
            (text("clientId"), text("name"), text("color"))
        })
        .collect()
}

/// The name `presence` gives `id`, if it lists it.
fn name_of(presence: &Value, id: &str) -> Option<String> {
    listed(presence)
        .into_iter()
        .find(|(client, _, _)| client == id)
        .map(|(_, name, _)| name)
}

/// Reads until the presence list (`presence`, then the `presenceChange`s) satisfies `done`;
/// returns it as one `presence` message.
async fn presence_until(client: &mut Client, done: impl FnMut(&Value) -> bool) -> Value {
    client.presence_until(done).await
}

/// Every message of a frame, a batch's included.
fn messages_of(frame: Value) -> Vec<Value> {
    if frame["type"] == "batch" {
        frame["messages"].as_array().cloned().unwrap_or_default()
    } else {
        vec![frame]
    }
}

/// Reads until a cursor of `from` arrives, returning every message read up to it (batches
/// opened).
async fn until_cursor_of(client: &mut Client, from: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        for message in messages_of(client.next_json().await) {
            let done = message["type"] == "cursor" && message["clientId"] == from;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

async fn set_name(client: &mut Client, name: &str) {
    client
        .send_json(json!({"type": "name", "name": name}))
        .await;
}

fn cursor(x: f64, y: f64) -> Value {
    json!({"type": "cursor", "x": x, "y": y})
}

#[tokio::test]
async fn a_name_is_listed_in_every_members_presence() {
    let server = Server::start();
    let mut alice = server.join("names").await;
    let mut bob = server.join("names").await;
    set_name(&mut alice, "Ada").await;
    let alice_id = alice.id.clone();
    let named = |p: &Value| name_of(p, &alice_id).as_deref() == Some("Ada");
    let seen_by_bob = presence_until(&mut bob, named).await;
    let seen_by_alice = presence_until(&mut alice, named).await;
    assert_eq!(listed(&seen_by_bob).len(), 2);
    assert_eq!(seen_by_bob["total"], 2);
    assert_eq!(listed(&seen_by_alice), listed(&seen_by_bob));
}

#[tokio::test]
async fn names_are_trimmed() {
    let server = Server::start();
    let mut alice = server.join("trim").await;
    set_name(&mut alice, "  Ada Lovelace \t").await;
    let id = alice.id.clone();
    presence_until(&mut alice, |p| {
        name_of(p, &id).as_deref() == Some("Ada Lovelace")
    })
    .await;
}

#[tokio::test]
async fn bad_names_are_refused_with_invalid_field_name_and_the_name_is_kept() {
    let server = Server::start();
    let mut alice = server.join("bad-names").await;
    let mut bob = server.join("bad-names").await;
    set_name(&mut alice, "Ada").await;
    let alice_id = alice.id.clone();
    presence_until(&mut bob, |p| {
        name_of(p, &alice_id).as_deref() == Some("Ada")
    })
    .await;
    let bad = [
        json!(""),
        json!("x".repeat(33)),
        json!("    "),
        json!("Ad\u{7}a"),
        json!("Eve\u{202E}lin"),
        json!("Zero\u{200B}width"),
        json!(42),
        json!(null),
        json!(["Ada"]),
    ];
    for name in bad {
        alice.send_json(json!({"type": "name", "name": name})).await;
        let error = alice.next_of_type("error").await;
        assert_eq!(error["code"], "invalid_field", "{name}: {error}");
        assert_eq!(error["field"], "name", "{name}: {error}");
    }
    // The name is unchanged: a cursor still carries it.
    alice.send_json(cursor(10.0, 20.0)).await;
    let seen = until_cursor_of(&mut bob, &alice_id).await;
    assert_eq!(seen.last().expect("a cursor")["name"], "Ada");
    assert!(
        seen.iter()
            .filter(|m| m["type"] == "presenceChange")
            .all(|change| change.get("renamed").is_none()),
        "no presenceChange renamed alice: {seen:?}"
    );
    assert_eq!(
        name_of(&bob.roster.as_presence(), &alice_id).as_deref(),
        Some("Ada")
    );
}

#[tokio::test]
async fn a_name_of_32_characters_is_accepted() {
    let server = Server::start();
    let mut alice = server.join("long-name").await;
    let name = "é".repeat(32);
    set_name(&mut alice, &name).await;
    let id = alice.id.clone();
    presence_until(&mut alice, |p| {
        name_of(p, &id).as_deref() == Some(name.as_str())
    })
    .await;
}

#[tokio::test]
async fn presence_is_sent_on_join_and_on_leave() {
    let server = Server::start();
    let mut alice = server.join("comings").await;
    let first = alice.next_of_type("presence").await;
    assert_eq!(listed(&first).len(), 1);
    assert_eq!(listed(&first)[0].0, alice.id);
    let bob = server.join("comings").await;
    let bob_id = bob.id.clone();
    let both = presence_until(&mut alice, |p| name_of(p, &bob_id).is_some()).await;
    assert_eq!(both["total"], 2);
    drop(bob);
    let after = presence_until(&mut alice, |p| name_of(p, &bob_id).is_none()).await;
    assert_eq!(listed(&after).len(), 1);
    assert_eq!(after["total"], 1);
}

#[tokio::test]
async fn a_newcomer_gets_the_presence_right_after_its_welcome() {
    let server = Server::start();
    let mut alice = server.join("first").await;
    set_name(&mut alice, "Ada").await;
    let alice_id = alice.id.clone();
    presence_until(&mut alice, |p| {
        name_of(p, &alice_id).is_some_and(|n| n == "Ada")
    })
    .await;
    let mut bob = server.join("first").await;
    // Before its picture: clientCount then presence.
    let mut before_picture = Vec::new();
    loop {
        let message = bob.next_json().await;
        if message["type"] == "canvasEmpty" {
            break;
        }
        before_picture.push(message);
    }
    let presence = before_picture
        .iter()
        .find(|m| m["type"] == "presence")
        .expect("presence before the picture");
    assert_eq!(name_of(presence, &alice_id).as_deref(), Some("Ada"));
}

#[tokio::test]
async fn unnamed_members_get_a_guest_name_and_a_colour_the_same_for_everyone() {
    let server = Server::start();
    let mut alice = server.join("guests").await;
    let mut bob = server.join("guests").await;
    let bob_id = bob.id.clone();
    let by_alice = presence_until(&mut alice, |p| name_of(p, &bob_id).is_some()).await;
    let by_bob = presence_until(&mut bob, |p| listed(p).len() == 2).await;
    assert_eq!(listed(&by_alice), listed(&by_bob));
    for (_, name, color) in listed(&by_alice) {
        let number = name.strip_prefix("Guest ").expect("a guest name");
        assert!(
            number.len() == 4 && number.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
        assert!(
            color.len() == 7
                && color.starts_with('#')
                && color[1..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{color}"
        );
    }
}

#[tokio::test]
async fn a_crowd_joining_at_once_costs_each_member_far_fewer_presence_frames_than_joins() {
    let server = Server::start_with(&[
        "--connection-burst-per-ip",
        "100",
        "--max-connections-per-ip",
        "100",
    ]);
    let mut observer = server.join("crowd").await;
    observer.next_of_type("presence").await;
    let url = server.ws_url("crowd");
    let crowd = futures_util::future::join_all((0..30).map(|_| Client::join(&url))).await;
    let mut frames = 0;
    presence_until(&mut observer, |p| {
        frames += 1;
        p["total"] == 31
    })
    .await;
    assert!(frames <= 10, "{frames} presence frames for 30 joins");
    drop(crowd);
}

#[tokio::test]
async fn a_name_with_markup_is_delivered_verbatim_as_json_text() {
    let server = Server::start();
    let mut alice = server.join("markup").await;
    let mut bob = server.join("markup").await;
    let name = "<b>Ada</b> & \"co\"";
    set_name(&mut alice, name).await;
    let alice_id = alice.id.clone();
    loop {
        let Message::Text(text) = bob.next_message().await else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        let renamed = message["renamed"].as_array().into_iter().flatten();
        if renamed
            .filter(|m| m["clientId"] == alice_id.as_str())
            .any(|m| m["name"] == name)
        {
            assert!(text.contains("<b>Ada</b>"), "{text}");
            break;
        }
    }
}

#[tokio::test]
async fn a_cursor_is_relayed_to_the_others_with_id_and_name_and_never_echoed() {
    let server = Server::start();
    let mut alice = server.join("cursors").await;
    let mut bob = server.join("cursors").await;
    set_name(&mut alice, "Ada").await;
    alice.send_json(cursor(100.5, 200.0)).await;
    let alice_id = alice.id.clone();
    let seen = until_cursor_of(&mut bob, &alice_id).await;
    let got = seen.last().expect("a cursor");
    assert_eq!(
        *got,
        json!({"type": "cursor", "clientId": alice_id, "name": "Ada", "x": 100.5, "y": 200.0})
    );
    // Bob moves after alice's cursor went out: had alice's come back to her, it came before.
    bob.send_json(cursor(5.0, 5.0)).await;
    let bob_id = bob.id.clone();
    let before = until_cursor_of(&mut alice, &bob_id).await;
    assert!(
        before
            .iter()
            .all(|m| !(m["type"] == "cursor" && m["clientId"] == alice_id.as_str())),
        "alice got her own cursor back: {before:?}"
    );
}

#[tokio::test]
async fn cursors_are_not_in_the_picture_nor_a_newcomers_operations() {
    let server = Server::start();
    let mut alice = server.join("ephemeral").await;
    let mut bob = server.join("ephemeral").await;
    for i in 0..5 {
        alice.send_json(cursor(300.0 + f64::from(i), 300.0)).await;
    }
    let alice_id = alice.id.clone();
    until_cursor_of(&mut bob, &alice_id).await;
    let (status, _, png) = http_get(&server.http_url("/api/rooms/ephemeral/canvas.png"));
    assert_eq!(status, 200);
    let image = Image::decode(&png);
    assert_eq!(image.pixel(300, 300), image.pixel(5, 5), "nothing drawn");
    // A newcomer's picture: blank, and the first operation after it is the next draw.
    let mut carol = server.join("ephemeral").await;
    assert_eq!(carol.next_event().await["type"], "canvasEmpty");
    alice.send_json(draw_at(42.0, 42.0)).await;
    let next = carol.next_event().await;
    assert_eq!(next["type"], "draw", "{next}");
}

#[tokio::test]
async fn bad_cursors_are_refused_with_invalid_field_and_not_relayed() {
    let server = Server::start();
    let mut alice = server.join("bad-cursors").await;
    let mut bob = server.join("bad-cursors").await;
    let bad = [
        (json!({"type": "cursor", "x": 1e6, "y": 1}), "x"),
        (json!({"type": "cursor", "x": -101, "y": 1}), "x"),
        (json!({"type": "cursor", "x": 1, "y": 1001}), "y"),
        (json!({"type": "cursor", "x": "5", "y": 1}), "x"),
        (json!({"type": "cursor", "x": 5}), "y"),
    ];
    for (message, field) in bad {
        alice.send_json(message.clone()).await;
        let error = alice.next_of_type("error").await;
        assert_eq!(error["code"], "invalid_field", "{message}");
        assert_eq!(error["field"], field, "{message}");
    }
    alice.send_json(cursor(-100.0, 1000.0)).await; // the margin's far corner is fine
    let alice_id = alice.id.clone();
    let seen = until_cursor_of(&mut bob, &alice_id).await;
    let cursors: Vec<_> = seen.iter().filter(|m| m["type"] == "cursor").collect();
    assert_eq!(cursors.len(), 1, "{cursors:?}");
    assert_eq!(cursors[0]["x"], -100.0);
}

#[tokio::test]
async fn many_moves_within_a_tick_deliver_only_the_latest() {
    let server = Server::start();
    let mut alice = server.join("latest").await;
    let mut bob = server.join("latest").await;
    let alice_id = alice.id.clone();
    let moves: String = (1..=8)
        .map(|i| cursor(f64::from(i), 1.0).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    // One write of eight frames: the server reads them within one tick.
    for line in moves.lines() {
        alice.send_text(line).await;
    }
    let mut xs = Vec::new();
    while xs.last() != Some(&8.0) {
        for message in until_cursor_of(&mut bob, &alice_id).await {
            if message["type"] == "cursor" {
                xs.push(message["x"].as_f64().expect("x"));
            }
        }
    }
    assert!(xs.len() <= 2, "{xs:?}: every move was relayed");
}

#[tokio::test]
async fn a_batched_member_gets_cursors_inside_its_tick_frame() {
    let server = Server::start_with(&["--batch-tick", "300ms"]);
    let mut alice = server.join("batched").await;
    let mut bob = Client::join(&format!("{}?batch=1", server.ws_url("batched"))).await;
    let bob_id = bob.id.clone();
    presence_until(&mut alice, |p| name_of(p, &bob_id).is_some()).await;
    alice.send_json(draw_at(10.0, 10.0)).await;
    alice.send_json(cursor(20.0, 20.0)).await;
    let alice_id = alice.id.clone();
    loop {
        let frame = bob.next_json().await;
        let has_cursor = messages_of(frame.clone())
            .iter()
            .any(|m| m["type"] == "cursor" && m["clientId"] == alice_id.as_str());
        if has_cursor {
            assert_eq!(frame["type"], "batch", "{frame}");
            assert!(messages_of(frame).iter().any(|m| m["type"] == "draw"));
            break;
        }
    }
}

#[tokio::test]
async fn a_cursor_flood_is_dropped_without_errors_or_a_close() {
    let server = Server::start();
    let mut alice = server.join("flood").await;
    let mut bob = server.join("flood").await;
    for i in 0..200 {
        alice.send_json(cursor(f64::from(i), 1.0)).await;
    }
    alice.send_json(draw_at(1.0, 1.0)).await;
    // The draw still arrives, and alice was told nothing about her cursors.
    assert_eq!(bob.next_of_type("draw").await["startX"], 1.0);
    alice.send_json(json!({"type": "nope"})).await;
    let answer = alice.next_of_type("error").await;
    assert_eq!(
        answer["code"], "unknown_type",
        "the first error is for `nope`"
    );
}

// ---- cluster ----

const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

fn node(redis: &Redis, name: &str) -> Server {
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--node-id",
        name,
        "--heartbeat-interval",
        "1s",
        "--client-timeout",
        "3s",
    ];
    let server = Server::start_with(&args);
    wait_for_status(&server.http_url("/readyz"), 200, RECOVERY_DEADLINE);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_the_members_of_every_node_with_their_names() {
    let redis = Redis::start();
    let n1 = node(&redis, "n1");
    let n2 = node(&redis, "n2");
    let mut a = n1.join("cluster-names").await;
    let mut b = n2.join("cluster-names").await;
    set_name(&mut a, "Ada").await;
    set_name(&mut b, "Bea").await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let both_named = |p: &Value| {
        name_of(p, &a_id).as_deref() == Some("Ada") && name_of(p, &b_id).as_deref() == Some("Bea")
    };
    let on_n1 = presence_until(&mut a, both_named).await;
    let on_n2 = presence_until(&mut b, both_named).await;
    assert_eq!(on_n1["total"], 2);
    assert_eq!(on_n2["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_on_one_node_reaches_members_on_another() {
    let redis = Redis::start();
    let n1 = node(&redis, "n1");
    let n2 = node(&redis, "n2");
    let mut a = n1.join("cluster-cursors").await;
    let mut b = n2.join("cluster-cursors").await;
    set_name(&mut a, "Ada").await;
    let a_id = a.id.clone();
    // Once b sees a's name, the room is open on both nodes.
    presence_until(&mut b, |p| name_of(p, &a_id).as_deref() == Some("Ada")).await;
    a.send_json(cursor(77.0, 88.0)).await;
    let got = until_cursor_of(&mut b, &a_id)
        .await
        .pop()
        .expect("a cursor");
    assert_eq!(
        got,
        json!({"type": "cursor", "clientId": a_id, "name": "Ada", "x": 77.0, "y": 88.0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_leave_the_presence_within_the_client_timeout() {
    let redis = Redis::start();
    let mut n1 = node(&redis, "n1");
    let n2 = node(&redis, "n2");
    let a = n1.join("cluster-crash").await;
    let mut b = n2.join("cluster-crash").await;
    let a_id = a.id.clone();
    presence_until(&mut b, |p| name_of(p, &a_id).is_some()).await;
    n1.kill_now();
    let started = std::time::Instant::now();
    let after = presence_until(&mut b, |p| name_of(p, &a_id).is_none()).await;
    assert_eq!(listed(&after).len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_on_one_node_reaches_the_members_of_another_as_a_change() {
    let redis = Redis::start();
    let n1 = node(&redis, "n1");
    let n2 = node(&redis, "n2");
    let mut a = n1.join("cluster-rename").await;
    let mut b = n2.join("cluster-rename").await;
    let a_id = a.id.clone();
    presence_until(&mut b, |p| name_of(p, &a_id).is_some()).await;
    presence_until(&mut a, |p| listed(p).len() == 2).await;
    set_name(&mut a, "Ada").await;
    // B is told only that A renamed itself, not the list again.
    let change = loop {
        let message = b.next_json().await;
        assert_ne!(
            message["type"], "presence",
            "the whole list again: {message}"
        );
        if message["type"] == "presenceChange" {
            break message;
        }
    };
    assert_eq!(
        change["renamed"],
        json!([{"clientId": a_id, "name": "Ada", "color": presence_color(&b, &a_id)}]),
        "{change}"
    );
    assert!(change.get("joined").is_none() && change.get("left").is_none());
    assert_eq!(
        name_of(&b.roster.as_presence(), &a_id).as_deref(),
        Some("Ada")
    );
}

/// The colour `client`'s list gives `id`.
fn presence_color(client: &Client, id: &str) -> String {
    listed(&client.roster.as_presence())
        .into_iter()
        .find(|(member, _, _)| member == id)
        .map(|(_, _, color)| color)
        .expect("listed")
}
