//! Tor's geoip databases (`/usr/share/tor/geoip` and `geoip6`, package `tor-geoipdb`):
//! address ranges → two-letter country codes, for the proxy country counts. Sans-IO.
//!
//! Formats: IPv4 lines are `FIRST,LAST,CC` with the addresses as decimal integers; IPv6 lines
//! are `FIRST,LAST,CC` with textual IPv6 addresses. `#` starts a comment line.

use std::net::IpAddr;

/// Largest geoip file accepted.
pub const MAX_FILE_LEN: usize = 64 << 20;

/// Country code for addresses in no range (as tor and the Go broker print it).
pub const UNKNOWN_COUNTRY: [u8; 2] = *b"??";

/// Both geoip tables.
#[derive(Debug, Clone, Default)]
pub struct GeoIp {
    v4: Vec<(u32, u32, [u8; 2])>,
    v6: Vec<(u128, u128, [u8; 2])>,
}

/// A line that did not parse: the 1-based line number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIpError {
    /// 1-based line number, 0 for the file as a whole.
    pub line: usize,
    /// What was wrong.
    pub detail: String,
}

impl GeoIp {
    /// Parses the IPv4 and IPv6 files' contents.
    pub fn parse(v4: &[u8], v6: &[u8]) -> Result<GeoIp, (bool, GeoIpError)> {
        let v4 = parse_table(v4, |s| s.parse::<u32>().ok()).map_err(|e| (false, e))?;
        let v6 = parse_table(v6, |s| s.parse::<std::net::Ipv6Addr>().ok().map(u128::from))
            .map_err(|e| (true, e))?;
        Ok(GeoIp { v4, v6 })
    }

    /// Number of ranges (IPv4, IPv6).
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// True when both tables are empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The country of `ip` (IPv4-mapped IPv6 addresses are looked up as IPv4), or `??`.
    pub fn country(&self, ip: IpAddr) -> [u8; 2] {
        match ip.to_canonical() {
            IpAddr::V4(a) => lookup(&self.v4, u32::from(a)),
            IpAddr::V6(a) => lookup(&self.v6, u128::from(a)),
        }
        .unwrap_or(UNKNOWN_COUNTRY)
    }
}

fn lookup<T: Ord + Copy>(table: &[(T, T, [u8; 2])], ip: T) -> Option<[u8; 2]> {
    let i = table.partition_point(|(first, _, _)| *first <= ip);
    let (_, last, cc) = table.get(i.checked_sub(1)?)?;
    (ip <= *last).then_some(*cc)
}

fn parse_table<T: Ord + Copy>(
    data: &[u8],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(T, T, [u8; 2])>, GeoIpError> {
    if data.len() > MAX_FILE_LEN {
        return Err(GeoIpError {
            line: 0,
            detail: format!("larger than {MAX_FILE_LEN} bytes"),
        });
    }
    let text = std::str::from_utf8(data).map_err(|e| GeoIpError {
        line: 0,
        detail: format!("not UTF-8: {e}"),
    })?;
    let mut table = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |detail: &str| GeoIpError {
            line: index + 1,
            detail: detail.to_owned(),
        };
        let mut parts = line.split(',');
        let (Some(first), Some(last), Some(cc), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected FIRST,LAST,CC"));
        };
        let first = parse(first.trim()).ok_or_else(|| bad("bad first address"))?;
        let last = parse(last.trim()).ok_or_else(|| bad("bad last address"))?;
        let cc: [u8; 2] = cc
            .trim()
            .as_bytes()
            .try_into()
            .map_err(|_| bad("country code is not two characters"))?;
        if first > last {
            return Err(bad("range ends before it starts"));
        }
        table.push((first, last, cc));
    }
    table.sort_unstable_by_key(|(first, _, _)| *first);
    Ok(table)
}
