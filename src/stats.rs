//! Live counters shared by the actors and the HTTP routes (for `/healthz`).
//!
//! Plain relaxed atomics: they are read for reporting only and must never be used to make a decision
//! that needs to be exact under concurrency.

use std::sync::atomic::AtomicUsize;

#[derive(Debug, Default)]
pub struct Stats {
    /// Open WebSocket sessions.
    pub connections: AtomicUsize,
    /// Live `CanvasServer` actors.
    pub rooms: AtomicUsize,
}
