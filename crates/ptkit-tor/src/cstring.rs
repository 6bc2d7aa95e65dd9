//! Tor's C-string quoting for `LOG` and `STATUS` values (pt-spec §2.3, items Q-1..Q-5).

/// Longest decoded value accepted from a peer.
pub const MAX_CSTRING_LEN: usize = 64 * 1024;

/// Why a quoted string was rejected (tor rejects the whole line in each case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CStringError {
    /// No closing quote.
    #[error("unterminated quoted string")]
    Unterminated,
    /// An escape tor does not know (`\?`, `\a`, `\8`, ...), or a bad `\x`/octal escape.
    #[error("invalid escape in quoted string")]
    BadEscape,
    /// A raw or decoded NUL, or a raw line feed.
    #[error("forbidden byte in quoted string")]
    ForbiddenByte,
    /// Longer than [`MAX_CSTRING_LEN`].
    #[error("quoted string too long")]
    TooLong,
}

/// Quotes `bytes` so that tor and Arti both decode it (item Q-3): `"`, `\`, LF, CR and TAB use
/// the C escapes; every other byte outside printable ASCII becomes a 3-digit octal escape (so a
/// following digit can never merge into it). The result is pure printable ASCII.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                out.push('\\');
                out.push((b'0' + (b >> 6)) as char);
                out.push((b'0' + ((b >> 3) & 7)) as char);
                out.push((b'0' + (b & 7)) as char);
            }
        }
    }
    out.push('"');
    out
}

/// Decodes a quoted string at the start of `input` as tor's `unescape_string` does.
///
/// Returns the decoded bytes and how many input bytes the quoted string used.
pub fn decode(input: &[u8]) -> Result<(Vec<u8>, usize), CStringError> {
    if input.first() != Some(&b'"') {
        return Err(CStringError::Unterminated);
    }
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        if out.len() > MAX_CSTRING_LEN {
            return Err(CStringError::TooLong);
        }
        let Some(&b) = input.get(i) else {
            return Err(CStringError::Unterminated);
        };
        match b {
            b'"' => return Ok((out, i + 1)),
            0 | b'\n' => return Err(CStringError::ForbiddenByte),
            b'\\' => {
                let Some(&e) = input.get(i + 1) else {
                    return Err(CStringError::Unterminated);
                };
                i += 2;
                let decoded = match e {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'"' | b'\\' | b'\'' => e,
                    b'x' | b'X' => {
                        let hex = input.get(i..i + 2).ok_or(CStringError::BadEscape)?;
                        let s = std::str::from_utf8(hex).map_err(|_| CStringError::BadEscape)?;
                        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
                            return Err(CStringError::BadEscape);
                        }
                        i += 2;
                        u8::from_str_radix(s, 16).map_err(|_| CStringError::BadEscape)?
                    }
                    b'0'..=b'7' => {
                        let mut value = u32::from(e - b'0');
                        let mut digits = 1;
                        while digits < 3 {
                            match input.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    value = value * 8 + u32::from(d - b'0');
                                    i += 1;
                                    digits += 1;
                                }
                                _ => break,
                            }
                        }
                        u8::try_from(value).map_err(|_| CStringError::BadEscape)?
                    }
                    _ => return Err(CStringError::BadEscape),
                };
                if decoded == 0 {
                    return Err(CStringError::ForbiddenByte);
                }
                out.push(decoded);
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn q3_encoding_vectors() {
        assert_eq!(
            encode(b"Connected to bridge A"),
            "\"Connected to bridge A\""
        );
        assert_eq!(encode(b"say \"hi\""), r#""say \"hi\"""#);
        assert_eq!(encode(b"C:\\path"), r#""C:\\path""#);
        assert_eq!(encode(b"line1\nline2"), r#""line1\nline2""#);
        assert_eq!(encode(b"tab\there"), r#""tab\there""#);
        assert_eq!(encode(b"\x0123abc"), r#""\00123abc""#);
        assert_eq!(encode("café".as_bytes()), r#""caf\303\251""#);
        assert_eq!(encode(b"it's"), "\"it's\"");
        assert_eq!(encode(b""), "\"\"");
    }

    #[test]
    fn q5_decoding_follows_tor() {
        let ok: &[(&str, &[u8])] = &[
            (
                r#""octal: \042q\042 bs=\134 nl=\012 e=\303\251 end""#,
                "octal: \"q\" bs=\\ nl=\n e=é end".as_bytes(),
            ),
            (
                r#""c-style: \"q\" bs=\\ tab=\t hex=\x41""#,
                b"c-style: \"q\" bs=\\ tab=\t hex=A",
            ),
            (r#""\r\n\t""#, b"\r\n\t"),
            (r#""\'""#, b"'"),
            (r#""\1\12\123""#, b"\x01\x0a\x53"),
        ];
        for (input, want) in ok {
            let (got, used) = decode(input.as_bytes()).unwrap();
            assert_eq!(&got, want, "{input}");
            assert_eq!(used, input.len());
        }
        for bad in [
            r#""\?""#,
            r#""\a""#,
            r#""\8""#,
            r#""\400""#,
            r#""abc"#,
            "\"a\nb\"",
            r#""\0""#,
            r#""\x4""#,
            r#""\xzz""#,
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn o2_every_byte_roundtrips_to_safe_ascii() {
        let all: Vec<u8> = (1..=255u8).collect();
        for sample in [
            &b""[..],
            b"\"",
            b"\"\"",
            b"abc\"def",
            b"\\",
            b"\\\\",
            b"\x0123abc",
            b"\n\r\t\x7f",
            b"\\377",
            &all,
        ] {
            let enc = encode(sample);
            assert!(enc.bytes().all(|b| (0x20..0x7f).contains(&b)), "{enc}");
            assert_eq!(decode(enc.as_bytes()).unwrap().0, sample);
        }
    }

    proptest! {
        #[test]
        fn q3_roundtrip(bytes in proptest::collection::vec(1u8..=255, 0..200)) {
            let enc = encode(&bytes);
            prop_assert!(enc.bytes().all(|b| (0x20..0x7f).contains(&b)));
            let (dec, used) = decode(enc.as_bytes()).unwrap();
            prop_assert_eq!(dec, bytes);
            prop_assert_eq!(used, enc.len());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(&bytes);
        }
    }
}
