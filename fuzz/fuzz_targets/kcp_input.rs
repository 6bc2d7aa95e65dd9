//! Arbitrary datagrams and application calls into one KCP session (see
//! `ptkit_snowflake::kcp::fuzz_input`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_snowflake::kcp::fuzz_input(data);
});
