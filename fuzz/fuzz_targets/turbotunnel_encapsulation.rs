//! Turbotunnel encapsulation chunks (length prefixes, padding, data) in two pieces, as they
//! arrive on a WebSocket (see `ptkit_snowflake::encapsulation::fuzz_decoder`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_snowflake::encapsulation::fuzz_decoder(data);
});
