//! The client address that per-IP rate limits count against.
//!
//! By default it is the TCP peer. Behind proxies, the forwarding headers (`X-Forwarded-For`,
//! else the `for=` parameters of RFC 7239 `Forwarded`) are read only when the peer is a
//! trusted proxy, and then from the right: every proxy appends the address it received the
//! request from, so the entries a client sends itself are on the left and the rightmost
//! entry that is not a trusted proxy is the client. (The leftmost entry is whatever the
//! client wrote.)
//!
//! - `[rate_limit] trusted_proxies = ["10.0.0.0/8", …]`: peers and hops in these networks are
//!   proxies; the first hop from the right outside them is the client.
//! - `trust_forwarded_for = true` without `trusted_proxies` (deprecated): the peer is taken to
//!   be the one proxy in front, so its entry (the rightmost) is the client.
//!
//! An unparsable or obfuscated hop (`unknown`, `_hidden`) ends the walk at the last trusted
//! address seen (the peer at first): its budget is shared rather than handed to a value the
//! client may have chosen.
//!
//! [`bucket`] groups IPv6 addresses per /64 (one subscriber usually holds a whole /64, so
//! per-address budgets would be unlimited); IPv4-mapped IPv6 addresses count as IPv4.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// Most forwarding entries looked at, from the right (a longer chain ends at the last
/// trusted address).
const MAX_HOPS: usize = 32;

/// How the client address of a request is found (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    /// Read the forwarding headers at all.
    forwarded: bool,
    /// Proxies whose entries are believed; empty with `forwarded` = only the peer.
    trusted: Vec<IpNet>,
}

impl ClientIp {
    /// The TCP peer, headers ignored.
    pub fn peer_only() -> Self {
        ClientIp::default()
    }

    /// From `[rate_limit]`: `trusted_proxies` (already validated: unparsable entries are
    /// skipped) and the deprecated `trust_forwarded_for`.
    pub fn new(trusted_proxies: &[String], trust_forwarded_for: bool) -> Self {
        let trusted: Vec<IpNet> = trusted_proxies
            .iter()
            .filter_map(|s| parse_net(s))
            .collect();
        ClientIp {
            forwarded: trust_forwarded_for || !trusted.is_empty(),
            trusted,
        }
    }

    /// Whether forwarding headers are read at all.
    pub fn reads_headers(&self) -> bool {
        self.forwarded
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `headers`; `None` without a
    /// peer address.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.forwarded || !(self.trusted.is_empty() || self.is_trusted(peer)) {
            return Some(peer);
        }
        let hops = forwarded_hops(headers);
        let mut last = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            match hop {
                Some(ip) => {
                    let ip = ip.to_canonical();
                    if !self.is_trusted(ip) {
                        return Some(ip);
                    }
                    last = ip;
                }
                None => return Some(last),
            }
        }
        Some(last)
    }
}

/// A network (`10.0.0.0/8`, `2001:db8::/32`) or a single address (`10.1.2.3`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The forwarding entries of `headers`, left to right: every `X-Forwarded-For` line, or when
/// there is none the `for=` of every `Forwarded` element. `None` for an entry that is not an
/// address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(|e| parse_ip(e.trim())).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all("forwarded")
        .flat_map(|v| match v.to_str() {
            Ok(s) => s
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_ip(v.trim().trim_matches('"')))
                    })
                })
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// A bare IP, `ip:port`, `[v6]` or `[v6]:port`.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| v6.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The rate-limit bucket of a client address: the IPv4 address itself, the /64 network of
/// an IPv6 address (IPv4-mapped addresses count as IPv4).
pub fn bucket(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 64)
            .expect("64 is a valid IPv6 prefix")
            .trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_parse_with_or_without_port() {
        assert_eq!(parse_ip("10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip("10.1.2.3:5555"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip("[::1]:80"), Some(ip("::1")));
        assert_eq!(parse_ip("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert!(parse_net("10.0.0.0/33").is_none());
    }

    #[test]
    fn headers_are_ignored_by_default_and_from_untrusted_peers() {
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4")]);
        let peer = Some(ip("127.0.0.1"));
        assert_eq!(
            ClientIp::peer_only().resolve(peer, &spoof),
            Some(ip("127.0.0.1"))
        );
        let behind_lb = ClientIp::new(&["10.0.0.0/8".into()], false);
        assert_eq!(behind_lb.resolve(peer, &spoof), Some(ip("127.0.0.1")));
        assert_eq!(behind_lb.resolve(None, &spoof), None);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let c = ClientIp::new(&["10.0.0.0/8".into(), "192.168.1.1".into()], false);
        let peer = Some(ip("10.0.0.9"));
        // The client wrote 6.6.6.6; the first proxy appended the client's real address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.3")]);
        assert_eq!(c.resolve(peer, &h), Some(ip("203.0.113.7")));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7, 192.168.1.1"),
        ]);
        assert_eq!(c.resolve(peer, &h), Some(ip("203.0.113.7")));
        // Only proxies: the leftmost proxy is as far as we can see.
        let h = headers(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(c.resolve(peer, &h), Some(ip("10.0.0.1")));
        // Garbage ends the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, nonsense, 10.0.0.2")]);
        assert_eq!(c.resolve(peer, &h), Some(ip("10.0.0.2")));
        // No header: the peer.
        assert_eq!(c.resolve(peer, &HeaderMap::new()), Some(ip("10.0.0.9")));
    }

    #[test]
    fn forwarded_header_is_read_when_there_is_no_x_forwarded_for() {
        let c = ClientIp::new(&["10.0.0.0/8".into()], false);
        let peer = Some(ip("10.0.0.9"));
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3",
        )]);
        assert_eq!(c.resolve(peer, &h), Some(ip("2001:db8::7")));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(c.resolve(peer, &h), Some(ip("10.0.0.9")));
    }

    #[test]
    fn deprecated_trust_forwarded_for_takes_the_proxy_entry_not_the_leftmost() {
        let c = ClientIp::new(&[], true);
        let peer = Some(ip("127.0.0.1"));
        for spoof in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
            let h = headers(&[("x-forwarded-for", &format!("{spoof}, 203.0.113.7"))]);
            assert_eq!(c.resolve(peer, &h), Some(ip("203.0.113.7")));
        }
    }

    #[test]
    fn ipv6_buckets_are_per_64_and_mapped_v4_is_v4() {
        assert_eq!(
            bucket(ip("2001:db8:1:2:aaaa::1")),
            bucket(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(
            bucket(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(bucket(ip("::ffff:10.1.2.3")), bucket(ip("10.1.2.3")));
        assert_eq!(bucket(ip("10.1.2.3")).to_string(), "10.1.2.3/32");
    }
}
