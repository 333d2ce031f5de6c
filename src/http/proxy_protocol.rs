//! The PROXY protocol, version 2 (`--proxy-protocol`): the binary header HAProxy's
//! `send-proxy-v2` writes before anything else on a connection, naming the client's address.
//!
//! This module owns reading that header off a new canvas connection: exactly its bytes (16, then
//! the length they announce), so that what follows is the client's HTTP, untouched; parsing is
//! the `ppp` crate's. A `PROXY` header gives the client's address, which then stands for the
//! connection's peer everywhere (limits, logs); a `LOCAL` one (a health check from the proxy
//! itself) leaves the TCP peer. It must never let a connection through without a valid header
//! when the option is on, and never wait for a header without a bound.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::v2::{Addresses, Command, Header};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a new connection may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The signature, version and command, family and length: what every v2 header starts with.
const FIXED_BYTES: usize = 16;
/// The v2 signature.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Most bytes of addresses and TLVs accepted after the fixed part (HAProxy sends a few dozen).
const MAX_VARIABLE_BYTES: usize = 4096;

/// Reads the header at the start of `io`: the client's address (`None`: a `LOCAL` header, or an
/// address family other than IP, so the TCP peer stands), or why the connection must be closed.
pub async fn read_client(io: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(io)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no PROXY protocol header within {}s",
            HEADER_TIMEOUT.as_secs()
        )),
    }
}

async fn read_header(io: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut bytes = vec![0u8; FIXED_BYTES];
    io.read_exact(&mut bytes)
        .await
        .map_err(|err| format!("reading the PROXY protocol header: {err}"))?;
    if bytes[..SIGNATURE.len()] != SIGNATURE {
        return Err("the connection does not start with a PROXY protocol v2 header".into());
    }
    let variable = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if variable > MAX_VARIABLE_BYTES {
        return Err(format!(
            "a PROXY protocol header of {variable} bytes is too long"
        ));
    }
    bytes.resize(FIXED_BYTES + variable, 0);
    io.read_exact(&mut bytes[FIXED_BYTES..])
        .await
        .map_err(|err| format!("reading the PROXY protocol header: {err}"))?;
    client_of(&bytes)
}

/// The client named by a whole header.
fn client_of(bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
    let header = Header::try_from(bytes)
        .map_err(|err| format!("an invalid PROXY protocol header: {err}"))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(v4) => Some(SocketAddr::new(
            IpAddr::V4(v4.source_address),
            v4.source_port,
        )),
        Addresses::IPv6(v6) => Some(SocketAddr::new(
            IpAddr::V6(v6.source_address),
            v6.source_port,
        )),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};

    fn header(command: Command, client: &str) -> Vec<u8> {
        let client: SocketAddr = client.parse().unwrap();
        let proxy: SocketAddr = if client.is_ipv4() {
            "10.0.0.5:8080".parse().unwrap()
        } else {
            "[2001:db8::5]:8080".parse().unwrap()
        };
        Builder::with_addresses(Version::Two | command, Protocol::Stream, (client, proxy))
            .build()
            .unwrap()
    }

    #[test]
    fn a_proxy_header_names_the_client() {
        let bytes = header(Command::Proxy, "198.51.100.7:40000");
        assert_eq!(
            client_of(&bytes),
            Ok(Some("198.51.100.7:40000".parse().unwrap()))
        );
        let bytes = header(Command::Proxy, "[2001:db8::1]:5");
        assert_eq!(
            client_of(&bytes),
            Ok(Some("[2001:db8::1]:5".parse().unwrap()))
        );
    }

    #[test]
    fn a_local_header_leaves_the_peer() {
        let bytes = header(Command::Local, "198.51.100.7:40000");
        assert_eq!(client_of(&bytes), Ok(None));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(client_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        let mut bytes = header(Command::Proxy, "198.51.100.7:40000");
        bytes[12] = 0x10; // version 1 in the version nibble
        assert!(client_of(&bytes).is_err());
    }
}
