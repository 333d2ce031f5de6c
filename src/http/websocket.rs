//! The WebSocket upgrade: takes an upgraded connection's socket from actix-http and hands it to a
//! new `WsSession` actor.
//!
//! Why not actix-web-actors (or actix-ws): their sessions keep running inside actix-http's HTTP/1
//! dispatcher, which holds an 8 KiB read buffer and an 8 KiB write buffer for the whole life of the
//! connection, 16 of the 22.5 KiB an idle connection cost (heaptrack). actix-http gives an
//! `upgrade` service the socket itself, with buffers the session then sizes for a canvas.
//!
//! A plain TCP socket then leaves the HTTP worker for the thread of its room (see
//! `Admitted::start_near_room`): the worker only ever speaks HTTP.
//!
//! This module decides nothing about who may connect: every WebSocket upgrade request goes through
//! the same actix-web `App` as any other request (room names, admission, the handshake, headers),
//! and only a 101 that the App answered with an admitted session takes the socket. It must never
//! write to the socket after the 101: from then on it belongs to the session.

use std::cell::RefCell;
use std::rc::Rc;

use actix_codec::{AsyncRead, AsyncWrite, Framed, FramedParts};
use actix_http::body::{BoxBody, MessageBody};
use actix_http::h1::{Codec, SendResponse};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_service::{fn_service, Service, ServiceFactory};
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::{HttpMessage, HttpRequest};
use bytes::Bytes;
use tokio::net::TcpStream;

use crate::session::Admitted;

/// Where the App leaves the session it admitted, for the upgrade to start once the 101 is out.
/// Only requests that came through the upgrade carry one.
#[derive(Clone, Default)]
pub struct SessionSlot(Rc<RefCell<Option<Admitted>>>);

impl SessionSlot {
    /// The slot of an upgrade request, or `None` for a request that cannot be upgraded (one that
    /// announces a body, for example, is handled as plain HTTP).
    pub fn of(req: &HttpRequest) -> Option<SessionSlot> {
        req.extensions().get::<SessionSlot>().cloned()
    }

    pub fn fill(&self, admitted: Admitted) {
        *self.0.borrow_mut() = Some(admitted);
    }

    fn take(&self) -> Option<Admitted> {
        self.0.borrow_mut().take()
    }
}

/// Takes an upgraded socket off the worker thread that accepted it, so that its session can run
/// on its room's thread; `Err(socket)` for a socket that must stay where it is.
pub type Detach<T> = fn(T) -> Result<std::io::Result<std::net::TcpStream>, T>;

/// A plain TCP socket leaves this thread's reactor as a std socket (still non-blocking).
pub fn detach_tcp(socket: TcpStream) -> Result<std::io::Result<std::net::TcpStream>, TcpStream> {
    Ok(socket.into_std())
}

/// Registers a detached TCP socket with the reactor of the thread it arrived on, and starts its
/// session there.
fn begin_tcp(
    admitted: Admitted,
    socket: std::net::TcpStream,
    read_ahead: &[u8],
) -> std::io::Result<()> {
    admitted.start_tcp(TcpStream::from_std(socket)?, read_ahead);
    Ok(())
}

/// A TLS stream stays on its worker: its session state lives with it and cannot be moved apart
/// from the socket. Its session's deliveries cross threads, as every session's did before.
pub fn stay<T>(socket: T) -> Result<std::io::Result<std::net::TcpStream>, T> {
    Err(socket)
}

/// The `upgrade` service for actix-http, one per worker. `app` makes the same App (as a service
/// factory) that serves every other request.
pub fn upgrade_service<T, F, S, B>(
    app: F,
    detach: Detach<T>,
) -> impl ServiceFactory<
    (Request, Framed<T, Codec>),
    Config = (),
    Response = (),
    Error = actix_http::Error,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn() -> S + Clone + 'static,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    actix_service::fn_factory(move || {
        let app = app();
        async move {
            let app = Rc::new(app.new_service(AppConfig::default()).await?);
            Ok::<_, ()>(fn_service(move |(req, framed)| {
                upgrade(app.clone(), req, framed, detach)
            }))
        }
    })
}

/// Asks the App about the upgrade request; carries out its 101 (the socket goes to the admitted
/// session), or writes any other answer and closes the connection.
async fn upgrade<T, S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<T, Codec>,
    detach: Detach<T>,
) -> Result<(), actix_http::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let slot = SessionSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response: Response<BoxBody> = match app.call(req).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(error) => error.error_response().into(),
    };
    match slot.take() {
        Some(admitted) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let framed = SendResponse::new(framed, response.drop_body()).await?;
            // The HTTP side's read and write buffers (8 KiB each) go now, not after the wait for
            // the room's thread: a join storm would hold them for every connection in flight.
            let FramedParts { io, read_buf, .. } = framed.into_parts();
            let read_ahead = Bytes::copy_from_slice(&read_buf);
            drop(read_buf);
            match detach(io) {
                Ok(Ok(socket)) => {
                    admitted
                        .start_near_room(socket, begin_tcp, read_ahead)
                        .await;
                }
                Ok(Err(error)) => log::warn!("an upgraded socket could not be detached: {error}"),
                Err(io) => {
                    admitted.start(io, &read_ahead);
                }
            }
        }
        _ => {
            let (mut response, body) = response.into_parts();
            let Ok(body) = actix_http::body::to_bytes(body).await else {
                return Ok(());
            };
            // The dispatcher has let go of this connection: it cannot serve another request.
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            SendResponse::new(framed, response.set_body(body)).await?;
        }
    }
    Ok(())
}
