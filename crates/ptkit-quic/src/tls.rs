//! QUIC TLS configurations on ptkit's one crypto provider (aws-lc-rs), TLS 1.3 only, with
//! the transport knobs of [`Knobs`].
//!
//! Servers: a certificate resolver (a static file, an ACME [`ptkit_tls::HotResolver`], or a
//! self-signed key) and optionally client certificates verified against a CA (mutual TLS).
//! Clients: trust *only* the given authority file(s) ([`ServerTrust::Roots`] — never the
//! OS store unless asked, unlike snocat) or a SHA-256 pin of the server certificate
//! ([`ServerTrust::Pin`], the `quic` pluggable transport's bridge-line `cert-sha256`).
//! Both sides log TLS secrets to `SSLKEYLOGFILE` when that variable is set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// QUIC transport knobs shared by both sides. Every window is a limit, not an allocation.
/// The stream limit is not: quinn keeps a map slot (≈ 40 bytes, doubled by hash-map
/// headroom) for every stream the peer may open, so an idle tunnel allowing 1,024 streams
/// holds ≈ 85 KiB for that alone. Tunnels therefore start at [`Knobs::initial_streams`]
/// and raise the limit toward [`Knobs::max_streams`] as streams fill it.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Send a keep-alive (PING) this often when nothing else is sent; `None` = never.
    pub keepalive: Option<Duration>,
    /// Close the tunnel after this long without any packet from the peer.
    pub idle_timeout: Duration,
    /// Most bidirectional streams the peer may have open at once.
    pub max_streams: u32,
    /// The peer's stream limit when a tunnel opens (capped at `max_streams`). Once more
    /// than half of the current limit is open, it is raised fourfold (up to
    /// `max_streams`); the peer waits at most one round trip for the raise.
    pub initial_streams: u32,
    /// Per-stream receive window (bytes in flight per stream).
    pub stream_window: u32,
    /// Whole-connection receive window.
    pub connection_window: u32,
    /// Send buffer limit per connection.
    pub send_window: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            keepalive: Some(Duration::from_secs(5)),
            idle_timeout: Duration::from_secs(30),
            max_streams: 256,
            initial_streams: 32,
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
        }
    }
}

impl Knobs {
    pub(crate) fn transport(&self) -> Result<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(self.keepalive);
        t.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(self.idle_timeout)
                .map_err(|_| Error::Config("idle timeout too large".into()))?,
        ));
        t.max_concurrent_bidi_streams(
            self.initial_streams
                .clamp(1, self.max_streams.max(1))
                .into(),
        );
        // Only bidirectional streams are used.
        t.max_concurrent_uni_streams(0u32.into());
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.connection_window.into());
        t.send_window(self.send_window);
        t.datagram_receive_buffer_size(None);
        Ok(t)
    }
}

/// Raises a tunnel's stream limit from [`Knobs::initial_streams`] toward
/// [`Knobs::max_streams`] as accepted streams fill it.
#[derive(Clone)]
pub(crate) struct StreamBudget(Arc<BudgetInner>);

struct BudgetInner {
    conn: quinn::Connection,
    open: AtomicU32,
    limit: AtomicU32,
    max: u32,
}

/// One accepted stream; dropping it frees its share of the budget.
pub(crate) struct StreamSlot(Arc<BudgetInner>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamBudget {
    pub(crate) fn new(conn: &quinn::Connection, knobs: &Knobs) -> Self {
        let max = knobs.max_streams.max(1);
        StreamBudget(Arc::new(BudgetInner {
            conn: conn.clone(),
            open: AtomicU32::new(0),
            limit: AtomicU32::new(knobs.initial_streams.clamp(1, max)),
            max,
        }))
    }

    /// Counts an accepted stream (hold the slot while it is open), raising the limit when
    /// more than half of it is in use.
    pub(crate) fn opened(&self) -> StreamSlot {
        let b = &self.0;
        let open = b.open.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = b.limit.load(Ordering::Relaxed);
        if open.saturating_mul(2) > limit && limit < b.max {
            let raised = limit.saturating_mul(4).min(b.max);
            if b.limit
                .compare_exchange(limit, raised, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                b.conn.set_max_concurrent_bi_streams(raised.into());
            }
        }
        StreamSlot(self.0.clone())
    }
}

/// How a server presents itself and whom it accepts at the TLS layer.
#[derive(Clone)]
pub struct ServerTls {
    /// The certificate source.
    pub resolver: Arc<dyn ResolvesServerCert>,
    /// PEM file of CA certificates: when set, clients must present a certificate chaining
    /// to one of them (mutual TLS); unknown, expired or missing certificates fail the
    /// handshake.
    pub client_ca: Option<PathBuf>,
    /// The ALPN protocol offered ([`crate::proto::ALPN_TUNNEL`] or
    /// [`crate::proto::ALPN_PT`]).
    pub alpn: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca)
            .finish()
    }
}

impl ServerTls {
    /// A server presenting the fixed `key`.
    pub fn with_key(key: Arc<CertifiedKey>, alpn: &[u8]) -> Self {
        ServerTls {
            resolver: Arc::new(ptkit_tls::HotResolver::with_default(key)),
            client_ca: None,
            alpn: alpn.to_vec(),
        }
    }

    /// Builds the quinn server configuration.
    pub fn quinn_config(&self, knobs: &Knobs) -> Result<quinn::ServerConfig> {
        let provider = ptkit_tls::provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = ptkit_tls::ClientRoots::empty()
                    .with_pem_file(ca)
                    .root_store()?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| Error::Config(format!("client CA {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![self.alpn.clone()];
        config.max_early_data_size = 0;
        config.key_log = Arc::new(rustls::KeyLogFile::new());
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(config))
            .map_err(|e| Error::Config(format!("QUIC TLS: {e}")))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
        sc.transport_config(Arc::new(knobs.transport()?));
        Ok(sc)
    }
}

/// Whom a client trusts as the server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Certificates chaining to these roots, for the name the client asks for.
    Roots(ptkit_tls::ClientRoots),
    /// Exactly a certificate whose DER has one of these SHA-256 digests (any name, any
    /// validity period: a pinned self-signed key).
    Pin(Vec<[u8; 32]>),
}

/// A client's TLS settings.
#[derive(Clone)]
pub struct ClientTls {
    /// Whom to trust.
    pub trust: ServerTrust,
    /// The client certificate for mutual TLS.
    pub client_cert: Option<Arc<CertifiedKey>>,
    /// The ALPN protocol to ask for.
    pub alpn: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts exactly the pinned certificates (and checks the handshake signatures with them).
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let digest = cert_sha256(end_entity);
        if self.pins.iter().any(|p| p == &digest) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// SHA-256 of a certificate's DER: the pin.
pub fn cert_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (case-insensitive, `:` separators allowed) into a pin.
pub fn parse_pin(s: &str) -> Result<[u8; 32]> {
    let clean: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    let bad = || Error::Config(format!("certificate pin {s:?} is not 64 hex digits"));
    if clean.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in clean.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl ClientTls {
    /// Builds the quinn client configuration.
    pub fn quinn_config(&self, knobs: &Knobs) -> Result<quinn::ClientConfig> {
        let provider = ptkit_tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = match &self.trust {
            ServerTrust::Roots(roots) => builder.with_root_certificates(roots.root_store()?),
            ServerTrust::Pin(pins) => {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinVerifier {
                        pins: pins.clone(),
                        provider,
                    }))
            }
        };
        let mut config = match &self.client_cert {
            Some(key) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(key.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![self.alpn.clone()];
        config.key_log = Arc::new(rustls::KeyLogFile::new());
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config))
            .map_err(|e| Error::Config(format!("QUIC TLS: {e}")))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(quic));
        cc.transport_config(Arc::new(knobs.transport()?));
        Ok(cc)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pins_parse() {
        let p = parse_pin(&"ab".repeat(32)).unwrap();
        assert_eq!(p, [0xab; 32]);
        assert_eq!(hex(&p), "ab".repeat(32));
        assert!(parse_pin("abc").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
