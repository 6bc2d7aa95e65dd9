//! Where a connection should go: an IP address or a host name, and a port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Longest host name accepted (the DNS limit; also what fits a SOCKS5 domain field).
pub const MAX_HOST_LEN: usize = 255;

/// The host part of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A host name, to be resolved by whoever dials it.
    Name(String),
}

/// A destination: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

/// Why a `host:port` string is not a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No `:port` part.
    #[error("missing port in {0:?}")]
    MissingPort(String),
    /// The port is not a number in 0..=65535.
    #[error("bad port in {0:?}")]
    BadPort(String),
    /// The host is empty, too long or not a valid name.
    #[error("bad host in {0:?}")]
    BadHost(String),
}

impl Target {
    /// A target for an IP socket address.
    pub fn from_socket_addr(addr: SocketAddr) -> Self {
        Target {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// Parses `1.2.3.4:80`, `[::1]:80` or `name:80`.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self::from_socket_addr(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::MissingPort(s.into()))?;
        let port: u16 = port.parse().map_err(|_| TargetError::BadPort(s.into()))?;
        if host.starts_with('[') {
            return Err(TargetError::BadHost(s.into()));
        }
        let valid = !host.is_empty()
            && host.len() <= MAX_HOST_LEN
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(TargetError::BadHost(s.into()));
        }
        Ok(Target {
            host: Host::Name(host.to_owned()),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_prints_all_forms() {
        for s in [
            "127.0.0.1:9050",
            "[102:304:506:708:90a:b0c:d0e:f10]:9050",
            "example.com:9050",
        ] {
            assert_eq!(Target::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "example.com", ":80", "a b:80", "host:99999", "[::1:80"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
