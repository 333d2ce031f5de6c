//! A bounded soak test: about a minute of hundreds of WebSocket clients joining, drawing, lurking,
//! vanishing (dropped TCP, or silent until the heartbeat evicts them), closing properly and
//! flooding, against the real binary; then the server must be back where it started: no
//! connection, no room, and its memory back near the baseline.
//!
//! Each room has an observer, connected for the whole run and reading all the time: what it
//! receives is the room's canvas. Every stroke carries its sender in `startX` and its sequence
//! number in `startY` (+ 900 x `endY`), so the observer can tell, for every well-behaved drawer,
//! that it got exactly the strokes that drawer sent, in order, once each.
//!
//! Run it with `cargo test --test soak -- --nocapture` to see the summary line. The seed of the
//! client mix can be changed with `SOAK_SEED=<n>`.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{snapshot, Server};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep, sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<Muffle>;

/// How long clients come and go. With the warm-up before and the wind-down after, the whole test
/// takes about a minute.
const CHURN: Duration = Duration::from_secs(60);
/// Clients are started evenly over this part of the churn, so that the last ones can live a while.
const SPAWN_WINDOW: Duration = Duration::from_secs(44);
/// Clients over the whole run (observers not included).
const CLIENTS: usize = 300;
/// Most clients connected at once (observers not included).
const MAX_AT_ONCE: usize = 150;
const ROOMS: usize = 5;
/// Flooders are spread evenly over the run.
const FLOODERS: usize = 6;
/// A flooder stops after this many strokes if the server has not closed it (it should long before).
const FLOOD_CAP: u32 = 5_000;
/// Flooders send this many strokes per flush.
const FLOOD_BATCH: u32 = 50;
/// A sleeper stays silent (no read, no pong, no message) this long: well past `--client-timeout`.
const SLEEP_FOR: Duration = Duration::from_secs(3);
/// The longest any single awaited step may take; only turns a hang into a failure.
const STEP: Duration = Duration::from_secs(10);
/// How far above the baseline the server's resident memory may end.
const RSS_TOLERANCE_KIB: u64 = 20 * 1024;
/// How often the monitor samples `/healthz` and the RSS during the run.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Well-behaved clients that stay at least this long must have received their picture
/// (`canvasState` or `canvasEmpty`), whatever the churn around them.
const PICTURE_WITHIN: Duration = Duration::from_secs(8);

/// One IP may open hundreds of connections; vanished clients are evicted within the run.
const SERVER_FLAGS: [&str; 14] = [
    "--max-connections-per-ip",
    "2000",
    "--connection-rate-per-ip",
    "1000",
    "--connection-burst-per-ip",
    "1000",
    "--heartbeat-interval",
    "200ms",
    "--client-timeout",
    "1s",
    "--snapshot-timeout",
    "500ms",
    // The soak exercises the original demo's peer flow: newcomers get pictures from peers.
    "--newcomer-picture",
    "peer",
    // Otherwise the defaults: 200 strokes/s, a burst of 400, closed after 400 dropped in a row.
];

/// Distinct pictures clients answer with (each is made once, which takes a moment).
const SNAPSHOT_TAGS: u8 = 4;
/// The logical canvas height: `startY` carries the sequence number modulo this.
const SEQ_BASE: u32 = 900;
/// The prefix of every `draw` the server relays (its `type` comes first), so that clients that do
/// not care about strokes can skip parsing them.
const DRAW_PREFIX: &str = r#"{"type":"draw","#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Draws 20-50 strokes/s (under the rate limit), answers `canvasRequest`, closes properly.
    Drawer,
    /// Only reads (and answers `canvasRequest`), closes properly.
    Lurker,
    /// Joins and closes properly within a couple of seconds.
    Quitter,
    /// Draws, then drops its TCP connection without a close frame.
    Dropper,
    /// Draws, then stops reading and answering pings: the heartbeat must evict it.
    Sleeper,
    /// Sends strokes as fast as it can: must be told `rate_limited`, then closed with 1008.
    Flooder,
}

impl Kind {
    /// Kinds whose every stroke must reach the room exactly once, in order.
    fn draws_politely(self) -> bool {
        matches!(self, Kind::Drawer | Kind::Dropper | Kind::Sleeper)
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    index: u32,
    kind: Kind,
    room: usize,
    /// When it stops its main activity (drawing or lurking).
    until: Instant,
    draws_per_second: u64,
}

/// What a client did and saw.
#[derive(Debug)]
struct Report {
    spec: Spec,
    joined: bool,
    sent: u32,
    rate_limited: bool,
    /// The server's close frame (code, reason), if one came.
    close: Option<(u16, String)>,
    /// How the connection ended without a close frame, if it did.
    cut: Option<String>,
    picture: Option<&'static str>,
    lived: Duration,
    answered: u32,
    late_answers: u32,
}

/// The observer's record of one sender.
struct Track {
    room: usize,
    received: Vec<u32>,
    /// The last sequence number the observer saw from this sender.
    seen: watch::Sender<Option<u32>>,
}

#[derive(Default)]
struct Shared {
    tracks: Mutex<HashMap<u32, Track>>,
    failures: Mutex<Vec<String>>,
    open: AtomicUsize,
    peak_open: AtomicUsize,
}

impl Shared {
    fn fail(&self, failure: String) {
        eprintln!("soak failure: {failure}");
        lock(&self.failures).push(failure);
    }

    /// A sender announces itself before its first stroke.
    fn register(&self, index: u32, room: usize) -> watch::Receiver<Option<u32>> {
        let (seen, receiver) = watch::channel(None);
        let track = Track {
            room,
            received: Vec::new(),
            seen,
        };
        lock(&self.tracks).insert(index, track);
        receiver
    }

    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_open.fetch_max(now, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A small deterministic PRNG (xorshift64*), so a failing mix can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn room_name(room: usize) -> String {
    format!("soak-{room}")
}

/// A stroke from `sender` numbered `seq`: `startX` = sender, `startY` + 900 x `endY` = seq.
fn stroke(sender: u32, seq: u32) -> String {
    format!(
        concat!(
            r##"{{"type":"draw","color":"#1e88e5","startX":{},"startY":{},"##,
            r#""endX":{},"endY":{},"size":3,"tool":"pen"}}"#
        ),
        sender,
        seq % SEQ_BASE,
        sender + 10,
        seq / SEQ_BASE
    )
}

/// The answer to a `canvasRequest` for `newcomer`: one of the prepared pictures.
fn canvas_state(newcomer: &Value, tag: u8) -> String {
    let picture = snapshot(tag % SNAPSHOT_TAGS);
    json!({"type": "canvasState", "clientId": newcomer, "data": picture}).to_string()
}

/// The sender and sequence number a relayed stroke carries.
fn decode_stroke(draw: &Value) -> Option<(u32, u32)> {
    let number = |field: &str| {
        draw[field]
            .as_f64()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
    };
    let sender = number("startX")? as u32;
    let low = number("startY")? as u32;
    let high = number("endY")? as u32;
    Some((sender, high * SEQ_BASE + low))
}

fn close_of(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> (u16, String) {
    frame.map_or((0, String::new()), |f| {
        (u16::from(f.code), f.reason.as_str().to_owned())
    })
}

/// A TCP stream whose writes can be muted: they then succeed without sending anything.
///
/// A client that has gone silent must still be able to read what the server sent it last (its close
/// frame), but tungstenite answers every ping it reads, and writing that pong to a connection the
/// server has closed fails the read before the close frame is reached. Muted, the pongs (and the
/// close reply) go nowhere, which is what a silent client does.
struct Muffle {
    tcp: TcpStream,
    muted: AtomicBool,
}

impl Muffle {
    fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    fn is_muted(&self) -> bool {
        self.muted.load(Ordering::SeqCst)
    }
}

impl AsyncRead for Muffle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Muffle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_muted() {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_muted() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_muted() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Connects to `url` (the server's `ws_url(room)`) and reads the `welcome`, whose fields are
/// checked.
async fn connect(url: &str, room: &str) -> Result<(Ws, String, Value), String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let upgrade = async {
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let stream = Muffle {
            tcp,
            muted: AtomicBool::new(false),
        };
        tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| format!("the upgrade failed: {e}"))
    };
    let (mut ws, _) = timeout(STEP, upgrade)
        .await
        .map_err(|_| "the upgrade timed out".to_owned())??;
    let welcome = loop {
        match timeout(STEP, ws.next()).await {
            Err(_) => return Err("no welcome before the deadline".into()),
            Ok(Some(Ok(Message::Text(text)))) => {
                break serde_json::from_str::<Value>(&text)
                    .map_err(|e| format!("welcome is not JSON: {e}"))?
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(format!("expected a welcome, got {other:?}")),
        }
    };
    let id = welcome["clientId"].as_str().unwrap_or_default().to_owned();
    let well_formed = welcome["type"] == "welcome"
        && welcome["room"] == room
        && welcome["width"] == 1600
        && welcome["height"] == 900
        && !id.is_empty();
    if !well_formed {
        return Err(format!("bad welcome: {welcome}"));
    }
    Ok((ws, id, welcome))
}

/// Sends a close frame and reads up to the server's answering close frame (the server closes the
/// TCP connection a moment later; there is no need to wait for that).
async fn close_handshake(ws: &mut Ws) -> Result<(u16, String), String> {
    timeout(STEP, ws.close(None))
        .await
        .map_err(|_| "sending close timed out".to_owned())?
        .map_err(|e| format!("sending close failed: {e}"))?;
    let answer = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Ok(close_of(frame)),
                Some(Ok(_)) => {}
                None => return Err("the connection ended without a close answer".to_owned()),
                Some(Err(e)) => return Err(format!("no close answer: {e}")),
            }
        }
    };
    timeout(STEP, answer)
        .await
        .map_err(|_| "no close answer before the deadline".to_owned())?
}

/// What one incoming message meant to a client.
enum Flow {
    Going,
    Closed((u16, String)),
    Broken(String),
}

/// A churn client's connection, with what it has seen so far.
struct Peer {
    ws: Ws,
    id: String,
    shared: Arc<Shared>,
    report: Report,
    /// When the last message (a ping included) was read, and the longest wait between two: the
    /// server pings every 200 ms, so a long silence means a starved process, not a lost message.
    last_read: Instant,
    longest_silence: Duration,
}

impl Peer {
    fn who(&self) -> String {
        format!(
            "client {} ({:?}, room {}, after {:.1}s)",
            self.report.spec.index,
            self.report.spec.kind,
            self.report.spec.room,
            self.report.lived.as_secs_f64()
        )
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        match timeout(STEP, self.ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {e}")),
            Err(_) => Err("send timed out".into()),
        }
    }

    /// Handles one item read from the socket: answers `canvasRequest`, notes pictures and errors.
    async fn on_item(&mut self, item: Option<Result<Message, WsError>>, answer: bool) -> Flow {
        self.longest_silence = self.longest_silence.max(self.last_read.elapsed());
        self.last_read = Instant::now();
        let text = match item {
            None => return Flow::Broken("the stream ended without a close frame".into()),
            Some(Err(e)) => return Flow::Broken(format!("read failed: {e}")),
            Some(Ok(Message::Close(frame))) => return Flow::Closed(close_of(frame)),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                return Flow::Going
            }
            Some(Ok(Message::Binary(_))) => {
                self.shared
                    .fail(format!("{} got a binary message", self.who()));
                return Flow::Going;
            }
        };
        if text.starts_with(DRAW_PREFIX) {
            return Flow::Going;
        }
        let message: Value = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(e) => {
                self.shared
                    .fail(format!("{} got non-JSON {text:?}: {e}", self.who()));
                return Flow::Going;
            }
        };
        match message["type"].as_str().unwrap_or_default() {
            "clientCount" | "presence" | "presenceChange" | "cursor" => {}
            "canvasRequest" if answer => {
                let tag = (self.report.spec.index % u32::from(SNAPSHOT_TAGS)) as u8;
                let reply = canvas_state(&message["clientId"], tag);
                if let Err(e) = self.send(reply).await {
                    return Flow::Broken(e);
                }
                self.report.answered += 1;
            }
            "canvasRequest" => {}
            kind @ ("canvasState" | "canvasEmpty") => {
                if message["clientId"] != self.id.as_str() {
                    self.shared.fail(format!(
                        "{} got someone else's picture: {}",
                        self.who(),
                        kind
                    ));
                } else if self.report.picture.is_some() {
                    self.shared
                        .fail(format!("{} got a second picture: {kind}", self.who()));
                } else {
                    self.report.picture = Some(if kind == "canvasState" {
                        "canvasState"
                    } else {
                        "canvasEmpty"
                    });
                    if kind == "canvasState"
                        && !message["data"]
                            .as_str()
                            .is_some_and(|d| d.starts_with("data:image/png;base64,"))
                    {
                        self.shared
                            .fail(format!("{} got a picture that is not a PNG", self.who()));
                    }
                }
            }
            "error" => match message["code"].as_str().unwrap_or_default() {
                // An answer that came after the snapshot timeout: the server asked someone else.
                "unexpected_snapshot" => self.report.late_answers += 1,
                "rate_limited" => {
                    self.report.rate_limited = true;
                    if self.report.spec.kind != Kind::Flooder {
                        self.shared.fail(format!(
                            "{} drawing at {}/s was rate limited: {message}",
                            self.who(),
                            self.report.spec.draws_per_second
                        ));
                    }
                }
                _ => self
                    .shared
                    .fail(format!("{} got an error: {message}", self.who())),
            },
            _ => self.shared.fail(format!(
                "{} got an unexpected message: {message}",
                self.who()
            )),
        }
        Flow::Going
    }

    /// A well-behaved client must never be closed by the server or lose its connection.
    /// Handles one read (answering pings) for a client that means to stay; false, with the reason
    /// recorded, if the connection ended or was closed.
    async fn keep_going(&mut self, item: Option<Result<Message, WsError>>) -> bool {
        match self.on_item(item, true).await {
            Flow::Going => true,
            other => {
                self.unexpected(other);
                false
            }
        }
    }

    fn unexpected(&self, flow: Flow) {
        let what = match flow {
            Flow::Going => return,
            Flow::Closed((code, reason)) => format!("was closed {code} {reason:?}"),
            Flow::Broken(why) => why,
        };
        // With a 1 s client timeout, a machine too busy to run the client (or the server) for a
        // second evicts it: say so, to tell that from a server bug.
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        self.shared.fail(format!(
            "{}: {what} (longest silence between two reads {:.2}s; load average {})",
            self.who(),
            self.longest_silence.as_secs_f64(),
            load.trim()
        ));
    }

    /// Reads (and answers) until `until`; false if the connection ended meanwhile.
    async fn lurk(&mut self, until: Instant, started: Instant) -> bool {
        let deadline = sleep_until(until);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return true,
                item = self.ws.next() => {
                    self.report.lived = started.elapsed();
                    if !self.keep_going(item).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Draws at its rate until `until`, reading (and answering) all the while; then waits until the
    /// observer has seen its last stroke. False if the connection ended meanwhile.
    async fn draw(
        &mut self,
        until: Instant,
        started: Instant,
        seen: &mut watch::Receiver<Option<u32>>,
    ) -> bool {
        let mut tick = interval(Duration::from_micros(
            1_000_000 / self.report.spec.draws_per_second,
        ));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = sleep_until(until);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                _ = tick.tick() => {
                    let text = stroke(self.report.spec.index, self.report.sent);
                    if let Err(e) = self.send(text).await {
                        self.unexpected(Flow::Broken(e));
                        return false;
                    }
                    self.report.sent += 1;
                }
                item = self.ws.next() => {
                    self.report.lived = started.elapsed();
                    if !self.keep_going(item).await {
                        return false;
                    }
                }
            }
        }
        let Some(last) = self.report.sent.checked_sub(1) else {
            return true;
        };
        // The last strokes are on their way: the observer must see the last one before we leave.
        let delivered = sleep(STEP);
        tokio::pin!(delivered);
        loop {
            tokio::select! {
                // (The borrow the wait returns is dropped at once: it must not cross an await.)
                _ = seen.wait_for(|s| s.is_some_and(|s| s >= last)).map(|r| r.is_ok()) => {
                    return true
                }
                () = &mut delivered => {
                    self.shared.fail(format!(
                        "{}: the observer never saw its stroke #{last}",
                        self.who()
                    ));
                    return true;
                }
                item = self.ws.next() => {
                    if !self.keep_going(item).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Closes with a close frame and waits for the server's answering close frame.
    async fn close_properly(&mut self) {
        match close_handshake(&mut self.ws).await {
            Ok(close) => self.report.close = Some(close),
            Err(e) => self.shared.fail(format!("{}: {e}", self.who())),
        }
    }

    /// Mutes the connection (nothing more is sent, not even a pong) and reads what the server
    /// sent up to its close frame (`report.close`) or the end of the connection (`report.cut`).
    /// Both stay empty if the connection is still open after `STEP`.
    async fn read_until_closed(&mut self) {
        self.ws.get_ref().mute();
        let deadline = sleep(STEP);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                item = self.ws.next() => match self.on_item(item, false).await {
                    Flow::Going => {}
                    Flow::Closed(close) => {
                        self.report.close = Some(close);
                        return;
                    }
                    Flow::Broken(why) => {
                        self.report.cut = Some(why);
                        return;
                    }
                }
            }
        }
    }

    /// Sends strokes as fast as it can, in batches, until the server closes it.
    async fn flood(&mut self) {
        let index = self.report.spec.index;
        'flood: while self.report.sent < FLOOD_CAP {
            let batch = async {
                for _ in 0..FLOOD_BATCH {
                    self.ws
                        .feed(Message::text(stroke(index, self.report.sent)))
                        .await?;
                    self.report.sent += 1;
                }
                self.ws.flush().await
            };
            match timeout(STEP, batch).await {
                Ok(Ok(())) => {}
                // Closed (by the server, as it should) or timed out: see below.
                _ => break 'flood,
            }
            while let Some(item) = self.ws.next().now_or_never() {
                match self.on_item(item, false).await {
                    Flow::Going => {}
                    Flow::Closed(close) => {
                        self.report.close = Some(close);
                        break 'flood;
                    }
                    Flow::Broken(why) => {
                        self.report.cut = Some(why);
                        break 'flood;
                    }
                }
            }
        }
        if self.report.close.is_none() && self.report.cut.is_none() {
            self.read_until_closed().await;
        }
    }
}

/// One churn client, from connect to gone.
async fn run_client(spec: Spec, url: String, shared: Arc<Shared>) -> Report {
    let started = Instant::now();
    let mut report = Report {
        spec,
        joined: false,
        sent: 0,
        rate_limited: false,
        close: None,
        cut: None,
        picture: None,
        lived: Duration::ZERO,
        answered: 0,
        late_answers: 0,
    };
    let (ws, id, welcome) = match connect(&url, &room_name(spec.room)).await {
        Ok(joined) => joined,
        Err(e) => {
            shared.fail(format!(
                "client {} ({:?}) could not join: {e}",
                spec.index, spec.kind
            ));
            return report;
        }
    };
    report.joined = true;
    shared.opened();
    if welcome["awaitingSnapshot"] != true {
        // The observer is always there, so every churn client waits for a picture.
        shared.fail(format!(
            "client {} joined a room with its observer but awaits no picture: {welcome}",
            spec.index
        ));
    }
    let mut peer = Peer {
        ws,
        id,
        shared: shared.clone(),
        report,
        last_read: Instant::now(),
        longest_silence: Duration::ZERO,
    };
    let mut seen = shared.register(spec.index, spec.room);
    match spec.kind {
        Kind::Drawer => {
            if peer.draw(spec.until, started, &mut seen).await {
                peer.close_properly().await;
            }
        }
        Kind::Lurker | Kind::Quitter => {
            if peer.lurk(spec.until, started).await {
                peer.close_properly().await;
            }
        }
        Kind::Dropper => {
            // Gone mid-session: no close frame, the TCP connection simply closes.
            peer.draw(spec.until, started, &mut seen).await;
        }
        Kind::Sleeper => {
            if peer.draw(spec.until, started, &mut seen).await {
                // Neither read (so no pong) nor write: the heartbeat must notice.
                sleep(SLEEP_FOR).await;
                peer.read_until_closed().await;
            }
        }
        Kind::Flooder => {
            if peer.lurk(spec.until, started).await {
                peer.flood().await;
            }
        }
    }
    peer.report.lived = started.elapsed();
    drop(peer.ws);
    shared.closed();
    peer.report
}

/// What an observer saw in its room.
#[derive(Debug, Default)]
struct ObserverReport {
    draws: u64,
    requests: u64,
    answered: u64,
    last_count: u64,
}

/// Reads its room all the time until told to finish, then waits for the room to be down to itself,
/// and closes properly. Answers every other `canvasRequest`, so that the server has to fall back
/// to the next peer after the snapshot timeout for the others.
async fn observe(
    room: usize,
    mut ws: Ws,
    shared: Arc<Shared>,
    mut finish: watch::Receiver<bool>,
) -> ObserverReport {
    let mut report = ObserverReport::default();
    let mut finishing: Option<Instant> = None;
    loop {
        if finishing.is_some() && report.last_count == 1 {
            break;
        }
        if finishing.is_some_and(|since| since.elapsed() > STEP) {
            shared.fail(format!(
                "observer {room}: the room never came down to 1 (last count {})",
                report.last_count
            ));
            break;
        }
        let item = tokio::select! {
            changed = finish.changed(), if finishing.is_none() => {
                if changed.is_err() || *finish.borrow() {
                    finishing = Some(Instant::now());
                }
                continue;
            }
            () = sleep(Duration::from_millis(100)), if finishing.is_some() => continue,
            item = ws.next() => item,
        };
        let text = match item {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => {
                let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
                shared.fail(format!(
                    "observer {room} lost its connection: {other:?} (load average {})",
                    load.trim()
                ));
                return report;
            }
        };
        let message: Value = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(e) => {
                shared.fail(format!("observer {room} got non-JSON {text:?}: {e}"));
                continue;
            }
        };
        match message["type"].as_str().unwrap_or_default() {
            "draw" => {
                report.draws += 1;
                let Some((sender, seq)) = decode_stroke(&message) else {
                    shared.fail(format!("observer {room} got a foreign stroke: {message}"));
                    continue;
                };
                let mut tracks = lock(&shared.tracks);
                match tracks.get_mut(&sender) {
                    Some(track) if track.room == room => {
                        track.received.push(seq);
                        track.seen.send_replace(Some(seq));
                    }
                    Some(track) => shared.fail(format!(
                        "observer {room} got a stroke from client {sender} of room {}",
                        track.room
                    )),
                    None => shared.fail(format!(
                        "observer {room} got a stroke from unknown sender {sender}"
                    )),
                }
            }
            "clientCount" => report.last_count = message["clientCount"].as_u64().unwrap_or(0),
            "presence" | "presenceChange" | "cursor" => {}
            "canvasRequest" => {
                report.requests += 1;
                if report.requests % 2 == 1 {
                    let reply = canvas_state(&message["clientId"], room as u8);
                    match timeout(STEP, ws.send(Message::text(reply))).await {
                        Ok(Ok(())) => report.answered += 1,
                        other => {
                            shared.fail(format!("observer {room} could not answer: {other:?}"));
                            return report;
                        }
                    }
                }
            }
            // A late answer (after the snapshot timeout) is refused; that is the protocol.
            "error" if message["code"] == "unexpected_snapshot" => {}
            _ => shared.fail(format!("observer {room} got {message}")),
        }
    }
    if let Err(e) = close_handshake(&mut ws).await {
        shared.fail(format!("observer {room} could not close: {e}"));
    }
    report
}

/// `/healthz` connections and rooms, and the RSS in KiB (from a blocking thread).
async fn sample(server: &Arc<Server>) -> Option<(u64, u64, u64)> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || {
        let health = server.health();
        (
            health["connections"].as_u64().unwrap_or(u64::MAX),
            health["rooms"].as_u64().unwrap_or(u64::MAX),
            server.rss_kib(),
        )
    })
    .await
    .ok()
}

/// Polls `/healthz` until it reports `connections` and `rooms`; the last figures on failure.
async fn wait_for_health(
    server: &Arc<Server>,
    connections: u64,
    rooms: u64,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = sample(server).await;
        if let Some((c, r, _)) = last {
            if c == connections && r == rooms {
                return Ok(());
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "/healthz never reported connections={connections} rooms={rooms} within {within:?}; \
         last (connections, rooms, rss KiB): {last:?}"
    ))
}

/// The CPU time the server process has used (user + system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses), utime and stime are the 12th and 13th fields.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Peaks seen by the monitor: (connections, rooms, rss KiB).
async fn monitor(server: Arc<Server>, mut stop: watch::Receiver<bool>) -> (u64, u64, u64) {
    let mut peaks = (0, 0, 0);
    let mut tick = interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return peaks,
            _ = tick.tick() => {
                if let Some((c, r, rss)) = sample(&server).await {
                    peaks = (peaks.0.max(c), peaks.1.max(r), peaks.2.max(rss));
                }
            }
        }
    }
}

/// A few connects, strokes and snapshot answers in every room, so that the server's allocator
/// arenas and caches exist before the baseline is taken.
async fn warm_up(server: &Arc<Server>) {
    for room in 0..ROOMS {
        let name = room_name(room);
        let url = server.ws_url(&name);
        let (mut first, _, _) = connect(&url, &name).await.expect("warm-up join");
        let (mut second, second_id, _) = connect(&url, &name).await.expect("warm-up join");
        let request = next_of_type(&mut first, "canvasRequest").await;
        assert_eq!(request["clientId"], second_id.as_str());
        let reply = canvas_state(&request["clientId"], 0);
        first
            .send(Message::text(reply))
            .await
            .expect("warm-up answer");
        next_of_type(&mut second, "canvasState").await;
        for seq in 0..20 {
            first
                .send(Message::text(stroke(999, seq)))
                .await
                .expect("warm-up stroke");
        }
        for _ in 0..20 {
            next_of_type(&mut second, "draw").await;
        }
        let (a, b) = tokio::join!(close_handshake(&mut first), close_handshake(&mut second));
        a.and(b).expect("warm-up close");
    }
}

async fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let item = timeout(STEP, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} before the deadline"));
        if let Some(Ok(Message::Text(text))) = item {
            let message: Value = serde_json::from_str(&text).expect("JSON");
            if message["type"] == kind {
                return message;
            }
        } else if !matches!(item, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
            panic!("waiting for {kind}: {item:?}");
        }
    }
}

/// The mix, decided up front from the seed: which client is what, where, for how long.
fn plan(seed: u64, churn_start: Instant) -> Vec<(Duration, Spec)> {
    let mut rng = Rng(seed.max(1));
    let churn_end = churn_start + CHURN;
    let flooder_every = CLIENTS / FLOODERS;
    (0..CLIENTS)
        .map(|i| {
            let at = SPAWN_WINDOW * i as u32 / CLIENTS as u32;
            let kind = if i % flooder_every == flooder_every / 2 {
                Kind::Flooder
            } else {
                match rng.between(0, 99) {
                    0..=29 => Kind::Drawer,
                    30..=54 => Kind::Lurker,
                    55..=69 => Kind::Quitter,
                    70..=84 => Kind::Dropper,
                    _ => Kind::Sleeper,
                }
            };
            let lifetime_ms = match kind {
                Kind::Drawer => rng.between(6_000, 30_000),
                Kind::Lurker => rng.between(10_000, 40_000),
                Kind::Quitter => rng.between(200, 2_000),
                Kind::Dropper | Kind::Sleeper => rng.between(3_000, 15_000),
                Kind::Flooder => rng.between(300, 1_500),
            };
            // What a kind does after its main activity must also fit in the churn.
            let tail = match kind {
                Kind::Sleeper => SLEEP_FOR + Duration::from_secs(2),
                _ => Duration::from_secs(2),
            };
            let until =
                (churn_start + at + Duration::from_millis(lifetime_ms)).min(churn_end - tail);
            let spec = Spec {
                index: i as u32,
                kind,
                room: rng.between(0, ROOMS as u64 - 1) as usize,
                until,
                draws_per_second: rng.between(20, 50),
            };
            (at, spec)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_joins_draws_vanishing_clients_and_floods_leaves_the_server_as_it_found_it() {
    let test_started = Instant::now();
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let server = Arc::new(Server::start_with(&SERVER_FLAGS));
    // The snapshots every client may answer with, made before the clients need them.
    tokio::task::spawn_blocking(|| {
        for tag in 0..SNAPSHOT_TAGS {
            snapshot(tag);
        }
    })
    .await
    .expect("snapshots");

    // ---- baseline ----
    let fresh = sample(&server).await.expect("healthz answers");
    let rss_start = fresh.2;
    assert_eq!((fresh.0, fresh.1), (0, 0), "a fresh server: {fresh:?}");
    warm_up(&server).await;
    wait_for_health(&server, 0, 0, STEP)
        .await
        .expect("the warm-up leaves nothing behind");
    let rss_baseline = server.rss_kib();
    let warm_up_took = test_started.elapsed();

    // ---- observers ----
    let shared = Arc::new(Shared::default());
    let (finish, finish_rx) = watch::channel(false);
    let mut observers = Vec::new();
    for room in 0..ROOMS {
        let name = room_name(room);
        let (ws, _, welcome) = connect(&server.ws_url(&name), &name)
            .await
            .expect("the observer joins");
        assert_eq!(
            welcome["awaitingSnapshot"], false,
            "observer {room} is first"
        );
        observers.push(tokio::spawn(observe(
            room,
            ws,
            shared.clone(),
            finish_rx.clone(),
        )));
    }
    let (stop_monitor, stop_monitor_rx) = watch::channel(false);
    let monitor = tokio::spawn(monitor(server.clone(), stop_monitor_rx));

    // ---- churn ----
    let churn_start = Instant::now();
    let churn_end = churn_start + CHURN;
    let slots = Arc::new(Semaphore::new(MAX_AT_ONCE));
    let mut clients: Vec<JoinHandle<Report>> = Vec::new();
    for (at, spec) in plan(seed, churn_start) {
        sleep_until(churn_start + at).await;
        let Ok(Ok(slot)) = timeout_at(spec.until, slots.clone().acquire_owned()).await else {
            shared.fail(format!(
                "client {} could not start: {MAX_AT_ONCE} clients still connected",
                spec.index
            ));
            continue;
        };
        let url = server.ws_url(&room_name(spec.room));
        let shared = shared.clone();
        clients.push(tokio::spawn(async move {
            let report = run_client(spec, url, shared).await;
            drop(slot);
            report
        }));
    }
    let mut reports = Vec::new();
    for client in clients {
        match timeout_at(churn_end + STEP, client).await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => shared.fail(format!("a client task failed: {e}")),
            Err(_) => shared.fail("a client task outlived the churn".into()),
        }
    }
    let churn_took = churn_start.elapsed();

    // ---- wind-down: only the observers are left, then nobody ----
    let after_churn = wait_for_health(&server, ROOMS as u64, ROOMS as u64, STEP).await;
    finish.send_replace(true);
    let mut observed = Vec::new();
    for observer in observers {
        match timeout(STEP * 2, observer).await {
            Ok(Ok(report)) => observed.push(report),
            other => shared.fail(format!("an observer did not finish: {other:?}")),
        }
    }
    let after_observers = wait_for_health(&server, 0, 0, STEP).await;
    let _ = stop_monitor.send(true);
    let (peak_connections, peak_rooms, peak_rss) = monitor.await.unwrap_or_default();
    let server_cpu = cpu_seconds(server.pid());
    // Freed memory may take a moment to be returned; poll, with a deadline.
    let mut rss_end = server.rss_kib();
    let rss_deadline = Instant::now() + Duration::from_secs(3);
    while rss_end > rss_baseline + RSS_TOLERANCE_KIB && Instant::now() < rss_deadline {
        sleep(Duration::from_millis(100)).await;
        rss_end = server.rss_kib();
    }

    // ---- the room's canvas against what each client sent ----
    let tracks = lock(&shared.tracks);
    let count = |kind: Kind| reports.iter().filter(|r| r.spec.kind == kind).count();
    let mut polite_sent = 0u64;
    let mut flood_sent = 0u64;
    let mut flood_delivered = 0u64;
    let mut flooders_closed = 0;
    let mut evicted_by_heartbeat = 0;
    let mut evicted_as_slow = 0;
    let mut pictures = HashMap::new();
    let mut polite_failures = Vec::new();
    for report in &reports {
        let spec = report.spec;
        let received = tracks
            .get(&spec.index)
            .map_or(&[][..], |t| t.received.as_slice());
        if spec.kind.draws_politely() {
            polite_sent += u64::from(report.sent);
            let expected: Vec<u32> = (0..report.sent).collect();
            if received != expected.as_slice() {
                let first_difference = received
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(received.len().min(expected.len()));
                polite_failures.push(format!(
                    "client {} ({:?}, room {}): sent {} strokes, the observer got {} \
                     (first difference at position {first_difference}: got {:?})",
                    spec.index,
                    spec.kind,
                    spec.room,
                    report.sent,
                    received.len(),
                    received.get(first_difference)
                ));
            }
        }
        if spec.kind == Kind::Flooder {
            flood_sent += u64::from(report.sent);
            flood_delivered += received.len() as u64;
            let in_order = received.windows(2).all(|w| w[0] < w[1]);
            if received.len() as u64 > u64::from(report.sent) || !in_order {
                polite_failures.push(format!(
                    "flooder {}: sent {}, the observer got {} (in order: {in_order})",
                    spec.index,
                    report.sent,
                    received.len()
                ));
            }
            let closed_for_flooding = report
                .close
                .as_ref()
                .is_some_and(|(code, _)| *code == u16::from(CloseCode::Policy));
            if report.rate_limited && closed_for_flooding {
                flooders_closed += 1;
            }
        }
        if spec.kind == Kind::Sleeper && report.joined {
            match &report.close {
                Some((1000, reason)) if reason == "heartbeat timeout" => evicted_by_heartbeat += 1,
                // It stopped reading while the room kept drawing: dropped as too slow, also fine.
                Some((1008, _)) => evicted_as_slow += 1,
                other => polite_failures.push(format!(
                    "sleeper {} was not evicted by the heartbeat: close {other:?}, cut {:?}",
                    spec.index, report.cut
                )),
            }
        }
        if matches!(spec.kind, Kind::Drawer | Kind::Lurker) {
            *pictures
                .entry(report.picture.unwrap_or("none"))
                .or_insert(0) += 1;
            if report.picture.is_none() && report.lived >= PICTURE_WITHIN {
                polite_failures.push(format!(
                    "client {} ({:?}) stayed {:.1}s and never got a picture",
                    spec.index,
                    spec.kind,
                    report.lived.as_secs_f64()
                ));
            }
        }
    }
    drop(tracks);
    let delivered: u64 = observed.iter().map(|o| o.draws).sum();
    let answered: u64 = reports.iter().map(|r| u64::from(r.answered)).sum::<u64>()
        + observed.iter().map(|o| o.answered).sum::<u64>();
    let late: u64 = reports.iter().map(|r| u64::from(r.late_answers)).sum();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "soak summary: seed={seed} clients={} (drawers={} lurkers={} quitters={} droppers={} \
         sleepers={} flooders={}) + {ROOMS} observers in {ROOMS} rooms; draws sent={} \
         (polite {polite_sent}, flood {flood_sent}) delivered to observers={delivered} \
         (flood {flood_delivered}); flooders rate-limited and closed 1008={flooders_closed}/{}; \
         vanished={} (dropped {} + silent {}); evicted={} (heartbeat {evicted_by_heartbeat}, \
         slow {evicted_as_slow}); pictures {:?}, answers {answered}, late {late}; peak connections \
         {peak_connections} (client side {} + {ROOMS}), peak rooms {peak_rooms}; RSS KiB \
         start={rss_start} baseline={rss_baseline} peak={peak_rss} end={rss_end} \
         (tolerance +{RSS_TOLERANCE_KIB}); \
         server CPU {server_cpu:.1}s; warm-up {:.1}s, churn {:.1}s, wind-down {:.1}s, total {:.1}s",
        reports.len(),
        count(Kind::Drawer),
        count(Kind::Lurker),
        count(Kind::Quitter),
        count(Kind::Dropper),
        count(Kind::Sleeper),
        count(Kind::Flooder),
        polite_sent + flood_sent,
        count(Kind::Flooder),
        count(Kind::Dropper) + count(Kind::Sleeper),
        count(Kind::Dropper),
        count(Kind::Sleeper),
        evicted_by_heartbeat + evicted_as_slow,
        pictures,
        shared.peak_open.load(Ordering::SeqCst),
        warm_up_took.as_secs_f64(),
        churn_took.as_secs_f64(),
        (churn_start.elapsed() - churn_took).as_secs_f64(),
        test_started.elapsed().as_secs_f64(),
    );
    println!("{summary}");
    for (room, observer) in observed.iter().enumerate() {
        println!("soak observer {room}: {observer:?}");
    }
    for report in reports.iter().filter(|r| r.spec.kind == Kind::Flooder) {
        println!(
            "soak flooder {} (room {}): sent {}, delivered {}, rate_limited {}, close {:?}, \
             cut {:?}",
            report.spec.index,
            report.spec.room,
            report.sent,
            lock(&shared.tracks)
                .get(&report.spec.index)
                .map_or(0, |t| t.received.len()),
            report.rate_limited,
            report.close,
            report.cut
        );
    }

    let failures = lock(&shared.failures).clone();
    assert!(
        failures.is_empty(),
        "{} failures during the run, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    assert!(
        polite_failures.is_empty(),
        "{} clients were let down:\n{}",
        polite_failures.len(),
        polite_failures[..polite_failures.len().min(30)].join("\n")
    );
    assert_eq!(reports.len(), CLIENTS, "every planned client ran");
    assert!(reports.iter().all(|r| r.joined), "every client joined");
    assert!(
        flooders_closed >= 1,
        "no flooder was both told rate_limited and closed with 1008: {:?}",
        reports
            .iter()
            .filter(|r| r.spec.kind == Kind::Flooder)
            .map(|r| (r.spec.index, r.sent, r.rate_limited, r.close.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        pictures.get("canvasState").copied().unwrap_or(0) > 0,
        "no newcomer ever got a peer's picture"
    );
    after_churn.expect("once every client is gone, only the observers are connected");
    after_observers.expect("once the observers are gone too, no connection and no room is left");
    assert!(
        rss_end <= rss_baseline + RSS_TOLERANCE_KIB,
        "the server's RSS ended at {rss_end} KiB, baseline {rss_baseline} KiB (peak {peak_rss} KiB)"
    );
    assert!(
        test_started.elapsed() < CHURN + Duration::from_secs(15),
        "the soak overran: {:.1}s",
        test_started.elapsed().as_secs_f64()
    );
}
