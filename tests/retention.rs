//! Retention (`--room-ttl`): a room nobody has opened for that long is deleted with its picture,
//! history and tokens, on one node and in a cluster; a room someone is in is never deleted.
//!
//! There is no event for "a sweep ran", so these tests poll the room's picture (404 once it is
//! gone) within a deadline.

mod common;

use std::time::Duration;

use common::{draw_at, http_status, Redis, Server, EVENT_DEADLINE};

/// The shortest TTL the server takes (1s) would race the test's own steps; 2 s leaves room.
const TTL: &str = "2s";

fn picture_url(server: &Server, room: &str) -> String {
    server.http_url(&format!("/api/rooms/{room}/canvas.png"))
}

async fn draw_and_leave(server: &Server, room: &str) {
    let mut drawer = server.join(room).await;
    let mut watcher = server.join(room).await;
    drawer.send_json(draw_at(100.0, 100.0)).await;
    watcher.next_of_type("draw").await;
}

/// Polls until `url` answers `status`: the state a sweep leaves has no event of its own.
async fn until_status(url: String, status: u16) {
    tokio::task::spawn_blocking(move || common::wait_for_status(&url, status, EVENT_DEADLINE))
        .await
        .expect("the poll ran");
}

async fn status_of(url: String) -> u16 {
    tokio::task::spawn_blocking(move || http_status(&url))
        .await
        .expect("a GET")
}

async fn an_old_room_goes_and_an_open_one_stays(server: &Server) {
    // Someone stays in this one for longer than the TTL.
    let mut present = server.join("attended").await;
    let mut other = server.join("attended").await;
    present.send_json(draw_at(200.0, 200.0)).await;
    other.next_of_type("draw").await;
    drop(other);
    draw_and_leave(server, "forgotten").await;
    assert_eq!(status_of(picture_url(server, "forgotten")).await, 200);

    until_status(picture_url(server, "forgotten"), 404).await;
    // The attended room was opened before the forgotten one: only being open kept it.
    assert_eq!(
        status_of(picture_url(server, "attended")).await,
        200,
        "a room someone is in was deleted"
    );
    // The member is still served.
    present.send_json(draw_at(300.0, 300.0)).await;
    let mut newcomer = server.join("attended").await;
    newcomer.wait_for_count(2).await;
}

#[tokio::test]
async fn on_one_node_a_room_nobody_opened_for_the_ttl_is_deleted_and_an_open_one_is_kept() {
    let server = Server::start_with(&["--room-ttl", TTL]);
    an_old_room_goes_and_an_open_one_stays(&server).await;
}

#[tokio::test]
async fn in_a_cluster_a_room_nobody_opened_for_the_ttl_is_deleted_and_an_open_one_is_kept() {
    let redis = Redis::start();
    let url = redis.url();
    let server = Server::start_with(&["--redis-url", &url, "--node-id", "n1", "--room-ttl", TTL]);
    common::wait_for_status(&server.http_url("/readyz"), 200, EVENT_DEADLINE);
    an_old_room_goes_and_an_open_one_stays(&server).await;
    let keys = redis.command(&["KEYS", "livecanvas:{forgotten}*"]);
    assert!(
        keys.starts_with("*0"),
        "keys of the deleted room remain: {keys}"
    );
    let member = redis.command(&["SISMEMBER", "livecanvas:rooms", "forgotten"]);
    assert_eq!(member.trim(), ":0");
}

#[tokio::test]
async fn a_private_room_is_deleted_with_its_tokens() {
    let server = Server::start_with(&["--room-ttl", TTL]);
    let created: serde_json::Value = ureq::post(&server.http_url("/api/rooms"))
        .call()
        .expect("201")
        .into_json()
        .expect("JSON");
    let room = created["room"].as_str().expect("a room").to_owned();
    // Private: no picture without a token. Once deleted, the name is nothing: no picture at all.
    assert_eq!(status_of(picture_url(&server, &room)).await, 403);
    until_status(picture_url(&server, &room), 404).await;
}

#[tokio::test]
async fn without_a_ttl_rooms_are_kept() {
    let server = Server::start();
    draw_and_leave(&server, "kept").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(picture_url(&server, "kept")).await, 200);
}
