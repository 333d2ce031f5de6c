//! Shapes and texts in real browsers: headless Chromium pages of the real frontend, drawing with
//! the rectangle, ellipse, line, arrow and text tools through real pointer and keyboard input,
//! checked by each page's pixels and against the server's own rendering (`canvas.png`).

mod common;

use common::browser::*;
use common::{Image, Server};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::{json, Value};

const GREEN: &str = "#43a047";
const GREEN_RGB: [u8; 3] = [0x43, 0xa0, 0x47];
/// Where the tests draw: a filled rectangle, a text, and the other shapes.
const RECT: [(f64, f64); 2] = [(300.0, 250.0), (700.0, 550.0)];
const TEXT_AT: (f64, f64) = (850.0, 300.0);
const TEXT: &str = "Hello, board";

/// Picks the tool whose keyboard shortcut is `key`, and checks the toolbar shows it.
async fn tool(page: &Browser, key: char, tool: &str) {
    page.press(key).await;
    page.wait_until(
        &format!("document.body.dataset.tool === '{tool}'"),
        &format!("the {tool} tool is picked (shortcut {key})"),
    )
    .await;
}

/// Drags a filled green rectangle over `RECT`, with the rectangle tool and the fill toggle.
async fn draw_filled_rectangle(page: &Browser) {
    page.pick_color(GREEN).await;
    page.set_size(6).await;
    tool(page, 'r', "rect").await;
    page.click("#fill").await;
    page.wait_until(
        "document.getElementById('fill').getAttribute('aria-pressed') === 'true'",
        "fill is on",
    )
    .await;
    let [from, to] = RECT;
    page.draw(&line(from, to, 6)).await;
}

/// Taps with the text tool at `TEXT_AT`, types `TEXT` into the box and presses Enter.
async fn write_text(page: &Browser) {
    tool(page, 't', "text").await;
    page.draw(&[TEXT_AT]).await;
    page.wait_until(
        "document.activeElement && document.activeElement.classList.contains('text-box')",
        "the text box has the focus",
    )
    .await;
    let input = page
        .client
        .find(Locator::Css(".text-box"))
        .await
        .expect("the text box");
    input.send_keys(TEXT).await.expect("typing the text");
    page.press(Key::Enter.into()).await;
    page.wait_until(
        "!document.querySelector('.text-box')",
        "Enter closed the text box",
    )
    .await;
}

/// How many pixels of the page's whole-board picture (its master canvas, the room's logical
/// size) are painted within the box `[left, top, right, bottom]`, and how many of them are `rgb`.
async fn painted_in(page: &Browser, area: [f64; 4], rgb: [u8; 3]) -> (u64, u64) {
    let counts = page
        .js(
            "const [[l, t, r, b], rgb] = arguments;
             const board = window.__livecanvas.board;
             board.flush();
             const data = board.master.getContext('2d').getImageData(l, t, r - l, b - t).data;
             let painted = 0, matching = 0;
             for (let i = 0; i < data.length; i += 4) {
               if (data[i + 3] < 128) continue;
               painted++;
               if (Math.abs(data[i] - rgb[0]) <= 8 && Math.abs(data[i + 1] - rgb[1]) <= 8
                   && Math.abs(data[i + 2] - rgb[2]) <= 8) matching++;
             }
             return [painted, matching];",
            vec![json!(area), json!(rgb)],
        )
        .await;
    serde_json::from_value(counts).expect("two counts")
}

/// Waits until `page` shows the filled rectangle (its inside all green) and the text (some of
/// its pixels red) in their places.
async fn wait_for_rectangle_and_text(page: &Browser, who: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    let inside = [
        RECT[0].0 + 10.0,
        RECT[0].1 + 10.0,
        RECT[1].0 - 10.0,
        RECT[1].1 - 10.0,
    ];
    let area = (inside[2] - inside[0]) * (inside[3] - inside[1]);
    let text_box = [TEXT_AT.0, TEXT_AT.1, TEXT_AT.0 + 400.0, TEXT_AT.1 + 40.0];
    loop {
        let (_, green) = painted_in(page, inside, GREEN_RGB).await;
        let (_, red) = painted_in(page, text_box, RED_RGB).await;
        if green as f64 == area && red > 100 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who}: waited {DEADLINE:?} in vain for the rectangle ({green} of {area} green) and \
             the text ({red} red pixels)"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_rectangle_and_a_text_drawn_on_one_page_appear_on_the_other_and_for_a_late_joiner() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "figures");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;

    draw_filled_rectangle(&alice).await;
    alice.pick_color(RED).await;
    alice.set_size(6).await; // 24 px text
    write_text(&alice).await;

    wait_for_rectangle_and_text(&alice, "Alice").await;
    wait_for_rectangle_and_text(&bob, "Bob").await;
    let carol = Browser::open(&driver, &url).await;
    wait_for_rectangle_and_text(&carol, "Carol, who came later").await;
    // Nothing else was drawn: above the rectangle stays blank.
    let (stray, _) = painted_in(&carol, [300.0, 100.0, 700.0, 200.0], GREEN_RGB).await;
    assert_eq!(stray, 0);
}

/// Pixels painted (alpha at least half) in either picture, and how many of those differ by more
/// than `tolerance` in some channel.
fn compare(page: &Image, server: &Image, tolerance: u8) -> (usize, usize) {
    assert_eq!((page.width, page.height), (server.width, server.height));
    let mut painted = 0;
    let mut differing = 0;
    for (a, b) in page.rgba.chunks(4).zip(server.rgba.chunks(4)) {
        if a[3] < 128 && b[3] < 128 {
            continue;
        }
        painted += 1;
        if a.iter().zip(b).any(|(x, y)| x.abs_diff(*y) > tolerance) {
            differing += 1;
        }
    }
    (painted, differing)
}

#[tokio::test]
async fn the_pages_rendering_of_shapes_and_text_matches_the_servers() {
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("match");
    let url = room_url(&server, "match");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;

    draw_filled_rectangle(&alice).await;
    alice.pick_color(RED).await;
    alice.set_size(4).await;
    tool(&alice, 'o', "ellipse").await;
    alice.click("#fill").await; // off: an outline
    alice.draw(&line((900.0, 450.0), (1300.0, 700.0), 5)).await;
    tool(&alice, 'l', "line").await;
    alice.draw(&line((100.0, 800.0), (700.0, 760.0), 5)).await;
    tool(&alice, 'a', "arrow").await;
    alice.draw(&line((800.0, 820.0), (1400.0, 800.0), 5)).await;
    alice.set_size(8).await; // 32 px text
    write_text(&alice).await;

    // The server has all five once its picture shows the last one (the text).
    let deadline = std::time::Instant::now() + DEADLINE;
    let server_image = loop {
        if let Some(image) = server_picture(&server, &room).await {
            let text_pixels = (850..1250)
                .flat_map(|x| (300..345).map(move |y| (x, y)))
                .filter(|&(x, y)| image.pixel(x, y)[3] > 128)
                .count();
            if text_pixels > 100 {
                break image;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never showed the text"
        );
        tokio::time::sleep(POLL).await;
    };
    for (page, who) in [
        (&alice, "Alice, who drew them"),
        (&bob, "Bob, who got them"),
    ] {
        // The shipped font, not a system one that happens to look alike.
        page.wait_until(
            "[...document.fonts].some((f) => f.family.includes('LiveCanvasSans') && f.status === 'loaded')",
            &format!("{who} loaded the shipped font with @font-face"),
        )
        .await;
        page.wait_until(
            "window.__livecanvas.board.logLength >= 5",
            &format!("{who} has the five figures"),
        )
        .await;
        let data_url = page
            .js("return window.__livecanvas.board.toDataURL();", vec![])
            .await;
        let page_image = Image::from_data_url(data_url.as_str().expect("a data URL"));
        let (painted, differing) = compare(&page_image, &server_image, 64);
        // Anti-aliased edges and glyph rasterisation differ a little between Skia and tiny-skia:
        // at most 0.5 % of the painted pixels (measured: 96 of 134,939).
        assert!(painted > 100_000, "{who}: only {painted} pixels painted");
        assert!(
            differing * 200 <= painted,
            "{who}: {differing} of {painted} painted pixels differ from canvas.png by more than 64"
        );
        println!("{who}: {differing} of {painted} painted pixels differ by more than 64");
    }
}

#[tokio::test]
async fn escape_cancels_a_text_and_nothing_is_sent() {
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("escape");
    let url = room_url(&server, "escape");
    let alice = Browser::open(&driver, &url).await;
    tool(&alice, 't', "text").await;
    alice.draw(&[TEXT_AT]).await;
    alice
        .wait_until(
            "document.activeElement && document.activeElement.classList.contains('text-box')",
            "the text box has the focus",
        )
        .await;
    let input = alice
        .client
        .find(Locator::Css(".text-box"))
        .await
        .expect("the text box");
    input.send_keys("never").await.expect("typing");
    alice.press(Key::Escape.into()).await;
    alice
        .wait_until(
            "!document.querySelector('.text-box')",
            "Escape closed the box",
        )
        .await;
    // A rectangle after it: once the server has that, it would have had the text too.
    tool(&alice, 'r', "rect").await;
    alice.draw(&line(RECT[0], RECT[1], 4)).await;
    let image = wait_for_server_picture(
        &server,
        &room,
        &[(&[(RECT[0].0, 400.0)], Px::Paint(RGB_OF_DEFAULT))],
        "the server has the rectangle",
    )
    .await;
    let text_pixels = (850..1250)
        .flat_map(|x| (300..345).map(move |y| (x, y)))
        .filter(|&(x, y)| image.pixel(x, y)[3] > 0)
        .count();
    assert_eq!(text_pixels, 0, "the cancelled text reached the server");
    let log: Value = alice
        .js("return window.__livecanvas.board.logLength;", vec![])
        .await;
    assert_eq!(log, json!(1), "the page kept only the rectangle");
}

/// The page's default colour (the colour input's initial value).
const RGB_OF_DEFAULT: [u8; 3] = [0x1e, 0x88, 0xe5];

#[tokio::test]
async fn shift_makes_a_dragged_rectangle_a_square() {
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("square");
    let url = room_url(&server, "square");
    let alice = Browser::open(&driver, &url).await;
    tool(&alice, 'r', "rect").await;
    let rect = alice.board_rect().await;
    let at = |(x, y): (f64, f64)| fantoccini::actions::PointerAction::MoveTo {
        duration: Some(std::time::Duration::from_millis(20)),
        x: (rect[0] + x / LOGICAL_WIDTH * rect[2]).round(),
        y: (rect[1] + y / LOGICAL_HEIGHT * rect[3]).round(),
    };
    let shift: char = Key::Shift.into();
    let keys = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: shift })
        // Held through the mouse's four steps (one action of each source a tick).
        .then(KeyAction::Pause {
            duration: std::time::Duration::ZERO,
        })
        .then(KeyAction::Pause {
            duration: std::time::Duration::ZERO,
        })
        .then(KeyAction::Pause {
            duration: std::time::Duration::ZERO,
        })
        .then(KeyAction::Up { value: shift });
    let mouse = fantoccini::actions::MouseActions::new("mouse".to_owned())
        .then(at((400.0, 300.0)))
        .then(fantoccini::actions::PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        })
        .then(at((700.0, 400.0)))
        .then(fantoccini::actions::PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    alice
        .client
        .perform_actions(fantoccini::actions::Actions::from(keys).and(mouse))
        .await
        .expect("the browser drags with Shift held");
    // Dragged 300 x 100 with Shift: a 300 x 300 square.
    wait_for_server_picture(
        &server,
        &room,
        &[(
            &[
                (550.0, 300.0),
                (550.0, 600.0),
                (400.0, 500.0),
                (700.0, 550.0),
            ],
            Px::Paint(RGB_OF_DEFAULT),
        )],
        "the server has a 300 px square",
    )
    .await;
}

/// Client (viewport CSS pixel) coordinates of a logical point, as the page maps it now.
async fn to_screen(page: &Browser, (x, y): (f64, f64)) -> (f64, f64) {
    let p = page
        .js(
            "const p = window.__livecanvas.board.toScreen(arguments[0], arguments[1]);
             return [p.x, p.y];",
            vec![json!(x), json!(y)],
        )
        .await;
    serde_json::from_value(p).expect("a point")
}

#[tokio::test]
async fn on_a_zoomed_phone_a_finger_drags_a_rectangle_to_its_logical_place() {
    use fantoccini::actions::{PointerAction, TouchActions, MOUSE_BUTTON_LEFT};
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("phone-rect");
    let url = server.http_url(&format!("/r/{room}"));
    let phone = Browser::open_phone(&driver, &url).await;
    // Zoomed 3x around the board's centre (pinching is browser_zoom's business).
    phone
        .js(
            "const b = window.__livecanvas.board; const p = b.toScreen(800, 450);
             b.zoomAt(3, p.x, p.y);",
            vec![],
        )
        .await;
    phone
        .wait_until(
            "window.__livecanvas.board.zoom === 3",
            "the phone is zoomed 3x",
        )
        .await;
    tool(&phone, 'r', "rect").await;
    let mut finger = TouchActions::new("finger".to_owned());
    let corners = [(760.0, 430.0), (800.0, 450.0), (840.0, 470.0)];
    for (i, &point) in corners.iter().enumerate() {
        let (x, y) = to_screen(&phone, point).await;
        finger = finger.then(PointerAction::MoveTo {
            duration: Some(std::time::Duration::from_millis(30)),
            x: x.round(),
            y: y.round(),
        });
        if i == 0 {
            finger = finger.then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            });
        }
    }
    finger = finger.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    phone
        .client
        .perform_actions(finger)
        .await
        .expect("the browser performs the finger's drag");
    // The rectangle's edges, at the logical place the finger went (a screen pixel is a third of
    // a logical one here, so within a pixel), and nothing inside it (no fill).
    let image = wait_for_server_picture(
        &server,
        &room,
        &[(
            &[
                (800.0, 430.0),
                (800.0, 470.0),
                (760.0, 450.0),
                (840.0, 450.0),
            ],
            Px::Paint(RGB_OF_DEFAULT),
        )],
        "the server has the rectangle where the finger dragged it",
    )
    .await;
    assert!(image.all(&[(800.0, 450.0), (700.0, 450.0)], Px::Blank));
}

#[tokio::test]
async fn the_undo_and_redo_buttons_take_back_a_text_and_a_rectangle_for_everyone() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "figures-undo");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    draw_filled_rectangle(&alice).await;
    alice.pick_color(RED).await;
    alice.set_size(6).await;
    write_text(&alice).await;
    wait_for_rectangle_and_text(&bob, "Bob").await;

    let text_box = [TEXT_AT.0, TEXT_AT.1, TEXT_AT.0 + 400.0, TEXT_AT.1 + 40.0];
    let inside = [
        RECT[0].0 + 10.0,
        RECT[0].1 + 10.0,
        RECT[1].0 - 10.0,
        RECT[1].1 - 10.0,
    ];
    // Waits until Bob's board has `text` and `rectangle` painted pixels there (or not).
    let bob_shows = |text: bool, rectangle: bool, what: &'static str| {
        let bob = &bob;
        async move {
            let deadline = std::time::Instant::now() + DEADLINE;
            loop {
                let (text_px, _) = painted_in(bob, text_box, RED_RGB).await;
                let (rect_px, _) = painted_in(bob, inside, GREEN_RGB).await;
                if (text_px > 0) == text && (rect_px > 0) == rectangle {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "waited in vain until {what}: {text_px} text, {rect_px} rectangle pixels"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    alice.click("#undo").await;
    bob_shows(false, true, "the text is undone").await;
    alice.click("#undo").await;
    bob_shows(false, false, "the rectangle is undone too").await;
    alice.click("#redo").await;
    bob_shows(false, true, "the rectangle is back").await;
    alice.click("#redo").await;
    bob_shows(true, true, "the text is back").await;
}

#[tokio::test]
async fn a_shape_being_dragged_is_previewed_and_sent_only_when_released() {
    use fantoccini::actions::{MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("preview");
    let url = room_url(&server, "preview");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    tool(&alice, 'l', "line").await;
    let rect = alice.board_rect().await;
    let at = |(x, y): (f64, f64)| PointerAction::MoveTo {
        duration: Some(std::time::Duration::from_millis(20)),
        x: (rect[0] + x / LOGICAL_WIDTH * rect[2]).round(),
        y: (rect[1] + y / LOGICAL_HEIGHT * rect[3]).round(),
    };
    // Pressed and moved, not released: the preview overlay shows the line.
    let press = MouseActions::new("mouse".to_owned())
        .then(at((400.0, 450.0)))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(at((1200.0, 450.0)));
    alice
        .client
        .perform_actions(press)
        .await
        .expect("the browser presses and drags");
    let preview_shows = "(() => {
        const o = document.querySelector('.figure-preview');
        if (!o || o.width === 0) return false;
        const d = o.getContext('2d').getImageData(Math.floor(o.width / 2), Math.floor(o.height / 2), 1, 1).data;
        return d[3] > 200;
    })()";
    alice
        .wait_until(preview_shows, "the preview shows the line being dragged")
        .await;
    // Nothing is drawn or sent yet.
    let logged: Value = alice
        .js("return window.__livecanvas.board.logLength;", vec![])
        .await;
    assert_eq!(logged, json!(0), "a preview is not an operation");

    let release = MouseActions::new("mouse".to_owned()).then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    alice
        .client
        .perform_actions(release)
        .await
        .expect("the browser releases the button");
    alice
        .wait_until(&format!("!{preview_shows}"), "the preview is gone")
        .await;
    bob.wait_for_pixels(&ON_STROKE, Px::Paint(RGB_OF_DEFAULT), "Bob gets the line")
        .await;
    wait_for_server_picture(
        &server,
        &room,
        &[(&ON_STROKE, Px::Paint(RGB_OF_DEFAULT))],
        "the server has the line",
    )
    .await;
}
