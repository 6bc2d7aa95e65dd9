//! KCP tests: spec vectors, simulated network, interop with the `kcp` crate, hostile input.
