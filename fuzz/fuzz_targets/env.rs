//! `TOR_PT_*` environment parsing (see `ptkit_fuzz::env`).
#![no_main]
libfuzzer_sys::fuzz_target!(|input: ptkit_fuzz::EnvInput<'_>| {
    let _ = ptkit_fuzz::env(&input);
});
