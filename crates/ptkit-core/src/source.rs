//! Source-address ranges for outgoing connections: `IP` or `IP/prefix`, a random address
//! inside the range per connection (Snowflake's `orport-srcaddr`, which spreads connections
//! to tor over many loopback addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// A malformed `orport-srcaddr`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("source address {0:?}: want an IP address or IP/prefix")]
pub struct BadSourceRange(pub String);

/// An address range to pick source addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    base: IpAddr,
    prefix: u8,
}

impl SourceRange {
    /// Parses `IP` (a range of one) or `IP/prefix`.
    pub fn parse(s: &str) -> Result<Self, BadSourceRange> {
        let bad = || BadSourceRange(s.to_owned());
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let base: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(SourceRange { base, prefix })
    }

    /// An address in the range, the host bits taken from `random`.
    pub fn pick(&self, random: u128) -> IpAddr {
        match self.base {
            IpAddr::V4(a) => {
                let host_bits = 32 - u32::from(self.prefix);
                let mask: u32 = if host_bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                let v = (u32::from(a) & !mask) | (random as u32 & mask);
                IpAddr::V4(Ipv4Addr::from(v))
            }
            IpAddr::V6(a) => {
                let host_bits = 128 - u32::from(self.prefix);
                let mask: u128 = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                let v = (u128::from(a) & !mask) | (random & mask);
                IpAddr::V6(Ipv6Addr::from(v))
            }
        }
    }

    /// Whether the range holds IPv4 addresses.
    pub fn is_ipv4(&self) -> bool {
        self.base.is_ipv4()
    }

    /// A random address in the range.
    pub fn pick_random(&self) -> IpAddr {
        let mut b = [0u8; 16];
        // A failing system RNG leaves zeros: the range's first address, still valid.
        let _ = aws_lc_rs::rand::fill(&mut b);
        self.pick(u128::from_be_bytes(b))
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.pick_from(ip) == ip
            }
            _ => false,
        }
    }

    fn pick_from(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => self.pick(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.pick(u128::from(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parse_pick_and_contain() {
        let one = SourceRange::parse("192.0.2.7").unwrap();
        assert_eq!(one.pick_random(), "192.0.2.7".parse::<IpAddr>().unwrap());
        let net = SourceRange::parse("192.0.2.0/24").unwrap();
        for _ in 0..100 {
            let ip = net.pick_random();
            assert!(net.contains(ip), "{ip}");
            assert!(ip.to_string().starts_with("192.0.2."));
        }
        let v6 = SourceRange::parse("2001:db8::/64").unwrap();
        assert!(v6.contains(v6.pick_random()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        for bad in [
            "",
            "x",
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/",
            "1.2.3.4/-1",
        ] {
            assert!(SourceRange::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SourceRange::parse("0.0.0.0/0").unwrap().pick(7),
            "0.0.0.7".parse::<IpAddr>().unwrap()
        );
    }
}
