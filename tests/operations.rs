//! Running it for real: readiness, metrics, graceful stop, TLS, log format, health checks.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{draw_at, run_binary, Client, Server};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn get(url: &str) -> ureq::Response {
    match ureq::get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("GET {url}: {err}"),
    }
}

async fn get_text(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let response = get(&url);
        (response.status(), response.into_string().expect("a body"))
    })
    .await
    .expect("the request task")
}

/// The value of one sample line (`name{labels} value`) in a Prometheus exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn readyz_answers_200_while_serving() {
    let server = Server::start();
    let response = get(&server.http_url("/readyz"));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn metrics_follow_connections_and_draws() {
    let server = Server::start();
    let (status, before) = get_text(server.http_url("/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "livecanvas_connections"), 0.0);

    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    for i in 0..5 {
        alice.send_json(draw_at(f64::from(i), 1.0)).await;
    }
    for _ in 0..5 {
        bob.next_of_type("draw").await;
    }
    alice.send_text("not json").await;
    alice.next_of_type("error").await;

    let (_, after) = get_text(server.http_url("/metrics")).await;
    assert_eq!(sample(&after, "livecanvas_connections"), 2.0);
    assert_eq!(sample(&after, "livecanvas_rooms"), 1.0);
    assert_eq!(
        sample(&after, "livecanvas_messages_in_total{type=\"draw\"}"),
        5.0
    );
    assert_eq!(
        sample(&after, "livecanvas_messages_out_total{type=\"draw\"}"),
        5.0
    );
    assert_eq!(
        sample(&after, "livecanvas_errors_total{code=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(sample(&after, "livecanvas_broadcast_seconds_count"), 5.0);
    assert!(
        sample(&after, "livecanvas_bytes_in_total") > sample(&before, "livecanvas_bytes_in_total")
    );
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let server = Server::start_with(&["--metrics-bind", "127.0.0.1:0"]);
    let metrics_addr = server
        .metrics_addr
        .expect("the metrics address is announced");
    let (status, body) = get_text(format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("livecanvas_up 1"));
    assert_eq!(
        get_text(format!("http://{metrics_addr}/readyz")).await.0,
        200
    );
    // Not on the public listener, then.
    assert_eq!(get_text(server.http_url("/metrics")).await.0, 404);
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_after_delivering_what_was_relayed() {
    let mut server = Server::start_with(&["--shutdown-grace", "5s"]);
    let mut alice = server.join("main").await;
    let mut bob = server.join("main").await;
    let mut carol = server.join("main").await;
    for i in 0..50 {
        alice.send_json(draw_at(f64::from(i), 2.0)).await;
    }
    // Carol has all 50: the room relayed them, so they were queued for Bob too.
    for i in 0..50 {
        assert_eq!(carol.next_of_type("draw").await["startX"], f64::from(i));
    }
    server.terminate();
    for i in 0..50 {
        assert_eq!(bob.next_of_type("draw").await["startX"], f64::from(i));
    }
    for client in [&mut alice, &mut bob, &mut carol] {
        let close = client.expect_close().await;
        assert_eq!(close.code, CloseCode::Away);
        assert!(!close.reason.is_empty());
    }
    let status = tokio::task::spawn_blocking(move || server.wait_for_exit(Duration::from_secs(7)))
        .await
        .expect("the wait task");
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

#[test]
fn sigterm_with_no_clients_exits_at_once_with_success() {
    let mut server = Server::start();
    server.terminate();
    let status = server.wait_for_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

/// A self-signed certificate for 127.0.0.1, written to a fresh directory.
struct TestCertificate {
    dir: std::path::PathBuf,
    der: Vec<u8>,
}

impl TestCertificate {
    fn new(name: &str) -> TestCertificate {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("a certificate");
        let dir =
            std::env::temp_dir().join(format!("livecanvas-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key");
        TestCertificate {
            dir,
            der: certified.cert.der().to_vec(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_wss_client_connects_with_tls() {
    let certificate = TestCertificate::new("wss");
    let server = Server::start_with(&[
        "--tls-cert",
        &certificate.path("cert.pem"),
        "--tls-key",
        &certificate.path("key.pem"),
    ]);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            certificate.der.clone(),
        ))
        .expect("a root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://{}/ws/secure", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))),
    )
    .await
    .expect("the TLS upgrade succeeds");
    let mut client = Client {
        ws,
        protocol: None,
        id: String::new(),
        welcome: serde_json::Value::Null,
        roster: Default::default(),
    };
    let welcome = client.next_json().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["room"], "secure");
}

#[test]
fn a_tls_certificate_without_a_key_is_refused_by_name() {
    let (code, stderr) = run_binary(&["--tls-cert", "/tmp/cert.pem"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[test]
fn an_unreadable_certificate_is_named_at_start_up() {
    let frontend = common::frontend_dir();
    let (code, stderr) = run_binary(&[
        "--bind",
        "127.0.0.1:0",
        "--frontend-dir",
        &frontend,
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let frontend = common::frontend_dir();
    let data = common::data_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livecanvas"))
        .env("LIVECANVAS_DATA_DIR", data.path())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--frontend-dir",
            &frontend,
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut line = String::new();
    let read = stderr.read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    assert!(read.is_ok_and(|n| n > 0), "no log line");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(entry["level"], "INFO");
    assert!(
        entry["message"].is_string() && entry["ts"].is_string(),
        "{entry}"
    );
}

#[test]
fn the_healthcheck_subcommand_passes_against_a_running_server() {
    let server = Server::start();
    let bind = server.addr.to_string();
    let (code, stderr) = run_binary(&["--bind", &bind, "healthcheck"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_healthcheck_subcommand_fails_when_nothing_answers() {
    let port = common::free_port();
    let bind = format!("127.0.0.1:{port}");
    let (code, stderr) = run_binary(&["--bind", &bind, "healthcheck", "--timeout", "1s"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&bind), "{stderr}");
}

/// A connection upgraded just before SIGTERM joins a room that opens after every room was told to
/// close: it must still get 1001, and the stop must not wait out its grace for it (it did: the
/// final commit was then skipped).
#[test]
fn a_join_racing_the_stop_is_told_1001_and_the_stop_does_not_wait_for_it() {
    use std::io::{Read, Write};
    let mut server = Server::start_with(&["--shutdown-grace", "8s"]);
    let mut socket = std::net::TcpStream::connect(server.addr).expect("connect");
    socket
        .write_all(
            b"GET /ws/racing HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("send the upgrade");
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).expect("the 101");
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let stopping = std::time::Instant::now();
    // At once (not through `kill(1)`, which takes long enough for the join to win the race).
    let pid = libc::pid_t::try_from(server.pid()).expect("a pid");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Read until the server's close frame (opcode 8) and its code, 1001.
    socket
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("a read timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let code = loop {
        let n = socket
            .read(&mut buf)
            .expect("the server closes before its grace ends");
        assert!(n > 0, "the connection ended without a close frame");
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = close_frame_at(&seen) {
            if seen.len() >= at + 4 {
                break u16::from_be_bytes([seen[at + 2], seen[at + 3]]);
            }
        }
    };
    assert_eq!(code, 1001);
    assert!(
        server.wait_for_exit(Duration::from_secs(8)).is_some(),
        "the server exits"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(6),
        "the stop waited {:?}, as if a connection were left open",
        stopping.elapsed()
    );
}

/// Where a server close frame (FIN + opcode 8, unmasked) starts in what the server sent, walking
/// its frames from the first (after the 101's headers were consumed, the rest begins at a frame).
fn close_frame_at(bytes: &[u8]) -> Option<usize> {
    let start = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut at = start;
    while at + 2 <= bytes.len() {
        let len = match bytes[at + 1] & 0x7f {
            126 if at + 4 <= bytes.len() => {
                4 + usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]))
            }
            127 => return None, // not sent before a close by this server
            126 => return None,
            n => 2 + usize::from(n),
        };
        if bytes[at] == 0x88 {
            return Some(at);
        }
        at += len;
    }
    None
}
