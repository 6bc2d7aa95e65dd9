//! The SOCKS client side, sans-IO: message encoders and reply parsers. Used to go through a
//! `TOR_PT_PROXY` and by the host side to dial a PT's SOCKS port.

use std::net::IpAddr;

use ptkit_core::{Host, Target};

use super::Reply;

/// Why the client side could not use a SOCKS server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with something that is not SOCKS.
    #[error("malformed SOCKS reply")]
    Malformed,
    /// The server accepted none of our authentication methods.
    #[error("SOCKS server accepted no offered authentication method")]
    NoMethod,
    /// Username/password authentication was refused.
    #[error("SOCKS server refused the credentials or arguments")]
    AuthRefused,
    /// The CONNECT failed with this reply.
    #[error("SOCKS server replied: {}", .0.describe())]
    Refused(Reply),
    /// The SOCKS4 server rejected the request.
    #[error("SOCKS4 request rejected (code {0:#04x})")]
    Rejected4(u8),
    /// What we were asked to send does not fit the protocol.
    #[error("cannot encode request: {0}")]
    Unencodable(&'static str),
}

/// SOCKS5 greeting: offer username/password when there are credentials, else no auth
/// (tor's byte order: `05 02 00 02` / `05 01 00`).
pub fn greeting_v5(with_auth: bool) -> Vec<u8> {
    if with_auth {
        vec![5, 2, 0, 2]
    } else {
        vec![5, 1, 0]
    }
}

/// Parses the method choice (2 bytes).
pub fn parse_method(reply: [u8; 2]) -> Result<u8, ClientError> {
    match reply {
        [5, 0xff] => Err(ClientError::NoMethod),
        [5, m @ (0 | 2)] => Ok(m),
        _ => Err(ClientError::Malformed),
    }
}

/// RFC 1929 message for `user`/`pass` (each 1..=255 bytes).
pub fn userpass(user: &[u8], pass: &[u8]) -> Result<Vec<u8>, ClientError> {
    let ulen = u8::try_from(user.len())
        .map_err(|_| ClientError::Unencodable("username over 255 bytes"))?;
    let plen = u8::try_from(pass.len())
        .map_err(|_| ClientError::Unencodable("password over 255 bytes"))?;
    if ulen == 0 || plen == 0 {
        return Err(ClientError::Unencodable("empty username or password"));
    }
    let mut v = vec![1, ulen];
    v.extend_from_slice(user);
    v.push(plen);
    v.extend_from_slice(pass);
    Ok(v)
}

/// Splits an escaped PT argument string into RFC 1929 fields as tor and Arti do (spec §3.2):
/// ≤ 255 bytes → (all, NUL); ≤ 510 → (first 255, rest); longer → error.
pub fn split_args(args: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    match args.len() {
        0 => Err(ClientError::Unencodable("no arguments to split")),
        1..=255 => Ok((args.to_vec(), vec![0])),
        256..=510 => Ok((args[..255].to_vec(), args[255..].to_vec())),
        _ => Err(ClientError::Unencodable("arguments over 510 bytes")),
    }
}

/// Parses the RFC 1929 status (2 bytes).
pub fn parse_auth(reply: [u8; 2]) -> Result<(), ClientError> {
    match reply {
        [1, 0] => Ok(()),
        [1, _] => Err(ClientError::AuthRefused),
        _ => Err(ClientError::Malformed),
    }
}

/// SOCKS5 CONNECT for `target`.
pub fn connect_v5(target: &Target) -> Result<Vec<u8>, ClientError> {
    let mut v = vec![5, 1, 0];
    match &target.host {
        Host::Ip(IpAddr::V4(ip)) => {
            v.push(1);
            v.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            v.push(4);
            v.extend_from_slice(&ip.octets());
        }
        Host::Name(name) => {
            let len = u8::try_from(name.len())
                .map_err(|_| ClientError::Unencodable("host name over 255 bytes"))?;
            v.push(3);
            v.push(len);
            v.extend_from_slice(name.as_bytes());
        }
    }
    v.extend_from_slice(&target.port.to_be_bytes());
    Ok(v)
}

/// Length of the whole SOCKS5 reply once its first 5 bytes are known.
pub fn reply_v5_len(head: [u8; 5]) -> Result<usize, ClientError> {
    if head[0] != 5 {
        return Err(ClientError::Malformed);
    }
    match head[3] {
        1 => Ok(10),
        4 => Ok(22),
        3 => Ok(7 + usize::from(head[4])),
        _ => Err(ClientError::Malformed),
    }
}

/// Checks a complete SOCKS5 reply's status.
pub fn parse_reply_v5(head: [u8; 5]) -> Result<(), ClientError> {
    if head[0] != 5 {
        return Err(ClientError::Malformed);
    }
    match head[1] {
        0 => Ok(()),
        1 => Err(ClientError::Refused(Reply::GeneralFailure)),
        2 => Err(ClientError::Refused(Reply::NotAllowed)),
        3 => Err(ClientError::Refused(Reply::NetworkUnreachable)),
        4 => Err(ClientError::Refused(Reply::HostUnreachable)),
        5 => Err(ClientError::Refused(Reply::ConnectionRefused)),
        6 => Err(ClientError::Refused(Reply::TtlExpired)),
        7 => Err(ClientError::Refused(Reply::CommandNotSupported)),
        8 => Err(ClientError::Refused(Reply::AddressTypeNotSupported)),
        _ => Err(ClientError::Refused(Reply::GeneralFailure)),
    }
}

/// SOCKS4 (IPv4 target) or SOCKS4a (host name) CONNECT with `userid`.
pub fn connect_v4(target: &Target, userid: &[u8]) -> Result<Vec<u8>, ClientError> {
    if userid.contains(&0) {
        return Err(ClientError::Unencodable("NUL in SOCKS4 userid"));
    }
    let mut v = vec![4, 1];
    v.extend_from_slice(&target.port.to_be_bytes());
    match &target.host {
        Host::Ip(IpAddr::V4(ip)) => {
            v.extend_from_slice(&ip.octets());
            v.extend_from_slice(userid);
            v.push(0);
        }
        Host::Ip(IpAddr::V6(_)) => {
            return Err(ClientError::Unencodable("SOCKS4 cannot carry IPv6"));
        }
        Host::Name(name) => {
            if name.as_bytes().contains(&0) {
                return Err(ClientError::Unencodable("NUL in host name"));
            }
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(userid);
            v.push(0);
            v.extend_from_slice(name.as_bytes());
            v.push(0);
        }
    }
    Ok(v)
}

/// Checks the 8-byte SOCKS4 reply.
pub fn parse_reply_v4(reply: [u8; 8]) -> Result<(), ClientError> {
    match reply[..2] {
        [0, 0x5a] => Ok(()),
        [0, code] => Err(ClientError::Rejected4(code)),
        _ => Err(ClientError::Malformed),
    }
}

/// Why an async SOCKS dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The SOCKS server refused or misbehaved.
    #[error(transparent)]
    Socks(#[from] ClientError),
    /// We have credentials but the server chose "no authentication": the credentials would be
    /// lost (for a PT, its keys), so fail closed.
    #[error("SOCKS server chose no authentication; credentials cannot be sent")]
    CredentialsNotAsked,
}

/// Runs a SOCKS5 CONNECT on `s`, with RFC 1929 credentials when given. Reads exactly the
/// server's messages, so the stream is positioned at the first payload byte afterwards.
pub async fn dial_v5<S>(
    s: &mut S,
    credentials: Option<(&[u8], &[u8])>,
    target: &Target,
) -> Result<(), DialError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&greeting_v5(credentials.is_some())).await?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await?;
    match (parse_method(m)?, credentials) {
        (2, Some((user, pass))) => {
            s.write_all(&userpass(user, pass)?).await?;
            let mut a = [0u8; 2];
            s.read_exact(&mut a).await?;
            parse_auth(a)?;
        }
        (0, None) => {}
        (0, Some(_)) => return Err(DialError::CredentialsNotAsked),
        _ => return Err(ClientError::Malformed.into()),
    }
    s.write_all(&connect_v5(target)?).await?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await?;
    parse_reply_v5(head)?;
    let mut rest = vec![0u8; reply_v5_len(head)? - head.len()];
    s.read_exact(&mut rest).await?;
    Ok(())
}

/// Runs a SOCKS5 CONNECT carrying escaped PT arguments as tor does (split over username and
/// password, spec §3.2); no authentication when `args` is empty.
pub async fn dial_v5_with_args<S>(s: &mut S, args: &[u8], target: &Target) -> Result<(), DialError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if args.is_empty() {
        return dial_v5(s, None, target).await;
    }
    let (user, pass) = split_args(args)?;
    dial_v5(s, Some((&user, &pass)), target).await
}

/// Runs a SOCKS4 (IPv4 target) or SOCKS4a (host name) CONNECT with `userid`.
pub async fn dial_v4<S>(s: &mut S, userid: &[u8], target: &Target) -> Result<(), DialError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&connect_v4(target, userid)?).await?;
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await?;
    Ok(parse_reply_v4(reply)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hex_literal::hex;

    #[test]
    fn arti_client_vectors_7_7() {
        let t = Target::parse("192.0.2.15:443").unwrap();
        assert_eq!(connect_v4(&t, b"").unwrap(), hex!("04 01 01BB C000020F 00"));
        assert!(parse_reply_v4(hex!("00 5A 01BB C000020F")).is_ok());
        let named = Target::parse("www.torproject.org:443").unwrap();
        let mut want = hex!("04 01 01BB 00000001 68656c6c6f00").to_vec();
        want.extend(hex!("7777772e746f7270726f6a6563742e6f726700"));
        assert_eq!(connect_v4(&named, b"hello").unwrap(), want);
        assert_eq!(greeting_v5(false), hex!("05 01 00"));
        let mut c = hex!("05 01 00 03 12").to_vec();
        c.extend(b"www.torproject.org");
        c.extend(hex!("01BB"));
        assert_eq!(connect_v5(&named).unwrap(), c);
        assert_eq!(reply_v5_len(hex!("05 00 00 01 C0")).unwrap(), 10);
        assert_eq!(
            userpass(b"hello", b"world").unwrap(),
            hex!("01 05 68656c6c6f 05 776f726c64")
        );
        assert_eq!(
            parse_reply_v5(hex!("05 05 00 01 00")),
            Err(ClientError::Refused(Reply::ConnectionRefused))
        );
    }

    #[test]
    fn arti_split_vectors() {
        let s = |n: usize| "examplestrg".repeat(50).as_bytes()[..n].to_vec();
        assert!(split_args(&[]).is_err());
        assert_eq!(split_args(&s(50)).unwrap(), (s(50), vec![0]));
        assert_eq!(split_args(&s(255)).unwrap(), (s(255), vec![0]));
        let (u, p) = split_args(&s(256)).unwrap();
        assert_eq!((u.len(), p.len()), (255, 1));
        let (u, p) = split_args(&s(300)).unwrap();
        assert_eq!((u.len(), p.len()), (255, 45));
        let (u, p) = split_args(&s(510)).unwrap();
        assert_eq!((u.len(), p.len()), (255, 255));
        assert!(split_args(&s(511)).is_err());
        assert_eq!(split_args(&[0]).unwrap(), (vec![0], vec![0]));
        assert!(connect_v4(&Target::parse("1.2.3.4:1").unwrap(), b"a\0b").is_err());
    }
}
