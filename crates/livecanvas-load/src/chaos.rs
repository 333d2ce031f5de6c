//! `livecanvas-load chaos`: the load of the chaos run (`bench/chaos.sh`: every stroke the server
//! acknowledged survives), during which the server is killed with `kill -9`, restarted, and its
//! disk filled and freed.
//!
//! `--rooms` rooms of `--clients` clients; the first `--senders` of each room draw `--rate` strokes
//! a second for `--duration`. Every stroke has a cell of its own on a grid of 8 x 5 logical pixels
//! (200 x 180 cells on a 1600 x 900 canvas): a horizontal line 4 px long, 3 px wide, in a colour
//! of its own, so that the room's picture can later tell, pixel by pixel, whether it is there.
//! Sender `s` of `S` draws its `seq`-th stroke into cell `seq * S + s`, so every cell is drawn at
//! most once whatever the reconnections. Every client reconnects when its connection drops (the
//! server is being killed), with a short backoff, until the run ends. Every client reads
//! everything relayed to it and records, for every stroke of another client, the wall-clock time
//! (unix ms) it was first seen by anyone: the strokes "acknowledged". Meanwhile `/readyz` is polled
//! (`--readyz-interval`) and its answers kept as runs of equal answers.
//!
//! At the end it writes `--out`: per room the strokes sent per sender and every acknowledged
//! stroke with its cell, position, colour, send time and first-seen time; and the `/readyz` runs.
//!
//! `livecanvas-load chaos-check` reads that file and the event log `bench/chaos.sh` wrote (kills,
//! restarts, disk filled and freed), fetches every room's picture
//! (`/api/rooms/{room}/canvas.png?background=transparent`) and checks that every acknowledged
//! stroke that the server promised to keep is in it, and that no cell that was never drawn holds
//! anything.

use crate::client::lock;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args as ClapArgs;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::cli::{parse_target, Target};
use crate::client::{connect_to, describe, describe_close, send_text};

type Ws = WebSocketStream<TcpStream>;

/// A stroke's cell on the grid, in logical pixels.
pub const CELL_WIDTH: u32 = 8;
pub const CELL_HEIGHT: u32 = 5;
/// The stroke in a cell whose top-left corner is (x, y): from (x + 1.5, y + 2.5) to
/// (x + 5.5, y + 2.5), 3 px wide, with round caps: it covers x .. x + 7 and y + 1 .. y + 4, inside
/// its cell; the pixels (x + 2 ..= x + 4, y + 2) are wholly inside the line.
const STROKE_SIZE: u32 = 3;
const LINE_START: f64 = 1.5;
const LINE_END: f64 = 5.5;
const LINE_Y: f64 = 2.5;
/// The pixels, relative to the cell, that must hold the stroke's colour exactly.
const CORE_PIXELS: [(u32, u32); 3] = [(2, 2), (3, 2), (4, 2)];

/// Reconnection backoff: doubling from the first to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After the senders stop, how long receivers keep reading strokes still in flight.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest one `/readyz` request may take.
const READYZ_TIMEOUT: Duration = Duration::from_secs(1);

const CHAOS_AFTER_HELP: &str = "\
WHAT IT DOES
  --rooms rooms (<prefix>-0, <prefix>-1, ...) of --clients clients each; the first --senders of
  each room draw --rate strokes per second for --duration. Each stroke gets a cell of its own on a
  grid of 8 x 5 logical pixels (200 x 180 cells on 1600 x 900): a line 4 px long and 3 px wide in a
  colour of its own, so a picture shows, pixel by pixel, whether it holds it. Every client
  reconnects whenever its connection drops (100 ms backoff doubling to 1 s, with jitter), until
  the run ends; a sender's strokes while it is disconnected are skipped, never drawn twice.
  Every client records, for every stroke of another client it sees relayed (or replayed after a
  join), the wall-clock time (unix ms) it was first seen: the stroke is then acknowledged.
  /readyz is polled every --readyz-interval meanwhile.

  --out (JSON): per room the strokes each sender sent, and every acknowledged stroke: sender, seq,
  cell, position, colour, sent_ms, first_seen_ms; the /readyz answers as runs of equal answers
  (first and last sample, each with the times the request started and ended).

  `livecanvas-load chaos-check --acks FILE --events FILE` checks the pictures against it.
  bench/chaos.sh runs both, killing and restarting the server and filling its disk in between.";

const CHECK_AFTER_HELP: &str = "\
WHAT IS CHECKED
  Every stroke in --acks whose first-seen time is not excluded must be in its room's picture
  (GET /api/rooms/{room}/canvas.png?background=transparent): the 3 pixels at the middle of its
  line exactly its colour, opaque. Excluded (the server may lose them):
  - kill: seen within --flush-interval (+ --slack) before a `kill` event, or between the kill and
    the next `restart` (the server was dead: only what it wrote before dying arrives then);
  - storage: from a `fill` event minus --flush-interval until the `free` after it (strokes
    accepted just before the disk filled were still uncommitted when it did), and every time
    /readyz was not 200: from the last 200 before it (minus --flush-interval) to the first 200
    after it.
  Every other acknowledged stroke is checked, also those after the last kill: the run ends with a
  graceful stop, which keeps everything accepted. Cells no sender ever drew must be transparent.
  Exit code 1 if a checked stroke is missing, a never-drawn cell is not blank, or a picture
  cannot be fetched.

THE EVENT LOG
  One event a line: `<unix ms> <kind> [detail...]`. Kinds read: kill (taken just before the
  SIGKILL), restart (the server accepts connections again), fill (the disk begins to be filled),
  free (the filler was removed). Others are listed but not used.";

#[derive(ClapArgs, Debug)]
#[command(after_help = CHAOS_AFTER_HELP)]
pub struct ChaosArgs {
    /// WebSocket endpoint; each room is appended as `/{room}` (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Rooms.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,

    /// Clients per room.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,

    /// Clients of each room that draw (the first ones).
    #[arg(long, default_value_t = 2)]
    pub senders: usize,

    /// Strokes per second each sender draws.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,

    /// How long the senders draw, e.g. 60s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,

    /// Where the acknowledged strokes are written (JSON).
    #[arg(long, default_value = "chaos-acks.json")]
    pub out: PathBuf,

    /// Room names are <prefix>-0, <prefix>-1, …
    #[arg(long, default_value = "chaos")]
    pub room_prefix: String,

    /// Ask the server for batched delivery (`?batch=1`, as the page does).
    #[arg(long)]
    pub batch: bool,

    /// How often `/readyz` is polled.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub readyz_interval: Duration,

    /// Longest a connection (TCP + upgrade) may take.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,

    /// The room's logical canvas (the server's --canvas-width / --canvas-height).
    #[arg(long, default_value_t = 1600)]
    pub canvas_width: u32,
    #[arg(long, default_value_t = 900)]
    pub canvas_height: u32,

    /// No progress line every 5 seconds on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(ClapArgs, Debug)]
#[command(after_help = CHECK_AFTER_HELP)]
pub struct CheckArgs {
    /// What `livecanvas-load chaos` wrote.
    #[arg(long)]
    pub acks: PathBuf,

    /// The event log of the run (kills, restarts, fills, frees).
    #[arg(long)]
    pub events: Option<PathBuf>,

    /// The server to fetch the pictures from: its WebSocket endpoint, as given to `chaos`
    /// (loopback only; the pictures are fetched over plain HTTP from the same host and port).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// The server's --flush-interval: what a kill -9 may lose.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub flush_interval: Duration,

    /// Widens every excluded window backwards by this much more (default none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    pub slack: Duration,

    /// Also write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Keep the fetched pictures in this directory (as <room>.png).
    #[arg(long, conflicts_with = "pictures")]
    pub save_pictures: Option<PathBuf>,

    /// Read the pictures from this directory (<room>.png, as --save-pictures kept them) instead of
    /// fetching them: checks a finished run again, e.g. with another --slack.
    #[arg(long)]
    pub pictures: Option<PathBuf>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// splitmix64: the colours, and the backoff's jitter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The grid of cells on the logical canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub cols: u32,
    pub rows: u32,
}

impl Grid {
    pub fn new(width: u32, height: u32) -> Grid {
        Grid {
            cols: width / CELL_WIDTH,
            rows: height / CELL_HEIGHT,
        }
    }

    pub fn cells(self) -> u64 {
        u64::from(self.cols) * u64::from(self.rows)
    }

    /// The cell of stroke `seq` of sender `sender`, of `senders` in the room.
    pub fn cell(sender: usize, seq: u64, senders: usize) -> u64 {
        seq * senders as u64 + sender as u64
    }

    /// Top-left corner of `cell`, in logical pixels.
    pub fn origin(self, cell: u64) -> (u32, u32) {
        let col = (cell % u64::from(self.cols)) as u32;
        let row = (cell / u64::from(self.cols)) as u32;
        (col * CELL_WIDTH, row * CELL_HEIGHT)
    }

    /// The cell whose stroke has these coordinates; `None` for any other line.
    pub fn decode(self, start_x: f64, start_y: f64, end_x: f64, end_y: f64) -> Option<u64> {
        let col = (start_x - LINE_START) / f64::from(CELL_WIDTH);
        let row = (start_y - LINE_Y) / f64::from(CELL_HEIGHT);
        if col.fract() != 0.0
            || row.fract() != 0.0
            || !(0.0..f64::from(self.cols)).contains(&col)
            || !(0.0..f64::from(self.rows)).contains(&row)
            || end_x != start_x + (LINE_END - LINE_START)
            || end_y != start_y
        {
            return None;
        }
        Some(row as u64 * u64::from(self.cols) + col as u64)
    }
}

/// The colour of the stroke in `cell` of room `room`.
pub fn colour(room: usize, cell: u64) -> [u8; 3] {
    let bytes = mix(((room as u64) << 32) ^ cell).to_le_bytes();
    [bytes[0], bytes[1], bytes[2]]
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The draw message of the stroke in `cell` of room `room`.
pub fn encode_stroke(grid: Grid, room: usize, cell: u64) -> String {
    let (x, y) = grid.origin(cell);
    let (x, y) = (f64::from(x), f64::from(y));
    format!(
        r#"{{"type":"draw","color":"{}","startX":{},"startY":{},"endX":{},"endY":{},"size":{STROKE_SIZE},"tool":"pen"}}"#,
        hex(colour(room, cell)),
        x + LINE_START,
        y + LINE_Y,
        x + LINE_END,
        y + LINE_Y
    )
}

/// The resolved run.
#[derive(Debug, Clone)]
struct ChaosSettings {
    target: Target,
    rooms: usize,
    clients: usize,
    senders: usize,
    rate: f64,
    duration: Duration,
    out: PathBuf,
    room_prefix: String,
    readyz_interval: Duration,
    connect_timeout: Duration,
    grid: Grid,
    progress: bool,
}

impl ChaosSettings {
    /// Strokes one sender may draw: its share of the grid.
    fn max_per_sender(&self) -> u64 {
        self.grid.cells() / self.senders as u64
    }

    fn room_name(&self, room: usize) -> String {
        format!("{}-{room}", self.room_prefix)
    }
}

fn resolve(args: ChaosArgs) -> Result<ChaosSettings, String> {
    if !(1..=1000).contains(&args.rooms) {
        return Err(format!(
            "--rooms must be between 1 and 1000, got {}",
            args.rooms
        ));
    }
    if !(2..=1000).contains(&args.clients) {
        return Err(format!(
            "--clients must be between 2 and 1000 (someone must see the strokes), got {}",
            args.clients
        ));
    }
    if args.senders == 0 || args.senders > args.clients {
        return Err(format!(
            "--senders must be between 1 and --clients ({}), got {}",
            args.clients, args.senders
        ));
    }
    if !args.rate.is_finite() || !(0.1..=1000.0).contains(&args.rate) {
        return Err(format!(
            "--rate must be between 0.1 and 1000, got {}",
            args.rate
        ));
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(3600) {
        return Err("--duration must be between 1ms and 1h".into());
    }
    if args.readyz_interval < Duration::from_millis(10) {
        return Err("--readyz-interval must be at least 10ms".into());
    }
    if args.connect_timeout.is_zero() {
        return Err("--connect-timeout must be greater than zero".into());
    }
    let valid_prefix = !args.room_prefix.is_empty()
        && args.room_prefix.len() <= 50
        && args
            .room_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_prefix {
        return Err("--room-prefix must be 1-50 characters of A-Z a-z 0-9 _ -".into());
    }
    let grid = Grid::new(args.canvas_width, args.canvas_height);
    if grid.cells() == 0 {
        return Err("the canvas is smaller than one cell".into());
    }
    let settings = ChaosSettings {
        target: parse_target(&args.url, args.batch)?,
        rooms: args.rooms,
        clients: args.clients,
        senders: args.senders,
        rate: args.rate,
        duration: args.duration,
        out: args.out,
        room_prefix: args.room_prefix,
        readyz_interval: args.readyz_interval,
        connect_timeout: args.connect_timeout,
        grid,
        progress: !args.quiet,
    };
    let wanted = (args.rate * args.duration.as_secs_f64()).ceil() as u64 + 1;
    if wanted > settings.max_per_sender() {
        return Err(format!(
            "--rate x --duration is {wanted} strokes per sender, more than the {} cells each of \
             --senders {} has on the {}x{} grid",
            settings.max_per_sender(),
            args.senders,
            grid.cols,
            grid.rows
        ));
    }
    Ok(settings)
}

pub fn main(args: ChaosArgs) -> ExitCode {
    crate::run_subcommand(resolve(args), run)
}

/// A stroke first seen by a client other than its sender.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first_seen_ms: u64,
    /// The client (within the room) that saw it first.
    seen_by: usize,
}

/// What one room's clients learn.
struct RoomState {
    name: String,
    /// Send times (unix ms) of each sender's strokes, by seq.
    sent: Vec<Mutex<Vec<u64>>>,
    acks: Mutex<HashMap<u64, Ack>>,
    joins: AtomicU64,
    /// Why connections ended (before the end of the run), and how often.
    drops: Mutex<BTreeMap<String, u64>>,
    /// Why connections could not be opened, and how often.
    connect_failures: Mutex<BTreeMap<String, u64>>,
    /// `error` messages from the server, by code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Draws that are not one of this run's strokes, or have another colour than their cell's.
    foreign: AtomicU64,
}

fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    *lock(map).entry(key).or_default() += 1;
}

/// Runs of equal `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadyRun {
    /// The HTTP status; 0 when the server could not be reached.
    code: u16,
    /// The body's `status` (or why there was no answer).
    status: String,
    samples: u64,
    /// The first and the last sample: when its request started and when it ended (unix ms).
    first: (u64, u64),
    last: (u64, u64),
}

struct Shared {
    settings: ChaosSettings,
    addr: SocketAddr,
    rooms: Vec<RoomState>,
    /// When the senders start and stop; when everybody stops.
    start: Instant,
    senders_stop: Instant,
    stop: Instant,
    readyz: Mutex<Vec<ReadyRun>>,
    open: AtomicU64,
}

async fn run(settings: ChaosSettings) -> ExitCode {
    let Some(addr) = crate::find_server(&settings.target).await else {
        return ExitCode::FAILURE;
    };
    let started_ms = unix_ms();
    let start = Instant::now();
    let senders_stop = start + settings.duration;
    let stop = senders_stop + DRAIN;
    let rooms = (0..settings.rooms)
        .map(|room| RoomState {
            name: settings.room_name(room),
            sent: (0..settings.senders)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            acks: Mutex::new(HashMap::new()),
            joins: AtomicU64::new(0),
            drops: Mutex::new(BTreeMap::new()),
            connect_failures: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            foreign: AtomicU64::new(0),
        })
        .collect();
    if settings.progress {
        eprintln!(
            "livecanvas-load chaos: {} rooms x {} clients, {} drawing per room at {}/s for {}, \
             against {}{}",
            settings.rooms,
            settings.clients,
            settings.senders,
            settings.rate,
            humantime::format_duration(settings.duration),
            settings.target.base,
            if settings.target.batch {
                " (batched)"
            } else {
                ""
            }
        );
    }
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        addr,
        rooms,
        start,
        senders_stop,
        stop,
        readyz: Mutex::new(Vec::new()),
        open: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for room in 0..settings.rooms {
        for local in 0..settings.clients {
            tasks.push(tokio::spawn(client(shared.clone(), room, local)));
        }
    }
    tasks.push(tokio::spawn(poll_readyz(shared.clone())));
    if settings.progress {
        let mut at = start + Duration::from_secs(5);
        while at < stop {
            sleep_until(at).await;
            eprintln!(
                "[chaos {:>5.1}s] {}",
                (at - start).as_secs_f64(),
                tally(&shared)
            );
            at += Duration::from_secs(5);
        }
    }
    // Every client and the poller end by themselves shortly after `stop` (each network await is
    // bounded); this only guards against one that would not.
    let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
    let grace = stop + Duration::from_secs(10);
    if tokio::time::timeout_at(grace, futures_util::future::join_all(tasks))
        .await
        .is_err()
    {
        eprintln!("livecanvas-load chaos: warning: some clients did not stop in time");
        aborts.iter().for_each(|task| task.abort());
    }
    let ended_ms = unix_ms();
    let report = to_json(&shared, started_ms, ended_ms);
    if settings.progress {
        eprintln!("[chaos  done] {}", tally(&shared));
    }
    match write_atomically(&settings.out, &report) {
        Ok(()) => {
            eprintln!(
                "livecanvas-load chaos: wrote {}",
                settings.out.to_string_lossy()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "livecanvas-load: error: cannot write {}: {err}",
                settings.out.to_string_lossy()
            );
            ExitCode::FAILURE
        }
    }
}

/// One progress line: connections, strokes sent and acknowledged, the last `/readyz` answer.
fn tally(shared: &Shared) -> String {
    let sent: usize = shared
        .rooms
        .iter()
        .flat_map(|room| room.sent.iter().map(|sent| lock(sent).len()))
        .sum();
    let acked: usize = shared.rooms.iter().map(|room| lock(&room.acks).len()).sum();
    let joins: u64 = shared
        .rooms
        .iter()
        .map(|room| room.joins.load(Ordering::Relaxed))
        .sum();
    let ready = lock(&shared.readyz)
        .last()
        .map_or_else(|| "-".into(), |run| format!("{} {}", run.code, run.status));
    format!(
        "open {} | joins {joins} | sent {sent} | acknowledged {acked} | readyz {ready}",
        shared.open.load(Ordering::Relaxed)
    )
}

fn write_atomically(path: &Path, value: &Value) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)
}

fn to_json(shared: &Shared, started_ms: u64, ended_ms: u64) -> Value {
    let settings = &shared.settings;
    let grid = settings.grid;
    let rooms: Vec<Value> = shared
        .rooms
        .iter()
        .enumerate()
        .map(|(index, room)| {
            let sent: Vec<Vec<u64>> = room.sent.iter().map(|sent| lock(sent).clone()).collect();
            let mut acks: Vec<(u64, Ack)> =
                lock(&room.acks).iter().map(|(&c, &a)| (c, a)).collect();
            acks.sort_by_key(|&(cell, _)| cell);
            let acks: Vec<Value> = acks
                .into_iter()
                .map(|(cell, ack)| {
                    let sender = (cell % settings.senders as u64) as usize;
                    let seq = cell / settings.senders as u64;
                    let (x, y) = grid.origin(cell);
                    let sent_ms = sent
                        .get(sender)
                        .and_then(|times| times.get(seq as usize))
                        .copied();
                    json!({
                        "sender": sender,
                        "seq": seq,
                        "cell": cell,
                        "x": x,
                        "y": y,
                        "color": hex(colour(index, cell)),
                        "sent_ms": sent_ms,
                        "first_seen_ms": ack.first_seen_ms,
                        "seen_by": ack.seen_by,
                    })
                })
                .collect();
            json!({
                "name": room.name,
                "index": index,
                "sent": sent.iter().map(Vec::len).collect::<Vec<_>>(),
                "joins": room.joins.load(Ordering::Relaxed),
                "drops": *lock(&room.drops),
                "connect_failures": *lock(&room.connect_failures),
                "errors": *lock(&room.errors),
                "foreign_draws": room.foreign.load(Ordering::Relaxed),
                "acks": acks,
            })
        })
        .collect();
    let readyz: Vec<Value> = lock(&shared.readyz)
        .iter()
        .map(|run| {
            json!({
                "code": run.code,
                "status": run.status,
                "samples": run.samples,
                "first_start_ms": run.first.0,
                "first_end_ms": run.first.1,
                "last_start_ms": run.last.0,
                "last_end_ms": run.last.1,
            })
        })
        .collect();
    json!({
        "mode": "chaos",
        "url": settings.target.base,
        "batch": settings.target.batch,
        "rooms_count": settings.rooms,
        "clients_per_room": settings.clients,
        "senders_per_room": settings.senders,
        "rate": settings.rate,
        "duration_s": settings.duration.as_secs_f64(),
        "started_ms": started_ms,
        "ended_ms": ended_ms,
        "grid": {
            "cell_width": CELL_WIDTH,
            "cell_height": CELL_HEIGHT,
            "cols": grid.cols,
            "rows": grid.rows,
            "size": STROKE_SIZE,
            "line": [LINE_START, LINE_Y, LINE_END, LINE_Y],
            "core_pixels": CORE_PIXELS,
        },
        "rooms": rooms,
        "readyz": readyz,
    })
}

async fn connect(shared: &Shared, url: &str) -> Result<Ws, String> {
    // A reconnecting client gets the room's picture (a PNG data URL) first.
    connect_to(shared.addr, url, 64 * 1024).await
}

/// The fields of a server message this mode reads; everything else (a picture's `data`) is
/// skipped by the parser.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    color: Option<Cow<'a, str>>,
    #[serde(rename = "startX")]
    start_x: Option<f64>,
    #[serde(rename = "startY")]
    start_y: Option<f64>,
    #[serde(rename = "endX")]
    end_x: Option<f64>,
    #[serde(rename = "endY")]
    end_y: Option<f64>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Option<Vec<Incoming<'a>>>,
}

impl Incoming<'_> {
    /// Records what one message says: a stroke seen, an error.
    fn note(&self, shared: &Shared, room: usize, local: usize, now_ms: u64) {
        let state = &shared.rooms[room];
        match self.kind.as_deref() {
            Some("batch") => {
                for message in self.messages.iter().flatten() {
                    message.note(shared, room, local, now_ms);
                }
            }
            None | Some("draw") => {
                let grid = shared.settings.grid;
                let cell = match (self.start_x, self.start_y, self.end_x, self.end_y) {
                    (Some(sx), Some(sy), Some(ex), Some(ey)) => grid.decode(sx, sy, ex, ey),
                    _ => None,
                };
                let ours = cell.filter(|&cell| {
                    self.color.as_deref() == Some(hex(colour(room, cell)).as_str())
                        && cell / (shared.settings.senders as u64)
                            < shared.settings.max_per_sender()
                });
                let Some(cell) = ours else {
                    state.foreign.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                lock(&state.acks).entry(cell).or_insert(Ack {
                    first_seen_ms: now_ms,
                    seen_by: local,
                });
            }
            Some("error") => count(
                &state.errors,
                self.code.as_deref().unwrap_or("?").to_string(),
            ),
            Some(_) => {}
        }
    }
}

/// One client of room `room`, the `local`-th: connects, draws (if a sender) and reads; reconnects
/// whenever its connection drops; ends at the run's end.
async fn client(shared: Arc<Shared>, room: usize, local: usize) {
    let settings = &shared.settings;
    let state = &shared.rooms[room];
    let url = settings
        .target
        .named_room_url(&state.name, settings.target.batch);
    let sender = (local < settings.senders).then_some(local);
    // Senders' ticks spread evenly over one period.
    let period = Duration::from_secs_f64(1.0 / settings.rate);
    let mut ticker = sender.map(|sender| {
        let ordinal = (room * settings.senders + sender) as f64;
        let all = (settings.rooms * settings.senders) as f64;
        let mut ticker = interval_at(shared.start + period.mul_f64(ordinal / all), period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        ticker
    });
    let mut seq: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    let mut jitter = mix((room as u64) << 20 | local as u64);
    loop {
        if Instant::now() >= shared.stop {
            return;
        }
        let connected = tokio::time::timeout_at(
            (Instant::now() + settings.connect_timeout).min(shared.stop),
            connect(&shared, &url),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok(ws)) => ws,
            Ok(Err(reason)) => {
                count(&state.connect_failures, reason);
                pause(&shared, &mut backoff, &mut jitter).await;
                continue;
            }
            Err(_) => {
                if Instant::now() < shared.stop {
                    count(&state.connect_failures, "timed out connecting".into());
                }
                pause(&shared, &mut backoff, &mut jitter).await;
                continue;
            }
        };
        shared.open.fetch_add(1, Ordering::Relaxed);
        let mut joined = false;
        let stop = sleep_until(shared.stop);
        tokio::pin!(stop);
        let ended: Option<String> = loop {
            tokio::select! {
                biased;
                () = &mut stop => break None,
                _ = async {
                    match ticker.as_mut() {
                        Some(ticker) => { ticker.tick().await; }
                        None => std::future::pending().await,
                    }
                }, if joined => {
                    let sender = sender.expect("only senders tick");
                    if Instant::now() >= shared.senders_stop || seq >= settings.max_per_sender() {
                        ticker = None;
                        continue;
                    }
                    let cell = Grid::cell(sender, seq, settings.senders);
                    let text = encode_stroke(settings.grid, room, cell);
                    lock(&state.sent[sender]).push(unix_ms());
                    seq += 1;
                    if let Err(why) = send_text(&mut ws, text).await {
                        break Some(why);
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let now_ms = unix_ms();
                        if !joined {
                            joined = true;
                            backoff = BACKOFF_MIN;
                            state.joins.fetch_add(1, Ordering::Relaxed);
                        }
                        match serde_json::from_str::<Incoming<'_>>(text.as_str()) {
                            Ok(incoming) => incoming.note(&shared, room, local, now_ms),
                            Err(_) => count(&state.errors, "unreadable frame".into()),
                        }
                    }
                    Some(Ok(message @ Message::Close(_))) => break Some(describe_close(&message)),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => break Some(describe(&err)),
                    None => break Some("connection ended".into()),
                },
            }
        };
        shared.open.fetch_sub(1, Ordering::Relaxed);
        match ended {
            None => {
                let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                return;
            }
            Some(reason) => {
                count(&state.drops, reason);
                pause(&shared, &mut backoff, &mut jitter).await;
            }
        }
    }
}

/// Waits the backoff (with up to 50% jitter, never past the run's end) and doubles it.
async fn pause(shared: &Shared, backoff: &mut Duration, jitter: &mut u64) {
    *jitter = mix(*jitter);
    let extra = backoff.mul_f64((*jitter % 1000) as f64 / 2000.0);
    let until = (Instant::now() + *backoff + extra).min(shared.stop);
    sleep_until(until).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

/// Polls `/readyz` until the run ends, keeping runs of equal answers.
async fn poll_readyz(shared: Arc<Shared>) {
    let mut ticker = interval_at(shared.start, shared.settings.readyz_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let authority = shared.settings.target.authority().to_string();
    loop {
        ticker.tick().await;
        if Instant::now() >= shared.stop {
            return;
        }
        let started = unix_ms();
        let (code, status) = readyz(shared.addr, &authority).await;
        let ended = unix_ms();
        let mut runs = lock(&shared.readyz);
        match runs.last_mut() {
            Some(run) if run.code == code && run.status == status => {
                run.samples += 1;
                run.last = (started, ended);
            }
            _ => runs.push(ReadyRun {
                code,
                status,
                samples: 1,
                first: (started, ended),
                last: (started, ended),
            }),
        }
    }
}

/// `GET /readyz`: the status code and the body's `status` (code 0 and the reason when there was
/// no answer).
async fn readyz(addr: SocketAddr, authority: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("unreachable: {}", err.kind()))?;
        let request =
            format!("GET /readyz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| format!("write failed: {}", err.kind()))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|err| format!("read failed: {}", err.kind()))?;
        Ok::<_, String>(response)
    };
    let response = match timeout(READYZ_TIMEOUT, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(reason)) => return (0, reason),
        Err(_) => return (0, "timed out".into()),
    };
    let text = String::from_utf8_lossy(&response);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |end| end + 1);
    let status = serde_json::from_str::<Value>(body.get(start..end).unwrap_or(""))
        .ok()
        .and_then(|value| value["status"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no status".into());
    (code, status)
}

// ---------------------------------------------------------------------------------------------
// chaos-check

/// A span of time (unix ms, both ends included) in which acknowledged strokes are not checked.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    from: u64,
    to: u64,
    /// Why: shown in the summary, and the key strokes are counted under.
    reason: String,
    /// For a kill's window: when the kill was.
    kill_at: Option<u64>,
}

/// The acknowledged strokes of one excluded window's reason.
#[derive(Debug, Default, Clone, Copy)]
struct Excluded {
    count: u64,
    present: u64,
    /// For a kill: the earliest lost stroke, in ms before the kill (how far back the loss went).
    lost_before_kill: Option<u64>,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        (self.from..=self.to).contains(&t)
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    at: u64,
    kind: String,
    detail: String,
}

/// When the first event of `kind` at or after `at` happened (a kill's restart, a fill's free).
fn first_after(events: &[Event], kind: &str, at: u64) -> Option<u64> {
    events
        .iter()
        .find(|e| e.kind == kind && e.at >= at)
        .map(|e| e.at)
}

fn parse_events(text: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let at = parts
            .next()
            .and_then(|at| at.parse::<u64>().ok())
            .ok_or_else(|| format!("line {}: no unix ms time: {line:?}", number + 1))?;
        let kind = parts
            .next()
            .ok_or_else(|| format!("line {}: no event kind: {line:?}", number + 1))?;
        events.push(Event {
            at,
            kind: kind.to_string(),
            detail: parts.next().unwrap_or("").to_string(),
        });
    }
    events.sort_by_key(|event| event.at);
    Ok(events)
}

#[derive(Deserialize)]
struct AckFile {
    started_ms: u64,
    ended_ms: u64,
    senders_per_room: usize,
    grid: GridFile,
    rooms: Vec<RoomFile>,
    readyz: Vec<ReadyFile>,
}

#[derive(Deserialize)]
struct GridFile {
    cols: u32,
    rows: u32,
}

#[derive(Deserialize)]
struct RoomFile {
    name: String,
    index: usize,
    sent: Vec<u64>,
    acks: Vec<AckEntry>,
    #[serde(default)]
    joins: u64,
    #[serde(default)]
    drops: BTreeMap<String, u64>,
    #[serde(default)]
    connect_failures: BTreeMap<String, u64>,
    #[serde(default)]
    errors: BTreeMap<String, u64>,
    #[serde(default)]
    foreign_draws: u64,
}

#[derive(Deserialize, Clone)]
struct AckEntry {
    sender: usize,
    seq: u64,
    cell: u64,
    x: u32,
    y: u32,
    color: String,
    sent_ms: Option<u64>,
    first_seen_ms: u64,
}

#[derive(Deserialize)]
struct ReadyFile {
    code: u16,
    status: String,
    first_end_ms: u64,
    last_start_ms: u64,
}

/// The windows in which strokes are excluded, from the kills, the fills and `/readyz`.
fn windows(
    events: &[Event],
    readyz: &[ReadyFile],
    started_ms: u64,
    back: u64,
) -> (Vec<Window>, Vec<String>) {
    let mut windows = Vec::new();
    let mut notes = Vec::new();
    let kills: Vec<&Event> = events.iter().filter(|e| e.kind == "kill").collect();
    let fills: Vec<&Event> = events.iter().filter(|e| e.kind == "fill").collect();
    let full_at = |t: u64| {
        fills.iter().any(|fill| {
            fill.at <= t && first_after(events, "free", fill.at).is_none_or(|free| t <= free)
        })
    };
    for (number, kill) in kills.iter().enumerate() {
        let restart = first_after(events, "restart", kill.at);
        windows.push(Window {
            from: kill.at.saturating_sub(back),
            to: restart.unwrap_or(u64::MAX),
            reason: format!(
                "kill #{}{}",
                number + 1,
                if full_at(kill.at) {
                    " (disk full: what it held is lost too)"
                } else {
                    ""
                }
            ),
            kill_at: Some(kill.at),
        });
        if restart.is_none() {
            notes.push(format!("kill #{} has no restart after it", number + 1));
        }
    }
    for (number, fill) in fills.iter().enumerate() {
        let free = first_after(events, "free", fill.at);
        windows.push(Window {
            from: fill.at.saturating_sub(back),
            to: free.unwrap_or(u64::MAX),
            reason: format!("disk full #{}", number + 1),
            kill_at: None,
        });
        if free.is_none() {
            notes.push(format!("fill #{} has no free after it", number + 1));
        }
    }
    // /readyz: every stretch of answers other than 200, from the last 200 before it to the first
    // 200 after it.
    let mut index = 0;
    while index < readyz.len() {
        if readyz[index].code == 200 {
            index += 1;
            continue;
        }
        let first = index;
        while index < readyz.len() && readyz[index].code != 200 {
            index += 1;
        }
        let from = if first == 0 {
            started_ms
        } else {
            readyz[first - 1].last_start_ms
        };
        let to = readyz.get(index).map_or(u64::MAX, |run| run.first_end_ms);
        let mut statuses: Vec<String> = readyz[first..index]
            .iter()
            .map(|run| {
                if run.code == 0 {
                    run.status.clone()
                } else {
                    format!("{} {}", run.code, run.status)
                }
            })
            .collect();
        statuses.dedup();
        statuses.sort();
        statuses.dedup();
        let during_kill = kills.iter().any(|kill| (from..=to).contains(&kill.at));
        let reason = if statuses.iter().any(|s| s.contains("storage_unavailable")) {
            "readyz storage_unavailable".to_string()
        } else if during_kill {
            "readyz down (kill)".to_string()
        } else {
            format!("readyz not ready ({})", statuses.join(", "))
        };
        windows.push(Window {
            from: from.saturating_sub(back),
            to,
            reason,
            kill_at: None,
        });
    }
    // In this order: a stroke is counted under the first window that holds it (kills, fills,
    // then /readyz).
    (windows, notes)
}

/// A decoded picture, RGBA.
struct Picture {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl Picture {
    fn decode(bytes: &[u8]) -> Result<Picture, String> {
        let mut decoder = png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
        let mut buffer = vec![0; reader.output_buffer_size().unwrap_or(0)];
        let frame = reader
            .next_frame(&mut buffer)
            .map_err(|e| format!("bad PNG: {e}"))?;
        let (color, _) = reader.output_color_type();
        let channels = match color {
            png::ColorType::Rgba => 4,
            png::ColorType::Rgb => 3,
            other => return Err(format!("unexpected PNG colour type {other:?}")),
        };
        let mut rgba = Vec::with_capacity(frame.width as usize * frame.height as usize * 4);
        for row in buffer
            .chunks_exact(frame.line_size)
            .take(frame.height as usize)
        {
            for pixel in row[..frame.width as usize * channels].chunks_exact(channels) {
                rgba.extend_from_slice(&[pixel[0], pixel[1], pixel[2]]);
                rgba.push(if channels == 4 { pixel[3] } else { 255 });
            }
        }
        Ok(Picture {
            width: frame.width,
            height: frame.height,
            rgba,
        })
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        if x >= self.width || y >= self.height {
            return [0; 4];
        }
        let at = (y as usize * self.width as usize + x as usize) * 4;
        [
            self.rgba[at],
            self.rgba[at + 1],
            self.rgba[at + 2],
            self.rgba[at + 3],
        ]
    }
}

fn parse_colour(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let byte = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// Fetches a room's picture; `Ok(None)` for a room the server does not keep (404).
fn fetch_picture(authority: &str, room: &str) -> Result<Option<Vec<u8>>, String> {
    let url = format!("http://{authority}/api/rooms/{room}/canvas.png?background=transparent");
    match ureq::get(&url).timeout(Duration::from_secs(30)).call() {
        Ok(response) => {
            let mut bytes = Vec::new();
            response
                .into_reader()
                .take(64 * 1024 * 1024)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("GET {url}: {e}"))?;
            Ok(Some(bytes))
        }
        Err(ureq::Error::Status(404, _)) => Ok(None),
        Err(err) => Err(format!("GET {url}: {err}")),
    }
}

/// What became of one acknowledged stroke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Present,
    /// Some of its pixels hold something, not all its colour.
    Damaged,
    Absent,
}

fn look(picture: Option<&Picture>, x: u32, y: u32, colour: [u8; 3]) -> (Seen, Vec<[u8; 4]>) {
    let Some(picture) = picture else {
        return (Seen::Absent, Vec::new());
    };
    let pixels: Vec<[u8; 4]> = CORE_PIXELS
        .iter()
        .map(|&(dx, dy)| picture.pixel(x + dx, y + dy))
        .collect();
    let want = [colour[0], colour[1], colour[2], 255];
    let seen = if pixels.iter().all(|&p| p == want) {
        Seen::Present
    } else if pixels.iter().all(|p| p[3] == 0) {
        Seen::Absent
    } else {
        Seen::Damaged
    };
    (seen, pixels)
}

/// Cells of `picture` that no sender ever drew into but that hold something.
fn stray_cells(picture: &Picture, grid: Grid, drawn: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut stray = Vec::new();
    for cell in 0..grid.cells() {
        if drawn(cell) {
            continue;
        }
        let (x, y) = grid.origin(cell);
        let any = (y..y + CELL_HEIGHT)
            .any(|py| (x..x + CELL_WIDTH).any(|px| picture.pixel(px, py)[3] != 0));
        if any {
            stray.push(cell);
        }
    }
    stray
}

/// "12.3 s" after the start of the load.
fn at(ms: u64, started: u64) -> String {
    if ms == u64::MAX {
        return "end".into();
    }
    format!("{:.3} s", (ms as f64 - started as f64) / 1000.0)
}

pub fn check_main(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("livecanvas-load chaos-check: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the summary; `Ok(false)` when a checked stroke is missing or a cell holds a stray.
fn check(args: &CheckArgs) -> Result<bool, String> {
    let target = parse_target(&args.url, false).map_err(|e| format!("--url: {e}"))?;
    let text = std::fs::read_to_string(&args.acks)
        .map_err(|e| format!("cannot read {}: {e}", args.acks.to_string_lossy()))?;
    let file: AckFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not chaos output: {e}", args.acks.to_string_lossy()))?;
    let events = match &args.events {
        Some(path) => parse_events(
            &std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.to_string_lossy()))?,
        )?,
        None => Vec::new(),
    };
    let flush_ms = args.flush_interval.as_millis() as u64;
    let back = flush_ms + args.slack.as_millis() as u64;
    let grid = Grid {
        cols: file.grid.cols,
        rows: file.grid.rows,
    };
    let senders = file.senders_per_room.max(1);
    let started = file.started_ms;
    let (windows, notes) = windows(&events, &file.readyz, started, back);
    let kills: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == "kill")
        .map(|e| e.at)
        .collect();
    let last_kill = kills.last().copied();
    let count_kind = |kind: &str| events.iter().filter(|e| e.kind == kind).count();

    println!("== chaos check ==");
    println!(
        "load: {} to {} ({:.1} s); flush interval {flush_ms} ms{}",
        at(started, started),
        at(file.ended_ms, started),
        (file.ended_ms.saturating_sub(started)) as f64 / 1000.0,
        if args.slack.is_zero() {
            String::new()
        } else {
            format!(", slack {} ms", args.slack.as_millis())
        }
    );
    println!(
        "events: {} kills, {} restarts, {} restart failures, {} fills, {} frees",
        kills.len(),
        count_kind("restart"),
        count_kind("restart_failed"),
        count_kind("fill"),
        count_kind("free")
    );
    for event in &events {
        println!(
            "  {:>10}  {}{}",
            at(event.at, started),
            event.kind,
            if event.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", event.detail)
            }
        );
    }
    let mut clients = (
        0u64,
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        0u64,
    );
    for room in &file.rooms {
        clients.0 += room.joins;
        for (into, from) in [
            (&mut clients.1, &room.drops),
            (&mut clients.2, &room.connect_failures),
            (&mut clients.3, &room.errors),
        ] {
            for (reason, n) in from {
                *into.entry(reason.clone()).or_insert(0u64) += n;
            }
        }
        clients.4 += room.foreign_draws;
    }
    println!(
        "clients: {} joins; connections dropped: {:?}; connects failed: {:?}; server errors: \
         {:?}; draws not of this run: {}",
        clients.0, clients.1, clients.2, clients.3, clients.4
    );
    let not_ready: Vec<&ReadyFile> = file.readyz.iter().filter(|run| run.code != 200).collect();
    println!(
        "readyz: {} runs of answers, {} not 200",
        file.readyz.len(),
        not_ready.len()
    );
    println!(
        "excluded windows (strokes first seen in them may be lost; each starts {back} ms early: \
         what the flush interval may still hold):"
    );
    let mut shown: Vec<&Window> = windows.iter().collect();
    shown.sort_by_key(|window| window.from);
    for window in shown {
        println!(
            "  {:>10} .. {:>10}  {}",
            at(window.from, started),
            at(window.to, started),
            window.reason
        );
    }
    for note in &notes {
        println!("  note: {note}");
    }

    let mut acknowledged = 0u64;
    let mut sent_total = 0u64;
    let mut checked_before = 0u64;
    let mut checked_after = 0u64;
    let mut excluded: BTreeMap<String, Excluded> = BTreeMap::new();
    let mut missing: Vec<(String, AckEntry, Seen, Vec<[u8; 4]>)> = Vec::new();
    let mut sent_unacked = (0u64, 0u64); // (count, present)
    let mut stray_total = 0u64;
    let mut problems = Vec::new();
    let mut rooms_json = Vec::new();

    for room in &file.rooms {
        let bytes = match &args.pictures {
            Some(dir) => {
                let path = dir.join(format!("{}.png", room.name));
                match std::fs::read(&path) {
                    Ok(bytes) => Some(bytes),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => {
                        return Err(format!("cannot read {}: {err}", path.to_string_lossy()))
                    }
                }
            }
            None => fetch_picture(target.authority(), &room.name)?,
        };
        if let (Some(dir), Some(bytes)) = (&args.save_pictures, &bytes) {
            let path = dir.join(format!("{}.png", room.name));
            std::fs::write(&path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.to_string_lossy()))?;
        }
        let picture = bytes.as_deref().map(Picture::decode).transpose()?;
        if let Some(picture) = &picture {
            if picture.width < grid.cols * CELL_WIDTH || picture.height < grid.rows * CELL_HEIGHT {
                return Err(format!(
                    "room {}: the picture is {}x{}, smaller than the grid",
                    room.name, picture.width, picture.height
                ));
            }
        } else if !room.acks.is_empty() {
            problems.push(format!(
                "room {}: the server keeps no picture (404)",
                room.name
            ));
        }
        let mut room_missing = 0u64;
        let mut room_checked = 0u64;
        let acked_cells: std::collections::HashSet<u64> =
            room.acks.iter().map(|ack| ack.cell).collect();
        for ack in &room.acks {
            acknowledged += 1;
            let colour = parse_colour(&ack.color)
                .ok_or_else(|| format!("room {}: bad colour {:?}", room.name, ack.color))?;
            let (seen, pixels) = look(picture.as_ref(), ack.x, ack.y, colour);
            let t = ack.first_seen_ms;
            if let Some(window) = windows.iter().find(|w| w.contains(t)) {
                let entry = excluded.entry(window.reason.clone()).or_default();
                entry.count += 1;
                if seen == Seen::Present {
                    entry.present += 1;
                } else if let Some(kill) = window.kill_at.filter(|&kill| t <= kill) {
                    let before = kill - t;
                    entry.lost_before_kill =
                        Some(entry.lost_before_kill.map_or(before, |b| b.max(before)));
                }
                continue;
            }
            room_checked += 1;
            if last_kill.is_some_and(|kill| t < kill.saturating_sub(flush_ms)) {
                checked_before += 1;
            } else {
                checked_after += 1;
            }
            if seen != Seen::Present {
                room_missing += 1;
                missing.push((room.name.clone(), ack.clone(), seen, pixels));
            }
        }
        // Sent but never seen by anyone: may or may not be there.
        for (sender, &sent) in room.sent.iter().enumerate() {
            sent_total += sent;
            for seq in 0..sent {
                let cell = Grid::cell(sender, seq, senders);
                if acked_cells.contains(&cell) {
                    continue;
                }
                sent_unacked.0 += 1;
                let (x, y) = grid.origin(cell);
                let (seen, _) = look(picture.as_ref(), x, y, colour(room.index, cell));
                sent_unacked.1 += u64::from(seen == Seen::Present);
            }
        }
        let stray = picture.as_ref().map_or_else(Vec::new, |picture| {
            stray_cells(picture, grid, |cell| {
                let sender = (cell % senders as u64) as usize;
                let seq = cell / senders as u64;
                room.sent.get(sender).is_some_and(|&sent| seq < sent)
            })
        });
        if !stray.is_empty() {
            stray_total += stray.len() as u64;
            problems.push(format!(
                "room {}: {} cells no sender drew hold pixels (first: cell {})",
                room.name,
                stray.len(),
                stray[0]
            ));
        }
        rooms_json.push(json!({
            "room": room.name,
            "picture": picture.is_some(),
            "sent": room.sent.iter().sum::<u64>(),
            "acknowledged": room.acks.len(),
            "checked": room_checked,
            "missing": room_missing,
            "stray_cells": stray.len(),
        }));
    }

    let excluded_total: u64 = excluded.values().map(|e| e.count).sum();
    let excluded_present: u64 = excluded.values().map(|e| e.present).sum();
    println!(
        "strokes: {sent_total} sent, {acknowledged} acknowledged (seen by another client), \
         {} sent but never seen ({} of them in the pictures anyway)",
        sent_unacked.0, sent_unacked.1
    );
    println!(
        "excluded: {excluded_total} acknowledged strokes ({excluded_present} of them in the \
         pictures anyway, {} not: lost as allowed)",
        excluded_total - excluded_present
    );
    for (reason, e) in &excluded {
        println!(
            "  {reason}: {} ({} present, {} lost{})",
            e.count,
            e.present,
            e.count - e.present,
            e.lost_before_kill.map_or_else(String::new, |ms| format!(
                "; the earliest lost one was first seen {ms} ms before the kill"
            ))
        );
    }
    println!(
        "checked: {} ({checked_before} first seen before the last kill - flush interval, \
         {checked_after} after it: the run ends with a graceful stop, which keeps everything)",
        checked_before + checked_after
    );
    println!("missing: {} (must be 0)", missing.len());
    for (room, ack, seen, pixels) in missing.iter().take(30) {
        let near = events
            .iter()
            .min_by_key(|e| e.at.abs_diff(ack.first_seen_ms))
            .map(|e| {
                format!(
                    "; nearest event: {} at {} ({:+} ms)",
                    e.kind,
                    at(e.at, started),
                    ack.first_seen_ms as i64 - e.at as i64
                )
            })
            .unwrap_or_default();
        println!(
            "  {room} sender {} seq {} cell {} at ({},{}) {}: {:?}, pixels {:?}; sent {}, first \
             seen {}{near}",
            ack.sender,
            ack.seq,
            ack.cell,
            ack.x,
            ack.y,
            ack.color,
            seen,
            pixels,
            ack.sent_ms.map_or_else(|| "?".into(), |ms| at(ms, started)),
            at(ack.first_seen_ms, started),
        );
    }
    if missing.len() > 30 {
        println!("  … and {} more", missing.len() - 30);
    }
    println!("stray cells (never drawn, not blank): {stray_total} (must be 0)");
    for problem in &problems {
        println!("problem: {problem}");
    }
    let ok = missing.is_empty() && problems.is_empty();
    println!("result: {}", if ok { "PASS" } else { "FAIL" });

    if let Some(out) = &args.out {
        let result = json!({
            "pass": ok,
            "flush_interval_ms": flush_ms,
            "slack_ms": args.slack.as_millis() as u64,
            "kills": kills.len(),
            "restarts": count_kind("restart"),
            "restart_failures": count_kind("restart_failed"),
            "fills": count_kind("fill"),
            "frees": count_kind("free"),
            "windows": windows.iter().map(|w| json!({
                "from_ms": w.from, "to_ms": if w.to == u64::MAX { Value::Null } else { json!(w.to) },
                "reason": w.reason,
            })).collect::<Vec<_>>(),
            "sent": sent_total,
            "acknowledged": acknowledged,
            "excluded": excluded.iter().map(|(reason, e)| {
                (reason.clone(), json!({
                    "count": e.count, "present": e.present,
                    "lost_before_kill_ms": e.lost_before_kill,
                }))
            }).collect::<serde_json::Map<_, _>>(),
            "checked": checked_before + checked_after,
            "checked_before_last_kill": checked_before,
            "checked_after_last_kill": checked_after,
            "missing": missing.iter().map(|(room, ack, seen, pixels)| json!({
                "room": room, "sender": ack.sender, "seq": ack.seq, "cell": ack.cell,
                "x": ack.x, "y": ack.y, "color": ack.color, "seen": format!("{seen:?}"),
                "pixels": pixels, "sent_ms": ack.sent_ms, "first_seen_ms": ack.first_seen_ms,
            })).collect::<Vec<_>>(),
            "sent_unacknowledged": sent_unacked.0,
            "sent_unacknowledged_present": sent_unacked.1,
            "stray_cells": stray_total,
            "problems": problems,
            "rooms": rooms_json,
        });
        write_atomically(out, &result)
            .map_err(|e| format!("cannot write {}: {e}", out.to_string_lossy()))?;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_round_trips_and_stays_inside_the_canvas() {
        let grid = Grid::new(1600, 900);
        assert_eq!((grid.cols, grid.rows, grid.cells()), (200, 180, 36_000));
        for cell in [0, 1, 199, 200, 35_999] {
            let text = encode_stroke(grid, 3, cell);
            let value: Value = serde_json::from_str(&text).unwrap();
            let f = |key: &str| value[key].as_f64().unwrap();
            assert_eq!(
                grid.decode(f("startX"), f("startY"), f("endX"), f("endY")),
                Some(cell),
                "{text}"
            );
            let (x, y) = grid.origin(cell);
            // The line with its round caps stays inside its own cell.
            let half = f64::from(STROKE_SIZE) / 2.0;
            assert!(f("startX") - half >= f64::from(x));
            assert!(f("endX") + half <= f64::from(x + CELL_WIDTH));
            assert!(f("startY") - half >= f64::from(y));
            assert!(f("startY") + half <= f64::from(y + CELL_HEIGHT));
            assert!(f("endX") <= 1600.0 && f("startY") <= 900.0);
            assert_eq!(value["color"], hex(colour(3, cell)));
        }
        // Other lines are not ours.
        assert_eq!(grid.decode(1.0, 2.5, 5.0, 2.5), None);
        assert_eq!(grid.decode(1.5, 2.5, 5.5, 3.5), None);
        assert_eq!(grid.decode(1601.5, 2.5, 1605.5, 2.5), None);
        // Senders share the grid without ever meeting.
        assert_eq!(Grid::cell(1, 5, 3), 16);
        assert_ne!(Grid::cell(0, 5, 3), Grid::cell(2, 4, 3));
    }

    #[test]
    fn the_run_must_fit_the_grid() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["chaos"];
            argv.extend_from_slice(extra);
            #[derive(clap::Parser)]
            struct Wrap {
                #[command(flatten)]
                args: ChaosArgs,
            }
            resolve(<Wrap as clap::Parser>::parse_from(argv).args)
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--rate", "400", "--duration", "60s"]).is_err());
        assert!(parse(&["--clients", "1", "--senders", "1"]).is_err());
        assert!(parse(&["--senders", "5"]).is_err());
        assert!(parse(&["--url", "ws://10.0.0.1:1/ws"]).is_err());
        assert!(parse(&["--room-prefix", "a/b"]).is_err());
    }

    #[test]
    fn batches_and_errors_are_read() {
        let grid = Grid::new(1600, 900);
        let frame = format!(
            r#"{{"type":"batch","messages":[{},{{"type":"clientCount","clientCount":3}},{{"type":"error","code":"storage_unavailable","message":"m"}}]}}"#,
            encode_stroke(grid, 0, 7)
        );
        let incoming: Incoming<'_> = serde_json::from_str(&frame).unwrap();
        let messages = incoming.messages.as_ref().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[0].color.as_deref(),
            Some(hex(colour(0, 7)).as_str())
        );
        assert_eq!(messages[2].code.as_deref(), Some("storage_unavailable"));
    }

    #[test]
    fn windows_cover_kills_fills_and_readyz_outages() {
        let events = parse_events(
            "1000 start\n5000 kill pid 7\n5100 killed\n5600 restart\n9000 fill\n9050 full 1\n\
             12000 free\n",
        )
        .unwrap();
        let ready = |code, status: &str, first_end_ms, last_start_ms| ReadyFile {
            code,
            status: status.into(),
            first_end_ms,
            last_start_ms,
        };
        let readyz = [
            ready(200, "ready", 1001, 4990),
            ready(0, "unreachable: ConnectionRefused", 5090, 5500),
            ready(200, "ready", 5650, 9200),
            ready(503, "storage_unavailable", 9310, 12500),
            ready(200, "ready", 12610, 20000),
        ];
        let (windows, notes) = windows(&events, &readyz, 1000, 250);
        assert!(notes.is_empty());
        let find = |t: u64| {
            windows
                .iter()
                .find(|w| w.contains(t))
                .map(|w| w.reason.clone())
        };
        assert_eq!(find(4700), None);
        assert_eq!(find(4760).as_deref(), Some("kill #1"));
        assert_eq!(find(5600).as_deref(), Some("kill #1"));
        assert!(find(5640).is_some(), "the server is not known ready yet");
        assert_eq!(find(5700), None);
        assert_eq!(find(8700), None);
        assert!(find(8760).is_some(), "a flush interval before the fill");
        assert!(find(12600).is_some(), "until the first 200 after it");
        assert_eq!(find(12700), None);
    }

    #[test]
    fn a_stroke_is_present_only_in_its_exact_colour() {
        let grid = Grid::new(16, 10);
        let mut picture = Picture {
            width: 16,
            height: 10,
            rgba: vec![0; 16 * 10 * 4],
        };
        let (x, y) = grid.origin(3);
        let colour = [10, 20, 30];
        for (dx, dy) in CORE_PIXELS {
            let at = (((y + dy) * 16 + x + dx) * 4) as usize;
            picture.rgba[at..at + 4].copy_from_slice(&[10, 20, 30, 255]);
        }
        assert_eq!(look(Some(&picture), x, y, colour).0, Seen::Present);
        assert_eq!(look(Some(&picture), x, y, [10, 20, 31]).0, Seen::Damaged);
        let (x0, y0) = grid.origin(0);
        assert_eq!(look(Some(&picture), x0, y0, colour).0, Seen::Absent);
        assert_eq!(look(None, x, y, colour).0, Seen::Absent);
        assert_eq!(
            stray_cells(&picture, grid, |cell| cell == 3),
            Vec::<u64>::new()
        );
        assert_eq!(stray_cells(&picture, grid, |_| false), vec![3]);
    }
}
