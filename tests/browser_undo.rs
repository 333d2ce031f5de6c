//! Undo and redo in real browsers: headless Chromium pages of the real frontend, with real pointer
//! and keyboard input, checked by the pixels of each page's board and of the server's picture.

mod common;

use common::browser::*;
use common::Server;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;

/// Presses `keys` together (the first ones held as modifiers), as a person would.
async fn chord(page: &Browser, keys: &[char]) {
    let mut actions = KeyActions::new("keyboard".to_owned());
    for &key in keys {
        actions = actions.then(KeyAction::Down { value: key });
    }
    for &key in keys.iter().rev() {
        actions = actions.then(KeyAction::Up { value: key });
    }
    page.client
        .perform_actions(actions)
        .await
        .expect("the browser performs the key presses");
}

fn ctrl() -> char {
    Key::Control.into()
}

fn shift() -> char {
    Key::Shift.into()
}

/// Waits until the server's picture of `room` shows nothing on the middle stroke.
async fn wait_for_server_blank(server: &Server, room: &str, what: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let blank = match server_picture(server, room).await {
            None => true,
            Some(picture) => ON_STROKE
                .iter()
                .all(|&(x, y)| picture.pixel(x as u32, y as u32)[3] == 0),
        };
        if blank {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited in vain: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn ctrl_z_on_one_page_removes_its_stroke_on_the_other_and_for_a_page_opened_later() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "undo-keys");
    let room = room_name("undo-keys");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    alice
        .wait_until(
            "document.getElementById('undo').disabled",
            "Undo is disabled before Alice draws",
        )
        .await;
    draw_red_middle_stroke(&alice).await;
    bob.wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Bob sees the stroke")
        .await;
    alice
        .wait_until(
            "!document.getElementById('undo').disabled",
            "Undo is enabled once Alice drew",
        )
        .await;

    chord(&alice, &[ctrl(), 'z']).await;
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Blank,
        "Bob's board no longer has the stroke",
    )
    .await;
    alice
        .assert_pixels(&ON_STROKE, Px::Blank, "Alice's own board")
        .await;
    wait_for_server_blank(&server, &room, "the server's picture drops the stroke").await;
    let carol = Browser::open(&driver, &url).await;
    carol
        .assert_shows_no_stroke("a page opened after the undo")
        .await;

    chord(&alice, &[ctrl(), shift(), 'z']).await;
    bob.wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Bob sees the stroke redone")
        .await;
    carol
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Carol sees it redone")
        .await;
    wait_for_server_picture(
        &server,
        &room,
        &[(&ON_STROKE, Px::Paint(RED_RGB))],
        "the server's picture has the stroke again",
    )
    .await;
}

#[tokio::test]
async fn the_undo_button_takes_back_a_clear() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "undo-clear");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&bob).await;
    alice
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Alice sees Bob's stroke")
        .await;

    alice.clear_for_everyone().await;
    bob.wait_for_pixels(&ON_STROKE, Px::Blank, "Bob's board is cleared")
        .await;

    alice.click("#undo").await;
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "Bob's stroke is back after Alice undid her clear",
    )
    .await;
    alice
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "and on Alice's board")
        .await;
}

#[tokio::test]
async fn a_reloaded_page_can_still_undo_what_it_drew_and_another_page_cannot() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "undo-reload");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&alice).await;
    bob.wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Bob sees the stroke")
        .await;

    // Bob has nothing of his own to undo: his Ctrl+Z changes nothing.
    chord(&bob, &[ctrl(), 'z']).await;
    alice.reload().await;
    alice
        .assert_pixels(
            &ON_STROKE,
            Px::Paint(RED_RGB),
            "after Bob's Ctrl+Z and a reload",
        )
        .await;

    chord(&alice, &[ctrl(), 'z']).await;
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Blank,
        "Bob's board after the reloaded page's undo",
    )
    .await;
}

#[tokio::test]
async fn undo_is_disabled_while_the_page_is_offline_and_takes_back_the_offline_stroke_once_back() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 data directory");
    let mut server = Server::start_with(&["--data-dir", data_path]);
    let driver = Driver::start();
    let url = room_url(&server, "undo-offline");
    let room = room_name("undo-offline");
    let alice = Browser::open(&driver, &url).await;

    let addr = server.addr;
    server.terminate();
    assert!(server.wait_for_exit(DEADLINE).is_some(), "the server stops");
    drop(server);
    alice
        .wait_until(
            "document.getElementById('status').dataset.state === 'reconnecting'",
            "the page knows it is disconnected",
        )
        .await;

    // Drawn offline: shown and kept to send, but not undoable until the page is back.
    draw_red_middle_stroke(&alice).await;
    alice
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "the offline stroke shows")
        .await;
    let offered = "!document.getElementById('undo').disabled";
    assert_eq!(
        alice.js(&format!("return {offered};"), vec![]).await,
        serde_json::json!(false),
        "Undo is not offered while offline"
    );
    chord(&alice, &[ctrl(), 'z']).await;
    alice
        .assert_pixels(
            &ON_STROKE,
            Px::Paint(RED_RGB),
            "Ctrl+Z offline leaves the stroke",
        )
        .await;

    let server = start_server_on(addr, data.path());
    alice
        .wait_until(
            offered,
            "Undo is offered again once the page is back in sync",
        )
        .await;
    let want: &[(&[(f64, f64)], Px)] = &[(&ON_STROKE, Px::Paint(RED_RGB))];
    wait_for_server_picture(&server, &room, want, "the offline stroke reached the room").await;
    alice.click("#undo").await;
    wait_for_server_blank(&server, &room, "the room no longer has the offline stroke").await;
    alice
        .wait_for_pixels(&ON_STROKE, Px::Blank, "the page no longer shows it")
        .await;
}
