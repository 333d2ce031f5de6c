//! livecanvas: a real-time shared drawing canvas.
//!
//! Each WebSocket connection is a [`session::WsSession`] actor; each room is a
//! [`room::CanvasServer`] actor, spawned on demand by the [`registry::RoomRegistry`]. The HTTP
//! side ([`http`]) serves the frontend from disk and admits `/ws/{room}` upgrades, which
//! [`http::websocket`] hands to their sessions. This file wires them together and owns the server's
//! lifecycle: bind, serve, and the graceful stop on a signal.

pub mod backup;
mod canvas;
pub mod config;
mod history;
mod http;
mod lettering;
pub mod logging;
pub mod memory;
mod moderation;
mod picture;
mod presence;
pub mod protocol;
mod registry;
mod room;
mod session;
mod shapes;
mod stats;
mod storage;
mod tls;

pub use http::limits::RESERVED_DESCRIPTORS;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_http::{error::DispatchError, HttpService};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::rt::signal::unix::{signal, Signal, SignalKind};
use actix_web::{middleware, web, App, HttpServer};

use crate::config::Settings;
use crate::http::{health, limits, routes, websocket, AppState};
use crate::registry::{CloseAllRooms, DrainRooms, RoomRegistry};
use crate::stats::Stats;
use crate::storage::{Cluster, Store, StoreError, StoreOptions};

/// The frontend needs nothing but its own origin (and data:/blob: images for snapshots and
/// downloads); no inline script or style is allowed, and no other site may frame the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
     form-action 'self'";

/// Binds, prints the addresses it listens on, and serves until SIGINT/SIGTERM, then stops
/// gracefully: not ready, no new connections, every client told 1001, connections drained within
/// `--shutdown-grace`.
pub async fn run(settings: Settings, store: Store) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    // Listen for signals before announcing the address: a stop requested right after start-up
    // must still be graceful.
    let signals = Signals::listen()?;
    let stats = Arc::new(Stats::new());
    if store.cluster().is_some() {
        stats.register_redis(crate::storage::redis_figures());
    }
    let registry = RoomRegistry::new(settings.clone(), stats.clone(), store.clone()).start();
    let max_connections = limits::connection_limit(settings.max_connections);
    let state = AppState {
        admission: limits::Admission::new(settings.clone(), max_connections),
        room_creations: Arc::new(limits::RoomCreations::new(&settings)),
        settings: settings.clone(),
        stats,
        registry: registry.clone(),
        store: store.clone(),
        ready: Arc::new(AtomicBool::new(true)),
        health: health::HealthProbe::new(),
    };
    let main = main_server(&settings, state.clone())?;
    let metrics = match settings.metrics_bind {
        Some(addr) => Some(metrics_server(addr, state.clone())?),
        None => None,
    };
    log::info!(
        "serving {} with {} workers and {} room threads",
        settings.frontend_dir.display(),
        settings.workers,
        settings.room_threads
    );
    let handles: Vec<ServerHandle> = std::iter::once(main.handle())
        .chain(metrics.as_ref().map(|m| m.handle()))
        .collect();
    let stopping = actix_web::rt::spawn(stop_on_signal(signals, handles, state.clone()));
    actix_web::rt::spawn(memory::trim_after_churn(state.admission.clone()));
    let served = match metrics {
        Some(metrics) => {
            let (main, metrics) = tokio::join!(main, metrics);
            main.and(metrics)
        }
        None => main.await,
    };
    // The servers stop only from `stop_on_signal`, which has drained the rooms and closed the
    // store by then (within its deadline), or after a failure to serve.
    if served.is_ok() && stopping.await.is_err() {
        log::error!("the graceful stop failed");
    }
    log::info!("stopped");
    served
}

/// The store named by the configuration. An unusable data directory stops start-up with a message
/// naming the file: starting blank over a picture that could not be read would lose it.
///
/// With `--redis-url`, the store is the cluster's Redis: this must then be called on the runtime
/// that serves (its links to Redis start on it), and Redis need not be up yet.
pub fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    if let Some(cluster) = &settings.cluster {
        // A dead node's members must drop out of the counts within the client timeout: its
        // entries live one heartbeat less, and the live nodes refresh theirs every heartbeat.
        let presence_ttl = settings.client_timeout - settings.heartbeat_interval;
        let handle = Cluster::new(
            &cluster.redis_url,
            &cluster.node_id,
            settings.storage.max_stored_rooms,
            presence_ttl,
            cluster.max_in_flight,
        )?;
        handle.start()?;
        log::info!(
            "node={} keeps canvases in Redis and shares rooms with every node using it",
            cluster.node_id
        );
        return Ok(Store::Redis(handle));
    }
    let Some(dir) = &settings.storage.data_dir else {
        log::warn!("--storage memory: canvases are kept only while their room is open");
        return Ok(Store::without_persistence());
    };
    let options = StoreOptions {
        flush_interval: settings.storage.flush_interval,
        max_rooms: settings.storage.max_stored_rooms,
        max_held_bytes: settings.storage.max_unstored_bytes,
        max_page_count: settings.storage.sqlite_max_pages,
    };
    let store = Store::open(dir, options)?;
    log::info!("canvases are kept in {}", dir.display());
    Ok(store)
}

/// Pending connections the kernel may hold for the canvas listener (as actix-web's default).
const LISTEN_BACKLOG: u32 = 1024;
/// How long a client may take to send its request head, and to close after the response.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a stopping server looks whether every session has closed.
const SESSION_DRAIN_POLL: Duration = Duration::from_millis(20);

/// The canvas's App: pages, assets, upgrades, pictures, health.
fn canvas_app(
    state: AppState,
    frontend_dir: &std::path::Path,
    with_metrics: bool,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        // gzip, brotli or zstd, as the client's Accept-Encoding prefers (with `Vary`); pictures
        // (already compressed) and the 101 of an upgrade are left as they are.
        .wrap(middleware::Compress::default())
        .wrap(
            middleware::DefaultHeaders::new()
                .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Referrer-Policy", "same-origin"))
                // Every response not marked otherwise is checked again before each use: the
                // frontend's modules carry an ETag, so an unchanged file costs a 304, and after
                // an upgrade no browser runs a cached old module beside new ones.
                .add((header::CACHE_CONTROL, "no-cache")),
        )
        .configure(|cfg| routes::configure(cfg, frontend_dir, with_metrics))
}

/// The canvas listener. It is built as actix-web's `HttpServer` builds one (actix-http's
/// `HttpService` on actix-server, the App as its service) with one addition: WebSocket upgrade
/// requests go to [`websocket::upgrade_service`], which asks the same App and gives the socket of
/// an admitted connection to its session.
fn main_server(settings: &Arc<Settings>, state: AppState) -> std::io::Result<actix_server::Server> {
    let listener = listen(settings.bind)?;
    let addr = listener.local_addr()?;
    let frontend_dir = settings.frontend_dir.clone();
    let with_metrics = settings.metrics_bind.is_none();
    let app = move || canvas_app(state.clone(), &frontend_dir, with_metrics).into_factory();
    // A macro, not a closure: the service's stream type differs with and without TLS.
    macro_rules! http {
        ($detach:expr) => {
            HttpService::build()
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // Strokes are small frames written as they come: with Nagle's algorithm a frame
                // written while the previous one is unacknowledged waits for the client's delayed
                // ACK (40 ms on Linux), which was the whole p99 tail of a busy room.
                .tcp_nodelay(true)
                .local_addr(addr)
                .upgrade(websocket::upgrade_service(app.clone(), $detach))
                // actix-web's own config constructor is private. The App only reads the Host
                // header (the origin check); the default's host stands in for requests without one.
                .finish(map_config(app(), |_| AppConfig::default()))
        };
    }
    // actix-server's own per-worker limit (`max_concurrent_connections`, 25,600) is left alone:
    // it counts only connections its HTTP dispatcher holds, which an upgraded WebSocket leaves,
    // and past it the listener stops accepting instead of answering. What keeps a full server
    // answering is that the WebSockets leave descriptors for `accept`
    // (`limits::RESERVED_DESCRIPTORS`).
    let builder = actix_server::Server::build()
        .workers(settings.workers)
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace.as_secs().max(1));
    let (builder, scheme) = match &settings.tls {
        Some(files) => {
            let config = tls::server_config(files)?;
            let builder = builder.listen("livecanvas-tls", listener, move || {
                http!(websocket::stay).rustls_0_23(config.clone())
            })?;
            (builder, "https")
        }
        None => {
            let proxy_protocol = settings.proxy_protocol;
            let builder = builder.listen("livecanvas", listener, move || {
                fn_service(move |io| accept_tcp(io, proxy_protocol))
                    .and_then(http!(websocket::detach_tcp))
            })?;
            (builder, "http")
        }
    };
    // Tests and scripts read this line to find an ephemeral port.
    println!("livecanvas listening on {scheme}://{addr}");
    Ok(builder.run())
}

/// A new plain-TCP connection as actix-http's `HttpService::tcp` hands it on (no Nagle, see
/// above), with its peer: the TCP peer, or with `--proxy-protocol` the client its PROXY header
/// names (a connection without a valid one is closed here).
async fn accept_tcp(
    mut io: tokio::net::TcpStream,
    proxy_protocol: bool,
) -> Result<
    (
        tokio::net::TcpStream,
        actix_http::Protocol,
        Option<SocketAddr>,
    ),
    DispatchError,
> {
    let _ = io.set_nodelay(true);
    let peer = io.peer_addr().ok();
    if !proxy_protocol {
        return Ok((io, actix_http::Protocol::Http1, peer));
    }
    match http::proxy_protocol::read_client(&mut io).await {
        Ok(client) => Ok((io, actix_http::Protocol::Http1, client.or(peer))),
        Err(why) => {
            log::warn!("connection from {peer:?} closed: {why}");
            Err(DispatchError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                why,
            )))
        }
    }
}

/// Binds the canvas listener (address reuse on, as actix-web does).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

fn metrics_server(
    addr: std::net::SocketAddr,
    state: AppState,
) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes::configure_operations)
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    for addr in server.addrs() {
        println!("livecanvas metrics on http://{addr}");
    }
    Ok(server.run())
}

/// SIGINT and SIGTERM, registered with the runtime.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// On the first SIGINT or SIGTERM: report not ready, stop accepting, tell every client 1001, wait
/// for the sessions to close, let the rooms hand what they accepted to the store, commit it, and
/// stop the servers. Every step waits only until one deadline, `--shutdown-grace` after the
/// signal, whatever state the rooms are in: a stop that hangs is worse than one that logs what it
/// could not finish.
async fn stop_on_signal(signals: Signals, servers: Vec<ServerHandle>, state: AppState) {
    signals.recv().await;
    log::info!("stopping: closing every connection with 1001");
    let deadline = tokio::time::Instant::now() + state.settings.shutdown_grace;
    state.ready.store(false, Ordering::SeqCst);
    // Only the canvas stops accepting; the operations listener keeps answering /readyz (503).
    if let Some(main) = servers.first() {
        within(deadline, "pausing the listener", main.pause()).await;
    }
    let close_all = state.registry.send(CloseAllRooms);
    if let Some(Err(_)) = within(deadline, "closing every room's members", close_all).await {
        log::warn!("the room registry had already stopped");
    }
    // Sessions own their sockets (they are not the HTTP server's connections), so the server's
    // own drain does not wait for them: wait here until their close frames are out.
    while state.admission.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(SESSION_DRAIN_POLL).await;
    }
    if state.admission.open_connections() > 0 {
        log::error!(
            "stopping with {} connections still open after --shutdown-grace",
            state.admission.open_connections()
        );
    }
    // Once the rooms have handled what the sessions sent them, every accepted operation is in the
    // store's queue: commit it.
    let drained = state.registry.send(DrainRooms);
    if let Some(Err(_)) = within(deadline, "draining the rooms", drained).await {
        log::warn!("the room registry had already stopped");
    }
    within(deadline, "committing to the store", state.store.close()).await;
    for server in &servers {
        // What is left is plain HTTP requests; past the deadline they are cut off.
        if within(deadline, "finishing HTTP requests", server.stop(true))
            .await
            .is_none()
        {
            server.stop(false).await;
        }
    }
}

/// `step` if it ends before `deadline`; `None`, logged as an error, if not.
async fn within<T>(
    deadline: tokio::time::Instant,
    what: &str,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(value) => Some(value),
        Err(_) => {
            log::error!("stopping: {what} did not finish within --shutdown-grace; going on");
            None
        }
    }
}
