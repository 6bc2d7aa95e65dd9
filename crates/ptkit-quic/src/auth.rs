//! Authentication on the tunnel's first bidirectional stream, opened by the client.
//!
//! The client sends `Hello{version, method, name}`; the server's [`AuthenticationHandler`]
//! runs its method (possibly a challenge) and answers `Accepted(identity)` or
//! `Refused(code, reason)`. After a refusal the server closes the connection with
//! [`crate::CLOSE_AUTH_REFUSED`] and the reason, so the client learns why even if the
//! message itself was lost. The whole exchange, QUIC handshake included, runs under the
//! server's handshake deadline.
//!
//! Shipped methods: [`NoAuth`] (the pluggable transport), [`MtlsAuth`] (client certificates
//! checked by TLS against a CA; the identity is the certificate name the client claims, or
//! the certificate's SHA-256), and [`HmacAuth`] (HMAC-SHA256 challenge-response over a
//! shared secret bound to the TLS session; the secret never crosses the wire).

use std::collections::HashMap;

use aws_lc_rs::hmac;
use quinn::{Connection, RecvStream, SendStream};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::error::{Error, Result};
use crate::proto::{self, AuthMessage, AuthMethod, NONCE_LEN, RefusalCode};
use crate::stream::read_decoded;

/// Minimum length of an HMAC shared secret.
pub const MIN_SECRET_LEN: usize = 16;
/// Label of the TLS exporter the HMAC proof is bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-ptkit-tunnel-auth";
const TRANSCRIPT_LABEL: &[u8] = b"ptkit-tunnel hmac v1\0";

/// A refusal: a code and the reason told to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code.
    pub code: RefusalCode,
    /// The reason (sent to the client; never contains secrets).
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// The authentication stream.
#[derive(Debug)]
pub struct AuthChannel {
    send: SendStream,
    recv: RecvStream,
}

impl AuthChannel {
    pub(crate) fn new(send: SendStream, recv: RecvStream) -> Self {
        AuthChannel { send, recv }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &AuthMessage) -> Result<()> {
        self.send.write_all(&proto::encode_auth(msg)?).await?;
        Ok(())
    }

    /// Receives one message (at most 3 + [`proto::MAX_AUTH_BODY`] bytes).
    pub async fn recv(&mut self) -> Result<AuthMessage> {
        read_decoded(&mut self.recv, proto::decode_auth, 3 + proto::MAX_AUTH_BODY).await
    }

    /// Ends the sending side.
    pub(crate) fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// Server side: decides who the client is.
pub trait AuthenticationHandler: Send + Sync {
    /// The one method this handler accepts (a `Hello` with another is refused).
    fn method(&self) -> AuthMethod;

    /// Runs the method for a client that claimed `name`, exchanging more messages on
    /// `channel` if needed; returns the authenticated identity.
    fn authenticate<'a>(
        &'a self,
        conn: &'a Connection,
        name: &'a str,
        channel: &'a mut AuthChannel,
    ) -> ptkit_core::BoxFuture<'a, std::result::Result<String, Refusal>>;
}

/// Client side: proves who the client is.
pub trait AuthenticationClient: Send + Sync {
    /// The method offered in `Hello`.
    fn method(&self) -> AuthMethod;

    /// The name claimed in `Hello`.
    fn name(&self) -> &str;

    /// Answers a server challenge (HMAC). The default refuses to answer.
    fn answer(&self, conn: &Connection, nonce: &[u8; NONCE_LEN]) -> Result<[u8; NONCE_LEN]> {
        let _ = (conn, nonce);
        Err(Error::Misbehaved(
            "server sent a challenge this method does not use".into(),
        ))
    }
}

/// Runs the client side on a fresh connection; returns the identity the server accepted.
pub async fn client_authenticate(
    conn: &Connection,
    auth: &dyn AuthenticationClient,
) -> Result<String> {
    let (send, recv) = conn.open_bi().await?;
    let mut ch = AuthChannel::new(send, recv);
    ch.send(&AuthMessage::Hello {
        version: proto::VERSION,
        method: auth.method(),
        name: auth.name().to_owned(),
    })
    .await?;
    loop {
        match ch.recv().await {
            Ok(AuthMessage::Challenge(nonce)) => {
                let proof = auth.answer(conn, &nonce)?;
                ch.send(&AuthMessage::Proof(proof)).await?;
            }
            Ok(AuthMessage::Accepted(identity)) => {
                ch.finish();
                return Ok(identity);
            }
            Ok(AuthMessage::Refused(code, reason)) => {
                conn.close(
                    crate::CLOSE_AUTH_REFUSED.try_into().unwrap_or_default(),
                    b"",
                );
                return Err(Error::Refused { code, reason });
            }
            Ok(other) => {
                return Err(Error::Misbehaved(format!(
                    "unexpected auth message from server: {other:?}"
                )));
            }
            Err(e) => return Err(refusal_from_close(e)),
        }
    }
}

/// Turns "the server closed the connection with CLOSE_AUTH_REFUSED" into a refusal.
pub(crate) fn refusal_from_close(e: Error) -> Error {
    if let Error::Connection(quinn::ConnectionError::ApplicationClosed(c)) = &e {
        let code = u64::from(c.error_code);
        let reason = String::from_utf8_lossy(&c.reason).into_owned();
        if code == crate::CLOSE_AUTH_REFUSED {
            return Error::Refused {
                code: RefusalCode::BadCredentials,
                reason,
            };
        }
        if code == crate::CLOSE_AUTH_TIMEOUT {
            return Error::Refused {
                code: RefusalCode::Timeout,
                reason,
            };
        }
    }
    e
}

/// Runs the server side: reads `Hello`, checks the method, runs `handler`, answers.
pub(crate) async fn server_authenticate(
    conn: &Connection,
    handler: &dyn AuthenticationHandler,
) -> std::result::Result<String, ServerAuthError> {
    let (send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| ServerAuthError::Io(e.into()))?;
    let mut ch = AuthChannel::new(send, recv);
    let (method, name) = match ch.recv().await {
        Ok(AuthMessage::Hello { method, name, .. }) => (method, name),
        Ok(other) => {
            return Err(ServerAuthError::Refused(
                Refusal::new(
                    RefusalCode::Malformed,
                    format!("expected Hello, got {}", msg_name(&other)),
                ),
                ch,
            ));
        }
        Err(Error::Protocol(p)) => {
            let code = if p.kind() == "unsupported" {
                RefusalCode::MethodNotAllowed
            } else {
                RefusalCode::Malformed
            };
            return Err(ServerAuthError::Refused(
                Refusal::new(code, p.to_string()),
                ch,
            ));
        }
        Err(e) => return Err(ServerAuthError::Io(e)),
    };
    if method != handler.method() {
        return Err(ServerAuthError::Refused(
            Refusal::new(
                RefusalCode::MethodNotAllowed,
                format!(
                    "this server authenticates clients by {}, not {}",
                    handler.method().name(),
                    method.name()
                ),
            ),
            ch,
        ));
    }
    match handler.authenticate(conn, &name, &mut ch).await {
        Ok(identity) => {
            ch.send(&AuthMessage::Accepted(identity.clone()))
                .await
                .map_err(ServerAuthError::Io)?;
            ch.finish();
            Ok(identity)
        }
        Err(r) => Err(ServerAuthError::Refused(r, ch)),
    }
}

/// Why the server side did not authenticate a client.
#[derive(Debug)]
pub(crate) enum ServerAuthError {
    /// Refused; the channel is still open to tell the client.
    Refused(Refusal, AuthChannel),
    /// The connection or stream failed.
    Io(Error),
}

fn msg_name(m: &AuthMessage) -> &'static str {
    match m {
        AuthMessage::Hello { .. } => "Hello",
        AuthMessage::Challenge(_) => "Challenge",
        AuthMessage::Proof(_) => "Proof",
        AuthMessage::Accepted(_) => "Accepted",
        AuthMessage::Refused(..) => "Refused",
    }
}

/// No client authentication: every client is `anonymous` (the `quic` pluggable transport,
/// where knowing the bridge line is the only credential, as with tor's other transports).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl AuthenticationHandler for NoAuth {
    fn method(&self) -> AuthMethod {
        AuthMethod::None
    }

    fn authenticate<'a>(
        &'a self,
        _conn: &'a Connection,
        _name: &'a str,
        _channel: &'a mut AuthChannel,
    ) -> ptkit_core::BoxFuture<'a, std::result::Result<String, Refusal>> {
        Box::pin(async { Ok("anonymous".to_owned()) })
    }
}

impl AuthenticationClient for NoAuth {
    fn method(&self) -> AuthMethod {
        AuthMethod::None
    }
    fn name(&self) -> &str {
        ""
    }
}

/// Mutual TLS: the TLS layer already verified the client certificate against the server's
/// client CA (unknown, expired or missing certificates never get this far). The identity is
/// the name the client claims when the certificate is valid for it (a DNS SAN), else
/// `cert-sha256:<first 16 bytes of the certificate's SHA-256, hex>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MtlsAuth;

impl AuthenticationHandler for MtlsAuth {
    fn method(&self) -> AuthMethod {
        AuthMethod::Mtls
    }

    fn authenticate<'a>(
        &'a self,
        conn: &'a Connection,
        name: &'a str,
        _channel: &'a mut AuthChannel,
    ) -> ptkit_core::BoxFuture<'a, std::result::Result<String, Refusal>> {
        Box::pin(async move {
            let chain = conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .ok_or_else(|| {
                    Refusal::new(
                        RefusalCode::BadCredentials,
                        "no client certificate was presented",
                    )
                })?;
            let leaf = chain.first().ok_or_else(|| {
                Refusal::new(
                    RefusalCode::BadCredentials,
                    "empty client certificate chain",
                )
            })?;
            if name.is_empty() {
                let d = crate::tls::cert_sha256(leaf);
                return Ok(format!("cert-sha256:{}", crate::tls::hex(&d[..16])));
            }
            let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
                Refusal::new(
                    RefusalCode::BadCredentials,
                    format!("unparsable client certificate: {e}"),
                )
            })?;
            let server_name = ServerName::try_from(name).map_err(|_| {
                Refusal::new(
                    RefusalCode::BadCredentials,
                    format!("claimed name {name:?} is not a DNS name"),
                )
            })?;
            ee.verify_is_valid_for_subject_name(&server_name)
                .map_err(|_| {
                    Refusal::new(
                        RefusalCode::BadCredentials,
                        format!(
                            "the client certificate is not valid for the claimed name {name:?}"
                        ),
                    )
                })?;
            Ok(name.to_owned())
        })
    }
}

/// The client side of mutual TLS: the certificate is in the TLS config
/// ([`crate::tls::ClientTls::client_cert`]); `name` (may be empty) is claimed in `Hello`.
#[derive(Debug, Clone, Default)]
pub struct MtlsClient {
    /// The name to claim (a DNS SAN of the client certificate), or empty.
    pub name: String,
}

impl AuthenticationClient for MtlsClient {
    fn method(&self) -> AuthMethod {
        AuthMethod::Mtls
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// HMAC-SHA256 challenge-response.
///
/// The server sends a 32-byte random nonce; the client answers
/// `HMAC-SHA256(secret, "ptkit-tunnel hmac v1\0" ‖ nonce ‖ len(name) ‖ name ‖ exporter)`
/// where `exporter` is 32 bytes of the TLS exporter with label [`EXPORTER_LABEL`], which
/// binds the proof to this TLS session (a relayed proof is useless elsewhere). The server
/// compares in constant time. Secrets come from a shared secret (any claimed name is the
/// identity) and/or per-client secrets (the name selects the secret).
#[derive(Clone, Default)]
pub struct HmacAuth {
    shared: Option<Vec<u8>>,
    per_client: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for HmacAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacAuth")
            .field("shared", &self.shared.is_some())
            .field("clients", &self.per_client.len())
            .finish()
    }
}

fn check_secret(secret: &[u8]) -> Result<()> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::Config(format!(
            "the shared secret has {} bytes; use at least {MIN_SECRET_LEN}",
            secret.len()
        )));
    }
    Ok(())
}

/// Validates a claimed client name: 1–255 bytes, printable ASCII without spaces.
fn check_name(name: &str) -> std::result::Result<(), Refusal> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::new(
            RefusalCode::Malformed,
            "client name must be 1-255 printable ASCII characters",
        ));
    }
    Ok(())
}

fn transcript(nonce: &[u8; NONCE_LEN], name: &str, exporter: &[u8; 32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TRANSCRIPT_LABEL.len() + NONCE_LEN + 1 + name.len() + 32);
    t.extend_from_slice(TRANSCRIPT_LABEL);
    t.extend_from_slice(nonce);
    t.push(name.len().min(255) as u8);
    t.extend_from_slice(name.as_bytes());
    t.extend_from_slice(exporter);
    t
}

fn exporter(conn: &Connection) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| Error::Misbehaved("TLS exporter unavailable".into()))?;
    Ok(out)
}

impl HmacAuth {
    /// One secret shared by every client (≥ [`MIN_SECRET_LEN`] bytes).
    pub fn shared(secret: Vec<u8>) -> Result<Self> {
        check_secret(&secret)?;
        Ok(HmacAuth {
            shared: Some(secret),
            per_client: HashMap::new(),
        })
    }

    /// Adds a per-client secret: a client claiming `name` must prove this one.
    pub fn with_client(mut self, name: impl Into<String>, secret: Vec<u8>) -> Result<Self> {
        check_secret(&secret)?;
        self.per_client.insert(name.into(), secret);
        Ok(self)
    }

    /// The proof a client with `secret` sends (exposed for tests and other clients).
    pub fn proof(
        secret: &[u8],
        nonce: &[u8; NONCE_LEN],
        name: &str,
        exporter: &[u8; 32],
    ) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, &transcript(nonce, name, exporter));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl AuthenticationHandler for HmacAuth {
    fn method(&self) -> AuthMethod {
        AuthMethod::Hmac
    }

    fn authenticate<'a>(
        &'a self,
        conn: &'a Connection,
        name: &'a str,
        channel: &'a mut AuthChannel,
    ) -> ptkit_core::BoxFuture<'a, std::result::Result<String, Refusal>> {
        Box::pin(async move {
            check_name(name)?;
            let secret = self
                .per_client
                .get(name)
                .or(self.shared.as_ref())
                .ok_or_else(|| {
                    Refusal::new(
                        RefusalCode::BadCredentials,
                        format!("unknown client {name:?}"),
                    )
                })?;
            let mut nonce = [0u8; NONCE_LEN];
            aws_lc_rs::rand::fill(&mut nonce)
                .map_err(|_| Refusal::new(RefusalCode::Limit, "no randomness"))?;
            let io = |e: Error| Refusal::new(RefusalCode::Malformed, e.to_string());
            channel
                .send(&AuthMessage::Challenge(nonce))
                .await
                .map_err(io)?;
            let proof = match channel.recv().await.map_err(io)? {
                AuthMessage::Proof(p) => p,
                other => {
                    return Err(Refusal::new(
                        RefusalCode::Malformed,
                        format!("expected Proof, got {}", msg_name(&other)),
                    ));
                }
            };
            let exp = exporter(conn).map_err(io)?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
            hmac::verify(&key, &transcript(&nonce, name, &exp), &proof).map_err(|_| {
                Refusal::new(
                    RefusalCode::BadCredentials,
                    "HMAC proof did not verify: wrong shared secret",
                )
            })?;
            Ok(name.to_owned())
        })
    }
}

/// The client side of [`HmacAuth`].
#[derive(Clone)]
pub struct HmacClient {
    name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for HmacClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacClient")
            .field("name", &self.name)
            .finish()
    }
}

impl HmacClient {
    /// A client claiming `name` with `secret` (≥ [`MIN_SECRET_LEN`] bytes).
    pub fn new(name: impl Into<String>, secret: Vec<u8>) -> Result<Self> {
        check_secret(&secret)?;
        Ok(HmacClient {
            name: name.into(),
            secret,
        })
    }
}

impl AuthenticationClient for HmacClient {
    fn method(&self) -> AuthMethod {
        AuthMethod::Hmac
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn answer(&self, conn: &Connection, nonce: &[u8; NONCE_LEN]) -> Result<[u8; NONCE_LEN]> {
        Ok(HmacAuth::proof(
            &self.secret,
            nonce,
            &self.name,
            &exporter(conn)?,
        ))
    }
}

/// Reads a secret file: its bytes without a trailing newline (`\n` or `\r\n`).
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let mut s = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read secret file {}: {e}", path.display())))?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s.pop();
    }
    check_secret(&s)?;
    Ok(s)
}
