//! Sans-IO: the HTTP/1.1 upgrade handshake of RFC 6455 §4, both sides, as pure functions over
//! `http` types. hyper (server) and tokio-websockets (client) move the bytes.

use base64::Engine;
use http::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, StatusCode, Version};

use crate::proto::{BASE64_SUBPROTOCOL, Framing};

/// The GUID of RFC 6455 §1.3.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// True when a comma-separated header list (over all values of `name`) holds `token`
/// (ASCII case-insensitive).
pub fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The subprotocols a client offered, in order.
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A refused upgrade: the HTTP status and extra response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status to answer with.
    pub status: StatusCode,
    /// Why (for logs and the response body).
    pub why: &'static str,
    /// Extra headers (e.g. `Sec-WebSocket-Version: 13` with 426).
    pub headers: Vec<(http::header::HeaderName, HeaderValue)>,
}

impl Rejection {
    fn new(status: StatusCode, why: &'static str) -> Self {
        Rejection {
            status,
            why,
            headers: Vec::new(),
        }
    }
}

/// An accepted upgrade: what to put in the 101 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The negotiated framing (`Base64` when the client offered `base64`).
    pub framing: Framing,
}

/// Checks an upgrade request (RFC 6455 §4.2.1) against the server's `path` (any path when
/// `None`). Order of checks and answers: wrong path 404; method other than GET 405; HTTP
/// version other than 1.1, missing `Upgrade: websocket` or `Connection: upgrade` 400;
/// `Sec-WebSocket-Version` other than 13 (or missing) 426 with `Sec-WebSocket-Version: 13`;
/// missing or malformed `Sec-WebSocket-Key` 400.
pub fn check_request(
    method: &Method,
    version: Version,
    path: &str,
    headers: &HeaderMap,
    want_path: Option<&str>,
) -> Result<Accept, Rejection> {
    if let Some(want) = want_path
        && path != want
    {
        return Err(Rejection::new(StatusCode::NOT_FOUND, "no such path"));
    }
    if method != Method::GET {
        let mut r = Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "method is not GET");
        r.headers
            .push((http::header::ALLOW, HeaderValue::from_static("GET")));
        return Err(r);
    }
    if version != Version::HTTP_11 {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "not HTTP/1.1"));
    }
    if !has_token(headers, UPGRADE, "websocket") {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "not a websocket upgrade",
        ));
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "Connection lacks upgrade",
        ));
    }
    let version_ok = headers
        .get_all(SEC_WEBSOCKET_VERSION)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() == b"13");
    if !version_ok {
        let mut r = Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported websocket version",
        );
        r.headers
            .push((SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")));
        return Err(r);
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes().trim_ascii(),
        _ => return Err(Rejection::new(StatusCode::BAD_REQUEST, "bad key")),
    };
    let key_ok = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(|k| k.len() == 16)
        .unwrap_or(false);
    if !key_ok {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "bad key"));
    }
    let framing = if offered_subprotocols(headers).contains(&BASE64_SUBPROTOCOL) {
        Framing::Base64
    } else {
        Framing::Binary
    };
    Ok(Accept {
        accept: accept_key(key),
        framing,
    })
}

/// Checks the headers of a 101 answer beyond what tokio-websockets checks (it verifies only
/// the status and `Sec-WebSocket-Accept`): `Upgrade: websocket`, `Connection: upgrade`, no
/// extension we did not offer, and a subprotocol only if we offered it. Returns the framing.
pub fn check_response(headers: &HeaderMap, offered_base64: bool) -> Result<Framing, String> {
    if !has_token(headers, UPGRADE, "websocket") {
        return Err("101 answer without Upgrade: websocket".into());
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err("101 answer without Connection: upgrade".into());
    }
    if headers.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        return Err("server selected an extension we did not offer".into());
    }
    let chosen = offered_subprotocols(headers);
    match (offered_base64, chosen.as_slice()) {
        (_, []) if !offered_base64 => Ok(Framing::Binary),
        (true, [p]) if *p == BASE64_SUBPROTOCOL => Ok(Framing::Base64),
        (true, []) => Err("server did not accept the base64 subprotocol".into()),
        _ => Err("server selected a subprotocol we did not offer".into()),
    }
}

/// The value of `Sec-WebSocket-Accept` in a response, for tests.
pub fn response_accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(SEC_WEBSOCKET_ACCEPT)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "example"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    /// RFC 6455 §1.3 sample key and accept value.
    #[test]
    fn rfc6455_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// The proposal's two example handshakes (binary and base64).
    #[test]
    fn proposal_example_handshakes() {
        assert_eq!(
            accept_key(b"mzo2xSF9N8VUxuefqO0RSw=="),
            "fM0KjD7ixoxkl4PEXU6tNaTveSg="
        );
        assert_eq!(
            accept_key(b"k5Ybhw0XBDeBfmda1J9ooQ=="),
            "LYWpflPUHdal8U1BLPXWR3iqUrI="
        );
        let mut h = req(GOOD);
        let a = check_request(&Method::GET, Version::HTTP_11, "/", &h, None).unwrap();
        assert_eq!(a.framing, Framing::Binary);
        h.append(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("x, base64"),
        );
        let a = check_request(&Method::GET, Version::HTTP_11, "/", &h, None).unwrap();
        assert_eq!(a.framing, Framing::Base64);
        assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc6455_4_4_version_mismatch_is_426() {
        let mut h = req(&GOOD[..4]);
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let r = check_request(&Method::GET, Version::HTTP_11, "/", &h, None).unwrap_err();
        assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.headers[0].1, "13");
    }

    #[test]
    fn request_refusals() {
        let h = req(GOOD);
        let st = |m: Method, v: Version, p: &str, h: &HeaderMap, w: Option<&str>| {
            check_request(&m, v, p, h, w)
                .map(|_| ())
                .unwrap_err()
                .status
        };
        assert_eq!(
            st(Method::GET, Version::HTTP_11, "/x", &h, Some("/ws")),
            StatusCode::NOT_FOUND
        );
        assert!(check_request(&Method::GET, Version::HTTP_11, "/ws", &h, Some("/ws")).is_ok());
        assert_eq!(
            st(Method::POST, Version::HTTP_11, "/", &h, None),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            st(Method::GET, Version::HTTP_10, "/", &h, None),
            StatusCode::BAD_REQUEST
        );
        let no_upgrade = req(&[GOOD[0], GOOD[2], GOOD[3], GOOD[4]]);
        assert_eq!(
            st(Method::GET, Version::HTTP_11, "/", &no_upgrade, None),
            StatusCode::BAD_REQUEST
        );
        let bad_key = req(&[
            GOOD[0],
            GOOD[1],
            GOOD[2],
            GOOD[3],
            ("sec-websocket-key", "abc"),
        ]);
        assert_eq!(
            st(Method::GET, Version::HTTP_11, "/", &bad_key, None),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn response_checks() {
        let ok = req(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
        assert_eq!(check_response(&ok, false), Ok(Framing::Binary));
        assert!(check_response(&ok, true).is_err());
        let mut b64 = ok.clone();
        b64.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("base64"));
        assert_eq!(check_response(&b64, true), Ok(Framing::Base64));
        assert!(check_response(&b64, false).is_err());
        let mut ext = ok.clone();
        ext.insert(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        assert!(check_response(&ext, false).is_err());
        assert!(check_response(&req(&[("connection", "Upgrade")]), false).is_err());
    }
}
