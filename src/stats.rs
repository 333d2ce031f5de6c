//! Live figures: the counts `/healthz` reports and the Prometheus metrics `/metrics` exposes.
//!
//! This module owns the metric definitions and their names. Everything here is a relaxed atomic or
//! a Prometheus counter, safe to bump from any thread; it must never be used to make a decision that
//! needs to be exact under concurrency, and never take a lock on the hot path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::storage::StoreHealth;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Stats {
    /// Live `CanvasServer` actors.
    pub rooms: AtomicUsize,
    registry: Registry,
    /// The process's own figures (`process_*`: resident memory, open descriptors, CPU), named as
    /// every Prometheus exporter names them, without the `livecanvas_` prefix.
    process: Registry,
    connections_gauge: IntGauge,
    rooms_gauge: IntGauge,
    /// Client messages accepted, by type.
    pub messages_in: IntCounterVec,
    /// Frames queued to clients, by message type (a broadcast counts once per recipient).
    pub messages_out: IntCounterVec,
    /// `error` messages sent, by code.
    pub errors: IntCounterVec,
    /// Connections closed by the server, by close code.
    pub closes: IntCounterVec,
    /// Upgrades refused before the WebSocket started, by reason.
    pub refusals: IntCounterVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// The same bytes, by message type: where a room's traffic goes.
    pub bytes_out_by_type: IntCounterVec,
    /// Connections whose write buffer a burst grew beyond its idle size and that have not given
    /// it back yet (they do once it is written out: a session looks 100 ms after the frame).
    pub grown_write_buffers: IntGauge,
    /// From a draw's arrival in its session to its frames being queued for the whole room.
    pub broadcast_seconds: Histogram,
    /// The store's failed writes, a count that only grows: a counter, advanced at each render by
    /// what the store counted since (`store_failures_shown` is how far it has been advanced).
    store_failures: IntCounter,
    store_failures_shown: AtomicU64,
    store_held_bytes: IntGauge,
    sqlite_memory_bytes: IntGauge,
}

/// Broadcast latency buckets, in seconds: from 50 µs to 1 s.
const BROADCAST_BUCKETS_SECONDS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

impl Stats {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("livecanvas".into()), None)
            .unwrap_or_else(|_| Registry::new());
        let stats = Stats {
            rooms: AtomicUsize::new(0),
            connections_gauge: gauge("connections", "Open WebSocket connections."),
            rooms_gauge: gauge("rooms", "Rooms alive (a room actor each)."),
            messages_in: counter_vec("messages_in_total", "Client messages accepted.", "type"),
            messages_out: counter_vec(
                "messages_out_total",
                "Messages queued to clients (once per recipient).",
                "type",
            ),
            errors: counter_vec("errors_total", "Error messages sent to clients.", "code"),
            closes: counter_vec("closes_total", "Connections closed by the server.", "code"),
            refusals: counter_vec(
                "refusals_total",
                "Upgrades refused before the WebSocket started.",
                "reason",
            ),
            bytes_in: counter("bytes_in_total", "Bytes of client messages received."),
            bytes_out: counter("bytes_out_total", "Bytes of messages queued to clients."),
            bytes_out_by_type: counter_vec(
                "bytes_out_by_type_total",
                "Bytes of messages queued to clients, by message type.",
                "type",
            ),
            grown_write_buffers: gauge(
                "grown_write_buffers",
                "Connections holding a write buffer a burst grew beyond its idle size.",
            ),
            broadcast_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "broadcast_seconds",
                    "Time from a draw's arrival to its frames being queued for the whole room.",
                )
                .buckets(BROADCAST_BUCKETS_SECONDS.to_vec()),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            store_failures: counter(
                "store_failures_total",
                "Failed attempts to write accepted strokes to the store (they are retried).",
            ),
            store_failures_shown: AtomicU64::new(0),
            store_held_bytes: gauge(
                "store_held_bytes",
                "Bytes of accepted strokes held in memory because the store cannot write them.",
            ),
            sqlite_memory_bytes: gauge(
                "sqlite_memory_bytes",
                "Memory SQLite uses, mostly its page cache (bounded at 64 MiB).",
            ),
            registry,
            process: Registry::new(),
        };
        stats.register_all();
        stats.register_process();
        stats
    }

    /// `process_resident_memory_bytes`, `process_open_fds`, `process_cpu_seconds_total` and the
    /// rest, read from /proc at each scrape (Linux only; elsewhere there are none).
    fn register_process(&self) {
        #[cfg(target_os = "linux")]
        {
            let collector = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(err) = self.process.register(Box::new(collector)) {
                log::error!("process metrics registration failed: {err}");
            }
        }
    }

    /// A cluster node's Redis figures: each call's round trip and the calls that failed.
    pub fn register_redis(&self, figures: &crate::storage::RedisFigures) {
        let collectors: [Box<dyn prometheus::core::Collector>; 2] = [
            Box::new(figures.round_trip_seconds.clone()),
            Box::new(figures.errors.clone()),
        ];
        for collector in collectors {
            if let Err(err) = self.registry.register(collector) {
                log::error!("metric registration failed: {err}");
            }
        }
    }

    fn register_all(&self) {
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "1, labelled with the version of the server that runs.",
            ),
            &["version"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors: [Box<dyn prometheus::core::Collector>; 17] = [
            Box::new(build_info),
            Box::new(self.sqlite_memory_bytes.clone()),
            Box::new(self.store_failures.clone()),
            Box::new(self.store_held_bytes.clone()),
            Box::new(self.connections_gauge.clone()),
            Box::new(self.rooms_gauge.clone()),
            Box::new(self.messages_in.clone()),
            Box::new(self.messages_out.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.closes.clone()),
            Box::new(self.refusals.clone()),
            Box::new(self.bytes_in.clone()),
            Box::new(self.bytes_out.clone()),
            Box::new(self.bytes_out_by_type.clone()),
            Box::new(self.grown_write_buffers.clone()),
            Box::new(self.broadcast_seconds.clone()),
            Box::new(
                prometheus::IntGauge::new("up", "1 while the server runs.").map_or_else(
                    |_| unreachable_metric(),
                    |up| {
                        up.set(1);
                        up
                    },
                ),
            ),
        ];
        for collector in collectors {
            if let Err(err) = self.registry.register(collector) {
                log::error!("metric registration failed: {err}");
            }
        }
    }

    /// The Prometheus text exposition of every metric; `connections` comes from the admission
    /// counts, which are the one record of open connections, and the store's figures from it.
    pub fn render(&self, connections: usize, store: &StoreHealth) -> String {
        self.connections_gauge.set(connections as i64);
        // fetch_max: two renders at once must not both add the same failures.
        let failures = store.failures();
        let shown = self
            .store_failures_shown
            .fetch_max(failures, Ordering::Relaxed);
        if failures > shown {
            self.store_failures.inc_by(failures - shown);
        }
        self.store_held_bytes
            .set(i64::try_from(store.held_bytes()).unwrap_or(i64::MAX));
        // SAFETY: sqlite3_memory_used has no preconditions; it reads SQLite's own counter.
        self.sqlite_memory_bytes
            .set(unsafe { rusqlite::ffi::sqlite3_memory_used() });
        self.rooms_gauge
            .set(self.rooms.load(Ordering::Relaxed) as i64);
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&families, &mut buffer) {
            log::error!("metrics encoding failed: {err}");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

// The metric names and help texts below are constants of this file; Prometheus refuses only
// malformed names, so these constructors cannot fail in practice.
fn unreachable_metric() -> ! {
    panic!("a metric defined in stats.rs has an invalid name")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric())
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).unwrap_or_else(|_| unreachable_metric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_the_livecanvas_prefix() {
        let stats = Stats::new();
        stats.messages_in.with_label_values(&["draw"]).inc();
        let text = stats.render(0, &StoreHealth::default());
        for name in [
            "livecanvas_connections",
            "livecanvas_rooms",
            "livecanvas_messages_in_total{type=\"draw\"} 1",
            "livecanvas_bytes_out_total",
            "livecanvas_broadcast_seconds_bucket",
            "livecanvas_up 1",
            "livecanvas_build_info{version=\"0.1.0\"} 1",
            "# TYPE livecanvas_store_failures_total counter",
            "# TYPE livecanvas_messages_in_total counter",
            "livecanvas_store_failures_total 0",
            "livecanvas_store_held_bytes 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_figures_are_exposed_under_their_usual_names() {
        let text = Stats::new().render(0, &StoreHealth::default());
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
    }
}
