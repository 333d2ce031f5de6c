//! Private rooms: `POST /api/rooms` makes a room with an edit link and a view link; without one of
//! its tokens nobody gets in (403 before any upgrade; a page is closed with 4403), a viewer watches but cannot change the
//! picture, the tokens survive a restart and are shared by a cluster's nodes, and only their
//! digests are ever stored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{draw_at, http_get, wait_for_status, Client, Image, Redis, Server, EVENT_DEADLINE};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

/// A new private room, as its creator gets it.
struct Created {
    room: String,
    edit: String,
    view: String,
    body: Value,
}

/// `POST /api/rooms` (blocking): the status and the JSON body (or `null`).
fn post_rooms(server: &Server) -> (u16, Value) {
    let url = server.http_url("/api/rooms");
    let response = match ureq::post(&url).timeout(EVENT_DEADLINE).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("POST {url}: {err}"),
    };
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

fn create(server: &Server) -> Created {
    let (status, body) = post_rooms(server);
    assert_eq!(status, 201, "POST /api/rooms: {body}");
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .to_owned()
    };
    Created {
        room: field("room"),
        edit: field("editToken"),
        view: field("viewToken"),
        body: body.clone(),
    }
}

fn ws_url(server: &Server, room: &str, token: &str) -> String {
    format!("{}?token={token}", server.ws_url(room))
}

/// Tries a WebSocket upgrade that the server must refuse with an HTTP answer: its status and body.
async fn refused_upgrade(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(err) => panic!("{url}: {err}"),
    }
}

fn base64url_bytes(token: &str) -> usize {
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token} is base64url"
    );
    token.len() * 6 / 8
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking step")
}

async fn picture(server: &Server, room: &str, token: &str) -> (u16, Vec<u8>) {
    let url = server.http_url(&format!("/api/rooms/{room}/canvas.png?token={token}"));
    let (status, _, body) = blocking(move || http_get(&url)).await;
    (status, body)
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("a readable directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path.display().to_string(), bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

// ---- creating ----

#[tokio::test]
async fn creating_a_room_answers_201_with_its_name_two_long_distinct_tokens_and_their_links() {
    let server = Server::start();
    let created = create(&server);
    assert!(
        base64url_bytes(&created.room) >= 16 && created.room.len() <= 64,
        "{}",
        created.room
    );
    assert!(base64url_bytes(&created.edit) >= 16, "128 bits at least");
    assert!(base64url_bytes(&created.view) >= 16, "128 bits at least");
    assert_ne!(created.edit, created.view);
    assert_eq!(
        created.body["editUrl"],
        format!("/r/{}#token={}", created.room, created.edit)
    );
    assert_eq!(
        created.body["viewUrl"],
        format!("/r/{}#token={}", created.room, created.view)
    );
    let other = create(&server);
    assert_ne!(other.room, created.room);
    assert_ne!(other.edit, created.edit);
}

#[tokio::test]
async fn creating_more_rooms_than_the_rate_allows_from_one_address_answers_429() {
    let server = Server::start_with(&[
        "--room-creations-per-minute",
        "1",
        "--room-creation-burst",
        "2",
    ]);
    create(&server);
    create(&server);
    let (status, body) = post_rooms(&server);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_rooms_created");
}

// ---- who gets in ----

#[tokio::test]
async fn a_private_rooms_websocket_without_a_token_is_refused_with_403_before_the_upgrade() {
    let server = Server::start();
    let created = create(&server);
    let (status, body) = refused_upgrade(&server.ws_url(&created.room)).await;
    assert_eq!(status, 403);
    assert!(body.contains("token_required"), "{body}");
}

#[tokio::test]
async fn a_private_rooms_websocket_with_a_wrong_token_is_refused_with_403() {
    let server = Server::start();
    let created = create(&server);
    let other = create(&server);
    for wrong in [other.edit.as_str(), "x", &created.edit[1..]] {
        let (status, body) = refused_upgrade(&ws_url(&server, &created.room, wrong)).await;
        assert_eq!(status, 403, "token {wrong}");
        assert!(body.contains("invalid_token"), "{body}");
    }
}

#[tokio::test]
async fn a_room_opened_by_a_plain_name_stays_public_and_needs_no_token() {
    let server = Server::start();
    create(&server);
    let mut member = server.join("team-42").await;
    assert_eq!(member.welcome["readOnly"], false);
    let mut other = server.join("team-42").await;
    other.send_json(draw_at(10.0, 10.0)).await;
    assert_eq!(member.next_of_type("draw").await["startX"], 10.0);
    let page = server.http_url("/r/team-42");
    assert_eq!(blocking(move || http_get(&page).0).await, 200);
}

#[tokio::test]
async fn the_page_of_a_private_room_is_the_page_every_room_has() {
    // Links carry the token in the fragment, which the server never sees: the page holds no
    // secret, and the upgrade is where a private room is checked.
    let server = Server::start();
    let created = create(&server);
    let public = server.http_url("/r/team-42");
    let (_, _, public_page) = blocking(move || http_get(&public)).await;
    for query in [
        "".to_owned(),
        "?token=nope".to_owned(),
        format!("?token={}", created.edit),
    ] {
        let url = server.http_url(&format!("/r/{}{query}", created.room));
        let (status, content_type, body) = blocking(move || http_get(&url)).await;
        assert_eq!(status, 200, "query {query:?}");
        assert_eq!(content_type, "text/html");
        assert_eq!(body, public_page, "query {query:?}");
    }
}

#[tokio::test]
async fn a_private_rooms_picture_needs_a_token() {
    let server = Server::start();
    let created = create(&server);
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut watcher = Client::join(&ws_url(&server, &created.room, &created.view)).await;
    editor.send_json(draw_at(100.0, 100.0)).await;
    watcher.next_of_type("draw").await;
    assert_eq!(picture(&server, &created.room, "").await.0, 403);
    assert_eq!(picture(&server, &created.room, "wrong").await.0, 403);
    assert_eq!(picture(&server, &created.room, &created.edit).await.0, 200);
    assert_eq!(picture(&server, &created.room, &created.view).await.0, 200);
}

// ---- viewers and editors ----

#[tokio::test]
async fn the_edit_link_joins_as_an_editor_whose_draws_reach_a_viewer() {
    let server = Server::start();
    let created = create(&server);
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    assert_eq!(editor.welcome["readOnly"], false);
    let mut viewer = Client::join(&ws_url(&server, &created.room, &created.view)).await;
    assert_eq!(viewer.welcome["readOnly"], true);
    editor.wait_for_count(2).await;
    editor.send_json(draw_at(42.0, 42.0)).await;
    assert_eq!(viewer.next_of_type("draw").await["startX"], 42.0);
    editor.send_json(json!({"type": "clear"})).await;
    viewer.next_of_type("clear").await;
}

#[tokio::test]
async fn a_viewers_draw_clear_undo_and_redo_are_refused_as_read_only_and_reach_nobody() {
    let server = Server::start();
    let created = create(&server);
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut marker = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut viewer = Client::join(&ws_url(&server, &created.room, &created.view)).await;
    editor.wait_for_count(3).await;
    marker.send_json(draw_at(10.0, 10.0)).await;
    viewer.next_of_type("draw").await;
    let (_, before) = picture(&server, &created.room, &created.edit).await;

    viewer.send_json(draw_at(500.0, 500.0)).await;
    viewer.send_json(json!({"type": "clear"})).await;
    viewer
        .send_json(json!({"type": "undo", "strokeId": "s1"}))
        .await;
    viewer
        .send_json(json!({"type": "redo", "strokeId": "s1"}))
        .await;
    for _ in 0..4 {
        let refusal = viewer.next_of_type("error").await;
        assert_eq!(refusal["code"], "read_only", "{refusal}");
    }
    let (_, after) = picture(&server, &created.room, &created.edit).await;
    assert!(
        Image::decode(&before) == Image::decode(&after),
        "the viewer changed the stored picture"
    );
    // The room handles a member's messages in order: the marker's draw, sent after the viewer's
    // refusals, is the next thing the editor gets if the viewer's never reached the room.
    marker.send_json(draw_at(20.0, 20.0)).await;
    let next = editor.next_event().await;
    assert_eq!(next["type"], "draw", "{next}");
    assert_eq!(next["startX"], 10.0);
    let next = editor.next_event().await;
    assert_eq!(next["startX"], 20.0, "{next}");
}

// ---- keeping the tokens ----

fn start_on(dir: &Path) -> Server {
    Server::start_with(&["--data-dir", dir.to_str().expect("a UTF-8 path")])
}

fn stop_gracefully(mut server: Server) {
    server.terminate();
    let status = server.wait_for_exit(EVENT_DEADLINE);
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

#[tokio::test]
async fn a_private_rooms_tokens_survive_a_restart() {
    let dir = common::data_dir();
    let server = start_on(dir.path());
    let created = create(&server);
    stop_gracefully(server);

    let server = start_on(dir.path());
    let editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    assert_eq!(editor.welcome["readOnly"], false);
    let viewer = Client::join(&ws_url(&server, &created.room, &created.view)).await;
    assert_eq!(viewer.welcome["readOnly"], true);
    let (status, _) = refused_upgrade(&server.ws_url(&created.room)).await;
    assert_eq!(status, 403, "still private after the restart");
}

#[tokio::test]
async fn the_database_holds_the_tokens_digests_and_never_the_tokens() {
    let dir = common::data_dir();
    let server = start_on(dir.path());
    let created = create(&server);
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    editor.send_json(draw_at(10.0, 10.0)).await;
    stop_gracefully(server);

    let db = rusqlite::Connection::open(dir.path().join("livecanvas.db")).expect("the database");
    let (edit_hash, view_hash): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT edit_hash, view_hash FROM room_access WHERE room = ?1",
            [&created.room],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the room's row");
    assert_eq!((edit_hash.len(), view_hash.len()), (32, 32));
    drop(db);
    assert_no_token_stored(dir.path(), &created);
}

/// The files under `dir` hold the room (so the search reads what is stored) and neither token.
fn assert_no_token_stored(dir: &Path, created: &Created) {
    let files = files_under(dir);
    assert!(
        files
            .iter()
            .any(|(_, bytes)| contains(bytes, &created.room)),
        "the search finds what is stored"
    );
    for (path, bytes) in &files {
        let owner = created.body["ownerToken"].as_str().expect("ownerToken");
        for token in [created.edit.as_str(), created.view.as_str(), owner] {
            assert!(!contains(bytes, token), "{path} holds a token");
        }
    }
}

// ---- a cluster ----

fn node(redis: &Redis, name: &str) -> Server {
    let url = redis.url();
    let server = Server::start_with(&["--redis-url", &url, "--node-id", name]);
    wait_for_status(&server.http_url("/readyz"), 200, Duration::from_secs(20));
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_created_on_one_node_opens_with_its_token_on_another_and_refuses_a_wrong_one() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, "n1"), node(&redis, "n2"));
    let created = blocking(move || (create(&n1), n1)).await;
    let (created, n1) = created;
    let mut editor = Client::join(&ws_url(&n1, &created.room, &created.edit)).await;
    let mut viewer = Client::join(&ws_url(&n2, &created.room, &created.view)).await;
    assert_eq!(viewer.welcome["readOnly"], true);
    editor.send_json(draw_at(30.0, 30.0)).await;
    assert_eq!(viewer.next_of_type("draw").await["startX"], 30.0);
    viewer.send_json(draw_at(60.0, 60.0)).await;
    assert_eq!(viewer.next_of_type("error").await["code"], "read_only");
    let (status, _) = refused_upgrade(&ws_url(&n2, &created.room, "wrong")).await;
    assert_eq!(status, 403);
    let (status, _) = refused_upgrade(&n2.ws_url(&created.room)).await;
    assert_eq!(status, 403);
    assert_eq!(editor.welcome["readOnly"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_the_tokens_digests_and_never_the_tokens() {
    let redis = Redis::start();
    let n1 = node(&redis, "n1");
    let (created, _n1) = blocking(move || (create(&n1), n1)).await;
    let access = format!("livecanvas:{{{}}}:access", created.room);
    // edit, view, owner and locked
    assert_eq!(redis.command(&["HLEN", &access]).trim(), ":4");
    assert!(redis.command(&["SAVE"]).starts_with("+OK"));
    assert_no_token_stored(redis.dir.path(), &created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_gone_a_private_room_lets_nobody_in_and_closes_joins_with_1013() {
    let mut redis = Redis::start();
    let n1 = node(&redis, "n1");
    let (created, n1) = blocking(move || (create(&n1), n1)).await;
    redis.kill();
    let ready = n1.http_url("/readyz");
    blocking(move || wait_for_status(&ready, 503, Duration::from_secs(20))).await;
    for url in [
        n1.ws_url(&created.room),
        ws_url(&n1, &created.room, &created.view),
    ] {
        let Err(close) = Client::join_or_close(&url).await else {
            panic!("{url}: welcomed while Redis is gone");
        };
        assert_eq!(u16::from(close.code), 1013, "{close:?}");
    }
}
