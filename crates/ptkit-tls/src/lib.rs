//! # ptkit-tls
//!
//! Placeholder: being written.
