//! Clients behind a reverse proxy: with `--trusted-proxies`, each client is counted at the address
//! the proxy forwarded for (a real HAProxy in front, `option forwardfor`), and nobody can choose
//! that address with a header of their own.
//!
//! Clients get addresses of their own by connecting from different loopback addresses
//! (127.0.0.2, 127.0.0.3); the proxy connects to the server from 127.0.0.1.

mod common;

use std::net::SocketAddr;

use common::{connect_from, send_raw_request, upgrade_request, Haproxy, Server};

const CLIENT_A: [u8; 4] = [127, 0, 0, 2];
const CLIENT_B: [u8; 4] = [127, 0, 0, 3];

/// One open connection per address, so that a second one from the same address is refused.
const ONE_PER_ADDRESS: [&str; 2] = ["--max-connections-per-ip", "1"];

/// Opens a WebSocket from `from` to `to` with extra header lines: the status, and the socket
/// (held open, so the connection counts).
fn upgrade_from(from: [u8; 4], to: SocketAddr, headers: &str) -> (u16, std::net::TcpStream) {
    let mut stream = connect_from(from, to);
    let (status, _) = send_raw_request(&mut stream, &upgrade_request("/ws/proxied", headers));
    (status, stream)
}

fn room_creation_from(from: [u8; 4], to: SocketAddr) -> u16 {
    let mut stream = connect_from(from, to);
    let request = "POST /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\
                   Connection: close\r\n\r\n";
    send_raw_request(&mut stream, request).0
}

#[test]
fn two_clients_behind_the_proxy_are_limited_separately() {
    let server =
        Server::start_with(&[&ONE_PER_ADDRESS[..], &["--trusted-proxies", "127.0.0.1"]].concat());
    let proxy = Haproxy::start(server.addr, &[]);
    let (a, _a_socket) = upgrade_from(CLIENT_A, proxy.addr(), "");
    assert_eq!(a, 101, "the first client's connection");
    let (a_again, _) = upgrade_from(CLIENT_A, proxy.addr(), "");
    assert_eq!(
        a_again, 429,
        "a second connection from the first client's address"
    );
    let (b, _b_socket) = upgrade_from(CLIENT_B, proxy.addr(), "");
    assert_eq!(
        b, 101,
        "another client behind the same proxy has a limit of its own"
    );
}

#[test]
fn room_creation_is_limited_per_client_behind_the_proxy() {
    let server = Server::start_with(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--room-creation-burst",
        "1",
        "--room-creations-per-minute",
        "1",
    ]);
    let proxy = Haproxy::start(server.addr, &[]);
    assert_eq!(room_creation_from(CLIENT_A, proxy.addr()), 201);
    assert_eq!(room_creation_from(CLIENT_A, proxy.addr()), 429);
    assert_eq!(room_creation_from(CLIENT_B, proxy.addr()), 201);
}

#[test]
fn without_trusted_proxies_everyone_behind_the_proxy_is_one_address() {
    let server = Server::start_with(&ONE_PER_ADDRESS);
    let proxy = Haproxy::start(server.addr, &[]);
    let (a, _a_socket) = upgrade_from(CLIENT_A, proxy.addr(), "");
    assert_eq!(a, 101);
    let (b, _) = upgrade_from(CLIENT_B, proxy.addr(), "");
    assert_eq!(
        b, 429,
        "the proxy's address is everyone's when it is not trusted"
    );
}

#[test]
fn a_forged_header_through_the_proxy_does_not_change_the_address() {
    let server =
        Server::start_with(&[&ONE_PER_ADDRESS[..], &["--trusted-proxies", "127.0.0.1"]].concat());
    let proxy = Haproxy::start(server.addr, &[]);
    let (first, _socket) =
        upgrade_from(CLIENT_A, proxy.addr(), "X-Forwarded-For: 198.51.100.1\r\n");
    assert_eq!(first, 101);
    // HAProxy appends the real address after the forged one: the right-most untrusted entry.
    let (second, _) = upgrade_from(CLIENT_A, proxy.addr(), "X-Forwarded-For: 198.51.100.2\r\n");
    assert_eq!(
        second, 429,
        "a forged X-Forwarded-For must not give a new address"
    );
}

#[test]
fn a_client_that_is_no_trusted_proxy_cannot_choose_its_address() {
    // The server trusts 127.0.0.1 only; this client connects from 127.0.0.2 with its own header.
    let server =
        Server::start_with(&[&ONE_PER_ADDRESS[..], &["--trusted-proxies", "127.0.0.1"]].concat());
    let (first, _socket) = upgrade_from(CLIENT_A, server.addr, "X-Forwarded-For: 198.51.100.1\r\n");
    assert_eq!(first, 101);
    let (second, _) = upgrade_from(CLIENT_A, server.addr, "X-Forwarded-For: 198.51.100.2\r\n");
    assert_eq!(
        second, 429,
        "X-Forwarded-For from an untrusted peer must be ignored"
    );
}

#[test]
fn a_trusted_proxy_list_that_is_no_list_of_addresses_is_refused_by_name() {
    let (code, stderr) = common::run_binary(&[
        "--frontend-dir",
        &common::frontend_dir(),
        "--trusted-proxies",
        "10.0.0.0/8,haproxy",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--trusted-proxies") && stderr.contains("haproxy"),
        "{stderr}"
    );
}

// ---- the PROXY protocol ----

#[test]
fn with_the_proxy_protocol_two_clients_behind_haproxy_are_limited_separately() {
    let server = Server::start_with(&[&ONE_PER_ADDRESS[..], &["--proxy-protocol"]].concat());
    let proxy = Haproxy::start_with(server.addr, &[], "send-proxy-v2");
    let (a, _a_socket) = upgrade_from(CLIENT_A, proxy.addr(), "");
    assert_eq!(a, 101, "the first client's connection");
    let (a_again, _) = upgrade_from(CLIENT_A, proxy.addr(), "");
    assert_eq!(
        a_again, 429,
        "a second connection from the first client's address"
    );
    let (b, _b_socket) = upgrade_from(CLIENT_B, proxy.addr(), "");
    assert_eq!(
        b, 101,
        "another client behind the same proxy has a limit of its own"
    );
}

#[test]
fn with_the_proxy_protocol_a_connection_without_a_header_is_closed_unanswered() {
    use std::io::{Read, Write};
    let server = Server::start_with(&["--proxy-protocol"]);
    let mut stream = connect_from(CLIENT_A, server.addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send a request");
    let mut answer = Vec::new();
    // The server closes the connection: the read ends (an error is a reset, also an end).
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "answered without a PROXY header: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn the_proxy_protocol_and_tls_on_the_same_listener_are_refused_by_name() {
    let (code, stderr) = common::run_binary(&[
        "--frontend-dir",
        &common::frontend_dir(),
        "--proxy-protocol",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--proxy-protocol"), "{stderr}");
}
