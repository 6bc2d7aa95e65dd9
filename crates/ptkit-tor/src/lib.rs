//! # ptkit-tor
//!
//! Tor's pluggable-transport protocol, version 1, for ptkit — both sides:
//!
//! - **transport side** (what goptlib gives Go transports): [`env`] parses `TOR_PT_*`,
//!   [`lines`] writes `VERSION`/`CMETHOD`/`SMETHOD`/`LOG`/`STATUS`, [`socks`] is the SOCKS4a/5
//!   server with per-connection arguments, [`extorport`] the Extended ORPort client with
//!   SAFE_COOKIE, [`proxy`] the `TOR_PT_PROXY` dialers, and [`managed`] runs it all;
//! - **host side** (what tor and arti's `tor-ptmgr` do): [`host`] launches a PT binary, reads
//!   its methods, and dials through it.
//!
//! Every parser here is sans-IO and bounded; item IDs in test names refer to
//! `shared/specs/pt1-extorport.md`.

pub mod cstring;
pub mod env;
pub mod extorport;
pub mod host;
pub mod lines;
pub mod logging;
pub mod managed;
pub mod proxy;
pub mod socks;
pub mod socks_front;
