//! livecanvas: a real-time shared drawing canvas.
//!
//! Each WebSocket connection is a [`session::WsSession`] actor; each room is a
//! [`room::CanvasServer`] actor, spawned on demand by the [`registry::RoomRegistry`]. The HTTP
//! side ([`routes`]) serves the frontend from disk and upgrades `/ws/{room}`.

pub mod config;
pub mod limits;
pub mod protocol;
pub mod registry;
pub mod room;
pub mod routes;
pub mod session;
pub mod stats;

use std::sync::Arc;

use actix::Actor;
use actix_web::{middleware, web, App, HttpServer};

use crate::config::Settings;
use crate::registry::RoomRegistry;
use crate::routes::AppState;
use crate::stats::Stats;

/// The frontend needs nothing but its own origin (and data:/blob: images for snapshots and
/// downloads); no inline script or style is allowed, and no other site may frame the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
     form-action 'self'";

/// How long a graceful stop waits for workers to finish before closing connections.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Binds, prints the address it listens on, and serves until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    let stats = Arc::new(Stats::default());
    let registry = RoomRegistry::new(settings.clone(), stats.clone()).start();
    let state = AppState {
        admission: limits::Admission::new(settings.clone()),
        settings: settings.clone(),
        stats,
        registry,
    };
    let frontend_dir = settings.frontend_dir.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(
                middleware::DefaultHeaders::new()
                    .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "same-origin")),
            )
            .configure(|cfg| routes::configure(cfg, &frontend_dir))
    })
    .workers(settings.workers)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(settings.bind)?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find an ephemeral port.
        println!("livecanvas listening on http://{addr}");
    }
    log::info!(
        "serving {} with {} workers and {} room threads",
        settings.frontend_dir.display(),
        settings.workers,
        settings.room_threads
    );
    server.run().await
}
