//! The server must not go deaf after a crowd leaves: against one long-lived server, crowds of
//! thousands of clients in hundreds of rooms draw and then all leave at once, again and again;
//! after every wave a newcomer must be welcomed and have its stroke relayed within a second, the
//! health check must say so truthfully, and at the end SIGTERM must stop the process within its
//! grace period.
//!
//! Rooms checkpoint after 100 ms of quiet here, so that when a crowd leaves, most rooms have a
//! checkpoint in flight: the state in which the server used to wedge for good.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{draw_at, Client, Server, ONE_ADDRESS_CROWD};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

/// Waves of crowds arriving, drawing and leaving, on the same server process.
const WAVES: usize = 3;
const ROOMS: usize = 400;
const CLIENTS_PER_ROOM: usize = 6;
/// The first clients of each room draw; the others only read.
const SENDERS_PER_ROOM: usize = 2;
/// Strokes a second per sender: a stroke every third of a second, longer than the checkpoint
/// idle time, so that every room keeps checkpointing.
const STROKE_EVERY: Duration = Duration::from_millis(330);
const DRAW_FOR: Duration = Duration::from_secs(3);
/// Connection attempts in flight at once while a crowd arrives.
const CONNECTING_AT_ONCE: usize = 200;
/// What a newcomer must get after a crowd left.
const NEWCOMER_WITHIN: Duration = Duration::from_secs(1);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Only turns a hang into a failure.
const STEP: Duration = Duration::from_secs(60);

/// Beside `ONE_ADDRESS_CROWD`.
const SERVER_FLAGS: [&str; 12] = [
    "--checkpoint-idle",
    "100ms",
    "--shutdown-grace",
    "5s",
    // The crowd's pings are not what is tested; keep them out of the way.
    "--heartbeat-interval",
    "10s",
    "--client-timeout",
    "30s",
    "--max-queued-messages",
    "100000",
    "--max-rooms",
    "100000",
];

/// One member of a crowd: reads everything, draws if it is a sender, and leaves with a close
/// handshake when told to, as every member does at the same moment.
async fn member(
    url: String,
    sender: bool,
    gate: Arc<Semaphore>,
    joined: mpsc::UnboundedSender<()>,
    mut leave: watch::Receiver<bool>,
) {
    let permit = gate.acquire_owned().await.expect("the gate stays open");
    let mut client = Client::join(&url).await;
    drop(permit);
    let _ = joined.send(());
    let (mut sink, mut stream) = client.ws.split();
    let mut strokes = interval(STROKE_EVERY);
    strokes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0.0;
    loop {
        tokio::select! {
            _ = leave.changed() => break,
            _ = strokes.tick(), if sender => {
                n += 1.0;
                let stroke = draw_at(n % 1500.0, 100.0).to_string();
                if sink.send(Message::text(stroke)).await.is_err() {
                    panic!("the server dropped a well-behaved drawer");
                }
            }
            message = stream.next() => {
                if !matches!(message, Some(Ok(_))) {
                    panic!("the server closed a well-behaved member: {message:?}");
                }
            }
        }
    }
    // Leave as a browser does: a close frame, then wait (briefly) for the server's.
    let _ = sink.send(Message::Close(None)).await;
    let _ = timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    client.ws = sink.reunite(stream).expect("the halves of one stream");
}

/// A crowd arrives in every room, draws for `DRAW_FOR`, and leaves all at once.
async fn crowd(server: &Server, wave: usize) {
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (leave, told) = watch::channel(false);
    let (joined, mut welcomed) = mpsc::unbounded_channel();
    let mut members = Vec::with_capacity(ROOMS * CLIENTS_PER_ROOM);
    for room in 0..ROOMS {
        let url = server.ws_url(&format!("wave{wave}-room{room}"));
        for index in 0..CLIENTS_PER_ROOM {
            members.push(tokio::spawn(member(
                url.clone(),
                index < SENDERS_PER_ROOM,
                gate.clone(),
                joined.clone(),
                told.clone(),
            )));
        }
    }
    let everyone_in = async {
        for _ in 0..members.len() {
            welcomed.recv().await.expect("every member is welcomed");
        }
    };
    timeout(STEP, everyone_in)
        .await
        .expect("the crowd connects");
    tokio::time::sleep(DRAW_FOR).await;
    leave.send(true).expect("members listen");
    for member in members {
        timeout(STEP, member)
            .await
            .expect("a member leaves in time")
            .expect("a member ran to the end without a fault");
    }
}

/// A newcomer pair in a fresh room: both welcomed within a second, and a stroke relayed.
async fn newcomers_are_served(server: &Server, wave: usize) {
    let room = format!("newcomer{wave}");
    let started = Instant::now();
    let mut alice = timeout(NEWCOMER_WITHIN, server.join(&room))
        .await
        .unwrap_or_else(|_| panic!("wave {wave}: no welcome within {NEWCOMER_WITHIN:?}"));
    let mut bob = timeout(NEWCOMER_WITHIN, server.join(&room))
        .await
        .unwrap_or_else(|_| panic!("wave {wave}: the second newcomer got no welcome"));
    alice.send_json(draw_at(321.0, 123.0)).await;
    let relayed = timeout(NEWCOMER_WITHIN, bob.next_of_type("draw"))
        .await
        .unwrap_or_else(|_| panic!("wave {wave}: the stroke was not relayed within a second"));
    assert_eq!(relayed["startX"], 321.0);
    eprintln!(
        "wave {wave}: newcomers welcomed and a stroke relayed in {:?}",
        started.elapsed()
    );
}

async fn healthz(server: &Server) -> (u16, String) {
    let url = server.http_url("/healthz");
    tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
        Ok(response) => (
            response.status(),
            response.into_string().unwrap_or_default(),
        ),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_string().unwrap_or_default())
        }
        Err(err) => (0, err.to_string()),
    })
    .await
    .expect("the request ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_each_crowd_leaves_a_newcomer_is_served_and_sigterm_stops_the_server() {
    let mut server = Server::start_with(&[&ONE_ADDRESS_CROWD[..], &SERVER_FLAGS[..]].concat());
    for wave in 0..WAVES {
        crowd(&server, wave).await;
        newcomers_are_served(&server, wave).await;
        let (status, body) = healthz(&server).await;
        assert_eq!(status, 200, "wave {wave}: /healthz after the crowd: {body}");
    }
    server.terminate();
    let exited = tokio::task::spawn_blocking(move || {
        let status = server.wait_for_exit(SHUTDOWN_GRACE + Duration::from_secs(2));
        (status, server)
    })
    .await
    .expect("waited");
    assert!(
        exited.0.is_some_and(|status| status.success()),
        "SIGTERM must stop the server within its grace period: {:?}",
        exited.0
    );
}
