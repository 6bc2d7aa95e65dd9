//! SOCKS4/4a/5 as Tor uses it with pluggable transports (pt-spec §3; items S-1..S-8).
//!
//! [`server`] is the sans-IO handshake a PT runs on its SOCKS port; [`client`] encodes and
//! parses the other side, for `TOR_PT_PROXY` and for the host side dialling a PT.

pub mod client;
pub mod server;

use std::io;

/// SOCKS5 reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// `00` succeeded.
    Succeeded = 0,
    /// `01` general failure.
    GeneralFailure = 1,
    /// `02` not allowed by ruleset.
    NotAllowed = 2,
    /// `03` network unreachable.
    NetworkUnreachable = 3,
    /// `04` host unreachable.
    HostUnreachable = 4,
    /// `05` connection refused.
    ConnectionRefused = 5,
    /// `06` TTL expired.
    TtlExpired = 6,
    /// `07` command not supported.
    CommandNotSupported = 7,
    /// `08` address type not supported.
    AddressTypeNotSupported = 8,
}

impl Reply {
    /// Maps a dial error to a reply code as obfs4proxy's `ErrorToReplyCode` does (spec §3.4).
    pub fn from_io_error(e: &io::Error) -> Reply {
        match e.raw_os_error() {
            Some(libc::ENETUNREACH) => return Reply::NetworkUnreachable,
            Some(libc::EHOSTUNREACH) => return Reply::HostUnreachable,
            Some(libc::ECONNREFUSED) | Some(libc::ECONNRESET) => return Reply::ConnectionRefused,
            Some(libc::ETIMEDOUT) => return Reply::TtlExpired,
            Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) => {
                return Reply::AddressTypeNotSupported;
            }
            _ => {}
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                Reply::ConnectionRefused
            }
            io::ErrorKind::TimedOut => Reply::TtlExpired,
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            io::ErrorKind::AddrNotAvailable => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }

    /// The RFC 1928 text, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general SOCKS server failure",
            Reply::NotAllowed => "connection not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_4_errno_mapping_matches_obfs4proxy() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            Reply::from_io_error(&e(libc::ENETUNREACH)),
            Reply::NetworkUnreachable
        );
        assert_eq!(
            Reply::from_io_error(&e(libc::EHOSTUNREACH)),
            Reply::HostUnreachable
        );
        assert_eq!(
            Reply::from_io_error(&e(libc::ECONNREFUSED)),
            Reply::ConnectionRefused
        );
        assert_eq!(
            Reply::from_io_error(&e(libc::ECONNRESET)),
            Reply::ConnectionRefused
        );
        assert_eq!(Reply::from_io_error(&e(libc::ETIMEDOUT)), Reply::TtlExpired);
        assert_eq!(
            Reply::from_io_error(&e(libc::EADDRNOTAVAIL)),
            Reply::AddressTypeNotSupported
        );
        assert_eq!(
            Reply::from_io_error(&io::Error::other("x")),
            Reply::GeneralFailure
        );
        assert_eq!(
            Reply::from_io_error(&io::ErrorKind::TimedOut.into()),
            Reply::TtlExpired
        );
    }
}
