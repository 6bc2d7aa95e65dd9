//! SOCKS4a/5 server handshake under arbitrary segmentation (see `ptkit_fuzz::socks_server`).
//!
//! The input is `arbitrary`'s `Vec<&[u8]>`: contiguous chunks, so multi-byte tokens libFuzzer
//! learns (ports, "key=value", length-prefixed fields) survive mutation. (`Vec<Vec<u8>>`
//! would interleave a continue-flag byte before every data byte.)
#![no_main]
libfuzzer_sys::fuzz_target!(|chunks: Vec<&[u8]>| {
    let _ = ptkit_fuzz::socks_server(&chunks);
});
