//! Private rooms over HTTP: `POST /api/rooms`, and the token check every route of a room makes.
//!
//! This module owns the answer to "may this request see this room, and may it draw?": a room the
//! store knows as private needs one of its tokens (found by `credentials`: the owner's, an edit
//! or a view token); any other room is public. It must never log or echo a token, never compare
//! one itself (see `access`), and
//! never wait for the store without a bound: a lookup that takes too long answers 503.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::http::access::{NewPrivateRoom, Role};
use crate::http::client_addr::ClientAddr;
use crate::http::credentials::presented_token;
use crate::http::AppState;
use crate::moderation::Standing;
use crate::storage::RoomAccess;
use crate::storage::{Creation, StoreError};

/// How long a request waits for the store to say whether a room is private, or to record a new
/// one, before it answers 503.
const ACCESS_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Random names tried before giving up (a collision of 128-bit names does not happen; this only
/// makes sure a taken name is never handed out).
const NAME_ATTEMPTS: usize = 3;

/// What a request may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A public room: everything, for everyone.
    Public,
    /// A private room, with the role of the token presented.
    Private(Role),
}

impl Access {
    /// What a member admitted with this access is in its room.
    pub fn standing(self) -> Standing {
        match self {
            Access::Public => Standing::Anyone,
            Access::Private(Role::Owner) => Standing::Owner,
            Access::Private(Role::Edit) => Standing::Editor,
            Access::Private(Role::View) => Standing::Viewer,
        }
    }
}

/// Why a request may not see a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 403: a private room, and no token.
    NoToken,
    /// 403: a private room, and not one of its tokens.
    WrongToken,
    /// 503: the store did not say in time whether the room is private.
    Unavailable,
}

impl Denied {
    fn status(self) -> StatusCode {
        match self {
            Denied::NoToken | Denied::WrongToken => StatusCode::FORBIDDEN,
            Denied::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Denied::NoToken => "token_required",
            Denied::WrongToken => "invalid_token",
            Denied::Unavailable => "storage_unavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Denied::NoToken => "this room is private: open it with its edit or view link",
            Denied::WrongToken => "this link's token does not open this room",
            Denied::Unavailable => "the server cannot check this room's links now; try again",
        }
    }

    /// The JSON answer of an API route or a refused WebSocket upgrade.
    pub fn json(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        if self == Denied::Unavailable {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(json!({"error": self.code(), "message": self.message()}))
    }
}

/// What the store keeps of `room`'s access (`None`: a public room), or why it could not say in
/// time.
pub async fn lookup(room: &str, state: &AppState) -> Result<Option<RoomAccess>, Denied> {
    let lookup = state.store.room_access(room);
    match tokio::time::timeout(ACCESS_ANSWER_TIMEOUT, lookup).await {
        Ok(Ok(access)) => Ok(access),
        Ok(Err(err)) => {
            log::error!("room={room}: cannot tell whether it is private: {err}");
            Err(Denied::Unavailable)
        }
        Err(_) => {
            log::error!("room={room}: no answer in time on whether it is private");
            Err(Denied::Unavailable)
        }
    }
}

/// What `req` may do in `room` (a valid room name).
pub async fn check(room: &str, req: &HttpRequest, state: &AppState) -> Result<Access, Denied> {
    let Some(access) = lookup(room, state).await? else {
        return Ok(Access::Public);
    };
    let token = presented_token(req).ok_or(Denied::NoToken)?;
    access
        .hashes
        .role_of(&token)
        .map(Access::Private)
        .ok_or(Denied::WrongToken)
}

fn api_error(status: StatusCode, error: &str, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status != StatusCode::INTERNAL_SERVER_ERROR {
        response.insert_header((header::RETRY_AFTER, "60"));
    }
    response.json(json!({"error": error, "message": message}))
}

/// `POST /api/rooms`: a new private room; 201 with its name, tokens and links (the only time the
/// tokens are ever sent: the store keeps their digests).
pub async fn create_room(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = state.admission.check_origin(&req) {
        state
            .stats
            .refusals
            .with_label_values(&[refusal.code()])
            .inc();
        return HttpResponse::Forbidden().json(json!({
            "error": refusal.code(),
            "message": refusal.message(),
        }));
    }
    let client = ClientAddr::of(&req, &state.settings.trusted_proxies);
    if !state.room_creations.allow(client.ip) {
        state
            .stats
            .refusals
            .with_label_values(&["too_many_rooms_created"])
            .inc();
        return api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_rooms_created",
            "too many private rooms created from your address; try again in a minute",
        );
    }
    for _ in 0..NAME_ATTEMPTS {
        let created = match NewPrivateRoom::generate() {
            Ok(created) => created,
            Err(err) => {
                log::error!("cannot create a private room: {err}");
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_randomness",
                    "the server cannot make secure links now",
                );
            }
        };
        let room: Arc<str> = Arc::from(created.room.as_str());
        let recorded = state.store.create_private_room(room, created.hashes);
        match tokio::time::timeout(ACCESS_ANSWER_TIMEOUT, recorded).await {
            Ok(Ok(Creation::Created)) => return created_response(&created),
            Ok(Ok(Creation::NameTaken)) => continue,
            Ok(Err(StoreError::TooManyRooms { limit })) => {
                log::warn!("a private room was refused: {limit} rooms are stored");
                return api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_rooms",
                    "the server keeps as many rooms as it may; try again later",
                );
            }
            Ok(Err(err)) => {
                log::error!("cannot record a private room: {err}");
                return unavailable();
            }
            Err(_) => {
                log::error!("recording a private room took too long");
                return unavailable();
            }
        }
    }
    log::error!("{NAME_ATTEMPTS} random room names were all taken");
    unavailable()
}

fn unavailable() -> HttpResponse {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the server cannot record a new room now; try again",
    )
}

/// A room's page with `token` in its fragment: the link a token is shared as. Browsers never send
/// a fragment, so no request line, proxy log or history entry of the server's holds the token.
pub fn room_url(room: &str, token: &str) -> String {
    format!("/r/{room}#token={token}")
}

fn created_response(created: &NewPrivateRoom) -> HttpResponse {
    let room = &created.room;
    log::info!("room={room} created as a private room");
    HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::LOCATION, format!("/r/{room}")))
        .json(json!({
            "room": room,
            "ownerToken": created.owner_token,
            "editToken": created.links.edit_token,
            "viewToken": created.links.view_token,
            "ownerUrl": room_url(room, &created.owner_token),
            "editUrl": room_url(room, &created.links.edit_token),
            "viewUrl": room_url(room, &created.links.view_token),
        }))
}
