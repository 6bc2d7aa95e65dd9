//! Sans-IO codecs for the broker's signalling messages (spec §3.1–3.3): bytes in, typed
//! requests out; typed responses in, bytes out. No sockets, no clock.
//!
//! Decoding follows Go's `encoding/json` where a peer could notice: field names match
//! case-insensitively (an exact match wins), unknown fields are ignored, `null` leaves a
//! string field empty, and a field of the wrong type rejects the message. Responses use
//! exactly the casing of the Go broker (`answer`/`error` for clients, `Status`, `Offer`,
//! `NAT`, `RelayURL` for proxies). SDP strings are passed through verbatim.

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::MessageError;

/// The fingerprint a client means when it sends none (the Tor Project's Snowflake bridge).
pub const DEFAULT_BRIDGE_FINGERPRINT: &str = "2B280B23E1107BB62ABFC40DDCC8824814F80A72";

/// The client protocol version line the broker understands.
pub const CLIENT_VERSION: &str = "1.0";

/// Error text for a client when no proxy is available.
pub const ERR_NO_PROXIES: &str = "no snowflake proxies currently available";
/// Error text for a client whose proxy did not answer in time.
pub const ERR_TIMED_OUT: &str = "timed out waiting for answer!";
/// Error text for a client turned away because too many clients are already waiting
/// (a ptkit limit; the Go broker has none).
pub const ERR_OVERLOADED: &str = "broker overloaded, try again later";

/// Proxy poll status: a client was matched.
pub const STATUS_MATCH: &str = "client match";
/// Proxy poll status: no client within the poll time.
pub const STATUS_NO_MATCH: &str = "no match";
/// Proxy poll status: the proxy's relay pattern is narrower than the broker's.
pub const STATUS_BAD_RELAY_PATTERN: &str = "incorrect relay pattern";
/// Answer status: the answer was handed to the waiting client.
pub const STATUS_SUCCESS: &str = "success";
/// Answer status: the client is no longer waiting.
pub const STATUS_CLIENT_GONE: &str = "client gone";

/// Proxy types the Go broker counts by name; any other type is counted as `unknown`.
pub const KNOWN_PROXY_TYPES: [&str; 4] = ["badge", "iptproxy", "standalone", "webext"];

/// A NAT type as reported by clients and proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nat {
    /// Not known (the NAT check failed or was not run).
    Unknown,
    /// Behind a NAT that needs an unrestricted peer.
    Restricted,
    /// Reachable from any peer.
    Unrestricted,
}

impl Nat {
    /// All NAT types, in label order.
    pub const ALL: [Nat; 3] = [Nat::Restricted, Nat::Unknown, Nat::Unrestricted];

    /// The wire word (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Nat::Unknown => "unknown",
            Nat::Restricted => "restricted",
            Nat::Unrestricted => "unrestricted",
        }
    }

    /// Parses a wire word; the empty string means unknown.
    pub fn parse(s: &str) -> Option<Nat> {
        match s {
            "" | "unknown" => Some(Nat::Unknown),
            "restricted" => Some(Nat::Restricted),
            "unrestricted" => Some(Nat::Unrestricted),
            _ => None,
        }
    }
}

/// A bridge fingerprint: 20 bytes (RSA identity) or 32 bytes (ed25519 identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(Vec<u8>);

impl Fingerprint {
    /// Parses hex (either case) of exactly 20 or 32 bytes.
    pub fn from_hex(s: &str) -> Option<Fingerprint> {
        if s.len() != 40 && s.len() != 64 {
            return None;
        }
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() / 2);
        for pair in bytes.chunks_exact(2) {
            let hi = hex_digit(pair[0])?;
            let lo = hex_digit(pair[1])?;
            out.push(hi << 4 | lo);
        }
        Some(Fingerprint(out))
    }

    /// The default bridge's fingerprint.
    pub fn default_bridge() -> Fingerprint {
        // Infallible: the constant is 40 hex digits.
        Fingerprint::from_hex(DEFAULT_BRIDGE_FINGERPRINT).unwrap_or(Fingerprint(Vec::new()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Upper-case hex, as tor prints fingerprints.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02X}")).collect()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Which form a client poll arrived in; it decides how the response is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientForm {
    /// `1.0\n{json}`: the answer or error goes back as JSON with status 200.
    V1,
    /// Pre-1.0 raw offer with the NAT type in the `Snowflake-NAT-Type` header: the raw answer
    /// with 200, or 503 (no proxies) / 504 (timeout).
    Legacy,
}

/// A decoded client poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPoll {
    /// The form it arrived in.
    pub form: ClientForm,
    /// The offer: a JSON text `{"type":"offer","sdp":...}`, passed to the proxy verbatim.
    pub offer: String,
    /// The client's NAT type.
    pub nat: Nat,
    /// The bridge the client wants.
    pub fingerprint: Fingerprint,
}

/// Decodes a `POST /client` body. A body starting with `{` is the legacy raw-offer form,
/// whose NAT type comes from the `Snowflake-NAT-Type` header (`nat_header`).
pub fn decode_client_poll(
    body: &[u8],
    nat_header: Option<&str>,
) -> Result<ClientPoll, MessageError> {
    if body.first() == Some(&b'{') {
        let nat = Nat::parse(nat_header.unwrap_or("")).ok_or(MessageError::BadNat)?;
        return Ok(ClientPoll {
            form: ClientForm::Legacy,
            offer: String::from_utf8_lossy(body).into_owned(),
            nat,
            fingerprint: Fingerprint::default_bridge(),
        });
    }
    decode_client_poll_v1(body)
}

/// Decodes the `1.0\n{json}` client message (also what an AMP path carries).
pub fn decode_client_poll_v1(body: &[u8]) -> Result<ClientPoll, MessageError> {
    let newline = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(MessageError::UnsupportedVersion)?;
    if &body[..newline] != CLIENT_VERSION.as_bytes() {
        return Err(MessageError::UnsupportedVersion);
    }
    let object = parse_object(&body[newline + 1..])?;
    let offer = string_field(&object, "offer")?;
    let nat = string_field(&object, "nat")?;
    let fingerprint = string_field(&object, "fingerprint")?;
    if offer.is_empty() {
        return Err(MessageError::NoOffer);
    }
    let fingerprint = if fingerprint.is_empty() {
        Fingerprint::default_bridge()
    } else {
        Fingerprint::from_hex(&fingerprint).ok_or(MessageError::BadFingerprint)?
    };
    let nat = Nat::parse(&nat).ok_or(MessageError::BadNat)?;
    Ok(ClientPoll {
        form: ClientForm::V1,
        offer,
        nat,
        fingerprint,
    })
}

/// Encodes a client poll in the `1.0` form (what the Go client sends; for tests and tools).
pub fn encode_client_poll(offer: &str, nat: Nat, fingerprint: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Req<'a> {
        offer: &'a str,
        nat: &'a str,
        fingerprint: &'a str,
    }
    let mut out = format!("{CLIENT_VERSION}\n").into_bytes();
    out.extend(to_json(&Req {
        offer,
        nat: nat.as_str(),
        fingerprint,
    }));
    out
}

/// What the broker tells a client (the JSON of the `1.0` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientResponse {
    /// The proxy's answer (a JSON text `{"type":"answer","sdp":...}`), verbatim.
    Answer(String),
    /// An error text (one of the `ERR_*` constants or a decode error).
    Error(String),
}

/// Encodes a client response: `{"answer":"..."}` or `{"error":"..."}`.
pub fn encode_client_response(response: &ClientResponse) -> Vec<u8> {
    #[derive(Serialize)]
    struct Resp<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let (answer, error) = match response {
        ClientResponse::Answer(a) => (Some(a.as_str()), None),
        ClientResponse::Error(e) => (None, Some(e.as_str())),
    };
    to_json(&Resp { answer, error })
}

/// Decodes a client response (for tests and tools). A response with neither field set is an
/// error, as in the Go client.
pub fn decode_client_response(body: &[u8]) -> Result<ClientResponse, MessageError> {
    let object = parse_object(body)?;
    let answer = string_field(&object, "answer")?;
    let error = string_field(&object, "error")?;
    if !error.is_empty() {
        Ok(ClientResponse::Error(error))
    } else if !answer.is_empty() {
        Ok(ClientResponse::Answer(answer))
    } else {
        Err(MessageError::Json("received empty broker response".into()))
    }
}

/// A decoded `POST /proxy` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPoll {
    /// The proxy's session id for this poll.
    pub sid: String,
    /// The proxy type, normalized to one of [`KNOWN_PROXY_TYPES`] or `unknown`.
    pub proxy_type: &'static str,
    /// The proxy's NAT type (values other than the three known ones count as unknown).
    pub nat: Nat,
    /// The proxy's current client count (rounded down to a multiple of 8 by the proxy).
    pub clients: u32,
    /// `AcceptedRelayPattern`: `None` for a legacy proxy that does not send the field.
    pub accepted_relay_pattern: Option<String>,
}

/// Decodes a proxy poll. Errors mean HTTP 400.
pub fn decode_proxy_poll(body: &[u8]) -> Result<ProxyPoll, MessageError> {
    let object = parse_object(body)?;
    let sid = string_field(&object, "Sid")?;
    let version = string_field(&object, "Version")?;
    let proxy_type = string_field(&object, "Type")?;
    let nat = string_field(&object, "NAT")?;
    let clients = match field(&object, "Clients") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u32::try_from(u).unwrap_or(u32::MAX)
            } else if n.as_i64().is_some() {
                0
            } else {
                return Err(MessageError::Json("Clients is not an integer".into()));
            }
        }
        Some(_) => return Err(MessageError::Json("Clients is not a number".into())),
    };
    let accepted_relay_pattern = match field(&object, "AcceptedRelayPattern") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(MessageError::Json(
                "AcceptedRelayPattern is not a string".into(),
            ));
        }
    };
    if version.split('.').next() != Some("1") {
        return Err(MessageError::UnknownVersion);
    }
    if sid.is_empty() {
        return Err(MessageError::NoSid);
    }
    Ok(ProxyPoll {
        sid,
        proxy_type: normalize_proxy_type(&proxy_type),
        nat: Nat::parse(&nat).unwrap_or(Nat::Unknown),
        clients,
        accepted_relay_pattern,
    })
}

/// Maps a proxy type to one of [`KNOWN_PROXY_TYPES`] or `unknown`.
pub fn normalize_proxy_type(t: &str) -> &'static str {
    KNOWN_PROXY_TYPES
        .iter()
        .find(|k| **k == t)
        .copied()
        .unwrap_or("unknown")
}

/// Encodes a proxy poll as the 2.5.1 proxy does (for tests and tools).
pub fn encode_proxy_poll(
    sid: &str,
    proxy_type: &str,
    nat: Nat,
    clients: u32,
    accepted_relay_pattern: Option<&str>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Req<'a> {
        sid: &'a str,
        version: &'a str,
        #[serde(rename = "Type")]
        proxy_type: &'a str,
        #[serde(rename = "NAT")]
        nat: &'a str,
        clients: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        accepted_relay_pattern: Option<&'a str>,
    }
    to_json(&Req {
        sid,
        version: "1.3",
        proxy_type,
        nat: nat.as_str(),
        clients,
        accepted_relay_pattern,
    })
}

/// What the broker tells a polling proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyResponse {
    /// `{"Status":"no match"}`.
    NoMatch,
    /// `{"Status":"client match","Offer":...,"NAT":...,"RelayURL":...}`.
    Match {
        /// The client's offer, verbatim.
        offer: String,
        /// The client's NAT type.
        nat: Nat,
        /// The WebSocket URL of the client's bridge (may be empty).
        relay_url: String,
    },
    /// `{"Status":"incorrect relay pattern"}`.
    IncorrectRelayPattern,
}

/// Encodes a proxy poll response with the Go broker's field casing.
pub fn encode_proxy_response(response: &ProxyResponse) -> Vec<u8> {
    #[derive(Serialize)]
    struct Resp<'a> {
        #[serde(rename = "Status")]
        status: &'a str,
        #[serde(rename = "Offer", skip_serializing_if = "Option::is_none")]
        offer: Option<&'a str>,
        #[serde(rename = "NAT", skip_serializing_if = "Option::is_none")]
        nat: Option<&'a str>,
        #[serde(rename = "RelayURL", skip_serializing_if = "Option::is_none")]
        relay_url: Option<&'a str>,
    }
    let resp = match response {
        ProxyResponse::NoMatch => Resp {
            status: STATUS_NO_MATCH,
            offer: None,
            nat: None,
            relay_url: None,
        },
        ProxyResponse::IncorrectRelayPattern => Resp {
            status: STATUS_BAD_RELAY_PATTERN,
            offer: None,
            nat: None,
            relay_url: None,
        },
        ProxyResponse::Match {
            offer,
            nat,
            relay_url,
        } => Resp {
            status: STATUS_MATCH,
            offer: Some(offer),
            nat: Some(nat.as_str()),
            relay_url: Some(relay_url),
        },
    };
    to_json(&resp)
}

/// Decodes a proxy poll response as the 2.5.1 proxy does (for tests and tools): any status
/// other than `client match` and `no match` is an error, and so is a match without an offer.
pub fn decode_proxy_response(body: &[u8]) -> Result<ProxyResponse, MessageError> {
    let object = parse_object(body)?;
    let status = string_field(&object, "Status")?;
    let offer = string_field(&object, "Offer")?;
    let nat = string_field(&object, "NAT")?;
    let relay_url = string_field(&object, "RelayURL")?;
    match status.as_str() {
        STATUS_MATCH if offer.is_empty() => Err(MessageError::NoOffer),
        STATUS_MATCH => Ok(ProxyResponse::Match {
            offer,
            nat: Nat::parse(&nat).unwrap_or(Nat::Unknown),
            relay_url,
        }),
        STATUS_NO_MATCH => Ok(ProxyResponse::NoMatch),
        STATUS_BAD_RELAY_PATTERN => Ok(ProxyResponse::IncorrectRelayPattern),
        _ => Err(MessageError::Json(format!("unexpected status {status:?}"))),
    }
}

/// A decoded `POST /answer` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAnswer {
    /// The session id of the poll that received the offer.
    pub sid: String,
    /// The answer: a JSON text `{"type":"answer","sdp":...}`, passed to the client verbatim.
    pub answer: String,
}

/// Decodes a proxy answer. Errors mean HTTP 400.
pub fn decode_proxy_answer(body: &[u8]) -> Result<ProxyAnswer, MessageError> {
    let object = parse_object(body)?;
    let version = string_field(&object, "Version")?;
    let sid = string_field(&object, "Sid")?;
    let answer = string_field(&object, "Answer")?;
    if version.split('.').next() != Some("1") {
        return Err(MessageError::UnknownVersion);
    }
    if sid.is_empty() || answer.is_empty() {
        return Err(MessageError::NoSidOrAnswer);
    }
    Ok(ProxyAnswer { sid, answer })
}

/// Encodes a proxy answer as the 2.5.1 proxy does (for tests and tools).
pub fn encode_proxy_answer(sid: &str, answer: &str) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Req<'a> {
        version: &'a str,
        sid: &'a str,
        answer: &'a str,
    }
    to_json(&Req {
        version: "1.3",
        sid,
        answer,
    })
}

/// Encodes the answer response: `{"Status":"success"}` or `{"Status":"client gone"}`.
pub fn encode_answer_response(delivered: bool) -> Vec<u8> {
    let status = if delivered {
        STATUS_SUCCESS
    } else {
        STATUS_CLIENT_GONE
    };
    format!("{{\"Status\":\"{status}\"}}").into_bytes()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs of strings and integers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, MessageError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(MessageError::Json("message is not a JSON object".into())),
        Err(e) => Err(MessageError::Json(e.to_string())),
    }
}

/// Go's field matching: an exact key wins, else the first case-insensitive match.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<String, MessageError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(MessageError::Json(format!("{name} is not a string"))),
    }
}
