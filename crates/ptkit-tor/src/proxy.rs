//! `TOR_PT_PROXY` (proposal 232; items L-6..L-10): parse the URI tor or Arti gives us and
//! send every outgoing connection through that proxy, failing closed.

use std::io;
use std::sync::Arc;

use base64::Engine;
use ptkit_core::net::DirectDialer;
use ptkit_core::{BoxFuture, Conn, Dialer, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::socks::client;

/// Longest HTTP CONNECT response head accepted from the proxy.
pub const MAX_HTTP_RESPONSE: usize = 16 * 1024;

/// Upstream proxy protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `socks5://` (RFC 1928, RFC 1929 with credentials).
    Socks5,
    /// `socks4a://` (and Arti's `socks4://`).
    Socks4a,
    /// `http://` (CONNECT, Basic auth with credentials).
    Http,
}

/// A parsed `TOR_PT_PROXY`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Protocol.
    pub scheme: Scheme,
    /// Proxy address.
    pub addr: Target,
    /// Username, if any.
    pub user: Option<Vec<u8>>,
    /// Password, if any.
    pub pass: Option<Vec<u8>>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("ProxyUrl")
            .field("scheme", &self.scheme)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why `TOR_PT_PROXY` is unusable; the text becomes `PROXY-ERROR <text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    /// Not `<scheme>://<host>:<port>`.
    #[error("malformed proxy URI: {0}")]
    Syntax(&'static str),
    /// Well-formed but a scheme we do not speak.
    #[error("proxy scheme {0:?} is not supported (use socks5, socks4a or http)")]
    UnsupportedScheme(String),
    /// Credentials the scheme cannot carry.
    #[error("proxy credentials unusable: {0}")]
    Credentials(&'static str),
}

/// Checks syntax only, as goptlib's `getProxyURL` does (vectors §7.1.5): scheme, `//`,
/// non-empty host and port. Returns (scheme, userinfo, host, port).
fn split(uri: &str) -> Result<(&str, Option<&str>, &str, &str), ProxyUrlError> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or(ProxyUrlError::Syntax("expected scheme://host:port"))?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(ProxyUrlError::Syntax("bad scheme"));
    }
    // Item L-10: tor inserts credentials raw, so split at the last '@' before host:port.
    let (userinfo, hostpart) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let authority = hostpart.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or(ProxyUrlError::Syntax("missing port"))?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or(ProxyUrlError::Syntax("missing port"))?
    };
    if host.is_empty() {
        return Err(ProxyUrlError::Syntax("missing host"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyUrlError::Syntax("missing or bad port"));
    }
    Ok((scheme, userinfo, host, port))
}

/// Percent-decodes userinfo only when it is unambiguously URI-encoded (item L-10): every
/// character is legal in URI userinfo and at least one valid `%XX` appears. Otherwise the
/// bytes are taken raw, as tor writes them.
fn decode_userinfo(s: &str) -> Vec<u8> {
    let legal = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:%".contains(&b);
    let bytes = s.as_bytes();
    let has_escape = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if !has_escape || !bytes.iter().all(|b| legal(*b)) {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

impl ProxyUrl {
    /// Validates syntax (goptlib) without judging the scheme.
    pub fn check_syntax(uri: &str) -> Result<(), ProxyUrlError> {
        split(uri).map(|_| ())
    }

    /// Parses and checks that we can use it (items L-6, L-9, L-10).
    pub fn parse(uri: &str) -> Result<Self, ProxyUrlError> {
        let (scheme, userinfo, host, port) = split(uri)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => Scheme::Socks5,
            "socks4a" | "socks4" => Scheme::Socks4a,
            "http" => Scheme::Http,
            other => return Err(ProxyUrlError::UnsupportedScheme(other.to_owned())),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| ProxyUrlError::Syntax("port out of range"))?;
        let addr = if uri.contains(&format!("[{host}]")) {
            let ip: std::net::Ipv6Addr = host
                .parse()
                .map_err(|_| ProxyUrlError::Syntax("bad IPv6 address"))?;
            Target {
                host: ptkit_core::Host::Ip(ip.into()),
                port,
            }
        } else {
            Target::parse(&format!("{host}:{port}"))
                .map_err(|_| ProxyUrlError::Syntax("bad host"))?
        };
        let (user, pass) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(decode_userinfo(u)), Some(decode_userinfo(p))),
                None => (Some(decode_userinfo(ui)), None),
            },
        };
        match scheme {
            Scheme::Socks5 => {
                if user.is_some() || pass.is_some() {
                    let ok = |v: &Option<Vec<u8>>| {
                        v.as_ref().is_some_and(|v| (1..=255).contains(&v.len()))
                    };
                    if !ok(&user) || !ok(&pass) {
                        return Err(ProxyUrlError::Credentials(
                            "socks5 user and password must both be 1-255 bytes",
                        ));
                    }
                }
            }
            Scheme::Socks4a => {
                if pass.is_some() {
                    return Err(ProxyUrlError::Credentials("socks4a has no password"));
                }
            }
            Scheme::Http => {}
        }
        Ok(ProxyUrl {
            scheme,
            addr,
            user,
            pass,
        })
    }
}

/// Sends every connection through a `TOR_PT_PROXY`; never dials directly (item L-8).
#[derive(Debug, Clone)]
pub struct ProxyDialer {
    /// The proxy.
    pub proxy: Arc<ProxyUrl>,
    /// How to reach the proxy itself.
    pub direct: DirectDialer,
}

fn proto_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("upstream proxy: {e}"))
}

impl ProxyDialer {
    /// Connects to `target` through the proxy.
    pub async fn connect(&self, target: &Target) -> io::Result<TcpStream> {
        let mut s = self.direct.connect(&self.proxy.addr).await?;
        let deadline = self.direct.timeout;
        tokio::time::timeout(deadline, self.handshake(&mut s, target))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream proxy handshake timed out",
                )
            })??;
        Ok(s)
    }

    async fn handshake(&self, s: &mut TcpStream, target: &Target) -> io::Result<()> {
        let p = &self.proxy;
        match p.scheme {
            Scheme::Socks5 => {
                let creds = p.user.as_deref().zip(p.pass.as_deref());
                client::dial_v5(s, creds, target).await.map_err(proto_err)?;
            }
            Scheme::Socks4a => {
                client::dial_v4(s, p.user.as_deref().unwrap_or_default(), target)
                    .await
                    .map_err(proto_err)?;
            }
            Scheme::Http => {
                let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
                if let Some(user) = &p.user {
                    let mut cred = user.clone();
                    cred.push(b':');
                    cred.extend(p.pass.clone().unwrap_or_default());
                    let b64 = base64::engine::general_purpose::STANDARD.encode(cred);
                    req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
                }
                req.push_str("\r\n");
                s.write_all(req.as_bytes()).await?;
                // Read byte by byte so nothing after the header is consumed.
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    if head.len() >= MAX_HTTP_RESPONSE {
                        return Err(proto_err("HTTP response header too long"));
                    }
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    head.push(b[0]);
                }
                let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
                let status = String::from_utf8_lossy(status_line);
                let code = status.split(' ').nth(1).unwrap_or("");
                if !status.starts_with("HTTP/1.") || !code.starts_with('2') || code.len() != 3 {
                    return Err(proto_err(format!("CONNECT refused: {}", status.trim_end())));
                }
            }
        }
        Ok(())
    }
}

impl Dialer for ProxyDialer {
    fn dial(&self, target: Target) -> BoxFuture<'static, io::Result<Conn>> {
        let this = self.clone();
        Box::pin(async move { Ok(Box::new(this.connect(&target).await?) as Conn) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn l6_syntax_vectors_7_1_5() {
        for bad in [
            "bogus",
            "http:",
            "://127.0.0.1",
            "//127.0.0.1",
            "http:127.0.0.1",
            "://[::1]",
            "//[::1]",
            "http:[::1]",
            "://localhost",
            "//localhost",
            "http:localhost",
            "http://127.0.0.1",
            "socks4a://127.0.0.1",
            "socks5://127.0.0.1",
            "http://127.0.0.1:",
            "http://[::1]",
            "http://localhost",
            "unknown://localhost/whatever",
            "http://:8080",
            "socks4a://:1080",
            "socks5://:1080",
        ] {
            assert!(ProxyUrl::check_syntax(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/path",
            "http://[::1]:8080",
            "http://[::1]:8080/",
            "http://[::1]:8080/path",
            "http://localhost:8080",
            "http://localhost:8080/",
            "http://localhost:8080/path",
            "http://user@localhost:8080",
            "http://user:password@localhost:8080",
            "socks5://localhost:1080",
            "socks4a://localhost:1080",
            "unknown://localhost:9999/whatever",
        ] {
            assert!(ProxyUrl::check_syntax(good).is_ok(), "{good}");
        }
        assert!(matches!(
            ProxyUrl::parse("unknown://localhost:9999/whatever"),
            Err(ProxyUrlError::UnsupportedScheme(_))
        ));
    }

    #[test]
    fn l10_tor_and_arti_produced_values() {
        let p = ProxyUrl::parse("socks5://127.0.0.9:1080").unwrap();
        assert_eq!(
            (p.scheme, p.addr.to_string()),
            (Scheme::Socks5, "127.0.0.9:1080".into())
        );
        assert_eq!(
            ProxyUrl::parse("socks5://[::1]:1080")
                .unwrap()
                .addr
                .to_string(),
            "[::1]:1080"
        );
        assert_eq!(
            ProxyUrl::parse("socks4a://127.0.0.9:1080").unwrap().scheme,
            Scheme::Socks4a
        );
        let raw = ProxyUrl::parse("socks5://us;er:p@ss:w/rd@127.0.0.9:1080").unwrap();
        assert_eq!(
            (raw.user.unwrap(), raw.pass.unwrap()),
            (b"us;er".to_vec(), b"p@ss:w/rd".to_vec())
        );
        let sp = ProxyUrl::parse("http://user:pa ss@127.0.0.9:3128").unwrap();
        assert_eq!(
            (sp.user.unwrap(), sp.pass.unwrap()),
            (b"user".to_vec(), b"pa ss".to_vec())
        );
        assert_eq!(
            ProxyUrl::parse("socks4://10.0.0.1:9050").unwrap().scheme,
            Scheme::Socks4a
        );
        let enc = ProxyUrl::parse("socks5://a%40b:c%3Ad@127.0.0.1:1080").unwrap();
        assert_eq!(
            (enc.user.unwrap(), enc.pass.unwrap()),
            (b"a@b".to_vec(), b"c:d".to_vec())
        );
        assert!(ProxyUrl::parse("socks5://user@127.0.0.1:1080").is_err());
        assert!(ProxyUrl::parse("socks4a://u:p@127.0.0.1:1080").is_err());
        assert!(
            !format!(
                "{:?}",
                ProxyUrl::parse("socks5://u:secret@127.0.0.1:1").unwrap()
            )
            .contains("secret")
        );
    }
}
