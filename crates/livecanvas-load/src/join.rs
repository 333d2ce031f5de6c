//! `livecanvas-load join-latency`: how long a newcomer takes to hold a room's whole picture, for
//! rooms with more and more history.
//!
//! For every `--history N`, in its own fresh room: a keeper joins (and stays, so the room stays
//! open), `--seeders` clients draw N realistic segments between them, then one of them draws a
//! marker (a coded draw that ends the history); the keeper confirms it received all of it. After
//! `--settle` (time for the server to checkpoint the quiet room), an untimed probe newcomer learns
//! what a newcomer gets: the picture (`canvasState` or `canvasEmpty`) and how many draws follow it
//! (the room's operations after its checkpoint, ending with the marker). Then `--newcomers` are
//! timed one after the other, each from starting its TCP connect to holding the picture plus every
//! draw up to the marker. With `--cold K`, everybody then leaves and K more newcomers are timed
//! into the room after it unloaded (each waits, untimed, for `/healthz` to show it gone), so the
//! server reads it back from its store.
//!
//! livecanvas only: it relies on `welcome`, `canvasState`/`canvasEmpty` and, for `--cold`,
//! `/healthz`.

use crate::client::lock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args as ClapArgs;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep, timeout, timeout_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::cli::{parse_target, Target};
use crate::client::{describe, describe_close};
use crate::report::{cpu_time, si};
use crate::wire::{self, Event, Scribbler, MARKER_SENDER};

type Ws = WebSocketStream<TcpStream>;

/// Longest one send (or flush) may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the server may take to unload a room everybody left (`--cold`).
const UNLOAD_DEADLINE: Duration = Duration::from_secs(30);
/// Probes after the first one, at most, until two in a row agree; and the pause before each.
const PROBE_ATTEMPTS: usize = 10;
const PROBE_PAUSE: Duration = Duration::from_millis(250);
/// Least time the keeper may take to receive the seeded history (more for a long history).
const SEED_DEADLINE: Duration = Duration::from_secs(60);

const JOIN_AFTER_HELP: &str = "\
WHAT IS MEASURED
  For each --history N (in order, each in a fresh room join-N-<tag>): a keeper joins and stays;
  --seeders clients draw N segments between them at --seed-rate each (strokes of short segments in
  a palette of colours and sizes, some erasing, like people draw), then a marker draw; the keeper
  confirms it received everything. After --settle, an untimed probe newcomer learns what a newcomer
  gets: the picture (canvasState, or canvasEmpty for a blank room) and the number of draws that
  follow it (the operations the room holds after its checkpoint, the marker last). Then
  --newcomers are timed one after the other: from starting the TCP connect to holding the picture
  plus every draw up to the marker. With --cold K, everybody leaves and K more newcomers are timed,
  each after /healthz shows the room unloaded, so the server reads the room back from its store.

  The history must not matter: join time should be flat from 0 to 100000 segments.

THE SERVER
  Start it with permissive per-address limits and a draw rate the seeders may use, e.g.:

    livecanvas --bind 127.0.0.1:18080 --data-dir \"$(mktemp -d)\" \\
      --max-connections-per-ip 100000 --connection-rate-per-ip 100000 \\
      --connection-burst-per-ip 100000 --draws-per-second 1000000 --draw-burst 1000000
    livecanvas-load join-latency --url ws://127.0.0.1:18080/ws --cold 10

  --tail T makes the open room hold T operations after its checkpoint (the probe counts what it
  holds; T minus that many more are drawn), so newcomers get the picture plus T draws. Use it with
  a server whose --checkpoint-idle outlasts the run (e.g. 1h) and T below its --checkpoint-ops.";

#[derive(ClapArgs, Debug)]
#[command(after_help = JOIN_AFTER_HELP)]
pub struct JoinArgs {
    /// WebSocket endpoint; each room is appended as `/{room}` (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Segments drawn into each room before newcomers are timed; one room per value, in order.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000,100000")]
    pub history: Vec<u64>,

    /// Newcomers timed one after the other while the room is open (the keeper is in it).
    #[arg(long, default_value_t = 50)]
    pub newcomers: usize,

    /// Newcomers timed after the room unloaded (everybody left), each waiting for `/healthz` to
    /// show it gone: the server reads the room back from its store.
    #[arg(long, default_value_t = 0)]
    pub cold: usize,

    /// Clients drawing the history between them.
    #[arg(long, default_value_t = 4)]
    pub seeders: usize,

    /// Segments per second each seeder draws.
    #[arg(long, default_value_t = 5000.0)]
    pub seed_rate: f64,

    /// After seeding, how long to wait before the probe: time for the server to checkpoint the
    /// quiet room (livecanvas: --checkpoint-idle 2s, checked as often, so within 4 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub settle: Duration,

    /// Make the open room hold this many operations after its checkpoint before the newcomers.
    #[arg(long, default_value_t = 0)]
    pub tail: u64,

    /// How long after the picture a newcomer waits for the draws that should follow it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub probe_wait: Duration,

    /// Newcomers ask for batched delivery (`?batch=1`, as the page does). The keeper and the
    /// seeders always do.
    #[arg(long)]
    pub batch: bool,

    /// Seeders draw as the page does, each stroke with a `strokeId` and each seeder a browser of
    /// its own (`?author=`): the server keeps what may still be undone out of its checkpoints, so
    /// newcomers get the picture plus the room's undoable history (the worst case of undo).
    #[arg(long)]
    pub undoable: bool,

    /// Longest a newcomer may take to connect and get its picture.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,

    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The resolved run.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    pub target: Target,
    pub histories: Vec<u64>,
    pub newcomers: usize,
    pub cold: usize,
    pub seeders: usize,
    pub seed_rate: f64,
    pub settle: Duration,
    pub tail: u64,
    pub probe_wait: Duration,
    pub connect_timeout: Duration,
    pub json: bool,
    pub progress: bool,
    pub undoable: bool,
}

/// Validates; `Err` is a one-line message for exit code 2.
pub fn resolve(args: JoinArgs) -> Result<JoinSettings, String> {
    if args.history.is_empty() {
        return Err("--history needs at least one value".into());
    }
    if let Some(&n) = args.history.iter().find(|&&n| n > 10_000_000) {
        return Err(format!(
            "--history values must be at most 10000000, got {n}"
        ));
    }
    if args.newcomers + args.cold == 0 {
        return Err("--newcomers and --cold are both 0: nobody to time".into());
    }
    if !(1..=64).contains(&args.seeders) {
        return Err(format!(
            "--seeders must be between 1 and 64, got {}",
            args.seeders
        ));
    }
    if !args.seed_rate.is_finite() || !(1.0..=1_000_000.0).contains(&args.seed_rate) {
        return Err(format!(
            "--seed-rate must be between 1 and 1000000, got {}",
            args.seed_rate
        ));
    }
    if args.tail > 100_000 {
        return Err(format!("--tail must be at most 100000, got {}", args.tail));
    }
    if args.connect_timeout.is_zero() || args.probe_wait.is_zero() {
        return Err("--connect-timeout and --probe-wait must be greater than zero".into());
    }
    Ok(JoinSettings {
        target: parse_target(&args.url, args.batch)?,
        histories: args.history,
        newcomers: args.newcomers,
        cold: args.cold,
        seeders: args.seeders,
        seed_rate: args.seed_rate,
        settle: args.settle,
        tail: args.tail,
        probe_wait: args.probe_wait,
        connect_timeout: args.connect_timeout,
        json: args.json,
        progress: !args.quiet,
        undoable: args.undoable,
    })
}

pub fn main(args: JoinArgs) -> ExitCode {
    crate::run_subcommand(resolve(args), run)
}

async fn open(addr: SocketAddr, url: &str, eager: bool) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("TCP connect: {err}"))?;
    let _ = stream.set_nodelay(true);
    // A newcomer reads a picture of megabytes: a large read buffer. Seeders gather their draws
    // and flush them together; everybody else writes at once.
    let mut config = WebSocketConfig::default().read_buffer_size(256 * 1024);
    if eager {
        config = config.write_buffer_size(0);
    }
    let (ws, _response) = client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|err| describe(&err))?;
    Ok(ws)
}

/// What a keeper or seeder's reader counted.
#[derive(Default)]
struct Tally {
    draws: AtomicU64,
    /// The highest marker round received.
    marker: AtomicU64,
    ended: Mutex<Option<String>>,
    server_errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn problems(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ended) = lock(&self.ended).as_ref() {
            parts.push(format!("connection: {ended}"));
        }
        for (code, count) in lock(&self.server_errors).iter() {
            parts.push(format!("{count} x server error {code}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// A client that stays in the room: the keeper, or a seeder. A task reads (and so answers pings)
/// while the sink draws.
struct Member {
    sink: SplitSink<Ws, Message>,
    tally: Arc<Tally>,
    reader: JoinHandle<()>,
    scribbler: Scribbler,
    /// What it got on joining.
    picture: Picture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Picture {
    State,
    Empty,
}

impl Picture {
    fn name(self) -> &'static str {
        match self {
            Picture::State => "canvasState",
            Picture::Empty => "canvasEmpty",
        }
    }
}

/// Joins `url` and waits for `welcome` and the picture, so that every draw after this is one the
/// member receives.
async fn join_member(
    addr: SocketAddr,
    url: &str,
    connect_timeout: Duration,
    eager: bool,
    seed: u64,
) -> Result<Member, String> {
    let deadline = Instant::now() + connect_timeout;
    let mut ws = match timeout_at(deadline, open(addr, url, eager)).await {
        Ok(result) => result?,
        Err(_) => return Err("timed out connecting".into()),
    };
    let (mut size, mut picture) = (None, None);
    while size.is_none() || picture.is_none() {
        let message = match timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("no welcome and picture in time".into()),
            Ok(None) => return Err("connection ended before its picture".into()),
            Ok(Some(Err(err))) => return Err(describe(&err)),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                wire::for_each_event(text.as_str(), |event| match event {
                    Event::Welcome { width, height } => size = Some((width, height)),
                    Event::CanvasState { .. } => picture = Some(Picture::State),
                    Event::CanvasEmpty => picture = Some(Picture::Empty),
                    _ => {}
                });
            }
            message @ Message::Close(_) => return Err(describe_close(&message)),
            _ => {}
        }
    }
    let (width, height) = size.unwrap_or((1600, 900));
    let (sink, mut stream) = ws.split();
    let tally = Arc::new(Tally::default());
    let counts = tally.clone();
    let reader = tokio::spawn(async move {
        let ended = loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let (mut draws, mut marker) = (0, None);
                    wire::for_each_event(text.as_str(), |event| match event {
                        Event::Draw { coded } => {
                            draws += 1;
                            if let Some((MARKER_SENDER, round)) = coded {
                                marker = Some(round);
                            }
                        }
                        Event::Error { code } => {
                            *lock(&counts.server_errors)
                                .entry(code.to_string())
                                .or_default() += 1;
                        }
                        _ => {}
                    });
                    counts.draws.fetch_add(draws, Ordering::Relaxed);
                    if let Some(round) = marker {
                        counts.marker.fetch_max(round, Ordering::Release);
                    }
                }
                Some(Ok(message @ Message::Close(_))) => break describe_close(&message),
                Some(Ok(_)) => {}
                Some(Err(err)) => break describe(&err),
                None => break "connection ended".into(),
            }
        };
        *lock(&counts.ended) = Some(ended);
    });
    Ok(Member {
        sink,
        tally,
        reader,
        scribbler: Scribbler::new(seed, width, height),
        picture: picture.unwrap_or(Picture::Empty),
    })
}

impl Member {
    async fn send(&mut self, text: String, flush: bool) -> Result<(), String> {
        let message = Message::text(text);
        let sent = if flush {
            timeout(SEND_TIMEOUT, self.sink.send(message)).await
        } else {
            timeout(SEND_TIMEOUT, self.sink.feed(message)).await
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("send failed: {}", describe(&err))),
            Err(_) => Err("send timed out".into()),
        }
    }

    /// Draws `count` scribbles at `rate` per second (in ticks of about 10 ms).
    async fn scribble(&mut self, count: u64, rate: f64) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let per_tick = ((rate / 100.0).ceil() as u64).max(1);
        let mut ticker = interval(Duration::from_secs_f64(per_tick as f64 / rate));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sent = 0;
        while sent < count {
            ticker.tick().await;
            let n = per_tick.min(count - sent);
            for i in 0..n {
                let draw = self.scribbler.next_draw();
                self.send(draw, i + 1 == n).await?;
            }
            sent += n;
        }
        Ok(())
    }

    async fn close(mut self) {
        let _ = timeout(CLOSE_TIMEOUT, self.sink.close()).await;
        if timeout(CLOSE_TIMEOUT, &mut self.reader).await.is_err() {
            self.reader.abort();
        }
    }
}

/// What one newcomer saw, times from starting its TCP connect.
#[derive(Debug, Default)]
struct Outcome {
    welcome: Option<Duration>,
    picture_at: Option<Duration>,
    complete: Option<Duration>,
    picture: Option<Picture>,
    /// Length of the `canvasState` data URL.
    data_len: usize,
    /// Draws after the picture (up to and with the marker).
    draws_after: u64,
    /// Draws before the picture (none expected).
    draws_before: u64,
    marker_seen: bool,
    bytes: u64,
    error: Option<String>,
}

/// What a newcomer waits for after its picture.
#[derive(Clone, Copy)]
enum Expect {
    /// Learn the room: wait for marker `round` (or `probe_wait` after the picture).
    Probe { round: Option<u64> },
    /// `tail` draws after the picture, the last one marker `round`.
    Tail { tail: u64, round: Option<u64> },
}

async fn newcomer(
    addr: SocketAddr,
    url: &str,
    connect_timeout: Duration,
    probe_wait: Duration,
    expect: Expect,
) -> Outcome {
    let mut out = Outcome::default();
    let asked = Instant::now();
    let deadline = asked + connect_timeout;
    let mut ws = match timeout_at(deadline, open(addr, url, true)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            out.error = Some(err);
            return out;
        }
        Err(_) => {
            out.error = Some("timed out connecting".into());
            return out;
        }
    };
    let round = match expect {
        Expect::Probe { round } | Expect::Tail { round, .. } => round,
    };
    let mut until = deadline;
    loop {
        let message = match timeout_at(until, ws.next()).await {
            Err(_) => {
                if out.picture.is_none() {
                    out.error = Some(format!(
                        "no picture within {}",
                        humantime::format_duration(connect_timeout)
                    ));
                } else if let Expect::Tail { tail, .. } = expect {
                    out.error = Some(format!(
                        "{} of the {tail} draws after the picture within {} (was the room \
                         checkpointed meanwhile? see --tail)",
                        out.draws_after,
                        humantime::format_duration(probe_wait)
                    ));
                }
                break;
            }
            Ok(None) => {
                out.error = Some("connection ended".into());
                break;
            }
            Ok(Some(Err(err))) => {
                out.error = Some(describe(&err));
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            message @ Message::Close(_) => {
                out.error = Some(describe_close(&message));
                break;
            }
            _ => continue,
        };
        out.bytes += text.len() as u64;
        let had_welcome = out.welcome.is_some();
        let had_picture = out.picture.is_some();
        let (mut welcome, mut server_error) = (false, None);
        wire::for_each_event(text.as_str(), |event| match event {
            Event::Welcome { .. } => welcome = true,
            Event::CanvasState { data_len } if out.picture.is_none() => {
                out.picture = Some(Picture::State);
                out.data_len = data_len;
            }
            Event::CanvasEmpty if out.picture.is_none() => out.picture = Some(Picture::Empty),
            Event::Draw { coded } if !out.marker_seen => {
                if out.picture.is_none() {
                    out.draws_before += 1;
                    return;
                }
                out.draws_after += 1;
                if round.is_some() && coded == round.map(|r| (MARKER_SENDER, r)) {
                    out.marker_seen = true;
                }
            }
            Event::Error { code } => server_error = Some(code.to_string()),
            _ => {}
        });
        let now = Instant::now();
        if welcome && !had_welcome {
            out.welcome = Some(now - asked);
        }
        if out.picture.is_some() && !had_picture {
            out.picture_at = Some(now - asked);
            until = now + probe_wait;
        }
        if let Some(code) = server_error {
            out.error = Some(format!("server error {code}"));
            break;
        }
        let done = match expect {
            Expect::Probe { round } => {
                out.picture.is_some() && (round.is_none() || out.marker_seen)
            }
            Expect::Tail { tail, .. } => out.picture.is_some() && (tail == 0 || out.marker_seen),
        };
        if done {
            out.complete = Some(now - asked);
            if let Expect::Tail { tail, .. } = expect {
                if tail > 0 && out.draws_after != tail {
                    out.error = Some(format!(
                        "{} draws after the picture, {tail} expected",
                        out.draws_after
                    ));
                }
            }
            break;
        }
    }
    if out.error.is_none() && out.draws_before > 0 {
        out.error = Some(format!("{} draws before the picture", out.draws_before));
    }
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    out
}

/// `rooms` from the server's `/healthz` (plain HTTP on the WebSocket's address).
async fn healthz_rooms(addr: SocketAddr, authority: &str) -> Result<u64, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("TCP connect: {err}"))?;
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| format!("write: {err}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|err| format!("read: {err}"))?;
        Ok::<_, String>(response)
    };
    let response = timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "GET /healthz timed out".to_string())??;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |end| end + 1);
    let value: Value = serde_json::from_str(&body[start..end])
        .map_err(|_| format!("GET /healthz: not livecanvas's answer: {:.80}", text))?;
    value["rooms"]
        .as_u64()
        .ok_or_else(|| "GET /healthz: no rooms count".to_string())
}

/// Waits until the server has at most `rooms` rooms open.
async fn wait_rooms(addr: SocketAddr, authority: &str, rooms: u64) -> Result<(), String> {
    let deadline = Instant::now() + UNLOAD_DEADLINE;
    loop {
        let open = healthz_rooms(addr, authority).await?;
        if open <= rooms {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the server still had {open} rooms open after {} s ({rooms} before the run): is \
                 another client connected?",
                UNLOAD_DEADLINE.as_secs()
            ));
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `done` every 10 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The figures of a set of newcomers.
fn summarize(outcomes: &[Outcome]) -> Value {
    let sorted = |pick: &dyn Fn(&Outcome) -> Option<Duration>| {
        let mut values: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.error.is_none())
            .filter_map(|o| pick(o).map(ms))
            .collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let complete = sorted(&|o| o.complete);
    let welcome = sorted(&|o| o.welcome);
    let picture = sorted(&|o| o.picture_at);
    let mut bytes: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.bytes as f64)
        .collect();
    bytes.sort_by(f64::total_cmp);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut pictures: BTreeMap<&str, u64> = BTreeMap::new();
    for outcome in outcomes {
        if let Some(error) = &outcome.error {
            *failures.entry(error.clone()).or_default() += 1;
        }
        if let Some(picture) = outcome.picture {
            *pictures.entry(picture.name()).or_default() += 1;
        }
    }
    let mean = (!complete.is_empty()).then(|| complete.iter().sum::<f64>() / complete.len() as f64);
    json!({
        "newcomers": outcomes.len(),
        "complete": complete.len(),
        "failures": failures,
        "pictures": pictures,
        "welcome_p50_ms": percentile(&welcome, 0.5),
        "picture_p50_ms": percentile(&picture, 0.5),
        "p50_ms": percentile(&complete, 0.5),
        "p90_ms": percentile(&complete, 0.9),
        "p99_ms": percentile(&complete, 0.99),
        "max_ms": complete.last(),
        "mean_ms": mean,
        "received_bytes_p50": percentile(&bytes, 0.5),
    })
}

struct Run<'a> {
    settings: &'a JoinSettings,
    addr: SocketAddr,
    tag: String,
}

impl Run<'_> {
    fn say(&self, line: impl AsRef<str>) {
        if self.settings.progress {
            eprintln!("[join-latency] {}", line.as_ref());
        }
    }

    /// One history size, in a room of its own; returns its JSON report.
    async fn room(&self, index: usize, history: u64) -> Value {
        let name = format!("join-{history}-{}", self.tag);
        let mut report = json!({ "history": history, "room": name });
        let mut warnings: Vec<String> = Vec::new();
        if let Err(err) = self
            .measure(index, history, &name, &mut report, &mut warnings)
            .await
        {
            report["error"] = json!(err);
            self.say(format!("history {history}: {err}"));
        }
        report["warnings"] = json!(warnings);
        report
    }

    async fn measure(
        &self,
        index: usize,
        history: u64,
        name: &str,
        report: &mut Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let s = self.settings;
        let (addr, authority) = (self.addr, s.target.authority().to_string());
        let member_url = s.target.named_room_url(name, true);
        let newcomer_url = s.target.named_room_url(name, s.target.batch);
        let rooms_before = if s.cold > 0 {
            Some(healthz_rooms(addr, &authority).await?)
        } else {
            None
        };
        let seed_base = index as u64 * 1000;
        let keeper = join_member(addr, &member_url, s.connect_timeout, true, seed_base)
            .await
            .map_err(|err| format!("the keeper could not join: {err}"))?;
        if keeper.picture == Picture::State {
            warnings.push(format!("room {name} already had a picture before seeding"));
        }

        // Seeding: the seeders draw the history between them, then the marker.
        let drawing = history > 0 || s.tail > 0;
        let seeder_count = if drawing {
            (s.seeders as u64).min(history.max(1)) as usize
        } else {
            0
        };
        let mut seeders = Vec::with_capacity(seeder_count);
        for i in 0..seeder_count {
            let seed = seed_base + 1 + i as u64;
            let url = if s.undoable {
                format!("{member_url}&author=seeder-{seed}-0123456789abcdef")
            } else {
                member_url.clone()
            };
            let mut seeder = join_member(addr, &url, s.connect_timeout, false, seed)
                .await
                .map_err(|err| format!("seeder {i} could not join: {err}"))?;
            if s.undoable {
                seeder.scribbler.give_stroke_ids(format!("s{seed}"));
            }
            seeders.push(seeder);
        }
        let started = Instant::now();
        if history > 0 {
            self.say(format!(
                "history {history}: {seeder_count} seeders drawing at {}/s each into {name}",
                s.seed_rate
            ));
            let shares = (0..seeder_count as u64).map(|i| {
                history / seeder_count as u64 + u64::from(i < history % seeder_count as u64)
            });
            let rate = s.seed_rate;
            futures_util::future::try_join_all(
                seeders
                    .iter_mut()
                    .zip(shares)
                    .map(|(seeder, share)| seeder.scribble(share, rate)),
            )
            .await?;
            let deadline = Instant::now()
                + SEED_DEADLINE.max(Duration::from_secs_f64(history as f64 / 2000.0));
            let mut next_line = Instant::now() + Duration::from_secs(1);
            let received = wait_until(deadline, || {
                let got = keeper.tally.draws.load(Ordering::Relaxed);
                if Instant::now() >= next_line {
                    next_line += Duration::from_secs(1);
                    self.say(format!("history {history}: the keeper has {got}/{history}"));
                }
                got >= history
            })
            .await;
            if !received {
                return Err(format!(
                    "the keeper received {} of the {history} seeded draws{}",
                    keeper.tally.draws.load(Ordering::Relaxed),
                    keeper.tally.problems()
                ));
            }
        }
        let seed_s = started.elapsed().as_secs_f64();
        report["seeders"] = json!(seeder_count);
        report["seed_s"] = json!(seed_s);
        report["seeded_per_s"] = json!(if seed_s > 0.0 {
            history as f64 / seed_s
        } else {
            0.0
        });
        let mut round = None;
        if history > 0 {
            round = Some(1);
            self.mark(&mut seeders[0], &keeper, 1).await?;
        }
        let tail_drawer = if s.tail > 0 && !seeders.is_empty() {
            Some(seeders.swap_remove(0))
        } else {
            None
        };
        for seeder in seeders {
            seeder.close().await;
        }

        // Settle, then learn what a newcomer gets.
        sleep(s.settle).await;
        let mut probe = self.probe(&newcomer_url, round).await?;
        let mut tail = if probe.marker_seen {
            probe.draws_after
        } else {
            0
        };
        if let Some(mut drawer) = tail_drawer {
            if s.tail > tail {
                let more = s.tail - tail;
                self.say(format!(
                    "history {history}: the room holds {tail} operations after its checkpoint; \
                     drawing {more} more"
                ));
                drawer.scribble(more - 1, s.seed_rate).await?;
                let next = round.map_or(1, |r| r + 1);
                self.mark(&mut drawer, &keeper, next).await?;
                round = Some(next);
                probe = self.probe(&newcomer_url, round).await?;
                tail = if probe.marker_seen {
                    probe.draws_after
                } else {
                    0
                };
                if tail != s.tail {
                    warnings.push(format!(
                        "--tail {} asked, the room holds {tail} operations after its checkpoint \
                         (a checkpoint happened: is the server's --checkpoint-ops above {}?)",
                        s.tail, s.tail
                    ));
                }
            }
            drawer.close().await;
        }
        report["picture"] = json!(probe.picture.map(Picture::name));
        report["canvas_state_bytes"] = json!(probe.data_len);
        report["tail_ops"] = json!(tail);
        self.say(format!(
            "history {history}: newcomers get {} ({} bytes) + {tail} draws",
            probe.picture.map_or("nothing", Picture::name),
            probe.data_len
        ));

        // Warm: the keeper holds the room open.
        let mut warm = Vec::with_capacity(s.newcomers);
        for _ in 0..s.newcomers {
            let expect = Expect::Tail { tail, round };
            warm.push(newcomer(addr, &newcomer_url, s.connect_timeout, s.probe_wait, expect).await);
        }
        let summary = summarize(&warm);
        self.say(format!(
            "history {history}: warm p50 {} p99 {} max {} ({}/{} complete)",
            fmt(&summary["p50_ms"]),
            fmt(&summary["p99_ms"]),
            fmt(&summary["max_ms"]),
            summary["complete"],
            s.newcomers
        ));
        report["warm"] = summary;
        keeper.close().await;

        // Cold: the room unloads between newcomers and is read back from the store.
        if let Some(rooms_before) = rooms_before {
            let mut cold = Vec::with_capacity(s.cold);
            for _ in 0..s.cold {
                wait_rooms(addr, &authority, rooms_before).await?;
                let expect = Expect::Tail { tail: 0, round };
                cold.push(
                    newcomer(addr, &newcomer_url, s.connect_timeout, s.probe_wait, expect).await,
                );
            }
            wait_rooms(addr, &authority, rooms_before).await?;
            if history > 0 && cold.iter().any(|o| o.picture == Some(Picture::Empty)) {
                warnings.push(
                    "cold newcomers got canvasEmpty: the server did not keep the room's history \
                     (--storage memory?)"
                        .into(),
                );
            }
            let summary = summarize(&cold);
            self.say(format!(
                "history {history}: cold p50 {} p99 {} max {} ({}/{} complete)",
                fmt(&summary["p50_ms"]),
                fmt(&summary["p99_ms"]),
                fmt(&summary["max_ms"]),
                summary["complete"],
                s.cold
            ));
            report["cold"] = summary;
        }
        Ok(())
    }

    /// `drawer` draws marker `round`; waits until the keeper has it.
    async fn mark(&self, drawer: &mut Member, keeper: &Member, round: u64) -> Result<(), String> {
        drawer
            .send(wire::encode_draw(MARKER_SENDER, round), true)
            .await?;
        let deadline = Instant::now() + SEED_DEADLINE;
        if !wait_until(deadline, || {
            keeper.tally.marker.load(Ordering::Acquire) >= round
        })
        .await
        {
            return Err(format!(
                "the keeper did not receive the marker{}",
                keeper.tally.problems()
            ));
        }
        Ok(())
    }

    /// What a newcomer gets, once two probes in a row agree (a checkpoint still being rendered
    /// when the first one joined changes what the next newcomer gets).
    async fn probe(&self, url: &str, round: Option<u64>) -> Result<Outcome, String> {
        let mut last = self.probe_once(url, round).await?;
        for _ in 0..PROBE_ATTEMPTS {
            sleep(PROBE_PAUSE).await;
            let next = self.probe_once(url, round).await?;
            let same = (
                next.picture,
                next.data_len,
                next.marker_seen,
                next.draws_after,
            ) == (
                last.picture,
                last.data_len,
                last.marker_seen,
                last.draws_after,
            );
            last = next;
            if same {
                return Ok(last);
            }
        }
        Err(format!(
            "{} probes in a row found the room changing (is something else drawing into it?)",
            PROBE_ATTEMPTS + 1
        ))
    }

    async fn probe_once(&self, url: &str, round: Option<u64>) -> Result<Outcome, String> {
        let s = self.settings;
        let probe = newcomer(
            self.addr,
            url,
            s.connect_timeout,
            s.probe_wait,
            Expect::Probe { round },
        )
        .await;
        if let Some(error) = &probe.error {
            return Err(format!("the probe newcomer failed: {error}"));
        }
        if round.is_some() && !probe.marker_seen && probe.draws_after > 0 {
            return Err(format!(
                "the probe got {} draws after the picture but not the marker",
                probe.draws_after
            ));
        }
        Ok(probe)
    }
}

fn fmt(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))
}

async fn run(settings: JoinSettings) -> ExitCode {
    let Some(addr) = crate::find_server(&settings.target).await else {
        return ExitCode::FAILURE;
    };
    let tag = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64 & 0xff_ffff_ffff)
    );
    let run = Run {
        settings: &settings,
        addr,
        tag,
    };
    let cpu_start = cpu_time();
    let wall_start = Instant::now();
    let mut rooms = Vec::new();
    for (index, &history) in settings.histories.iter().enumerate() {
        rooms.push(run.room(index, history).await);
    }
    let cpu_percent = match (cpu_start, cpu_time()) {
        (Some(before), Some(after)) => Some(
            after.saturating_sub(before).as_secs_f64() / wall_start.elapsed().as_secs_f64() * 100.0,
        ),
        _ => None,
    };
    let failed = rooms.iter().any(|room| {
        !room["error"].is_null()
            || ["warm", "cold"].iter().any(|phase| {
                room[phase]["failures"]
                    .as_object()
                    .is_some_and(|failures| !failures.is_empty())
            })
    });
    let report = json!({
        "mode": "join-latency",
        "url": settings.target.base,
        "batch": settings.target.batch,
        "newcomers": settings.newcomers,
        "cold_newcomers": settings.cold,
        "seeders": settings.seeders,
        "seed_rate": settings.seed_rate,
        "settle_s": settings.settle.as_secs_f64(),
        "tail": settings.tail,
        "runs": rooms,
        "wall_s": wall_start.elapsed().as_secs_f64(),
        "loadgen_cpu_percent": cpu_percent,
    });
    if settings.json {
        println!("{report}");
    } else {
        print!("{}", to_text(&report));
    }
    if failed {
        eprintln!("livecanvas-load: error: some rooms or newcomers failed (see the report)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn to_text(report: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "livecanvas-load join-latency against {}{}: time from connecting to holding the whole picture",
        report["url"].as_str().unwrap_or("?"),
        if report["batch"] == json!(true) {
            " (batched)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  {:>8}  {:>9}  {:>11}  {:>9}  {:>5}  {:>26}  {:>26}",
        "history",
        "seeded",
        "picture",
        "size",
        "tail",
        "warm p50 / p99 / max ms",
        "cold p50 / p99 / max ms"
    );
    for room in report["runs"].as_array().into_iter().flatten() {
        let phase = |name: &str| {
            let p = &room[name];
            if p.is_null() {
                return "-".to_string();
            }
            let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
            format!(
                "{} / {} / {} ({}/{})",
                f(&p["p50_ms"]),
                f(&p["p99_ms"]),
                f(&p["max_ms"]),
                p["complete"],
                p["newcomers"]
            )
        };
        let _ = writeln!(
            out,
            "  {:>8}  {:>8.1}s  {:>11}  {:>9}  {:>5}  {:>26}  {:>26}",
            room["history"].to_string(),
            room["seed_s"].as_f64().unwrap_or(0.0),
            room["picture"].as_str().unwrap_or("-"),
            si(room["canvas_state_bytes"].as_f64().unwrap_or(0.0)),
            room["tail_ops"].to_string(),
            phase("warm"),
            phase("cold")
        );
        if let Some(err) = room["error"].as_str() {
            let _ = writeln!(out, "    error: {err}");
        }
        for phase in ["warm", "cold"] {
            for (reason, count) in room[phase]["failures"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "    {phase}: {count} x {reason}");
            }
        }
        for warning in room["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    warning: {}", warning.as_str().unwrap_or(""));
        }
    }
    let _ = writeln!(
        out,
        "  loadgen CPU {} of one core over {:.1} s",
        report["loadgen_cpu_percent"]
            .as_f64()
            .map_or("?".into(), |c| format!("{c:.0}%")),
        report["wall_s"].as_f64().unwrap_or(0.0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: JoinArgs,
    }

    fn parse(args: &[&str]) -> Result<JoinSettings, String> {
        let mut all = vec!["join-latency"];
        all.extend_from_slice(args);
        resolve(
            Wrapper::try_parse_from(all)
                .map_err(|e| e.to_string())?
                .args,
        )
    }

    #[test]
    fn defaults_and_lists_parse() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.histories, [0, 1000, 10_000, 100_000]);
        assert_eq!(
            (settings.newcomers, settings.cold, settings.seeders),
            (50, 0, 4)
        );
        let settings = parse(&["--history", "5,7", "--cold", "3", "--batch"]).unwrap();
        assert_eq!(settings.histories, [5, 7]);
        assert!(settings.target.batch);
        assert_eq!(
            settings.target.named_room_url("join-5-x", false),
            "ws://127.0.0.1:8080/ws/join-5-x"
        );
        assert_eq!(settings.target.authority(), "127.0.0.1:8080");
    }

    #[test]
    fn nonsense_is_refused() {
        for args in [
            &["--newcomers", "0"][..],
            &["--seeders", "0"],
            &["--seed-rate", "0"],
            &["--url", "ws://192.0.2.1/ws"],
            &["--probe-wait", "0s"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&values[..1], 0.99), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
