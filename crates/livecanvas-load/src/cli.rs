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

SEVERAL NODES (a cluster sharing rooms through Redis)
  --url takes several URLs, comma-separated or with the flag repeated (e.g.
  --url ws://127.0.0.1:18080/ws,ws://127.0.0.1:18081/ws): every room's clients take turns over
  them, so that each room has members (and senders) on every node. Client i is member p = i / rooms
  of room r = i % rooms and connects to URL number (r + p) % URLs (with one room: i % URLs).
  Everything else is the same: all clients live in this process, so latency, losses and
  duplicates are measured across nodes; expected deliveries assume each room is one room across
  all nodes (against independent servers, the deliveries between nodes show as lost).
  --server-pid takes the nodes' pids, comma-separated: their CPU time and context switches are
  added up (and the CPU time is also given per pid in --json).

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
  deliveries and frames received in that same window (window_*, server_window_* in --json); with
  several pids (PID1,PID2,...) the sums over all of them.

  Loopback only: every URL's host must be 127.0.0.1, localhost or [::1] (exit code 2 otherwise).";

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

    /// WebSocket endpoint; each client appends `/{room}` (loopback only). Several (comma-separated,
    /// or the flag repeated): the nodes of a cluster, each room's clients spread over them (see
    /// SEVERAL NODES below).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,

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

    /// Clients of each room that move a cursor (`{"type":"cursor"}` at `--cursor-rate`) and do
    /// not draw: the ones after the senders. Their cursor frames received are counted apart from
    /// the drawing's deliveries, whose latency stays what is measured.
    #[arg(long, default_value_t = 0)]
    pub cursors: usize,

    /// Cursor messages per second each cursor client sends.
    #[arg(long, default_value_t = 20.0)]
    pub cursor_rate: f64,

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
    /// window its deliveries and frames are counted over. Several (comma-separated, or the flag
    /// repeated), e.g. the nodes of a cluster: their figures are added up.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
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
    /// One per `--url`, in the order given (at least one).
    pub targets: Vec<Target>,
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
    /// `--server-pid`: empty without, several for the nodes of a cluster.
    pub server_pids: Vec<u32>,
    /// Clients per room that move a cursor (after the senders), and how often.
    pub cursors_per_room: usize,
    pub cursor_rate: f64,
}

impl Settings {
    pub fn batch(&self) -> bool {
        self.targets[0].batch
    }

    /// Room of client `index`, and its place among that room's clients.
    pub fn placement(&self, index: usize) -> (usize, usize) {
        (index % self.rooms, index / self.rooms)
    }

    /// Which of the targets client `index` connects to: a room's clients take turns over the
    /// URLs, its first client on URL `room % URLs`, so that every room has members (and, with as
    /// many senders per room as URLs, a sender) on every node, and the URLs get equal shares.
    /// With one room this is `index % URLs`. (Plain `index % URLs` would put all of a room's
    /// clients on one node whenever the URLs divide the rooms: many-rooms' 1000 rooms on 2 nodes.)
    pub fn url_index(&self, index: usize) -> usize {
        let (room, local) = self.placement(index);
        (room + local) % self.targets.len()
    }

    /// The URLs' bases, comma-separated (one URL: that URL).
    pub fn urls(&self) -> String {
        let bases: Vec<&str> = self.targets.iter().map(|t| t.base.as_str()).collect();
        bases.join(",")
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
    if !args.cursor_rate.is_finite() || !(0.1..=1000.0).contains(&args.cursor_rate) {
        return Err(format!(
            "--cursor-rate must be between 0.1 and 1000, got {}",
            args.cursor_rate
        ));
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
    if args.url.is_empty() || args.url.iter().any(|url| url.trim().is_empty()) {
        return Err(format!("--url: an empty URL in {:?}", args.url.join(",")));
    }
    let targets = args
        .url
        .iter()
        .map(|url| parse_target(url.trim(), args.batch))
        .collect::<Result<Vec<_>, _>>()?;
    if args.server_pid.contains(&0) {
        return Err("--server-pid: 0 is not a process id".into());
    }
    // A pid given twice would count its process twice.
    let mut server_pids: Vec<u32> = Vec::new();
    for pid in args.server_pid {
        if !server_pids.contains(&pid) {
            server_pids.push(pid);
        }
    }
    Ok(Settings {
        preset: args.preset,
        targets,
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
        server_pids,
        cursors_per_room: args.cursors,
        cursor_rate: args.cursor_rate,
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

    #[test]
    fn one_url_is_what_it_always_was() {
        let args = Args::parse_from(["livecanvas-load", "--url", "ws://127.0.0.1:18080/ws"]);
        let settings = resolve(args).unwrap();
        assert_eq!(settings.targets.len(), 1);
        assert_eq!(settings.urls(), "ws://127.0.0.1:18080/ws");
        assert!((0..settings.clients).all(|i| settings.url_index(i) == 0));
        assert!(settings.server_pids.is_empty());
        let settings = resolve(Args::parse_from(["livecanvas-load"])).unwrap();
        assert_eq!(settings.urls(), "ws://127.0.0.1:8080/ws");
    }

    #[test]
    fn several_urls_comma_separated_or_repeated_and_several_pids() {
        let comma = Args::parse_from([
            "livecanvas-load",
            "--url",
            "ws://127.0.0.1:18080/ws,ws://127.0.0.1:18081/ws",
            "--server-pid",
            "10,11",
            "--server-pid",
            "10",
        ]);
        let repeated = Args::parse_from([
            "livecanvas-load",
            "--url",
            "ws://127.0.0.1:18080/ws",
            "--url",
            "ws://127.0.0.1:18081/ws/",
            "--batch",
        ]);
        for (args, batch) in [(comma, false), (repeated, true)] {
            let settings = resolve(args).unwrap();
            assert_eq!(
                settings.urls(),
                "ws://127.0.0.1:18080/ws,ws://127.0.0.1:18081/ws"
            );
            assert_eq!(
                settings.targets[settings.url_index(1)].room_url(0),
                format!(
                    "ws://127.0.0.1:18081/ws/load-0{}",
                    if batch { "?batch=1" } else { "" }
                )
            );
        }
        let settings = resolve(Args::parse_from([
            "livecanvas-load",
            "--server-pid",
            "10,11",
            "--server-pid",
            "10",
        ]))
        .unwrap();
        assert_eq!(settings.server_pids, [10, 11]);
        // One bad URL among several is refused like a single one.
        for url in [
            "ws://127.0.0.1:18080/ws,ws://10.0.0.1:18081/ws",
            "ws://127.0.0.1:18080/ws,",
        ] {
            let args = Args::parse_from(["livecanvas-load", "--url", url]);
            assert!(resolve(args).is_err(), "{url} must be refused");
        }
    }

    /// Clients per URL, and per room and URL, for `clients` in `rooms` over `urls` URLs.
    fn spread(
        clients: usize,
        rooms: usize,
        urls: usize,
    ) -> (Settings, Vec<usize>, Vec<Vec<usize>>) {
        let url_list = (0..urls)
            .map(|n| format!("ws://127.0.0.1:{}/ws", 18080 + n))
            .collect::<Vec<_>>()
            .join(",");
        let args = Args::parse_from([
            "livecanvas-load".to_string(),
            "--clients".into(),
            clients.to_string(),
            "--rooms".into(),
            rooms.to_string(),
            "--url".into(),
            url_list,
        ]);
        let settings = resolve(args).unwrap();
        let mut per_url = vec![0; urls];
        let mut per_room = vec![vec![0; urls]; rooms];
        for i in 0..clients {
            let url = settings.url_index(i);
            per_url[url] += 1;
            per_room[settings.placement(i).0][url] += 1;
        }
        (settings, per_url, per_room)
    }

    #[test]
    fn several_urls_spread_every_room_over_every_node() {
        // busy-room: one room, client i on URL i % 2.
        let (settings, per_url, _) = spread(500, 1, 2);
        assert!((0..500).all(|i| settings.url_index(i) == i % 2));
        assert_eq!(per_url, [250, 250]);

        // many-rooms: 1000 rooms of 10 on 2 nodes. i % 2 would put every room on one node; here
        // each room has 5 members on each, and its 2 senders (members 0 and 1) on different ones.
        let (settings, per_url, per_room) = spread(10_000, 1000, 2);
        assert_eq!(per_url, [5000, 5000]);
        assert!(per_room.iter().all(|room| room == &[5, 5]));
        for room in 0..1000 {
            let senders: Vec<usize> = (0..2)
                .map(|member| settings.url_index(member * 1000 + room))
                .collect();
            assert_eq!(senders, [room % 2, (room + 1) % 2]);
        }

        // Uneven numbers: 3 nodes, 7 rooms, 50 clients; every room of 3 or more members reaches
        // every node, and no node has more than one client more than another.
        let (_, per_url, per_room) = spread(50, 7, 3);
        assert!(per_url.iter().max().unwrap() - per_url.iter().min().unwrap() <= 1);
        assert!(per_room.iter().all(|room| room.iter().all(|&n| n >= 2)));
        assert_eq!(per_url.iter().sum::<usize>(), 50);
    }
}
