//! # ptkit-ipc
//!
//! The Pluggable Transports 2.x/3.0 dispatcher IPC, sans-IO (no sockets, no processes):
//!
//! - [`version`]: `-ptversion` / `TOR_PT_MANAGED_TRANSPORT_VER` negotiation;
//! - [`flags`]: the dispatcher command line (Go `flag` syntax) with `TOR_PT_*` fallback,
//!   producing an [`flags::IpcConfig`];
//! - [`options`]: `-options` / `-optionsFile` decoding (PT 1.0 microformat or JSON);
//! - [`socks_auth`]: SOCKS5 per-connection settings, methods `0x80` and `0x09`;
//! - [`lines`]: output lines, their streams and sysexits codes, both `LOG` syntaxes and the
//!   `CMESSAGE`/`SMESSAGE` signals channel;
//! - [`requests`]: stdin requests (`STATS`, signals) and their answers;
//! - [`log`]: `LOG` lines under `-ipcLogLevel` as a tracing layer;
//! - [`config`]: the 2016 draft's JSON configuration (`--config`, `generate-config`);
//! - [`udp`]: `-mode transparent-UDP` / `STUN` (and the TURN front end) over `ptkit-udp`;
//! - [`socks`] and [`run`]: the I/O drivers;
//! - [`adapter`]: the host side, running any PT 1.0 or 2.x/3.0 binary behind the
//!   `ptkit_core` traits (the application IPC adapter).
//!
//! Section numbers in docs and test names refer to `shared/specs/pt2-websocket-quic.md`.

pub mod adapter;
pub mod config;
pub mod flags;
pub mod lines;
pub mod log;
pub mod options;
pub mod requests;
pub mod run;
pub mod socks;
pub mod socks_auth;
pub mod udp;
pub mod version;
