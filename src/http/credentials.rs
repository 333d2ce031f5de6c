//! Where a request carries its secrets: a private room's token and the browser's undo secret
//! (`author`), and the WebSocket subprotocol the page offers them in.
//!
//! A token is looked for, in this order, in `Authorization: Bearer TOKEN` (non-browser clients,
//! on the upgrade and on `canvas.png`), in a `Sec-WebSocket-Protocol` value `livecanvas.token.TOKEN`
//! (the page: a browser cannot set headers on a WebSocket, and no proxy logs this header), and in
//! `?token=` (old links). Headers keep secrets out of request lines, which proxies, browsers'
//! histories and analytics record. This module only finds secrets; what they allow is decided in
//! `private` and `access`. It must never log, echo or store what it finds.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::{web, HttpRequest};

/// The subprotocol the page always offers, and the one the server answers with when offered:
/// RFC 6455 has a browser fail a connection whose offered subprotocols got no answer.
pub const SUBPROTOCOL: &str = "livecanvas";
/// A subprotocol value carrying a private room's token: `livecanvas.token.TOKEN`.
const TOKEN_SUBPROTOCOL_PREFIX: &str = "livecanvas.token.";
/// A subprotocol value carrying the browser's undo secret: `livecanvas.author.SECRET`.
const AUTHOR_SUBPROTOCOL_PREFIX: &str = "livecanvas.author.";

/// `?token=` and `?author=` of old links and of clients that still use them.
#[derive(serde::Deserialize)]
struct SecretQuery {
    token: Option<String>,
    author: Option<String>,
}

fn query_secrets(req: &HttpRequest) -> Option<SecretQuery> {
    web::Query::<SecretQuery>::from_query(req.query_string())
        .ok()
        .map(web::Query::into_inner)
}

/// The values of every `Sec-WebSocket-Protocol` header, in order.
fn offered_subprotocols(req: &HttpRequest) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// The token of `Authorization: Bearer TOKEN`, if any (the scheme's name in any case, as RFC 7235
/// has it): the only place the owner's and the operator's HTTP calls carry theirs.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token `req` presents, if any: Bearer, then the subprotocol, then `?token=`.
pub fn presented_token(req: &HttpRequest) -> Option<Cow<'_, str>> {
    let token = bearer_token(req)
        .map(Cow::Borrowed)
        .or_else(|| {
            offered_subprotocols(req)
                .find_map(|offered| offered.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
                .map(Cow::Borrowed)
        })
        .or_else(|| query_secrets(req)?.token.map(Cow::Owned))?;
    (!token.is_empty()).then_some(token)
}

/// The undo secret `req` presents, if any: the subprotocol, then `?author=`.
pub fn presented_author(req: &HttpRequest) -> Option<Cow<'_, str>> {
    offered_subprotocols(req)
        .find_map(|offered| offered.strip_prefix(AUTHOR_SUBPROTOCOL_PREFIX))
        .map(Cow::Borrowed)
        .or_else(|| query_secrets(req)?.author.map(Cow::Owned))
}

/// Whether the client offered [`SUBPROTOCOL`]: the server must then answer with it, and may
/// refuse the connection with a close code the page understands instead of an HTTP status it
/// cannot read.
pub fn offers_subprotocol(req: &HttpRequest) -> bool {
    offered_subprotocols(req).any(|offered| offered == SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_bearer_token_comes_first() {
        let req = TestRequest::get()
            .uri("/ws/r?token=from-query")
            .insert_header((header::AUTHORIZATION, "Bearer from-header"))
            .insert_header((
                header::SEC_WEBSOCKET_PROTOCOL,
                "livecanvas, livecanvas.token.from-protocol",
            ))
            .to_http_request();
        assert_eq!(presented_token(&req).as_deref(), Some("from-header"));
    }

    #[test]
    fn the_subprotocol_token_comes_before_the_query() {
        let req = TestRequest::get()
            .uri("/ws/r?token=from-query")
            .insert_header((
                header::SEC_WEBSOCKET_PROTOCOL,
                "livecanvas, livecanvas.author.secret-of-sixteen, livecanvas.token.abc",
            ))
            .to_http_request();
        assert_eq!(presented_token(&req).as_deref(), Some("abc"));
        assert_eq!(presented_author(&req).as_deref(), Some("secret-of-sixteen"));
        assert!(offers_subprotocol(&req));
    }

    #[test]
    fn old_links_carry_the_token_in_the_query() {
        let req = TestRequest::get()
            .uri("/ws/r?batch=1&token=abc&author=xyz")
            .to_http_request();
        assert_eq!(presented_token(&req).as_deref(), Some("abc"));
        assert_eq!(presented_author(&req).as_deref(), Some("xyz"));
        assert!(!offers_subprotocol(&req));
    }

    #[test]
    fn no_token_and_empty_tokens_are_none() {
        let none = TestRequest::get().uri("/ws/r").to_http_request();
        assert!(presented_token(&none).is_none());
        let empty = TestRequest::get().uri("/ws/r?token=").to_http_request();
        assert!(presented_token(&empty).is_none());
        let basic = TestRequest::get()
            .insert_header((header::AUTHORIZATION, "Basic dXNlcjpwYXNz"))
            .to_http_request();
        assert!(presented_token(&basic).is_none());
    }
}
