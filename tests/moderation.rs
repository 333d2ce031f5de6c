//! Moderation: any member restores a clear; a private room's owner link replaces the edit and
//! view links (members admitted with the old ones closed, the old tokens refused), locks the room
//! (everyone else read-only) and removes a member, with `Authorization: Bearer OWNER`, on one
//! node and across a cluster; the operator's admin token deletes a room for good (no row in
//! SQLite, no key in Redis, no stroke an undo could bring back) and lists the rooms. Every call
//! refuses every other token, and every action leaves a log line naming no token.

mod common;

use std::time::Duration;

use common::{
    data_dir, http_get, run_binary, wait_for_status, Client, Image, Redis, Server, EVENT_DEADLINE,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

const ADMIN_TOKEN: &str = "an-operators-secret-of-some-length";

/// A new private room, as its creator gets it.
struct Created {
    room: String,
    owner: String,
    edit: String,
    view: String,
}

/// An HTTP call (blocking): its status and JSON body (`null` when there is none).
fn call(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = ureq::request(method, url).timeout(EVENT_DEADLINE);
    if let Some(token) = bearer {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let answer = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match answer {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("{method} {url}: {err}"),
    };
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking step")
}

/// `call`, off the test's runtime.
async fn http(
    server: &Server,
    method: &'static str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = server.http_url(path);
    let bearer = bearer.map(str::to_owned);
    blocking(move || call(method, &url, bearer.as_deref(), body)).await
}

async fn create(server: &Server) -> Created {
    let (status, body) = http(server, "POST", "/api/rooms", None, None).await;
    assert_eq!(status, 201, "POST /api/rooms: {body}");
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .to_owned()
    };
    Created {
        room: field("room"),
        owner: field("ownerToken"),
        edit: field("editToken"),
        view: field("viewToken"),
    }
}

fn ws_url(server: &Server, room: &str, token: &str) -> String {
    format!("{}?token={token}", server.ws_url(room))
}

/// An upgrade the server must refuse before it: the HTTP status.
async fn refused_upgrade(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("{url}: {err}"),
    }
}

fn stroke(id: &str, y: f64) -> Value {
    json!({"type":"draw","strokeId":id,"color":"#112233","startX":100.0,"startY":y,
           "endX":300.0,"endY":y,"size":8,"tool":"pen"})
}

/// The error `client` gets for `message`.
async fn error_for(client: &mut Client, message: Value) -> Value {
    client.send_json(message).await;
    client.next_of_type("error").await
}

/// A server whose admin API is on, with its token file (kept while the server runs).
fn admin_server(extra: &[&str]) -> (Server, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), format!("{ADMIN_TOKEN}\n")).expect("the token is written");
    let path = file.path().to_str().expect("a UTF-8 path").to_owned();
    let mut args = vec!["--admin-token-file", &path];
    args.extend_from_slice(extra);
    (Server::start_with(&args), file)
}

// ---- restoring a clear ----

#[tokio::test]
async fn any_member_restores_someone_elses_clear_for_everyone() {
    let server = Server::start();
    let url = format!("{}?author=drawer-secret-0001", server.ws_url("restore"));
    let mut drawer = Client::join(&url).await;
    let url = format!("{}?author=vandal-secret-0001", server.ws_url("restore"));
    let mut vandal = Client::join(&url).await;
    let url = format!("{}?author=friend-secret-0001", server.ws_url("restore"));
    let mut friend = Client::join(&url).await;
    drawer.send_json(stroke("work", 100.0)).await;
    assert_eq!(vandal.next_of_type("draw").await["strokeId"], "work");
    vandal
        .send_json(json!({"type":"clear","strokeId":"wipe"}))
        .await;
    assert_eq!(friend.next_of_type("clear").await["strokeId"], "wipe");
    friend
        .send_json(json!({"type":"undo","strokeId":"wipe"}))
        .await;
    for member in [&mut drawer, &mut vandal] {
        let undo = member.next_of_type("undo").await;
        assert_eq!(undo["strokeId"], "wipe");
    }
    // A newcomer's picture has the work back.
    let mut newcomer = server.join("restore").await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|m: &Value| m["type"] != "undo") {
        seen.push(newcomer.next_event().await);
    }
    let kinds: Vec<&str> = seen.iter().filter_map(|m| m["type"].as_str()).collect();
    assert_eq!(kinds, ["canvasEmpty", "draw", "clear", "undo"], "{seen:?}");
}

#[tokio::test]
async fn a_restored_clear_may_be_redone_by_its_author_only_and_strokes_stay_their_authors_own() {
    let server = Server::start();
    let url = format!("{}?author=clearer-secret-001", server.ws_url("redo-rule"));
    let mut clearer = Client::join(&url).await;
    let url = format!("{}?author=other-secret-00001", server.ws_url("redo-rule"));
    let mut other = Client::join(&url).await;
    clearer.send_json(stroke("mine", 50.0)).await;
    clearer
        .send_json(json!({"type":"clear","strokeId":"wipe"}))
        .await;
    other.next_of_type("clear").await;
    let refused = error_for(&mut other, json!({"type":"undo","strokeId":"mine"})).await;
    assert_eq!(refused["code"], "not_yours");
    other
        .send_json(json!({"type":"undo","strokeId":"wipe"}))
        .await;
    clearer.next_of_type("undo").await;
    let refused = error_for(&mut other, json!({"type":"redo","strokeId":"wipe"})).await;
    assert_eq!(refused["code"], "not_yours");
    clearer
        .send_json(json!({"type":"redo","strokeId":"wipe"}))
        .await;
    assert_eq!(other.next_of_type("redo").await["strokeId"], "wipe");
}

// ---- the owner link ----

#[tokio::test]
async fn a_new_room_has_an_owner_link_whose_member_draws_and_is_told_it_is_the_owner() {
    let server = Server::start();
    let (status, body) = http(&server, "POST", "/api/rooms", None, None).await;
    assert_eq!(status, 201);
    let room = body["room"].as_str().expect("room");
    let owner = body["ownerToken"].as_str().expect("ownerToken");
    assert_eq!(owner.len(), 43, "{body}");
    assert_eq!(body["ownerUrl"], format!("/r/{room}#token={owner}"));
    assert_ne!(body["ownerToken"], body["editToken"]);
    let mut owner = Client::join(&ws_url(&server, room, owner)).await;
    assert_eq!(owner.welcome["owner"], true);
    assert_eq!(owner.welcome["readOnly"], false);
    assert_eq!(owner.welcome["locked"], false);
    let edit = body["editToken"].as_str().expect("editToken");
    let mut editor = Client::join(&ws_url(&server, room, edit)).await;
    assert_eq!(editor.welcome["owner"], false);
    owner.send_json(stroke("o", 40.0)).await;
    assert_eq!(editor.next_of_type("draw").await["strokeId"], "o");
}

#[tokio::test]
async fn replacing_the_links_refuses_the_old_tokens_and_closes_their_members_but_not_the_owner() {
    let server = Server::start();
    let created = create(&server).await;
    let mut owner = Client::join(&ws_url(&server, &created.room, &created.owner)).await;
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut viewer = Client::join(&ws_url(&server, &created.room, &created.view)).await;
    let path = format!("/api/rooms/{}/links", created.room);
    let (status, links) = http(&server, "POST", &path, Some(&created.owner), None).await;
    assert_eq!(status, 200, "{links}");
    for member in [&mut editor, &mut viewer] {
        let close = member.expect_close().await;
        assert_eq!(u16::from(close.code), 4001, "{close:?}");
        assert!(close.reason.contains("withdrew"), "{close:?}");
    }
    for old in [&created.edit, &created.view] {
        let url = ws_url(&server, &created.room, old);
        assert_eq!(refused_upgrade(&url).await, 403);
    }
    let new_edit = links["editToken"].as_str().expect("editToken");
    assert_ne!(new_edit, created.edit);
    let expected = format!("/r/{}#token={new_edit}", created.room);
    assert_eq!(links["editUrl"], expected.as_str());
    let mut editor = Client::join(&ws_url(&server, &created.room, new_edit)).await;
    let new_view = links["viewToken"].as_str().expect("viewToken");
    let viewer = Client::join(&ws_url(&server, &created.room, new_view)).await;
    assert_eq!(viewer.welcome["readOnly"], true);
    // The owner stayed, and still draws.
    owner.send_json(stroke("still", 60.0)).await;
    assert_eq!(editor.next_of_type("draw").await["strokeId"], "still");
}

#[tokio::test]
async fn a_locked_room_lets_only_the_owner_change_the_canvas_until_it_is_unlocked() {
    let server = Server::start();
    let created = create(&server).await;
    let mut owner = Client::join(&ws_url(&server, &created.room, &created.owner)).await;
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let path = format!("/api/rooms/{}/settings", created.room);
    let lock = Some(json!({"locked": true}));
    let (status, body) = http(&server, "PUT", &path, Some(&created.owner), lock).await;
    assert_eq!((status, body), (200, json!({"locked": true})));
    assert_eq!(editor.next_of_type("locked").await["locked"], true);
    for refused in [
        stroke("e", 20.0),
        json!({"type":"clear","strokeId":"c"}),
        json!({"type":"undo","strokeId":"e"}),
        json!({"type":"redo","strokeId":"e"}),
    ] {
        let error = error_for(&mut editor, refused.clone()).await;
        assert_eq!(error["code"], "read_only", "{refused}");
    }
    let newcomer = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    assert_eq!(newcomer.welcome["locked"], true);
    owner.send_json(stroke("o", 30.0)).await;
    assert_eq!(editor.next_of_type("draw").await["strokeId"], "o");
    let unlock = Some(json!({"locked": false}));
    let (status, _) = http(&server, "PUT", &path, Some(&created.owner), unlock).await;
    assert_eq!(status, 200);
    assert_eq!(editor.next_of_type("locked").await["locked"], false);
    editor.send_json(stroke("e2", 40.0)).await;
    assert_eq!(owner.next_of_type("draw").await["strokeId"], "e2");
}

#[tokio::test]
async fn a_removed_member_is_closed_and_may_come_back_with_its_link() {
    let server = Server::start();
    let created = create(&server).await;
    let mut owner = Client::join(&ws_url(&server, &created.room, &created.owner)).await;
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut bystander = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let path = format!("/api/rooms/{}/kick", created.room);
    let body = Some(json!({"clientId": editor.id}));
    let (status, _) = http(&server, "POST", &path, Some(&created.owner), body).await;
    assert_eq!(status, 204);
    let close = editor.expect_close().await;
    assert_eq!(u16::from(close.code), 4002, "{close:?}");
    assert!(close.reason.contains("removed"), "{close:?}");
    bystander.wait_for_count(2).await;
    let mut back = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    owner.send_json(stroke("o", 30.0)).await;
    assert_eq!(back.next_of_type("draw").await["strokeId"], "o");
}

#[tokio::test]
async fn the_owners_calls_refuse_every_other_token_a_missing_one_an_unknown_room_and_bad_bodies() {
    let (server, _file) = admin_server(&[]);
    let created = create(&server).await;
    let room = &created.room;
    let calls = [
        ("POST", format!("/api/rooms/{room}/links"), None),
        (
            "PUT",
            format!("/api/rooms/{room}/settings"),
            Some(json!({"locked": true})),
        ),
        (
            "POST",
            format!("/api/rooms/{room}/kick"),
            Some(json!({"clientId": uuid::Uuid::new_v4().to_string()})),
        ),
    ];
    for (method, path, body) in &calls {
        for token in [&created.edit, &created.view, ADMIN_TOKEN, "wrong"] {
            let (status, answer) = http(&server, method, path, Some(token), body.clone()).await;
            assert_eq!(
                (status, &answer["error"]),
                (403, &json!("not_owner")),
                "{path}"
            );
        }
        let (status, _) = http(&server, method, path, None, body.clone()).await;
        assert_eq!(status, 401, "{path} without a token");
        let elsewhere = path.replace(room.as_str(), "some-public-room");
        let (status, answer) = http(&server, method, &elsewhere, Some(&created.owner), None).await;
        assert_eq!((status, &answer["error"]), (404, &json!("no_such_room")));
    }
    let settings = format!("/api/rooms/{room}/settings");
    let bad = Some(json!({"locked": "yes"}));
    let (status, _) = http(&server, "PUT", &settings, Some(&created.owner), bad).await;
    assert_eq!(status, 400);
    let kick = format!("/api/rooms/{room}/kick");
    let bad = Some(json!({"clientId": "nobody"}));
    let (status, _) = http(&server, "POST", &kick, Some(&created.owner), bad).await;
    assert_eq!(status, 400);
    // Nothing was changed: the old links still open the room, unlocked.
    let editor = Client::join(&ws_url(&server, room, &created.edit)).await;
    assert_eq!(editor.welcome["locked"], false);
}

#[tokio::test]
async fn the_owner_token_and_the_lock_survive_a_restart() {
    let dir = data_dir();
    let data = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start_with(&["--data-dir", &data]);
    let created = create(&server).await;
    let path = format!("/api/rooms/{}/settings", created.room);
    let lock = Some(json!({"locked": true}));
    let (status, _) = http(&server, "PUT", &path, Some(&created.owner), lock).await;
    assert_eq!(status, 200);
    server.terminate();
    drop(server);
    let server = Server::start_with(&["--data-dir", &data]);
    let owner = Client::join(&ws_url(&server, &created.room, &created.owner)).await;
    assert_eq!(owner.welcome["owner"], true);
    assert_eq!(owner.welcome["locked"], true);
    let unlock = Some(json!({"locked": false}));
    let (status, _) = http(&server, "PUT", &path, Some(&created.owner), unlock).await;
    assert_eq!(status, 200);
}

// ---- the operator ----

#[tokio::test]
async fn a_deleted_room_closes_its_members_and_leaves_no_row_in_sqlite() {
    let dir = data_dir();
    let data = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let (server, _file) = admin_server(&["--data-dir", &data, "--checkpoint-ops", "2"]);
    let created = create(&server).await;
    let mut editor = Client::join(&ws_url(&server, &created.room, &created.edit)).await;
    let mut public = server.join("doomed").await;
    for (member, id) in [(&mut editor, "a"), (&mut public, "b")] {
        member.send_json(stroke(id, 10.0)).await;
        member.send_json(json!({"type":"clear"})).await;
        member.send_json(stroke(&format!("{id}2"), 20.0)).await;
    }
    for room in [created.room.as_str(), "doomed"] {
        let path = format!("/api/rooms/{room}");
        let (status, body) = http(&server, "DELETE", &path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, 204, "{room}: {body}");
    }
    for member in [&mut editor, &mut public] {
        let close = member.expect_close().await;
        assert_eq!(u16::from(close.code), 4004, "{close:?}");
    }
    let path = format!("/api/rooms/{}", created.room);
    let (status, _) = http(&server, "DELETE", &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 404, "a second delete finds nothing");
    server.terminate();
    drop(server);
    let db = rusqlite::Connection::open(dir.path().join("livecanvas.db")).expect("the database");
    for room in [created.room.as_str(), "doomed"] {
        for (table, column) in [("rooms", "name"), ("ops", "room"), ("room_access", "room")] {
            let rows: i64 = db
                .query_row(
                    &format!("SELECT count(*) FROM {table} WHERE {column} = ?1"),
                    [room],
                    |row| row.get(0),
                )
                .expect("a count");
            assert_eq!(rows, 0, "{table} still has {room}");
        }
    }
}

#[tokio::test]
async fn an_undo_after_a_deletion_brings_nothing_back() {
    let (server, _file) = admin_server(&[]);
    let url = format!("{}?author=drawer-secret-0002", server.ws_url("gone"));
    let mut drawer = Client::join(&url).await;
    let mut watcher = server.join("gone").await;
    drawer.send_json(stroke("bad", 100.0)).await;
    drawer
        .send_json(json!({"type":"undo","strokeId":"bad"}))
        .await;
    watcher.next_of_type("undo").await;
    let (status, _) = http(
        &server,
        "DELETE",
        "/api/rooms/gone",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    drawer.expect_close().await;
    watcher.expect_close().await;
    let mut drawer = Client::join(&url).await;
    assert_eq!(drawer.next_event().await["type"], "canvasEmpty");
    for toggle in ["redo", "undo"] {
        let error = error_for(&mut drawer, json!({"type":toggle,"strokeId":"bad"})).await;
        assert_eq!(error["code"], "cannot_undo", "{toggle}");
    }
    let url = server.http_url("/api/rooms/gone/canvas.png?background=transparent");
    let (status, _, png) = blocking(move || http_get(&url)).await;
    assert_eq!(status, 200);
    let on_the_stroke = Image::decode(&png).pixel(200, 100);
    assert_eq!(on_the_stroke[3], 0, "the deleted stroke is not drawn");
}

#[tokio::test]
async fn the_admin_calls_refuse_other_tokens_and_are_off_without_a_token_file() {
    let (server, _file) = admin_server(&[]);
    let created = create(&server).await;
    let path = format!("/api/rooms/{}", created.room);
    for token in [&created.owner, &created.edit, "wrong"] {
        let (status, _) = http(&server, "DELETE", &path, Some(token), None).await;
        assert_eq!(status, 403);
        let (status, _) = http(&server, "GET", "/api/rooms", Some(token), None).await;
        assert_eq!(status, 403);
    }
    let (status, _) = http(&server, "DELETE", &path, None, None).await;
    assert_eq!(status, 401);
    let (status, _) = http(
        &server,
        "DELETE",
        "/api/rooms/no such",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let plain = Server::start();
    let (status, body) = http(&plain, "GET", "/api/rooms", Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, &body["error"]), (404, &json!("admin_api_off")));
    // Nothing was deleted.
    Client::join(&ws_url(&server, &created.room, &created.edit)).await;
}

#[tokio::test]
async fn the_operator_lists_rooms_with_their_members_bytes_and_last_change() {
    let (server, _file) = admin_server(&[]);
    let created = create(&server).await;
    let mut a = server.join("listed").await;
    let _b = server.join("listed").await;
    a.send_json(stroke("s", 10.0)).await;
    a.wait_for_count(2).await;
    let (status, body) = http(&server, "GET", "/api/rooms", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let rooms = body["rooms"].as_array().expect("rooms");
    let find = |name: &str| {
        rooms
            .iter()
            .find(|room| room["room"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    let listed = find("listed");
    assert_eq!(listed["members"], 2);
    assert_eq!(listed["private"], false);
    assert!(listed.get("storedBytes").is_some_and(Value::is_u64));
    assert!(listed.get("lastChangeMs").is_some());
    assert_eq!(find(&created.room)["private"], true);
}

// ---- a cluster ----

fn node(redis: &Redis, name: &str, admin: &tempfile::NamedTempFile) -> Server {
    let url = redis.url();
    let admin = admin.path().to_str().expect("a UTF-8 path");
    let args = [
        "--redis-url",
        &url,
        "--node-id",
        name,
        "--admin-token-file",
        admin,
    ];
    let server = Server::start_with(&args);
    wait_for_status(&server.http_url("/readyz"), 200, Duration::from_secs(20));
    server
}

fn admin_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), ADMIN_TOKEN).expect("the token is written");
    file
}

fn two_nodes(redis: &Redis) -> (Server, Server, tempfile::NamedTempFile) {
    let admin = admin_file();
    let n1 = node(redis, "n1", &admin);
    let n2 = node(redis, "n2", &admin);
    (n1, n2, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_replacing_the_links_on_one_node_closes_their_members_on_another() {
    let redis = Redis::start();
    let (n1, n2, _admin) = two_nodes(&redis);
    let created = create(&n1).await;
    let mut editor = Client::join(&ws_url(&n2, &created.room, &created.edit)).await;
    let mut owner = Client::join(&ws_url(&n2, &created.room, &created.owner)).await;
    let path = format!("/api/rooms/{}/links", created.room);
    let (status, links) = http(&n1, "POST", &path, Some(&created.owner), None).await;
    assert_eq!(status, 200);
    let close = editor.expect_close().await;
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert_eq!(
        refused_upgrade(&ws_url(&n2, &created.room, &created.edit)).await,
        403
    );
    let new_edit = links["editToken"].as_str().expect("editToken");
    let mut editor = Client::join(&ws_url(&n2, &created.room, new_edit)).await;
    owner.send_json(stroke("o", 30.0)).await;
    assert_eq!(editor.next_of_type("draw").await["strokeId"], "o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_lock_and_a_removal_made_on_one_node_hold_on_another() {
    let redis = Redis::start();
    let (n1, n2, _admin) = two_nodes(&redis);
    let created = create(&n1).await;
    let mut editor = Client::join(&ws_url(&n2, &created.room, &created.edit)).await;
    let mut other = Client::join(&ws_url(&n2, &created.room, &created.edit)).await;
    let path = format!("/api/rooms/{}/settings", created.room);
    let lock = Some(json!({"locked": true}));
    // The room was made on n1; its owner token works on n2 too.
    let (status, _) = http(&n2, "PUT", &path, Some(&created.owner), lock).await;
    assert_eq!(status, 200);
    assert_eq!(editor.next_of_type("locked").await["locked"], true);
    let error = error_for(&mut editor, stroke("e", 10.0)).await;
    assert_eq!(error["code"], "read_only");
    let newcomer = Client::join(&ws_url(&n1, &created.room, &created.edit)).await;
    assert_eq!(newcomer.welcome["locked"], true);
    let path = format!("/api/rooms/{}/kick", created.room);
    let body = Some(json!({"clientId": other.id}));
    let (status, _) = http(&n1, "POST", &path, Some(&created.owner), body).await;
    assert_eq!(status, 204);
    let close = other.expect_close().await;
    assert_eq!(u16::from(close.code), 4002, "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_deleted_room_leaves_no_key_in_redis_and_its_members_on_every_node_closed() {
    let redis = Redis::start();
    let (n1, n2, _admin) = two_nodes(&redis);
    let created = create(&n1).await;
    let mut on_n1 = Client::join(&ws_url(&n1, &created.room, &created.edit)).await;
    let mut on_n2 = Client::join(&ws_url(&n2, &created.room, &created.owner)).await;
    on_n1.send_json(stroke("s", 10.0)).await;
    assert_eq!(on_n2.next_of_type("draw").await["strokeId"], "s");
    let path = format!("/api/rooms/{}", created.room);
    let (status, _) = http(&n2, "DELETE", &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 204);
    for member in [&mut on_n1, &mut on_n2] {
        let close = member.expect_close().await;
        assert_eq!(u16::from(close.code), 4004, "{close:?}");
    }
    let pattern = format!("livecanvas:{{{}}}*", created.room);
    assert_eq!(redis.command(&["KEYS", &pattern]).trim(), "*0");
    let member = redis.command(&["SISMEMBER", "livecanvas:rooms", &created.room]);
    assert_eq!(member.trim(), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_every_node_refuses_the_owners_calls_without_the_owner_token_and_a_removed_member_rejoins(
) {
    let redis = Redis::start();
    let (n1, n2, _admin) = two_nodes(&redis);
    let created = create(&n1).await;
    let room = &created.room;
    let lock = Some(json!({"locked": true}));
    let settings = format!("/api/rooms/{room}/settings");
    for token in [&created.edit, &created.view, ADMIN_TOKEN] {
        let (status, _) = http(&n2, "PUT", &settings, Some(token), lock.clone()).await;
        assert_eq!(status, 403);
    }
    let elsewhere = "/api/rooms/nobody-made-this/settings";
    let (status, _) = http(&n2, "PUT", elsewhere, Some(&created.owner), lock).await;
    assert_eq!(status, 404);
    let mut member = Client::join(&ws_url(&n2, room, &created.edit)).await;
    assert_eq!(
        member.welcome["locked"], false,
        "no refused call changed anything"
    );
    let kick = format!("/api/rooms/{room}/kick");
    let body = Some(json!({"clientId": member.id}));
    let (status, _) = http(&n1, "POST", &kick, Some(&created.owner), body).await;
    assert_eq!(status, 204);
    assert_eq!(u16::from(member.expect_close().await.code), 4002);
    let mut back = Client::join(&ws_url(&n1, room, &created.edit)).await;
    let mut owner = Client::join(&ws_url(&n2, room, &created.owner)).await;
    owner.send_json(stroke("o", 30.0)).await;
    assert_eq!(back.next_of_type("draw").await["strokeId"], "o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_undo_after_a_deletion_brings_nothing_back() {
    let redis = Redis::start();
    let (n1, n2, _admin) = two_nodes(&redis);
    let url = format!("{}?author=drawer-secret-0003", n1.ws_url("gone"));
    let mut drawer = Client::join(&url).await;
    // A watcher on the drawer's node: once it has the stroke, so has that node's history.
    let mut watcher = Client::join(&n1.ws_url("gone")).await;
    let mut elsewhere = Client::join(&n2.ws_url("gone")).await;
    drawer.send_json(stroke("bad", 100.0)).await;
    watcher.next_of_type("draw").await;
    drawer
        .send_json(json!({"type":"undo","strokeId":"bad"}))
        .await;
    elsewhere.next_of_type("undo").await;
    let (status, _) = http(&n2, "DELETE", "/api/rooms/gone", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 204);
    for member in [&mut drawer, &mut watcher, &mut elsewhere] {
        member.expect_close().await;
    }
    let url = format!("{}?author=drawer-secret-0003", n2.ws_url("gone"));
    let mut drawer = Client::join(&url).await;
    assert_eq!(drawer.next_event().await["type"], "canvasEmpty");
    let error = error_for(&mut drawer, json!({"type":"redo","strokeId":"bad"})).await;
    assert_eq!(error["code"], "cannot_undo");
}

// ---- the log ----

#[test]
fn an_unreadable_or_short_admin_token_file_stops_start_up_naming_the_option() {
    let (code, stderr) = run_binary(&["--admin-token-file", "/nonexistent/admin-token"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    let short = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(short.path(), "short\n").expect("written");
    let path = short.path().to_str().expect("a UTF-8 path");
    let (code, stderr) = run_binary(&["--admin-token-file", path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

#[test]
fn each_moderation_action_is_logged_with_its_room_and_token_kind_and_never_a_token() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let admin = admin_file();
    let dir = data_dir();
    let mut command = Command::new(common::server_binary());
    command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--frontend-dir",
            &common::frontend_dir(),
        ])
        .arg("--admin-token-file")
        .arg(admin.path())
        .env("LIVECANVAS_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::die_with_parent(&mut command);
    let mut child = command.spawn().expect("the server starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stderr = child.stderr.take().expect("stderr");
    // The log goes to stderr: read it all along, so that the server never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let base = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("stdout") > 0,
            "no address"
        );
        if let Some(url) = line.trim().strip_prefix("livecanvas listening on ") {
            break url.to_owned();
        }
    };
    let (status, created) = call("POST", &format!("{base}/api/rooms"), None, None);
    assert_eq!(status, 201);
    let room = created["room"].as_str().expect("room");
    let owner = created["ownerToken"].as_str().expect("ownerToken");
    let api = format!("{base}/api/rooms/{room}");
    let lock = Some(json!({"locked": true}));
    assert_eq!(
        call("PUT", &format!("{api}/settings"), Some(owner), lock).0,
        200
    );
    let (status, links) = call("POST", &format!("{api}/links"), Some(owner), None);
    assert_eq!(status, 200);
    let kick = Some(json!({"clientId": uuid::Uuid::new_v4().to_string()}));
    assert_eq!(
        call("POST", &format!("{api}/kick"), Some(owner), kick).0,
        204
    );
    assert_eq!(call("DELETE", &api, Some(ADMIN_TOKEN), None).0, 204);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = log.join().expect("the log was read");
    for action in [
        "moderation: locked by owner token",
        "moderation: links replaced by owner token",
        "moderation: removed client=",
        "moderation: deleted by admin token",
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains(&format!("room={room}")) && line.contains(action)),
            "no {action:?} line in:\n{log}"
        );
    }
    for token in [
        owner,
        ADMIN_TOKEN,
        links["editToken"].as_str().expect("editToken"),
    ] {
        assert!(!log.contains(token), "a token in the log:\n{log}");
    }
}
