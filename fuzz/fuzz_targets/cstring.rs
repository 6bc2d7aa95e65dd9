//! Tor's C-string quoting (see `ptkit_fuzz::cstring`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ptkit_fuzz::cstring(data);
});
