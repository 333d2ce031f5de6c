//! One simulated client: connect, wait for the start, draw (if a sender) and receive until told to
//! stop. Every network await is bounded: by a timeout, or by the phase signal the coordinator always
//! sends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{interval_at, sleep_until, timeout, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::cli::Settings;
use crate::wire;

type Ws = WebSocketStream<TcpStream>;

/// Longest one send (write + flush) may take before the client gives up on its connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the closing handshake may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Deliveries a receiver counts by itself before adding them to the shared totals…
const FLUSH_EVERY: u64 = 256;
/// …or this long, so that the progress line stays current.
const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Where the run is; the coordinator moves it forward, clients follow.
#[derive(Clone)]
pub enum Phase {
    Connecting,
    Run(Arc<Plan>),
    Stop,
}

/// Fixed when the connect phase is over.
pub struct Plan {
    /// When senders start, and stop.
    pub start: Instant,
    pub deadline: Instant,
    /// Clients joined in each room when the drawing started.
    pub members: Vec<usize>,
    /// Send instants of every segment, by room x sender-in-room then seq: nanoseconds since
    /// `Shared::epoch` plus one (0: not sent).
    pub sent_at: Vec<Box<[AtomicU64]>>,
}

impl Plan {
    fn table(&self, settings: &Settings, room: usize, sender: usize) -> Option<&[AtomicU64]> {
        if sender >= settings.senders_per_room {
            return None;
        }
        self.sent_at
            .get(room * settings.senders_per_room + sender)
            .map(|table| &table[..])
    }
}

/// Totals every client adds to.
#[derive(Default)]
pub struct Counters {
    pub joined: AtomicUsize,
    pub connect_errors: AtomicUsize,
    /// Joined and not (yet) disconnected.
    pub open: AtomicUsize,
    pub disconnects: AtomicUsize,
    /// Pings from the server (tungstenite answers each with a pong on the next read).
    pub pings: AtomicU64,
    pub sent: AtomicU64,
    pub expected: AtomicU64,
    pub received: AtomicU64,
    pub duplicated: AtomicU64,
    /// Text frames received from the start of the drawing on (one per delivery from an unbatched
    /// server; a batched frame carries many).
    pub frames: AtomicU64,
    /// Cursor messages sent (`--cursors`), and received (a batch counts each one inside).
    pub cursors_sent: AtomicU64,
    pub cursors_received: AtomicU64,
}

pub struct Shared {
    pub settings: Settings,
    /// The address each target (`settings.targets`) answered on.
    pub addrs: Vec<SocketAddr>,
    pub epoch: Instant,
    pub connect_gate: Semaphore,
    pub counters: Counters,
    /// Clients joined per room (before the plan).
    pub room_members: Vec<AtomicUsize>,
    /// Clients joined per target (`settings.targets`).
    pub url_joined: Vec<AtomicUsize>,
    /// End-to-end latency, microseconds.
    pub latency: Mutex<Histogram<u64>>,
    /// The same, for segments sent in the first second of drawing.
    pub first_second: Mutex<Histogram<u64>>,
    /// From starting to connect (once a connect slot is free) to the server's first message,
    /// microseconds.
    pub join_time: Mutex<Histogram<u64>>,
    /// Why connections failed, and how often.
    pub connect_failures: Mutex<BTreeMap<String, usize>>,
    /// Why joined connections ended before the stop, and how often.
    pub drop_reasons: Mutex<BTreeMap<String, usize>>,
}

pub fn histogram() -> Histogram<u64> {
    // 1 us .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The one poison-tolerant lock of the load generator: a client task that panicked while holding
/// the shared state must not take every other client's figures down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(settings: Settings, addrs: Vec<SocketAddr>) -> Shared {
        Shared {
            connect_gate: Semaphore::new(settings.connect_concurrency),
            room_members: (0..settings.rooms).map(|_| AtomicUsize::new(0)).collect(),
            url_joined: (0..settings.targets.len())
                .map(|_| AtomicUsize::new(0))
                .collect(),
            settings,
            addrs,
            epoch: Instant::now(),
            counters: Counters::default(),
            latency: Mutex::new(histogram()),
            first_second: Mutex::new(histogram()),
            join_time: Mutex::new(histogram()),
            connect_failures: Mutex::new(BTreeMap::new()),
            drop_reasons: Mutex::new(BTreeMap::new()),
        }
    }

    fn connect_failed(&self, reason: String) {
        self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.connect_failures).entry(reason).or_default() += 1;
    }

    fn dropped(&self, room: usize, planned: bool, reason: String) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        if !planned {
            self.room_members[room].fetch_sub(1, Ordering::Relaxed);
        }
        *lock(&self.drop_reasons).entry(reason).or_default() += 1;
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

pub(crate) fn describe(error: &WsError) -> String {
    match error {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned())
                .unwrap_or_default();
            format!("HTTP {} {body}", response.status().as_u16())
        }
        WsError::Io(err) => format!("I/O: {err}"),
        other => other.to_string(),
    }
}

pub(crate) fn describe_close(message: &Message) -> String {
    match message {
        Message::Close(Some(frame)) => {
            format!(
                "closed by the server: {} {}",
                u16::from(frame.code),
                frame.reason
            )
        }
        _ => "closed by the server".into(),
    }
}

/// Small eager buffers: tens of thousands of connections must fit, and tungstenite zero-fills the
/// free part of the read buffer before every read (with 16 KiB, 4% of the machine in busy-room).
/// 4 KiB holds a busy room's batch frame; a larger frame takes more reads.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Sends one text message within `SEND_TIMEOUT`; why not, if it failed.
pub(crate) async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    match timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("send failed: {}", describe(&err))),
        Err(_) => Err("send timed out".into()),
    }
}

async fn connect(addr: SocketAddr, url: &str) -> Result<Ws, String> {
    connect_to(addr, url, READ_BUFFER_BYTES).await
}

/// A WebSocket client of `url` over TCP to `addr` (Nagle off, writes unbuffered), reading into a
/// buffer of `read_buffer_bytes`.
pub(crate) async fn connect_to(
    addr: SocketAddr,
    url: &str,
    read_buffer_bytes: usize,
) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("TCP connect: {err}"))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer_bytes)
        .write_buffer_size(0);
    let (ws, _response) = client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|err| describe(&err))?;
    Ok(ws)
}

/// Waits for the next tick of a sender's interval, or forever for a client that does not draw.
async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What a receiver saw since its last flush into the shared totals.
struct Tally {
    received: u64,
    duplicated: u64,
    frames: u64,
    latencies: Vec<(u64, bool)>,
    flushed: Instant,
}

/// Moves a client's pending count into the shared counter (touching it only when there is one).
fn add_pending(counter: &AtomicU64, pending: &mut u64) {
    if *pending > 0 {
        counter.fetch_add(std::mem::take(pending), Ordering::Relaxed);
    }
}

impl Tally {
    fn flush(&mut self, shared: &Shared, now: Instant) {
        self.flushed = now;
        let counters = &shared.counters;
        add_pending(&counters.received, &mut self.received);
        add_pending(&counters.duplicated, &mut self.duplicated);
        add_pending(&counters.frames, &mut self.frames);
        if self.latencies.is_empty() {
            return;
        }
        {
            let mut all = lock(&shared.latency);
            for &(micros, _) in &self.latencies {
                all.saturating_record(micros.max(1));
            }
        }
        if self.latencies.iter().any(|&(_, first)| first) {
            let mut first = lock(&shared.first_second);
            for &(micros, _) in self.latencies.iter().filter(|(_, first)| *first) {
                first.saturating_record(micros.max(1));
            }
        }
        self.latencies.clear();
    }
}

/// Runs client `index` to the end; everything it learns goes into `shared`.
pub async fn run(shared: Arc<Shared>, index: usize, mut phase: watch::Receiver<Phase>) {
    let settings = &shared.settings;
    let (room, local) = settings.placement(index);
    let node = settings.url_index(index);
    let url = settings.targets[node].room_url(room);

    // Connect phase: at most `connect_concurrency` handshakes at once.
    let (mut ws, asked) = {
        let Ok(_permit) = shared.connect_gate.acquire().await else {
            return;
        };
        let asked = Instant::now();
        match timeout(settings.connect_timeout, connect(shared.addrs[node], &url)).await {
            Ok(Ok(ws)) => (ws, asked),
            Ok(Err(reason)) => return shared.connect_failed(reason),
            Err(_) => return shared.connect_failed("timed out connecting".into()),
        }
    };
    // Joined once the server speaks (livecanvas: `welcome`; the demo: `clientCount`). A server
    // that says nothing on join is taken as joined after the timeout.
    match timeout(settings.connect_timeout, ws.next()).await {
        Ok(Some(Ok(message @ Message::Close(_)))) => {
            return shared.connect_failed(describe_close(&message))
        }
        Ok(Some(Ok(_))) | Err(_) => {}
        Ok(Some(Err(err))) => return shared.connect_failed(describe(&err)),
        Ok(None) => return shared.connect_failed("closed before its first message".into()),
    }
    lock(&shared.join_time).saturating_record(asked.elapsed().as_micros() as u64);
    shared.room_members[room].fetch_add(1, Ordering::Relaxed);
    shared.url_joined[node].fetch_add(1, Ordering::Relaxed);
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    shared.counters.joined.fetch_add(1, Ordering::Relaxed);

    // Wait for the start, reading (and so answering pings) meanwhile. The `changed` future lives
    // across messages: re-creating it for every message would lock the channel's waiter list,
    // shared by all clients, twice a message.
    let plan = loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Run(plan) => break plan,
            Phase::Stop => return close(ws).await,
            Phase::Connecting => {}
        }
        let changed = phase.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                result = &mut changed => {
                    if result.is_err() {
                        return close(ws).await;
                    }
                    break;
                }
                message = ws.next() => match message {
                    Some(Ok(message @ Message::Close(_))) => {
                        return shared.dropped(room, false, describe_close(&message));
                    }
                    Some(Ok(Message::Ping(_))) => {
                        shared.counters.pings.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return shared.dropped(room, false, describe(&err)),
                    None => return shared.dropped(room, false, "connection ended".into()),
                },
            }
        }
    };

    // Drawing phase.
    let members = plan.members[room];
    let my_table = plan.table(settings, room, local);
    let mut ticker = match my_table {
        Some(_) if settings.rate > 0.0 => {
            let period = Duration::from_secs_f64(1.0 / settings.rate);
            // Spread the senders' ticks evenly over one period.
            let ordinal = (room * settings.senders_per_room + local) as f64;
            let all = (settings.rooms * settings.senders_per_room).max(1) as f64;
            let offset = period.mul_f64(ordinal / all);
            let mut ticker = interval_at(plan.start + offset, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            Some(ticker)
        }
        _ => None,
    };
    let mut cursor_ticker = cursor_ticker(settings, &plan, room, local);
    let mut cursor_seq: u64 = 0;
    let mut cursors_received: u64 = 0;
    let first_second_end = plan.start + Duration::from_secs(1);
    let mut seq: u64 = 0;
    let mut last_seen: Vec<Option<u64>> = vec![None; settings.senders_per_room];
    let mut tally = Tally {
        received: 0,
        duplicated: 0,
        frames: 0,
        latencies: Vec::new(),
        flushed: Instant::now(),
    };
    let mut draining = false;
    let deadline = sleep_until(plan.deadline);
    tokio::pin!(deadline);
    // The only change after the start is the stop.
    let stop = phase.changed();
    tokio::pin!(stop);

    let ended: Option<String> = loop {
        tokio::select! {
            // In this order: once the deadline has passed no tick may send another segment, or
            // it would raise `expected` after the coordinator stopped counting.
            biased;
            _ = &mut stop => break None,
            () = &mut deadline, if !draining => {
                // From now on every delivery is flushed at once, so the coordinator sees the
                // totals reach `expected` and can stop draining early.
                draining = true;
                ticker = None;
                cursor_ticker = None;
                tally.flush(&shared, Instant::now());
            }
            () = next_tick(&mut ticker), if !draining => {
                let table = my_table.expect("only senders tick");
                let now = Instant::now();
                let slot = table.get(seq as usize);
                let Some(slot) = slot.filter(|_| now < plan.deadline) else {
                    // Never draw past the deadline: the coordinator is counting the totals.
                    ticker = None;
                    continue;
                };
                let text = wire::encode_draw(local, seq);
                // Counted before it leaves, so the coordinator never sees a delivery arrive that
                // it did not expect, nor stops draining while a send is on its way.
                let deliveries = members.saturating_sub(1) as u64;
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                shared.counters.expected.fetch_add(deliveries, Ordering::Relaxed);
                slot.store(shared.nanos_since_epoch(now) + 1, Ordering::Release);
                seq += 1;
                if let Err(why) = send_text(&mut ws, text).await {
                    break Some(why);
                }
            }
            () = next_tick(&mut cursor_ticker), if !draining => {
                shared.counters.cursors_sent.fetch_add(1, Ordering::Relaxed);
                if let Err(why) = send_text(&mut ws, wire::encode_cursor(local, cursor_seq)).await {
                    break Some(why);
                }
                cursor_seq += 1;
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now = Instant::now();
                    tally.frames += 1;
                    if settings.cursors_per_room > 0 {
                        cursors_received += wire::count_cursors(text.as_str());
                    }
                    wire::for_each_draw(text.as_str(), |sender, seq| {
                        let Some(table) = plan.table(settings, room, sender) else {
                            return; // not one of ours
                        };
                        let last = &mut last_seen[sender];
                        if last.is_some_and(|last| seq <= last) {
                            tally.duplicated += 1;
                            return;
                        }
                        *last = Some(seq);
                        tally.received += 1;
                        let stamp = table
                            .get(seq as usize)
                            .map_or(0, |slot| slot.load(Ordering::Acquire));
                        if stamp == 0 {
                            return;
                        }
                        let sent = shared.epoch + Duration::from_nanos(stamp - 1);
                        let micros = now.saturating_duration_since(sent).as_micros() as u64;
                        tally.latencies.push((micros, sent < first_second_end));
                    });
                    if draining
                        || tally.received + tally.duplicated >= FLUSH_EVERY
                        || now >= tally.flushed + FLUSH_AFTER
                    {
                        tally.flush(&shared, now);
                    }
                }
                Some(Ok(message @ Message::Close(_))) => break Some(describe_close(&message)),
                Some(Ok(Message::Ping(_))) => {
                    shared.counters.pings.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => break Some(describe(&err)),
                None => break Some("connection ended".into()),
            },
        }
    };
    tally.flush(&shared, Instant::now());
    shared
        .counters
        .cursors_received
        .fetch_add(cursors_received, Ordering::Relaxed);
    match ended {
        Some(reason) => shared.dropped(room, true, reason),
        None => close(ws).await,
    }
}

/// The cursor ticker of a room's clients just after its senders (`--cursors`), spread over one
/// period like the senders'; `None` for every other client.
fn cursor_ticker(settings: &Settings, plan: &Plan, room: usize, local: usize) -> Option<Interval> {
    let first = settings.senders_per_room;
    if !(first..first + settings.cursors_per_room).contains(&local) {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / settings.cursor_rate);
    let ordinal = (room * settings.cursors_per_room + local - first) as f64;
    let all = (settings.rooms * settings.cursors_per_room).max(1) as f64;
    let mut ticker = interval_at(plan.start + period.mul_f64(ordinal / all), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    Some(ticker)
}

/// Ends a connection that is still up, politely but without waiting long.
async fn close(mut ws: Ws) {
    let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}
