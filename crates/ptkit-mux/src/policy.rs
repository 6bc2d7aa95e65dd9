//! The server's destination policy, sans-IO: **default deny**, plus an allowlist of rules.
//!
//! A rule is `HOST[:PORTS]`:
//!
//! | HOST | matches |
//! |---|---|
//! | `*` | any destination (an open proxy: only when asked for) |
//! | `example.com` | that host name (case-insensitive) |
//! | `*.example.com` | names ending in `.example.com` (not `example.com` itself) |
//! | `192.0.2.7`, `10.0.0.0/8`, `[2001:db8::]/32`, `2001:db8::/32` | addresses in that CIDR |
//!
//! PORTS is `*` (the default), a port, a range `a-b`, or a comma list of those. IPv6 with a
//! port needs brackets: `[::1]:22`, `[2001:db8::]/32:443`.
//!
//! A destination given as an address is allowed when a CIDR rule (or `*`) matches it. A
//! destination given as a name is allowed when a name rule (or `*`) matches it; otherwise,
//! if some CIDR rule could match, the server resolves the name ([`Decision::Resolve`]) and
//! dials only the resolved addresses that CIDR rules allow ([`Policy::allows_ip`]).

use std::net::IpAddr;

use ptkit_core::{Host, Target};

/// Most rules a policy holds.
pub const MAX_RULES: usize = 4096;
/// Longest rule text.
pub const MAX_RULE_LEN: usize = 512;

/// Why a rule cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The host part is not `*`, a name, `*.suffix`, an address or a CIDR.
    #[error("bad host in rule {0:?}")]
    BadHost(String),
    /// The ports part is not `*`, a port, a range or a list.
    #[error("bad ports in rule {0:?}")]
    BadPorts(String),
    /// More than [`MAX_RULES`] rules or a rule over [`MAX_RULE_LEN`] bytes.
    #[error("policy too large: {0}")]
    TooLarge(&'static str),
}

impl PolicyError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::BadHost(_) | PolicyError::BadPorts(_) => "policy_malformed",
            PolicyError::TooLarge(_) => "policy_too_large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Name(String),
    Suffix(String),
    Cidr(IpAddr, u8),
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: HostMatch,
    /// Inclusive port ranges; empty means any port.
    ports: Vec<(u16, u16)>,
}

/// What to do with a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Dial it.
    Allow,
    /// Refuse with SOCKS reply `0x02` (not allowed by ruleset).
    Deny,
    /// Resolve the name, then keep only addresses for which [`Policy::allows_ip`] holds.
    Resolve,
}

/// An allowlist; the empty policy (the default) denies everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l.parse().ok()?,
        Some(_) => return None,
        None => max,
    };
    (len <= max).then_some((ip, len))
}

fn parse_host(s: &str) -> Option<HostMatch> {
    if s == "*" {
        return Some(HostMatch::Any);
    }
    if let Some((ip, len)) = parse_cidr(s) {
        return Some(HostMatch::Cidr(ip, len));
    }
    let (suffix, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return None;
    }
    let name = name.to_ascii_lowercase();
    Some(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Name(name)
    })
}

fn parse_ports(s: &str) -> Option<Vec<(u16, u16)>> {
    if s == "*" {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for item in s.split(',') {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let num = |x: &str| -> Option<u16> {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            x.parse().ok().filter(|p| *p != 0)
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return None;
        }
        out.push((a, b));
    }
    Some(out)
}

impl Rule {
    /// Parses `HOST[:PORTS]` (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Rule, PolicyError> {
        if text.len() > MAX_RULE_LEN {
            return Err(PolicyError::TooLarge("rule too long"));
        }
        let text = text.trim();
        // A bare address or CIDR may contain ':' (IPv6), so try the whole text as a host first.
        if let Some(host) = parse_host(text) {
            return Ok(Rule {
                host,
                ports: Vec::new(),
            });
        }
        let (host, ports) = text
            .rsplit_once(':')
            .ok_or_else(|| PolicyError::BadHost(text.into()))?;
        let host = parse_host(host).ok_or_else(|| PolicyError::BadHost(text.into()))?;
        let ports = parse_ports(ports).ok_or_else(|| PolicyError::BadPorts(text.into()))?;
        Ok(Rule { host, ports })
    }

    fn port_ok(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
    }

    fn ip_ok(&self, ip: IpAddr) -> bool {
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Cidr(net, len) => cidr_contains(*net, *len, ip),
            HostMatch::Name(_) | HostMatch::Suffix(_) => false,
        }
    }

    fn name_ok(&self, name: &str) -> bool {
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Name(n) => n == name,
            HostMatch::Suffix(s) => name.ends_with(s.as_str()),
            HostMatch::Cidr(..) => false,
        }
    }
}

/// True when `ip` is inside `net/len` (an IPv4-mapped IPv6 address counts as IPv4).
fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Policy {
    /// The default: deny everything.
    pub fn deny_all() -> Self {
        Policy::default()
    }

    /// Allow every destination (an open proxy). Use only when that is what you want.
    pub fn allow_all() -> Self {
        Policy {
            rules: vec![Rule {
                host: HostMatch::Any,
                ports: Vec::new(),
            }],
        }
    }

    /// A policy from rule texts (see the [module docs](self)).
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, PolicyError> {
        if rules.len() > MAX_RULES {
            return Err(PolicyError::TooLarge("too many rules"));
        }
        let rules = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules })
    }

    /// True when no rule exists (everything is denied).
    pub fn is_deny_all(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision for a requested destination.
    pub fn check(&self, target: &Target) -> Decision {
        match &target.host {
            Host::Ip(ip) => {
                if self.allows_ip(*ip, target.port) {
                    Decision::Allow
                } else {
                    Decision::Deny
                }
            }
            Host::Name(name) => {
                let name = name.to_ascii_lowercase();
                let name = name.strip_suffix('.').unwrap_or(&name);
                if self
                    .rules
                    .iter()
                    .any(|r| r.port_ok(target.port) && r.name_ok(name))
                {
                    Decision::Allow
                } else if self
                    .rules
                    .iter()
                    .any(|r| r.port_ok(target.port) && matches!(r.host, HostMatch::Cidr(..)))
                {
                    Decision::Resolve
                } else {
                    Decision::Deny
                }
            }
        }
    }

    /// True when some rule allows address `ip` and `port`.
    pub fn allows_ip(&self, ip: IpAddr, port: u16) -> bool {
        self.rules.iter().any(|r| r.port_ok(port) && r.ip_ok(ip))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn default_denies_everything() {
        let p = Policy::default();
        assert!(p.is_deny_all());
        for d in ["127.0.0.1:80", "[::1]:22", "example.com:443"] {
            assert_eq!(p.check(&t(d)), Decision::Deny, "{d}");
        }
    }

    #[test]
    fn hosts_ports_and_cidrs() {
        let p = Policy::parse(&[
            "example.com:443",
            "*.example.org:80,8000-8080",
            "10.0.0.0/8",
            "[2001:db8::]/32:22",
            "fd00::/8",
            "192.0.2.7:1-1024",
        ])
        .unwrap();
        let cases = [
            ("example.com:443", Decision::Allow),
            ("EXAMPLE.COM.:443", Decision::Allow),
            ("example.com:80", Decision::Resolve),
            ("www.example.org:80", Decision::Allow),
            ("a.b.example.org:8080", Decision::Allow),
            ("example.org:80", Decision::Resolve),
            ("www.example.org:8081", Decision::Resolve),
            ("10.1.2.3:65535", Decision::Allow),
            ("11.1.2.3:80", Decision::Deny),
            ("[2001:db8:1::5]:22", Decision::Allow),
            ("[2001:db8:1::5]:23", Decision::Deny),
            ("[fd12::1]:9", Decision::Allow),
            ("[::ffff:10.0.0.1]:80", Decision::Allow),
            ("192.0.2.7:1024", Decision::Allow),
            ("192.0.2.7:1025", Decision::Deny),
            ("192.0.2.8:80", Decision::Deny),
        ];
        for (d, want) in cases {
            assert_eq!(p.check(&t(d)), want, "{d}");
        }
        // Without CIDR rules, unknown names are denied without resolving.
        let names = Policy::parse(&["example.com"]).unwrap();
        assert_eq!(names.check(&t("other.com:80")), Decision::Deny);
        assert_eq!(names.check(&t("127.0.0.1:80")), Decision::Deny);
        assert!(Policy::allow_all().allows_ip("203.0.113.9".parse().unwrap(), 1));
    }

    #[test]
    fn bad_rules() {
        for bad in [
            "",
            "a b",
            "example.com:0",
            "example.com:70000",
            "example.com:9-3",
            "10.0.0.0/33",
            "10.0.0.0/",
            "[::1]/129:80",
            "*.:80",
            "example.com:x",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Rule::parse(&"a".repeat(MAX_RULE_LEN + 1)),
            Err(PolicyError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn cidr_matches_reference(net in any::<u32>(), len in 0u8..=32, ip in any::<u32>()) {
            let p = Policy::parse(&[format!("{}/{len}", std::net::Ipv4Addr::from(net))]).unwrap();
            let want = len == 0 || (net >> (32 - u32::from(len))) == (ip >> (32 - u32::from(len)));
            prop_assert_eq!(p.allows_ip(IpAddr::V4(ip.into()), 80), want);
        }

        #[test]
        fn rule_parser_never_panics(s in ".{0,64}") {
            let _ = Rule::parse(&s);
        }
    }
}
