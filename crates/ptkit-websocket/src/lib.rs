//! # ptkit-websocket
//!
//! The `websocket` pluggable transport: Fifield's WebSocket PT proposal (2012,
//! `shared/seeds/002`) on RFC 6455, both halves, with the `base64` subprotocol, `ws` and `wss`.
//! The bytes of the tunnelled stream travel in WebSocket data messages; message boundaries
//! mean nothing.
//!
//! ## Server ([`WebSocketServer`], `ServerTransport` named `websocket`)
//!
//! `listen(ServerConfig)` binds TCP; `accept` returns as soon as a TCP connection is accepted
//! and the returned `Pending` future runs TLS (when configured) and the HTTP/1.1 upgrade
//! (hyper), bounded by `handshake-timeout`. Rules:
//! - any path is upgraded, unless `path` is set: then other paths get **404**;
//! - only GET + HTTP/1.1 + `Upgrade: websocket` + `Connection: upgrade` + a 16-byte key
//!   (**400** otherwise, 405 for other methods); `Sec-WebSocket-Version` must be 13, else
//!   **426** with `Sec-WebSocket-Version: 13`; no Origin check;
//! - the `base64` subprotocol is selected whenever the client offers it;
//! - slowloris: hyper's header read timeout (= `handshake-timeout`), at most
//!   `max-header-bytes` of request head (431 above) and 64 header fields;
//! - the client address (`ClientMeta::client_addr`, ExtORPort USERADDR): see [`addr`]
//!   (`client_ip` query parameter as Snowflake's server reads it → `ip:1`; `Forwarded` /
//!   `X-Forwarded-For` only from `trusted-proxies`; else the TCP peer).
//!
//! Server options (`ServerConfig::options`, e.g. `TOR_PT_SERVER_TRANSPORT_OPTIONS`
//! `websocket:path=/ws;websocket:max-message=65536`), unknown keys refused:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `path` | any | the only path upgraded (starts with `/`) |
//! | `max-message` | 65536 | message limit, decoded payload bytes (1500 ..= 16 MiB) |
//! | `trusted-proxies` | none | IPs/CIDRs (comma or space separated, repeatable) whose forwarding headers are believed |
//! | `client-ip` | 1 | honour the `client_ip` query parameter (0 to ignore it) |
//! | `tls-cert`, `tls-key` | none | PEM chain and key: serve `wss` |
//! | `url` | none | the URL advertised to clients (`SMETHOD … ARGS:url=…`) |
//! | `handshake-timeout` | 10 | seconds for TLS + upgrade (also the header read timeout) |
//! | `max-header-bytes` | 16384 | request head cap (8192 ..= 1 MiB) |
//!
//! `client_args()` advertises `url` when configured, else `path` (when set) and `tls=1` (when
//! TLS is on). `tls-cert`/`tls-key` are loaded with `ptkit-tls` into a hot-swap resolver.
//! For ACME or a resolver the caller keeps fresh: [`WebSocketServer::with_acceptor`]
//! (a `ptkit_tls::Acceptor`, ALPN `http/1.1`); any rustls config:
//! [`WebSocketServer::with_tls_config`].
//!
//! ## Client ([`WebSocketClient`], `ClientTransport` named `websocket`)
//!
//! Per-connection SOCKS arguments ([`ConnectSettings`]), unknown keys refused:
//! - `url=ws://…` or `wss://…` — default `ws://<SOCKS target><path>` (`wss` with `tls=1`,
//!   `path=` defaults to `/`). The URL's authority is sent as the `Host` header and its path
//!   and query as the request target;
//! - **TCP destination**: the SOCKS target when there is one (Tor always passes the bridge
//!   address), else the URL's host and port. It is dialled through `ClientConfig::dialer`, so
//!   `TOR_PT_PROXY` and outbound bind addresses apply;
//! - `front=NAME` (domain fronting, `wss` only): NAME is the **TLS SNI and the name the
//!   certificate is verified against**; the `Host` header stays the URL's authority, hidden
//!   inside TLS. Without `front`, SNI is the URL host (none for an IP literal);
//! - `base64=1`: offer the `base64` subprotocol and send base64 text messages; the connect
//!   fails if the server does not select it;
//! - any answer other than 101 fails the connect with the status in the error (redirects are
//!   never followed); the 101 must carry `Upgrade`/`Connection`, the right accept key, no
//!   extension and no subprotocol we did not offer; at most 16 KiB of answer is read.
//!
//! Transport-wide client options ([`ClientOptions`]): `max-message` (as above), `ca-file`
//! (PEM roots for `wss`, used *instead of* the system store; default: `ptkit-tls`'s system
//! roots). [`WebSocketClient::with_tls_config`] takes any rustls client config. Frames are masked by
//! tokio-websockets with keys from `getrandom` (the OS CSPRNG).
//!
//! ## Stream semantics ([`WsStream`])
//!
//! One `poll_write` → one message of at most `max-message` bytes (one frame); reads hand out
//! message payloads in order. Pings are answered with one Pong each; `poll_shutdown` sends
//! Close 1000 (WebSocket has no half-close: the peer answers Close and the stream ends).
//! See [`stream`] for buffering and flush rules.
//!
//! ## Close codes
//!
//! | condition | code | sent by |
//! |---|---|---|
//! | unmasked client frame, masked server frame, reserved bits, unknown opcode, bad continuation, fragmented or oversize control frame, bad close code | 1002 | tokio-websockets |
//! | invalid UTF-8 in a text frame or close reason | 1007 | tokio-websockets |
//! | one frame larger than the wire limit | 1009 | tokio-websockets |
//! | reassembled message larger than the wire limit | 1009 | us (tokio-websockets returns the error without a close) |
//! | binary message > `max-message`, or base64 that decodes to more | 1009 | us |
//! | text message without `base64` negotiated | 1003 | us |
//! | text that is not valid base64 | 1007 | us |
//! | local end of stream (`poll_shutdown`) | 1000 | us |
//! | peer's Close | echoed code | tokio-websockets |
//!
//! The wire limit is `max-message` for binary connections and `ceil(max-message / 3) * 4`
//! for base64 connections (the limit applies to decoded bytes).
//!
//! ## Sans-IO parts (fuzzable)
//!
//! [`proto`] (message policy and base64 reassembly; [`proto::fuzz_base64`]), [`addr`]
//! (client address; [`addr::fuzz_client_addr`]) and [`handshake`] (upgrade checks) do no I/O.

pub mod addr;
pub mod client;
pub mod handshake;
pub mod proto;
pub mod server;
pub mod stream;
pub mod tls;

pub use client::{
    ClientOptions, ClientStream, ConnectSettings, HandshakeLimit, WebSocketClient,
    WebSocketConnector,
};
pub use proto::{CloseReason, Framing};
pub use server::{ServerOptions, WebSocketListener, WebSocketServer};
pub use stream::{StreamError, WsStream, stream_error};

use ptkit_core::TransportError;

/// The transport name.
pub const NAME: &str = "websocket";

/// Parses `0`/`1`/`true`/`false`/`yes`/`no`.
pub(crate) fn parse_bool(key: &str, v: &str) -> Result<bool, TransportError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(TransportError::BadSettings(format!(
            "{key}={v:?}: want 0 or 1"
        ))),
    }
}

/// Parses a message limit.
pub(crate) fn parse_limit(v: &str) -> Result<usize, TransportError> {
    let n: usize = v
        .parse()
        .map_err(|_| TransportError::BadSettings(format!("max-message {v:?} is not a number")))?;
    server::check_limit(n)
}
