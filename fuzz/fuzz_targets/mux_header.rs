//! Arbitrary bytes as a bound→free mux stream header, whole and split at every point (see
//! `ptkit_mux::header::fuzz_header`). Needs `ptkit-mux = { path = "../crates/ptkit-mux" }`
//! and a `[[bin]] name = "mux_header"` entry in fuzz/Cargo.toml.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_mux::header::fuzz_header(data);
});
