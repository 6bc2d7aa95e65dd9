//! Host-side parsing of a PT's stdout lines, and line rendering (see `ptkit_fuzz::host_lines`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptkit_fuzz::host_lines(data);
});
