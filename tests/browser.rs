//! The page in a real browser: headless Chromium driven over WebDriver (Debian's `chromedriver`),
//! one browser session per simulated person, against the real server on an ephemeral port.
//! Strokes are drawn with real pointer input (WebDriver actions) and checked by reading the pixels
//! of each page's visible `#board` canvas, and against the server's own rendering of the room
//! (`GET /api/rooms/{room}/canvas.png`).

mod common;

use common::browser::*;
use common::{Image, Server};

// ---- the tests ----

#[tokio::test]
async fn two_pages_in_a_room_both_show_two_people() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "people");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    for page in [&alice, &bob] {
        page.wait_until(
            "document.getElementById('people').dataset.count === '2'",
            "#people shows 2",
        )
        .await;
    }
}

#[tokio::test]
async fn a_stroke_drawn_with_the_pointer_on_one_page_appears_in_the_other_pages_pixels() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "stroke");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    bob.assert_pixels(&ON_STROKE, Px::Blank, "Bob's board before the stroke")
        .await;

    draw_red_middle_stroke(&alice).await;

    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "Bob's board shows the red stroke",
    )
    .await;
    bob.assert_pixels(
        &FAR_FROM_STROKE,
        Px::Blank,
        "Bob's board away from the stroke",
    )
    .await;
}

#[tokio::test]
async fn a_page_that_joins_later_gets_the_picture() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "late");
    let alice = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&alice).await;
    alice
        .wait_for_pixels(
            &ON_STROKE,
            Px::Paint(RED_RGB),
            "Alice's board shows her stroke",
        )
        .await;

    // `open` waits for body[data-synced="true"]: by then the picture must be there.
    let carol = Browser::open(&driver, &url).await;
    carol
        .assert_shows_only_the_red_stroke("Carol's board once synced")
        .await;
}

#[tokio::test]
async fn clearing_on_one_page_clears_the_others() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "clear");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&alice).await;
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "Bob's board shows the stroke",
    )
    .await;

    alice.clear_for_everyone().await;

    bob.wait_for_pixels(&ON_STROKE, Px::Blank, "Bob's board is cleared")
        .await;
    alice
        .assert_pixels(&ON_STROKE, Px::Blank, "Alice's board is cleared")
        .await;
}

#[tokio::test]
async fn the_eraser_removes_paint_on_every_page() {
    let server = Server::start();
    let driver = Driver::start();
    let url = room_url(&server, "eraser");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;

    // A thick red stroke…
    alice.pick_color(RED).await;
    alice.set_size(40).await;
    alice.draw(&line((300.0, 450.0), (1300.0, 450.0), 10)).await;
    let kept = [
        (400.0, 450.0),
        (600.0, 440.0),
        (1000.0, 460.0),
        (1200.0, 450.0),
    ];
    let erased = [
        (800.0, 435.0),
        (800.0, 450.0),
        (790.0, 465.0),
        (810.0, 450.0),
    ];
    bob.wait_for_pixels(
        &kept,
        Px::Paint(RED_RGB),
        "Bob's board shows the thick stroke",
    )
    .await;
    bob.wait_for_pixels(
        &erased,
        Px::Paint(RED_RGB),
        "Bob's board shows the thick stroke",
    )
    .await;

    // …crossed out in its middle with a 64-pixel eraser.
    alice.set_size(64).await;
    alice.click("#tool-eraser").await;
    alice
        .wait_until(
            "document.body.dataset.tool === 'eraser'",
            "the eraser is selected",
        )
        .await;
    alice.draw(&line((800.0, 300.0), (800.0, 600.0), 6)).await;

    for (page, who) in [(&bob, "Bob"), (&alice, "Alice")] {
        page.wait_for_pixels(
            &erased,
            Px::Blank,
            &format!("{who}'s board is erased across the stroke"),
        )
        .await;
        page.assert_pixels(
            &kept,
            Px::Paint(RED_RGB),
            &format!("{who}'s board keeps the rest of the stroke"),
        )
        .await;
    }
}

#[tokio::test]
async fn the_page_reconnects_by_itself_after_a_server_restart_and_shows_the_picture_again() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 data directory");
    let mut server = Server::start_with(&["--data-dir", data_path]);
    let driver = Driver::start();
    let url = room_url(&server, "restart");
    let alice = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&alice).await;
    alice
        .wait_for_pixels(
            &ON_STROKE,
            Px::Paint(RED_RGB),
            "Alice's board shows her stroke",
        )
        .await;

    // Record every connection state and synced flag the page shows from now on, so that a state
    // held only briefly is not missed between two polls.
    alice
        .js(
            "window.__states = [];
             window.__synced = [];
             const status = document.getElementById('status');
             new MutationObserver(() => window.__states.push(status.dataset.state))
               .observe(status, { attributes: true, attributeFilter: ['data-state'] });
             new MutationObserver(() => window.__synced.push(document.body.dataset.synced))
               .observe(document.body, { attributes: true, attributeFilter: ['data-synced'] });",
            vec![],
        )
        .await;

    // Restart on the same port: the page's WebSocket URL stays valid.
    let addr = server.addr;
    server.terminate();
    let status = server.wait_for_exit(DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "the old server exits 0 after SIGTERM: {status:?}"
    );
    drop(server);
    let server = start_server_on(addr, data.path());
    assert_eq!(
        server.addr, addr,
        "the new server listens where the old one did"
    );

    alice
        .wait_until(
            "(() => {
               const states = window.__states;
               const lost = states.indexOf('reconnecting');
               return lost >= 0 && states.lastIndexOf('connected') > lost
                 && window.__synced.includes('false')
                 && document.getElementById('status').dataset.state === 'connected'
                 && document.body.dataset.synced === 'true';
             })()",
            "Alice's page went through 'reconnecting' and is connected and synced again",
        )
        .await;
    let history = alice
        .js("return [window.__states, window.__synced];", vec![])
        .await;
    alice
        .assert_shows_only_the_red_stroke(&format!(
            "Alice's board keeps her stroke across the restart (states, synced: {history})"
        ))
        .await;

    // The new server read the room from disk: a newcomer gets the picture from it.
    let bob = Browser::open(&driver, &url).await;
    bob.assert_shows_only_the_red_stroke("Bob's board once synced on the new server")
        .await;
}

#[tokio::test]
async fn a_stroke_drawn_while_the_server_restarts_reaches_the_room_once_the_page_is_back() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 data directory");
    let mut server = Server::start_with(&["--data-dir", data_path]);
    let driver = Driver::start();
    let url = room_url(&server, "offline");
    let alice = Browser::open(&driver, &url).await;
    let bob = Browser::open(&driver, &url).await;

    let addr = server.addr;
    server.terminate();
    assert!(server.wait_for_exit(DEADLINE).is_some(), "the server stops");
    drop(server);
    alice
        .wait_until(
            "document.getElementById('status').dataset.state === 'reconnecting'",
            "Alice's page knows it is disconnected",
        )
        .await;
    // Drawn with nobody to send it to: the page keeps it.
    draw_red_middle_stroke(&alice).await;
    alice
        .wait_for_pixels(&ON_STROKE, Px::Paint(RED_RGB), "Alice sees her stroke")
        .await;

    let server = start_server_on(addr, data.path());
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "Bob gets the stroke Alice drew while the server was down",
    )
    .await;
    alice
        .assert_shows_only_the_red_stroke("Alice's board once back in sync")
        .await;
    let room = room_name("offline");
    let want: &[(&[(f64, f64)], Px)] = &[(&ON_STROKE, Px::Paint(RED_RGB))];
    wait_for_server_picture(&server, &room, want, "the server keeps the stroke").await;
}

#[tokio::test]
async fn a_drawing_survives_closing_every_page_and_restarting_the_server() {
    let data = common::data_dir();
    let data_path = data.path().to_str().expect("a UTF-8 data directory");
    let mut server = Server::start_with(&["--data-dir", data_path]);
    let driver = Driver::start();
    let room = room_name("survives");
    let url = room_url(&server, "survives");

    let alice = Browser::open(&driver, &url).await;
    draw_red_middle_stroke(&alice).await;
    // The stroke's last segment ends past the last ON_STROKE point: once the server's picture shows
    // it there, the server has accepted the whole stroke (a page's operations arrive in order).
    wait_for_server_picture(
        &server,
        &room,
        &[
            (&ON_STROKE, Px::Paint(RED_RGB)),
            (&FAR_FROM_STROKE, Px::Blank),
        ],
        "the server's picture shows Alice's stroke",
    )
    .await;

    // Alice closes her page: her browser session ends, and nobody is left in the room.
    drop(alice);
    wait_until_no_connection_is_open(&server).await;

    server.terminate();
    let status = server.wait_for_exit(DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server exits 0 after SIGTERM: {status:?}"
    );
    drop(server);

    // A new server (on another port) over the same data directory.
    let server = Server::start_with(&["--data-dir", data_path]);
    let bob = Browser::open(&driver, &room_url(&server, "survives")).await;
    bob.assert_shows_only_the_red_stroke("Bob's board, on the new server, once synced")
        .await;
}

/// Named points that should all look like the `Px`.
type Probe<'a> = (&'a str, &'a [(f64, f64)], Px);

/// How two pictures of the same size differ.
#[derive(Debug)]
struct Difference {
    pixels: usize,
    /// Pixels whose alpha differs at all.
    alpha_differs_at_all: usize,
    /// Pixels whose alpha differs by more than 64 (a quarter of the range).
    alpha_differs: usize,
    /// The largest alpha difference of any pixel.
    max_alpha_difference: u8,
    /// Painted pixels (alpha above 128) in each picture.
    painted: [usize; 2],
    /// Pixels opaque in both pictures whose colour differs by more than 16 in a channel.
    colour_differs: usize,
}

impl Difference {
    fn between(a: &Image, b: &Image) -> Difference {
        assert_eq!(
            (a.width, a.height),
            (b.width, b.height),
            "the pictures are of one size"
        );
        let mut difference = Difference {
            pixels: (a.width * a.height) as usize,
            alpha_differs_at_all: 0,
            alpha_differs: 0,
            max_alpha_difference: 0,
            painted: [0, 0],
            colour_differs: 0,
        };
        for (p, q) in a.rgba.chunks_exact(4).zip(b.rgba.chunks_exact(4)) {
            let alpha = p[3].abs_diff(q[3]);
            difference.max_alpha_difference = difference.max_alpha_difference.max(alpha);
            difference.alpha_differs_at_all += usize::from(alpha > 0);
            difference.alpha_differs += usize::from(alpha > 64);
            difference.painted[0] += usize::from(p[3] > 128);
            difference.painted[1] += usize::from(q[3] > 128);
            let opaque = p[3] == 255 && q[3] == 255;
            difference.colour_differs +=
                usize::from(opaque && (0..3).any(|i| p[i].abs_diff(q[i]) > 16));
        }
        difference
    }
}

#[tokio::test]
async fn the_server_renders_the_picture_as_the_browser_draws_it() {
    // The peer flow lets the test read the page's master canvas as the page exports it: a newcomer
    // that joins gets the `canvasState` the page answers the server's `canvasRequest` with
    // (`board.toDataURL()`). The server records and renders the room the same way in either flow.
    let server = Server::start_with(&["--newcomer-picture", "peer"]);
    let driver = Driver::start();
    let room = room_name("rendering");
    let alice = Browser::open(&driver, &room_url(&server, "rendering")).await;

    // A thick red stroke across the top…
    alice.pick_color(RED).await;
    alice.set_size(40).await;
    alice.draw(&line((200.0, 250.0), (1400.0, 250.0), 12)).await;
    // …a thin blue zigzag (every turn is where two segments' round caps meet)…
    alice.pick_color("#1e88e5").await;
    alice.set_size(4).await;
    let zigzag: Vec<(f64, f64)> = (0..=12)
        .map(|i| {
            (
                200.0 + 100.0 * f64::from(i),
                if i % 2 == 0 { 420.0 } else { 520.0 },
            )
        })
        .collect();
    alice.draw(&zigzag).await;
    // …short thick green dashes, mostly caps (square caps would add a sixth to each)…
    alice.pick_color("#43a047").await;
    alice.set_size(64).await;
    for i in 0..12 {
        let x = 160.0 + 110.0 * f64::from(i);
        alice.draw(&[(x, 720.0), (x + 30.0, 720.0)]).await;
    }
    // …dots (clicks without moving), big and small…
    alice.pick_color("#000000").await;
    alice.set_size(40).await;
    alice.draw(&[(800.0, 620.0)]).await;
    alice.set_size(4).await;
    alice.draw(&[(900.0, 620.0)]).await;
    // …a wide eraser up across the zigzag and then along the red stroke…
    alice.set_size(64).await;
    alice.click("#tool-eraser").await;
    alice
        .wait_until(
            "document.body.dataset.tool === 'eraser'",
            "the eraser is selected",
        )
        .await;
    let mut eraser = line((1000.0, 600.0), (1000.0, 250.0), 7);
    eraser.extend(
        line((1000.0, 250.0), (500.0, 250.0), 10)
            .into_iter()
            .skip(1),
    );
    alice.draw(&eraser).await;
    // …and last, a purple dot in an empty corner, only to tell when the server has everything.
    const PURPLE_RGB: [u8; 3] = [0x8e, 0x24, 0xaa];
    alice.pick_color("#8e24aa").await;
    alice.set_size(20).await;
    let last = [(1500.0, 100.0)];
    alice.draw(&last).await;

    // A page's operations reach the room in order: once the server's picture has the last one, it
    // has them all.
    let rendered = wait_for_server_picture(
        &server,
        &room,
        &[(&last, Px::Paint(PURPLE_RGB))],
        "the server's picture has the last dot",
    )
    .await;

    // The page's master canvas, as the page itself exports it for a newcomer.
    let mut newcomer = server.join(&room).await;
    let state = newcomer.next_of_type("canvasState").await;
    let drawn = Image::from_data_url(state["data"].as_str().expect("canvasState carries data"));
    assert_eq!(
        (drawn.width, drawn.height),
        (LOGICAL_WIDTH as u32, LOGICAL_HEIGHT as u32),
        "the master canvas is the room's logical size"
    );

    let difference = Difference::between(&drawn, &rendered);
    eprintln!("the page's master canvas against the server's rendering: {difference:?}");

    // Both show the strokes where they were drawn: a few points of each, checked on both.
    let red_kept = [
        (250.0, 250.0),
        (400.0, 240.0),
        (1200.0, 260.0),
        (1390.0, 250.0),
    ];
    let erased = [
        (510.0, 250.0),
        (700.0, 235.0),
        (990.0, 265.0),
        (1000.0, 250.0),
        (1000.0, 420.0),
    ];
    let blue = [
        (200.0, 420.0),
        (300.0, 520.0),
        (400.0, 420.0),
        (1400.0, 420.0),
    ];
    let green = [(175.0, 720.0), (1395.0, 720.0), (700.0, 700.0)];
    let black = [(800.0, 620.0), (785.0, 610.0)];
    let blank = [
        (100.0, 100.0),
        (1500.0, 850.0),
        (800.0, 350.0),
        (250.0, 600.0),
    ];
    let probes: [Probe; 6] = [
        ("the red stroke", &red_kept, Px::Paint(RED_RGB)),
        ("the erased path", &erased, Px::Blank),
        (
            "the blue zigzag's corners",
            &blue,
            Px::Paint([0x1e, 0x88, 0xe5]),
        ),
        ("the green dashes", &green, Px::Paint([0x43, 0xa0, 0x47])),
        ("the big black dot", &black, Px::Paint([0, 0, 0])),
        ("nothing", &blank, Px::Blank),
    ];
    for (picture, whose) in [
        (&drawn, "the page's master canvas"),
        (&rendered, "the server's rendering"),
    ] {
        for (what, points, want) in probes {
            let got: Vec<[u8; 4]> = points.iter().map(|&p| picture.at(p)).collect();
            assert!(
                picture.all(points, want),
                "{whose} at {what}: expected {want:?} at {points:?}, got RGBA {got:?}"
            );
        }
    }

    let Difference {
        pixels,
        alpha_differs,
        painted: [painted_drawn, painted_rendered],
        colour_differs,
        ..
    } = difference;
    assert!(
        painted_drawn > 50_000,
        "the picture is substantial enough to compare: {difference:?}"
    );
    assert!(
        alpha_differs * 200 < pixels,
        "fewer than 0.5% of the pixels differ in alpha by more than 64: {difference:?}"
    );
    assert!(
        painted_drawn.abs_diff(painted_rendered) * 50 <= painted_drawn.max(painted_rendered),
        "the painted areas are within 2% of each other: {difference:?}"
    );
    assert!(
        colour_differs * 200 < painted_drawn,
        "fewer than 0.5% of the painted pixels differ in colour: {difference:?}"
    );
}

// ---- a cluster ----

/// A node of a cluster on `redis`, ready (connected) when returned.
async fn cluster_node(redis: &common::Redis, name: &str) -> Server {
    let url = redis.url();
    let server = Server::start_with(&["--redis-url", &url, "--node-id", name]);
    let ready = server.http_url("/readyz");
    tokio::task::spawn_blocking(move || common::wait_for_status(&ready, 200, DEADLINE))
        .await
        .expect("the readiness poll ran");
    server
}

#[tokio::test]
async fn two_pages_on_two_cluster_nodes_draw_together() {
    let redis = common::Redis::start();
    let node1 = cluster_node(&redis, "n1").await;
    let node2 = cluster_node(&redis, "n2").await;
    let driver = Driver::start();
    let room = room_name("cluster");
    let alice = Browser::open(&driver, &room_url(&node1, "cluster")).await;
    let bob = Browser::open(&driver, &room_url(&node2, "cluster")).await;
    for page in [&alice, &bob] {
        page.wait_until(
            "document.getElementById('people').dataset.count === '2'",
            "#people counts both nodes' pages",
        )
        .await;
    }

    draw_red_middle_stroke(&alice).await;
    bob.wait_for_pixels(
        &ON_STROKE,
        Px::Paint(RED_RGB),
        "Bob's board on the other node shows Alice's stroke",
    )
    .await;
    bob.assert_pixels(&FAR_FROM_STROKE, Px::Blank, "Bob's board away from it")
        .await;

    // Both nodes render the room the same: the picture lives in Redis.
    let want: &[(&[(f64, f64)], Px)] = &[(&ON_STROKE, Px::Paint(RED_RGB))];
    let one = wait_for_server_picture(&node1, &room, want, "node 1 has the stroke").await;
    let two = wait_for_server_picture(&node2, &room, want, "node 2 has the stroke").await;
    assert!(one == two, "both nodes serve the same pixels");
}
