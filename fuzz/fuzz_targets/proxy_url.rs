//! `TOR_PT_PROXY` URI parsing (see `ptkit_fuzz::proxy_url`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ptkit_fuzz::proxy_url(data);
});
