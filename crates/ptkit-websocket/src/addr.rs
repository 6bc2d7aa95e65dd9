//! Sans-IO: which client address a server reports upstream (ExtORPort `USERADDR`).
//!
//! Order of preference, per connection:
//! 1. the `client_ip` query parameter of the upgrade request, exactly as Snowflake's Go server
//!    reads it (`specs/snowflake.md` §client_ip): the first `client_ip` value, URL-decoded,
//!    parsed as a bare IP address (no brackets, no port, no zone); the unspecified addresses
//!    `0.0.0.0` and `::` count as absent. It becomes `ip:1` (`[ip]:1` for IPv6): port 1 is a
//!    stub because `USERADDR` needs a port. IPv4-mapped IPv6 addresses are reported as IPv4
//!    (Go's `net.IP.String` does the same). Honoured unless the `client-ip=0` option is set;
//! 2. when the TCP peer is in the configured trusted-proxy list (empty by default), the
//!    `Forwarded` header's `for=` chain (RFC 7239), or else `X-Forwarded-For`: walking from the
//!    right, the first address that is not itself a trusted proxy (the leftmost when all are).
//!    A port given in `Forwarded` is kept, otherwise the stub port 1 is used. An unparsable
//!    element (`unknown`, an obfuscated `_name`) stops the walk and the TCP peer is used;
//! 3. the TCP peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest header or query string this module looks at; longer input is ignored.
pub const MAX_INPUT: usize = 8 * 1024;
/// Most addresses taken from a forwarding chain.
pub const MAX_CHAIN: usize = 64;
/// The stub port used when only an IP address is known (Snowflake's choice).
pub const STUB_PORT: u16 = 1;

/// A set of IP networks (`10.0.0.0/8`, `::1`, `192.0.2.7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

/// A malformed trusted-proxy entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad trusted proxy {0:?} (want an IP address or CIDR network)")]
pub struct BadNetwork(pub String);

impl TrustedProxies {
    /// No trusted proxies (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Parses a list of IPs and CIDR networks separated by commas or white space.
    pub fn parse(list: &str) -> Result<Self, BadNetwork> {
        let mut nets = Vec::new();
        for item in list.split(|c: char| c == ',' || c.is_whitespace()) {
            if item.is_empty() {
                continue;
            }
            let bad = || BadNetwork(item.to_owned());
            let (ip, bits) = match item.split_once('/') {
                Some((ip, bits)) => {
                    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                    let bits: u8 = bits.parse().map_err(|_| bad())?;
                    (ip, bits)
                }
                None => {
                    let ip: IpAddr = item.parse().map_err(|_| bad())?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(bad());
            }
            nets.push((ip.to_canonical(), bits));
        }
        Ok(TrustedProxies { nets })
    }

    /// Adds the networks of another list.
    pub fn extend(&mut self, other: TrustedProxies) {
        self.nets.extend(other.nets);
    }

    /// True when `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

/// Decodes `%XX` escapes and `+` (as a space, like Go's `url.ParseQuery`). Returns `None` on
/// a malformed escape or when the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The first value of `key` in a URL query string (`a=1&b=2`), URL-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    if query.len() > MAX_INPUT {
        return None;
    }
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(key) {
            return percent_decode(v);
        }
    }
    None
}

/// Snowflake's `client_ip` rule: a bare, specified IP address → `ip:1`.
pub fn client_ip_param(query: Option<&str>) -> Option<SocketAddr> {
    let value = query_param(query?, "client_ip")?;
    let ip: IpAddr = value.parse().ok()?;
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return None;
    }
    Some(SocketAddr::new(ip, STUB_PORT))
}

/// Parses one forwarded-for node: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), STUB_PORT));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        let port = if sa.port() == 0 { STUB_PORT } else { sa.port() };
        return Some(SocketAddr::new(sa.ip().to_canonical(), port));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let ip: Ipv6Addr = inner.parse().ok()?;
    Some(SocketAddr::new(IpAddr::V6(ip).to_canonical(), STUB_PORT))
}

/// The `for=` values of `Forwarded` header values (RFC 7239), in order; `None` for a value
/// that is not an address (`unknown`, `_hidden`, garbage).
pub fn forwarded_for_chain<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Vec<Option<SocketAddr>> {
    let mut chain = Vec::new();
    for value in values {
        if value.len() > MAX_INPUT {
            return Vec::new();
        }
        for element in split_quoted(value, ',') {
            for pair in split_quoted(element, ';') {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                if !k.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                chain.push(parse_node(v));
                if chain.len() > MAX_CHAIN {
                    return Vec::new();
                }
            }
        }
    }
    chain
}

/// The addresses of `X-Forwarded-For` header values, in order.
pub fn x_forwarded_for_chain<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Vec<Option<SocketAddr>> {
    let mut chain = Vec::new();
    for value in values {
        if value.len() > MAX_INPUT {
            return Vec::new();
        }
        for item in value.split(',') {
            if item.trim().is_empty() {
                continue;
            }
            chain.push(parse_node(item));
            if chain.len() > MAX_CHAIN {
                return Vec::new();
            }
        }
    }
    chain
}

/// Splits at `sep` outside double quotes.
fn split_quoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Walks a forwarding chain from the right and returns the client: the first address that is
/// not a trusted proxy, or the leftmost when all are. An unparsable node stops the walk.
pub fn pick_from_chain(
    chain: &[Option<SocketAddr>],
    trusted: &TrustedProxies,
) -> Option<SocketAddr> {
    let mut last = None;
    for node in chain.iter().rev() {
        let addr = (*node)?;
        if !trusted.contains(addr.ip()) {
            return Some(addr);
        }
        last = Some(addr);
    }
    last
}

/// What the server knows about one upgrade request, for [`client_addr`].
#[derive(Debug, Clone, Default)]
pub struct AddrInputs<'a> {
    /// The request's query string (without `?`).
    pub query: Option<&'a str>,
    /// Every `Forwarded` header value, in order.
    pub forwarded: Vec<&'a str>,
    /// Every `X-Forwarded-For` header value, in order.
    pub x_forwarded_for: Vec<&'a str>,
}

/// The client address to report, per the module rules.
pub fn client_addr(
    peer: SocketAddr,
    inputs: &AddrInputs<'_>,
    honour_client_ip: bool,
    trusted: &TrustedProxies,
) -> SocketAddr {
    if honour_client_ip && let Some(addr) = client_ip_param(inputs.query) {
        return addr;
    }
    if !trusted.is_empty() && trusted.contains(peer.ip()) {
        let chain = if inputs.forwarded.is_empty() {
            x_forwarded_for_chain(inputs.x_forwarded_for.iter().copied())
        } else {
            forwarded_for_chain(inputs.forwarded.iter().copied())
        };
        if !chain.is_empty()
            && let Some(addr) = pick_from_chain(&chain, trusted)
        {
            return addr;
        }
    }
    peer
}

/// Entry point for a fuzz target: `data` is split at the first two NUL bytes into a query
/// string, a `Forwarded` value and an `X-Forwarded-For` value. Never panics.
pub fn fuzz_client_addr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let query = parts.next();
    let forwarded: Vec<&str> = parts.next().into_iter().collect();
    let xff: Vec<&str> = parts.next().into_iter().collect();
    let trusted = TrustedProxies {
        nets: vec![
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ],
    };
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    let inputs = AddrInputs {
        query,
        forwarded,
        x_forwarded_for: xff,
    };
    let _ = client_addr(peer, &inputs, true, &trusted);
    let _ = TrustedProxies::parse(&text);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// specs/snowflake.md, client_ip → USERADDR vectors of the Go server test.
    #[test]
    fn snowflake_client_ip_vectors() {
        assert_eq!(
            client_ip_param(Some("client_ip=1.2.3.4")),
            Some(sa("1.2.3.4:1"))
        );
        assert_eq!(
            client_ip_param(Some("client_ip=1:2::3:4")),
            Some(sa("[1:2::3:4]:1"))
        );
        assert_eq!(
            client_ip_param(Some("client_ip=1%3A2%3A%3A3%3A4")),
            Some(sa("[1:2::3:4]:1"))
        );
        for bad in [
            "",
            "client_ip=",
            "client_ip=abc",
            "client_ip=1.2.3.4.5",
            "client_ip=[12::34]",
            "client_ip=0.0.0.0",
            "client_ip=[::]",
            "client_ip=::",
            "client_ip=1.2.3.4:80",
            "client_ip=fe80::1%25eth0",
            "other=1.2.3.4",
        ] {
            assert_eq!(client_ip_param(Some(bad)), None, "{bad}");
        }
        // First value wins; other parameters are ignored.
        assert_eq!(
            client_ip_param(Some("x=1&client_ip=192.0.2.2&client_ip=192.0.2.3")),
            Some(sa("192.0.2.2:1"))
        );
        assert_eq!(
            client_ip_param(Some("client_ip=::ffff:192.0.2.9")),
            Some(sa("192.0.2.9:1"))
        );
    }

    #[test]
    fn trusted_proxy_networks() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7 ::1,2001:db8::/32").unwrap();
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(t.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!t.contains("2001:db9::1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("example.com").is_err());
        let all = TrustedProxies::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse("127.0.0.1 10.0.0.0/8").unwrap();
        let peer = sa("127.0.0.1:5555");
        let inputs = AddrInputs {
            query: None,
            forwarded: vec![],
            x_forwarded_for: vec!["203.0.113.9, 10.1.1.1"],
        };
        assert_eq!(
            client_addr(peer, &inputs, true, &trusted),
            sa("203.0.113.9:1")
        );
        // Untrusted peer: headers ignored.
        let stranger = sa("198.51.100.1:4444");
        assert_eq!(client_addr(stranger, &inputs, true, &trusted), stranger);
        // Default: nobody is trusted.
        assert_eq!(
            client_addr(peer, &inputs, true, &TrustedProxies::none()),
            peer
        );
        // Spoofed left entries are skipped: the rightmost untrusted one counts.
        let inputs = AddrInputs {
            x_forwarded_for: vec!["1.1.1.1", "203.0.113.9"],
            ..Default::default()
        };
        assert_eq!(
            client_addr(peer, &inputs, true, &trusted),
            sa("203.0.113.9:1")
        );
        // Forwarded wins over X-Forwarded-For and keeps a port.
        let inputs = AddrInputs {
            query: None,
            forwarded: vec!["for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.1"],
            x_forwarded_for: vec!["198.51.100.77"],
        };
        assert_eq!(
            client_addr(peer, &inputs, true, &trusted),
            sa("[2001:db8:cafe::17]:4711")
        );
        // "unknown" stops the walk: fall back to the TCP peer.
        let inputs = AddrInputs {
            forwarded: vec!["for=unknown"],
            ..Default::default()
        };
        assert_eq!(client_addr(peer, &inputs, true, &trusted), peer);
        // client_ip beats everything, unless disabled.
        let inputs = AddrInputs {
            query: Some("client_ip=192.0.2.2"),
            forwarded: vec![],
            x_forwarded_for: vec!["203.0.113.9"],
        };
        assert_eq!(
            client_addr(peer, &inputs, true, &trusted),
            sa("192.0.2.2:1")
        );
        assert_eq!(
            client_addr(peer, &inputs, false, &trusted),
            sa("203.0.113.9:1")
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    proptest::proptest! {
        #[test]
        fn client_addr_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            fuzz_client_addr(&data);
        }
    }
}
