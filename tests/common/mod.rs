//! Test support: the real `livecanvas` binary on an ephemeral loopback port, and a WebSocket client
//! that waits for events (with a generous deadline that only turns a hang into a failure).

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod browser;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Whether `message` is a `presence` or a `presenceChange`, or a batch with one.
pub fn is_presence(message: &Value) -> bool {
    match message["type"].as_str() {
        Some("presence" | "presenceChange") => true,
        Some("batch") => message["messages"]
            .as_array()
            .is_some_and(|all| all.iter().any(is_presence)),
        _ => false,
    }
}

/// Per-address limits loose enough for one test process opening a whole crowd from 127.0.0.1.
pub const ONE_ADDRESS_CROWD: [&str; 6] = [
    "--max-connections-per-ip",
    "100000",
    "--connection-rate-per-ip",
    "100000",
    "--connection-burst-per-ip",
    "100000",
];

/// Long enough for a loaded CI machine, short enough that a hang fails the test.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

pub fn frontend_dir() -> String {
    format!("{}/frontend", env!("CARGO_MANIFEST_DIR"))
}

/// The server process; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The `--metrics-bind` listener, when started with one.
    pub metrics_addr: Option<SocketAddr>,
    _stdout: BufReader<ChildStdout>,
    /// The data directory this server got of its own (removed with it), unless the test gave one.
    _data_dir: Option<tempfile::TempDir>,
}

/// The binary under test: this build's, or `LIVECANVAS_TEST_BINARY` (e.g. a release build, or an
/// older build to see a test fail before a fix).
pub fn server_binary() -> std::ffi::OsString {
    std::env::var_os("LIVECANVAS_TEST_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_livecanvas").into())
}

/// A fresh, empty data directory, removed when dropped.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("livecanvas-test-")
        .tempdir()
        .expect("a temporary data directory")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts the binary with extra flags, and waits for the line announcing its address. Unless
    /// the flags name a `--data-dir`, the server gets a fresh one of its own.
    pub fn start_with(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Like `start_with`, with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(args, env, None, None)
    }

    /// Like `start_with`, logging at `level` (`RUST_LOG`) into the file `log`.
    pub fn start_logging(args: &[&str], level: &str, log: &std::path::Path) -> Server {
        let file = std::fs::File::create(log).expect("a log file for the server");
        Server::launch(args, &[("RUST_LOG", level)], None, Some(file))
    }

    /// Like `start_with`, in a process whose open-file limit (soft and hard) is `open_files`, as
    /// `prlimit --nofile` would start it.
    pub fn start_with_open_files(args: &[&str], open_files: u64) -> Server {
        Server::launch(args, &[], Some(open_files), None)
    }

    fn launch(
        args: &[&str],
        env: &[(&str, &str)],
        open_files: Option<u64>,
        log: Option<std::fs::File>,
    ) -> Server {
        let own_data_dir = (!args.contains(&"--data-dir")).then(data_dir);
        let mut command = Command::new(server_binary());
        command
            .args(["--bind", "127.0.0.1:0", "--frontend-dir", &frontend_dir()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        if let Some(log) = log {
            command.stderr(log);
        }
        if let Some(dir) = &own_data_dir {
            command.env("LIVECANVAS_DATA_DIR", dir.path());
        }
        die_with_parent(&mut command);
        if let Some(open_files) = open_files {
            limit_open_files(&mut command, open_files);
        }
        let mut child = command.spawn().expect("the livecanvas binary starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let addr = read_announced_addr(&mut stdout, "listening on ");
        let metrics_addr = if args.contains(&"--metrics-bind") {
            read_announced_addr(&mut stdout, "metrics on ")
        } else {
            None
        };
        match addr {
            Some(addr) => Server {
                child,
                addr,
                metrics_addr,
                _stdout: stdout,
                _data_dir: own_data_dir,
            },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the server exited before listening: {status:?}");
            }
        }
    }

    /// Sends SIGTERM, as an orchestrator stopping the container would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the server at once (SIGKILL), as a crash or an out-of-memory kill would.
    pub fn kill_now(&mut self) {
        self.child.kill().expect("the server can be killed");
        self.child.wait().expect("the killed server is reaped");
    }

    /// Waits (polling the process table) until the server exits, at most `deadline`.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// The value of one series of `/metrics` (0 when absent), e.g.
    /// `livecanvas_bytes_out_by_type_total{type="presence"}` (blocking).
    pub fn metric(&self, series: &str) -> f64 {
        let (status, _, body) = http_get(&self.http_url("/metrics"));
        assert_eq!(status, 200, "/metrics answers");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `/healthz` as JSON (blocking; call it from `spawn_blocking` inside async tests).
    pub fn health(&self) -> serde_json::Value {
        ureq::get(&self.http_url("/healthz"))
            .call()
            .expect("healthz answers")
            .into_json()
            .expect("healthz is JSON")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, room: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, room)
    }

    pub async fn join(&self, room: &str) -> Client {
        Client::join(&self.ws_url(room)).await
    }
}

/// Runs the binary to completion (for start-up errors and subcommands): exit code and stderr.
pub fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let scratch = data_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_livecanvas"))
        .env("LIVECANVAS_DATA_DIR", scratch.path())
        .args(args)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// A test binary that is killed (a timeout, ^C) cannot run `Drop`; make its servers die with it.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child's open-file limit, soft and hard: the hard one too, as the server raises its soft
/// limit to the hard one.
fn limit_open_files(command: &mut Command, open_files: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: open_files as libc::rlim_t,
        rlim_max: open_files as libc::rlim_t,
    };
    // SAFETY: setrlimit is async-signal-safe and only reads `limit`, a copy in the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads the server's stdout up to the line `livecanvas {what}http(s)://ADDR`.
fn read_announced_addr(stdout: &mut BufReader<ChildStdout>, what: &str) -> Option<SocketAddr> {
    let prefix = format!("livecanvas {what}");
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(url) = line.trim().strip_prefix(prefix.as_str()) {
            let addr = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))?;
            return addr.parse().ok();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client speaking the protocol, as a test would like to talk to it.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server answered the upgrade with, if any.
    pub protocol: Option<String>,
    /// Our id, from `welcome`.
    pub id: String,
    pub welcome: Value,
    /// The presence list as the messages read so far make it.
    pub roster: Roster,
}

/// The presence list as a client knows it: the `presence` it got after its welcome, with every
/// `presenceChange` read since applied, as the page does.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// `{clientId, name, color}` objects, in the order they were listed.
    pub members: Vec<Value>,
    pub total: u64,
}

impl Roster {
    /// Applies `message` if it is a `presence`, a `presenceChange` or a batch holding them;
    /// whether it was.
    pub fn apply(&mut self, message: &Value) -> bool {
        let id = |m: &Value| m["clientId"].as_str().unwrap_or_default().to_owned();
        match message["type"].as_str() {
            Some("batch") => message["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .fold(false, |seen, m| self.apply(m) | seen),
            Some("presence") => {
                self.members = message["members"].as_array().cloned().unwrap_or_default();
                self.total = message["total"].as_u64().expect("presence has a total");
                true
            }
            Some("presenceChange") => {
                let list = |field: &str| message[field].as_array().cloned().unwrap_or_default();
                let left: Vec<String> = list("left")
                    .iter()
                    .map(|id| id.as_str().expect("left holds ids").to_owned())
                    .collect();
                self.members.retain(|m| !left.contains(&id(m)));
                for renamed in list("renamed") {
                    let slot = self.members.iter_mut().find(|m| id(m) == id(&renamed));
                    *slot.expect("a renamed member was listed") = renamed;
                }
                for joined in list("joined") {
                    assert!(
                        self.members.iter().all(|m| id(m) != id(&joined)),
                        "joined twice: {joined}"
                    );
                    self.members.push(joined);
                }
                self.total = message["total"].as_u64().expect("a change has a total");
                true
            }
            _ => false,
        }
    }

    /// The list as one `presence` message would give it.
    pub fn as_presence(&self) -> Value {
        serde_json::json!({"type": "presence", "members": self.members, "total": self.total})
    }
}

impl Client {
    /// Connects and reads the `welcome`.
    pub async fn join<R: IntoClientRequest + Unpin>(request: R) -> Client {
        match Client::join_or_close(request).await {
            Ok(client) => client,
            Err(close) => panic!("the join was refused: {close:?}"),
        }
    }

    /// Connects and reads the first message: the `welcome` of a member, or the close frame of a
    /// join the server refused (after the upgrade).
    pub async fn join_or_close<R: IntoClientRequest + Unpin>(
        request: R,
    ) -> Result<Client, CloseFrame> {
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade succeeds");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut client = Client {
            ws,
            protocol,
            id: String::new(),
            welcome: Value::Null,
            roster: Roster::default(),
        };
        let welcome = match client.next_message().await {
            Message::Text(text) => serde_json::from_str::<Value>(&text).expect("JSON"),
            Message::Close(Some(frame)) => return Err(frame),
            other => panic!("expected a welcome or a close frame, got {other:?}"),
        };
        assert_eq!(welcome["type"], "welcome", "first message: {welcome}");
        client.id = welcome["clientId"].as_str().expect("clientId").to_owned();
        client.welcome = welcome;
        Ok(client)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(EVENT_DEADLINE, self.ws.send(Message::text(text.to_owned())))
            .await
            .expect("the server takes the message before the deadline")
            .expect("send");
    }

    /// Sends a text message split over several frames.
    pub async fn send_fragmented(&mut self, text: &str, pieces: usize) {
        let bytes = text.as_bytes();
        let chunk = bytes.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        for (i, part) in chunks.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let last = i + 1 == chunks.len();
            self.send_frame(Frame::message(part.to_vec(), opcode, last))
                .await;
        }
    }

    pub async fn send_frame(&mut self, frame: Frame) {
        self.ws
            .send(Message::Frame(frame))
            .await
            .expect("send frame");
    }

    /// The next message, whatever it is (pings are answered by the library while we read).
    pub async fn next_message(&mut self) -> Message {
        // One deadline for the whole wait: the server's pings must not keep a hung test alive.
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a message before the deadline")
                .expect("the connection is open")
                .expect("a well-formed message");
            match message {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        let message = match self.next_message().await {
            Message::Text(text) => serde_json::from_str(&text).expect("the server sends JSON"),
            other => panic!("expected a text message, got {other:?}"),
        };
        self.roster.apply(&message);
        message
    }

    /// Reads until the presence list, as the messages make it, satisfies `done`; returns it (as
    /// a `presence` message).
    pub async fn presence_until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let message = self.next_json().await;
            if is_presence(&message) {
                let presence = self.roster.as_presence();
                if done(&presence) {
                    return presence;
                }
            }
        }
    }

    /// Skips messages until one of type `kind` arrives.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        let wait = async {
            loop {
                let message = self.next_json().await;
                if message["type"] == kind {
                    return message;
                }
            }
        };
        tokio::time::timeout(EVENT_DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no {kind} message before the deadline"))
    }

    /// The next message that is not a `clientCount`, a `presence` or a `presenceChange` (they
    /// come whenever members come, go or rename themselves).
    pub async fn next_event(&mut self) -> Value {
        loop {
            let message = self.next_json().await;
            if message["type"] != "clientCount" && !is_presence(&message) {
                return message;
            }
        }
    }

    /// Waits until the room's count is `n`.
    pub async fn wait_for_count(&mut self, n: u64) {
        loop {
            let message = self.next_of_type("clientCount").await;
            if message["clientCount"] == n {
                return;
            }
        }
    }

    /// Waits for the server's close frame, skipping anything before it.
    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            match self.next_message().await {
                Message::Close(Some(frame)) => return frame,
                Message::Close(None) => panic!("close without a code"),
                _ => continue,
            }
        }
    }
}

/// A draw message from the demo's protocol, with the segment's start at (`x`, `y`).
pub fn draw_at(x: f64, y: f64) -> Value {
    serde_json::json!({"type":"draw","color":"#112233","startX":x,"startY":y,"endX":x + 10.0,"endY":y,"size":4,"tool":"pen"})
}

/// The default logical canvas size.
pub const CANVAS_WIDTH: u32 = 1600;
pub const CANVAS_HEIGHT: u32 = 900;

/// A PNG data URL of the whole default canvas, transparent except for its first `noisy_rows` rows
/// of pseudo-random pixels seeded by `tag` (so pictures are told apart, and can be made large).
pub fn png_data_url(tag: u8, noisy_rows: u32) -> String {
    use base64::Engine as _;
    let row_bytes = CANVAS_WIDTH as usize * 4;
    let mut pixels = vec![0u8; row_bytes * CANVAS_HEIGHT as usize];
    let mut state = u32::from(tag).wrapping_mul(2_654_435_761).max(1);
    for byte in pixels.iter_mut().take(row_bytes * noisy_rows as usize) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *byte = state as u8;
    }
    pixels[0] = tag;
    pixels[3] = 255;
    let mut encoded = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut encoded, CANVAS_WIDTH, CANVAS_HEIGHT);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().expect("PNG header");
        writer.write_image_data(&pixels).expect("PNG data");
    }
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(encoded)
    )
}

/// A small valid snapshot of the default canvas, told apart by `tag` (made once per tag).
pub fn snapshot(tag: u8) -> String {
    static MADE: std::sync::Mutex<Vec<(u8, String)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, url)) = made.iter().find(|(t, _)| *t == tag) {
        return url.clone();
    }
    let url = png_data_url(tag, 0);
    made.push((tag, url.clone()));
    url
}

/// A decoded PNG: 8-bit straight-alpha RGBA, row by row.
#[derive(PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Image {
    /// Decodes a PNG of any colour type and depth into 8-bit RGBA.
    pub fn decode(png_bytes: &[u8]) -> Image {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a readable PNG");
        let mut buffer = vec![0; reader.output_buffer_size().expect("a PNG of a sane size")];
        let info = reader.next_frame(&mut buffer).expect("a PNG that decodes");
        let rgba = buffer[..info.buffer_size()]
            .chunks_exact(info.color_type.samples())
            .flat_map(|px| match *px {
                [r, g, b, a] => [r, g, b, a],
                [r, g, b] => [r, g, b, 255],
                [l, a] => [l, l, l, a],
                [l] => [l, l, l, 255],
                _ => unreachable!("1 to 4 samples"),
            })
            .collect();
        Image {
            width: info.width,
            height: info.height,
            rgba,
        }
    }

    /// The picture a `data:image/png;base64,` URL carries.
    pub fn from_data_url(data_url: &str) -> Image {
        use base64::Engine as _;
        let encoded = data_url
            .strip_prefix("data:image/png;base64,")
            .unwrap_or_else(|| panic!("a PNG data URL: {:.60}", data_url));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("valid base64");
        Image::decode(&bytes)
    }

    /// The RGBA of pixel (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        assert!(
            x < self.width && y < self.height,
            "({x}, {y}) is outside the {}x{} picture",
            self.width,
            self.height
        );
        let i = (y as usize * self.width as usize + x as usize) * 4;
        self.rgba[i..i + 4].try_into().expect("four samples")
    }
}

/// `GET url` (blocking): the status, the content type and the body. An error status is an answer
/// here, not a failure.
pub fn http_get(url: &str) -> (u16, String, Vec<u8>) {
    let response = match ureq::get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("GET {url}: {err}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_owned();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body)
        .unwrap_or_else(|e| panic!("the body of GET {url}: {e}"));
    (status, content_type, body)
}

/// A real `redis-server` (Debian's package) of the test's own: a free loopback port, a temporary
/// directory, AOF on; killed when dropped. Never the system's service.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Extra flags, given again on every restart.
    extra: Vec<String>,
    /// Set by `--requirepass`: readiness checks authenticate first.
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With extra `redis-server` flags (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("livecanvas-redis-")
            .tempdir()
            .expect("a temporary directory for Redis");
        let port = free_port();
        let password = extra
            .iter()
            .position(|flag| *flag == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| p.to_string());
        let mut redis = Redis {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and directory: what the AOF holds is read back.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().expect("a UTF-8 temporary path");
        let mut command = Command::new(redis_binary());
        command
            .args(["--port", &port, "--bind", "127.0.0.1", "--dir", dir])
            .args(["--save", "", "--appendonly", "yes"])
            // Every write is on disk before Redis answers: a kill loses nothing in these tests
            // (production's everysec may lose the last second).
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .args(&self.extra)
            .stdout(Stdio::null());
        die_with_parent(&mut command);
        self.child = Some(command.spawn().expect(
            "redis-server starts (install Debian's redis-server package: apt-get install redis-server)",
        ));
        let deadline = std::time::Instant::now() + EVENT_DEADLINE;
        while !self.answers_ping() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as a hung host would.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen Redis go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("Redis runs").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command over RESP (e.g. `["INFO", "commandstats"]`): a status or integer line, or a
    /// bulk string's text.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("Redis");
        stream
            .set_read_timeout(Some(EVENT_DEADLINE))
            .expect("a read timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        if let Some(password) = &self.password {
            let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
            request.insert_str(0, &auth);
        }
        stream
            .write_all(request.as_bytes())
            .expect("write to Redis");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if self.password.is_some() {
            reader.read_line(&mut line).expect("an answer to AUTH");
            line.clear();
        }
        reader.read_line(&mut line).expect("an answer from Redis");
        let Some(len) = line.strip_prefix('$') else {
            return line;
        };
        let len: usize = len.trim().parse().unwrap_or(0);
        let mut body = vec![0u8; len + 2];
        reader
            .read_exact(&mut body)
            .expect("a whole answer from Redis");
        String::from_utf8_lossy(&body[..len]).into_owned()
    }

    fn answers_ping(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && self.command(&["PING"]).starts_with("+PONG")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_binary() -> String {
    std::env::var("LIVECANVAS_TEST_REDIS").unwrap_or_else(|_| "redis-server".into())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// GET `url`'s status, without failing on 5xx.
pub fn http_status(url: &str) -> u16 {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(err) => panic!("{url}: {err}"),
    }
}

/// Polls `url` until it answers `status` (a state with no event to wait for), at most
/// `deadline`.
pub fn wait_for_status(url: &str, status: u16, deadline: Duration) {
    let start = std::time::Instant::now();
    loop {
        let now = http_status(url);
        if now == status {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{url} still answers {now}, not {status}, after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real HAProxy (Debian's package) of the test's own in front of `backend`: a free loopback
/// port, a temporary directory for its configuration, HTTP mode with `option forwardfor` (the
/// client's address appended to `X-Forwarded-For`), `extra_frontend` lines added to its frontend;
/// killed when dropped.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(backend: SocketAddr, extra_frontend: &[&str]) -> Haproxy {
        Haproxy::start_with(backend, extra_frontend, "")
    }

    /// As `start`, with `server_options` on the backend's server line (e.g. `send-proxy-v2`).
    pub fn start_with(
        backend: SocketAddr,
        extra_frontend: &[&str],
        server_options: &str,
    ) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("livecanvas-haproxy-")
            .tempdir()
            .expect("a temporary directory for HAProxy");
        let port = free_port();
        let extra: String = extra_frontend
            .iter()
            .map(|line| format!("    {line}\n"))
            .collect();
        let config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode http\n    option forwardfor\n    timeout connect 5s\n    \
             timeout client 30s\n    timeout server 30s\n    timeout tunnel 1h\n\
             frontend canvas\n    bind 127.0.0.1:{port}\n{extra}    default_backend livecanvas\n\
             backend livecanvas\n    server node {backend} {server_options}\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let mut command = Command::new("haproxy");
        command
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .expect("haproxy starts (install Debian's haproxy package: apt-get install haproxy)");
        let proxy = Haproxy {
            child,
            port,
            _dir: dir,
        };
        // Listening once a request through it reaches the server.
        let deadline = std::time::Instant::now() + EVENT_DEADLINE;
        while !(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http_status(&proxy.http_url("/readyz")) == 200)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8): a client at
/// an address of its own, as seen by whatever it connects to.
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let source = SocketAddr::from((from, 0));
    socket
        .bind(&source.into())
        .expect("bind a loopback source address");
    socket.connect(&to.into()).expect("connect");
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(EVENT_DEADLINE))
        .expect("a read timeout");
    stream
}

/// Sends `request` (a whole HTTP/1.1 request head, and body if any) on `stream` and reads the
/// status line's code; the stream stays open (a 101 keeps the WebSocket).
pub fn send_raw_request(stream: &mut std::net::TcpStream, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    stream
        .write_all(request.as_bytes())
        .expect("send a request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head)
}

/// A WebSocket upgrade request for `path`, with `extra` header lines (each ending in CRLF).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}
