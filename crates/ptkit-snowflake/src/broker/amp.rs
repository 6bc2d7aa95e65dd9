//! The AMP cache rendezvous (spec §3.1): the client's `1.0` message travels base64url-encoded
//! in a GET path, and the response comes back "AMP-armored": standard base64 in `<pre>`
//! elements of an AMP HTML page. Sans-IO.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::error::MessageError;

/// Characters of base64 text per whitespace-separated chunk (AMP caches may cut long words).
const BYTES_PER_CHUNK: usize = 32;
/// Largest text inside one `<pre>` element.
const ELEMENT_SIZE_LIMIT: usize = 32 * 1024;
/// Chunks per `<pre>` element, so an element stays under [`ELEMENT_SIZE_LIMIT`].
const CHUNKS_PER_ELEMENT: usize = (ELEMENT_SIZE_LIMIT - 1) / (BYTES_PER_CHUNK + 1);
/// Largest armored document [`armor_decode`] accepts.
pub const MAX_ARMOR_LEN: usize = 1 << 20;

const BOILERPLATE_START: &str = "<!doctype html>\n<html amp>\n<head>\n<meta charset=\"utf-8\">\n<script async src=\"https://cdn.ampproject.org/v0.js\"></script>\n<link rel=\"canonical\" href=\"#\">\n<meta name=\"viewport\" content=\"width=device-width\">\n<style amp-boilerplate>body{-webkit-animation:-amp-start 8s steps(1,end) 0s 1 normal both;-moz-animation:-amp-start 8s steps(1,end) 0s 1 normal both;-ms-animation:-amp-start 8s steps(1,end) 0s 1 normal both;animation:-amp-start 8s steps(1,end) 0s 1 normal both}@-webkit-keyframes -amp-start{from{visibility:hidden}to{visibility:visible}}@-moz-keyframes -amp-start{from{visibility:hidden}to{visibility:visible}}@-ms-keyframes -amp-start{from{visibility:hidden}to{visibility:visible}}@-o-keyframes -amp-start{from{visibility:hidden}to{visibility:visible}}@keyframes -amp-start{from{visibility:hidden}to{visibility:visible}}</style><noscript><style amp-boilerplate>body{-webkit-animation:none;-moz-animation:none;-ms-animation:none;animation:none}</style></noscript>\n</head>\n<body>\n";
const BOILERPLATE_END: &str = "</body>\n</html>";

/// Decodes the part of an AMP request path after `/amp/client/`: the format byte `0`, any
/// cache-breaking padding up to the last `/`, then base64url (no padding) of the message.
pub fn decode_path(path: &str) -> Result<Vec<u8>, MessageError> {
    let rest = path.strip_prefix('0').ok_or(MessageError::BadAmpPath)?;
    let slash = rest.rfind('/').ok_or(MessageError::BadAmpPath)?;
    URL_SAFE_NO_PAD
        .decode(&rest[slash + 1..])
        .map_err(|_| MessageError::BadAmpPath)
}

/// Encodes `data` as an AMP path suffix with the given cache breaker (the client uses 9
/// random bytes).
pub fn encode_path(data: &[u8], cache_breaker: &[u8]) -> String {
    format!(
        "0{}/{}",
        URL_SAFE_NO_PAD.encode(cache_breaker),
        URL_SAFE_NO_PAD.encode(data)
    )
}

/// AMP-armors `data`: the boilerplate, then `<pre>` elements holding the version byte `0`
/// and standard base64 of `data` in 32-character chunks separated by newlines.
pub fn armor_encode(data: &[u8]) -> String {
    let mut inner = String::with_capacity(1 + data.len().div_ceil(3) * 4);
    inner.push('0');
    inner.push_str(&STANDARD.encode(data));
    let mut out = String::with_capacity(BOILERPLATE_START.len() + inner.len() * 34 / 32 + 64);
    out.push_str(BOILERPLATE_START);
    let mut chunks_in_element = 0;
    let mut open = false;
    for chunk in inner.as_bytes().chunks(BYTES_PER_CHUNK) {
        if !open {
            out.push_str("<pre>\n");
            open = true;
        }
        // base64 and '0' are ASCII, so chunk boundaries are char boundaries.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        if chunk.len() == BYTES_PER_CHUNK {
            out.push('\n');
            chunks_in_element += 1;
            if chunks_in_element >= CHUNKS_PER_ELEMENT {
                out.push_str("</pre>\n");
                chunks_in_element = 0;
                open = false;
            }
        } else {
            out.push_str("\n</pre>\n");
            open = false;
        }
    }
    if open {
        out.push_str("</pre>\n");
    }
    out.push_str(BOILERPLATE_END);
    out
}

/// Decodes an AMP-armored document: the text of all `<pre>` elements with ASCII whitespace
/// removed, which must be `0` followed by standard base64.
///
/// This reads the subset of HTML that [`armor_encode`] (and the Go encoder) produce, tolerant
/// of whitespace changes and attributes on `<pre>`; nested or unclosed `<pre>` elements are
/// errors.
pub fn armor_decode(html: &[u8]) -> Result<Vec<u8>, MessageError> {
    if html.len() > MAX_ARMOR_LEN {
        return Err(MessageError::BadArmor("document too large"));
    }
    let mut text = Vec::new();
    let mut i = 0;
    let mut active = false;
    while i < html.len() {
        if html[i] == b'<' {
            let rest = &html[i..];
            if starts_with_tag(rest, b"<pre") {
                if active {
                    return Err(MessageError::BadArmor("nested <pre>"));
                }
                active = true;
            } else if starts_with_tag(rest, b"</pre") {
                if !active {
                    return Err(MessageError::BadArmor("stray </pre>"));
                }
                active = false;
            }
            let end = rest
                .iter()
                .position(|&b| b == b'>')
                .ok_or(MessageError::BadArmor("unterminated tag"))?;
            i += end + 1;
            continue;
        }
        if active && !matches!(html[i], b'\t' | b'\n' | b'\x0c' | b'\r' | b' ') {
            text.push(html[i]);
        }
        i += 1;
    }
    if active {
        return Err(MessageError::BadArmor("missing </pre>"));
    }
    match text.split_first() {
        Some((b'0', b64)) => STANDARD
            .decode(b64)
            .map_err(|_| MessageError::BadArmor("bad base64")),
        Some(_) => Err(MessageError::BadArmor("unknown armor version")),
        None => Err(MessageError::BadArmor("no data")),
    }
}

fn starts_with_tag(rest: &[u8], tag: &[u8]) -> bool {
    rest.len() > tag.len()
        && rest[..tag.len()].eq_ignore_ascii_case(tag)
        && matches!(
            rest[tag.len()],
            b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'/'
        )
}
