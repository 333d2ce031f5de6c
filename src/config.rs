//! Configuration: every option as a command-line flag and an environment variable, with defaults
//! that serve the canvas on loopback without any file.
//!
//! This module owns parsing and checking the options and resolving them into [`Settings`] that the
//! actors share. It must never panic on bad input: an invalid option is one clear error line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::history::UndoLimits;
use crate::http::access::AdminKey;
use crate::http::client_addr::TrustedProxies;
use crate::protocol::{CanvasSize, MAX_CANVAS_SIDE_PX};

/// A real-time shared drawing canvas.
#[derive(Debug, Clone, Parser)]
#[command(name = "livecanvas", version, about, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Asks a running server's /healthz (on --metrics-bind if set, else --bind) and exits 0 if it
    /// is healthy, 1 if not: a container HEALTHCHECK that needs no other tool in the image.
    Healthcheck {
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Writes a consistent copy of the database in --data-dir into DIR (DIR/livecanvas.db), to be
    /// served with --data-dir DIR. While a server holds the database it is asked to make the copy,
    /// through its --metrics-bind listener (give this command the same --metrics-bind).
    Backup {
        /// An empty (or new) directory for the copy.
        dir: PathBuf,
        /// Give up waiting for a running server's copy after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (env_logger's format).
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every option of the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (use 0.0.0.0:8080 in a container; port 0 picks a free port).
    #[arg(long, env = "LIVECANVAS_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Directory of the frontend files [default: ./frontend, else frontend/ beside the binary].
    #[arg(long, env = "LIVECANVAS_FRONTEND_DIR")]
    pub frontend_dir: Option<PathBuf>,

    /// How often the server pings each client (e.g. 5s, 500ms).
    #[arg(long, env = "LIVECANVAS_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// A client silent (no pong, no message) for this long is disconnected.
    #[arg(long, env = "LIVECANVAS_CLIENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,

    /// How long a peer asked for the canvas may take to answer before the next one is asked.
    #[arg(long, env = "LIVECANVAS_SNAPSHOT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub snapshot_timeout: Duration,

    /// Largest accepted message, in bytes (a requested canvasState has its own limit).
    #[arg(long, env = "LIVECANVAS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Largest accepted canvasState (a PNG data URL answering a canvasRequest), in bytes.
    #[arg(long, env = "LIVECANVAS_MAX_SNAPSHOT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_snapshot_bytes: usize,

    /// Invalid messages in a row after which the connection is closed (1008).
    #[arg(long, env = "LIVECANVAS_MAX_INVALID_MESSAGES", default_value_t = 20)]
    pub max_invalid_messages: u32,

    /// Logical canvas width in pixels; every client scales to it.
    #[arg(long, env = "LIVECANVAS_CANVAS_WIDTH", default_value_t = 1600)]
    pub canvas_width: u32,

    /// Logical canvas height in pixels.
    #[arg(long, env = "LIVECANVAS_CANVAS_HEIGHT", default_value_t = 900)]
    pub canvas_height: u32,

    /// Most open WebSocket connections in all (503 beyond).
    #[arg(long, env = "LIVECANVAS_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most open connections from one IP address (429 beyond).
    #[arg(long, env = "LIVECANVAS_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// Connection attempts per second allowed from one IP address, sustained (429 beyond).
    #[arg(long, env = "LIVECANVAS_CONNECTION_RATE_PER_IP", default_value_t = 10)]
    pub connection_rate_per_ip: u32,

    /// Connection attempts one IP address may make at once before the rate applies.
    #[arg(long, env = "LIVECANVAS_CONNECTION_BURST_PER_IP", default_value_t = 30)]
    pub connection_burst_per_ip: u32,

    /// Private rooms one IP address may create per minute, sustained (429 beyond).
    #[arg(
        long,
        env = "LIVECANVAS_ROOM_CREATIONS_PER_MINUTE",
        default_value_t = 10
    )]
    pub room_creations_per_minute: u32,

    /// A file holding the operator's token (the admin API: `DELETE /api/rooms/{room}` and
    /// `GET /api/rooms` with `Authorization: Bearer TOKEN`); unset, the admin API is off. A file,
    /// so that the secret is not in the process list.
    #[arg(long, env = "LIVECANVAS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Private rooms one IP address may create at once before the rate applies.
    #[arg(long, env = "LIVECANVAS_ROOM_CREATION_BURST", default_value_t = 3)]
    pub room_creation_burst: u32,

    /// Most clients in one room (close 1013 beyond).
    #[arg(long, env = "LIVECANVAS_MAX_CLIENTS_PER_ROOM", default_value_t = 1_000)]
    pub max_clients_per_room: usize,

    /// Most rooms alive at once (close 1013 for a join that would open another).
    #[arg(long, env = "LIVECANVAS_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Draw and clear messages per second one connection may send, sustained.
    #[arg(long, env = "LIVECANVAS_DRAWS_PER_SECOND", default_value_t = 200)]
    pub draws_per_second: u32,

    /// Draw and clear messages one connection may send at once before the rate applies.
    #[arg(long, env = "LIVECANVAS_DRAW_BURST", default_value_t = 400)]
    pub draw_burst: u32,

    /// Messages per second the draw rate limit may drop (with an equal burst) before the
    /// connection is closed (1008): a client sending well over the rate is closed, even if paced.
    #[arg(long, env = "LIVECANVAS_FLOOD_CLOSE_AFTER", default_value_t = 400)]
    pub flood_close_after: u32,

    /// Messages waiting to be written to one client; a client that falls this far behind is
    /// dropped (1008) so that it cannot make the server's memory grow.
    #[arg(long, env = "LIVECANVAS_MAX_QUEUED_MESSAGES", default_value_t = 4_096)]
    pub max_queued_messages: usize,

    /// Origins (scheme://host[:port]) allowed to open WebSockets besides the server's own host,
    /// comma-separated.
    #[arg(long, env = "LIVECANVAS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Reverse proxies whose X-Forwarded-For is believed, comma-separated addresses or networks
    /// (e.g. 10.0.0.5,192.168.0.0/16): behind one, a client's address is the right-most entry that
    /// is not itself a trusted proxy. From any other peer the header is ignored.
    #[arg(
        long,
        env = "LIVECANVAS_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: String,

    /// Every connection to --bind starts with a PROXY protocol v2 header (HAProxy's
    /// `send-proxy-v2`), whose source address is then the client's; a connection without one is
    /// closed. Not with --tls-cert (terminate TLS at the proxy).
    #[arg(long, env = "LIVECANVAS_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// How long a batched client's messages are gathered into one frame (clients opt in with
    /// `?batch=1` on the WebSocket URL).
    #[arg(long, env = "LIVECANVAS_BATCH_TICK", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub batch_tick: Duration,

    /// On SIGTERM/SIGINT, how long to wait for connections to finish after telling clients (1001).
    #[arg(long, env = "LIVECANVAS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Log line format.
    #[arg(long, env = "LIVECANVAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// PEM certificate chain: serve HTTPS and wss:// directly (with --tls-key).
    #[arg(long, env = "LIVECANVAS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "LIVECANVAS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve /metrics, /healthz and /readyz on this separate plain-HTTP address as well
    /// (e.g. 127.0.0.1:9090); /metrics is then only there.
    #[arg(long, env = "LIVECANVAS_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Threads that run room actors [default: one per core].
    #[arg(long, env = "LIVECANVAS_ROOM_THREADS")]
    pub room_threads: Option<usize>,

    /// HTTP/WebSocket worker threads [default: one per core].
    #[arg(long, env = "LIVECANVAS_WORKERS")]
    pub workers: Option<usize>,

    /// Where every room's canvas is kept (an SQLite database, livecanvas.db, is created in it).
    #[arg(long, env = "LIVECANVAS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Keep canvases on disk (sqlite) or only while their room is open (memory).
    #[arg(long, env = "LIVECANVAS_STORAGE", value_enum, default_value_t = StorageKind::Sqlite)]
    pub storage: StorageKind,

    /// Accepted strokes are committed to disk at least this often; after a crash (kill -9) at most
    /// this much drawing is lost.
    #[arg(long, env = "LIVECANVAS_FLUSH_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,

    /// Operations a room records before its picture is re-rendered into a checkpoint and the
    /// operations it covers are pruned; bounds what a join and a restart replay.
    #[arg(long, env = "LIVECANVAS_CHECKPOINT_OPS", default_value_t = 500)]
    pub checkpoint_ops: usize,

    /// A room whose drawing paused for this long is checkpointed, so that newcomers get one picture.
    #[arg(long, env = "LIVECANVAS_CHECKPOINT_IDLE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub checkpoint_idle: Duration,

    /// How many of their own strokes each person can undo: a stroke is final once its author drew
    /// this many newer ones.
    #[arg(long, env = "LIVECANVAS_UNDO_STROKES", default_value_t = 100)]
    pub undo_strokes: u64,

    /// How long a stroke can be undone after it was drawn.
    #[arg(long, env = "LIVECANVAS_UNDO_WINDOW", default_value = "30m", value_parser = humantime::parse_duration)]
    pub undo_window: Duration,

    /// How many operations a room keeps undoable after its checkpoint: a stroke is final once the
    /// room took this many operations after it. Bounds what a newcomer is sent.
    #[arg(long, env = "LIVECANVAS_UNDO_MAX_OPS", default_value_t = 20_000)]
    pub undo_max_ops: u64,

    /// Most rooms kept on disk; a new room beyond it is refused (close 1013). Blank rooms are not kept.
    #[arg(long, env = "LIVECANVAS_MAX_STORED_ROOMS", default_value_t = 100_000)]
    pub max_stored_rooms: usize,

    /// Delete a room, with its picture, history and (for a private room) its tokens, once nobody
    /// has had it open for this long (e.g. 30d). Unset: rooms are kept for ever.
    #[arg(long, env = "LIVECANVAS_ROOM_TTL", value_parser = humantime::parse_duration)]
    pub room_ttl: Option<Duration>,

    /// Most bytes one room may take on disk (its checkpoint picture plus the operations since);
    /// beyond it draws are refused with a room_full error until someone clears the canvas.
    #[arg(long, env = "LIVECANVAS_MAX_ROOM_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_room_bytes: u64,

    /// While the store cannot write (disk full, I/O errors), accepted strokes wait in memory and
    /// are retried; beyond this many bytes of them, further draws are refused (storage_unavailable).
    #[arg(long, env = "LIVECANVAS_MAX_UNSTORED_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_unstored_bytes: u64,

    /// Testing only: SQLite's max_page_count for the database, a database that cannot grow, as on
    /// a full disk.
    #[arg(long, env = "LIVECANVAS_SQLITE_MAX_PAGES", hide = true)]
    pub sqlite_max_pages: Option<u32>,

    /// Where a newcomer's picture comes from: the server's copy, or (the original demo's way) a
    /// peer asked with canvasRequest.
    #[arg(long, env = "LIVECANVAS_NEWCOMER_PICTURE", value_enum, default_value_t = PictureSource::Server)]
    pub newcomer_picture: PictureSource,

    /// Join a cluster: every node given the same Redis serves every room, and the canvases live in
    /// Redis instead of --data-dir (e.g. redis://127.0.0.1:6379/0; rediss:// for TLS; a password
    /// as redis://:PASSWORD@host:6379/0). Unset: one node on SQLite.
    #[arg(long, env = "LIVECANVAS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's name in the cluster (logs, /healthz, Redis presence); random when unset.
    #[arg(long, env = "LIVECANVAS_NODE_ID")]
    pub node_id: Option<String>,

    /// Testing only: strokes a cluster node may have on their way to Redis before it refuses more.
    #[arg(long, env = "LIVECANVAS_REDIS_MAX_IN_FLIGHT", hide = true, default_value_t = crate::storage::MAX_APPENDS_IN_FLIGHT)]
    pub redis_max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// One SQLite database in --data-dir (WAL): canvases survive restarts and crashes.
    Sqlite,
    /// Nothing on disk: a room's canvas lives while anyone is in the room.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PictureSource {
    /// The room's own copy, sent by the server at once.
    Server,
    /// Asked of the longest-present peer (canvasRequest), the next on timeout.
    Peer,
}

/// How this node reaches its cluster (`--redis-url`).
#[derive(Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub node_id: String,
    /// Strokes on their way to Redis beyond which more are refused.
    pub max_in_flight: usize,
}

impl std::fmt::Debug for ClusterSettings {
    /// The URL may hold a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The longest node name accepted: it is part of every presence entry in Redis.
const MAX_NODE_ID_CHARS: usize = 64;

/// What the store needs to know, resolved.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `None`: persistence off.
    pub data_dir: Option<PathBuf>,
    pub flush_interval: Duration,
    pub checkpoint_ops: usize,
    pub checkpoint_idle: Duration,
    /// How far back each person can undo.
    pub undo: UndoLimits,
    pub max_stored_rooms: usize,
    pub max_room_bytes: u64,
    pub max_unstored_bytes: u64,
    pub sqlite_max_pages: Option<u32>,
    /// Rooms nobody opened for this long are deleted (`None`: kept for ever).
    pub room_ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved, checked configuration shared (read-only) by every actor.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub frontend_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub snapshot_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_snapshot_bytes: usize,
    pub max_invalid_messages: u32,
    pub canvas: CanvasSize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub connection_rate_per_ip: u32,
    pub connection_burst_per_ip: u32,
    pub room_creations_per_minute: u32,
    pub room_creation_burst: u32,
    /// The operator's token's digest (`--admin-token-file`); `None`: the admin API is off.
    pub admin: Option<AdminKey>,
    pub max_clients_per_room: usize,
    pub max_rooms: usize,
    pub draws_per_second: u32,
    pub draw_burst: u32,
    pub flood_close_after: u32,
    pub max_queued_messages: usize,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: TrustedProxies,
    pub proxy_protocol: bool,
    pub batch_tick: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub tls: Option<TlsFiles>,
    pub metrics_bind: Option<SocketAddr>,
    pub room_threads: usize,
    pub workers: usize,
    pub storage: StorageSettings,
    pub newcomer_picture: PictureSource,
    /// `Some`: this node is one of a cluster sharing rooms through Redis.
    pub cluster: Option<ClusterSettings>,
}

/// The operator's token from `path`: read once, at start-up; only its digest is kept.
fn read_admin_token(path: &std::path::Path) -> Result<AdminKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--admin-token-file {}: {err}", path.display()))?;
    AdminKey::from_file_text(&text)
        .map_err(|why| format!("--admin-token-file {}: {why}", path.display()))
}

impl Config {
    /// Where `livecanvas healthcheck` finds this configuration's server: the metrics listener if
    /// there is one, else the main one, on loopback when bound to every address.
    pub fn health_url(&self) -> Result<String, String> {
        let (mut addr, tls) = match self.metrics_bind {
            Some(addr) => (addr, false),
            None => (self.bind, self.tls_cert.is_some()),
        };
        if tls {
            return Err("with --tls-cert, set --metrics-bind for the health check".into());
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Ok(format!("http://{addr}/healthz"))
    }

    /// `path` on the operations listener (`--metrics-bind`, on loopback when bound to every
    /// address), if there is one.
    pub fn operations_url(&self, path: &str) -> Option<String> {
        let mut addr = self.metrics_bind?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(format!("http://{addr}{path}"))
    }

    /// `--redis-url` and `--node-id`, checked. A cluster needs the server's pictures: a peer on
    /// another node cannot be asked for one.
    fn cluster(&self) -> Result<Option<ClusterSettings>, String> {
        let Some(url) = self.redis_url.clone().filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err("--redis-url must start with redis:// or rediss://".into());
        }
        if self.newcomer_picture == PictureSource::Peer {
            return Err(
                "--newcomer-picture peer cannot be used with --redis-url: a cluster's \
                newcomers get the server's picture"
                    .into(),
            );
        }
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if node_id.is_empty() || node_id.len() > MAX_NODE_ID_CHARS || !node_id.chars().all(valid) {
            return Err(format!(
                "--node-id must be 1 to {MAX_NODE_ID_CHARS} letters, digits, '-', '_' or '.'"
            ));
        }
        if self.redis_max_in_flight == 0 {
            return Err("--redis-max-in-flight must be at least 1".into());
        }
        Ok(Some(ClusterSettings {
            redis_url: url,
            node_id,
            max_in_flight: self.redis_max_in_flight,
        }))
    }

    /// Checks the options against each other and resolves defaults that depend on the machine.
    /// The error is one line naming the option.
    pub fn resolve(self) -> Result<Settings, String> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cluster = self.cluster()?;
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be greater than zero".into());
        }
        if self.client_timeout <= self.heartbeat_interval {
            return Err(format!(
                "--client-timeout ({}) must be longer than --heartbeat-interval ({})",
                humantime::format_duration(self.client_timeout),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        if self.batch_tick.is_zero() || self.batch_tick > Duration::from_secs(1) {
            return Err("--batch-tick must be between 1ms and 1s".into());
        }
        if self.snapshot_timeout.is_zero() {
            return Err("--snapshot-timeout must be greater than zero".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("--max-message-bytes must be at least 1024".into());
        }
        if self.max_snapshot_bytes < self.max_message_bytes {
            return Err("--max-snapshot-bytes must be at least --max-message-bytes".into());
        }
        if self.max_invalid_messages == 0 {
            return Err("--max-invalid-messages must be at least 1".into());
        }
        for (name, side) in [
            ("--canvas-width", self.canvas_width),
            ("--canvas-height", self.canvas_height),
        ] {
            if !(1..=MAX_CANVAS_SIDE_PX).contains(&side) {
                return Err(format!("{name} must be between 1 and {MAX_CANVAS_SIDE_PX}"));
            }
        }
        for (name, value) in [
            ("--max-connections", self.max_connections),
            ("--max-connections-per-ip", self.max_connections_per_ip),
            (
                "--connection-rate-per-ip",
                self.connection_rate_per_ip as usize,
            ),
            (
                "--connection-burst-per-ip",
                self.connection_burst_per_ip as usize,
            ),
            (
                "--room-creations-per-minute",
                self.room_creations_per_minute as usize,
            ),
            ("--room-creation-burst", self.room_creation_burst as usize),
            ("--max-clients-per-room", self.max_clients_per_room),
            ("--max-rooms", self.max_rooms),
            ("--draws-per-second", self.draws_per_second as usize),
            ("--draw-burst", self.draw_burst as usize),
            ("--max-queued-messages", self.max_queued_messages),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if let Some(bad) = self
            .allowed_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(format!(
                "--allowed-origins: {bad:?} is not an origin like https://canvas.example"
            ));
        }
        let trusted_proxies: TrustedProxies = self
            .trusted_proxies
            .parse()
            .map_err(|err| format!("--trusted-proxies: {err}"))?;
        if self.proxy_protocol && self.tls_cert.is_some() {
            return Err(
                "--proxy-protocol cannot be used with --tls-cert: terminate TLS at the proxy"
                    .into(),
            );
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(60) {
            return Err("--flush-interval must be between 1ms and 60s".into());
        }
        if self
            .room_ttl
            .is_some_and(|ttl| ttl < Duration::from_secs(1))
        {
            return Err("--room-ttl must be at least 1s".into());
        }
        if self.checkpoint_idle.is_zero() {
            return Err("--checkpoint-idle must be greater than zero".into());
        }
        for (name, value) in [
            ("--checkpoint-ops", self.checkpoint_ops),
            ("--max-stored-rooms", self.max_stored_rooms),
            ("--max-room-bytes", self.max_room_bytes as usize),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.storage == StorageKind::Sqlite && self.data_dir.as_os_str().is_empty() {
            return Err(
                "--data-dir must not be empty (use --storage memory to keep nothing)".into(),
            );
        }
        if self.room_threads == Some(0) || self.workers == Some(0) {
            return Err("--room-threads and --workers must be at least 1".into());
        }
        let admin = match &self.admin_token_file {
            None => None,
            Some(path) => Some(read_admin_token(path)?),
        };
        Ok(Settings {
            bind: self.bind,
            frontend_dir: resolve_frontend_dir(self.frontend_dir)?,
            heartbeat_interval: self.heartbeat_interval,
            client_timeout: self.client_timeout,
            snapshot_timeout: self.snapshot_timeout,
            max_message_bytes: self.max_message_bytes,
            max_snapshot_bytes: self.max_snapshot_bytes,
            max_invalid_messages: self.max_invalid_messages,
            canvas: CanvasSize {
                width: self.canvas_width,
                height: self.canvas_height,
            },
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            connection_rate_per_ip: self.connection_rate_per_ip,
            connection_burst_per_ip: self.connection_burst_per_ip,
            room_creations_per_minute: self.room_creations_per_minute,
            room_creation_burst: self.room_creation_burst,
            admin,
            max_clients_per_room: self.max_clients_per_room,
            max_rooms: self.max_rooms,
            draws_per_second: self.draws_per_second,
            draw_burst: self.draw_burst,
            flood_close_after: self.flood_close_after,
            max_queued_messages: self.max_queued_messages,
            allowed_origins: self.allowed_origins,
            trusted_proxies,
            proxy_protocol: self.proxy_protocol,
            batch_tick: self.batch_tick,
            shutdown_grace: self.shutdown_grace,
            log_format: self.log_format,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            metrics_bind: self.metrics_bind,
            room_threads: self.room_threads.unwrap_or(cores),
            workers: self.workers.unwrap_or(cores),
            storage: StorageSettings {
                data_dir: (self.storage == StorageKind::Sqlite).then_some(self.data_dir),
                flush_interval: self.flush_interval,
                checkpoint_ops: self.checkpoint_ops,
                checkpoint_idle: self.checkpoint_idle,
                undo: UndoLimits {
                    strokes: self.undo_strokes,
                    window: self.undo_window,
                    ops: self.undo_max_ops,
                },
                max_stored_rooms: self.max_stored_rooms,
                max_room_bytes: self.max_room_bytes,
                max_unstored_bytes: self.max_unstored_bytes,
                sqlite_max_pages: self.sqlite_max_pages,
                room_ttl: self.room_ttl,
            },
            newcomer_picture: self.newcomer_picture,
            cluster,
        })
    }
}

/// The frontend must exist at start-up: a server that serves 404 for its own page is worse than
/// one that refuses to start.
fn resolve_frontend_dir(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    let candidates = match explicit {
        Some(dir) => vec![dir],
        None => default_frontend_dirs(),
    };
    candidates
        .iter()
        .find(|dir| dir.join("index.html").is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            format!(
                "--frontend-dir: no index.html found in {}",
                tried.join(", ")
            )
        })
}

fn default_frontend_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("frontend")];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    {
        dirs.push(exe_dir.join("frontend"));
        // `target/{debug,release}/livecanvas` run from elsewhere: the crate's own frontend.
        dirs.push(exe_dir.join("../../frontend"));
    }
    dirs
}

/// Settings from these flags (on top of the defaults and the real frontend), for unit tests.
#[cfg(test)]
pub(crate) fn parse_for_tests(args: &[&str]) -> Result<Settings, String> {
    let mut argv = vec!["livecanvas", "--frontend-dir", env!("CARGO_MANIFEST_DIR")];
    argv.extend_from_slice(args);
    // The crate root has no index.html; point at the real frontend.
    let mut config = Cli::try_parse_from(argv).map_err(|e| e.to_string())?.config;
    config.frontend_dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("frontend"));
    config.resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        parse_for_tests(args)
    }

    #[test]
    fn defaults_serve_on_loopback_8080() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(settings.client_timeout, Duration::from_secs(30));
        assert_eq!(
            settings.canvas,
            CanvasSize {
                width: 1600,
                height: 900
            }
        );
    }

    #[test]
    fn a_timeout_shorter_than_the_heartbeat_is_refused_by_name() {
        let err = parse(&["--heartbeat-interval", "10s", "--client-timeout", "5s"]).unwrap_err();
        assert!(err.contains("--client-timeout"), "{err}");
    }

    #[test]
    fn a_room_ttl_is_off_by_default_and_below_a_second_is_refused() {
        assert_eq!(parse(&[]).unwrap().storage.room_ttl, None);
        assert_eq!(
            parse(&["--room-ttl", "30d"]).unwrap().storage.room_ttl,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        let err = parse(&["--room-ttl", "500ms"]).unwrap_err();
        assert!(err.contains("--room-ttl"), "{err}");
    }

    #[test]
    fn a_missing_frontend_dir_is_named() {
        let err = resolve_frontend_dir(Some(PathBuf::from("/nonexistent/ui"))).unwrap_err();
        assert!(err.contains("/nonexistent/ui"), "{err}");
    }
}
