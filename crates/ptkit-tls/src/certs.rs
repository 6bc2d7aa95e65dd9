//! Loading and generating certificates, and reading the few fields we need from them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};
use crate::provider;

/// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// Errors name the file that was unreadable, empty, malformed, or whose key does not match
/// the certificate.
pub fn load_pem_files(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let cert_pem = std::fs::read(cert).map_err(|e| Error::file(cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| Error::file(key, e))?;
    let chain = parse_chain(&cert_pem, cert)?;
    let key_der = parse_key(&key_pem, key)?;
    certified_key(chain, key_der, key)
}

/// Builds a [`CertifiedKey`] from PEM text already in memory (a chain, leaf first, and a key).
///
/// `origin` names the source in error messages.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &Path,
) -> Result<Arc<CertifiedKey>> {
    let chain = parse_chain(cert_pem, origin)?;
    let key_der = parse_key(key_pem, origin)?;
    certified_key(chain, key_der, origin)
}

fn parse_chain(pem_bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<std::result::Result<Vec<_>, pem::Error>>()
        .map_err(|e| Error::Pem {
            path: path.into(),
            what: format!("malformed PEM certificate: {e}"),
        })?;
    if chain.is_empty() {
        return Err(Error::Pem {
            path: path.into(),
            what: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

fn parse_key(pem_bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|e| Error::Pem {
        path: path.into(),
        what: match e {
            pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            other => format!("malformed PEM private key: {other}"),
        },
    })
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>> {
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|source| Error::Key {
            path: key_path.into(),
            source,
        })
}

/// A freshly generated self-signed certificate (ECDSA P-256) for `names`.
///
/// Returns the key ready for a resolver plus the certificate and private key as PEM text
/// (for clients that must trust it, and for the QUIC transport's pinned certificates).
pub fn self_signed(names: &[String]) -> Result<(Arc<CertifiedKey>, String, String)> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.to_vec())?;
    let cert_pem = cert.pem();
    let key_pem = signing_key.serialize_pem();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let key = CertifiedKey::from_der(vec![cert.der().clone()], key_der, &provider())?;
    Ok((Arc::new(key), cert_pem, key_pem))
}

/// The TLS-ALPN-01 challenge certificate (RFC 8737) for `name`, carrying the SHA-256 digest
/// of the key authorization in a critical `acmeIdentifier` extension.
pub(crate) fn tls_alpn01_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    // Not `CertifiedKey::from_der`: its consistency check parses the certificate with
    // webpki, which rejects the critical acmeIdentifier extension.
    let signing_key = provider().key_provider.load_private_key(key_der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// The fields of an X.509 certificate that renewal and tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// The serial number's content octets (big-endian, as encoded).
    pub serial: Vec<u8>,
}

impl CertInfo {
    /// Reads validity and serial number from a DER certificate.
    pub fn parse(cert: &CertificateDer<'_>) -> Result<Self> {
        der::cert_info(cert.as_ref())
    }

    /// Reads the leaf (first) certificate of a [`CertifiedKey`].
    pub fn of(key: &CertifiedKey) -> Result<Self> {
        let leaf = key
            .cert
            .first()
            .ok_or(Error::MalformedCertificate("empty certificate chain"))?;
        Self::parse(leaf)
    }

    /// The serial number as lowercase hex (for logs and tests).
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Time left until `not_after` at `now` (zero when already expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// A minimal DER walk over `Certificate -> TBSCertificate` to reach serial and validity.
mod der {
    use super::*;

    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const EXPLICIT_0: u8 = 0xa0;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;

    fn bad(what: &'static str) -> Error {
        Error::MalformedCertificate(what)
    }

    /// Splits one TLV off the front: (tag, contents, rest).
    fn tlv(data: &[u8]) -> Result<(u8, &[u8], &[u8])> {
        let (&tag, rest) = data.split_first().ok_or(bad("truncated tag"))?;
        let (&first, rest) = rest.split_first().ok_or(bad("truncated length"))?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(bad("bad length"));
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return Err(bad("length past end"));
        }
        let (contents, rest) = rest.split_at(len);
        Ok((tag, contents, rest))
    }

    fn expect<'a>(data: &'a [u8], want: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8])> {
        let (tag, contents, rest) = tlv(data)?;
        if tag != want {
            return Err(bad(what));
        }
        Ok((contents, rest))
    }

    pub(super) fn cert_info(cert: &[u8]) -> Result<CertInfo> {
        let (cert, _) = expect(cert, SEQUENCE, "certificate is not a SEQUENCE")?;
        let (tbs, _) = expect(cert, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
        let mut rest = tbs;
        if rest.first() == Some(&EXPLICIT_0) {
            rest = tlv(rest)?.2;
        }
        let (serial, rest) = expect(rest, INTEGER, "serialNumber is not an INTEGER")?;
        let (_, rest) = expect(rest, SEQUENCE, "signature is not a SEQUENCE")?;
        let (_, rest) = expect(rest, SEQUENCE, "issuer is not a SEQUENCE")?;
        let (validity, _) = expect(rest, SEQUENCE, "validity is not a SEQUENCE")?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        Ok(CertInfo {
            not_before,
            not_after,
            serial: serial.to_vec(),
        })
    }

    fn time(data: &[u8]) -> Result<(SystemTime, &[u8])> {
        let (tag, contents, rest) = tlv(data)?;
        let text = std::str::from_utf8(contents).map_err(|_| bad("time is not ASCII"))?;
        let full = match tag {
            UTC_TIME if text.len() == 13 => {
                let yy: u32 = text
                    .get(0..2)
                    .and_then(|s| s.parse().ok())
                    .ok_or(bad("year"))?;
                // RFC 5280 4.1.2.5.1: 50..99 → 19xx, 00..49 → 20xx.
                let century = if yy >= 50 { "19" } else { "20" };
                format!("{century}{text}")
            }
            GENERALIZED_TIME if text.len() == 15 => text.to_owned(),
            _ => return Err(bad("unsupported time encoding")),
        };
        Ok((parse_generalized(&full)?, rest))
    }

    /// `YYYYMMDDHHMMSSZ` → SystemTime.
    fn parse_generalized(s: &str) -> Result<SystemTime> {
        if !s.ends_with('Z') || !s.is_char_boundary(14) {
            return Err(bad("time not in UTC"));
        }
        let field = |a: usize, b: usize| -> Result<i64> {
            s.get(a..b)
                .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or(bad("time digits"))
        };
        let (y, mo, d) = (field(0, 4)?, field(4, 6)?, field(6, 8)?);
        let (h, mi, se) = (field(8, 10)?, field(10, 12)?, field(12, 14)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad("time out of range"));
        }
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
        Ok(if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        })
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]
        use super::*;

        #[test]
        fn civil_days() {
            assert_eq!(days_from_civil(1970, 1, 1), 0);
            assert_eq!(days_from_civil(2000, 3, 1), 11_017);
            assert_eq!(days_from_civil(1969, 12, 31), -1);
        }

        #[test]
        fn truncated_input_is_an_error() {
            assert!(cert_info(&[]).is_err());
            assert!(cert_info(&[0x30, 0x84, 0xff]).is_err());
            assert!(cert_info(&[0x30, 0x05, 0x30, 0x03, 0x02]).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cert_info_matches_rcgen_params() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2061, 7, 8);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x02, 0x03]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::parse(cert.der()).unwrap();
        assert_eq!(info.serial, vec![1, 2, 3]);
        assert_eq!(info.serial_hex(), "010203");
        let day = |y, m, d| UNIX_EPOCH + Duration::from_secs(der_days(y, m, d) * 86_400);
        assert_eq!(info.not_before, day(2001, 2, 3));
        // After 2049 X.509 switches to GeneralizedTime.
        assert_eq!(info.not_after, day(2061, 7, 8));
    }

    fn der_days(y: i64, m: i64, d: i64) -> u64 {
        // Recompute independently: days between 1970-01-01 and y-m-d by counting.
        let mut days = 0u64;
        for year in 1970..y {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            days += if leap { 366 } else { 365 };
        }
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        for md in month_days.iter().take((m - 1) as usize) {
            days += md;
        }
        days + (d - 1) as u64
    }

    #[test]
    fn self_signed_round_trips_through_pem() {
        let (key, cert_pem, key_pem) = self_signed(&["x.test".to_owned()]).unwrap();
        let again =
            certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), Path::new("mem"))
                .unwrap();
        assert_eq!(key.cert, again.cert);
        assert!(CertInfo::of(&key).unwrap().remaining(SystemTime::now()) > Duration::ZERO);
    }

    #[test]
    fn load_pem_files_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert_pem, key_pem) = self_signed(&["x.test".to_owned()]).unwrap();
        let (_, _, other_key_pem) = self_signed(&["y.test".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let other_key = dir.path().join("other-key.pem");
        let garbage = dir.path().join("garbage.pem");
        let missing = dir.path().join("missing.pem");
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        std::fs::write(&other_key, &other_key_pem).unwrap();
        std::fs::write(&garbage, "hello\n").unwrap();

        assert!(load_pem_files(&cert, &key).is_ok());

        let err = load_pem_files(&missing, &key).unwrap_err();
        assert_eq!(err.kind(), "file");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = load_pem_files(&cert, &missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = load_pem_files(&garbage, &key).unwrap_err();
        assert_eq!(err.kind(), "pem");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");

        // A certificate file given as the key: no private key inside.
        let err = load_pem_files(&cert, &cert).unwrap_err();
        assert_eq!(err.kind(), "pem");
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");

        let err = load_pem_files(&cert, &other_key).unwrap_err();
        assert_eq!(err.kind(), "key");
        assert!(err.to_string().contains("other-key.pem"), "{err}");
    }
}
