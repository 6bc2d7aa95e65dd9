//! The `k=v` argument codec (see `ptkit_fuzz::args`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ptkit_fuzz::args(data);
});
