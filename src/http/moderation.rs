//! The owner's and the operator's HTTP calls: a private room's owner replaces its links, locks
//! it and removes a member (`Authorization: Bearer OWNER`); the operator deletes a room for good
//! and lists the rooms (`Authorization: Bearer ADMIN`, with `--admin-token-file`).
//!
//! This module owns who may make each call and what it answers. The store records a change (and,
//! in a cluster, tells every node's room on its channel); on a single node this module tells the
//! open room itself. It must never log or echo a token (the log names the kind of token only,
//! see `crate::moderation::log_action`), and never wait on the store or a room without a bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use uuid::Uuid;

use crate::http::access::{NewLinks, Role};
use crate::http::credentials::bearer_token;
use crate::http::private::{self, room_url};
use crate::http::routes::bad_room;
use crate::http::AppState;
use crate::moderation::{log_action, Moderation, Moderator};
use crate::protocol::is_valid_room_name;
use crate::registry::{DeleteRoom, FindRoom, OpenRooms};
use crate::room::Moderate;
use crate::storage::StoreError;

/// How long a call waits for the store, the registry or the room before it answers 503.
const MODERATION_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn api_error(status: StatusCode, error: &str, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    match status {
        StatusCode::UNAUTHORIZED => {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        _ => {}
    }
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": error, "message": message}))
}

/// A refused call's answer (boxed: a response is large, and most calls are not refused).
type Refused = Box<HttpResponse>;

fn no_token() -> HttpResponse {
    api_error(
        StatusCode::UNAUTHORIZED,
        "token_required",
        "send the token as Authorization: Bearer TOKEN",
    )
}

fn unavailable() -> HttpResponse {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the server cannot record this now; try again",
    )
}

fn no_such_room(room: &str) -> HttpResponse {
    api_error(
        StatusCode::NOT_FOUND,
        "no_such_room",
        &format!("there is no private room {room:?}"),
    )
}

/// The store's answer within the bound; a failure is logged and answered 503.
async fn stored<T>(
    room: &str,
    what: &str,
    answer: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, Refused> {
    match tokio::time::timeout(MODERATION_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            log::error!("room={room}: {what} failed: {err}");
            Err(unavailable().into())
        }
        Err(_) => {
            log::error!("room={room}: {what} took too long");
            Err(unavailable().into())
        }
    }
}

/// `room` if the request carries its owner's token; else the answer: 400 for a bad name, 401
/// without a token, 404 for a room that is not private, 403 for any other token.
async fn as_owner(room: &str, req: &HttpRequest, state: &AppState) -> Result<(), Refused> {
    if !is_valid_room_name(room) {
        return Err(bad_room(room).into());
    }
    let token = bearer_token(req).ok_or_else(|| Refused::from(no_token()))?;
    let access = private::lookup(room, state)
        .await
        .map_err(|denied| Refused::from(denied.json()))?
        .ok_or_else(|| Refused::from(no_such_room(room)))?;
    match access.hashes.role_of(token) {
        Some(Role::Owner) => Ok(()),
        _ => Err(api_error(
            StatusCode::FORBIDDEN,
            "not_owner",
            "only the room's owner link may do this",
        )
        .into()),
    }
}

/// Whether the request carries the operator's token; else the answer: 404 while the admin API
/// is off, 401 without a token, 403 with another.
fn as_admin(req: &HttpRequest, state: &AppState) -> Result<(), Refused> {
    let Some(admin) = state.settings.admin else {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            "admin_api_off",
            "this server has no admin token (--admin-token-file)",
        )
        .into());
    };
    let token = bearer_token(req).ok_or_else(|| Refused::from(no_token()))?;
    if admin.admits(token) {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::FORBIDDEN,
            "not_admin",
            "that is not this server's admin token",
        )
        .into())
    }
}

/// On a single node, the room open here carries out `action` before the call is answered (a
/// cluster's rooms hear it from Redis). Whether a room was open.
async fn tell_open_room(room: &Arc<str>, action: Moderation, state: &AppState) -> bool {
    if state.store.cluster().is_some() {
        return false;
    }
    let open = state
        .registry
        .send(FindRoom { room: room.clone() })
        .timeout(MODERATION_ANSWER_TIMEOUT)
        .await
        .ok()
        .flatten();
    let Some(open) = open else {
        return false;
    };
    // A room that stopped meanwhile has no members left to close.
    let _ = open
        .send(Moderate(action))
        .timeout(MODERATION_ANSWER_TIMEOUT)
        .await;
    true
}

/// `POST /api/rooms/{room}/links`: new edit and view links; the old ones open nothing from now
/// on, and the members who came in with them are closed.
pub async fn replace_links(
    room: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(answer) = as_owner(&room, &req, &state).await {
        return *answer;
    }
    let links = match NewLinks::generate() {
        Ok(links) => links,
        Err(err) => {
            log::error!("cannot replace the links of room={room}: {err}");
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_randomness",
                "the server cannot make secure links now",
            );
        }
    };
    let name: Arc<str> = Arc::from(room.as_str());
    let replaced = state
        .store
        .replace_links(name.clone(), links.edit, links.view);
    match stored(&room, "replacing its links", replaced).await {
        Ok(true) => {}
        Ok(false) => return no_such_room(&room),
        Err(answer) => return *answer,
    }
    tell_open_room(&name, Moderation::LinksReplaced, &state).await;
    log_action(&room, Moderation::LinksReplaced, Moderator::Owner);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "room": &*room,
            "editToken": links.edit_token,
            "viewToken": links.view_token,
            "editUrl": room_url(&room, &links.edit_token),
            "viewUrl": room_url(&room, &links.view_token),
        }))
}

/// The body of `PUT /api/rooms/{room}/settings`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    locked: bool,
}

/// `PUT /api/rooms/{room}/settings` with `{"locked":true|false}`: while locked, only the owner
/// may change the canvas.
pub async fn settings(
    room: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(answer) = as_owner(&room, &req, &state).await {
        return *answer;
    }
    let Ok(SettingsBody { locked }) = serde_json::from_slice::<SettingsBody>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_settings",
            "the body must be {\"locked\":true} or {\"locked\":false}",
        );
    };
    let name: Arc<str> = Arc::from(room.as_str());
    let changed = state.store.set_locked(name.clone(), locked);
    match stored(&room, "changing its lock", changed).await {
        Ok(true) => {}
        Ok(false) => return no_such_room(&room),
        Err(answer) => return *answer,
    }
    tell_open_room(&name, Moderation::Locked(locked), &state).await;
    log_action(&room, Moderation::Locked(locked), Moderator::Owner);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "locked": locked }))
}

/// The body of `POST /api/rooms/{room}/kick`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Removal {
    client_id: String,
}

/// `POST /api/rooms/{room}/kick` with `{"clientId":"…"}`: that member is closed, wherever it is
/// connected (204; an id that is not in the room changes nothing). It may come back with a link.
pub async fn remove_member(
    room: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(answer) = as_owner(&room, &req, &state).await {
        return *answer;
    }
    let id = serde_json::from_slice::<Removal>(&body)
        .ok()
        .and_then(|removal| Uuid::parse_str(&removal.client_id).ok());
    let Some(id) = id else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            "the body must be {\"clientId\":\"<a member's client id>\"}",
        );
    };
    let name: Arc<str> = Arc::from(room.as_str());
    let action = Moderation::Removed(id);
    if let Some(cluster) = state.store.cluster() {
        if let Err(answer) =
            stored(&room, "removing a member", cluster.remove_member(&room, id)).await
        {
            return *answer;
        }
    } else {
        tell_open_room(&name, action, &state).await;
    }
    log_action(&room, action, Moderator::Owner);
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `DELETE /api/rooms/{room}` (operator): the room's members are closed and everything kept of
/// it is deleted from the store; 204, or 404 if there was nothing.
pub async fn delete_room(
    room: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(answer) = as_admin(&req, &state) {
        return *answer;
    }
    if !is_valid_room_name(&room) {
        return bad_room(&room);
    }
    let name: Arc<str> = Arc::from(room.as_str());
    // Through the registry: the room open here (if any) lets go of everything first, so that it
    // writes nothing after the store has deleted it (a cluster's other nodes hear it from Redis).
    let deleted = state.registry.send(DeleteRoom { room: name });
    let existed = match tokio::time::timeout(MODERATION_ANSWER_TIMEOUT, deleted).await {
        Ok(Ok(Ok(existed))) => existed,
        Ok(Ok(Err(err))) => {
            log::error!("room={room}: deleting it failed: {err}");
            return unavailable();
        }
        Ok(Err(_)) | Err(_) => {
            log::error!("room={room}: deleting it: no answer in time");
            return unavailable();
        }
    };
    if !existed {
        return api_error(
            StatusCode::NOT_FOUND,
            "no_such_room",
            &format!("nothing is kept of room {:?}", &*room),
        );
    }
    log_action(&room, Moderation::Deleted, Moderator::Admin);
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /api/rooms` (operator): every stored room and every room open on this node, with its
/// members, bytes stored and last change.
pub async fn list_rooms(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(answer) = as_admin(&req, &state) {
        return *answer;
    }
    let listed = match stored("*", "listing rooms", state.store.list_rooms()).await {
        Ok(listed) => listed,
        Err(answer) => return *answer,
    };
    let mut open: HashMap<Arc<str>, usize> = state
        .registry
        .send(OpenRooms)
        .timeout(MODERATION_ANSWER_TIMEOUT)
        .await
        .unwrap_or_default();
    let mut rooms: Vec<serde_json::Value> = listed
        .into_iter()
        .map(|room| {
            let here = open.remove(room.room.as_str());
            json!({
                "room": room.room,
                "private": room.private,
                "members": room.members.unwrap_or(here.unwrap_or(0) as u64),
                "storedBytes": room.stored_bytes,
                "lastChangeMs": room.changed_ms,
            })
        })
        .collect();
    // Open rooms the store does not keep (with --storage memory).
    rooms.extend(open.into_iter().map(|(room, members)| {
        json!({
            "room": &*room,
            "private": false,
            "members": members,
            "storedBytes": 0,
            "lastChangeMs": null,
        })
    }));
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "rooms": rooms }))
}
