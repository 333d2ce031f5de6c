//! Names, the member list and live cursors in a real browser (headless Chromium over WebDriver,
//! see `common::browser`): one page names itself through its own UI and moves its pointer over
//! the board; the other page shows the name in its member list and a labelled cursor near the
//! right place, the name always as text.

mod common;

use std::time::Duration;

use common::browser::*;
use common::Server;
use fantoccini::Locator;
use serde_json::{json, Value};

/// Names itself through the page: its own chip in the member list opens the rename pop-over.
async fn name_through_the_ui(page: &Browser, name: &str) {
    page.wait_until(
        "document.querySelector('#members .member-self') !== null",
        "the page lists itself",
    )
    .await;
    page.click("#members .member-self").await;
    page.wait_until(
        "document.getElementById('name-form').matches(':popover-open')",
        "the rename pop-over is open",
    )
    .await;
    let input = page
        .client
        .find(Locator::Css("#name-input"))
        .await
        .expect("the name field");
    input.clear().await.expect("the name field clears");
    input.send_keys(name).await.expect("typing the name");
    page.click("#name-save").await;
    page.wait_until(
        "!document.getElementById('name-form').matches(':popover-open')",
        "the rename pop-over closes once the name is saved",
    )
    .await;
}

/// Where `page` shows the cursor labelled `name`, in logical board coordinates (from the arrow's
/// tip, the overlay element's origin), and the label's text and HTML.
async fn shown_cursor(page: &Browser, name: &str) -> Value {
    page.js(
        "const [name, w, h] = arguments;
         const board = document.getElementById('board').getBoundingClientRect();
         for (const el of document.querySelectorAll('.remote-cursor')) {
           const label = el.querySelector('.remote-cursor-label');
           if (el.hidden || label.textContent !== name) continue;
           const r = el.getBoundingClientRect();
           return { x: (r.left - board.left) / board.width * w,
                    y: (r.top - board.top) / board.height * h,
                    text: label.textContent, html: label.innerHTML,
                    elements: label.children.length };
         }
         return null;",
        vec![json!(name), json!(LOGICAL_WIDTH), json!(LOGICAL_HEIGHT)],
    )
    .await
}

#[tokio::test]
async fn a_name_set_on_one_page_is_listed_and_labels_its_cursor_on_the_other() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "presence");
    let ada = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    let name = "<i>Ada</i>";
    name_through_the_ui(&ada, name).await;
    let listed = format!(
        "[...document.querySelectorAll('#members .member-name')]\
         .some((el) => el.textContent === {name:?} && el.children.length === 0)"
    );
    bob.wait_until(&listed, "Bob's member list shows Ada's name as text")
        .await;
    ada.wait_until(&listed, "Ada's own chip shows her name")
        .await;

    ada.hover(&line((600.0, 300.0), (800.0, 400.0), 6)).await;
    let has_cursor = format!(
        "[...document.querySelectorAll('.remote-cursor-label')]\
         .some((el) => el.textContent === {name:?})"
    );
    bob.wait_until(&has_cursor, "Bob's page shows Ada's cursor")
        .await;
    // The trailing update brings the last position: wait until it is shown there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cursor = loop {
        let cursor = shown_cursor(&bob, name).await;
        let near = |got: &Value, want: f64| got.as_f64().is_some_and(|v| (v - want).abs() < 12.0);
        if near(&cursor["x"], 800.0) && near(&cursor["y"], 400.0) {
            break cursor;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Ada's cursor is not near (800, 400) on Bob's page: {cursor}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cursor["text"], name);
    assert_eq!(
        cursor["elements"], 0,
        "the label holds no element: {cursor}"
    );
    assert_eq!(cursor["html"], "&lt;i&gt;Ada&lt;/i&gt;");
    // Ada does not see a cursor of her own.
    assert_eq!(
        ada.js(
            "return document.querySelectorAll('.remote-cursor').length;",
            vec![]
        )
        .await,
        json!(0)
    );
}

#[tokio::test]
async fn a_cursor_goes_when_it_stops_moving_and_when_its_owner_leaves() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "cursor-goes");
    let bob = Browser::open(&driver, &url).await;
    let shown = "document.querySelectorAll('.remote-cursor:not([hidden])').length";

    // Ada points, then keeps still: her cursor hides after a few seconds without movement.
    let ada = Browser::open(&driver, &url).await;
    ada.hover(&line((500.0, 300.0), (700.0, 300.0), 4)).await;
    bob.wait_until(&format!("{shown} === 1"), "Bob sees Ada's cursor")
        .await;
    bob.wait_until(
        &format!("{shown} === 0"),
        "Ada's cursor hides once it has not moved for a while",
    )
    .await;

    // Carol points and leaves: her cursor goes with her, without waiting for it to go idle.
    let carol = Browser::open(&driver, &url).await;
    carol.hover(&line((900.0, 500.0), (1000.0, 500.0), 4)).await;
    bob.wait_until(&format!("{shown} === 1"), "Bob sees Carol's cursor")
        .await;
    let members = "document.querySelectorAll('#members .member').length";
    bob.wait_until(&format!("{members} === 3"), "Bob's list has Carol")
        .await;
    drop(carol);
    // The list and the cursors change in one handler: when the list no longer has Carol, her
    // cursor must be gone too (not merely hidden later for want of movement).
    bob.wait_until(&format!("{members} === 2"), "Bob's list drops Carol")
        .await;
    assert_eq!(
        bob.js(&format!("return {shown};"), vec![]).await,
        json!(0),
        "Carol's cursor outlived her leaving"
    );
}

/// The names in `page`'s member list, its own first.
async fn listed_names(page: &Browser) -> Vec<String> {
    let names = page
        .js(
            "return [...document.querySelectorAll('#members .member-name')].map((el) => el.textContent);",
            vec![],
        )
        .await;
    serde_json::from_value(names).expect("a list of names")
}

/// Waits until `page` lists exactly `names` (in any order).
async fn wait_for_list(page: &Browser, names: &[&str], what: &str) {
    let mut wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    wanted.sort();
    let condition = format!(
        "JSON.stringify([...document.querySelectorAll('#members .member-name')]\
         .map((el) => el.textContent).sort()) === {:?}",
        serde_json::to_string(&wanted).expect("JSON")
    );
    page.wait_until(&condition, what).await;
}

async fn own_name(page: &Browser) -> String {
    page.wait_until(
        "document.querySelector('#members .member-self .member-name') !== null",
        "the page lists itself",
    )
    .await;
    page.js(
        "return document.querySelector('#members .member-self .member-name').textContent;",
        vec![],
    )
    .await
    .as_str()
    .expect("a name")
    .to_owned()
}

#[tokio::test]
async fn the_member_list_and_cursor_labels_follow_joins_renames_and_leaves() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "comings-and-goings");
    let bob = Browser::open(&driver, &url).await;
    let ada = Browser::open(&driver, &url).await;
    let carol = Browser::open(&driver, &url).await;
    let (bob_name, ada_name, carol_name) = (
        own_name(&bob).await,
        own_name(&ada).await,
        own_name(&carol).await,
    );
    wait_for_list(
        &bob,
        &[&bob_name, &ada_name, &carol_name],
        "Bob lists all three",
    )
    .await;

    // A rename reaches the list and the label of the renamed member's cursor.
    ada.hover(&line((400.0, 300.0), (500.0, 300.0), 4)).await;
    let label_is = |name: &str| {
        format!(
            "[...document.querySelectorAll('.remote-cursor:not([hidden]) .remote-cursor-label')]\
             .map((el) => el.textContent).join('|') === {name:?}"
        )
    };
    bob.wait_until(
        &label_is(&ada_name),
        "Ada's cursor carries her default name",
    )
    .await;
    name_through_the_ui(&ada, "Ada Lovelace").await;
    wait_for_list(
        &bob,
        &[&bob_name, "Ada Lovelace", &carol_name],
        "Bob's list renames Ada",
    )
    .await;
    ada.hover(&line((500.0, 300.0), (600.0, 350.0), 4)).await;
    bob.wait_until(
        &label_is("Ada Lovelace"),
        "Ada's cursor carries her new name",
    )
    .await;

    // A leave and a join: the list follows both.
    drop(carol);
    wait_for_list(&bob, &[&bob_name, "Ada Lovelace"], "Bob's list drops Carol").await;
    let dan = Browser::open(&driver, &url).await;
    let dan_name = own_name(&dan).await;
    wait_for_list(
        &bob,
        &[&bob_name, "Ada Lovelace", &dan_name],
        "Bob's list adds Dan",
    )
    .await;
    wait_for_list(
        &dan,
        &[&dan_name, "Ada Lovelace", &bob_name],
        "Dan lists everyone",
    )
    .await;
    assert_eq!(
        listed_names(&bob).await[0],
        bob_name,
        "one's own chip comes first"
    );
}
