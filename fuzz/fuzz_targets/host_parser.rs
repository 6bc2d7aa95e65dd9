//! The host side's stdout state machine (see `ptkit_fuzz::host_parser`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_fuzz::host_parser(data);
});
