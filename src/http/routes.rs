//! HTTP routes: the page, its assets, the WebSocket upgrade, a room's picture, and the health check.
//!
//! This module owns URL shapes and what is refused before an upgrade (bad room names get 400). It
//! must never hold connection state: each upgrade hands its connection to a new `WsSession` actor.
//! It must never render on an HTTP worker's thread: pictures are drawn by `picture::render_off_thread`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_files::{Files, NamedFile};
use actix_http::ws::CloseCode;
use actix_web::http::{header, StatusCode};
use actix_web::{guard, web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::canvas::Op;
use crate::history::{self, AuthorId};
use crate::http::client_addr::ClientAddr;
use crate::http::credentials;
use crate::http::health::Probe;
use crate::http::limits::Refusal;
use crate::http::websocket::SessionSlot;
use crate::http::AppState;
use crate::http::{moderation, private};
use crate::moderation::Standing;
use crate::picture::{self, Picture, Priority, RenderFailed};
use crate::protocol::is_valid_room_name;
use crate::registry::FindRoom;
use crate::room::CurrentCanvas;
use crate::session::Admitted;

/// How long a request waits for the registry or a room to answer before it does without.
const ACTOR_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The room of `/` and `/ws`.
pub const DEFAULT_ROOM: &str = "main";

/// The canvas: pages, upgrades, health, and (unless it has its own listener) metrics.
pub fn configure(cfg: &mut web::ServiceConfig, frontend_dir: &std::path::Path, with_metrics: bool) {
    cfg.route("/", get_or_head().to(index))
        .route("/r/{room}", get_or_head().to(room_page))
        .route("/ws", get_or_head().to(ws_default_room))
        .route("/ws/{room}", get_or_head().to(ws_room))
        .route("/api/rooms", web::post().to(private::create_room))
        .route("/api/rooms", web::get().to(moderation::list_rooms))
        .route(
            "/api/rooms/{room}",
            web::delete().to(moderation::delete_room),
        )
        .route(
            "/api/rooms/{room}/links",
            web::post().to(moderation::replace_links),
        )
        .route(
            "/api/rooms/{room}/settings",
            web::put().to(moderation::settings),
        )
        .route(
            "/api/rooms/{room}/kick",
            web::post().to(moderation::remove_member),
        )
        .route("/api/rooms/{room}/canvas.png", get_or_head().to(canvas_png))
        .route("/healthz", get_or_head().to(healthz))
        .route("/readyz", get_or_head().to(readyz));
    if with_metrics {
        cfg.route("/metrics", get_or_head().to(metrics));
    }
    // actix-files answers GET and HEAD, with an ETag and Last-Modified (304 when unchanged).
    cfg.service(Files::new("/", frontend_dir));
}

/// The operations listener (`--metrics-bind`): health, readiness, metrics.
pub fn configure_operations(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", get_or_head().to(healthz))
        .route("/readyz", get_or_head().to(readyz))
        .route("/metrics", get_or_head().to(metrics))
        .route("/backup", web::post().to(backup));
}

/// A route for GET and HEAD: monitors and caches send HEAD, and actix-http leaves out the body of
/// a HEAD's answer (keeping its headers and length).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub(super) fn bad_room(room: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "error": "invalid_room",
        "message": format!(
            "room names are 1-64 characters of A-Z a-z 0-9 _ - (got {} bytes)",
            room.len()
        ),
    }))
}

async fn page(state: &AppState) -> actix_web::Result<NamedFile> {
    Ok(NamedFile::open(
        state.settings.frontend_dir.join("index.html"),
    )?)
}

async fn index(state: web::Data<AppState>) -> actix_web::Result<NamedFile> {
    page(&state).await
}

/// The page of any room, private or not: it holds no secret, and a private room's link carries
/// its token in the fragment, which the server never sees. The page presents the token on its
/// upgrade, where a private room is checked.
async fn room_page(
    room: web::Path<String>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> actix_web::Result<HttpResponse> {
    if !is_valid_room_name(&room) {
        return Ok(bad_room(&room));
    }
    Ok(page(&state).await?.into_response(&req))
}

async fn ws_default_room(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    upgrade(DEFAULT_ROOM, req, &state).await
}

async fn ws_room(
    room: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !is_valid_room_name(&room) {
        return bad_room(&room);
    }
    upgrade(&room, req, &state).await
}

/// `?batch=1` on the WebSocket URL asks for batched delivery.
#[derive(serde::Deserialize)]
struct UpgradeQuery {
    batch: Option<String>,
}

/// A private room's page that presented no token, or a wrong one, is refused with this close code
/// (the application range's "forbidden", after HTTP's 403) and the refusal's code as the reason:
/// a browser cannot read the status of a refused upgrade, only that it failed, and would retry.
pub const FORBIDDEN_CLOSE_CODE: u16 = 4403;

/// Admits the connection (a private room's only with one of its tokens) and answers 101; the
/// session starts once the upgrade has the socket (see `websocket`).
async fn upgrade(room: &str, req: HttpRequest, state: &AppState) -> HttpResponse {
    let client = ClientAddr::of(&req, &state.settings.trusted_proxies);
    let permit = match state.admission.admit(&req, client.ip) {
        Ok(permit) => permit,
        Err(refusal) => {
            state
                .stats
                .refusals
                .with_label_values(&[refusal.code()])
                .inc();
            return refused(&refusal);
        }
    };
    let page = credentials::offers_subprotocol(&req);
    let (standing, refuse) = match private::check(room, &req, state).await {
        Ok(access) => (access.standing(), None),
        // While the store is known to be down, every join is closed with 1013 after the upgrade
        // (what clients expect of an outage): this one too, without joining, as it cannot be told
        // whether the room is private.
        Err(private::Denied::Unavailable) if state.store.health().is_failing() => (
            Standing::Viewer,
            Some((CloseCode::Again, crate::room::UNREACHABLE_REASON)),
        ),
        Err(denied @ (private::Denied::NoToken | private::Denied::WrongToken)) if page => {
            state
                .stats
                .refusals
                .with_label_values(&[denied.code()])
                .inc();
            (
                Standing::Viewer,
                Some((CloseCode::Other(FORBIDDEN_CLOSE_CODE), denied.code())),
            )
        }
        Err(denied) => {
            state
                .stats
                .refusals
                .with_label_values(&[denied.code()])
                .inc();
            return denied.json();
        }
    };
    let mut handshake = match actix_http::ws::handshake(req.head()) {
        Ok(handshake) => handshake,
        Err(error) => return HttpResponse::from_error(error),
    };
    if page {
        // Never an offered value with a secret in it: only the plain protocol name.
        handshake.insert_header((header::SEC_WEBSOCKET_PROTOCOL, credentials::SUBPROTOCOL));
    }
    let handshake = handshake.finish();
    // Only a request the upgrade service passed on can have its socket taken.
    let Some(slot) = SessionSlot::of(&req) else {
        return HttpResponse::BadRequest().json(json!({
            "error": "not_upgradable",
            "message": "a WebSocket upgrade request must not announce a body",
        }));
    };
    let query = web::Query::<UpgradeQuery>::from_query(req.query_string()).ok();
    let batched = query
        .as_ref()
        .is_some_and(|query| matches!(query.batch.as_deref(), Some("1" | "true")));
    let author = match credentials::presented_author(&req) {
        None => None,
        Some(secret) if history::is_valid_author_secret(&secret) => {
            Some(AuthorId::from_secret(room, &secret))
        }
        Some(_) => {
            return HttpResponse::BadRequest().json(json!({
                "error": "invalid_author",
                "message": "author must be 16-128 characters of A-Z a-z 0-9 _ -",
            }))
        }
    };
    slot.fill(Admitted {
        room_name: room.into(),
        peer: client.to_string(),
        permit: Some(permit),
        batched,
        author,
        standing,
        refuse,
        settings: state.settings.clone(),
        stats: state.stats.clone(),
        registry: state.registry.clone(),
    });
    HttpResponse::from(handshake).map_into_boxed_body()
}

/// `?background=transparent` keeps erased and untouched areas transparent (as `canvasState` does);
/// the default is the picture on white, as the page's download gives it.
#[derive(serde::Deserialize)]
struct PictureQuery {
    background: Option<String>,
}

fn json_error(status: StatusCode, error: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": error, "message": message}))
}

/// The room's current picture as a PNG: from the open room if anyone is in it, else from disk.
async fn canvas_png(
    room: web::Path<String>,
    query: web::Query<PictureQuery>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> HttpResponse {
    if !is_valid_room_name(&room) {
        return bad_room(&room);
    }
    if let Err(denied) = private::check(&room, &req, &state).await {
        return denied.json();
    }
    let transparent = match query.background.as_deref() {
        None | Some("white") => false,
        Some("transparent") => true,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_background",
                "background is white or transparent".into(),
            )
        }
    };
    let name: Arc<str> = Arc::from(room.as_str());
    let (base, ops) = match current_canvas(&name, &state).await {
        Ok(Some(current)) => current,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "no_such_room",
                format!("nothing has been drawn in room {name:?}"),
            )
        }
        Err(response) => return response,
    };
    let size = state.settings.canvas;
    let rendered = picture::render_off_thread(Priority::Foreground, move || {
        picture::render(&base, &ops, &picture::undone(&ops), size).map(|canvas| {
            if transparent {
                canvas.encode_png()
            } else {
                canvas.encode_png_on_white()
            }
        })
    })
    .await;
    match rendered {
        Ok(Ok(png)) => HttpResponse::Ok()
            .content_type("image/png")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"livecanvas-{name}.png\""),
            ))
            .body(png),
        Ok(Err(err)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreadable_canvas",
            format!("the room's picture could not be drawn: {err}"),
        ),
        Err(failed) => render_failed(failed),
    }
}

/// The open room's picture and operations since, or what the store keeps for a closed room.
async fn current_canvas(
    name: &Arc<str>,
    state: &AppState,
) -> Result<Option<(Picture, Vec<Op>)>, HttpResponse> {
    let open = state
        .registry
        .send(FindRoom { room: name.clone() })
        .timeout(ACTOR_ANSWER_TIMEOUT)
        .await
        .ok()
        .flatten();
    if let Some(room) = open {
        // A room that stopped meanwhile has put everything on disk: read it from there (and so
        // does one that does not answer in time, logged).
        match room.send(CurrentCanvas).timeout(ACTOR_ANSWER_TIMEOUT).await {
            Ok(Some(current)) => return Ok(Some(current)),
            Err(actix::MailboxError::Timeout) => {
                log::error!("room={name} did not hand over its picture in time; reading the store")
            }
            _ => {}
        }
    }
    let stored = match state.store.read(name.clone()).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Ok(None),
        Err(err) => {
            log::error!("room={name} cannot be read: {err}");
            return Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the room's canvas could not be read from disk".into(),
            ));
        }
    };
    let (size, limits) = (state.settings.canvas, state.settings.storage.undo);
    let restored = picture::render_off_thread(Priority::Foreground, move || {
        picture::restore(&stored, size, limits, history::now_ms())
    });
    match restored.await {
        Ok(Ok(restored)) => {
            let tail = restored.tail.into_iter().map(|stored| stored.op).collect();
            Ok(Some((restored.picture, tail)))
        }
        Ok(Err(why)) => {
            log::error!("room={name} has a damaged stored canvas: {why}");
            Err(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable_canvas",
                "the room's saved canvas could not be read".into(),
            ))
        }
        Err(failed) => Err(render_failed(failed)),
    }
}

/// A render that gave no result: busy is worth retrying, a panic is not.
fn render_failed(failed: RenderFailed) -> HttpResponse {
    let status = match failed {
        RenderFailed::Busy => StatusCode::SERVICE_UNAVAILABLE,
        RenderFailed::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(
        status,
        "render_failed",
        format!("the picture could not be drawn: {failed}"),
    )
}

fn refused(refusal: &Refusal) -> HttpResponse {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = HttpResponse::build(status);
    if status != StatusCode::FORBIDDEN {
        response.insert_header((header::RETRY_AFTER, "1"));
    }
    response.json(json!({"error": refusal.code(), "message": refusal.message()}))
}

/// Joins the probe room the way a client joins any room (see `health`).
async fn probe(state: &AppState) -> Probe {
    state
        .health
        .check(&state.settings, &state.stats, &state.registry)
        .await
}

/// 200 when a newcomer can still be served (the health probe got its `welcome`), else 503 with
/// the reason: a server that cannot admit anyone is not alive, whatever its HTTP side says.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let connections = state.admission.open_connections();
    let rooms = state.stats.rooms.load(Ordering::Relaxed);
    match probe(&state).await {
        Probe::Served(took) => {
            let mut body = json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "connections": connections,
                "rooms": rooms,
                "probe_ms": took.as_secs_f64() * 1000.0,
            });
            // A cluster node says which it is, and whether it reaches Redis (liveness does not
            // depend on Redis: a node without it is alive, only not ready).
            if let Some(cluster) = state.store.cluster() {
                body["node"] = json!(cluster.node());
                body["redis"] = json!(if cluster.health().is_failing() {
                    "unreachable"
                } else {
                    "connected"
                });
            }
            HttpResponse::Ok().json(body)
        }
        Probe::Failed(reason) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unhealthy",
            "version": env!("CARGO_PKG_VERSION"),
            "reason": reason,
            "connections": connections,
            "rooms": rooms,
        })),
    }
}

/// 200 while accepting connections and able to serve them; 503 once a graceful stop has begun,
/// while the store cannot write (what is drawn is not on disk), or while the health probe fails.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "stopping"}));
    }
    if let Some(reason) = state.store.health().failure() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "storage_unavailable",
            "reason": reason,
            "held_bytes": state.store.health().held_bytes(),
        }));
    }
    match probe(&state).await {
        Probe::Served(_) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Probe::Failed(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": reason})),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(
            state
                .stats
                .render(state.admission.open_connections(), state.store.health()),
        )
}

/// `POST /backup {"dir": "/absolute/dir"}` on the operations listener: a consistent copy of the
/// database into `dir`, made while serving (`livecanvas backup` asks for it). Answered only to
/// this machine (a loopback peer): it writes files where the request says.
async fn backup(
    req: HttpRequest,
    body: web::Json<crate::backup::BackupRequest>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let local = req
        .peer_addr()
        .is_some_and(|peer| peer.ip().to_canonical().is_loopback());
    if !local {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "backups are made only at the request of this machine".into(),
        );
    }
    let dir = body.into_inner().dir;
    if !dir.is_absolute() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "relative_dir",
            "dir must be an absolute path on the server's machine".into(),
        );
    }
    match state.store.backup(dir).await {
        Ok(done) => HttpResponse::Ok().json(json!({
            "path": done.path,
            "bytes": done.bytes,
        })),
        Err(err @ crate::storage::StoreError::NothingToBackUp) => json_error(
            StatusCode::BAD_REQUEST,
            "nothing_to_back_up",
            err.to_string(),
        ),
        Err(err) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backup_failed",
            err.to_string(),
        ),
    }
}
