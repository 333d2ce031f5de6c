//! Moderation in real browsers (headless Chromium over WebDriver, see `common::browser`): another
//! page restores a clear with the "Restore" it is offered, for everyone; the owner's page locks
//! the room and a member's page says it is locked, offers no drawing tools and changes nothing
//! when drawn on, until the owner unlocks it; a member's page whose link the owner replaced says
//! so and stops, while the owner's share dialog offers the new link; on a phone the owner's
//! button is in the room menu and a member's phone shows the lock.

mod common;

use common::browser::*;
use common::Server;
use serde_json::Value;

/// Links of a room made with `POST /api/rooms`: (owner URL, edit URL), absolute.
async fn create_room(server: &Server) -> (String, String) {
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
    let url = |name: &str| server.http_url(body[name].as_str().expect(name));
    (url("ownerUrl"), url("editUrl"))
}

/// Points on a line across the upper part of the board, which the locked member tries to draw.
const ON_UPPER_LINE: [(f64, f64); 3] = [(600.0, 200.0), (800.0, 200.0), (1000.0, 200.0)];

#[tokio::test]
async fn another_page_restores_a_clear_for_everyone_with_the_restore_it_is_offered() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "restore");
    let drawer = Browser::open(&driver, &url).await;
    let vandal = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&drawer).await;
    vandal
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "the vandal sees the stroke")
        .await;
    vandal.clear_for_everyone().await;
    drawer
        .wait_for_pixels(&ON_STROKE, Px::Blank, "the drawer sees the clear")
        .await;
    vandal
        .wait_until(
            "!document.querySelector('.restore-offer')",
            "the one who cleared is offered nothing",
        )
        .await;
    drawer
        .wait_until(
            "Boolean(document.querySelector('.restore-offer .restore-button'))",
            "the drawer is offered Restore",
        )
        .await;
    drawer.click(".restore-offer .restore-button").await;
    drawer
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "the drawer has it back")
        .await;
    vandal
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "so does the vandal")
        .await;
    let room = room_name("restore");
    wait_for_server_picture(
        &server,
        &room,
        &[(&ON_STROKE, Px::Paint(RED_RGB))],
        "and the server",
    )
    .await;
    let later = Browser::open(&driver, &url).await;
    later
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "a page opened later")
        .await;
}

#[tokio::test]
async fn the_owners_page_locks_the_room_and_a_members_page_shows_it_is_read_only() {
    let server = Server::start();
    let driver = Driver::start();
    let (owner_url, edit_url) = create_room(&server).await;
    let owner = Browser::open(&driver, &owner_url).await;
    let member = Browser::open(&driver, &edit_url).await;
    member
        .wait_until(
            "document.getElementById('owner-tools') === null \
             || document.getElementById('owner-tools').hidden",
            "a member's page offers no owner's tools",
        )
        .await;
    owner
        .wait_until(
            "!document.getElementById('owner-tools').hidden",
            "the owner's page offers its tools",
        )
        .await;
    owner.click("#owner-tools").await;
    owner
        .wait_until(
            "document.getElementById('owner-dialog').open",
            "the owner's dialog is open",
        )
        .await;
    owner.click("#owner-lock").await;
    member
        .wait_until(
            "!document.getElementById('locked-badge').hidden \
             && document.body.dataset.readonly === 'true' \
             && getComputedStyle(document.getElementById('clear')).display === 'none'",
            "the member's page says the room is locked and hides its drawing tools",
        )
        .await;
    member.draw(&line((400.0, 200.0), (1200.0, 200.0), 8)).await;
    owner
        .wait_until(
            "document.getElementById('owner-lock').getAttribute('aria-pressed') === 'true'",
            "the owner's page shows the lock",
        )
        .await;
    owner
        .click("#owner-dialog .dialog-actions:last-child button")
        .await;
    draw_red_middle_stroke(&owner).await;
    member
        .wait_for_pixels(
            &ON_STROKE,
            Px::Paint(RED_RGB),
            "the owner still draws for everyone",
        )
        .await;
    for page in [&owner, &member] {
        page.assert_pixels(
            &ON_UPPER_LINE,
            Px::Blank,
            "the member's drawing was never made",
        )
        .await;
    }

    owner.click("#owner-tools").await;
    owner.click("#owner-lock").await;
    member
        .wait_until(
            "document.getElementById('locked-badge').hidden \
             && document.body.dataset.readonly === 'false'",
            "the member's page is unlocked",
        )
        .await;
}

#[tokio::test]
async fn a_members_page_whose_link_the_owner_replaced_says_so_and_stops() {
    let server = Server::start();
    let driver = Driver::start();
    let (owner_url, edit_url) = create_room(&server).await;
    let owner = Browser::open(&driver, &owner_url).await;
    let member = Browser::open(&driver, &edit_url).await;
    owner
        .wait_until(
            "document.getElementById('people').dataset.count === '2'",
            "the owner sees the member",
        )
        .await;
    owner.click("#owner-tools").await;
    owner.click("#owner-links").await;
    member
        .wait_until(
            "document.body.dataset.stopped === '4001' \
             && document.getElementById('status').dataset.state === 'stopped' \
             && [...document.querySelectorAll('.toast')].some((t) => t.textContent.includes('withdrew'))",
            "the member's page says its link was withdrawn and stops",
        )
        .await;
    owner
        .wait_until(
            "document.getElementById('people').dataset.count === '1'",
            "the owner is alone",
        )
        .await;
    owner
        .click("#owner-dialog .dialog-actions:last-child button")
        .await;
    owner.click("#share").await;
    let shared = owner
        .js(
            "return document.getElementById('share-edit-url').value;",
            vec![],
        )
        .await;
    let shared = shared.as_str().expect("the edit link shown");
    assert!(shared.contains("#token="), "{shared}");
    assert_ne!(
        shared, edit_url,
        "the share dialog offers the new edit link"
    );
}

#[tokio::test]
async fn on_a_phone_the_owner_locks_the_room_from_the_room_menu_and_a_members_phone_shows_the_lock()
{
    let server = Server::start();
    let driver = Driver::start();
    let (owner_url, edit_url) = create_room(&server).await;
    let owner = Browser::open_phone(&driver, &owner_url).await;
    let member = Browser::open_phone(&driver, &edit_url).await;
    let shown = |id: &str| format!("document.getElementById('{id}').getClientRects().length > 0");
    owner
        .wait_until(
            "!document.getElementById('owner-tools').hidden",
            "the owner's page knows it is the owner's",
        )
        .await;
    assert_eq!(
        owner
            .js(&format!("return {};", shown("owner-tools")), vec![])
            .await,
        Value::Bool(false),
        "the owner's button waits in the room menu (⋯) with the room's other tools"
    );
    // Clicked from the page: chromedriver's emulated tap sometimes delivers no click.
    owner
        .js(
            "document.getElementById('room-tools-toggle').click();",
            vec![],
        )
        .await;
    owner
        .wait_until(
            &shown("owner-tools"),
            "the room menu shows the owner's button",
        )
        .await;
    owner
        .js("document.getElementById('owner-tools').click();", vec![])
        .await;
    owner
        .wait_until(
            "document.getElementById('owner-dialog').open",
            "the owner's dialog is open",
        )
        .await;
    owner
        .js("document.getElementById('owner-lock').click();", vec![])
        .await;
    member
        .wait_until(
            &format!(
                "{} && !{} && !{}",
                shown("locked-badge"),
                shown("tools-toggle"),
                shown("clear")
            ),
            "the member's phone shows the lock and offers no drawing tools",
        )
        .await;
}
