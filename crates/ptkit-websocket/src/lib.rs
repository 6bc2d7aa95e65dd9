//! # ptkit-websocket
//!
//! Placeholder: being written.
