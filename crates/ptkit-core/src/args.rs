//! The `k=v` argument codec shared by every transport.
//!
//! Tor passes transport arguments in three escaped forms, all handled here:
//! - per-connection SOCKS arguments (`k=v;k=v`, pt-spec §3.5; items A-1..A-4),
//! - `SMETHOD … ARGS:k=v,k=v` (items V-1..V-3),
//! - `TOR_PT_SERVER_TRANSPORT_OPTIONS` (`t:k=v;t:k=v`, spec §4.1; parsed in `ptkit-tor`
//!   with [`split_escaped`]).
//!
//! [`Args`] is an ordered multi-map: repeated keys keep every value in insertion order and the
//! first value is "the" value, as in goptlib.

use std::fmt;

/// Longest argument string accepted from a peer, in bytes (twice the SOCKS5 field size, the
/// most tor can send; SOCKS4 userids are capped at the same size by the SOCKS parser).
pub const MAX_ARGS_LEN: usize = 64 * 1024;

/// An ordered multi-map of string keys to string values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Args {
    pairs: Vec<(String, String)>,
}

/// Why an argument string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An item has no unescaped `=` between key and value.
    #[error("argument {0:?} has no equals sign")]
    NoEquals(String),
    /// An item has an empty key.
    #[error("argument with an empty key")]
    EmptyKey,
    /// An item between separators is empty (a leading, trailing or doubled separator).
    #[error("empty argument item")]
    EmptyItem,
    /// The string ends in the middle of an escape.
    #[error("argument string ends with a backslash")]
    TrailingBackslash,
    /// An unescaped `=` inside a value where the format forbids it (SMETHOD ARGS).
    #[error("unescaped '=' inside value of {0:?}")]
    EqualsInValue(String),
    /// The bytes are not UTF-8.
    #[error("arguments are not valid UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_ARGS_LEN`].
    #[error("argument string longer than {MAX_ARGS_LEN} bytes")]
    TooLong,
}

impl Args {
    /// An empty set of arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a value for `key` (repeated keys accumulate).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Builder form of [`Args::push`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(key, value);
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in insertion order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Number of pairs (a repeated key counts once per value).
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// All pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Keys in first-seen order, each once.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in &self.pairs {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys
    }

    /// Parses per-connection SOCKS arguments (`k=v;k=v`, goptlib `parseClientParameters`).
    ///
    /// The key runs to the first unescaped `=` or `;` and must end at `=`; the value runs to the
    /// next unescaped `;` and may contain `=`. A backslash makes the next byte literal.
    pub fn parse_client(input: &[u8]) -> Result<Self, ArgsError> {
        if input.len() > MAX_ARGS_LEN {
            return Err(ArgsError::TooLong);
        }
        let input = std::str::from_utf8(input).map_err(|_| ArgsError::NotUtf8)?;
        let mut args = Args::new();
        if input.is_empty() {
            return Ok(args);
        }
        let mut rest = input;
        loop {
            let (key, term, after) = scan(rest, &['=', ';'])?;
            if term != Some('=') {
                return Err(ArgsError::NoEquals(key));
            }
            if key.is_empty() {
                return Err(ArgsError::EmptyKey);
            }
            let (value, term, after) = scan(after, &[';'])?;
            args.push(key, value);
            match term {
                None => return Ok(args),
                Some(_) if after.is_empty() => return Err(ArgsError::EmptyItem),
                Some(_) => rest = after,
            }
        }
    }

    /// Encodes per-connection arguments for a SOCKS handshake, as Arti does (item A-2): `\` and
    /// `;` escaped everywhere, `=` escaped only in keys.
    pub fn encode_client(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            escape_into(&mut out, k, &['\\', ';', '=']);
            out.push('=');
            escape_into(&mut out, v, &['\\', ';']);
        }
        out
    }

    /// Encodes the body of an `SMETHOD … ARGS:` option (goptlib `encodeSmethodArgs`, item V-1):
    /// keys sorted by byte order, each key's values in insertion order, `\`, `=` and `,`
    /// escaped in keys and values, pairs joined by `,`.
    pub fn encode_smethod(&self) -> String {
        let mut keys = self.keys();
        keys.sort_unstable();
        let mut out = String::new();
        for key in keys {
            for value in self.get_all(key) {
                if !out.is_empty() {
                    out.push(',');
                }
                escape_into(&mut out, key, &['\\', '=', ',']);
                out.push('=');
                escape_into(&mut out, value, &['\\', '=', ',']);
            }
        }
        out
    }

    /// Parses the body of an `SMETHOD … ARGS:` option as Arti does (item V-3): an unescaped `=`
    /// inside a value, a missing `=` or a trailing backslash is an error.
    pub fn parse_smethod(input: &str) -> Result<Self, ArgsError> {
        if input.len() > MAX_ARGS_LEN {
            return Err(ArgsError::TooLong);
        }
        let mut args = Args::new();
        if input.is_empty() {
            return Ok(args);
        }
        let mut rest = input;
        loop {
            let (key, term, after) = scan(rest, &['=', ','])?;
            if term != Some('=') {
                return Err(ArgsError::NoEquals(key));
            }
            if key.is_empty() {
                return Err(ArgsError::EmptyKey);
            }
            let (value, term, after) = scan(after, &[',', '='])?;
            if term == Some('=') {
                return Err(ArgsError::EqualsInValue(key));
            }
            args.push(key, value);
            match term {
                None => return Ok(args),
                Some(_) if after.is_empty() => return Err(ArgsError::EmptyItem),
                Some(_) => rest = after,
            }
        }
    }
}

/// Reads an escaped token up to the first unescaped byte in `stops`.
///
/// Returns the unescaped token, the stop character met (or `None` at the end of input) and the
/// input after that stop character.
pub fn scan<'a>(
    input: &'a str,
    stops: &[char],
) -> Result<(String, Option<char>, &'a str), ArgsError> {
    let mut token = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, escaped)) => token.push(escaped),
                None => return Err(ArgsError::TrailingBackslash),
            }
        } else if stops.contains(&c) {
            return Ok((token, Some(c), &input[i + c.len_utf8()..]));
        } else {
            token.push(c);
        }
    }
    Ok((token, None, ""))
}

/// Splits `input` at every unescaped `sep`, keeping escapes in the pieces.
pub fn split_escaped(input: &str, sep: char) -> Result<Vec<&str>, ArgsError> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            pieces.push(&input[start..i]);
            start = i + c.len_utf8();
        }
    }
    if escaped {
        return Err(ArgsError::TrailingBackslash);
    }
    pieces.push(&input[start..]);
    Ok(pieces)
}

/// Appends `s` to `out`, putting a backslash before every character in `special`.
pub fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

impl fmt::Debug for Args {
    // Argument values can be secrets (obfs4 certs, shared secrets): never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if crate::redact::unsafe_logging() {
            f.debug_list().entries(self.pairs.iter()).finish()
        } else {
            f.debug_list().entries(self.keys()).finish()
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Args {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut args = Args::new();
        for (k, v) in iter {
            args.push(k, v);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn pairs(a: &Args) -> Vec<(String, String)> {
        a.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a3_client_args_bad_vectors() {
        for bad in [
            "key",
            "key\\",
            "=value",
            "==value",
            "==key=value",
            "key=value\\",
            "a=b;key=value\\",
            "a;b=c",
            ";",
            "key=value;",
            ";key=value",
            "key\\=value",
        ] {
            assert!(
                Args::parse_client(bad.as_bytes()).is_err(),
                "{bad:?} should fail"
            );
        }
    }

    #[test]
    fn a3_client_args_good_vectors() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("key=", &[("key", "")]),
            ("key==", &[("key", "=")]),
            ("key=value", &[("key", "value")]),
            ("a=b=c", &[("a", "b=c")]),
            ("a=bc==", &[("a", "bc==")]),
            ("key=a\nb", &[("key", "a\nb")]),
            ("key=value\\;", &[("key", "value;")]),
            ("key=\"value\"", &[("key", "\"value\"")]),
            ("key=\"\"value\"\"", &[("key", "\"\"value\"\"")]),
            ("\"key=value\"", &[("\"key", "value\"")]),
            ("key=value;key=value", &[("key", "value"), ("key", "value")]),
            (
                "key=value1;key=value2",
                &[("key", "value1"), ("key", "value2")],
            ),
            (
                "key1=value1;key2=value2;key1=value3",
                &[("key1", "value1"), ("key2", "value2"), ("key1", "value3")],
            ),
            ("\\;=\\;;\\\\=\\;", &[(";", ";"), ("\\", ";")]),
            ("a\\=b=c", &[("a=b", "c")]),
            (
                "shared-secret=rahasia;secrets-file=/tmp/x",
                &[("shared-secret", "rahasia"), ("secrets-file", "/tmp/x")],
            ),
            ("rocks=20;height=5.6", &[("rocks", "20"), ("height", "5.6")]),
            (
                "k1=v\\;1;k2=back\\\\slash;k3=x=y;cert=AAAA",
                &[
                    ("k1", "v;1"),
                    ("k2", "back\\slash"),
                    ("k3", "x=y"),
                    ("cert", "AAAA"),
                ],
            ),
        ];
        for (input, want) in cases {
            let got = Args::parse_client(input.as_bytes()).unwrap();
            assert_eq!(pairs(&got), p(want), "input {input:?}");
        }
        let multi = Args::parse_client(b"key1=value1;key2=value2;key1=value3").unwrap();
        assert_eq!(multi.get("key1"), Some("value1"));
        assert_eq!(
            multi.get_all("key1").collect::<Vec<_>>(),
            ["value1", "value3"]
        );
    }

    #[test]
    fn a2_client_args_encoding_matches_arti() {
        assert_eq!(Args::new().encode_client(), "");
        assert_eq!(
            Args::new().with("hello", "world").encode_client(),
            "hello=world"
        );
        let a = Args::new()
            .with("hey", "verden")
            .with("hello", "world")
            .with("selv", "tak");
        assert_eq!(a.encode_client(), "hey=verden;hello=world;selv=tak");
        assert_eq!(
            Args::new()
                .with("semi;colon", "equals=sign")
                .encode_client(),
            "semi\\;colon=equals=sign"
        );
        let b = Args::new()
            .with("equals=sign", "semi;colon")
            .with("also", "back\\slash");
        assert_eq!(
            b.encode_client(),
            "equals\\=sign=semi\\;colon;also=back\\\\slash"
        );
    }

    #[test]
    fn v1_smethod_args_encoding_vectors() {
        assert_eq!(Args::new().encode_smethod(), "");
        let mut a = Args::new();
        for k in ["j", "k"] {
            for v in ["v1", "v2", "v3"] {
                a.push(k, v);
            }
        }
        assert_eq!(a.encode_smethod(), "j=v1,j=v2,j=v3,k=v1,k=v2,k=v3");
        let b = Args::new()
            .with("=,\\", "=")
            .with("=,\\", ",")
            .with("=,\\", "\\");
        assert_eq!(
            b.encode_smethod(),
            "\\=\\,\\\\=\\=,\\=\\,\\\\=\\,,\\=\\,\\\\=\\\\"
        );
        assert_eq!(
            Args::new().with("secret", "yes").encode_smethod(),
            "secret=yes"
        );
        let c = Args::new().with("secret", "nou").with("cache", "/tmp/c");
        assert_eq!(c.encode_smethod(), "cache=/tmp/c,secret=nou");
        let d = Args::new().with("cert", "abc=,def").with("iat-mode", "0");
        assert_eq!(d.encode_smethod(), "cert=abc\\=\\,def,iat-mode=0");
    }

    #[test]
    fn v3_smethod_args_decoding_vectors() {
        assert_eq!(
            pairs(&Args::parse_smethod("N=13").unwrap()),
            p(&[("N", "13")])
        );
        let obfs4 = "cert=HszPy3vWfjsESCEOo9ZBkRv6zQ/1mGHzc8arF0y2SpwFr3WhsMu8rK0zyaoyERfbz3ddFw,iat-mode=0";
        let a = Args::parse_smethod(obfs4).unwrap();
        assert_eq!(a.get("iat-mode"), Some("0"));
        assert_eq!(
            Args::parse_smethod("iat-mode=0\\"),
            Err(ArgsError::TrailingBackslash)
        );
        assert_eq!(
            Args::parse_smethod("iat-mode=fo=o"),
            Err(ArgsError::EqualsInValue("iat-mode".into()))
        );
        assert!(matches!(
            Args::parse_smethod("iat-mode"),
            Err(ArgsError::NoEquals(_))
        ));
    }

    #[test]
    fn client_args_reject_non_utf8_and_oversize() {
        assert_eq!(Args::parse_client(b"k=\xff"), Err(ArgsError::NotUtf8));
        assert_eq!(
            Args::parse_client(&vec![b'a'; MAX_ARGS_LEN + 1]),
            Err(ArgsError::TooLong)
        );
    }

    #[test]
    fn debug_hides_values() {
        let a = Args::new().with("cert", "SECRET");
        assert!(!format!("{a:?}").contains("SECRET"));
    }

    fn arb_args() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("[a-z=;,\\\\ ]{1,8}", "[a-z=;,\\\\ \n]{0,8}"), 0..6)
    }

    proptest! {
        #[test]
        fn a2_a3_client_roundtrip(list in arb_args()) {
            let args: Args = list.iter().cloned().collect();
            let parsed = Args::parse_client(args.encode_client().as_bytes()).unwrap();
            prop_assert_eq!(pairs(&parsed), list);
        }

        #[test]
        fn v1_v3_smethod_roundtrip(list in arb_args()) {
            let args: Args = list.iter().cloned().collect();
            let parsed = Args::parse_smethod(&args.encode_smethod()).unwrap();
            let mut want = list.clone();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(pairs(&parsed), want);
        }

        #[test]
        fn parse_client_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Args::parse_client(&bytes);
        }
    }
}
