//! Secrets stay out of request lines and logs: a private room's token travels in a WebSocket
//! subprotocol value (the page) or `Authorization: Bearer` (other clients), old `?token=` links
//! still open their room, links carry the token in the fragment, the undo secret travels as a
//! subprotocol value too, and the server never writes either to its log, at any level.

mod common;

use common::{draw_at, Client, Server, EVENT_DEADLINE};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The page's undo secret in these tests (16-128 characters of A-Z a-z 0-9 _ -).
const AUTHOR: &str = "author-secret-that-must-not-be-logged";

/// A new private room: (name, edit token, view token).
fn create(server: &Server) -> (String, String, String) {
    let response = ureq::post(&server.http_url("/api/rooms"))
        .timeout(EVENT_DEADLINE)
        .call()
        .expect("POST /api/rooms answers 201");
    let body: Value = response.into_json().expect("JSON");
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (field("room"), field("editToken"), field("viewToken"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking step")
}

/// The upgrade request for `room` with `header: value` added.
fn upgrade_with(server: &Server, room: &str, header: &'static str, value: &str) -> Request {
    let mut request = server
        .ws_url(room)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        header,
        HeaderValue::from_str(value).expect("a header value"),
    );
    request
}

/// What the page offers: the plain subprotocol, then one value per secret.
fn page_protocols(token: Option<&str>) -> String {
    let mut offered = vec!["livecanvas".to_owned()];
    if let Some(token) = token {
        offered.push(format!("livecanvas.token.{token}"));
    }
    offered.push(format!("livecanvas.author.{AUTHOR}"));
    offered.join(", ")
}

/// Tries an upgrade the server must refuse with an HTTP answer: its status.
async fn refused_status(request: Request) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("the upgrade failed without an answer: {err}"),
    }
}

// ---- presenting a token ----

#[tokio::test]
async fn a_page_presents_its_token_as_a_subprotocol_and_is_answered_with_the_plain_one() {
    let server = Server::start();
    let (room, edit, view) = create(&server);
    let offered = page_protocols(Some(&edit));
    let editor = Client::join(upgrade_with(
        &server,
        &room,
        "sec-websocket-protocol",
        &offered,
    ))
    .await;
    assert_eq!(editor.welcome["readOnly"], false);
    assert_eq!(editor.protocol.as_deref(), Some("livecanvas"));
    let offered = page_protocols(Some(&view));
    let viewer = Client::join(upgrade_with(
        &server,
        &room,
        "sec-websocket-protocol",
        &offered,
    ))
    .await;
    assert_eq!(viewer.welcome["readOnly"], true);
}

#[tokio::test]
async fn a_page_without_a_token_or_with_a_wrong_one_is_closed_with_4403() {
    let server = Server::start();
    let (room, _, _) = create(&server);
    for (token, reason) in [(None, "token_required"), (Some("wrong"), "invalid_token")] {
        let offered = page_protocols(token);
        let request = upgrade_with(&server, &room, "sec-websocket-protocol", &offered);
        let close = Client::join_or_close(request)
            .await
            .err()
            .unwrap_or_else(|| panic!("{token:?} joined a private room"));
        assert_eq!(u16::from(close.code), 4403, "{token:?}");
        assert_eq!(close.reason.as_str(), reason, "{token:?}");
    }
}

#[tokio::test]
async fn a_bearer_token_opens_the_websocket_and_the_picture() {
    let server = Server::start();
    let (room, edit, view) = create(&server);
    let bearer = |token: &str| format!("Bearer {token}");
    let mut editor = Client::join(upgrade_with(
        &server,
        &room,
        "authorization",
        &bearer(&edit),
    ))
    .await;
    assert_eq!(editor.welcome["readOnly"], false);
    assert!(editor.protocol.is_none(), "no subprotocol was offered");
    editor.send_json(draw_at(10.0, 10.0)).await;
    let mut viewer = Client::join(upgrade_with(
        &server,
        &room,
        "authorization",
        &bearer(&view),
    ))
    .await;
    assert_eq!(viewer.welcome["readOnly"], true);
    let wrong = upgrade_with(&server, &room, "authorization", "Bearer wrong");
    assert_eq!(refused_status(wrong).await, 403);
    let picture = server.http_url(&format!("/api/rooms/{room}/canvas.png"));
    let with = |token: Option<String>| {
        let picture = picture.clone();
        move || {
            let request = ureq::get(&picture);
            let request = match &token {
                Some(token) => request.set("Authorization", &format!("Bearer {token}")),
                None => request,
            };
            match request.call() {
                Ok(response) => response.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(err) => panic!("{err}"),
            }
        }
    };
    // The draw is in the room once the viewer is in: the room handles messages in order.
    viewer.wait_for_count(2).await;
    assert_eq!(blocking(with(Some(view.clone()))).await, 200);
    assert_eq!(blocking(with(Some("wrong".into()))).await, 403);
    assert_eq!(blocking(with(None)).await, 403);
}

#[tokio::test]
async fn an_old_query_token_link_still_opens_its_room() {
    let server = Server::start();
    let (room, edit, _) = create(&server);
    let editor = Client::join(&format!("{}?token={edit}", server.ws_url(&room))).await;
    assert_eq!(editor.welcome["readOnly"], false);
}

#[tokio::test]
async fn links_carry_the_token_in_the_fragment() {
    let server = Server::start();
    let response = ureq::post(&server.http_url("/api/rooms"))
        .call()
        .expect("201");
    let body: Value = response.into_json().expect("JSON");
    let room = body["room"].as_str().expect("room");
    for (url, token) in [("editUrl", "editToken"), ("viewUrl", "viewToken")] {
        assert_eq!(
            body[url].as_str(),
            Some(format!("/r/{room}#token={}", body[token].as_str().expect(token)).as_str()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_undo_secret_presented_as_a_subprotocol_names_the_author() {
    let server = Server::start();
    let offered = format!("livecanvas, livecanvas.author.{AUTHOR}");
    let as_author = || upgrade_with(&server, "undo-secret", "sec-websocket-protocol", &offered);
    let mut watcher = server.join("undo-secret").await;
    let mut first = Client::join(as_author()).await;
    let mut stroke = draw_at(20.0, 20.0);
    stroke["strokeId"] = "s-1".into();
    first.send_json(stroke).await;
    assert_eq!(watcher.next_of_type("draw").await["strokeId"], "s-1");
    drop(first);
    // The same secret on a new connection is the same author: it may undo the stroke.
    let mut again = Client::join(as_author()).await;
    again
        .send_json(serde_json::json!({"type": "undo", "strokeId": "s-1"}))
        .await;
    assert_eq!(watcher.next_of_type("undo").await["strokeId"], "s-1");
    let short = "livecanvas, livecanvas.author.short";
    let bad = upgrade_with(&server, "undo-secret", "sec-websocket-protocol", short);
    assert_eq!(refused_status(bad).await, 400);
}

// ---- logs ----

#[tokio::test]
async fn the_server_never_logs_a_token_or_the_undo_secret_even_at_trace_level() {
    let dir = common::data_dir();
    let log = dir.path().join("server.log");
    let server = Server::start_logging(&[], "trace", &log);
    let (room, edit, view) = create(&server);
    // Every way of presenting a token, a wrong one too, and the undo secret both ways.
    let offered = page_protocols(Some(&edit));
    let mut page = Client::join(upgrade_with(
        &server,
        &room,
        "sec-websocket-protocol",
        &offered,
    ))
    .await;
    page.send_json(draw_at(5.0, 5.0)).await;
    let bearer = Client::join(upgrade_with(
        &server,
        &room,
        "authorization",
        &format!("Bearer {view}"),
    ))
    .await;
    let old = Client::join(&format!(
        "{}?token={edit}&author={AUTHOR}",
        server.ws_url(&room)
    ))
    .await;
    let wrong_token = "w".repeat(43);
    let wrong = upgrade_with(
        &server,
        &room,
        "authorization",
        &format!("Bearer {wrong_token}"),
    );
    assert_eq!(refused_status(wrong).await, 403);
    let picture = server.http_url(&format!("/api/rooms/{room}/canvas.png?token={view}"));
    assert_eq!(blocking(move || common::http_get(&picture).0).await, 200);
    drop((page, bearer, old));
    // A graceful stop writes everything the server had to say.
    server.terminate();
    let mut server = server;
    server
        .wait_for_exit(EVENT_DEADLINE)
        .expect("the server stops");
    let text = std::fs::read_to_string(&log).expect("the server's log");
    assert!(
        text.contains("TRACE") || text.contains("trace"),
        "the log is at trace level:\n{text}"
    );
    for (name, secret) in [
        ("edit token", edit.as_str()),
        ("view token", view.as_str()),
        ("wrong token", wrong_token.as_str()),
        ("undo secret", AUTHOR),
    ] {
        assert!(!text.contains(secret), "the {name} is in the server's log");
    }
}

// ---- creating rooms from other sites ----

#[tokio::test]
async fn creating_a_room_from_a_page_of_another_site_is_forbidden() {
    let server = Server::start();
    let post = |origin: String| {
        let url = server.http_url("/api/rooms");
        move || match ureq::post(&url).set("Origin", &origin).call() {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(blocking(post("https://evil.example".into())).await, 403);
    assert_eq!(blocking(post(format!("http://{}", server.addr))).await, 201);
}

#[tokio::test]
async fn an_allowed_origin_may_create_rooms() {
    let server = Server::start_with(&["--allowed-origins", "https://canvas.example"]);
    let url = server.http_url("/api/rooms");
    let status = blocking(move || {
        match ureq::post(&url)
            .set("Origin", "https://canvas.example")
            .call()
        {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(err) => panic!("{err}"),
        }
    })
    .await;
    assert_eq!(status, 201);
}
