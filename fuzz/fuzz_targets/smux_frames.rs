//! Arbitrary bytes, in arbitrary chunks, into a Snowflake smux v2 session while its streams
//! are read, written, opened and closed (see `ptkit_snowflake::smux::fuzz_frames`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_snowflake::smux::fuzz_frames(data);
});
