//! `quic` in the binary: the transport from `ptkit-quic`. The server keeps a self-signed
//! certificate in the state directory (or uses `tls-cert`/`tls-key`) and advertises its
//! SHA-256 as `cert-sha256=` in `SMETHOD … ARGS:`; the client pins it from the bridge line.
//!
//! ```text
//! ServerTransportPlugin quic exec /usr/local/bin/ptkit
//! ServerTransportListenAddr quic 0.0.0.0:443        # a UDP port
//! Bridge quic 192.0.2.1:443 <FINGERPRINT> cert-sha256=<64 hex digits>
//! ClientTransportPlugin quic exec /usr/local/bin/ptkit
//! ```

pub use ptkit_quic::pt::{NAME, PIN_ARG, QuicClient, QuicServer};
