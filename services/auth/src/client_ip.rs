//! The client address the login rate limit counts: the TCP peer, or, when
//! (and only when) the peer is one of the trusted proxies
//! (`TRUSTED_PROXIES`, a comma-separated CIDR list, empty by default), the
//! nearest `X-Forwarded-For` entry that is not itself a trusted proxy,
//! read from the right: entries left of it were written by the client and
//! prove nothing.

use std::net::IpAddr;

use axum::http::HeaderMap;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// One CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn parse(text: &str) -> Result<Block, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has an invalid prefix length"))?,
            None => max,
        };
        Ok(Block { network, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// An IPv4 address mapped into IPv6 compares as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// `10.0.0.0/8, 192.168.1.7` (an address alone is a /32 or /128).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let blocks = list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Block::parse)
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(peer))
    }

    /// The address a request is counted under.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let Some(chain) = headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()) else {
            return peer;
        };
        let mut nearest = peer;
        for hop in chain.rsplit(',') {
            let Ok(address) = hop.trim().parse::<IpAddr>().map(canonical) else {
                // Garbled: trust nothing further left.
                return nearest;
            };
            if !self.trusts(address) {
                return address;
            }
            nearest = address;
        }
        nearest
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let blocks: Vec<String> = self.blocks.iter().map(Block::to_string).collect();
        f.write_str(&blocks.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FOR, value.parse().unwrap());
        headers
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let proxies = TrustedProxies::default();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(proxies.client_ip(peer, &forwarded("198.51.100.1")), peer);
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_first_forwarded_entry() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let client = proxies.client_ip(peer, &forwarded("198.51.100.1, 10.9.9.9"));
        assert_eq!(client, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert!(proxies.trusts("192.168.1.7".parse().unwrap()));
        assert!(!proxies.trusts("192.168.1.8".parse().unwrap()));
        // A garbled header falls back to the peer.
        assert_eq!(proxies.client_ip(peer, &forwarded("nonsense")), peer);
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_prepending_entries() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let client = proxies.client_ip(peer, &forwarded("198.51.100.7, 203.0.113.7"));
        assert_eq!(client, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn prefixes_match_bit_by_bit_and_mapped_addresses_count_as_ipv4() {
        let proxies = TrustedProxies::parse("172.16.0.0/12,fd00::/8").unwrap();
        assert!(proxies.trusts("172.31.255.255".parse().unwrap()));
        assert!(!proxies.trusts("172.32.0.0".parse().unwrap()));
        assert!(proxies.trusts("fd12::1".parse().unwrap()));
        assert!(proxies.trusts("::ffff:172.16.0.1".parse().unwrap()));
        assert_eq!(proxies.to_string(), "172.16.0.0/12,fd00::/8");
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("not-an-ip").is_err());
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
    }
}
