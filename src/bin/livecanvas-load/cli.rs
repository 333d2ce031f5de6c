//! Flags, presets and the target: everything decided before the first connection.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_tungstenite::tungstenite::http::Uri;

use crate::wire::{MAX_SENDERS_PER_ROOM, SEQ_LIMIT};

const ABOUT: &str = "WebSocket load generator for livecanvas (or any server speaking the original \
demo's protocol): opens many clients over many rooms, makes some of them draw at a fixed rate, and \
reports throughput, losses, duplicates and end-to-end latency.";

const AFTER_HELP: &str = "\
PRESETS (--preset sets the defaults; any flag given still overrides it)
  smoke       2 rooms x 3 clients, 1 sender per room at 20/s, 2 s
  busy-room   1 room, 500 clients, 50 drawing at 60/s, 10 s
  many-rooms  1000 rooms x 10 clients (10000), 2 drawing per room at 30/s, 10 s
  join-storm  500 clients join one room all at once, then 10 s of busy-room drawing;
              the p99 latency of the first drawing second is reported separately
  idle-crowd  --clients idle connections (default 20000, over 1000 rooms) that only answer the
              server's pings for the duration (default 35 s, longer than the server's default
              --client-timeout); reports connect errors and how many stayed up
  (none)      60 clients in 3 rooms, 2 senders per room at 10/s, 10 s

SUBCOMMAND
  join-latency  seeds rooms with 0, 1000, ... segments, then times newcomers from connecting to
                holding the whole picture (canvasState/canvasEmpty plus the draws after it); see
                `livecanvas-load join-latency --help`
  chaos         rooms of clients draw strokes, each at a place of its own, reconnecting whenever
                the server dies; writes every stroke another client saw and when (bench/chaos.sh
                kills the server, fills its disk, and checks the pictures); see `chaos --help`
  chaos-check   checks the rooms' pictures against what `chaos` wrote and the run's events

THE SERVER'S LIMITS
  livecanvas's defaults are meant for people, not for one address opening thousands of sockets:
  --max-connections-per-ip 64, --connection-rate-per-ip 10, --connection-burst-per-ip 30,
  --draws-per-second 200 (per connection), --max-clients-per-room 1000, --max-connections 20000.
  To load it, start it with permissive limits, e.g.:

    livecanvas --bind 127.0.0.1:18080 \\
      --max-connections-per-ip 100000 --connection-rate-per-ip 100000 \\
      --connection-burst-per-ip 100000 --max-clients-per-room 100000 \\
      --draws-per-second 100000 --draw-burst 100000
    livecanvas-load --url ws://127.0.0.1:18080/ws --preset many-rooms

  (idle-crowd with more than 20000 clients also needs a larger --max-connections, and both
  processes need an open-file limit above the number of connections.)

WHAT IS MEASURED
  Client i joins room load-(i % rooms) at URL/load-N (with ?batch=1 under --batch); the first
  --senders-per-room clients of each room draw. A segment's sender and sequence number are encoded
  in its coordinates (startX = sender index in the room, endX = seq % 1000,
  startY = (seq / 1000) % 900, endY = seq / 900000), so any server relaying the demo's draw fields
  works; the send instant of every segment is shared in memory with the receivers, so
  latency = receive instant - send instant (same process, same clock).
  A delivery is one segment reaching one other client of its room (the sender gets no echo):
  expected = sum over segments of (clients of the room joined at the start - 1).
  received counts deliveries in order; a (receiver, sender, seq) not newer than the last one seen
  counts as duplicated (duplicate or reordered); lost = expected - received - duplicated.
  After the duration, receivers drain for up to --drain before the report.
  loadgen CPU is this process's user+sys time over the drawing phase, as % of one core; a warning
  says when it used more than 80% of the machine's cores (then it, not the server, may have been
  the bottleneck).
  frames counts the text frames the clients received from the start of the drawing on (a frame is
  a delivery from an unbatched server; a batched frame carries many). With --server-pid PID the
  report also gives that process's user+sys CPU time and the context switches of all its threads
  (/proc/PID/task/*/status, voluntary + nonvoluntary) over the window from the moment the clients
  are told to start drawing (100 ms before the first segment) to the end of the drain, with the
  deliveries and frames received in that same window (window_*, server_window_* in --json).

  Loopback only: the URL's host must be 127.0.0.1, localhost or [::1] (exit code 2 otherwise).";

#[derive(Parser, Debug)]
#[command(
    name = "livecanvas-load",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Another measurement than the broadcast run the flags below describe.
    #[command(subcommand)]
    pub mode: Option<Mode>,

    /// WebSocket endpoint; each client appends `/{room}` (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// Named scenario setting the defaults of the options below.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,

    /// WebSocket clients in all, assigned round-robin to the rooms.
    #[arg(long)]
    pub clients: Option<usize>,

    /// Rooms, named load-0, load-1, …
    #[arg(long)]
    pub rooms: Option<usize>,

    /// Clients of each room that draw (the others only receive).
    #[arg(long)]
    pub senders_per_room: Option<usize>,

    /// Segments per second each sender draws.
    #[arg(long)]
    pub rate: Option<f64>,

    /// How long the senders draw (after the connect phase), e.g. 10s, 1m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Connections being opened at once during the connect phase.
    #[arg(long)]
    pub connect_concurrency: Option<usize>,

    /// Longest a connection (TCP + upgrade) may take, and again the server's first message.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,

    /// After the duration, how long receivers may still wait for segments in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub drain: Duration,

    /// Ask the server for batched delivery (appends `?batch=1` to every URL).
    #[arg(long)]
    pub batch: bool,

    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress line every second on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Process id of the server (on this machine): its CPU time and context switches (all its
    /// threads) from the start of the drawing to the end of the drain go into the report, the
    /// window its deliveries and frames are counted over.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum Mode {
    /// How long a newcomer takes to get a room's whole picture, for rooms with more and more
    /// history (livecanvas only: it needs `canvasState`/`canvasEmpty` from the server).
    JoinLatency(crate::join::JoinArgs),
    /// The load of a chaos run (bench/chaos.sh): rooms of clients drawing strokes at unique
    /// places, reconnecting whenever the server dies; writes every stroke another client saw,
    /// with when it was first seen.
    Chaos(crate::chaos::ChaosArgs),
    /// Checks the rooms' pictures against what `chaos` wrote and the run's event log: every
    /// stroke the server promised to keep must be there.
    ChaosCheck(crate::chaos::CheckArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    Smoke,
    BusyRoom,
    ManyRooms,
    JoinStorm,
    IdleCrowd,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Smoke => "smoke",
            Preset::BusyRoom => "busy-room",
            Preset::ManyRooms => "many-rooms",
            Preset::JoinStorm => "join-storm",
            Preset::IdleCrowd => "idle-crowd",
        }
    }
}

/// The defaults a preset (or none) gives.
struct Defaults {
    clients: usize,
    rooms: usize,
    senders_per_room: usize,
    rate: f64,
    duration: Duration,
    /// `None`: all clients at once.
    connect_concurrency: Option<usize>,
}

fn defaults(preset: Option<Preset>) -> Defaults {
    let secs = Duration::from_secs;
    let (clients, rooms, senders_per_room, rate, duration, connect_concurrency) = match preset {
        None => (60, 3, 2, 10.0, secs(10), Some(64)),
        Some(Preset::Smoke) => (6, 2, 1, 20.0, secs(2), Some(64)),
        Some(Preset::BusyRoom) => (500, 1, 50, 60.0, secs(10), Some(64)),
        Some(Preset::ManyRooms) => (10_000, 1000, 2, 30.0, secs(10), Some(64)),
        Some(Preset::JoinStorm) => (500, 1, 50, 60.0, secs(10), None),
        Some(Preset::IdleCrowd) => (20_000, 1000, 0, 0.0, secs(35), Some(64)),
    };
    Defaults {
        clients,
        rooms,
        senders_per_room,
        rate,
        duration,
        connect_concurrency,
    }
}

/// Where the clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `ws://host:port/path`, without a trailing slash or query.
    pub base: String,
    /// Loopback addresses the host resolved to (the one used is picked by a probe).
    pub addrs: Vec<SocketAddr>,
    pub batch: bool,
}

impl Target {
    pub fn room_url(&self, room: usize) -> String {
        self.named_room_url(&format!("load-{room}"), self.batch)
    }

    /// The URL of room `name`, batched or not whatever `self.batch` says.
    pub fn named_room_url(&self, name: &str, batch: bool) -> String {
        let query = if batch { "?batch=1" } else { "" };
        format!("{}/{name}{query}", self.base)
    }

    /// `host:port` as the URL gave it (for the Host header of a plain HTTP request).
    pub fn authority(&self) -> &str {
        let rest = self.base.strip_prefix("ws://").unwrap_or(&self.base);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// The resolved run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub preset: Option<Preset>,
    pub target: Target,
    pub clients: usize,
    pub rooms: usize,
    pub senders_per_room: usize,
    pub rate: f64,
    pub duration: Duration,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub json: bool,
    pub progress: bool,
    pub threads: Option<usize>,
    pub server_pid: Option<u32>,
}

impl Settings {
    pub fn batch(&self) -> bool {
        self.target.batch
    }

    /// Room of client `index`, and its place among that room's clients.
    pub fn placement(&self, index: usize) -> (usize, usize) {
        (index % self.rooms, index / self.rooms)
    }

    /// Clients assigned to `room`.
    pub fn clients_in(&self, room: usize) -> usize {
        self.clients / self.rooms + usize::from(room < self.clients % self.rooms)
    }

    /// Clients that draw, over all rooms (when all connect).
    pub fn total_senders(&self) -> usize {
        if self.rate <= 0.0 {
            return 0;
        }
        (0..self.rooms)
            .map(|room| self.clients_in(room).min(self.senders_per_room))
            .sum()
    }

    /// How many segments one sender may draw: the size of its send-time table.
    pub fn segments_per_sender(&self) -> usize {
        (self.rate * self.duration.as_secs_f64()).ceil() as usize + 8
    }
}

/// Applies the preset, validates, and checks the URL is on loopback. `Err` is a one-line message
/// for exit code 2.
pub fn resolve(args: Args) -> Result<Settings, String> {
    let d = defaults(args.preset);
    let clients = args.clients.unwrap_or(d.clients);
    let rooms = args.rooms.unwrap_or(d.rooms);
    let senders_per_room = args.senders_per_room.unwrap_or(d.senders_per_room);
    let rate = args.rate.unwrap_or(d.rate);
    let duration = args.duration.unwrap_or(d.duration);
    let connect_concurrency = args
        .connect_concurrency
        .or(d.connect_concurrency)
        .unwrap_or(clients);
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if rooms == 0 || rooms > clients {
        return Err(format!(
            "--rooms must be between 1 and --clients ({clients}), got {rooms}"
        ));
    }
    if senders_per_room > MAX_SENDERS_PER_ROOM + 1 {
        return Err(format!(
            "--senders-per-room must be at most {} (the sender index is a coordinate)",
            MAX_SENDERS_PER_ROOM + 1
        ));
    }
    if !rate.is_finite() || !(0.0..=100_000.0).contains(&rate) {
        return Err(format!("--rate must be between 0 and 100000, got {rate}"));
    }
    if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
        return Err("--duration must be between 1ms and 24h".into());
    }
    if (rate * duration.as_secs_f64()).ceil() as u64 + 8 >= SEQ_LIMIT {
        return Err(
            "--rate x --duration is more segments per sender than the encoding holds".into(),
        );
    }
    if connect_concurrency == 0 {
        return Err("--connect-concurrency must be at least 1".into());
    }
    if args.connect_timeout.is_zero() {
        return Err("--connect-timeout must be greater than zero".into());
    }
    if args.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    let target = parse_target(&args.url, args.batch)?;
    Ok(Settings {
        preset: args.preset,
        target,
        clients,
        rooms,
        senders_per_room,
        rate,
        duration,
        connect_concurrency: connect_concurrency.min(clients),
        connect_timeout: args.connect_timeout,
        drain: args.drain,
        json: args.json,
        progress: !args.quiet,
        threads: args.threads,
        server_pid: args.server_pid,
    })
}

/// Accepts only `ws://` URLs whose host is 127.0.0.1, localhost or [::1], and which resolve to
/// loopback addresses only.
pub fn parse_target(url: &str, batch: bool) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|err| format!("--url {url:?} is not a URL: {err}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err(format!(
                "--url {url:?}: wss:// is not supported; use the server's plain ws:// listener on loopback"
            ))
        }
        _ => return Err(format!("--url {url:?} must start with ws://")),
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--url {url:?} has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(bare, "127.0.0.1" | "localhost" | "::1") {
        return Err(format!(
            "refusing --url {url:?}: the load generator only targets this machine's loopback \
             (127.0.0.1, localhost or [::1]), not {host:?}"
        ));
    }
    if uri.query().is_some() {
        return Err(format!(
            "--url {url:?} must not carry a query (--batch adds ?batch=1)"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|err| format!("--url {url:?}: cannot resolve {host}: {err}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|addr| !addr.ip().is_loopback()) {
        return Err(format!(
            "refusing --url {url:?}: {host} resolves to {addrs:?}, not only loopback addresses"
        ));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path().trim_end_matches('/');
    Ok(Target {
        base: format!("ws://{authority}{path}"),
        addrs,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted_and_rooms_appended() {
        let target = parse_target("ws://127.0.0.1:18080/ws", false).unwrap();
        assert_eq!(target.room_url(3), "ws://127.0.0.1:18080/ws/load-3");
        let target = parse_target("ws://localhost:18080/ws/", true).unwrap();
        assert_eq!(target.room_url(0), "ws://localhost:18080/ws/load-0?batch=1");
        let target = parse_target("ws://[::1]:18080/ws", false).unwrap();
        assert_eq!(target.room_url(1), "ws://[::1]:18080/ws/load-1");
        assert!(target.addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn anything_but_loopback_is_refused() {
        for url in [
            "ws://10.0.0.1:8080/ws",
            "ws://192.168.1.2/ws",
            "ws://example.com/ws",
            "ws://127.0.0.2/ws",
            "ws://0.0.0.0:8080/ws",
            "wss://127.0.0.1/ws",
            "http://127.0.0.1/ws",
            "ws://127.0.0.1/ws?room=x",
        ] {
            assert!(parse_target(url, false).is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn flags_override_a_preset_and_clients_are_spread_round_robin() {
        let args = Args::parse_from([
            "livecanvas-load",
            "--preset",
            "busy-room",
            "--rate",
            "10",
            "--url",
            "ws://127.0.0.1:1/ws",
        ]);
        let settings = resolve(args).unwrap();
        assert_eq!(
            (settings.clients, settings.rooms, settings.senders_per_room),
            (500, 1, 50)
        );
        assert_eq!(settings.rate, 10.0);
        assert_eq!(settings.total_senders(), 50);

        let args = Args::parse_from(["livecanvas-load", "--clients", "7", "--rooms", "3"]);
        let settings = resolve(args).unwrap();
        assert_eq!(
            (0..3).map(|r| settings.clients_in(r)).collect::<Vec<_>>(),
            [3, 2, 2]
        );
        assert_eq!(settings.placement(4), (1, 1));
        assert_eq!(settings.total_senders(), 6);
    }
}
