//! `Cluster`: the rooms of every node that shares one Redis (`--redis-url`).
//!
//! It owns this node's two links to Redis: a connection manager for commands (reconnecting by
//! itself) and one Pub/Sub connection (`follow`, reconnected here with backoff) on which every
//! room open on this node hears its room's channel. It must never hold a room's order itself (Redis
//! gives it: one script per operation assigns the room's next number, appends the operation to the
//! room's stream and publishes it, atomically), never retry an operation whose answer was lost (it
//! could be applied twice; the sender is told it was not kept and catching up shows it if it was),
//! and never wait on Redis without a bound.
//!
//! # Data model (every key of room R holds `{R}`, so one room lives in one Redis Cluster slot)
//!
//! - `livecanvas:{R}:meta`, a hash: `seq` (the last operation's number), `cp_seq`, `cp_at` and
//!   `png` (the last checkpoint: the picture after operation `cp_seq`, stored at Unix ms `cp_at`;
//!   no `png` while blank), `members` and `members_v` (the last room-wide count published, and its
//!   version), `opened` (when a node last opened the room, or a retention sweep found it open: ms
//!   since the epoch).
//! - `livecanvas:{R}:ops`, a stream: operation `n` has ID `0-n`, fields `o` (the JSON broadcast for
//!   it) and `f` (the sender's client id, so that nobody gets their own back). A stored checkpoint
//!   trims what it covers (`XTRIM MINID`).
//! - `livecanvas:{R}:lease`: the node rendering R's checkpoint (`SET NX PX`), so only one does.
//! - `livecanvas:{R}:presence`, a hash: node → `count:deadline_ms`. Nodes refresh their entries
//!   every heartbeat; an entry past its deadline (a node that died) is dropped by the next script
//!   that sums them.
//! - `livecanvas:{R}:access`, a hash: `edit`, `view` and `owner`, the SHA-256 digests (32 raw
//!   bytes) of a private room's tokens, never the tokens (no `owner` for a room made before rooms
//!   had owners), and `locked` (`1` while the owner has locked the room). Present only for a
//!   private room; written when the room is created (which also enters R in `livecanvas:rooms`),
//!   changed when its owner replaces the links or locks it, and kept as long as the room's other
//!   keys. A room is removed, every key of it and its set entry, only by the operator's delete or
//!   by retention (`--room-ttl`), both with the same Lua (`delete_room_keys!`).
//! - `livecanvas:{R}:roster`, a hash: node → the JSON array of that node's first 200 members
//!   (`clientId`, `name`, `color`). Written and dropped with the node's `presence` entry (same
//!   deadline), so a dead node's members leave the room-wide list when its count does.
//! - `livecanvas:rooms`, a set of room names: `--max-stored-rooms` counts it.
//! - `livecanvas:node:<node>`: written by each node every second (10 s lifetime), proving that
//!   Redis takes writes.
//! - Channel `livecanvas:{R}:live`: `o:<seq>:<from>:<json>` (an operation), `c:<version>:<count>` (the
//!   room-wide count changed), `k:<seq>` (a checkpoint at `seq` was stored), `p:<version>:<json>`
//!   (the room-wide presence list changed: a JSON array of every live node's roster; `version` is
//!   `roster_v` in the meta hash), `u:<node>:<json>` (the cursors that moved on `node` during one
//!   tick: a JSON array of `cursor` frames; published by each node at most once per room per
//!   `CURSOR_TICK`, never stored), `m:<action>` (the room's owner or the operator acted on it:
//!   `links`, `lock:1`, `lock:0`, `kick:<client id>`, `deleted`; see `moderation`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use ::redis::{Client, FromRedisValue, RedisError, Script, Value};
use actix::prelude::*;
use bytestring::ByteString;
use futures_util::StreamExt;
use uuid::Uuid;

use super::types::{lock, Creation, RoomAccess, RoomListing, StoreError, StoreHealth, StoredRoom};
use crate::http::access::{AccessHashes, Digest32};
use crate::moderation::Moderation;

/// Every key and channel starts with this.
pub const KEY_PREFIX: &str = "livecanvas:";

/// A command or a subscription Redis has not answered in this long has failed.
const REDIS_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Connecting to Redis gives up after this long (then retries with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnection backoff: the first wait, doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The Pub/Sub link is pinged this often: a Redis that stopped answering without closing the
/// connection is noticed within about this plus `REDIS_ANSWER_TIMEOUT`.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Rooms listed per `SSCAN` of a retention sweep.
const EXPIRE_SCAN_COUNT: usize = 500;
/// At most this many appends go to Redis in one pipeline (one round trip).
const MAX_APPENDS_PER_TRIP: usize = 256;
/// At most this many appends may be on their way to Redis from one node; beyond, strokes are
/// refused (aloud) rather than queued: a node that reads strokes faster than Redis takes them
/// would otherwise queue without bound (measured: 3-4 s of delay and 560,000 deliveries late when
/// a 2-core machine was overloaded). At tens of thousands of strokes a second, this is a fraction
/// of a second of them.
pub const MAX_APPENDS_IN_FLIGHT: usize = 8_192;
/// The key each node writes every `PING_INTERVAL` to prove Redis takes writes lives this long.
const NODE_KEY_LIFETIME: Duration = Duration::from_secs(10);
/// A deleted room's keys are deleted once more this long after (see `Cluster::delete_room`):
/// longer than any append or count another node may have had on its way to Redis.
const DELETE_SWEEP_AFTER: Duration = Duration::from_secs(2 * REDIS_ANSWER_TIMEOUT.as_secs());
/// How long a node may hold a room's checkpoint lease (rendering takes well under a second).
pub const CHECKPOINT_LEASE: Duration = Duration::from_secs(30);

/// What the presence script answers: the room-wide count and presence list, with their versions.
#[derive(Debug)]
pub struct PresenceAnswer {
    pub version: u64,
    pub total: u64,
    pub roster_version: u64,
    /// A JSON array of every live node's roster (see `presence::merge_rosters`).
    pub rosters: String,
}

impl PresenceAnswer {
    fn parse(value: &Value) -> Result<Self, StoreError> {
        let invalid = || redis_error("an unexpected answer to the presence script");
        let Value::Array(parts) = value else {
            return Err(invalid());
        };
        let [version, total, roster_version, rosters] = parts.as_slice() else {
            return Err(invalid());
        };
        Ok(PresenceAnswer {
            version: number(version).map_err(|_| invalid())?,
            total: number(total).map_err(|_| invalid())?,
            roster_version: number(roster_version).map_err(|_| invalid())?,
            rosters: text(rosters).ok_or_else(invalid)?,
        })
    }
}

/// What the cluster tells a room open on this node.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Relayed {
    /// Operation `seq` of the room, accepted by some node for member `from`.
    Op {
        seq: u64,
        from: Option<Uuid>,
        frame: ByteString,
    },
    /// The room-wide member count changed (`version` grows with every change).
    Count { version: u64, total: u64 },
    /// The room-wide presence list changed: `rosters` is every live node's list, as JSON.
    Roster { version: u64, rosters: String },
    /// The cursors that moved on `node` during one tick, as `cursor` frames.
    Cursors {
        node: String,
        frames: Vec<ByteString>,
    },
    /// A checkpoint at `seq` was stored.
    Checkpoint(u64),
    /// The room's owner or the operator acted on the room.
    Moderated(Moderation),
    /// The link to Redis is back: what was published meanwhile was missed, catch up.
    Resync,
    /// The link to Redis is lost.
    Lost,
}

/// What a room missed, read back from its stream.
pub enum CatchUp {
    /// The operations after the room's last one, in order.
    Ops(Vec<RelayedOp>),
    /// A checkpoint covers operations the room never had: it must start again from Redis.
    Behind,
    /// Redis has fewer operations than the room (it lost its last ones): it must start again.
    Ahead,
}

/// One operation as stored in a room's stream.
#[derive(Debug, Clone)]
pub struct RelayedOp {
    pub seq: u64,
    pub from: Option<Uuid>,
    pub frame: ByteString,
}

/// What `write_appends` takes, in order.
enum Job {
    Append(Append),
    /// Answered once every append queued before it has its answer (a graceful stop waits).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// One operation on its way to Redis, and where its number goes.
struct Append {
    keys: [String; 2],
    args: [Vec<u8>; 3],
    reply: tokio::sync::oneshot::Sender<Result<u64, StoreError>>,
}

/// A room open on this node: where its channel's messages go.
struct Subscriber {
    token: u64,
    room: Recipient<Relayed>,
}

/// The handle to the cluster: cheap to clone, shared by every room.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<str>,
    /// Appends in the order the rooms made them, for `write_appends`.
    appends: tokio::sync::mpsc::UnboundedSender<Job>,
    /// Appends queued or on the wire, not answered yet (at most `max_in_flight`).
    in_flight: std::sync::atomic::AtomicUsize,
    /// `MAX_APPENDS_IN_FLIGHT` unless a test says otherwise.
    max_in_flight: usize,
    client: Client,
    /// Created on the system's runtime by `start` (its driver task lives there).
    conn: Mutex<Option<ConnectionManager>>,
    health: StoreHealth,
    rooms: Mutex<HashMap<Arc<str>, Subscriber>>,
    /// The live Pub/Sub link's subscribing half, while there is one.
    sink: Mutex<Option<PubSubSink>>,
    /// Held while a subscription changes, so that a closing room's UNSUBSCRIBE can never reach
    /// Redis after the SUBSCRIBE of the same room opening again (it would silence the new one).
    subscribing: tokio::sync::Mutex<()>,
    /// The appends' receiving end, until `start` hands it to `write_appends`.
    queued: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Job>>>,
    next_token: AtomicU64,
    max_rooms: usize,
    presence_ttl: Duration,
    scripts: Scripts,
}

impl Inner {
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        lock(&self.conn)
            .clone()
            .ok_or_else(|| redis_error("not started"))
    }
}

struct Scripts {
    append: Script,
    load: Script,
    after: Script,
    checkpoint: Script,
    presence: Script,
    create_private: Script,
    change_access: Script,
    delete_room: Script,
    expire: Script,
}

/// Every key of `room`, then the set of rooms: what deleting a room removes (the `KEYS` of
/// `DELETE_ROOM` and `EXPIRE`, which delete with the same Lua).
fn room_keys(room: &str) -> Vec<String> {
    vec![
        meta_key(room),
        ops_key(room),
        lease_key(room),
        presence_key(room),
        access_key(room),
        roster_key(room),
        rooms_key(),
    ]
}

fn meta_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:meta")
}
fn ops_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:ops")
}
fn lease_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:lease")
}
fn presence_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:presence")
}
fn access_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:access")
}

/// What a room's channel carries for a moderation action.
fn moderation_message(action: Moderation) -> String {
    format!("m:{}", action.to_wire())
}

fn roster_key(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:roster")
}
fn rooms_key() -> String {
    format!("{KEY_PREFIX}rooms")
}
/// The room's channel.
pub fn channel(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:live")
}
/// The room a channel belongs to.
fn room_of(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(KEY_PREFIX)?
        .strip_prefix('{')?
        .strip_suffix("}:live")
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn redis_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Redis {
        detail: err.to_string(),
    }
}

/// `future`, or a `StoreError` once `REDIS_ANSWER_TIMEOUT` has passed. Every call's round trip
/// and every failure (an error answer, a lost link, a timeout) go into [`figures`].
async fn bounded<T>(
    what: &str,
    future: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(REDIS_ANSWER_TIMEOUT, future).await {
        Ok(result) => result.map_err(redis_error),
        Err(_) => Err(redis_error(format_args!(
            "{what}: no answer within {}s",
            REDIS_ANSWER_TIMEOUT.as_secs()
        ))),
    };
    let figures = figures();
    figures
        .round_trip_seconds
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        figures.errors.with_label_values(&[what]).inc();
    }
    result
}

/// What `/metrics` shows of this node's Redis: every call's round trip, and the calls that
/// failed, by what they were for. Process-wide, as the node's links to Redis are.
pub struct RedisFigures {
    pub round_trip_seconds: prometheus::Histogram,
    pub errors: prometheus::IntCounterVec,
}

/// Round-trip buckets, in seconds: from 100 µs to the 3 s a call may take.
const ROUND_TRIP_BUCKETS_SECONDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0, 3.0,
];

/// This process's [`RedisFigures`].
pub fn figures() -> &'static RedisFigures {
    static FIGURES: std::sync::OnceLock<RedisFigures> = std::sync::OnceLock::new();
    FIGURES.get_or_init(|| RedisFigures {
        round_trip_seconds: prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "redis_round_trip_seconds",
                "Round trip of each call to Redis (a script, a command, a ping).",
            )
            .buckets(ROUND_TRIP_BUCKETS_SECONDS.to_vec()),
        )
        .unwrap_or_else(|_| unreachable!("a constant, valid metric name")),
        errors: prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "redis_errors_total",
                "Calls to Redis that failed (an error answer, a lost link, no answer in time).",
            ),
            &["operation"],
        )
        .unwrap_or_else(|_| unreachable!("a constant, valid metric name")),
    })
}

impl Cluster {
    /// A handle for the Redis at `url` (checked here; nothing is connected until `start`).
    pub fn new(
        url: &str,
        node: &str,
        max_rooms: usize,
        presence_ttl: Duration,
        max_in_flight: usize,
    ) -> Result<Cluster, StoreError> {
        let client = Client::open(url).map_err(|err| StoreError::Redis {
            detail: format!("--redis-url is not usable: {err}"),
        })?;
        let health = StoreHealth::new(0);
        health.failed("not connected to Redis yet".into(), 0);
        let (appends, queued) = tokio::sync::mpsc::unbounded_channel();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node: Arc::from(node),
                appends,
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                max_in_flight,
                client,
                conn: Mutex::new(None),
                health,
                rooms: Mutex::new(HashMap::new()),
                sink: Mutex::new(None),
                subscribing: tokio::sync::Mutex::new(()),
                queued: Mutex::new(None),
                next_token: AtomicU64::new(1),
                max_rooms,
                presence_ttl,
                scripts: Scripts {
                    append: Script::new(APPEND),
                    load: Script::new(LOAD),
                    after: Script::new(AFTER),
                    checkpoint: Script::new(CHECKPOINT),
                    presence: Script::new(PRESENCE),
                    create_private: Script::new(CREATE_PRIVATE),
                    change_access: Script::new(CHANGE_ACCESS),
                    delete_room: Script::new(DELETE_ROOM),
                    expire: Script::new(EXPIRE),
                },
            }),
        };
        *lock(&cluster.inner.queued) = Some(queued);
        Ok(cluster)
    }

    /// Starts the links to Redis, on the current (the system's) runtime: the connection manager
    /// and the Pub/Sub follower, which connects, and reconnects, with backoff.
    pub fn start(&self) -> Result<(), StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_ANSWER_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RETRY_MAX);
        let conn = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            .map_err(redis_error)?;
        *lock(&self.inner.conn) = Some(conn);
        actix::spawn(self.clone().follow());
        if let Some(queued) = lock(&self.inner.queued).take() {
            actix::spawn(self.clone().write_appends(queued));
        }
        Ok(())
    }

    /// Sends the rooms' appends to Redis in the order they were made: a room's operations keep
    /// their sender's order, which futures racing each other to the connection would not. What
    /// queued up during one round trip goes in the next, as one pipeline.
    async fn write_appends(self, mut queued: tokio::sync::mpsc::UnboundedReceiver<Job>) {
        let mut flushes = Vec::new();
        while let Some(first) = queued.recv().await {
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(append) => batch.push(append),
                    // Answered after this batch, which holds everything queued before it.
                    Job::Flush(done) => flushes.push(done),
                }
                if batch.len() < MAX_APPENDS_PER_TRIP {
                    next = queued.try_recv().ok();
                }
            }
            if batch.is_empty() {
                flushes.drain(..).for_each(|done| {
                    let _ = done.send(());
                });
                continue;
            }
            let mut results = self.run_appends(&batch).await;
            if results.iter().any(is_no_script) {
                // Redis restarted and forgot the script: none of these ran; load it, go again.
                let load = self.inner.scripts.append.prepare_invoke();
                if let Ok(mut conn) = self.inner.conn() {
                    let _ = bounded("loading scripts", load.load_async(&mut conn)).await;
                }
                results = self.run_appends(&batch).await;
            }
            let answered = batch.len();
            for (append, result) in batch.into_iter().zip(results) {
                let _ = append.reply.send(result);
            }
            self.inner.in_flight.fetch_sub(answered, Ordering::Relaxed);
            flushes.drain(..).for_each(|done| {
                let _ = done.send(());
            });
        }
    }

    /// A graceful stop: every operation accepted is handed to Redis, then this node's members
    /// leave every room's count at once (not when its entries expire).
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        let flushed = self.flush();
        let this = self.clone();
        async move {
            flushed.await;
            let rooms: Vec<Arc<str>> = lock(&this.inner.rooms).keys().cloned().collect();
            let leaving: Vec<_> = rooms
                .iter()
                .map(|room| this.presence(room, 0, String::new()))
                .collect();
            for left in futures_util::future::join_all(leaving).await {
                if let Err(err) = left {
                    log::warn!("node={} left a count behind: {err}", this.inner.node);
                }
            }
        }
    }

    /// Resolves once every operation appended before the call has Redis's answer (at most
    /// `REDIS_ANSWER_TIMEOUT` per round trip): a stopping node hands over what it accepted.
    pub fn flush(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, flushed) = tokio::sync::oneshot::channel();
        let queued = self.inner.appends.send(Job::Flush(done)).is_ok();
        async move {
            if queued {
                let _ = flushed.await;
            }
        }
    }

    async fn run_appends(&self, batch: &[Append]) -> Vec<Result<u64, StoreError>> {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for append in batch {
            pipe.cmd("EVALSHA")
                .arg(self.inner.scripts.append.get_hash())
                .arg(append.keys.len())
                .arg(&append.keys[..])
                .arg(&append.args[..]);
        }
        let answers = async {
            let mut conn = self.inner.conn()?;
            bounded(
                "appending",
                pipe.query_async::<Vec<Result<u64, RedisError>>>(&mut conn),
            )
            .await
        };
        match answers.await {
            Ok(answers) if answers.len() == batch.len() => answers
                .into_iter()
                .map(|answer| {
                    answer.map_err(|err| match err.code() {
                        Some(NO_SCRIPT) => redis_error(NO_SCRIPT),
                        _ => redis_error(err),
                    })
                })
                .collect(),
            Ok(_) => batch
                .iter()
                .map(|_| Err(redis_error("a short answer to a pipeline")))
                .collect(),
            Err(err) => batch.iter().map(|_| Err(redis_error(&err))).collect(),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether this node can reach Redis (failing: joins and draws are refused).
    pub fn health(&self) -> &StoreHealth {
        &self.inner.health
    }

    /// Follows the rooms' channels for as long as the server runs: connect, subscribe every open
    /// room, tell them to catch up, route what arrives; on loss, tell them and try again.
    async fn follow(self) {
        let mut wait = RETRY_FIRST;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    wait = RETRY_FIRST;
                    log::info!("node={} connected to Redis", self.inner.node);
                    self.inner.health.recovered();
                    self.tell_every_room(|| Relayed::Resync);
                    let why = self.route(stream).await;
                    self.lost(why);
                }
                Err(err) => self.lost(err.to_string()),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    async fn connect(&self) -> Result<PubSubStream, StoreError> {
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.inner.client.get_async_pubsub())
            .await
            .map_err(|_| redis_error("connecting timed out"))?
            .map_err(redis_error)?;
        let (mut sink, stream) = pubsub.split();
        let in_turn = self.inner.subscribing.lock().await;
        let channels: Vec<String> = lock(&self.inner.rooms).keys().map(|r| channel(r)).collect();
        if !channels.is_empty() {
            bounded("subscribing", sink.subscribe(channels)).await?;
        }
        // Scripts are not kept across a Redis restart: load them before the rooms use them, so
        // that no append falls back to EVAL (a retry that could overtake the next one).
        let mut conn = self.inner.conn()?;
        for script in [
            &self.inner.scripts.append,
            &self.inner.scripts.load,
            &self.inner.scripts.after,
            &self.inner.scripts.checkpoint,
            &self.inner.scripts.presence,
        ] {
            let invocation = script.prepare_invoke();
            bounded("loading scripts", invocation.load_async(&mut conn)).await?;
        }
        // Connected is not enough: ready means strokes can be kept.
        self.check_writes().await.map_err(redis_error)?;
        *lock(&self.inner.sink) = Some(sink);
        drop(in_turn);
        Ok(stream)
    }

    /// Routes messages to their rooms until the link fails; returns why.
    async fn route(&self, mut stream: PubSubStream) -> String {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.deliver(&message),
                    None => return "the connection to Redis closed".into(),
                },
                _ = ping.tick() => {
                    let Some(mut sink) = lock(&self.inner.sink).clone() else {
                        return "the connection to Redis is gone".into();
                    };
                    if let Err(err) = bounded("ping", sink.ping::<Value>()).await {
                        return err.to_string();
                    }
                    if let Err(why) = self.check_writes().await {
                        return why;
                    }
                }
            }
        }
    }

    /// Whether Redis takes a write now: a Redis that answers pings but refuses writes (out of
    /// memory under `noeviction`, a replica, a full disk with AOF) keeps no stroke, and the node
    /// must say so rather than report ready.
    async fn check_writes(&self) -> Result<(), String> {
        let mut command = ::redis::cmd("SET");
        command
            .arg(format!("{KEY_PREFIX}node:{}", self.inner.node))
            .arg(unix_millis())
            .arg("PX")
            .arg(NODE_KEY_LIFETIME.as_millis() as u64);
        match self.query::<Value>("checking writes", command).await {
            Ok(_) => Ok(()),
            Err(err) => Err(format!("Redis refuses writes: {err}")),
        }
    }

    fn lost(&self, why: String) {
        // Each broken link and each failed attempt to connect, beside the calls that failed.
        figures().errors.with_label_values(&["link"]).inc();
        let was_connected = lock(&self.inner.sink).take().is_some();
        if was_connected || !self.inner.health.is_failing() {
            log::error!(
                "node={} lost Redis: {why}; joins and draws are refused until it is back",
                self.inner.node
            );
        } else {
            log::debug!("node={} cannot reach Redis: {why}", self.inner.node);
        }
        self.inner
            .health
            .failed(format!("cannot reach Redis: {why}"), 0);
        if was_connected {
            self.tell_every_room(|| Relayed::Lost);
        }
    }

    fn tell_every_room(&self, message: impl Fn() -> Relayed) {
        for subscriber in lock(&self.inner.rooms).values() {
            subscriber.room.do_send(message());
        }
    }

    fn deliver(&self, message: &::redis::Msg) {
        let Some(room) = room_of(message.get_channel_name()) else {
            return;
        };
        let Some(relayed) = parse_message(message.get_payload_bytes()) else {
            log::warn!("room={room}: an unreadable message on its channel was ignored");
            return;
        };
        if let Some(subscriber) = lock(&self.inner.rooms).get(room) {
            subscriber.room.do_send(relayed);
        }
    }

    /// Routes the room's channel to `room` from now on; resolves once Redis confirmed the
    /// subscription (so that a load after it misses nothing). The token unsubscribes.
    pub fn subscribe(
        &self,
        name: Arc<str>,
        room: Recipient<Relayed>,
    ) -> (u64, impl Future<Output = Result<(), StoreError>> + 'static) {
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.rooms).insert(name.clone(), Subscriber { token, room });
        let inner = self.inner.clone();
        let subscribed = async move {
            let _in_turn = inner.subscribing.lock().await;
            let Some(mut sink) = lock(&inner.sink).clone() else {
                return Err(redis_error("not connected"));
            };
            bounded("subscribing", sink.subscribe(channel(&name))).await
        };
        (token, subscribed)
    }

    /// The room with `token` closed: its channel is no longer followed (unless it reopened).
    pub fn unsubscribe(&self, name: &Arc<str>, token: u64) {
        let mut rooms = lock(&self.inner.rooms);
        if rooms.get(name).is_none_or(|s| s.token != token) {
            return;
        }
        rooms.remove(name);
        drop(rooms);
        let (inner, name) = (self.inner.clone(), name.clone());
        actix::spawn(async move {
            let _in_turn = inner.subscribing.lock().await;
            // The room may have opened again meanwhile: its subscription is the same channel.
            if lock(&inner.rooms).contains_key(&name) {
                return;
            }
            let sink = lock(&inner.sink).clone();
            if let Some(mut sink) = sink {
                let _ = bounded("unsubscribing", sink.unsubscribe(channel(&name))).await;
            }
        });
    }

    /// Runs one of the scripts with `keys` and `args`, bounded; the future owns what it needs.
    fn invoke<T: FromRedisValue + Send + 'static>(
        &self,
        what: &'static str,
        script: fn(&Scripts) -> &Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut conn = inner.conn()?;
            let mut invocation = script(&inner.scripts).prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            bounded(what, invocation.invoke_async(&mut conn)).await
        }
    }

    /// Retention: deletes every room of the cluster that nobody had open for `ttl` (see the
    /// `EXPIRE` script; a room with members on any node is open); the number deleted. Every node
    /// sweeps: a room deleted by one is gone for the others' scripts.
    pub fn expire(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send + 'static {
        let cluster = self.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        async move {
            let mut cursor = 0u64;
            let mut deleted = 0;
            loop {
                let mut command = ::redis::cmd("SSCAN");
                command
                    .arg(rooms_key())
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(EXPIRE_SCAN_COUNT);
                let (next, rooms): (u64, Vec<String>) =
                    cluster.query("listing rooms to expire", command).await?;
                for room in rooms {
                    let keys = room_keys(&room);
                    let args = vec![room.as_bytes().to_vec(), ttl_ms.to_string().into_bytes()];
                    let gone: i64 = cluster
                        .invoke("expiring a room", |s| &s.expire, keys, args)
                        .await?;
                    if gone == 1 {
                        log::info!("room={room} deleted: nobody opened it within --room-ttl");
                        deleted += 1;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    return Ok(deleted);
                }
            }
        }
    }

    /// Runs one command, bounded.
    fn query<T: FromRedisValue + Send + 'static>(
        &self,
        what: &'static str,
        command: ::redis::Cmd,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut conn = inner.conn()?;
            bounded(what, command.query_async(&mut conn)).await
        }
    }

    /// As many appends are on their way to Redis as may be: refuse strokes until some are
    /// answered.
    pub fn saturated(&self) -> bool {
        self.inner.in_flight.load(Ordering::Relaxed) >= self.inner.max_in_flight
    }

    /// Appends an operation to the room; resolves to its number once Redis has it (every node
    /// then gets it on the room's channel, this one included).
    pub fn append(
        &self,
        room: &str,
        from: Option<Uuid>,
        frame: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let from = from.map_or_else(|| "-".to_string(), |id| id.to_string());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let append = Append {
            keys: [meta_key(room), ops_key(room)],
            args: [
                from.into_bytes(),
                frame.as_bytes().to_vec(),
                channel(room).into_bytes(),
            ],
            reply,
        };
        // Queued now, in the caller's order, not when the future is first polled.
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        let queued = self.inner.appends.send(Job::Append(append)).is_ok();
        if !queued {
            self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        async move {
            if !queued {
                return Err(redis_error("the node is stopping"));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(redis_error("the node is stopping")))
        }
    }

    /// Loads a room (creating its entry unless `max_rooms` are stored).
    pub fn load(
        &self,
        room: Arc<str>,
    ) -> impl Future<Output = Result<StoredRoom, StoreError>> + Send + 'static {
        let read = self.read_room(room, self.inner.max_rooms.max(1));
        async move {
            match read.await? {
                Some(stored) => Ok(stored),
                None => Err(redis_error("the room vanished while loading")),
            }
        }
    }

    /// Reads a room without creating it: `None` if Redis has no such room.
    pub fn read(
        &self,
        room: Arc<str>,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send + 'static {
        self.read_room(room, 0)
    }

    fn read_room(
        &self,
        room: Arc<str>,
        max_rooms: usize,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send + 'static {
        let answer = self.invoke::<Value>(
            "loading",
            |s| &s.load,
            vec![meta_key(&room), ops_key(&room), rooms_key()],
            vec![room.as_bytes().to_vec(), max_rooms.to_string().into_bytes()],
        );
        let limit = self.inner.max_rooms;
        async move { parse_load(answer.await?, limit, &room) }
    }

    /// What the room missed after operation `last`.
    pub fn after(
        &self,
        room: &str,
        last: u64,
    ) -> impl Future<Output = Result<CatchUp, StoreError>> + Send + 'static {
        let answer = self.invoke::<Value>(
            "catching up",
            |s| &s.after,
            vec![meta_key(room), ops_key(room)],
            vec![last.to_string().into_bytes()],
        );
        async move { parse_after(answer.await?).map_err(redis_error) }
    }

    /// Takes the room's checkpoint lease: `true` if this node may render the checkpoint now.
    pub fn lease(&self, room: &str) -> impl Future<Output = bool> + Send + 'static {
        let mut command = ::redis::cmd("SET");
        command
            .arg(lease_key(room))
            .arg(&*self.inner.node)
            .arg("NX")
            .arg("PX")
            .arg(CHECKPOINT_LEASE.as_millis() as u64);
        let answer = self.query::<Value>("leasing", command);
        async move { matches!(answer.await, Ok(Value::Okay)) }
    }

    /// Stores a checkpoint (in the background; a failure is logged: the operations stay in the
    /// stream and the next checkpoint covers them).
    pub fn checkpoint(&self, room: &Arc<str>, seq: u64, png: Vec<u8>) {
        let stored = self.invoke::<i64>(
            "storing a checkpoint",
            |s| &s.checkpoint,
            vec![meta_key(room), ops_key(room), lease_key(room)],
            vec![
                seq.to_string().into_bytes(),
                png,
                self.inner.node.as_bytes().to_vec(),
                channel(room).into_bytes(),
            ],
        );
        let room = room.clone();
        actix::spawn(async move {
            match stored.await {
                Ok(1) => log::debug!("room={room} checkpoint at {seq} stored"),
                Ok(_) => log::debug!("room={room} checkpoint at {seq} not needed"),
                Err(err) => log::warn!("room={room} checkpoint at {seq} not stored: {err}"),
            }
        });
    }

    /// The room's stored checkpoint: its operation number and PNG (empty: blank).
    pub fn stored_checkpoint(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<(u64, Vec<u8>), StoreError>> + Send + 'static {
        let mut command = ::redis::cmd("HMGET");
        command.arg(meta_key(room)).arg("cp_seq").arg("png");
        let answer = self.query::<(Option<u64>, Option<Vec<u8>>)>("reading a checkpoint", command);
        async move {
            let (seq, png) = answer.await?;
            Ok((seq.unwrap_or(0), png.unwrap_or_default()))
        }
    }

    /// Sets this node's member count and roster (a JSON array) in the room; resolves to the
    /// room-wide count and presence list, with their versions.
    pub fn presence(
        &self,
        room: &str,
        members: usize,
        roster: String,
    ) -> impl Future<Output = Result<PresenceAnswer, StoreError>> + Send + 'static {
        let answer = self.invoke::<Value>(
            "counting members",
            |s| &s.presence,
            vec![presence_key(room), meta_key(room), roster_key(room)],
            vec![
                self.inner.node.as_bytes().to_vec(),
                members.to_string().into_bytes(),
                (self.inner.presence_ttl.as_millis() as u64)
                    .to_string()
                    .into_bytes(),
                channel(room).into_bytes(),
                roster.into_bytes(),
            ],
        );
        async move { PresenceAnswer::parse(&answer.await?) }
    }

    /// Publishes the cursors that moved on this node during one tick (`frames`: a JSON array of
    /// `cursor` frames) on the room's channel: one command per room per tick, never stored, and
    /// not waited for (a lost cursor is replaced by the next).
    pub fn publish_cursors(&self, room: &str, frames: String) {
        let mut command = ::redis::cmd("PUBLISH");
        command
            .arg(channel(room))
            .arg(format!("u:{}:{frames}", self.inner.node));
        let publish = self.query::<Value>("publishing cursors", command);
        actix::spawn(async move {
            if let Err(err) = publish.await {
                log::debug!("cursors not published: {err}");
            }
        });
    }

    /// Records a new private room (see `CREATE_PRIVATE`).
    pub fn create_private_room(
        &self,
        room: &str,
        hashes: AccessHashes,
    ) -> impl Future<Output = Result<Creation, StoreError>> + Send + 'static {
        let answer = self.invoke::<i64>(
            "creating a private room",
            |s| &s.create_private,
            vec![access_key(room), rooms_key()],
            vec![
                room.as_bytes().to_vec(),
                hashes.edit.to_vec(),
                hashes.view.to_vec(),
                self.inner.max_rooms.max(1).to_string().into_bytes(),
                hashes.owner.map_or_else(Vec::new, |owner| owner.to_vec()),
            ],
        );
        let limit = self.inner.max_rooms;
        async move {
            match answer.await? {
                1 => Ok(Creation::Created),
                0 => Ok(Creation::NameTaken),
                _ => Err(StoreError::TooManyRooms { limit }),
            }
        }
    }

    /// A private room's token digests and lock; `None` for a public room. One bounded round
    /// trip: not cached, so that a room created or changed on another node is so here at once.
    pub fn room_access(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<Option<RoomAccess>, StoreError>> + Send + 'static {
        let mut command = ::redis::cmd("HMGET");
        command
            .arg(access_key(room))
            .arg("edit")
            .arg("view")
            .arg("owner")
            .arg("locked");
        type Fields = (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<String>,
        );
        let answer = self.query::<Fields>("reading access", command);
        let room = room.to_owned();
        async move {
            match answer.await? {
                (None, None, _, _) => Ok(None),
                (Some(edit), Some(view), owner, locked) => {
                    let owner = owner.filter(|owner| !owner.is_empty());
                    match AccessHashes::from_slices(&edit, &view, owner.as_deref()) {
                        Some(hashes) => Ok(Some(RoomAccess {
                            hashes,
                            locked: locked.as_deref() == Some("1"),
                        })),
                        None => Err(redis_error(format_args!(
                            "the token digests of private room {room:?} are damaged"
                        ))),
                    }
                }
                _ => Err(redis_error(format_args!(
                    "private room {room:?} has only one token digest"
                ))),
            }
        }
    }

    /// Replaces a private room's edit and view digests and tells every node (see
    /// `CHANGE_ACCESS`); `false` if there is no such private room.
    pub fn replace_links(
        &self,
        room: &str,
        edit: Digest32,
        view: Digest32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        self.change_access(
            room,
            Moderation::LinksReplaced,
            vec![
                b"edit".to_vec(),
                edit.to_vec(),
                b"view".to_vec(),
                view.to_vec(),
            ],
        )
    }

    /// Locks or unlocks a private room and tells every node; `false` if there is no such room.
    pub fn set_locked(
        &self,
        room: &str,
        locked: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let value = if locked { b"1" } else { b"0" };
        self.change_access(
            room,
            Moderation::Locked(locked),
            vec![b"locked".to_vec(), value.to_vec()],
        )
    }

    fn change_access(
        &self,
        room: &str,
        action: Moderation,
        fields: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let mut args = vec![
            channel(room).into_bytes(),
            moderation_message(action).into_bytes(),
        ];
        args.extend(fields);
        let answer = self.invoke::<i64>(
            "changing a room's access",
            |s| &s.change_access,
            vec![access_key(room)],
            args,
        );
        async move { Ok(answer.await? == 1) }
    }

    /// Tells every node with members in the room to close member `id` (nothing is stored).
    pub fn remove_member(
        &self,
        room: &str,
        id: uuid::Uuid,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let mut command = ::redis::cmd("PUBLISH");
        command
            .arg(channel(room))
            .arg(moderation_message(Moderation::Removed(id)));
        let published = self.query::<Value>("removing a member", command);
        async move { published.await.map(|_| ()) }
    }

    /// Deletes every key of the room and tells every node to close its members and drop the
    /// room (see `DELETE_ROOM`); `true` if anything was stored. A node that had an operation or
    /// a count on its way to Redis when it heard may write a key again: the same deletion runs
    /// once more `DELETE_SWEEP_AFTER` later, when anything in flight has been answered.
    pub fn delete_room(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let deleted = self.run_delete(room, true);
        let sweep = self.run_delete(room, false);
        let room = room.to_owned();
        async move {
            let gone = deleted.await? > 0;
            actix::spawn(async move {
                tokio::time::sleep(DELETE_SWEEP_AFTER).await;
                match sweep.await {
                    Ok(0) => {}
                    Ok(keys) => {
                        log::info!("room={room}: {keys} keys written after its deletion removed")
                    }
                    Err(err) => {
                        log::warn!("room={room}: the second sweep of its deletion failed: {err}")
                    }
                }
            });
            Ok(gone)
        }
    }

    fn run_delete(
        &self,
        room: &str,
        tell: bool,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send + 'static {
        let message = if tell {
            moderation_message(Moderation::Deleted)
        } else {
            String::new()
        };
        self.invoke::<i64>(
            "deleting a room",
            |s| &s.delete_room,
            room_keys(room),
            vec![
                room.as_bytes().to_vec(),
                channel(room).into_bytes(),
                message.into_bytes(),
            ],
        )
    }

    /// Every room in the room set, with its room-wide count, the bytes of its checkpoint plus
    /// Redis's estimate of its operations' stream, and when its checkpoint was stored.
    pub fn list_rooms(
        &self,
    ) -> impl Future<Output = Result<Vec<RoomListing>, StoreError>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut conn = inner.conn()?;
            let names: Vec<String> = bounded(
                "listing rooms",
                ::redis::cmd("SMEMBERS")
                    .arg(rooms_key())
                    .query_async(&mut conn),
            )
            .await?;
            let mut pipe = ::redis::pipe();
            for name in &names {
                pipe.cmd("HMGET")
                    .arg(meta_key(name))
                    .arg("members")
                    .arg("cp_at");
                pipe.cmd("HSTRLEN").arg(meta_key(name)).arg("png");
                pipe.cmd("MEMORY").arg("USAGE").arg(ops_key(name));
                pipe.cmd("EXISTS").arg(access_key(name));
            }
            type Row = ((Option<u64>, Option<u64>), u64, Option<u64>, bool);
            let rows: Vec<Row> = if names.is_empty() {
                Vec::new()
            } else {
                bounded("listing rooms", pipe.query_async(&mut conn)).await?
            };
            let mut listed: Vec<RoomListing> = names
                .into_iter()
                .zip(rows)
                .map(
                    |(room, ((members, changed_ms), png, ops, private))| RoomListing {
                        room,
                        private,
                        members: Some(members.unwrap_or(0)),
                        stored_bytes: png + ops.unwrap_or(0),
                        changed_ms,
                    },
                )
                .collect();
            listed.sort_by(|a, b| a.room.cmp(&b.room));
            Ok(listed)
        }
    }

    /// Number of rooms stored.
    pub fn room_count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send + 'static {
        let mut command = ::redis::cmd("SCARD");
        command.arg(rooms_key());
        self.query("counting rooms", command)
    }
}

mod replies;
mod scripts;
use replies::*;
use scripts::*;

#[cfg(test)]
mod tests;
