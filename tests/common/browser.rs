//! Browser test support: headless Chromium (Debian's `chromium`) driven over WebDriver (Debian's
//! `chromedriver`), one browser session per simulated person, with helpers to draw with real pointer
//! input and to read the pixels of a page's visible `#board` canvas and of the server's picture.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Image, Server};
use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MouseActions, PointerAction, MOUSE_BUTTON_LEFT,
};
use fantoccini::error::NewSessionError;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const INSTALL_HINT: &str = "run `apt-get install -y chromium chromium-driver`";

/// How long to wait for something the page should do; only turns a hang into a failure.
pub const DEADLINE: Duration = Duration::from_secs(15);
/// Starting a browser is slower, all the more when several tests start theirs at once.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(60);
pub const POLL: Duration = Duration::from_millis(50);

/// The room's logical canvas (the server's default, sent in `welcome`).
pub const LOGICAL_WIDTH: f64 = 1600.0;
pub const LOGICAL_HEIGHT: f64 = 900.0;

/// A palette swatch, so its colour is known exactly: `#e53935`.
pub const RED: &str = "#e53935";
pub const RED_RGB: [u8; 3] = [0xe5, 0x39, 0x35];

// ---- a chromedriver process per test, a browser session per person ----

/// `chromedriver` on a free loopback port; killed when dropped (after every session was closed).
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Driver {
    pub fn start() -> Arc<Driver> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing, so the browser tests cannot run: {INSTALL_HINT}"
            );
        }
        let port = super::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start ({e}): {INSTALL_HINT}"));
        Arc::new(Driver { child, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One person: a fresh headless Chromium (own profile) showing a page of the app.
pub struct Browser {
    pub client: Client,
    pub session: String,
    pub driver: Arc<Driver>,
    /// Dropped after the session was deleted (fields drop after `Browser::drop`).
    _profile: Profile,
}

/// A temporary Chromium profile directory, removed when dropped.
pub struct Profile(PathBuf);

impl Profile {
    pub fn create() -> Profile {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "livecanvas-browser-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary Chromium profile directory");
        Profile(path)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a pixel of the board should look like.
#[derive(Clone, Copy, Debug)]
pub enum Px {
    /// Fully transparent (nothing drawn, or erased, or cleared).
    Blank,
    /// Opaque, of this colour (give or take a little rounding).
    Paint([u8; 3]),
}

impl Px {
    pub fn matches(self, rgba: [u8; 4]) -> bool {
        match self {
            Px::Blank => rgba[3] == 0,
            Px::Paint(rgb) => rgba[3] >= 250 && (0..3).all(|i| rgba[i].abs_diff(rgb[i]) <= 8),
        }
    }
}

impl Browser {
    /// Opens `url` in a new browser and waits until the page is connected and has its picture.
    pub async fn open(driver: &Arc<Driver>, url: &str) -> Browser {
        Browser::open_with(driver, url, None).await
    }

    /// As `open`, in Chromium's mobile emulation of a phone held upright: 390x844 CSS pixels at
    /// devicePixelRatio 3, with touch input (WebDriver `touch` pointers dispatch touch events).
    pub async fn open_phone(driver: &Arc<Driver>, url: &str) -> Browser {
        let phone = json!({
            "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 3.0, "touch": true },
        });
        Browser::open_with(driver, url, Some(phone)).await
    }

    /// As `open_phone`, the phone turned on its side: 844x390 CSS pixels.
    pub async fn open_phone_landscape(driver: &Arc<Driver>, url: &str) -> Browser {
        let phone = json!({
            "deviceMetrics": { "width": 844, "height": 390, "pixelRatio": 3.0, "touch": true },
        });
        Browser::open_with(driver, url, Some(phone)).await
    }

    /// As `open`, with `goog:chromeOptions.mobileEmulation` set to `mobile` if given.
    pub async fn open_with(driver: &Arc<Driver>, url: &str, mobile: Option<Value>) -> Browser {
        let browser = Browser::load(driver, url, mobile).await;
        browser
            .wait_until(
                "document.getElementById('status').dataset.state === 'connected'",
                "the page's WebSocket is connected (if it never is, is it blocked, e.g. by the \
                 Content-Security-Policy's connect-src?)",
            )
            .await;
        browser
            .wait_until(
                "document.body.dataset.synced === 'true'",
                "the page has its picture",
            )
            .await;
        browser
    }

    /// Opens `url` in a fresh browser and returns at once, connected or not (a page that must
    /// be refused, say).
    pub async fn load(driver: &Arc<Driver>, url: &str, mobile: Option<Value>) -> Browser {
        let profile = Profile::create();
        let client = new_session_with(driver, &profile.0, mobile).await;
        let session = client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session was created");
        let browser = Browser {
            client,
            session,
            driver: Arc::clone(driver),
            _profile: profile,
        };
        browser
            .client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the browser opens {url}: {e}"));
        browser
    }

    /// Presses and releases one key (a character, or a WebDriver key such as Enter) where the
    /// page has the focus.
    pub async fn press(&self, key: char) {
        let keys = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client
            .perform_actions(keys)
            .await
            .expect("the browser presses the key");
    }

    /// Resizes the window so that the page's viewport is `width` x `height` CSS pixels (the window
    /// adds its own frame), and waits until the page has it.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let frame = self
            .js(
                "return [outerWidth - innerWidth, outerHeight - innerHeight];",
                vec![],
            )
            .await;
        let frame: Vec<u32> = serde_json::from_value(frame).expect("the window's frame");
        self.client
            .set_window_size(width + frame[0], height + frame[1])
            .await
            .expect("the window resizes");
        self.wait_until(
            &format!("innerWidth === {width} && innerHeight === {height}"),
            &format!("the viewport is {width}x{height}"),
        )
        .await;
    }

    /// Reloads the page and waits until it is connected and has its picture again.
    pub async fn reload(&self) {
        self.client.refresh().await.expect("the page reloads");
        self.wait_until(
            "document.getElementById('status').dataset.state === 'connected'",
            "the reloaded page is connected",
        )
        .await;
        self.wait_until(
            "document.body.dataset.synced === 'true'",
            "the reloaded page has its picture",
        )
        .await;
    }

    /// The board shows nothing where the middle stroke goes.
    pub async fn assert_shows_no_stroke(&self, what: &str) {
        self.assert_pixels(&ON_STROKE, Px::Blank, what).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("the script fails: {e}\n{script}"))
    }

    /// Polls the JS expression `condition` until it is true; fails after the deadline.
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let script = format!("return Boolean({condition});");
        let deadline = Instant::now() + DEADLINE;
        while self.js(&script, vec![]).await != Value::Bool(true) {
            if Instant::now() >= deadline {
                panic!(
                    "waited {DEADLINE:?} in vain until {what} (`{condition}`); the page: {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The page's state as the user sees it, for failure messages.
    pub async fn describe(&self) -> Value {
        self.js(
            "const people = document.getElementById('people');
             return { status: document.getElementById('status').dataset.state,
                      people: people.dataset.count, synced: document.body.dataset.synced,
                      tool: document.body.dataset.tool, url: location.href };",
            vec![],
        )
        .await
    }

    pub async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no {selector} on the page: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{selector} cannot be clicked: {e}"));
    }

    /// Clears the canvas for everyone, as a person does: Clear, then the dialog's confirmation.
    pub async fn clear_for_everyone(&self) {
        self.click("#clear").await;
        self.wait_until(
            "document.getElementById('clear-dialog').open",
            "the clear dialog is open",
        )
        .await;
        self.click("#clear-confirm").await;
    }

    /// Picks a palette colour (a click on its swatch).
    pub async fn pick_color(&self, color: &str) {
        self.click(&format!("#palette .swatch[data-color='{color}']"))
            .await;
        self.wait_until(
            &format!("document.getElementById('color').value === '{color}'"),
            &format!("the colour input shows {color}"),
        )
        .await;
    }

    /// Sets the brush size slider, as dragging it would (an `input` event).
    pub async fn set_size(&self, size: u32) {
        self.js(
            "const el = document.getElementById('size');
             el.value = String(arguments[0]);
             el.dispatchEvent(new Event('input', { bubbles: true }));",
            vec![json!(size)],
        )
        .await;
        self.wait_until(
            &format!("document.getElementById('size-value').textContent === '{size}'"),
            &format!("the brush size is {size}"),
        )
        .await;
    }

    /// The board's rectangle in the viewport: left, top, width and height in CSS pixels.
    pub async fn board_rect(&self) -> [f64; 4] {
        let rect = self
            .js(
                "const r = document.getElementById('board').getBoundingClientRect();
                 return [r.left, r.top, r.width, r.height];",
                vec![],
            )
            .await;
        serde_json::from_value(rect.clone())
            .unwrap_or_else(|e| panic!("the board's rectangle: {rect} ({e})"))
    }

    /// Draws through `points` (logical canvas coordinates) with the mouse: real pointer events
    /// dispatched by the browser, from a button press at the first point to its release at the last.
    pub async fn draw(&self, points: &[(f64, f64)]) {
        let rect = self.board_rect().await;
        let (first, rest) = points.split_first().expect("at least one point");
        let mut mouse = MouseActions::new("mouse".to_owned())
            .then(move_to(rect, *first, 20))
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            });
        for point in rest {
            mouse = mouse.then(move_to(rect, *point, 20));
        }
        mouse = mouse.then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
        self.client
            .perform_actions(mouse)
            .await
            .expect("the browser performs the pointer actions");
    }

    /// Moves the mouse, no button pressed, through `points` (logical canvas coordinates).
    pub async fn hover(&self, points: &[(f64, f64)]) {
        let rect = self.board_rect().await;
        let mut mouse = MouseActions::new("mouse".to_owned());
        for &point in points {
            mouse = mouse.then(move_to(rect, point, 30));
        }
        self.client
            .perform_actions(mouse)
            .await
            .expect("the browser moves the mouse");
    }

    /// The RGBA of the visible board's backing store at each logical point.
    pub async fn pixels(&self, points: &[(f64, f64)]) -> Vec<[u8; 4]> {
        let pixels = self
            .js(
                "const [points, w, h] = arguments;
                 const board = document.getElementById('board');
                 const ctx = board.getContext('2d');
                 return points.map(([x, y]) => Array.from(ctx.getImageData(
                   Math.floor(x * board.width / w), Math.floor(y * board.height / h), 1, 1).data));",
                vec![json!(points), json!(LOGICAL_WIDTH), json!(LOGICAL_HEIGHT)],
            )
            .await;
        serde_json::from_value(pixels).expect("RGBA pixels")
    }

    /// Asserts, now, that every point looks like `want`.
    pub async fn assert_pixels(&self, points: &[(f64, f64)], want: Px, what: &str) {
        let got = self.pixels(points).await;
        assert!(
            got.iter().all(|&rgba| want.matches(rgba)),
            "{what}: expected {want:?} at {points:?}, got RGBA {got:?}"
        );
    }

    /// Polls until every point looks like `want`; fails after the deadline.
    pub async fn wait_for_pixels(&self, points: &[(f64, f64)], want: Px, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.pixels(points).await;
            if got.iter().all(|&rgba| want.matches(rgba)) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {DEADLINE:?} in vain until {what}: expected {want:?} at {points:?}, \
                     got RGBA {got:?}; the page: {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The board shows the red middle stroke and nothing away from it.
    pub async fn assert_shows_only_the_red_stroke(&self, what: &str) {
        self.assert_pixels(&ON_STROKE, Px::Paint(RED_RGB), what)
            .await;
        self.assert_pixels(
            &FAR_FROM_STROKE,
            Px::Blank,
            &format!("{what}, away from the stroke"),
        )
        .await;
    }
}

/// A pointer move to logical point (`x`, `y`) of a board at `rect` (from `Browser::board_rect`).
/// MoveTo is relative to the viewport's top-left corner (MoveToElement would be relative to the
/// element's centre); pointer positions are whole CSS pixels.
fn move_to(rect: [f64; 4], (x, y): (f64, f64), duration_ms: u64) -> PointerAction {
    let [left, top, width, height] = rect;
    PointerAction::MoveTo {
        duration: Some(Duration::from_millis(duration_ms)),
        x: (left + x / LOGICAL_WIDTH * width).round(),
        y: (top + y / LOGICAL_HEIGHT * height).round(),
    }
}

impl Drop for Browser {
    /// Ends the session synchronously (even while a failed test unwinds, when no async code runs
    /// any more), so that chromedriver quits this Chromium before it is itself killed.
    fn drop(&mut self) {
        delete_session(self.driver.port, &self.session);
    }
}

/// A new WebDriver session with a fresh Chromium, retried while chromedriver is not listening yet.
pub async fn new_session(driver: &Driver, profile: &Path) -> Client {
    new_session_with(driver, profile, None).await
}

/// As `new_session`, with Chromium's `mobileEmulation` options if given.
pub async fn new_session_with(driver: &Driver, profile: &Path, mobile: Option<Value>) -> Client {
    let mut capabilities = Capabilities::new();
    let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--no-first-run", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
    });
    if let Some(mobile) = mobile {
        options["mobileEmulation"] = mobile;
    }
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    let deadline = Instant::now() + SESSION_DEADLINE;
    loop {
        let result = ClientBuilder::rustls()
            .expect("a TLS configuration for the WebDriver client")
            .capabilities(capabilities.clone())
            .connect(&driver.url())
            .await;
        match result {
            Ok(client) => return client,
            // Not listening yet: retry until the deadline.
            Err(
                e @ (NewSessionError::Failed(_)
                | NewSessionError::FailedC(_)
                | NewSessionError::Lost(_)),
            ) => {
                if Instant::now() >= deadline {
                    panic!("{CHROMEDRIVER} did not answer within {SESSION_DEADLINE:?}: {e}");
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("{CHROMEDRIVER} cannot start {CHROMIUM}: {e:?} ({INSTALL_HINT})"),
        }
    }
}

/// `DELETE /session/{id}`, answered once chromedriver has closed that browser.
pub fn delete_session(port: u16, session: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read(&mut [0; 1024]);
    }
}

// ---- strokes ----

/// `n + 1` points evenly spaced from `from` to `to`.
pub fn line(from: (f64, f64), to: (f64, f64), n: usize) -> Vec<(f64, f64)> {
    (0..=n)
        .map(|i| {
            let t = i as f64 / n as f64;
            (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t)
        })
        .collect()
}

/// The stroke most tests draw: left to right across the middle of the board.
pub fn middle_stroke() -> Vec<(f64, f64)> {
    line((400.0, 450.0), (1200.0, 450.0), 8)
}

/// Points on the middle stroke's centre line.
pub const ON_STROKE: [(f64, f64); 5] = [
    (450.0, 450.0),
    (600.0, 450.0),
    (800.0, 450.0),
    (1000.0, 450.0),
    (1150.0, 450.0),
];

/// Points far from the middle stroke (corners, above and below it, past its ends).
pub const FAR_FROM_STROKE: [(f64, f64); 6] = [
    (100.0, 100.0),
    (1500.0, 800.0),
    (800.0, 250.0),
    (800.0, 650.0),
    (200.0, 450.0),
    (1400.0, 450.0),
];

/// Draws the middle stroke in red, 12 logical pixels wide.
pub async fn draw_red_middle_stroke(page: &Browser) {
    page.pick_color(RED).await;
    page.set_size(12).await;
    page.draw(&middle_stroke()).await;
}

/// The room a test uses: its name, made unique to this test run.
pub fn room_name(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

pub fn room_url(server: &Server, name: &str) -> String {
    server.http_url(&format!("/r/{}", room_name(name)))
}

// ---- the server's picture ----

/// Reading the server's picture at the logical points the tests use.
pub trait AtPoints {
    fn at(&self, point: (f64, f64)) -> [u8; 4];
    fn all(&self, points: &[(f64, f64)], want: Px) -> bool;
}

impl AtPoints for Image {
    /// The RGBA at a logical point (the picture is the room's logical size).
    fn at(&self, (x, y): (f64, f64)) -> [u8; 4] {
        self.pixel(x.floor() as u32, y.floor() as u32)
    }

    fn all(&self, points: &[(f64, f64)], want: Px) -> bool {
        points.iter().all(|&p| want.matches(self.at(p)))
    }
}

/// `GET url` (on a blocking thread): the status and the body.
pub async fn http_get(url: String) -> (u16, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let (status, _, body) = super::http_get(&url);
        (status, body)
    })
    .await
    .expect("the GET ran")
}

/// The room's picture as the server renders it, transparent where nothing is (as the page's master
/// canvas is); `None` while nothing has been drawn in the room (404).
pub async fn server_picture(server: &Server, room: &str) -> Option<Image> {
    let url = server.http_url(&format!(
        "/api/rooms/{room}/canvas.png?background=transparent"
    ));
    let (status, body) = http_get(url.clone()).await;
    match status {
        200 => Some(Image::decode(&body)),
        404 => None,
        _ => panic!("GET {url}: {status} {}", String::from_utf8_lossy(&body)),
    }
}

/// Polls the server's picture of `room` until every group of points looks as wanted (so the server
/// has accepted the operations that made them so); fails after the deadline.
pub async fn wait_for_server_picture(
    server: &Server,
    room: &str,
    want: &[(&[(f64, f64)], Px)],
    what: &str,
) -> Image {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let picture = server_picture(server, room).await;
        if let Some(picture) = picture {
            if want.iter().all(|&(points, px)| picture.all(points, px)) {
                return picture;
            }
            if Instant::now() >= deadline {
                let got: Vec<Vec<[u8; 4]>> = want
                    .iter()
                    .map(|(points, _)| points.iter().map(|&p| picture.at(p)).collect())
                    .collect();
                panic!(
                    "waited {DEADLINE:?} in vain until {what}: wanted {want:?}, got RGBA {got:?}"
                );
            }
        } else if Instant::now() >= deadline {
            panic!("waited {DEADLINE:?} in vain until {what}: the room has no picture (404)");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts a server on `addr`, where a server that has just exited listened; retried until the
/// deadline while the port is not free yet (or was taken for a moment by someone else).
pub fn start_server_on(addr: SocketAddr, data_dir: &Path) -> Server {
    let bind = addr.to_string();
    let data_dir = data_dir.to_str().expect("a UTF-8 data directory");
    let deadline = Instant::now() + DEADLINE;
    loop {
        // A quick look first (std's listener sets SO_REUSEADDR, as the server's does), so that a
        // busy port is waited for without the noise of a failed start.
        if TcpListener::bind(addr).is_ok() {
            match std::panic::catch_unwind(|| {
                Server::start_with(&["--bind", &bind, "--data-dir", data_dir])
            }) {
                Ok(server) => return server,
                Err(panic) if Instant::now() >= deadline => std::panic::resume_unwind(panic),
                Err(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} was not free again within {DEADLINE:?} of the old server's exit"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until the server counts no open connection (every page's WebSocket is closed).
pub async fn wait_until_no_connection_is_open(server: &Server) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get(server.http_url("/healthz")).await;
        assert_eq!(status, 200, "healthz: {}", String::from_utf8_lossy(&body));
        let health: Value = serde_json::from_slice(&body).expect("healthz is JSON");
        if health["connections"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {DEADLINE:?} in vain until the server counts no connection: {health}"
        );
        tokio::time::sleep(POLL).await;
    }
}
