//! A server at its open-file limit. Every WebSocket is a descriptor; the server admits only as many
//! as leave `RESERVED_DESCRIPTORS` for everything else, so a crowd larger than its descriptors
//! could hold gets its answer: 101 up to the limit, 503 `server_full` past it (never a time-out),
//! while `/healthz`, `/readyz` and `/metrics` keep answering, and a newcomer is admitted once the
//! crowd has left.

mod common;

use std::time::Duration;

use common::{Server, EVENT_DEADLINE, ONE_ADDRESS_CROWD};
use futures_util::StreamExt;
use livecanvas::RESERVED_DESCRIPTORS;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// WebSockets the server's descriptors leave room for beyond the reserve.
const CONNECTIONS_THAT_FIT: u64 = 40;
/// The server's open-file limit, soft and hard.
const SERVER_OPEN_FILES: u64 = RESERVED_DESCRIPTORS + CONNECTIONS_THAT_FIT;
/// More clients than the server has descriptors at all: a server that admitted WebSockets up to
/// its open-file limit would run out, and leave the rest (and its health check) unanswered.
const CROWD: u64 = SERVER_OPEN_FILES + 60;
/// Connection attempts in flight at once.
const CONNECTING_AT_ONCE: usize = 50;
/// Descriptors this test process needs besides the crowd's (its own server's pipe, HTTP checks).
const TEST_OWN_FILES: u64 = 100;
/// An upgrade is answered (101 or 503) within milliseconds; one that takes this long timed out.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How many rooms the crowd spreads over.
const ROOMS: u64 = 20;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one client of the crowd got.
enum Outcome {
    Admitted(Box<Socket>),
    Refused { status: u16, body: String },
    TimedOut,
    Failed(String),
}

async fn attempt(url: String) -> Outcome {
    match tokio::time::timeout(ANSWER_WITHIN, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((socket, _))) => Outcome::Admitted(Box::new(socket)),
        Ok(Err(WsError::Http(response))) => Outcome::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        },
        Ok(Err(other)) => Outcome::Failed(other.to_string()),
        Err(_) => Outcome::TimedOut,
    }
}

/// The crowd's outcomes, counted: the admitted sockets are kept open.
#[derive(Default)]
struct Tally {
    admitted: Vec<Socket>,
    server_full: usize,
    timed_out: usize,
    other: Vec<String>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Admitted(socket) => self.admitted.push(*socket),
            Outcome::Refused { status: 503, body } if body.contains("\"server_full\"") => {
                self.server_full += 1
            }
            Outcome::Refused { status, body } => self.other.push(format!("{status} {body}")),
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Failed(error) => self.other.push(error),
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} admitted, {} refused with server_full, {} timed out, {} other ({:?})",
            self.admitted.len(),
            self.server_full,
            self.timed_out,
            self.other.len(),
            self.other.iter().take(3).collect::<Vec<_>>()
        )
    }
}

/// `GET url`'s status within `ANSWER_WITHIN` (blocking), or why there was none.
fn status_within_deadline(url: &str) -> Result<u16, String> {
    match ureq::get(url).timeout(ANSWER_WITHIN).call() {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(status, _)) => Ok(status),
        Err(error) => Err(error.to_string()),
    }
}

/// `/healthz`'s count of open connections.
fn open_connections(server_url: &str) -> Option<u64> {
    ureq::get(server_url)
        .timeout(ANSWER_WITHIN)
        .call()
        .ok()?
        .into_json::<serde_json::Value>()
        .ok()?["connections"]
        .as_u64()
}

/// The crowd needs a descriptor per client in this process too.
fn raise_own_open_file_limit() {
    let needed = CROWD + TEST_OWN_FILES;
    let soft = rlimit::increase_nofile_limit(needed).expect("the open-file limit can be read");
    assert!(
        soft >= needed,
        "this test needs {needed} open files and may have only {soft}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_open_file_limit_clients_get_server_full_and_health_still_answers() {
    raise_own_open_file_limit();
    let server = Server::start_with_open_files(&ONE_ADDRESS_CROWD, SERVER_OPEN_FILES);

    let urls: Vec<String> = (0..CROWD)
        .map(|i| server.ws_url(&format!("crowd{}", i % ROOMS)))
        .collect();
    let mut tally = Tally::default();
    let mut outcomes = futures_util::stream::iter(urls.into_iter().map(attempt))
        .buffer_unordered(CONNECTING_AT_ONCE);
    while let Some(outcome) = outcomes.next().await {
        tally.add(outcome);
    }
    let summary = tally.summary();
    assert_eq!(
        tally.admitted.len() as u64,
        CONNECTIONS_THAT_FIT,
        "{summary}"
    );
    assert_eq!(
        tally.server_full as u64,
        CROWD - CONNECTIONS_THAT_FIT,
        "{summary}"
    );

    // The crowd still holds its connections.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let url = server.http_url(path);
        let status = tokio::task::spawn_blocking(move || status_within_deadline(&url))
            .await
            .expect("the request's thread");
        assert_eq!(status, Ok(200), "{path} while the server is full");
    }

    drop(tally);
    let healthz = server.http_url("/healthz");
    let left = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < EVENT_DEADLINE {
            if open_connections(&healthz) == Some(0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .await
    .expect("the polling thread");
    assert!(left, "the server still counts the crowd's connections");
    let newcomer = server.join("newcomer").await;
    assert_eq!(newcomer.welcome["type"], "welcome");
}
