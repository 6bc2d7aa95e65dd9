//! Extended ORPort: cookie file, command framing, SAFE_COOKIE handshake
//! (see `ptkit_fuzz::extorport` for the input layout).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ptkit_fuzz::extorport(data);
});
