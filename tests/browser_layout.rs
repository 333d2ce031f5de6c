//! The page as a new user meets it, in a real browser (headless Chromium over WebDriver, as in
//! tests/browser.rs): a first visit opens no dialog and the first stroke draws; on a phone held
//! upright (390x844) the board covers at least half the screen, the tool row is one row at the
//! bottom, nothing lies over the board, and colours and size open in a pop-over; on its side
//! (844x390) the page still leaves the board most of the screen; on a 1280x800 desktop the tools
//! are one row and the board covers at least 60% of the window; and the page does not move
//! after it first appears (its cumulative layout shift, as Chromium measures it).

mod common;

use common::browser::*;
use common::Server;
use serde_json::{json, Value};

/// Share of the viewport the board covers (the visible part of its rectangle).
async fn board_share(page: &Browser) -> f64 {
    page.js(
        "const r = document.getElementById('board').getBoundingClientRect();
         const w = Math.max(0, Math.min(r.right, innerWidth) - Math.max(r.left, 0));
         const h = Math.max(0, Math.min(r.bottom, innerHeight) - Math.max(r.top, 0));
         return (w * h) / (innerWidth * innerHeight);",
        vec![],
    )
    .await
    .as_f64()
    .expect("a share")
}

async fn viewport(page: &Browser) -> (f64, f64) {
    let v = page.js("return [innerWidth, innerHeight];", vec![]).await;
    let v: Vec<f64> = serde_json::from_value(v).expect("the viewport");
    (v[0], v[1])
}

/// Elements other than the board that a grid of points over the board's rectangle hits, as
/// "tag#id.class" (empty: nothing lies over the board).
async fn elements_over_the_board(page: &Browser) -> Vec<String> {
    let hits = page
        .js(
            "const board = document.getElementById('board');
             const r = board.getBoundingClientRect();
             const found = new Set();
             for (let i = 0; i <= 10; i++) {
               for (let j = 0; j <= 10; j++) {
                 // A pixel inside the edges: the board's rectangle may start mid-pixel.
                 const x = r.left + 1 + ((r.width - 2) * i) / 10;
                 const y = r.top + 1 + ((r.height - 2) * j) / 10;
                 const el = document.elementFromPoint(x, y);
                 if (el !== board) found.add(el ? `${el.tagName}#${el.id}.${el.className}` : 'nothing');
               }
             }
             return [...found];",
            vec![],
        )
        .await;
    serde_json::from_value(hits).expect("a list")
}

/// The distinct tops of the tool row's shown controls (one value: one row).
async fn tool_row_tops(page: &Browser) -> Vec<f64> {
    let tops = page
        .js(
            "const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
             const bar = document.querySelector('.toolbar');
             const tops = new Set();
             for (const el of bar.querySelectorAll('button, input, output')) {
               if (!shown(el) || el.closest('.label')) continue;
               const r = el.getBoundingClientRect();
               if (r.width < 2 || r.height < 2) continue; // visually hidden words
               tops.add(Math.round(r.top + r.height / 2));
             }
             return [...tops].sort((a, b) => a - b);",
            vec![],
        )
        .await;
    serde_json::from_value(tops).expect("a list of numbers")
}

/// Whether every value lies within `slack` pixels of the first (controls of different heights
/// in one row have centres a pixel or two apart).
fn one_row(centres: &[f64], slack: f64) -> bool {
    centres.iter().all(|c| (c - centres[0]).abs() <= slack)
}

#[tokio::test]
async fn a_first_visit_opens_no_dialog_and_the_first_stroke_draws_at_once() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "first-visit");
    // A fresh profile: nothing in localStorage, as on a first visit.
    let page = Browser::open(&driver, &url).await;
    let state = page
        .js(
            "return { modal: document.querySelector(':modal')?.id ?? null,
                      open: [...document.querySelectorAll('dialog[open], :popover-open')].map((el) => el.id),
                      focus: document.activeElement === document.body };",
            vec![],
        )
        .await;
    assert_eq!(
        state,
        json!({ "modal": null, "open": [], "focus": true }),
        "a first visit shows nothing over the board and leaves the keyboard alone"
    );
    // Who you are is on the page, with the server's default name, without being asked.
    page.wait_until(
        "/^Guest \\d+$/.test(document.querySelector('#members .member-self .member-name')?.textContent ?? '')",
        "one's own chip shows the default name",
    )
    .await;

    draw_red_middle_stroke(&page).await;
    page.wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "the first stroke shows")
        .await;
    let want: &[(&[(f64, f64)], Px)] = &[(&ON_STROKE, Px::Paint(RED_RGB))];
    wait_for_server_picture(
        &server,
        &room_name("first-visit"),
        want,
        "the first stroke reaches the room",
    )
    .await;
}

#[tokio::test]
async fn renaming_from_ones_own_chip_is_a_pop_over_the_board_still_draws_through() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "rename");
    let page = Browser::open(&driver, &url).await;
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
    assert_eq!(
        page.js(
            "return document.querySelector(':modal')?.id ?? null;",
            vec![]
        )
        .await,
        Value::Null,
        "the rename prompt is not modal"
    );

    // A stroke on the board while it is open draws, and closes it.
    draw_red_middle_stroke(&page).await;
    page.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "the board drew through the open prompt",
    )
    .await;
    page.wait_until(
        "!document.getElementById('name-form').matches(':popover-open')",
        "a click elsewhere closes the prompt",
    )
    .await;
}

#[tokio::test]
async fn on_a_phone_held_upright_the_board_covers_half_the_screen_under_nothing_with_one_tool_row_at_the_bottom(
) {
    let server = Server::start();
    let driver = Driver::start();
    let phone = Browser::open_phone(&driver, &room_url(&server, "phone-layout")).await;
    assert_eq!(
        viewport(&phone).await,
        (390.0, 844.0),
        "the phone emulation"
    );

    let share = board_share(&phone).await;
    assert!(
        share >= 0.5,
        "the board covers {:.0}% of the screen",
        share * 100.0
    );
    let over = elements_over_the_board(&phone).await;
    assert!(over.is_empty(), "over the board: {over:?}");

    let tops = tool_row_tops(&phone).await;
    assert!(one_row(&tops, 2.0), "the tool row's controls at {tops:?}");
    let bar = phone
        .js(
            "const r = document.querySelector('.toolbar').getBoundingClientRect();
             const b = document.getElementById('board').getBoundingClientRect();
             return [r.top, r.bottom, b.bottom];",
            vec![],
        )
        .await;
    let bar: Vec<f64> = serde_json::from_value(bar).expect("numbers");
    assert!(
        (bar[1] - 844.0).abs() < 1.0 && bar[2] <= bar[0] + 0.5,
        "the tool row is at the bottom, under the board: [bar top, bar bottom, board bottom] = {bar:?}"
    );
}

#[tokio::test]
async fn on_a_phone_colours_and_size_open_in_a_pop_over_that_sets_the_brush() {
    let server = Server::start();
    let driver = Driver::start();
    let phone = Browser::open_phone(&driver, &room_url(&server, "phone-brush")).await;
    let palette_shown = "document.getElementById('palette').getClientRects().length > 0";
    assert_eq!(
        phone.js(&format!("return {palette_shown};"), vec![]).await,
        json!(false),
        "the palette waits in its pop-over"
    );
    // Clicked from the page: chromedriver's emulated tap sometimes delivers no click.
    phone
        .js("document.getElementById('brush-toggle').click();", vec![])
        .await;
    phone
        .wait_until(
            &format!(
                "document.getElementById('brush').matches(':popover-open') && {palette_shown}"
            ),
            "the brush pop-over shows the palette",
        )
        .await;
    phone
        .js(
            "document.querySelector(`#palette .swatch[data-color='${arguments[0]}']`).click();",
            vec![json!(RED)],
        )
        .await;
    phone.set_size(20).await;
    phone
        .wait_until(
            &format!(
                "document.getElementById('color').value === '{RED}' \
                 && getComputedStyle(document.getElementById('brush-toggle-dot')).backgroundColor === 'rgb(229, 57, 53)'"
            ),
            "the brush is red and the tool row's button shows it",
        )
        .await;
}

#[tokio::test]
async fn on_a_phone_on_its_side_the_board_keeps_most_of_the_screen_under_nothing() {
    let server = Server::start();
    let driver = Driver::start();
    let phone = Browser::open_phone_landscape(&driver, &room_url(&server, "phone-side")).await;
    assert_eq!(
        viewport(&phone).await,
        (844.0, 390.0),
        "the phone emulation"
    );
    let share = board_share(&phone).await;
    assert!(
        share >= 0.5,
        "the board covers {:.0}% of the screen",
        share * 100.0
    );
    let over = elements_over_the_board(&phone).await;
    assert!(over.is_empty(), "over the board: {over:?}");
    let zoom = phone
        .js("return window.__livecanvas.board.zoom;", vec![])
        .await;
    assert_eq!(zoom, json!(1), "the whole board is in view");
}

#[tokio::test]
async fn at_1280x800_the_tools_are_one_row_and_the_board_covers_60_percent() {
    let server = Server::start();
    let driver = Driver::start();
    let page = Browser::open(&driver, &room_url(&server, "desktop-layout")).await;
    page.set_viewport(1280, 800).await;
    let tops = tool_row_tops(&page).await;
    assert!(one_row(&tops, 2.0), "the tool row's controls at {tops:?}");
    let share = board_share(&page).await;
    assert!(
        share >= 0.6,
        "the board covers {:.0}% of the window",
        share * 100.0
    );
    let over = elements_over_the_board(&page).await;
    assert!(over.is_empty(), "over the board: {over:?}");
}

/// The page's cumulative layout shift since it loaded, as Chromium reports it.
async fn layout_shift(page: &Browser) -> f64 {
    page.client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             let total = 0;
             new PerformanceObserver((list) => {
               for (const e of list.getEntries()) if (!e.hadRecentInput) total += e.value;
             }).observe({ type: 'layout-shift', buffered: true });
             requestAnimationFrame(() => requestAnimationFrame(() => done(total)));",
            vec![],
        )
        .await
        .expect("the layout shift")
        .as_f64()
        .expect("a number")
}

#[tokio::test]
async fn the_page_does_not_move_once_shown_on_a_desktop_or_a_phone() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "no-shift");
    let desk = Browser::open(&driver, &url).await;
    let phone = Browser::open_phone(&driver, &url).await;
    for (page, what) in [(&desk, "desktop"), (&phone, "phone")] {
        let shift = layout_shift(page).await;
        assert!(shift < 0.01, "the {what} page's layout shift: {shift}");
    }
}
