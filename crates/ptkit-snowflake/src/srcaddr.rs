//! `orport-srcaddr=IP` or `IP/prefix` (spec §1.2): the source address for connections to
//! tor; with a range, a random address inside it for each connection. The range type lives in
//! `ptkit-core` because the upstream dialer applies it.

pub use ptkit_core::source::{BadSourceRange, SourceRange};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn spec_5_1_orport_srcaddr() {
        let net = SourceRange::parse("127.0.0.0/8").unwrap();
        for _ in 0..50 {
            let ip = net.pick_random();
            assert!(ip.is_loopback(), "{ip}");
        }
        assert_eq!(
            SourceRange::parse("192.0.2.7").unwrap().pick_random(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert!(SourceRange::parse("192.0.2.0/33").is_err());
    }
}
