//! # ptkit-ipc
//!
//! Placeholder: being written.
