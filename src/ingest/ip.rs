//! Source address checks: which address sent the request (trusting `X-Forwarded-For` only from
//! configured proxies) and whether an allow-list admits it. Pure.

use std::net::IpAddr;

use ipnet::IpNet;

/// The client address: walks `X-Forwarded-For` (header lines as received) from the right while
/// each hop is a trusted proxy, so a client cannot forge its address by sending the header
/// itself. `None` when a trusted proxy vouches for something that is not an address: the
/// client is then unknown, never mistaken for the proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &[IpNet]) -> Option<IpAddr> {
    let mut current = peer.to_canonical();
    for line in forwarded_for.iter().rev() {
        let hops = line.rsplit(|&b| b == b',').map(|hop| {
            std::str::from_utf8(hop)
                .ok()
                .and_then(|text| text.trim().parse::<IpAddr>().ok())
        });
        for hop in hops {
            if !trusted.iter().any(|net| net.contains(&current)) {
                return Some(current);
            }
            current = hop?.to_canonical();
        }
    }
    Some(current)
}

/// No list admits everyone; a list admits only addresses inside one of its networks.
pub fn allowed(address: IpAddr, allow: Option<&[IpNet]>) -> bool {
    let address = address.to_canonical();
    allow.is_none_or(|nets| nets.iter().any(|net| net.contains(&address)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// (peer, X-Forwarded-For lines, expected client)
    type Row<'a> = (&'a str, &'a [&'a [u8]], Option<&'a str>);

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = nets(&["10.0.0.0/8", "::1/128"]);
        let table: &[Row] = &[
            // Straight from the client: the header is the client's own claim, ignored.
            ("203.0.113.9", &[b"1.2.3.4"], Some("203.0.113.9")),
            ("203.0.113.9", &[b"\x80garbage"], Some("203.0.113.9")),
            // Through our proxy: the proxy's right-most entry is the client.
            ("10.1.1.1", &[b"1.2.3.4"], Some("1.2.3.4")),
            // A client forging a left entry through our proxy gains nothing.
            ("10.1.1.1", &[b"6.6.6.6, 1.2.3.4"], Some("1.2.3.4")),
            // Two trusted hops.
            ("10.1.1.1", &[b"1.2.3.4, 10.2.2.2"], Some("1.2.3.4")),
            // Several header lines count as one list.
            ("10.1.1.1", &[b"1.2.3.4", b"10.2.2.2"], Some("1.2.3.4")),
            // IPv6 proxy, IPv4-mapped client.
            ("::1", &[b"::ffff:192.0.2.7"], Some("192.0.2.7")),
            // A proxy vouching for garbage: the client is unknown, not the proxy.
            ("10.1.1.1", &[b"not-an-ip"], None),
            ("10.1.1.1", &[b"\x80, 203.0.113.66"], Some("203.0.113.66")),
            ("10.1.1.1", &[b"\x80"], None),
            // The proxy's own request, with no header: the proxy is the client.
            ("10.1.1.1", &[], Some("10.1.1.1")),
        ];
        for (peer, header, expected) in table {
            let got = client_ip(peer.parse().unwrap(), header, &proxies).map(|ip| ip.to_string());
            assert_eq!(got.as_deref(), *expected, "{peer} {header:?}");
        }
    }

    #[test]
    fn allow_lists_match_v4_v6_and_mapped_addresses() {
        let allow = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        let table = [
            ("192.0.2.44", true),
            ("192.0.3.1", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::ffff:192.0.2.5", true),
        ];
        for (address, expected) in table {
            assert_eq!(
                allowed(address.parse().unwrap(), Some(&allow)),
                expected,
                "{address}"
            );
        }
        assert!(allowed("8.8.8.8".parse().unwrap(), None));
    }
}
