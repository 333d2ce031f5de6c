//! HTTP routes: the page, its assets, the WebSocket upgrade, a room's picture, and the health check.
//!
//! This module owns URL shapes and what is refused before an upgrade (bad room names get 400). It
//! must never hold connection state: each upgrade hands its connection to a new `WsSession` actor.
//! It must never render on an HTTP worker's thread: pictures are drawn by `picture::render_off_thread`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_files::{Files, NamedFile};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::canvas::Op;
use crate::history::{self, AuthorId};
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
    cfg.route("/", web::get().to(index))
        .route("/r/{room}", web::get().to(room_page))
        .route("/ws", web::get().to(ws_default_room))
        .route("/ws/{room}", web::get().to(ws_room))
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
        .route("/api/rooms/{room}/canvas.png", web::get().to(canvas_png))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
    if with_metrics {
        cfg.route("/metrics", web::get().to(metrics));
    }
    cfg.service(Files::new("/", frontend_dir));
}

/// The operations listener (`--metrics-bind`): health, readiness, metrics.
pub fn configure_operations(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
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

async fn room_page(
    room: web::Path<String>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> actix_web::Result<HttpResponse> {
    if !is_valid_room_name(&room) {
        return Ok(bad_room(&room));
    }
    if let Err(denied) = private::check(&room, &req, &state).await {
        return Ok(denied.page());
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

/// `?batch=1` on the WebSocket URL asks for batched delivery; `?author=` is the browser's secret
/// for undo (see `history`).
#[derive(serde::Deserialize)]
struct UpgradeQuery {
    batch: Option<String>,
    author: Option<String>,
}

/// Admits the connection (a private room's only with one of its tokens) and answers 101; the
/// session starts once the upgrade has the socket (see `websocket`).
async fn upgrade(room: &str, req: HttpRequest, state: &AppState) -> HttpResponse {
    let permit = match state.admission.admit(&req) {
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
    let (standing, refuse) = match private::check(room, &req, state).await {
        Ok(access) => (access.standing(), None),
        // While the store is known to be down, every join is closed with 1013 after the upgrade
        // (what clients expect of an outage): this one too, without joining, as it cannot be told
        // whether the room is private.
        Err(private::Denied::Unavailable) if state.store.health().is_failing() => {
            (Standing::Viewer, Some(crate::room::UNREACHABLE_REASON))
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
    let handshake = match actix_http::ws::handshake(req.head()) {
        Ok(mut handshake) => handshake.finish(),
        Err(error) => return HttpResponse::from_error(error),
    };
    // Only a request the upgrade service passed on can have its socket taken.
    let Some(slot) = SessionSlot::of(&req) else {
        return HttpResponse::BadRequest().json(json!({
            "error": "not_upgradable",
            "message": "a WebSocket upgrade request must not announce a body",
        }));
    };
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    let query = web::Query::<UpgradeQuery>::from_query(req.query_string()).ok();
    let batched = query
        .as_ref()
        .is_some_and(|query| matches!(query.batch.as_deref(), Some("1" | "true")));
    let author = match query.as_ref().and_then(|query| query.author.as_deref()) {
        None => None,
        Some(secret) if history::is_valid_author_secret(secret) => {
            Some(AuthorId::from_secret(room, secret))
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
        peer,
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

fn picture_error(status: StatusCode, error: &str, message: String) -> HttpResponse {
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
            return picture_error(
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
            return picture_error(
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
        Ok(Err(err)) => picture_error(
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
            return Err(picture_error(
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
            Err(picture_error(
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
    picture_error(
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
