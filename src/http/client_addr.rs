//! The client's address: the TCP peer, or, behind a trusted reverse proxy, the address the proxy
//! says it forwarded for.
//!
//! This module owns `--trusted-proxies` and the one rule every per-address limit and log line
//! uses: when the TCP peer is a trusted proxy, the client is the right-most `X-Forwarded-For`
//! entry that is not itself a trusted proxy (each proxy appends the address it received from, so
//! only entries right of the first untrusted one were written by proxies we trust); otherwise
//! `X-Forwarded-For` is ignored, so that nobody can choose the address they are counted as. It
//! must never trust a header from a peer that is not a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::http::header::HeaderName;
use actix_web::HttpRequest;
use ipnet::IpNet;

/// `X-Forwarded-For`, as HAProxy's `option forwardfor` and nginx's
/// `$proxy_add_x_forwarded_for` write it.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`): addresses or networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`).
    fn from_str(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => IpNet::from(item.parse::<IpAddr>().map_err(|_| {
                    format!("{item:?} is not an IP address or a network like 10.0.0.0/8")
                })?),
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address given the TCP peer and the request's `X-Forwarded-For` values, in
    /// the order they came (several header lines count as one comma-separated list).
    pub fn client_of<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            // An entry a trusted proxy wrote but that is no address: the hop that wrote it is as
            // far as anything is known.
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        // Every hop is a trusted proxy (a health check from one, say): the left-most is it.
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Where a request came from, as limits and logs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the TCP peer, or the address a trusted proxy forwarded for.
    pub ip: IpAddr,
    /// The TCP peer, when there is one (an in-memory request has none).
    pub peer: Option<SocketAddr>,
}

impl ClientAddr {
    /// The client of `req` under `trusted`.
    pub fn of(req: &HttpRequest, trusted: &TrustedProxies) -> ClientAddr {
        let peer = req.peer_addr();
        let peer_ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
        let forwarded = req
            .headers()
            .get_all(X_FORWARDED_FOR)
            .filter_map(|value| value.to_str().ok());
        ClientAddr {
            ip: trusted.client_of(peer_ip, forwarded),
            peer,
        }
    }

    /// Whether the address came from a proxy's header rather than the TCP peer.
    fn forwarded(&self) -> bool {
        self.peer
            .is_none_or(|peer| peer.ip().to_canonical() != self.ip)
    }
}

impl std::fmt::Display for ClientAddr {
    /// `1.2.3.4:5678` for a direct client, `1.2.3.4 via 10.0.0.5:40000` behind a proxy.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(peer) if !self.forwarded() => write!(f, "{peer}"),
            Some(peer) => write!(f, "{} via {peer}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_are_read_and_anything_else_is_named() {
        let proxies = trusted("10.0.0.5, 192.168.0.0/16,::1");
        assert!(proxies.trusts(ip("10.0.0.5")));
        assert!(!proxies.trusts(ip("10.0.0.6")));
        assert!(proxies.trusts(ip("192.168.44.1")));
        assert!(proxies.trusts(ip("::1")));
        assert!(trusted("").is_empty());
        let err = "10.0.0.0/8,proxy.example"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(err.contains("proxy.example"), "{err}");
    }

    #[test]
    fn without_a_trusted_peer_the_header_is_ignored() {
        let proxies = trusted("10.0.0.5");
        let client = proxies.client_of(ip("203.0.113.9"), ["1.2.3.4"].into_iter());
        assert_eq!(client, ip("203.0.113.9"));
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client_of(ip("10.0.0.5"), ["1.2.3.4"].into_iter()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
        let proxies = trusted("10.0.0.0/8");
        // The client put a forged entry first; the proxy appended what it saw.
        let client = proxies.client_of(ip("10.0.0.5"), ["6.6.6.6, 198.51.100.7"].into_iter());
        assert_eq!(client, ip("198.51.100.7"));
        // Two trusted hops, on separate header lines.
        let client = proxies.client_of(
            ip("10.0.0.5"),
            ["6.6.6.6", "198.51.100.7, 10.1.2.3"].into_iter(),
        );
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let proxies = trusted("10.0.0.5");
        assert_eq!(
            proxies.client_of(ip("10.0.0.5"), std::iter::empty()),
            ip("10.0.0.5")
        );
        assert_eq!(
            proxies.client_of(ip("10.0.0.5"), ["10.0.0.5"].into_iter()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_hop_that_wrote_it() {
        let proxies = trusted("10.0.0.0/8");
        let client = proxies.client_of(ip("10.0.0.5"), ["1.2.3.4, unknown, 10.0.0.9"].into_iter());
        assert_eq!(client, ip("10.0.0.9"));
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_plain_addresses() {
        let proxies = trusted("127.0.0.1");
        assert_eq!(
            proxies.client_of(ip("::ffff:127.0.0.1"), ["[2001:db8::1]:443"].into_iter()),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client_of(ip("127.0.0.1"), ["192.0.2.1:5000"].into_iter()),
            ip("192.0.2.1")
        );
    }
}
