//! Outbound address policy (SSRF): which addresses a destination may connect to. Checked on
//! the addresses DNS returned, at connect time, so a name that later resolves elsewhere
//! (DNS rebinding) cannot get around it. Cloud metadata endpoints are never allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Loopback, private, link-local, shared (CGNAT), unique-local, unspecified, multicast:
    /// this machine or its network, refused unless the destination allows it.
    Internal,
    /// Cloud instance metadata: credentials live there; always refused.
    Metadata,
}

const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254); // AWS

pub fn classify(address: IpAddr) -> AddressClass {
    // IPv6 forms that carry an IPv4 address and reach it: judged by that address.
    if let IpAddr::V6(v6) = address {
        let s = v6.segments();
        let embedded = |hi: u16, lo: u16| {
            IpAddr::V4(Ipv4Addr::new(
                (hi >> 8) as u8,
                hi as u8,
                (lo >> 8) as u8,
                lo as u8,
            ))
        };
        let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
        let compatible = s[..6] == [0; 6] && (s[6], s[7]) != (0, 0) && (s[6], s[7]) != (0, 1);
        if nat64 || compatible {
            return classify(embedded(s[6], s[7]));
        }
        if s[0] == 0x2002 {
            return classify(embedded(s[1], s[2])); // 6to4
        }
    }
    match address.to_canonical() {
        IpAddr::V4(v4) => {
            if METADATA_V4.contains(&v4) {
                AddressClass::Metadata
            } else if v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 0
                // 100.64.0.0/10, shared address space (carrier-grade NAT)
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
            {
                AddressClass::Internal
            } else {
                AddressClass::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6 == METADATA_V6 {
                AddressClass::Metadata
            } else if v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80
            // link local
            {
                AddressClass::Internal
            } else {
                AddressClass::Public
            }
        }
    }
}

/// The address a URL names literally (`localhost` counts as loopback), if it does.
pub fn literal_address(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    if host.eq_ignore_ascii_case("localhost") {
        return Some(Ipv4Addr::LOCALHOST.into());
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Why an address may not be used, if it may not.
pub fn refusal(address: IpAddr, allow_internal: bool) -> Option<String> {
    match classify(address) {
        AddressClass::Public => None,
        AddressClass::Internal if allow_internal => None,
        AddressClass::Internal => Some(format!(
            "address {address} is internal (loopback, private or link-local); set allow_private_network = true on the destination to deliver there"
        )),
        AddressClass::Metadata => Some(format!(
            "address {address} is a cloud metadata endpoint; never delivered to"
        )),
    }
}

/// A resolver for reqwest that drops refused addresses, and fails when none is left.
pub struct GuardedResolver {
    pub allow_internal: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_internal = self.allow_internal;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| match refusal(address.ip(), allow_internal) {
                    None => true,
                    Some(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified_by_the_table() {
        use AddressClass::*;
        let table = [
            ("8.8.8.8", Public),
            ("2606:4700::1111", Public),
            ("127.0.0.1", Internal),
            ("127.9.9.9", Internal),
            ("10.1.2.3", Internal),
            ("172.16.0.1", Internal),
            ("192.168.1.1", Internal),
            ("100.64.0.1", Internal),
            ("100.128.0.1", Public),
            ("169.254.1.1", Internal),
            ("0.0.0.0", Internal),
            ("::1", Internal),
            ("::ffff:127.0.0.1", Internal),
            ("fd12::1", Internal),
            ("fe80::1", Internal),
            ("169.254.169.254", Metadata),
            ("::ffff:169.254.169.254", Metadata),
            ("100.100.100.200", Metadata),
            ("fd00:ec2::254", Metadata),
            ("64:ff9b::a00:1", Internal),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("64:ff9b::808:808", Public),
            ("2002:a00:1::1", Internal),
            ("::a00:1", Internal),
        ];
        for (address, expected) in table {
            assert_eq!(classify(address.parse().unwrap()), expected, "{address}");
        }
        assert!(refusal("169.254.169.254".parse().unwrap(), true).is_some());
        assert!(refusal("127.0.0.1".parse().unwrap(), true).is_none());
        assert!(refusal("127.0.0.1".parse().unwrap(), false).is_some());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let refused = GuardedResolver {
            allow_internal: false,
        }
        .resolve(name())
        .await;
        let err = refused.err().expect("localhost resolves to loopback");
        assert!(err.to_string().contains("internal"), "{err}");
        let allowed = GuardedResolver {
            allow_internal: true,
        }
        .resolve(name())
        .await;
        assert!(allowed.unwrap().all(|a| a.ip().is_loopback()));
    }
}
