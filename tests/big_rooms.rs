//! What a member costs as a room grows: the presence list goes whole to a newcomer only and as
//! changes to everyone else, so that beyond the list's cap a join costs its own list and a count,
//! never the list again for every member; and what a burst grew is given back while the members
//! stay. Counted from the server's own `/metrics`, never timed.

mod common;

use std::time::Duration;

use common::{png_data_url, Client, Server, ONE_ADDRESS_CROWD};
use futures_util::future::join_all;
use serde_json::json;

/// The presence list lists at most this many members (`presence::MAX_PRESENCE_MEMBERS`).
const LISTED: usize = 200;
/// One listed member is `{"clientId":"<36>","name":"Guest NNNN","color":"#rrggbb"}` and a comma
/// (91 bytes with a default name):
/// a whole list is at most this many bytes per member, plus its envelope.
const LISTED_MEMBER_BYTES: usize = 92;
const LIST_ENVELOPE_BYTES: usize = 64;

fn crowd_server() -> Server {
    Server::start_with(&ONE_ADDRESS_CROWD)
}

/// Joins `n` members, `at_once` at a time; each has read its welcome.
async fn join_many(url: &str, n: usize, at_once: usize) -> Vec<Client> {
    let mut joined = Vec::with_capacity(n);
    while joined.len() < n {
        let wave = at_once.min(n - joined.len());
        joined.extend(join_all((0..wave).map(|_| Client::join(url))).await);
    }
    joined
}

fn presence_bytes(server: &Server, kind: &str) -> f64 {
    server.metric(&format!(
        "livecanvas_bytes_out_by_type_total{{type=\"{kind}\"}}"
    ))
}

#[tokio::test]
async fn the_others_are_sent_only_who_joined_and_the_newcomer_the_whole_list() {
    let server = Server::start();
    let mut alice = server.join("changes").await;
    alice.presence_until(|p| p["total"] == 1).await;
    let bob = server.join("changes").await;
    let change = alice.next_of_type("presenceChange").await;
    assert_eq!(change["joined"][0]["clientId"], bob.id.as_str(), "{change}");
    assert_eq!(
        change["joined"].as_array().map(Vec::len),
        Some(1),
        "{change}"
    );
    assert_eq!(change["total"], 2);
    assert!(change.get("left").is_none() && change.get("renamed").is_none());
    // Its own list lists Alice (and itself, unless it joined while announcements were
    // coalesced: then the next change adds it, as for everyone).
    let mut bob = bob;
    let whole = bob.next_of_type("presence").await;
    assert_eq!(
        whole["members"][0]["clientId"],
        alice.id.as_str(),
        "{whole}"
    );
    let both = bob.presence_until(|p| p["total"] == 2).await;
    let listed: Vec<_> = both["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["clientId"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(listed, vec![alice.id.clone(), bob.id.clone()]);
    drop(bob);
    let gone = alice.next_of_type("presenceChange").await;
    assert_eq!(gone["left"][0], json!(listed[1]), "{gone}");
    assert_eq!(gone["total"], 1);
}

#[tokio::test]
async fn a_join_beyond_the_list_cap_costs_its_own_list_and_no_change_for_the_others() {
    let server = crowd_server();
    let url = server.ws_url("crowd");
    let mut observer = Client::join(&url).await;
    let mut listed = join_many(&url, LISTED - 1, 50).await;
    observer.presence_until(|p| p["total"] == LISTED).await;
    let whole_before = presence_bytes(&server, "presence");
    let changes_before = presence_bytes(&server, "presenceChange");

    let mut beyond = join_many(&url, 100, 25).await;
    observer.wait_for_count(LISTED as u64 + 100).await;
    let mut newcomers_lists = 0;
    for newcomer in &mut beyond {
        let whole = newcomer.next_of_type("presence").await;
        let size = whole.to_string().len();
        assert!(
            size <= LISTED * LISTED_MEMBER_BYTES + LIST_ENVELOPE_BYTES,
            "a newcomer's list of {size} bytes"
        );
        assert_eq!(whole["members"].as_array().map(Vec::len), Some(LISTED));
        newcomers_lists += size;
    }
    let whole_after = presence_bytes(&server, "presence");
    let changes_after = presence_bytes(&server, "presenceChange");
    assert_eq!(
        changes_after - changes_before,
        0.0,
        "beyond the cap a join changes no one's list"
    );
    assert_eq!(
        whole_after - whole_before,
        newcomers_lists as f64,
        "the whole list went to the newcomers only"
    );
    listed.clear();
}

#[tokio::test]
async fn write_buffers_a_burst_grew_are_given_back_while_the_members_stay() {
    let server = Server::start_with(&[
        "--newcomer-picture",
        "peer",
        "--heartbeat-interval",
        "1s",
        "--client-timeout",
        "5s",
    ]);
    let grown = || server.metric("livecanvas_grown_write_buffers");
    let mut alice = server.join("burst").await;
    // A picture of a few hundred kilobytes, passed on to each newcomer through its session.
    let picture = png_data_url(7, 60);
    assert!(picture.len() > 100 * 1024, "{} bytes", picture.len());
    let mut newcomers = Vec::new();
    for _ in 0..3 {
        let mut newcomer = server.join("burst").await;
        let request = alice.next_of_type("canvasRequest").await;
        alice
            .send_json(
                json!({"type":"canvasState","clientId": request["clientId"],"data": picture}),
            )
            .await;
        let state = newcomer.next_of_type("canvasState").await;
        assert_eq!(state["data"].as_str().map(str::len), Some(picture.len()));
        newcomers.push(newcomer);
    }
    // The members stay connected (their pings are answered while they are read) and their
    // buffers must go back to their idle size: bounded, never timed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if grown() == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections still hold a grown write buffer",
            grown()
        );
        for member in newcomers.iter_mut().chain(std::iter::once(&mut alice)) {
            let _ = tokio::time::timeout(Duration::from_millis(100), member.next_message()).await;
        }
    }
    let pictures = server.metric("livecanvas_bytes_out_by_type_total{type=\"canvasState\"}");
    assert!(
        pictures >= 3.0 * picture.len() as f64,
        "{pictures} bytes of pictures"
    );
}
