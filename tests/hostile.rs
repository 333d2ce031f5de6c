//! Hostile and broken clients. Every test asserts two things: what the offender is told (an error or
//! a close code), and that a well-behaved pair in the same room noticed nothing: every stroke the
//! drawer sent reached the watcher, in order.

mod common;

use common::{draw_at, png_data_url, snapshot, Client, Server, CANVAS_HEIGHT, EVENT_DEADLINE};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The well-behaved drawer's colour, so the watcher can tell its strokes from the offender's.
const WITNESS_COLOR: &str = "#0a0b0c";

/// A drawer and a watcher in one room: the drawer's strokes carry their sequence number in `startY`.
struct Witnesses {
    drawer: Client,
    watcher: Client,
    sent: u32,
    seen: u32,
}

impl Witnesses {
    /// Both are in the room and have their (blank) picture before anyone draws. With
    /// `--newcomer-picture peer`, the drawer hands the watcher its picture.
    async fn join(server: &Server, room: &str) -> Witnesses {
        let mut drawer = server.join(room).await;
        let mut watcher = server.join(room).await;
        if watcher.welcome["awaitingSnapshot"] == true
            && drawer.welcome["awaitingSnapshot"] == false
        {
            let request = drawer.next_of_type("canvasRequest").await;
            drawer
                .send_json(
                    json!({"type":"canvasState","clientId": request["clientId"],"data": snapshot(1)}),
                )
                .await;
            watcher.next_of_type("canvasState").await;
        } else {
            watcher.next_of_type("canvasEmpty").await;
        }
        Witnesses {
            drawer,
            watcher,
            sent: 0,
            seen: 0,
        }
    }

    async fn draw(&mut self, strokes: u32) {
        for _ in 0..strokes {
            let mut stroke = draw_at(10.0, f64::from(self.sent % CANVAS_HEIGHT));
            stroke["color"] = json!(WITNESS_COLOR);
            stroke["endX"] = json!(self.sent / CANVAS_HEIGHT);
            self.drawer.send_json(stroke).await;
            self.sent += 1;
        }
    }

    /// The watcher received every stroke sent so far, once each, in order.
    async fn all_strokes_arrived_in_order(&mut self) {
        while self.seen < self.sent {
            let draw = self.watcher.next_of_type("draw").await;
            if draw["color"] != WITNESS_COLOR {
                continue;
            }
            let sequence = draw["endX"].as_f64().unwrap_or(-1.0) * f64::from(CANVAS_HEIGHT)
                + draw["startY"].as_f64().unwrap_or(-1.0);
            assert_eq!(
                sequence,
                f64::from(self.seen),
                "stroke out of order or lost"
            );
            self.seen += 1;
        }
    }

    /// Strokes before, during (by the caller) and after an offence all arrive.
    async fn still_unharmed(&mut self) {
        self.draw(20).await;
        self.all_strokes_arrived_in_order().await;
    }
}

async fn send_until_closed(client: &mut Client, message: Value, at_most: usize) {
    for _ in 0..at_most {
        if client
            .ws
            .send(Message::text(message.to_string()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends `message` over and over as fast as it can while another task reads, as a client that
/// never stops to listen; returns the close frame the server sent, or what happened instead.
///
/// The server must deliver its close frame and then end the connection cleanly. A socket closed
/// with unread bytes sends a reset instead: many clients (Python's `websockets`, any that gives
/// up on its first failed write) then never read the close frame and never learn why they were
/// closed. So a reset seen by either half counts as a failure here, even when this client, which
/// keeps reading, got the close frame first.
async fn close_while_sending(client: Client, message: Message) -> Result<CloseFrame, String> {
    let (mut sink, mut stream) = client.ws.split();
    let sender = tokio::spawn(async move {
        for _ in 0..SEND_AT_MOST {
            if let Err(err) = sink.send(message.clone()).await {
                return is_reset(&err).then(|| format!("a write failed with a reset: {err}"));
            }
        }
        None
    });
    let closed = async {
        let mut close = None;
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(Some(frame)))) => close = Some(frame),
                Some(Ok(Message::Close(None))) => return Err("a close frame without a code".into()),
                Some(Ok(_)) => continue,
                Some(Err(err)) if is_reset(&err) => {
                    return Err(format!("the connection was reset (close frame: {close:?})"))
                }
                // The connection ended (cleanly, after the close handshake).
                Some(Err(_)) | None => {
                    return close.ok_or_else(|| "the stream ended without a close frame".into())
                }
            }
        }
    };
    let closed = tokio::time::timeout(EVENT_DEADLINE, closed)
        .await
        .unwrap_or_else(|_| Err("the connection did not end before the deadline".into()))?;
    match tokio::time::timeout(EVENT_DEADLINE, sender).await {
        Ok(Ok(None)) => Ok(closed),
        Ok(Ok(Some(reset))) => Err(reset),
        Ok(Err(err)) => Err(format!("the sender failed: {err}")),
        Err(_) => Err("the sender went on sending after the close".into()),
    }
}

fn is_reset(err: &WsError) -> bool {
    matches!(err, WsError::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    ))
}

/// What `close_while_sending` sends at most (the server closes the sender long before).
const SEND_AT_MOST: usize = 200_000;

fn http_status(error: WsError) -> u16 {
    match error {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn refused_upgrade(url: &str, origin: Option<&str>) -> u16 {
    let mut request = url.into_client_request().expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).expect("a header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade to {url} was accepted"),
        Err(error) => http_status(error),
    }
}

// ---- framing ----

#[tokio::test]
async fn a_binary_frame_closes_only_its_sender_with_1003() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    room.draw(5).await;
    offender
        .ws
        .send(Message::binary(vec![0u8; 16]))
        .await
        .expect("send");
    let close = offender.expect_close().await;
    assert_eq!(close.code, CloseCode::Unsupported);
    assert!(!close.reason.is_empty());
    room.still_unharmed().await;
}

#[tokio::test]
async fn invalid_utf8_closes_only_its_sender_with_1007() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    room.draw(5).await;
    offender
        .send_frame(Frame::message(
            vec![b'"', 0xc3, 0x28, b'"'],
            OpCode::Data(Data::Text),
            true,
        ))
        .await;
    assert_eq!(offender.expect_close().await.code, CloseCode::Invalid);
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_continuation_without_a_start_closes_with_1002() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    offender
        .send_frame(Frame::message(
            b"{}".to_vec(),
            OpCode::Data(Data::Continue),
            true,
        ))
        .await;
    assert_eq!(offender.expect_close().await.code, CloseCode::Protocol);
    room.still_unharmed().await;
}

#[tokio::test]
async fn an_oversized_message_closes_only_its_sender_with_1009() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    offender.send_text(&"x".repeat(65 * 1024)).await;
    assert_eq!(offender.expect_close().await.code, CloseCode::Size);
    room.still_unharmed().await;
}

#[tokio::test]
async fn fragments_adding_up_past_the_limit_close_with_1009() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    let piece = vec![b' '; 16 * 1024];
    offender
        .send_frame(Frame::message(
            piece.clone(),
            OpCode::Data(Data::Text),
            false,
        ))
        .await;
    for _ in 0..5 {
        offender
            .send_frame(Frame::message(
                piece.clone(),
                OpCode::Data(Data::Continue),
                false,
            ))
            .await;
    }
    assert_eq!(offender.expect_close().await.code, CloseCode::Size);
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_fragmented_draw_is_relayed_like_any_other() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut other = server.join("main").await;
    other
        .send_fragmented(&draw_at(77.0, 7.0).to_string(), 5)
        .await;
    loop {
        let draw = room.watcher.next_of_type("draw").await;
        if draw["startX"] == 77.0 {
            break;
        }
    }
    room.still_unharmed().await;
}

// ---- validation ----

#[tokio::test]
async fn each_invalid_field_gets_an_error_naming_it() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    let cases = [
        ("startX", json!(f64::MAX)),
        ("startY", json!(-500)),
        ("endX", json!("12")),
        ("endY", json!(null)),
        ("size", json!(0)),
        ("size", json!(65)),
        ("color", json!("red")),
        ("color", json!("#12345g")),
        ("tool", json!("flamethrower")),
    ];
    for (field, value) in cases {
        let mut draw = draw_at(1.0, 1.0);
        draw[field] = value.clone();
        offender.send_json(draw).await;
        let error = offender.next_of_type("error").await;
        assert_eq!(error["code"], "invalid_field", "{field}={value}");
        assert_eq!(error["field"], field, "{field}={value}");
        room.draw(1).await;
    }
    room.still_unharmed().await;
}

#[tokio::test]
async fn malformed_json_and_unknown_types_get_errors_and_the_room_carries_on() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    for (text, code) in [
        ("{", "invalid_json"),
        ("[]", "invalid_json"),
        ("\"draw\"", "invalid_json"),
        (r#"{"type":"nuke"}"#, "unknown_type"),
        (r#"{"type":42}"#, "invalid_field"),
    ] {
        offender.send_text(text).await;
        assert_eq!(offender.next_of_type("error").await["code"], code, "{text}");
        room.draw(1).await;
    }
    room.still_unharmed().await;
}

#[tokio::test]
async fn twenty_invalid_messages_in_a_row_close_with_1008() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let mut offender = server.join("main").await;
    for _ in 0..20 {
        offender.send_text("garbage").await;
    }
    for _ in 0..19 {
        assert_eq!(offender.next_of_type("error").await["code"], "invalid_json");
    }
    assert_eq!(offender.expect_close().await.code, CloseCode::Policy);
    room.still_unharmed().await;
}

// ---- rate limits ----

#[tokio::test]
async fn a_flooder_is_throttled_then_closed_with_1008() {
    let server = Server::start_with(&[
        "--draws-per-second",
        "50",
        "--draw-burst",
        "50",
        "--flood-close-after",
        "200",
    ]);
    let mut room = Witnesses::join(&server, "main").await;
    let mut flooder = server.join("main").await;
    room.draw(5).await;
    send_until_closed(&mut flooder, draw_at(500.0, 500.0), 5_000).await;
    assert_eq!(flooder.next_of_type("error").await["code"], "rate_limited");
    let close = flooder.expect_close().await;
    assert_eq!(close.code, CloseCode::Policy);
    room.still_unharmed().await;
    // Of the flood, at most the burst (plus what the rate refilled meanwhile) reached the room.
    let mut flood_seen = 0;
    room.drawer.send_json(json!({"type":"clear"})).await;
    loop {
        let event = room.watcher.next_event().await;
        match event["type"].as_str() {
            Some("draw") => flood_seen += 1,
            Some("clear") => break,
            _ => {}
        }
    }
    assert!(
        flood_seen < 1_000,
        "{flood_seen} flood strokes were relayed"
    );
}

#[tokio::test]
async fn a_flooder_that_never_stops_sending_still_receives_its_1008() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let flooder = server.join("main").await;
    let stroke = Message::text(draw_at(500.0, 500.0).to_string());
    let close = close_while_sending(flooder, stroke).await;
    assert_eq!(close.map(|c| c.code), Ok(CloseCode::Policy));
    room.still_unharmed().await;
}

#[tokio::test]
async fn an_oversized_sender_that_never_stops_still_receives_its_1009() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let offender = server.join("main").await;
    let oversized = Message::text("x".repeat(65 * 1024));
    let close = close_while_sending(offender, oversized).await;
    assert_eq!(close.map(|c| c.code), Ok(CloseCode::Size));
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_binary_sender_that_never_stops_still_receives_its_1003() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let offender = server.join("main").await;
    let binary = Message::binary(vec![7u8; 1024]);
    let close = close_while_sending(offender, binary).await;
    assert_eq!(close.map(|c| c.code), Ok(CloseCode::Unsupported));
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_paced_flooder_well_over_the_rate_is_closed_too() {
    let server = Server::start_with(&[
        "--draws-per-second",
        "50",
        "--draw-burst",
        "50",
        "--flood-close-after",
        "100",
    ]);
    let mut room = Witnesses::join(&server, "main").await;
    let mut flooder = server.join("main").await;
    // Ten times the rate, evenly paced, so some strokes always get through.
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(2));
    let mut closed = false;
    for _ in 0..5_000 {
        pace.tick().await;
        let stroke = Message::text(draw_at(600.0, 600.0).to_string());
        if flooder.ws.send(stroke).await.is_err() {
            closed = true;
            break;
        }
    }
    let close = flooder.expect_close().await;
    assert_eq!(
        close.code,
        CloseCode::Policy,
        "closed while sending: {closed}"
    );
    room.still_unharmed().await;
}

#[tokio::test]
async fn connection_attempts_beyond_the_per_address_rate_get_429() {
    let server = Server::start_with(&[
        "--connection-rate-per-ip",
        "1",
        "--connection-burst-per-ip",
        "4",
    ]);
    let mut room = Witnesses::join(&server, "main").await;
    let _third = server.join("main").await;
    let _fourth = server.join("main").await;
    assert_eq!(refused_upgrade(&server.ws_url("main"), None).await, 429);
    room.still_unharmed().await;
}

// ---- capacity ----

#[tokio::test]
async fn connections_beyond_the_per_address_limit_get_429() {
    let server = Server::start_with(&["--max-connections-per-ip", "3"]);
    let mut room = Witnesses::join(&server, "main").await;
    let third = server.join("other").await;
    assert_eq!(refused_upgrade(&server.ws_url("main"), None).await, 429);
    drop(third);
    room.still_unharmed().await;
}

#[tokio::test]
async fn connections_beyond_the_server_limit_get_503() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let mut room = Witnesses::join(&server, "main").await;
    assert_eq!(refused_upgrade(&server.ws_url("main"), None).await, 503);
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_join_into_a_full_room_is_closed_with_1013() {
    let server = Server::start_with(&["--max-clients-per-room", "2"]);
    let mut room = Witnesses::join(&server, "main").await;
    let (mut late, _) = tokio_tungstenite::connect_async(server.ws_url("main"))
        .await
        .expect("the upgrade itself succeeds");
    let close = late.close_frame().await;
    assert_eq!(close.code, CloseCode::Again);
    assert!(close.reason.contains("full"), "{}", close.reason);
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_join_that_would_open_a_room_beyond_the_limit_is_closed_with_1013() {
    let server = Server::start_with(&["--max-rooms", "1"]);
    let mut room = Witnesses::join(&server, "main").await;
    let (mut stranger, _) = tokio_tungstenite::connect_async(server.ws_url("another"))
        .await
        .expect("the upgrade itself succeeds");
    let close = stranger.close_frame().await;
    assert_eq!(close.code, CloseCode::Again);
    room.still_unharmed().await;
}

// ---- origin ----

#[tokio::test]
async fn a_page_from_another_site_is_refused_with_403() {
    let server = Server::start();
    let mut room = Witnesses::join(&server, "main").await;
    let status = refused_upgrade(&server.ws_url("main"), Some("http://evil.example")).await;
    assert_eq!(status, 403);
    room.still_unharmed().await;
}

#[tokio::test]
async fn a_page_from_the_same_host_or_an_allowed_origin_may_connect() {
    let server = Server::start_with(&[
        "--allowed-origins",
        "https://canvas.example,http://other.example",
    ]);
    for origin in [
        format!("http://{}", server.addr),
        "https://canvas.example".to_owned(),
    ] {
        let mut request = server
            .ws_url("main")
            .into_client_request()
            .expect("a request");
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(&origin).expect("a header"));
        let result = tokio_tungstenite::connect_async(request).await;
        assert!(result.is_ok(), "{origin}: {:?}", result.err());
    }
}

// ---- slow consumers ----

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_slowing_the_room() {
    let server = Server::start_with(&[
        "--max-queued-messages",
        "1024",
        "--draws-per-second",
        "1000000",
        "--draw-burst",
        "1000000",
    ]);
    a_sleeper_is_dropped_without_slowing_the_room(&server, "").await;
}

#[tokio::test]
async fn a_batched_client_that_stops_reading_is_dropped_without_slowing_the_room() {
    // Its queue counts ticks, not strokes: short ticks fill it as fast as strokes would.
    let server = Server::start_with(&[
        "--max-queued-messages",
        "256",
        "--batch-tick",
        "1ms",
        "--draws-per-second",
        "1000000",
        "--draw-burst",
        "1000000",
    ]);
    a_sleeper_is_dropped_without_slowing_the_room(&server, "?batch=1").await;
}

/// A client connecting with `query` stops reading while others draw: it is dropped (closed 1008)
/// while the drawer keeps drawing, the watcher keeps receiving, and the server stays small.
async fn a_sleeper_is_dropped_without_slowing_the_room(server: &Server, query: &str) {
    let mut room = Witnesses::join(server, "main").await;
    // The sleeper's socket takes almost nothing (a 4 KiB receive buffer, which also stops the
    // kernel growing it), and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = format!("{}{query}", server.ws_url("main"));
    let (mut sleeper, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    room.watcher.wait_for_count(3).await;
    let rss_before = server.rss_kib();
    // Once the kernel's buffers are full the sleeper's queue fills and it is dropped, while the
    // drawer keeps drawing and the watcher keeps receiving.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut strokes = 0;
    let dropped = loop {
        room.draw(200).await;
        strokes += 200;
        room.all_strokes_arrived_in_order().await;
        let evicted = tokio::time::timeout(std::time::Duration::from_millis(1), async {
            room.drawer.wait_for_count(2).await
        })
        .await
        .is_ok();
        if evicted {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        dropped,
        "the sleeper was still in the room after {strokes} strokes"
    );
    eprintln!("the sleeper was dropped after {strokes} strokes");
    let rss_growth_kib = server.rss_kib().saturating_sub(rss_before);
    assert!(
        rss_growth_kib < 64 * 1024,
        "the server grew by {rss_growth_kib} KiB"
    );
    let close = sleeper.close_frame().await;
    assert_eq!(close.code, CloseCode::Policy);
    room.still_unharmed().await;
}

// ---- snapshot replies ----

#[tokio::test]
async fn a_snapshot_that_is_not_a_png_of_the_room_size_is_refused() {
    let server = Server::start_with(&["--newcomer-picture", "peer", "--snapshot-timeout", "60s"]);
    let mut room = Witnesses::join(&server, "main").await;
    let mut newcomer = server.join("main").await;
    let request = room.drawer.next_of_type("canvasRequest").await;
    assert_eq!(request["clientId"], newcomer.id.as_str());
    let wrong_size = {
        // A valid PNG of 1x1.
        let mut encoded = Vec::new();
        let mut encoder = png::Encoder::new(&mut encoded, 1, 1);
        encoder.set_color(png::ColorType::Rgba);
        let mut writer = encoder.write_header().expect("header");
        writer.write_image_data(&[0, 0, 0, 0]).expect("data");
        drop(writer);
        use base64::Engine as _;
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(encoded)
        )
    };
    let truncated = {
        let full = png_data_url(9, 20);
        full[..full.len() / 2].to_owned()
    };
    for bad in [
        "data:image/png;base64,!!!not base64!!!".to_owned(),
        "data:image/png;base64,aGVsbG8=".to_owned(),
        wrong_size,
        truncated,
    ] {
        room.drawer
            .send_json(json!({"type":"canvasState","clientId": newcomer.id,"data": bad}))
            .await;
        let error = room.drawer.next_of_type("error").await;
        assert_eq!(error["field"], "data", "{error}");
    }
    // The asked peer may still answer properly, once.
    room.drawer
        .send_json(json!({"type":"canvasState","clientId": newcomer.id,"data": snapshot(5)}))
        .await;
    assert_eq!(
        newcomer.next_of_type("canvasState").await["data"],
        snapshot(5)
    );
    room.still_unharmed().await;
}

/// Reads a raw stream (one that never went through `Client::join`), with the common deadline.
trait NextRaw {
    async fn next_message_raw(&mut self) -> Message;

    /// Skips messages until the server's close frame.
    async fn close_frame(&mut self) -> CloseFrame {
        loop {
            match self.next_message_raw().await {
                Message::Close(Some(frame)) => return frame,
                Message::Close(None) => panic!("close without a code"),
                _ => continue,
            }
        }
    }
}

impl<S> NextRaw for tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn next_message_raw(&mut self) -> Message {
        use futures_util::StreamExt;
        tokio::time::timeout(common::EVENT_DEADLINE, self.next())
            .await
            .expect("a message before the deadline")
            .expect("the connection is open")
            .expect("a well-formed message")
    }
}
