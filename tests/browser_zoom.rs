//! Zoom, pan and the board's operation log in a real browser (headless Chromium over WebDriver, as
//! in tests/browser.rs): Ctrl+wheel and a two-finger pinch zoom in, strokes drawn zoomed with real
//! pointer input land at the right logical coordinates for the other pages and the server, strokes
//! are re-drawn crisp at the zoomed resolution, and hiding a stroke of the log (the API undo builds
//! on) leaves exactly the picture of a page that never drew it.
//!
//! The page exposes its board as `window.__livecanvas.board` (main.js); these tests use it to map
//! logical points to the screen (`toScreen`), to read the zoom, and to drive `setHidden`.

mod common;

use common::browser::*;
use common::Server;
use fantoccini::actions::{
    Actions, InputSource, KeyAction, KeyActions, MouseActions, PointerAction, TouchActions,
    WheelAction, WheelActions, MOUSE_BUTTON_LEFT,
};
use serde_json::{json, Value};
use std::time::Duration;

const CONTROL: char = '\u{E009}'; // WebDriver's key code for Control

/// Client (viewport CSS pixel) coordinates of a logical point, as the page maps it now.
async fn to_screen(page: &Browser, (x, y): (f64, f64)) -> (f64, f64) {
    let p = page
        .js(
            "const p = window.__livecanvas.board.toScreen(arguments[0], arguments[1]);
             return [p.x, p.y];",
            vec![json!(x), json!(y)],
        )
        .await;
    let p: Vec<f64> = serde_json::from_value(p).expect("a point");
    (p[0], p[1])
}

async fn zoom(page: &Browser) -> f64 {
    page.js("return window.__livecanvas.board.zoom;", vec![])
        .await
        .as_f64()
        .expect("the zoom")
}

/// Waits until no re-render is pending (two animation frames), then flushes.
async fn settle(page: &Browser) {
    tokio::time::sleep(Duration::from_millis(250)).await;
    page.js("window.__livecanvas.board.flush();", vec![]).await;
}

/// The RGBA of the visible canvas's backing store under each logical point, wherever the view
/// puts it (unlike `Browser::pixels`, which assumes "fit").
async fn view_pixels(page: &Browser, points: &[(f64, f64)]) -> Vec<[u8; 4]> {
    let pixels = page
        .js(
            "const board = window.__livecanvas.board;
             const canvas = document.getElementById('board');
             const r = canvas.getBoundingClientRect();
             const ctx = canvas.getContext('2d');
             return arguments[0].map(([x, y]) => {
               const p = board.toScreen(x, y);
               const bx = Math.floor((p.x - r.left) * canvas.width / r.width);
               const by = Math.floor((p.y - r.top) * canvas.height / r.height);
               return Array.from(ctx.getImageData(bx, by, 1, 1).data);
             });",
            vec![json!(points)],
        )
        .await;
    serde_json::from_value(pixels).expect("RGBA pixels")
}

async fn wait_for_view_pixels(page: &Browser, points: &[(f64, f64)], want: Px, what: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let got = view_pixels(page, points).await;
        if got.iter().all(|&rgba| want.matches(rgba)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: expected {want:?} at {points:?}, got {got:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Draws through logical `points` with the mouse, at wherever the page's view shows them now.
async fn draw_mouse_in_view(page: &Browser, points: &[(f64, f64)]) {
    let mut screen = Vec::new();
    for &p in points {
        screen.push(to_screen(page, p).await);
    }
    let to = |&(x, y): &(f64, f64)| PointerAction::MoveTo {
        duration: Some(Duration::from_millis(20)),
        x: x.round(),
        y: y.round(),
    };
    let mut mouse = MouseActions::new("mouse".to_owned())
        .then(to(&screen[0]))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    for p in &screen[1..] {
        mouse = mouse.then(to(p));
    }
    mouse = mouse.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    page.client
        .perform_actions(mouse)
        .await
        .expect("the browser performs the pointer actions");
}

/// The stroke the zoom tests draw, and points on it / around it (logical coordinates).
fn short_stroke() -> Vec<(f64, f64)> {
    line((700.0, 450.0), (900.0, 450.0), 6)
}
const ON_SHORT: [(f64, f64); 4] = [
    (710.0, 450.0),
    (760.0, 450.0),
    (840.0, 450.0),
    (890.0, 450.0),
];
/// Away from the short stroke, including where it would land if the zoom were ignored when mapping
/// the pointer (around the board's centre lies what a fit mapping of the zoomed screen would hit).
const OFF_SHORT: [(f64, f64); 8] = [
    (650.0, 450.0),
    (950.0, 450.0),
    (800.0, 400.0),
    (800.0, 500.0),
    (400.0, 450.0),
    (1200.0, 450.0),
    (100.0, 100.0),
    (1500.0, 800.0),
];

#[tokio::test]
async fn ctrl_wheel_zooms_in_and_a_stroke_drawn_zoomed_lands_at_its_logical_place_everywhere() {
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("zoom-wheel");
    let url = server.http_url(&format!("/r/{room}"));
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    let fit_size = alice
        .js(
            "const c = document.getElementById('board'); return [c.style.width, c.style.height, c.width, c.height];",
            vec![],
        )
        .await;

    // Ctrl+wheel over the board's centre: a real wheel event (WebDriver wheel action) with Control
    // held (a key action in the same tick sequence).
    let (cx, cy) = to_screen(&alice, (800.0, 450.0)).await;
    let keys = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: CONTROL })
        .then(KeyAction::Pause {
            duration: Duration::from_millis(0),
        })
        .then(KeyAction::Up { value: CONTROL });
    let wheel = WheelActions::new("wheel".to_owned())
        .then(WheelAction::Pause {
            duration: Duration::from_millis(0),
        })
        .then(WheelAction::Scroll {
            duration: None,
            x: cx.round() as i64,
            y: cy.round() as i64,
            delta_x: 0,
            delta_y: -400,
        })
        .then(WheelAction::Pause {
            duration: Duration::from_millis(0),
        });
    alice
        .client
        .perform_actions(Actions::from(keys).and(wheel))
        .await
        .expect("the browser performs the Ctrl+wheel");
    alice
        .wait_until("window.__livecanvas.board.zoom > 2", "Ctrl+wheel zooms in")
        .await;
    let z = zoom(&alice).await;
    assert!(z <= 8.0, "zoom {z}");
    // Zoomed around the pointer: the board's centre stays under it.
    let (nx, ny) = to_screen(&alice, (800.0, 450.0)).await;
    assert!(
        (nx - cx).abs() < 2.0 && (ny - cy).abs() < 2.0,
        "the point under the pointer moved from ({cx}, {cy}) to ({nx}, {ny})"
    );
    alice
        .wait_until(
            "document.getElementById('zoom-level').textContent !== '100%'",
            "the zoom control shows the zoom",
        )
        .await;
    settle(&alice).await;

    // A stroke drawn zoomed, with real pointer input.
    alice.pick_color(RED).await;
    alice.set_size(12).await;
    draw_mouse_in_view(&alice, &short_stroke()).await;

    wait_for_view_pixels(
        &alice,
        &ON_SHORT,
        Px::Paint(RED_RGB),
        "Alice's zoomed view shows her stroke",
    )
    .await;
    bob.wait_for_pixels(
        &ON_SHORT,
        Px::Paint(RED_RGB),
        "Bob's board shows the stroke where it was drawn",
    )
    .await;
    bob.assert_pixels(&OFF_SHORT, Px::Blank, "Bob's board away from the stroke")
        .await;
    let picture = wait_for_server_picture(
        &server,
        &room,
        &[(&ON_SHORT, Px::Paint(RED_RGB))],
        "the server's picture has the stroke",
    )
    .await;
    assert!(
        picture.all(&OFF_SHORT, Px::Blank),
        "the server's picture away from the stroke: {:?}",
        OFF_SHORT.iter().map(|&p| picture.at(p)).collect::<Vec<_>>()
    );

    // A plain wheel pans when zoomed (the zoom stays).
    let before = to_screen(&alice, (800.0, 450.0)).await;
    let wheel = WheelActions::new("wheel".to_owned()).then(WheelAction::Scroll {
        duration: None,
        x: before.0.round() as i64,
        y: before.1.round() as i64,
        delta_x: 0,
        delta_y: 120,
    });
    alice
        .client
        .perform_actions(wheel)
        .await
        .expect("the browser performs the wheel scroll");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let after = to_screen(&alice, (800.0, 450.0)).await;
        if (before.1 - after.1 - 120.0).abs() < 2.0 && (after.0 - before.0).abs() < 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a wheel of 120 px pans the view up by 120 px: the centre went from {before:?} to {after:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(zoom(&alice).await, z, "a plain wheel does not zoom");

    // "Fit" returns to the default mapping: the canvas's size, and the logical ↔ screen mapping.
    alice.click("#zoom-fit").await;
    alice
        .wait_until(
            "window.__livecanvas.board.zoom === 1",
            "Fit resets the zoom",
        )
        .await;
    settle(&alice).await;
    let size = alice
        .js(
            "const c = document.getElementById('board'); return [c.style.width, c.style.height, c.width, c.height];",
            vec![],
        )
        .await;
    assert_eq!(size, fit_size, "the canvas is its fit size again");
    alice
        .assert_pixels(&ON_SHORT, Px::Paint(RED_RGB), "Alice's board at fit")
        .await;
    alice
        .assert_pixels(
            &OFF_SHORT,
            Px::Blank,
            "Alice's board at fit, away from the stroke",
        )
        .await;
    // At fit, a logical point maps to the screen exactly as Browser::draw assumes.
    let mapped = alice
        .js(
            "const b = window.__livecanvas.board;
             const r = document.getElementById('board').getBoundingClientRect();
             const p = b.toScreen(400, 300);
             const q = b.toLogical(r.left + 400 / 1600 * r.width, r.top + 300 / 900 * r.height);
             return [p.x - (r.left + 400 / 1600 * r.width), p.y - (r.top + 300 / 900 * r.height), q.x, q.y];",
            vec![],
        )
        .await;
    let mapped: Vec<f64> = serde_json::from_value(mapped).unwrap();
    assert!(
        mapped[0].abs() < 1e-6
            && mapped[1].abs() < 1e-6
            && mapped[2] == 400.0
            && mapped[3] == 300.0,
        "the fit mapping: {mapped:?}"
    );
}

/// The alpha of the visible canvas's backing store down a column across the logical point's row,
/// ±`half` logical pixels; and the same column from the master bitmap drawn with the view's
/// transform (what a scaled 1600x900 picture would show), for comparison.
async fn alpha_column(page: &Browser, (x, y): (f64, f64), half: f64) -> (Vec<u8>, Vec<u8>) {
    let v = page
        .js(
            "const [x, y, half] = arguments;
             const board = window.__livecanvas.board;
             board.flush();
             const canvas = document.getElementById('board');
             const r = canvas.getBoundingClientRect();
             const toB = (lx, ly) => { const p = board.toScreen(lx, ly);
               return [(p.x - r.left) * canvas.width / r.width, (p.y - r.top) * canvas.height / r.height]; };
             const [bx, by0] = toB(x, y - half);
             const [, by1] = toB(x, y + half);
             const [ox, oy] = toB(0, 0);
             const [ex, ey] = toB(1, 1);
             const col = Math.floor(bx), top = Math.floor(by0), n = Math.ceil(by1) - top;
             const visible = Array.from(canvas.getContext('2d').getImageData(col, top, 1, n).data)
               .filter((_, i) => i % 4 === 3);
             const scaled = document.createElement('canvas');
             scaled.width = canvas.width; scaled.height = canvas.height;
             const sctx = scaled.getContext('2d');
             sctx.imageSmoothingEnabled = true; sctx.imageSmoothingQuality = 'high';
             sctx.setTransform(ex - ox, 0, 0, ey - oy, ox, oy);
             sctx.drawImage(board.master, 0, 0);
             const bitmap = Array.from(sctx.getImageData(col, top, 1, n).data).filter((_, i) => i % 4 === 3);
             return [visible, bitmap];",
            vec![json!(x), json!(y), json!(half)],
        )
        .await;
    serde_json::from_value(v).expect("two alpha columns")
}

fn partial(alphas: &[u8]) -> usize {
    alphas.iter().filter(|&&a| a > 8 && a < 247).count()
}

fn opaque(alphas: &[u8]) -> usize {
    alphas.iter().filter(|&&a| a >= 247).count()
}

#[tokio::test]
async fn strokes_are_redrawn_crisp_at_the_zoomed_resolution() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "zoom-crisp");
    let page = Browser::open(&driver, &url).await;
    page.pick_color(RED).await;
    page.set_size(2).await;
    // Drawn at fit: a 2 px line in the log (and 2 px on the 1600x900 master).
    page.draw(&line((500.0, 450.0), (1100.0, 450.0), 6)).await;
    page.wait_until(
        "window.__livecanvas.board.master.getContext('2d').getImageData(800, 450, 1, 1).data[3] === 255",
        "the thin stroke is drawn (on the master)",
    )
    .await;

    // Zoom to 4x around the board's centre, then let the re-render happen.
    let (cx, cy) = to_screen(&page, (800.0, 450.0)).await;
    page.js(
        "window.__livecanvas.board.zoomAt(4, arguments[0], arguments[1]);",
        vec![json!(cx), json!(cy)],
    )
    .await;
    assert_eq!(zoom(&page).await, 4.0);
    settle(&page).await;

    for x in [620.5, 800.5, 977.3] {
        let (visible, bitmap) = alpha_column(&page, (x, 450.0), 6.0).await;
        // 2 logical px at 4x (2.4 backing px per logical px in this window): opaque rows, and
        // at most one partly covered row on each edge.
        assert!(
            opaque(&visible) >= 2 && partial(&visible) <= 2,
            "the zoomed stroke at x={x} is not crisp: alpha down the column {visible:?} \
             (a scaled bitmap would give {bitmap:?})"
        );
        // The comparison that makes this test meaningful: the master bitmap scaled up is blurry.
        assert!(
            partial(&bitmap) >= 4,
            "a scaled 1600x900 bitmap would have looked crisp too ({bitmap:?}), so this test proves nothing"
        );
    }
}

/// A two-finger pinch: both fingers go down around `centre`, `gap` CSS pixels apart, and move
/// apart to `gap * spread`, in `steps` moves, together (one WebDriver action tick each).
async fn pinch(page: &Browser, centre: (f64, f64), gap: f64, spread: f64, steps: usize) {
    let finger = |id: &str, dir: f64| {
        let at = |g: f64| PointerAction::MoveTo {
            duration: Some(Duration::from_millis(30)),
            x: (centre.0 + dir * g / 2.0).round(),
            y: centre.1.round(),
        };
        let mut f = TouchActions::new(id.to_owned())
            .then(at(gap))
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            });
        for i in 1..=steps {
            f = f.then(at(gap * (1.0 + (spread - 1.0) * i as f64 / steps as f64)));
        }
        f.then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
    };
    page.client
        .perform_actions(Actions::from(finger("finger1", -1.0)).and(finger("finger2", 1.0)))
        .await
        .expect("the browser performs the two-finger pinch");
    // Forget the fingers' input state (else chromedriver's next tap, a click on a phone, may be lost).
    page.client
        .release_actions()
        .await
        .expect("the browser releases the fingers");
}

/// Draws through logical `points` with one finger, wherever the page's view shows them now.
async fn draw_touch_in_view(page: &Browser, points: &[(f64, f64)]) {
    let mut screen = Vec::new();
    for &p in points {
        screen.push(to_screen(page, p).await);
    }
    let to = |&(x, y): &(f64, f64)| PointerAction::MoveTo {
        duration: Some(Duration::from_millis(30)),
        x: x.round(),
        y: y.round(),
    };
    let mut finger = TouchActions::new("finger".to_owned())
        .then(to(&screen[0]))
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    for p in &screen[1..] {
        finger = finger.then(to(p));
    }
    finger = finger.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    page.client
        .perform_actions(finger)
        .await
        .expect("the browser performs the touch stroke");
    page.client
        .release_actions()
        .await
        .expect("the browser releases the finger");
}

#[tokio::test]
async fn on_a_phone_a_pinch_zooms_in_and_a_finger_stroke_lands_at_its_logical_place() {
    let server = Server::start();
    let driver = Driver::start();
    let room = room_name("zoom-phone");
    let url = server.http_url(&format!("/r/{room}"));
    let phone = Browser::open_phone(&driver, &url).await;
    let desk = Browser::open(&driver, &url).await;
    let metrics = phone
        .js(
            "return [innerWidth, devicePixelRatio, navigator.maxTouchPoints,
                     document.getElementById('board').getBoundingClientRect().width];",
            vec![],
        )
        .await;
    let metrics: Vec<f64> = serde_json::from_value(metrics).unwrap();
    assert!(
        metrics[0] == 390.0 && metrics[1] == 3.0 && metrics[2] >= 1.0,
        "the phone emulation: [innerWidth, devicePixelRatio, maxTouchPoints, board width] = {metrics:?}"
    );
    // Upright, the page opens zoomed to fill the screen; the zoom pop-over's Fit shows the whole
    // board. (Clicked from the page: chromedriver's emulated tap sometimes delivers no click.)
    assert!(zoom(&phone).await > 2.0, "the phone opens zoomed to fill");
    phone
        .js("document.getElementById('zoom-toggle').click();", vec![])
        .await;
    phone
        .wait_until(
            "document.getElementById('zoom').matches(':popover-open')",
            "the zoom pop-over is open",
        )
        .await;
    phone
        .js("document.getElementById('zoom-fit').click();", vec![])
        .await;
    phone
        .wait_until(
            "window.__livecanvas.board.zoom === 1 \
             && document.getElementById('zoom-toggle').textContent === '100%'",
            "Fit shows the whole board",
        )
        .await;
    phone
        .js("document.getElementById('zoom').hidePopover();", vec![])
        .await;

    // Pinch out around the board's centre: fingers 60 → 180 px apart, so about 3x.
    let centre = to_screen(&phone, (800.0, 450.0)).await;
    pinch(&phone, centre, 60.0, 3.0, 8).await;
    phone
        .wait_until("window.__livecanvas.board.zoom > 2", "the pinch zooms in")
        .await;
    let z = zoom(&phone).await;
    assert!(z < 4.0, "a 3x pinch zoomed {z}x");
    let (nx, ny) = to_screen(&phone, (800.0, 450.0)).await;
    assert!(
        (nx - centre.0).abs() < 6.0 && (ny - centre.1).abs() < 6.0,
        "the pinch's midpoint moved over the board: from {centre:?} to ({nx}, {ny})"
    );
    // The pinch drew nothing: no stray segment on either page or on the server.
    settle(&phone).await;
    let pinch_points = [
        (800.0, 450.0),
        (780.0, 450.0),
        (820.0, 450.0),
        (760.0, 450.0),
        (840.0, 450.0),
    ];
    desk.assert_pixels(&pinch_points, Px::Blank, "the desktop page after the pinch")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(picture) = server_picture(&server, &room).await {
        assert!(
            picture.all(&pinch_points, Px::Blank) && picture.all(&OFF_SHORT, Px::Blank),
            "the pinch drew on the server's picture"
        );
    }

    // One finger draws, zoomed. (The swatch is clicked from the page: chromedriver's emulated tap
    // delivers pointer and touch events but, in about half the runs here, no click.)
    phone
        .js(
            "document.querySelector(`#palette .swatch[data-color='${arguments[0]}']`).click();",
            vec![json!(RED)],
        )
        .await;
    phone
        .wait_until(
            &format!("document.getElementById('color').value === '{RED}'"),
            "the phone's brush is red",
        )
        .await;
    phone.set_size(12).await;
    draw_touch_in_view(&phone, &short_stroke()).await;

    wait_for_view_pixels(
        &phone,
        &ON_SHORT,
        Px::Paint(RED_RGB),
        "the phone's zoomed view shows the stroke",
    )
    .await;
    desk.wait_for_pixels(
        &ON_SHORT,
        Px::Paint(RED_RGB),
        "the desktop page shows the phone's stroke",
    )
    .await;
    desk.assert_pixels(
        &OFF_SHORT,
        Px::Blank,
        "the desktop page away from the stroke",
    )
    .await;
    let picture = wait_for_server_picture(
        &server,
        &room,
        &[(&ON_SHORT, Px::Paint(RED_RGB))],
        "the server's picture has the phone's stroke",
    )
    .await;
    assert!(
        picture.all(&OFF_SHORT, Px::Blank),
        "the server's picture away from the stroke: {:?}",
        OFF_SHORT.iter().map(|&p| picture.at(p)).collect::<Vec<_>>()
    );
}

// ---- the operation log: setHidden ----

/// Ops applied locally through the board's API (not sent): name → op JSON.
fn op(kind: &str, id: &str, color: &str, from: (f64, f64), to: (f64, f64), size: f64) -> Value {
    match kind {
        "clear" => json!({ "type": "clear", "strokeId": id }),
        tool => {
            json!({ "type": "draw", "tool": tool, "color": color, "startX": from.0, "startY": from.1,
                        "endX": to.0, "endY": to.1, "size": size, "strokeId": id })
        }
    }
}

/// Replaces the page's picture with the test's base (a black square) plus `ops`, in order.
async fn build(page: &Browser, ops: &[Value]) {
    page.js(
        "const board = window.__livecanvas.board;
         const base = document.createElement('canvas');
         base.width = board.width; base.height = board.height;
         const ctx = base.getContext('2d');
         ctx.fillStyle = '#000000';
         ctx.fillRect(550, 250, 100, 100);
         board.setBase(base);
         for (const op of arguments[0]) board.apply(op);",
        vec![json!(ops)],
    )
    .await;
}

/// A digest of the master canvas and of the visible canvas (after any pending re-render), and the
/// number of non-transparent pixels of each.
async fn digests(page: &Browser) -> Value {
    page.js(
        "const board = window.__livecanvas.board;
         board.flush();
         const digest = (canvas) => {
           const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
           let h = 2166136261, painted = 0;
           for (let i = 0; i < d.length; i++) h = Math.imul(h ^ d[i], 16777619);
           for (let i = 3; i < d.length; i += 4) if (d[i]) painted++;
           return [h >>> 0, painted];
         };
         return { master: digest(board.master), visible: digest(document.getElementById('board')) };",
        vec![],
    )
    .await
}

/// The master's RGBA at logical points.
async fn master_pixels(page: &Browser, points: &[(f64, f64)]) -> Vec<[u8; 4]> {
    let v = page
        .js(
            "const board = window.__livecanvas.board;
             board.flush();
             const ctx = board.master.getContext('2d');
             return arguments[0].map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data));",
            vec![json!(points)],
        )
        .await;
    serde_json::from_value(v).unwrap()
}

const BLUE_RGB: [u8; 3] = [0x1e, 0x88, 0xe5];
const GREEN_RGB: [u8; 3] = [0x43, 0xa0, 0x47];

#[tokio::test]
async fn hiding_a_stroke_leaves_exactly_the_picture_of_a_page_that_never_drew_it() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "zoom-log");
    let alice = Browser::open(&driver, &url).await;
    let reference = Browser::open(&driver, &url).await;

    let red = op("pen", "R", "#e53935", (200.0, 300.0), (1400.0, 300.0), 40.0);
    let blue = op(
        "pen",
        "B",
        "#1e88e5",
        (1000.0, 100.0),
        (1000.0, 800.0),
        30.0,
    );
    let blue2 = op(
        "pen",
        "B",
        "#1e88e5",
        (1000.0, 800.0),
        (1300.0, 800.0),
        30.0,
    );
    let eraser = op(
        "eraser",
        "E",
        "#000000",
        (600.0, 150.0),
        (600.0, 450.0),
        60.0,
    );
    let clear = op("clear", "C", "", (0.0, 0.0), (0.0, 0.0), 0.0);
    let green = op("pen", "G", "#43a047", (300.0, 600.0), (1300.0, 600.0), 20.0);

    // Checks alice against the reference built from `ops`: the master exactly, and the visible
    // canvas at points, at fit; then both zoomed the same way (vector re-render): exactly.
    async fn same_as(alice: &Browser, reference: &Browser, ops: &[Value], what: &str) {
        build(reference, ops).await;
        settle(alice).await;
        let (a, r) = (digests(alice).await, digests(reference).await);
        assert_eq!(
            a["master"], r["master"],
            "{what}: the master differs from a page that never drew the hidden stroke"
        );
        let points = [
            (300.0, 300.0),
            (600.0, 300.0),
            (600.0, 200.0),
            (1000.0, 500.0),
            (1200.0, 800.0),
            (800.0, 600.0),
            (400.0, 600.0),
            (620.0, 330.0),
            (100.0, 100.0),
            (1500.0, 850.0),
        ];
        let (pa, pr) = (alice.pixels(&points).await, reference.pixels(&points).await);
        for ((p, x), y) in points.iter().zip(&pa).zip(&pr) {
            let close = (0..4).all(|i| x[i].abs_diff(y[i]) <= 24);
            assert!(
                close,
                "{what}: the visible canvas at {p:?}: {x:?}, a page that never drew it: {y:?}"
            );
        }
        for page in [alice, reference] {
            page.js(
                "const b = window.__livecanvas.board; b.zoomAt(3, 500, 350);",
                vec![],
            )
            .await;
        }
        settle(alice).await;
        settle(reference).await;
        let (a, r) = (digests(alice).await, digests(reference).await);
        assert_eq!(
            a["visible"], r["visible"],
            "{what}: zoomed, the visible canvas differs"
        );
        for page in [alice, reference] {
            page.js("window.__livecanvas.board.fit();", vec![]).await;
        }
        settle(alice).await;
        settle(reference).await;
    }

    build(
        &alice,
        &[red.clone(), blue.clone(), eraser.clone(), blue2.clone()],
    )
    .await;
    let has = alice
        .js(
            "const b = window.__livecanvas.board;
             return [b.hasStroke('E'), b.hasStroke('nope'), b.setHidden('nope', true)];",
            vec![],
        )
        .await;
    assert_eq!(has, json!([true, false, false]));
    // The eraser went through the red stroke and the base's black square.
    assert_eq!(master_pixels(&alice, &[(600.0, 300.0)]).await[0][3], 0);

    // Hiding the eraser brings back the paint under it.
    let found = alice
        .js(
            "return window.__livecanvas.board.setHidden('E', true);",
            vec![],
        )
        .await;
    assert_eq!(found, json!(true));
    same_as(
        &alice,
        &reference,
        &[red.clone(), blue.clone(), blue2.clone()],
        "the eraser hidden",
    )
    .await;
    let m = master_pixels(&alice, &[(600.0, 300.0), (600.0, 340.0)]).await;
    assert!(
        Px::Paint(RED_RGB).matches(m[0]) && Px::Paint([0, 0, 0]).matches(m[1]),
        "under the hidden eraser: {m:?}"
    );

    // Hiding a stroke of two segments hides both; showing the eraser again erases again.
    alice
        .js(
            "const b = window.__livecanvas.board; b.setHidden('E', false); b.setHidden('B', true);",
            vec![],
        )
        .await;
    same_as(
        &alice,
        &reference,
        &[red.clone(), eraser.clone()],
        "the blue stroke hidden",
    )
    .await;
    alice
        .js("window.__livecanvas.board.setHidden('B', false);", vec![])
        .await;
    same_as(
        &alice,
        &reference,
        &[red.clone(), blue.clone(), eraser.clone(), blue2.clone()],
        "all shown",
    )
    .await;

    // A clear, then a green stroke: hiding the clear brings back all that was before it.
    alice
        .js(
            "const b = window.__livecanvas.board; b.apply(arguments[0]); b.apply(arguments[1]);",
            vec![clear.clone(), green.clone()],
        )
        .await;
    let m = master_pixels(&alice, &[(300.0, 300.0), (800.0, 600.0)]).await;
    assert!(
        m[0][3] == 0 && Px::Paint(GREEN_RGB).matches(m[1]),
        "after the clear: {m:?}"
    );
    alice
        .js("window.__livecanvas.board.setHidden('C', true);", vec![])
        .await;
    same_as(
        &alice,
        &reference,
        &[
            red.clone(),
            blue.clone(),
            eraser.clone(),
            blue2.clone(),
            green.clone(),
        ],
        "the clear hidden",
    )
    .await;
    let m = master_pixels(&alice, &[(300.0, 300.0), (1000.0, 500.0), (800.0, 600.0)]).await;
    assert!(
        Px::Paint(RED_RGB).matches(m[0])
            && Px::Paint(BLUE_RGB).matches(m[1])
            && Px::Paint(GREEN_RGB).matches(m[2]),
        "with the clear hidden: {m:?}"
    );
    // …and the page's snapshot for others (toDataURL) is the master.
    let same = alice
        .js(
            "const b = window.__livecanvas.board;
             const url = b.toDataURL();
             return url.startsWith('data:image/png') && url === b.master.toDataURL('image/png');",
            vec![],
        )
        .await;
    assert_eq!(same, json!(true));
}

/// Applies `n` short deterministic segments, ten per stroke (`k0`, `k1`, …), skipping the strokes in
/// `skip`; every 997th op is an eraser segment.
async fn apply_many(page: &Browser, n: usize, skip: &[&str]) {
    page.js(
        "const [n, skip] = arguments;
         const board = window.__livecanvas.board;
         board.setBase(null);
         for (let i = 0; i < n; i++) {
           const strokeId = 'k' + Math.floor(i / 10);
           if (skip.includes(strokeId)) continue;
           const x = (i * 37) % 1580 + 10, y = (i * 53) % 880 + 10;
           board.apply({ type: 'draw', color: ['#e53935', '#1e88e5', '#43a047'][i % 3],
                         startX: x, startY: y, endX: x + 12, endY: y + 7, size: 3 + (i % 5),
                         tool: i % 997 === 0 ? 'eraser' : 'pen', strokeId });
         }",
        vec![json!(n), json!(skip)],
    )
    .await;
}

#[tokio::test]
async fn hiding_strokes_in_a_long_log_and_after_folding_matches_a_page_that_never_drew_them() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "zoom-long-log");
    let alice = Browser::open(&driver, &url).await;
    let reference = Browser::open(&driver, &url).await;

    // 7,000 ops: checkpoints are taken every 2,000; hide a recent stroke (after the last
    // checkpoint), then one far back (before every checkpoint), then show the recent one again.
    apply_many(&alice, 7000, &[]).await;
    alice
        .js(
            "const b = window.__livecanvas.board; b.setHidden('k690', true);",
            vec![],
        )
        .await;
    apply_many(&reference, 7000, &["k690"]).await;
    let (a, r) = (digests(&alice).await, digests(&reference).await);
    assert_eq!(a["master"], r["master"], "a recent stroke hidden");
    alice
        .js(
            "const b = window.__livecanvas.board; b.setHidden('k12', true); b.setHidden('k690', false);",
            vec![],
        )
        .await;
    apply_many(&reference, 7000, &["k12"]).await;
    let (a, r) = (digests(&alice).await, digests(&reference).await);
    assert_eq!(a["master"], r["master"], "a stroke far back hidden");

    // Past MAX_LOG_OPS (50,000) the oldest ops are folded into the base: they can no longer be
    // hidden, and the picture is unchanged; a recent stroke still can.
    apply_many(&alice, 55_010, &[]).await;
    let state = alice
        .js(
            "const b = window.__livecanvas.board;
             return [b.logLength, b.hasStroke('k0'), b.setHidden('k0', true), b.hasStroke('k5500'),
                     b.setHidden('k5500', true)];",
            vec![],
        )
        .await;
    assert_eq!(state, json!([45_010, false, false, true, true]));
    apply_many(&reference, 55_010, &["k5500"]).await;
    let (a, r) = (digests(&alice).await, digests(&reference).await);
    assert_eq!(
        a["master"], r["master"],
        "after folding, a recent stroke hidden"
    );
    // The oldest stroke left in the log (ops 10,000 on): its re-render starts from the base, which
    // now holds the folded ops.
    alice
        .js(
            "window.__livecanvas.board.setHidden('k1000', true);",
            vec![],
        )
        .await;
    apply_many(&reference, 55_010, &["k5500", "k1000"]).await;
    let (a, r) = (digests(&alice).await, digests(&reference).await);
    assert_eq!(
        a["master"], r["master"],
        "after folding, the oldest stroke in the log hidden"
    );
    assert!(
        r["master"][1].as_u64().unwrap() > 100_000,
        "the picture has paint: {r}"
    );
}

/// Waits until the page's zoom and its label are `percent`.
async fn wait_for_zoom(page: &Browser, percent: u32, what: &str) {
    page.wait_until(
        &format!(
            "Math.round(window.__livecanvas.board.zoom * 100) === {percent} \
             && document.getElementById('zoom-level').textContent === '{percent}%'"
        ),
        what,
    )
    .await;
}

#[tokio::test]
async fn the_plus_minus_and_zero_keys_zoom_in_out_and_back_to_fit() {
    let server = Server::start();
    let driver = Driver::start();
    let page = Browser::open(&driver, &room_url(&server, "zoom-keys")).await;
    wait_for_zoom(&page, 100, "the page opens at fit").await;

    page.press('+').await;
    wait_for_zoom(&page, 125, "+ zooms in one step").await;
    page.press('+').await;
    wait_for_zoom(&page, 156, "+ again zooms another step").await;
    page.press('-').await;
    wait_for_zoom(&page, 125, "- zooms out one step").await;
    page.press('=').await;
    wait_for_zoom(&page, 156, "= (+ without Shift) zooms in").await;
    page.press('0').await;
    wait_for_zoom(&page, 100, "0 fits the whole board").await;
    page.press('-').await;
    // Nothing to wait for: one more key that does zoom shows whether '-' did anything at fit.
    page.press('+').await;
    wait_for_zoom(&page, 125, "- at fit stays at fit").await;

    // Typing in a field is typing, not zooming.
    page.click("#room-input").await;
    page.js(
        "const f = document.getElementById('room-input'); f.setSelectionRange(f.value.length, f.value.length);",
        vec![],
    )
    .await;
    page.press('+').await;
    page.press('0').await;
    page.wait_until(
        "document.getElementById('room-input').value.endsWith('+0')",
        "the keys went into the field",
    )
    .await;
    wait_for_zoom(&page, 125, "the zoom did not change while typing").await;
}

#[tokio::test]
async fn the_zoom_buttons_zoom_in_out_and_fit_and_are_disabled_at_their_limits() {
    let server = Server::start();
    let driver = Driver::start();
    let page = Browser::open(&driver, &room_url(&server, "zoom-buttons")).await;
    let disabled = |id: &str| format!("document.getElementById('{id}').disabled");
    page.wait_until(
        &format!(
            "{} && {} && !{}",
            disabled("zoom-out"),
            disabled("zoom-fit"),
            disabled("zoom-in")
        ),
        "at fit, only + is offered",
    )
    .await;

    page.click("#zoom-in").await;
    wait_for_zoom(&page, 125, "+ zooms in one step").await;
    page.click("#zoom-in").await;
    wait_for_zoom(&page, 156, "+ again zooms another step").await;
    page.click("#zoom-out").await;
    wait_for_zoom(&page, 125, "− zooms out one step").await;
    page.click("#zoom-fit").await;
    wait_for_zoom(&page, 100, "Fit goes back to the whole board").await;
    page.wait_until(
        &format!("{} && {}", disabled("zoom-out"), disabled("zoom-fit")),
        "at fit, − and Fit are disabled again",
    )
    .await;

    // Ten clicks would be 931%: the zoom stops at 800% and + is disabled there.
    for _ in 0..10 {
        page.js("document.getElementById('zoom-in').click();", vec![])
            .await;
    }
    wait_for_zoom(&page, 800, "+ stops at the largest zoom").await;
    page.wait_until(&disabled("zoom-in"), "+ is disabled at the largest zoom")
        .await;
}
