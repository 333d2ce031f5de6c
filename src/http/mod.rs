//! The HTTP side: everything a request meets before it becomes a WebSocket session.
//!
//! It owns the routes (pages, assets, the upgrade, the canvas PNG, health and metrics), the
//! upgrade that hands an admitted socket to its session (`websocket`), admission and rate limits
//! (`limits`), the client's address behind proxies (`client_addr`, `proxy_protocol`), the secrets
//! a request presents (`credentials`), private rooms and their tokens (`private`, `access`), the
//! owner's and the operator's calls (`moderation`), the health probe (`health`), and
//! [`AppState`], what every handler may use. It must never hold a room's or a session's state:
//! it asks the registry and the rooms through their messages.

pub mod access;
pub mod client_addr;
pub mod credentials;
pub mod health;
pub mod limits;
pub mod moderation;
pub mod private;
pub mod proxy_protocol;
pub mod routes;
pub mod websocket;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::Addr;

use crate::config::Settings;
use crate::registry::RoomRegistry;
use crate::stats::Stats;
use crate::storage::Store;
use health::HealthProbe;
use limits::{Admission, RoomCreations};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// False once a graceful stop has begun.
    pub ready: Arc<AtomicBool>,
    pub admission: Arc<Admission>,
    pub room_creations: Arc<RoomCreations>,
    pub settings: Arc<Settings>,
    pub stats: Arc<Stats>,
    pub registry: Addr<RoomRegistry>,
    pub store: Store,
    pub health: HealthProbe,
}
