//! The WebSocket protocol, against the real server on an ephemeral port.

mod common;

use common::{draw_at, png_data_url, snapshot, Client, Server};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

// ---- joining and the count ----

#[tokio::test]
async fn the_first_client_is_welcomed_with_the_canvas_size_and_counted() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    assert_eq!(alice.welcome["room"], "main");
    assert_eq!(alice.welcome["width"], 1600);
    assert_eq!(alice.welcome["height"], 900);
    assert_eq!(alice.welcome["awaitingSnapshot"], true);
    assert_eq!(
        alice.next_json().await,
        json!({"type":"clientCount","clientCount":1})
    );
    assert_eq!(alice.next_json().await["type"], "presence");
    assert_eq!(
        alice.next_json().await,
        json!({"type":"canvasEmpty","clientId": alice.id})
    );
}

#[tokio::test]
async fn ws_without_a_room_is_the_main_room() {
    let server = Server::start();
    let alice = Client::join(&format!("ws://{}/ws", server.addr)).await;
    assert_eq!(alice.welcome["room"], "main");
}

#[tokio::test]
async fn everyone_is_told_the_count_when_a_client_joins_and_leaves() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    alice.wait_for_count(1).await;
    let mut bob = server.join("main").await;
    bob.wait_for_count(2).await;
    alice.wait_for_count(2).await;
    bob.ws.close(None).await.expect("close");
    alice.wait_for_count(1).await;
}

#[tokio::test]
async fn a_client_whose_connection_drops_without_a_close_frame_leaves_the_count() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let bob = server.join("main").await;
    alice.wait_for_count(2).await;
    drop(bob); // TCP closed, no close frame
    alice.wait_for_count(1).await;
}

#[tokio::test]
async fn a_silent_client_is_evicted_by_the_heartbeat() {
    let server =
        Server::start_with(&["--heartbeat-interval", "100ms", "--client-timeout", "400ms"]);
    let mut alice = server.join("main").await;
    // Bob's connection stays open but he never reads again, so he never answers a ping.
    let _silent_bob = server.join("main").await;
    alice.wait_for_count(2).await;
    alice.wait_for_count(1).await;
}

#[tokio::test]
async fn a_client_that_answers_pings_outlives_the_timeout() {
    let server =
        Server::start_with(&["--heartbeat-interval", "100ms", "--client-timeout", "400ms"]);
    let mut alice = server.join("main").await;
    alice.wait_for_count(1).await;
    let mut bob = server.join("main").await;
    bob.wait_for_count(2).await;
    // Bob silently lets the library answer pings (by reading) for well past the timeout, then
    // hears Alice leave: had he been evicted, this would be a close instead.
    tokio::join!(
        async {
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            alice.ws.close(None).await.expect("close");
        },
        bob.wait_for_count(1)
    );
}

// ---- drawing ----

#[tokio::test]
async fn a_draw_reaches_every_other_client_in_the_room() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    let mut carol = server.join("main").await;
    alice.send_json(draw_at(450.0, 202.0)).await;
    for receiver in [&mut bob, &mut carol] {
        let draw = receiver.next_of_type("draw").await;
        assert_eq!(
            draw,
            json!({"type":"draw","color":"#112233","startX":450.0,"startY":202.0,"endX":460.0,"endY":202.0,"size":4.0,"tool":"pen"})
        );
    }
}

#[tokio::test]
async fn a_demo_draw_without_type_size_or_tool_is_relayed_with_defaults() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice
        .send_json(json!({"color":"#000000","startX":450,"startY":202,"endX":484,"endY":202}))
        .await;
    let draw = bob.next_of_type("draw").await;
    assert_eq!(draw["size"], 2.0);
    assert_eq!(draw["tool"], "pen");
    assert_eq!(draw["endX"], 484.0);
}

#[tokio::test]
async fn a_draw_is_never_echoed_to_its_sender() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.send_json(draw_at(1.0, 1.0)).await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 1.0);
    // Bob answers only after the room relayed Alice's draw, so an echo would reach Alice first.
    bob.send_json(draw_at(2.0, 2.0)).await;
    assert_eq!(alice.next_of_type("draw").await["startX"], 2.0);
}

#[tokio::test]
async fn draws_arrive_in_the_order_they_were_sent() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    for i in 0..200 {
        alice.send_json(draw_at(f64::from(i), 5.0)).await;
    }
    for i in 0..200 {
        assert_eq!(bob.next_of_type("draw").await["startX"], f64::from(i));
    }
}

#[tokio::test]
async fn rooms_do_not_hear_each_other() {
    let server = Server::start();
    let mut alice = server.join("red").await;
    let mut bob = server.join("red").await;
    let mut carol = server.join("blue").await;
    let mut dave = server.join("blue").await;
    alice.send_json(draw_at(11.0, 11.0)).await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 11.0);
    dave.send_json(draw_at(22.0, 22.0)).await;
    // Alice's draw was relayed before Dave's was sent; had it leaked, Carol would see it first.
    assert_eq!(carol.next_of_type("draw").await["startX"], 22.0);
}

#[tokio::test]
async fn clear_reaches_every_other_client() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.send_json(json!({"type":"clear"})).await;
    assert_eq!(bob.next_of_type("clear").await, json!({"type":"clear"}));
}

#[tokio::test]
async fn an_emptied_room_never_drawn_in_is_blank_for_the_next_visitor() {
    let server = Server::start();
    let mut alice = server.join("again").await;
    alice.ws.close(None).await.expect("close");
    // The room is stopped once empty; wait for the server to say so.
    let deadline = std::time::Instant::now() + common::EVENT_DEADLINE;
    loop {
        // A blocking GET is fine here: the server is another process.
        let health = server.health();
        if health["rooms"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the room never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut bob = server.join("again").await;
    bob.wait_for_count(1).await;
    assert_eq!(
        bob.next_of_type("canvasEmpty").await,
        json!({"type":"canvasEmpty","clientId": bob.id})
    );
}

// ---- the newcomer's picture from a peer (the original demo's flow, --newcomer-picture peer) ----

#[tokio::test]
async fn a_newcomer_gets_the_picture_from_a_peer() {
    let server = Server::start_with(&["--newcomer-picture", "peer"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    assert_eq!(bob.welcome["awaitingSnapshot"], true);
    let request = alice.next_of_type("canvasRequest").await;
    assert_eq!(request, json!({"type":"canvasRequest","clientId": bob.id}));
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)}))
        .await;
    let state = bob.next_of_type("canvasState").await;
    assert_eq!(
        state,
        json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)})
    );
}

#[tokio::test]
async fn draws_made_while_the_newcomer_waits_still_reach_it() {
    let server = Server::start_with(&["--newcomer-picture", "peer"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice.send_json(draw_at(7.0, 7.0)).await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 7.0);
}

#[tokio::test]
async fn a_snapshot_of_a_megabyte_is_accepted_when_it_was_asked_for() {
    let server = Server::start_with(&["--newcomer-picture", "peer"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    let data = png_data_url(4, 160);
    assert!(data.len() > 1024 * 1024, "{}", data.len());
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": data}))
        .await;
    assert_eq!(
        bob.next_of_type("canvasState").await["data"]
            .as_str()
            .map(str::len),
        Some(data.len())
    );
}

#[tokio::test]
async fn the_next_peer_is_asked_when_the_first_does_not_answer_in_time() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "300ms"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)}))
        .await;
    bob.next_of_type("canvasState").await;

    let mut carol = server.join("main").await;
    assert_eq!(
        alice.next_of_type("canvasRequest").await["clientId"],
        carol.id.as_str()
    );
    // Alice stays silent; Bob is asked next.
    assert_eq!(
        bob.next_of_type("canvasRequest").await["clientId"],
        carol.id.as_str()
    );
    let bobs = snapshot(2);
    bob.send_json(json!({"type":"canvasState","clientId": carol.id,"data": bobs}))
        .await;
    assert_eq!(carol.next_of_type("canvasState").await["data"], bobs);
    // Alice's late answer is refused.
    alice
        .send_json(json!({"type":"canvasState","clientId": carol.id,"data": snapshot(1)}))
        .await;
    assert_eq!(
        alice.next_of_type("error").await["code"],
        "unexpected_snapshot"
    );
}

#[tokio::test]
async fn the_next_peer_is_asked_at_once_when_the_asked_one_leaves() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "60s"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)}))
        .await;
    bob.next_of_type("canvasState").await;
    let mut carol = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice.ws.close(None).await.expect("close");
    assert_eq!(
        bob.next_of_type("canvasRequest").await["clientId"],
        carol.id.as_str()
    );
    bob.send_json(json!({"type":"canvasState","clientId": carol.id,"data": snapshot(1)}))
        .await;
    assert_eq!(carol.next_of_type("canvasState").await["data"], snapshot(1));
}

#[tokio::test]
async fn the_newcomer_is_told_the_canvas_is_empty_when_nobody_is_left_to_ask() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "60s"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice.ws.close(None).await.expect("close");
    assert_eq!(
        bob.next_event().await,
        json!({"type":"canvasEmpty","clientId": bob.id})
    );
}

#[tokio::test]
async fn the_newcomer_is_told_the_canvas_is_empty_when_no_peer_answers() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "200ms"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    assert_eq!(
        bob.next_event().await,
        json!({"type":"canvasEmpty","clientId": bob.id})
    );
}

#[tokio::test]
async fn a_spoofed_canvas_state_from_a_peer_that_was_not_asked_is_refused() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "60s"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)}))
        .await;
    bob.next_of_type("canvasState").await;
    let mut carol = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    // Bob was not asked: he tries to plant his picture on Carol.
    let forged = snapshot(3);
    bob.send_json(json!({"type":"canvasState","clientId": carol.id,"data": forged}))
        .await;
    assert_eq!(
        bob.next_of_type("error").await["code"],
        "unexpected_snapshot"
    );
    alice
        .send_json(json!({"type":"canvasState","clientId": carol.id,"data": snapshot(1)}))
        .await;
    assert_eq!(carol.next_of_type("canvasState").await["data"], snapshot(1));
}

#[tokio::test]
async fn the_asked_peer_may_answer_only_once() {
    let server = Server::start_with(&["--newcomer-picture", "peer"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    let answer = json!({"type":"canvasState","clientId": bob.id,"data": snapshot(1)});
    alice.send_json(answer.clone()).await;
    alice.send_json(answer).await;
    assert_eq!(
        alice.next_of_type("error").await["code"],
        "unexpected_snapshot"
    );
    bob.next_of_type("canvasState").await;
}

// ---- bad input ----

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_connection_carries_on() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.send_text("{not json").await;
    assert_eq!(alice.next_of_type("error").await["code"], "invalid_json");
    alice.send_json(draw_at(3.0, 3.0)).await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 3.0);
}

#[tokio::test]
async fn an_unknown_type_gets_an_error_naming_it() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    alice.send_json(json!({"type":"teleport"})).await;
    let error = alice.next_of_type("error").await;
    assert_eq!(error["code"], "unknown_type");
    assert!(error["message"]
        .as_str()
        .unwrap_or_default()
        .contains("teleport"));
}

#[tokio::test]
async fn an_out_of_range_draw_is_refused_naming_the_field_and_not_relayed() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    let mut bad = draw_at(1.0, 1.0);
    bad["size"] = json!(1000);
    alice.send_json(bad).await;
    let error = alice.next_of_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("invalid_field"), Some("size"))
    );
    alice.send_json(draw_at(4.0, 4.0)).await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 4.0);
}

#[tokio::test]
async fn a_fragmented_message_is_joined_and_handled() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice
        .send_fragmented(&draw_at(9.0, 9.0).to_string(), 4)
        .await;
    assert_eq!(bob.next_of_type("draw").await["startX"], 9.0);
}

#[tokio::test]
async fn a_binary_frame_is_closed_with_1003_and_the_room_carries_on() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice
        .ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    assert_eq!(alice.expect_close().await.code, CloseCode::Unsupported);
    bob.wait_for_count(1).await;
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    alice
        .send_frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        ))
        .await;
    assert_eq!(alice.expect_close().await.code, CloseCode::Invalid);
}

#[tokio::test]
async fn invalid_utf8_across_fragments_is_closed_with_1007() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    alice
        .send_frame(Frame::message(
            vec![b'{', 0xe2],
            OpCode::Data(Data::Text),
            false,
        ))
        .await;
    alice
        .send_frame(Frame::message(
            vec![0x28, b'}'],
            OpCode::Data(Data::Continue),
            true,
        ))
        .await;
    assert_eq!(alice.expect_close().await.code, CloseCode::Invalid);
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009_and_the_room_carries_on() {
    let server = Server::start();
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    let mut big = draw_at(1.0, 1.0);
    big["padding"] = json!("x".repeat(70 * 1024));
    bob.send_json(big).await;
    let close = bob.expect_close().await;
    assert_eq!(close.code, CloseCode::Size);
    assert!(!close.reason.is_empty());
    alice.wait_for_count(1).await;
}

#[tokio::test]
async fn the_snapshot_allowance_ends_when_the_request_times_out() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "200ms"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    alice.next_of_type("canvasRequest").await;
    bob.next_of_type("canvasEmpty").await;
    let late = format!("data:image/png;base64,{}", "A".repeat(100 * 1024));
    alice
        .send_json(json!({"type":"canvasState","clientId": bob.id,"data": late}))
        .await;
    assert_eq!(alice.expect_close().await.code, CloseCode::Size);
}

#[tokio::test]
async fn too_many_invalid_messages_in_a_row_close_with_1008() {
    let server = Server::start_with(&["--max-invalid-messages", "5"]);
    let mut alice = server.join("main").await;
    for _ in 0..5 {
        alice.send_text("nope").await;
    }
    for _ in 0..4 {
        alice.next_of_type("error").await;
    }
    assert_eq!(alice.expect_close().await.code, CloseCode::Policy);
}

#[tokio::test]
async fn a_valid_message_resets_the_invalid_streak() {
    let server = Server::start_with(&["--max-invalid-messages", "3"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    for round in 0..3 {
        alice.send_text("nope").await;
        alice.send_text("nope").await;
        alice.send_json(draw_at(f64::from(round), 0.0)).await;
    }
    for round in 0..3 {
        assert_eq!(bob.next_of_type("draw").await["startX"], f64::from(round));
    }
}

#[tokio::test]
async fn a_bad_room_name_is_refused_with_400_before_the_upgrade() {
    let server = Server::start();
    for room in ["a%20b", "..", &"x".repeat(65), "caf%C3%A9"] {
        let result = tokio_tungstenite::connect_async(server.ws_url(room)).await;
        match result {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{room}")
            }
            other => panic!("{room}: expected HTTP 400, got {:?}", other.map(|_| ())),
        }
    }
}

// ---- the upgrade ----

/// A WebSocket upgrade request for `path`, as a client writes it.
fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// A masked text frame (as a client must send it) of fewer than 126 bytes.
fn client_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let length = u8::try_from(payload.len()).expect("a short frame");
    assert!(length < 126);
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut frame = vec![0x81, 0x80 | length];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Writes `request` on a fresh connection and reads the response: its head, and as much body as
/// `Content-Length` gives (or up to the end of the connection).
async fn raw_exchange(server: &Server, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write the request");
    let read = async {
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end].lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
                if length.is_some_and(|length| response.len() >= head_end + 4 + length) {
                    return text;
                }
            }
            match stream.read(&mut chunk).await.expect("read the response") {
                0 => return text,
                n => response.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(common::EVENT_DEADLINE, read)
        .await
        .expect("the response before the deadline")
}

#[tokio::test]
async fn a_message_sent_along_with_the_upgrade_request_is_handled() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start();
    let mut bob = server.join("main").await;
    // The upgrade request and the first frame in one write: the server reads them together, and
    // the frame must still reach the session.
    let mut bytes = upgrade_request("/ws/main", "").into_bytes();
    bytes.extend(client_text_frame(&draw_at(321.0, 123.0).to_string()));
    let mut alice = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    alice.write_all(&bytes).await.expect("write");
    assert_eq!(bob.next_of_type("draw").await["startX"], 321.0);
}

#[tokio::test]
async fn a_websocket_upgrade_of_another_url_gets_its_ordinary_answer_and_a_closed_connection() {
    let server = Server::start();
    let response = raw_exchange(&server, upgrade_request("/healthz", "").as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(response.contains("\"status\":\"ok\""), "{response}");
}

#[tokio::test]
async fn an_upgrade_request_that_announces_a_body_is_refused_with_400() {
    let server = Server::start();
    // actix-http treats a chunked request as one with a body, however it says Upgrade.
    let request = upgrade_request("/ws/main", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n";
    let response = raw_exchange(&server, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("not_upgradable"), "{response}");
    assert_eq!(server.health()["connections"], 0);
}

// ---- batched delivery and coalesced counts ----

/// Reads frames of a batched connection, returning every message in order and how many frames
/// carried them.
async fn read_batched_until(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> (Vec<serde_json::Value>, usize) {
    use futures_util::StreamExt;
    let mut messages = Vec::new();
    let mut frames = 0;
    loop {
        let message = tokio::time::timeout(common::EVENT_DEADLINE, ws.next())
            .await
            .expect("a frame before the deadline")
            .expect("the connection is open")
            .expect("a well-formed frame");
        let Message::Text(text) = message else {
            continue;
        };
        frames += 1;
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let batch = if value["type"] == "batch" {
            value["messages"]
                .as_array()
                .cloned()
                .expect("a batch has messages")
        } else {
            vec![value]
        };
        for message in batch {
            let finished = done(&message);
            messages.push(message);
            if finished {
                return (messages, frames);
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_asks_for_batches_gets_bursts_in_few_frames_in_order() {
    let server = Server::start_with(&["--batch-tick", "200ms"]);
    let mut alice = server.join("main").await;
    let (mut bob, _) =
        tokio_tungstenite::connect_async(format!("{}?batch=1", server.ws_url("main")))
            .await
            .expect("upgrade");
    let (greeting, _) = read_batched_until(&mut bob, |m| m["type"] == "clientCount").await;
    assert_eq!(greeting[0]["type"], "welcome");
    for i in 0..100 {
        alice.send_json(draw_at(f64::from(i), 3.0)).await;
    }
    let (messages, frames) = read_batched_until(&mut bob, |m| m["startX"] == 99.0).await;
    let draws: Vec<f64> = messages
        .iter()
        .filter(|m| m["type"] == "draw")
        .filter_map(|m| m["startX"].as_f64())
        .collect();
    assert_eq!(draws, (0..100).map(f64::from).collect::<Vec<_>>());
    assert!(frames < 100, "{frames} frames for 100 draws");
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins with `?batch=1` and reads until the count says `count` people are in the room.
async fn join_batched(server: &Server, room: &str, count: u64) -> RawWs {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?batch=1", server.ws_url(room)))
        .await
        .expect("upgrade");
    read_batched_until(&mut ws, |m| {
        m["type"] == "clientCount" && m["clientCount"] == count
    })
    .await;
    ws
}

fn draws_in(messages: &[serde_json::Value]) -> Vec<(f64, f64)> {
    messages
        .iter()
        .filter(|m| m["type"] == "draw")
        .map(|m| (m["startX"].as_f64().unwrap(), m["startY"].as_f64().unwrap()))
        .collect()
}

#[tokio::test]
async fn batched_senders_in_one_tick_get_each_others_draws_but_never_their_own() {
    let server = Server::start_with(&["--batch-tick", "200ms"]);
    let mut alice = join_batched(&server, "main", 1).await;
    let mut bob = join_batched(&server, "main", 2).await;
    read_batched_until(&mut alice, |m| m["clientCount"] == 2).await;
    for i in 0..20 {
        let x = f64::from(i);
        alice
            .send(Message::text(draw_at(x, 1.0).to_string()))
            .await
            .unwrap();
        bob.send(Message::text(draw_at(x, 2.0).to_string()))
            .await
            .unwrap();
    }
    let (to_alice, _) = read_batched_until(&mut alice, |m| m["startX"] == 19.0).await;
    let (to_bob, _) = read_batched_until(&mut bob, |m| m["startX"] == 19.0).await;
    let expected = |y: f64| (0..20).map(|i| (f64::from(i), y)).collect::<Vec<_>>();
    assert_eq!(draws_in(&to_alice), expected(2.0));
    assert_eq!(draws_in(&to_bob), expected(1.0));
}

#[tokio::test]
async fn a_batched_newcomer_joining_mid_tick_gets_every_operation_once_in_order() {
    let server = Server::start_with(&["--batch-tick", "400ms"]);
    // A batched member keeps the room's ticks going; an unbatched one shows when a draw went out.
    let _carol = join_batched(&server, "main", 1).await;
    let mut alice = server.join("main").await;
    let mut dave = server.join("main").await;
    for i in 0..5 {
        alice.send_json(draw_at(f64::from(i), 3.0)).await;
    }
    while dave.next_of_type("draw").await["startX"] != 4.0 {}
    // Draws 0-4 now wait in the room's tick, and are part of the picture the newcomer gets.
    let (mut bob, _) =
        tokio_tungstenite::connect_async(format!("{}?batch=1", server.ws_url("main")))
            .await
            .expect("upgrade");
    for i in 5..10 {
        alice.send_json(draw_at(f64::from(i), 3.0)).await;
    }
    let (to_bob, _) = read_batched_until(&mut bob, |m| m["startX"] == 9.0).await;
    let expected: Vec<_> = (0..10).map(|i| (f64::from(i), 3.0)).collect();
    assert_eq!(draws_in(&to_bob), expected);
}

#[tokio::test]
async fn a_crowd_joining_at_once_costs_few_count_frames() {
    let server = Server::start_with(&[
        "--connection-burst-per-ip",
        "100",
        "--max-connections-per-ip",
        "100",
    ]);
    let mut observer = server.join("main").await;
    observer.wait_for_count(1).await;
    let crowd = futures_util::future::join_all((0..40).map(|_| server.join("main"))).await;
    let mut count_frames = 0;
    loop {
        let count = observer.next_of_type("clientCount").await;
        count_frames += 1;
        if count["clientCount"] == 41 {
            break;
        }
    }
    assert!(
        count_frames < 40,
        "{count_frames} count frames for 40 joins"
    );
    drop(crowd);
}
