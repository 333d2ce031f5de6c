//! Admission and throttling: who may open a connection, and how fast a connection may draw.
//!
//! This module owns the server-wide connection limit (`--max-connections`, lowered to what the
//! process's open-file limit leaves room for), the connection counts (total and per IP address),
//! the per-address rate of connection attempts (the address `client_addr` gives), the Origin check, the per-connection draw and cursor
//! rates, and the per-IP rate of private room creation. Counts are released by
//! dropping a [`ConnectionPermit`], so no path can forget to. It must never block on I/O and never
//! keep state for an address that has no connection and no recent attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpRequest;
use governor::clock::QuantaClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Settings;

/// Above this many tracked addresses, forget those whose attempt rate has fully recovered.
const ATTEMPT_TABLE_SWEEP_AT: usize = 10_000;

/// Open files the WebSockets leave to everything else, so that a server at its connection limit
/// can still accept a connection, answer it (503 `server_full`, `/healthz`, `/readyz`, `/metrics`)
/// and close it. Every WebSocket is one descriptor; when they take the last ones, `accept` fails
/// (EMFILE), actix-server stops listening for half a second at a time, and clients past the limit
/// time out instead of being told, while the health check goes unanswered.
///
/// Measured on an idle server: 32 descriptors with 2 HTTP workers and 2 room threads (standard
/// streams, the listeners, SQLite's database and WAL, each runtime's epoll and wake-up
/// descriptors), and 4 more for each further thread, so 272 with 32 workers and 32 room threads;
/// a cluster node's Redis links are 2, `--metrics-bind` about 7. What is left, over 700, is for
/// HTTP connections in flight: refused upgrades, page loads held open by keep-alive, health checks
/// and metrics scrapes. That is 5% of a 20,000-file limit, and nothing where the hard limit is far
/// above `--max-connections` (a container's is usually 1,048,576).
pub const RESERVED_DESCRIPTORS: u64 = 1_000;

/// Why an upgrade was refused, with the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: a browser page from a site that is not allowed.
    ForbiddenOrigin(String),
    /// 503: the server is at its connection limit (see [`connection_limit`]).
    ServerFull,
    /// 429: this address has `--max-connections-per-ip` open.
    TooManyFromAddress,
    /// 429: this address opens connections faster than `--connection-rate-per-ip`.
    TooFast,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::ForbiddenOrigin(_) => 403,
            Refusal::ServerFull => 503,
            Refusal::TooManyFromAddress | Refusal::TooFast => 429,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ForbiddenOrigin(_) => "forbidden_origin",
            Refusal::ServerFull => "server_full",
            Refusal::TooManyFromAddress => "too_many_connections",
            Refusal::TooFast => "too_many_attempts",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::ForbiddenOrigin(origin) => {
                format!("connections from pages on {origin} are not allowed")
            }
            Refusal::ServerFull => "the server is at its connection limit; try again later".into(),
            Refusal::TooManyFromAddress => "too many open connections from your address".into(),
            Refusal::TooFast => "too many connection attempts from your address; slow down".into(),
        }
    }
}

struct Counts {
    total: usize,
    /// Connections admitted since the start.
    admitted: u64,
    per_ip: HashMap<IpAddr, usize>,
}

/// Raises the soft open-file limit to the hard one (every WebSocket is a descriptor), and returns
/// how many WebSockets the server admits: `--max-connections`, or fewer if the open-file limit
/// less [`RESERVED_DESCRIPTORS`] is lower. Logs the figures; a limit that cannot be raised or read
/// is logged and does without.
pub fn connection_limit(configured: usize) -> usize {
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => Some(soft),
        Err(err) => {
            log::warn!("cannot raise the open-file limit to its hard limit: {err}");
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    };
    let effective = connections_within(configured, open_files);
    match open_files {
        Some(open_files) => log::info!(
            "at most {effective} WebSocket connections: --max-connections {configured}, \
             open-file limit {open_files} less {RESERVED_DESCRIPTORS} kept for the store, the \
             listeners and HTTP requests"
        ),
        None => log::warn!(
            "at most {effective} WebSocket connections (--max-connections): the open-file limit \
             is unknown"
        ),
    }
    if effective == 0 {
        log::error!(
            "the open-file limit leaves no room for connections: every WebSocket will be refused \
             (raise the hard limit above {RESERVED_DESCRIPTORS})"
        );
    }
    effective
}

/// `configured`, or the open files left after the reserve if fewer.
fn connections_within(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return configured;
    };
    let left = open_files.saturating_sub(RESERVED_DESCRIPTORS);
    configured.min(usize::try_from(left).unwrap_or(usize::MAX))
}

/// Server-wide admission control, shared by every HTTP worker.
pub struct Admission {
    settings: Arc<Settings>,
    /// The connection limit in force (see [`connection_limit`]).
    max_connections: usize,
    counts: Mutex<Counts>,
    attempts: DefaultKeyedRateLimiter<IpAddr>,
}

impl Admission {
    /// Admission with at most `max_connections` open at once (see [`connection_limit`]).
    pub fn new(settings: Arc<Settings>, max_connections: usize) -> Arc<Self> {
        let attempts = RateLimiter::keyed(quota(
            settings.connection_rate_per_ip,
            settings.connection_burst_per_ip,
        ));
        Arc::new(Admission {
            settings,
            max_connections,
            counts: Mutex::new(Counts {
                total: 0,
                admitted: 0,
                per_ip: HashMap::new(),
            }),
            attempts,
        })
    }

    /// Checks an upgrade request from `ip` (the client's address, see `client_addr`); on success
    /// the permit holds its place until dropped.
    pub fn admit(
        self: &Arc<Self>,
        req: &HttpRequest,
        ip: IpAddr,
    ) -> Result<ConnectionPermit, Refusal> {
        self.check_origin(req)?;
        if self.attempts.check_key(&ip).is_err() {
            return Err(Refusal::TooFast);
        }
        if self.attempts.len() > ATTEMPT_TABLE_SWEEP_AT {
            self.attempts.retain_recent();
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_connections {
            return Err(Refusal::ServerFull);
        }
        let open = counts.per_ip.entry(ip).or_insert(0);
        if *open >= self.settings.max_connections_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *open += 1;
        counts.total += 1;
        counts.admitted += 1;
        Ok(ConnectionPermit {
            admission: self.clone(),
            ip,
        })
    }

    /// Browsers always send `Origin` on a WebSocket upgrade and on a cross-site POST; other
    /// clients usually do not, and are not what this check protects against. Allowed: the page's
    /// own host, or the allow-list.
    pub fn check_origin(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("(not text)");
        let allowed = self
            .settings
            .allowed_origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            || same_host(origin, req.connection_info().host());
        if allowed {
            Ok(())
        } else {
            Err(Refusal::ForbiddenOrigin(origin.chars().take(100).collect()))
        }
    }

    /// Changes with every connection opened or closed: (admitted so far, open now).
    pub fn churn(&self) -> (u64, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.admitted, counts.total)
    }

    /// Connections admitted and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(open) = counts.per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// `http://host:port` or `https://host` matches a `Host` header of `host:port` / `host`.
fn same_host(origin: &str, host: &str) -> bool {
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
}

/// One admitted connection's place in the counts; released on drop.
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

/// Both parts of a quota must be at least 1; the configuration checks that before we get here.
fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// How fast one IP address may create private rooms (`--room-creations-per-minute`, with a
/// burst of `--room-creation-burst`): each creation writes to the store, so an unbounded rate
/// would let one client fill it.
pub struct RoomCreations {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl RoomCreations {
    pub fn new(settings: &Settings) -> Self {
        let per_minute =
            NonZeroU32::new(settings.room_creations_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.room_creation_burst).unwrap_or(NonZeroU32::MIN);
        RoomCreations {
            per_address: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// Whether the client at `ip` may create a room now (the same address as the connection
    /// limits use, see `client_addr`).
    pub fn allow(&self, ip: IpAddr) -> bool {
        let allowed = self.per_address.check_key(&ip).is_ok();
        if self.per_address.len() > ATTEMPT_TABLE_SWEEP_AT {
            self.per_address.retain_recent();
        }
        allowed
    }
}

/// What the draw limiter says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    Allow,
    /// Dropped; `warn` is true at most once per `FLOOD_WARNING_INTERVAL`, so the client is told
    /// without being flooded back.
    Drop {
        warn: bool,
    },
    /// Dropped, and the client keeps flooding: close the connection.
    Close,
}

/// How often a throttled client is reminded that messages are being dropped.
const FLOOD_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// A connection's draw rate: one token bucket for what it may send, and a second one for how many
/// of its messages may be dropped. A client that overshoots briefly only loses the excess; one
/// that keeps sending well over the rate (even paced, so that some messages still get through)
/// empties the second bucket and is closed.
pub struct DrawLimiter {
    sends: DefaultDirectRateLimiter,
    drops: DefaultDirectRateLimiter,
    last_warning: Option<Instant>,
}

/// The clock every connection's limiters read. governor's `RateLimiter::direct` makes a new
/// `quanta::Clock` for each limiter, which probes the CPU (`cpuid`) every time: with two limiters
/// per connection that was a fifth of the server's CPU while 10,000 clients connected
/// (`perf record` of many-rooms' connect phase). A clone shares the probe's result.
fn shared_clock() -> QuantaClock {
    static CLOCK: OnceLock<QuantaClock> = OnceLock::new();
    CLOCK.get_or_init(QuantaClock::default).clone()
}

impl DrawLimiter {
    pub fn new(settings: &Settings) -> Self {
        let sends = quota(settings.draws_per_second, settings.draw_burst);
        let drops = quota(settings.flood_close_after, settings.flood_close_after);
        DrawLimiter {
            sends: RateLimiter::direct_with_clock(sends, shared_clock()),
            drops: RateLimiter::direct_with_clock(drops, shared_clock()),
            last_warning: None,
        }
    }

    pub fn check(&mut self) -> Throttle {
        if self.sends.check().is_ok() {
            return Throttle::Allow;
        }
        if self.drops.check().is_err() {
            return Throttle::Close;
        }
        let warn = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= FLOOD_WARNING_INTERVAL);
        if warn {
            self.last_warning = Some(Instant::now());
        }
        Throttle::Drop { warn }
    }
}

/// A connection's cursor rate: moves beyond `CURSORS_PER_SECOND` (burst `CURSOR_BURST_MESSAGES`)
/// are dropped without a word; a cursor is disposable, so a fast client is never closed for it.
pub struct CursorLimiter {
    moves: DefaultDirectRateLimiter,
}

impl CursorLimiter {
    pub fn new() -> Self {
        let moves = quota(
            crate::presence::CURSORS_PER_SECOND,
            crate::presence::CURSOR_BURST_MESSAGES,
        );
        CursorLimiter {
            moves: RateLimiter::direct_with_clock(moves, shared_clock()),
        }
    }

    pub fn allow(&self) -> bool {
        self.moves.check().is_ok()
    }
}

impl Default for CursorLimiter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_on_the_same_host_and_port_is_the_same_host() {
        assert!(same_host("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_host("https://Canvas.example", "canvas.example"));
        assert!(!same_host("http://evil.example", "canvas.example"));
        assert!(!same_host(
            "http://canvas.example:9999",
            "canvas.example:8080"
        ));
        assert!(!same_host("null", "canvas.example"));
        assert!(!same_host("canvas.example", "canvas.example"));
    }

    #[test]
    fn the_open_file_limit_lowers_the_connection_limit_by_the_reserve() {
        assert_eq!(connections_within(20_000, Some(20_000)), 19_000);
        assert_eq!(connections_within(20_000, Some(1_048_576)), 20_000);
        assert_eq!(connections_within(20_000, None), 20_000);
        assert_eq!(connections_within(20_000, Some(RESERVED_DESCRIPTORS)), 0);
        assert_eq!(connections_within(20_000, Some(10)), 0);
        assert_eq!(connections_within(20_000, Some(u64::MAX)), 20_000);
    }
}
