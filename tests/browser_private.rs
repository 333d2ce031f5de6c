//! Private rooms in a real browser (headless Chromium over WebDriver, see `common::browser`): the
//! "New private room" action (which opens the owner link), the share dialog's edit and view-only
//! links, a view-only page that shows it, offers no drawing tools and changes nothing when drawn
//! on with the pointer, links with the token in the fragment (old `?token=` links moved there),
//! and a page without a token told that the room is private instead of retrying.

mod common;

use common::browser::*;
use common::{Image, Server};
use serde_json::Value;

/// A stroke across the upper part of the board, and points on it.
fn upper_stroke() -> Vec<(f64, f64)> {
    line((400.0, 200.0), (1200.0, 200.0), 8)
}
const ON_UPPER_STROKE: [(f64, f64); 3] = [(600.0, 200.0), (800.0, 200.0), (1000.0, 200.0)];

/// Links of a room made with `POST /api/rooms`: (room, edit URL, view URL), all absolute.
async fn create_room(server: &Server) -> (String, String, String) {
    let url = server.http_url("/api/rooms");
    let body: Value = tokio::task::spawn_blocking(move || {
        ureq::post(&url)
            .call()
            .expect("POST /api/rooms answers 201")
            .into_json()
            .expect("JSON")
    })
    .await
    .expect("the POST ran");
    let text = |name: &str| body[name].as_str().expect(name).to_owned();
    (
        text("room"),
        server.http_url(&text("editUrl")),
        server.http_url(&text("viewUrl")),
    )
}

/// The server's picture of a private room (transparent background), read with `token`.
async fn private_picture(server: &Server, room: &str, token_url: &str) -> Option<Image> {
    let token = token_url
        .split("token=")
        .nth(1)
        .expect("a token in the URL");
    let url = server.http_url(&format!(
        "/api/rooms/{room}/canvas.png?background=transparent&token={token}"
    ));
    let (status, body) = http_get(url).await;
    match status {
        200 => Some(Image::decode(&body)),
        404 => None,
        _ => panic!("the picture: {status} {}", String::from_utf8_lossy(&body)),
    }
}

async fn is_displayed(page: &Browser, selector: &str) -> bool {
    page.js(
        "const el = document.querySelector(arguments[0]);
         return Boolean(el) && !el.hidden && getComputedStyle(el).display !== 'none';",
        vec![Value::from(selector)],
    )
    .await
        == Value::Bool(true)
}

#[tokio::test]
async fn new_private_room_leads_to_a_working_room_whose_share_dialog_offers_an_edit_and_a_view_link(
) {
    let server = Server::start();
    let driver = Driver::start();
    let page = Browser::open(&driver, &server.http_url("/")).await;
    page.click("#new-private").await;
    page.wait_until(
        "location.pathname.startsWith('/r/') && location.hash.startsWith('#token=') \
         && location.search === '' \
         && document.getElementById('status').dataset.state === 'connected' \
         && document.body.dataset.synced === 'true'",
        "the page moved to its new private room and is connected",
    )
    .await;
    assert!(!is_displayed(&page, "#view-only").await, "an editor's page");

    page.click("#share").await;
    page.wait_until(
        "document.getElementById('share-dialog').open",
        "the share dialog is open",
    )
    .await;
    let links = page
        .js(
            "return [location.href, document.getElementById('share-edit-url').value,
                     document.getElementById('share-view-url').value,
                     !document.getElementById('share-edit').hidden,
                     !document.getElementById('share-view').hidden];",
            vec![],
        )
        .await;
    let here = links[0].as_str().expect("the page's URL");
    let (edit, view) = (links[1].as_str().unwrap(), links[2].as_str().unwrap());
    assert_ne!(
        edit, here,
        "the page is the owner's: its own link is never shared"
    );
    assert_eq!(
        (&links[3], &links[4]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    let room_path = here.split('#').next().unwrap();
    assert!(edit.starts_with(&format!("{room_path}#token=")), "{edit}");
    assert!(view.starts_with(&format!("{room_path}#token=")), "{view}");
    assert_ne!(view, edit);
    page.click("#share-close").await;

    // The room works: a stroke reaches the server's picture.
    draw_red_middle_stroke(&page).await;
    let room = room_path.rsplit('/').next().unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let picture = private_picture(&server, room, edit).await;
        if picture.is_some_and(|p| p.all(&ON_STROKE, Px::Paint(RED_RGB))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stroke never reached the server"
        );
        tokio::time::sleep(POLL).await;
    }
    // And the view link opens it read-only.
    let viewer = Browser::open(&driver, view).await;
    viewer
        .wait_until(
            "!document.getElementById('view-only').hidden",
            "the view link's page says View only",
        )
        .await;
    viewer
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "the viewer sees the stroke")
        .await;
}

#[tokio::test]
async fn a_view_link_page_shows_view_only_offers_no_tools_and_its_drawing_changes_nothing() {
    let server = Server::start();
    let driver = Driver::start();
    let (room, edit_url, view_url) = create_room(&server).await;
    let editor = Browser::open(&driver, &edit_url).await;
    let viewer = Browser::open(&driver, &view_url).await;
    viewer
        .wait_until(
            "!document.getElementById('view-only').hidden \
             && document.getElementById('view-only').textContent === 'View only'",
            "the page shows View only",
        )
        .await;
    for tool in ["#brush", "#tools", ".toolbar > .history", "#clear"] {
        assert!(!is_displayed(&viewer, tool).await, "{tool} is hidden");
        assert!(
            is_displayed(&editor, tool).await,
            "{tool} is shown to the editor"
        );
    }
    assert!(!is_displayed(&editor, "#view-only").await);

    // Drawn on with the pointer, the view-only page draws and sends nothing...
    viewer.draw(&middle_stroke()).await;
    // ...and what the editor draws afterwards reaches it: by then anything it sent would have too.
    editor.pick_color(RED).await;
    editor.set_size(12).await;
    editor.draw(&upper_stroke()).await;
    viewer
        .wait_for_pixels(
            &ON_UPPER_STROKE,
            Px::Paint(RED_RGB),
            "the editor's stroke on the view page",
        )
        .await;
    viewer
        .assert_pixels(&ON_STROKE, Px::Blank, "the view page's own drawing")
        .await;
    editor
        .assert_pixels(
            &ON_STROKE,
            Px::Blank,
            "the viewer's drawing on the editor's page",
        )
        .await;
    let picture = private_picture(&server, &room, &edit_url)
        .await
        .expect("the room has a picture");
    assert!(
        picture.all(&ON_UPPER_STROKE, Px::Paint(RED_RGB)),
        "the server has the editor's stroke"
    );
    assert!(
        picture.all(&ON_STROKE, Px::Blank),
        "the server has nothing of the viewer's"
    );
}

#[tokio::test]
async fn an_old_query_link_opens_the_room_and_moves_its_token_into_the_fragment() {
    let server = Server::start();
    let driver = Driver::start();
    let (room, edit_url, _) = create_room(&server).await;
    let token = edit_url.split("#token=").nth(1).expect("a fragment token");
    let old = server.http_url(&format!("/r/{room}?token={token}"));
    let page = Browser::open(&driver, &old).await;
    page.wait_until(
        "document.getElementById('status').dataset.state === 'connected' \
         && document.body.dataset.synced === 'true'",
        "the old link's page is connected",
    )
    .await;
    let address = page
        .js("return [location.search, location.hash];", vec![])
        .await;
    assert_eq!(address[0], "", "the query no longer holds the token");
    assert_eq!(address[1], format!("#token={token}").as_str());
    assert!(!is_displayed(&page, "#view-only").await, "an editor's page");
}

#[tokio::test]
async fn a_private_rooms_page_without_its_token_says_so_and_stops_trying() {
    let server = Server::start();
    let driver = Driver::start();
    let (room, _, _) = create_room(&server).await;
    let page = Browser::load(&driver, &server.http_url(&format!("/r/{room}")), None).await;
    page.wait_until(
        "document.getElementById('status').dataset.state === 'refused'",
        "the page says the room is refused",
    )
    .await;
    let text = page
        .js(
            "return document.getElementById('status').textContent;",
            vec![],
        )
        .await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("link")),
        "the status tells how to get in: {text}"
    );
    let wrong = Browser::load(
        &driver,
        &server.http_url(&format!("/r/{room}#token=nope")),
        None,
    )
    .await;
    wrong
        .wait_until(
            "document.getElementById('status').dataset.state === 'refused'",
            "a wrong token is refused as well",
        )
        .await;
}
